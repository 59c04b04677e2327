//! The table of a runtime's live tasks, so shutdown can drop every future.

use crate::task::raw::{Header, TaskRef};
use crate::task::state::OWNED;
use slab::Slab;
use std::cell::{Cell, RefCell};

/// Every task of a runtime that has returned `Pending` at least once and not finished yet (the
/// others are in the run queue), so shutdown can drop their futures. Tasks that finish on their
/// first poll never enter it. It holds one reference per task. Owner thread only.
#[derive(Default)]
pub(crate) struct OwnedTasks {
    tasks: RefCell<Slab<TaskRef>>,
    /// Tasks of this runtime that finished (returned, panicked or were cancelled) while it ran:
    /// the metrics' live tasks are the spawned ones minus these.
    finished: Cell<u64>,
}

impl OwnedTasks {
    /// Adds a task, taking over the reference `task` holds.
    pub(super) fn insert(&self, task: TaskRef) {
        let mut tasks = self.tasks.borrow_mut();
        let key = tasks.vacant_key();
        task.header().set_owned_key(key);
        task.header().state.set(OWNED);
        tasks.insert(task);
    }

    /// Takes a task out and returns the table's reference to it, if it was in.
    pub(super) fn remove(&self, header: &Header) -> Option<TaskRef> {
        if !header.state.is(OWNED) {
            return None;
        }
        header.state.clear(OWNED);
        self.tasks.borrow_mut().try_remove(header.owned_key())
    }

    /// Counts a task that finished.
    pub(super) fn count_finished(&self) {
        self.finished.set(self.finished.get() + 1);
    }

    /// How many tasks finished while the runtime ran.
    pub(crate) fn finished(&self) -> u64 {
        self.finished.get()
    }

    /// Empties the table, handing back its references.
    pub(crate) fn drain(&self) -> Vec<TaskRef> {
        let tasks: Vec<TaskRef> = self.tasks.borrow_mut().drain().collect();
        for t in &tasks {
            t.header().state.clear(OWNED);
        }
        tasks
    }

    /// How many tasks are in the table.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tasks.borrow().len()
    }
}
