//! The run queue, the budget of one loop turn, and the scheduler that feeds the queue.

use crate::runtime::context;
use crate::runtime::remote;
use crate::task::{OwnedTasks, Schedule, TaskRef};
use std::cell::RefCell;
use std::collections::VecDeque;

/// Tasks ready to run on one runtime, in wake order. Owner thread only.
pub(crate) struct RunQueue {
    tasks: RefCell<VecDeque<TaskRef>>,
}

/// At least this many polls per turn (tokio's event interval): tasks woken by the ones running
/// now run in the same turn instead of paying a loop turn each, while I/O completions are still
/// reaped every 61 polls or so.
const MIN_BUDGET: usize = 61;

impl RunQueue {
    pub(crate) fn new() -> RunQueue {
        RunQueue {
            tasks: RefCell::new(VecDeque::with_capacity(64)),
        }
    }

    pub(crate) fn push(&self, task: TaskRef) {
        self.tasks.borrow_mut().push_back(task);
    }

    pub(crate) fn extend(&self, tasks: Vec<TaskRef>) {
        self.tasks.borrow_mut().extend(tasks);
    }

    /// Runs the tasks that are ready now (at least as many polls as were queued at the start,
    /// and at least [`MIN_BUDGET`]); returns whether more became ready meanwhile.
    pub(crate) fn run_ready(&self, owned: &OwnedTasks) -> bool {
        let budget = self.tasks.borrow().len().max(MIN_BUDGET);
        for _ in 0..budget {
            let Some(task) = self.tasks.borrow_mut().pop_front() else {
                break;
            };
            task.run(owned);
        }
        !self.tasks.borrow().is_empty()
    }

    /// Empties the queue, handing back its references (shutdown).
    pub(crate) fn drain(&self) -> Vec<TaskRef> {
        self.tasks.borrow_mut().drain(..).collect()
    }
}

/// The runtime's [`Schedule`]: a task woken on its owner's thread goes on the local run queue;
/// woken anywhere else, it goes through the owner's remote queue, which wakes that loop.
pub(crate) struct Scheduler;

impl Schedule for Scheduler {
    fn schedule(task: TaskRef) {
        let task = context::with_current(|s| match s {
            Some(s) if s.id == task.owner() => {
                s.run_queue.push(task);
                None
            }
            _ => Some(task),
        });
        if let Some(task) = task {
            match remote::remote_of(task.owner()) {
                Some(remote) => remote.push(task),
                // The runtime is gone: it dropped the future already (INV-task).
                None => drop(task),
            }
        }
    }
}
