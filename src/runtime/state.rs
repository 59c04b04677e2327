//! [`RuntimeState`]: everything one runtime owns, shared by what runs on it through the
//! thread-local context.

use crate::driver::Driver;
use crate::runtime::remote::Remote;
use crate::runtime::run_queue::RunQueue;
use crate::runtime::timers::Timers;
use crate::task::OwnedTasks;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

/// A runtime's whole state: its ring, its timers, its run queue, its live tasks and the part
/// other threads reach. Owned by `Runtime` in an `Rc` and lent to the thread-local context while
/// the runtime runs; ops, sleeps and files keep a counted reference.
pub(crate) struct RuntimeState {
    /// The runtime's id: tasks carry it so a wake finds its way back (see `remote`).
    pub(crate) id: u16,
    pub(crate) driver: RefCell<Driver>,
    pub(crate) timers: RefCell<Timers>,
    pub(crate) remote: Arc<Remote>,
    pub(crate) run_queue: RunQueue,
    pub(crate) owned: OwnedTasks,
    /// How long shutdown waits for the kernel to finish in-flight ops.
    pub(crate) shutdown_timeout: Duration,
    /// Tasks spawned on this thread (those other threads spawn here count in `remote`).
    pub(crate) tasks_spawned: Cell<u64>,
}
