//! Tasks: spawned futures owned by one runtime thread, and the handles that join them.
//!
//! The task core knows nothing of the runtime. A task is created for an owner id and a
//! [`Schedule`] type that puts it back on its owner's run queue when woken; the runtime supplies
//! both. `raw` is the task and its vtable, `state` its flags, `owned` the table of live tasks
//! shutdown drops, `join` the [`JoinHandle`] and [`JoinError`].

mod join;
mod owned;
mod raw;
mod state;

pub use join::{JoinError, JoinHandle};
pub(crate) use owned::OwnedTasks;
pub(crate) use raw::{spawn, spawn_elsewhere, Schedule, TaskRef};
