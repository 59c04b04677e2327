//! Tasks: spawning, joining and cancelling them, alone or as a group.
//!
//! `uring::spawn` starts a task on the current runtime and gives a [`JoinHandle`];
//! a [`JoinSet`] holds many and gives their outputs in the order they finish (asyncio's
//! `TaskGroup` and `gather`); an [`AbortHandle`] cancels a task without awaiting it; a
//! [`JoinError`] says why a task gave no output. `uring::JoinHandle` and `uring::JoinError` are
//! the same types.
//!
//! ```
//! use uring::task::JoinSet;
//!
//! uring::run(async {
//!     let mut set = JoinSet::new();
//!     for i in 0..10u32 {
//!         set.spawn(async move { i * i });
//!     }
//!     let mut sum = 0;
//!     while let Some(res) = set.join_next().await {
//!         sum += res.unwrap();
//!     }
//!     assert_eq!(sum, 285);
//! });
//! ```
//!
//! Inside, the task core knows nothing of the runtime. A task is created for an owner id and a
//! `Schedule` type that puts it back on its owner's run queue when woken; the runtime supplies
//! both. `raw` is the task and its vtable, `state` its flags, `owned` the table of live tasks
//! shutdown drops, `join` the handles and [`JoinError`], `set` the [`JoinSet`] (whose `spawn`
//! the runtime adds).

mod join;
mod owned;
mod raw;
mod set;
mod state;

pub use join::{AbortHandle, JoinError, JoinHandle};
pub(crate) use owned::OwnedTasks;
pub(crate) use raw::{spawn, spawn_elsewhere, Schedule, TaskRef};
pub use set::JoinSet;
