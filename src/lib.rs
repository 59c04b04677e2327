//! `uring`: an async runtime for Rust built on Linux io_uring.
//!
//! Futures submit operations to the ring's submission queue; the loop reaps completions and wakes
//! exactly the task that owns each one. There is no readiness polling anywhere: every wait is an
//! `io_uring_enter`.
//!
//! ```
//! use std::time::Duration;
//!
//! let out = uring::run(async {
//!     let task = uring::spawn(async {
//!         uring::time::sleep(Duration::from_millis(1)).await;
//!         "done"
//!     });
//!     task.await.unwrap()
//! });
//! assert_eq!(out, "done");
//! ```
//!
//! Operations take owned buffers ([`buf::IoBuf`], [`buf::IoBufMut`]) and give them back with
//! the result as a [`BufResult`], because the kernel may still use a buffer after the future that
//! asked for the operation is gone. `docs/architecture.md` explains the op lifecycle.
#![doc(test(attr(deny(warnings))))]
#![warn(missing_docs)]
#![deny(dead_code, missing_debug_implementations)]

#[cfg(not(target_os = "linux"))]
compile_error!("uring runs on Linux only: it is built on io_uring");

pub mod blocking;
pub mod buf;
#[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
pub mod compat;
mod driver;
mod fd;
pub mod fs;
pub mod io;
pub mod net;
mod op;
mod pool;
pub mod process;
mod runtime;
pub mod signal;
pub mod task;
pub mod time;
mod waker;

pub use blocking::spawn_blocking;
pub use buf::BufResult;
pub use driver::{probe, DriverStats, IoUringDisabled, Probe, ProbedOp, RingSetup};
pub use pool::{Pool, PoolBuilder, Worker};
pub use runtime::{metrics, run, spawn, spawner, yield_now, Builder, Metrics, Runtime, Spawner};
pub use task::{JoinError, JoinHandle};

/// The guide's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
pub struct GuideExamples;
