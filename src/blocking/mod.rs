//! Blocking work off the loop: [`spawn_blocking`] runs a closure on a pool of threads the whole
//! process shares, and a task awaits its result.
//!
//! A runtime's thread must never block: while it does, none of its tasks run and no completion
//! is reaped. Most I/O here is a ring op and never blocks, but some work has no ring op: name
//! resolution (`getaddrinfo`, behind `uring::net::lookup_host`), a C library's
//! blocking call, a long computation. Such work goes to the pool: the closure runs on a pool
//! thread, and when it returns, the pool thread wakes the awaiting task, which reaches its
//! runtime through the cross-thread wake path (an eventfd whose read is armed on the ring), so a
//! loop asleep in `io_uring_enter` wakes at once.
//!
//! The pool starts threads on demand, each named `uring-blocking`, up to [`max_threads`] at once
//! (512 unless [`set_max_threads`] says otherwise); further closures wait in a queue for a free
//! thread. A thread with no work exits after [`keep_alive`] (10 seconds unless [`set_keep_alive`]
//! says otherwise). These are tokio's defaults; as the pool is the process's, not a runtime's, they
//! are set here rather than on [`Builder`](crate::Builder). These threads are the only ones the
//! crate ever starts.
//!
//! ```
//! use std::time::Duration;
//!
//! uring::blocking::set_max_threads(64);
//! uring::blocking::set_keep_alive(Duration::from_secs(30));
//! let n = uring::run(async {
//!     uring::spawn_blocking(|| std::fs::read_dir("/").map(|d| d.count()))
//!         .await
//!         .unwrap()
//! });
//! assert!(n.unwrap() > 0);
//! ```

mod oneshot;
mod pool;

pub(crate) use oneshot::{Closed, Receiver};

use crate::JoinHandle;
use pool::POOL;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Duration;

/// Runs `f` on the blocking pool and gives a handle to await its result, from within a
/// runtime: the counterpart of tokio's `spawn_blocking` and asyncio's `loop.run_in_executor` /
/// `asyncio.to_thread`.
///
/// The handle is a task's [`JoinHandle`] (a task on the current runtime waits for the
/// closure): awaiting it gives `Ok(value)`, or a [`JoinError`](crate::JoinError) whose
/// `is_panic()` is true and whose `into_panic()` is the closure's panic payload. Dropping or
/// [`abort`](JoinHandle::abort)ing the handle does not stop the closure, which cannot be
/// interrupted: it runs to the end, and its result is dropped on the pool thread. A closure that
/// never returns holds its thread for good.
///
/// Closures run in the order they were spawned when the pool is at its cap; otherwise each
/// starts at once, on an idle thread or a new one (see the [module](crate::blocking) docs). A
/// closure runs outside any runtime: it may start one of its own (`uring::run`), but cannot
/// `uring::spawn` onto the caller's.
///
/// ```
/// uring::run(async {
///     let sum = uring::spawn_blocking(|| (1..=100u64).sum::<u64>());
///     assert_eq!(sum.await.unwrap(), 5050);
///
///     let failed = uring::spawn_blocking(|| -> u8 { panic!("no luck") });
///     let err = failed.await.unwrap_err();
///     assert!(err.is_panic());
///     assert_eq!(*err.into_panic().downcast::<&str>().unwrap(), "no luck");
/// });
/// ```
///
/// # Panics
///
/// Outside a runtime, and when the pool has no thread and the OS refuses to start one.
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if !crate::runtime::context::with_current(|rt| rt.is_some()) {
        panic!(
            "uring::spawn_blocking must be called from within a uring runtime \
             (inside uring::run or Runtime::block_on)"
        );
    }
    let (tx, rx) = oneshot::channel();
    let job = Box::new(move || {
        let out = catch_unwind(AssertUnwindSafe(f));
        // Nobody awaits the result any more: it is dropped here, on the pool thread.
        drop(tx.send(out));
    });
    if let Err(e) = POOL.execute(job) {
        panic!("uring::spawn_blocking: cannot start a blocking thread: {e}");
    }
    crate::spawn(async move {
        match rx.await {
            Ok(Ok(value)) => value,
            // The task panics with the closure's own payload: it becomes the JoinError.
            Ok(Err(payload)) => resume_unwind(payload),
            Err(oneshot::Closed) => {
                panic!("uring::spawn_blocking: the blocking pool dropped the closure unrun")
            }
        }
    })
}

/// Runs `f` on the blocking pool with nobody awaiting it, from any thread, inside a runtime or
/// not (the reaping of an orphaned child process). A panic in `f` is caught and dropped (by the
/// pool thread).
///
/// # Errors
///
/// When no pool thread runs and the OS refuses to start one (`f` is then dropped unrun).
pub(crate) fn execute_detached<F: FnOnce() + Send + 'static>(f: F) -> std::io::Result<()> {
    POOL.execute(Box::new(f))
}

/// Runs `f` on the blocking pool; its value arrives on the returned receiver, which any
/// runtime (or none) may await. Unlike [`spawn_blocking`]'s handle it is no task of the current
/// runtime, so a result still on its way when that runtime is dropped is not lost with it (a
/// child's exit status, waited for before Linux 6.7). A panic in `f` closes the channel.
///
/// # Errors
///
/// When no pool thread runs and the OS refuses to start one (`f` is then dropped unrun).
pub(crate) fn run_detached<F, T>(f: F) -> std::io::Result<Receiver<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    POOL.execute(Box::new(move || {
        if let Ok(value) = catch_unwind(AssertUnwindSafe(f)) {
            // Nobody awaits the result any more: it is dropped here, on the pool thread.
            drop(tx.send(value));
        }
    }))?;
    Ok(rx)
}

/// Sets the most threads the blocking pool runs at once, for the whole process (default 512).
/// Closures spawned while that many run wait in a queue. Lowering it stops no running closure:
/// threads above the new cap exit as they run out of work.
///
/// ```
/// uring::blocking::set_max_threads(8);
/// assert_eq!(uring::blocking::max_threads(), 8);
/// ```
///
/// # Panics
///
/// If `n` is 0.
pub fn set_max_threads(n: usize) {
    assert!(
        n > 0,
        "uring::blocking::set_max_threads needs at least one thread"
    );
    POOL.set_max_threads(n);
}

/// The most threads the blocking pool runs at once (see [`set_max_threads`]).
pub fn max_threads() -> usize {
    POOL.max_threads()
}

/// Sets how long a blocking thread with no work waits for more before it exits, for the whole
/// process (default 10 seconds). It applies to threads already idle too. `Duration::ZERO` lets a
/// thread exit as soon as the queue is empty.
///
/// ```
/// use std::time::Duration;
///
/// uring::blocking::set_keep_alive(Duration::from_secs(1));
/// assert_eq!(uring::blocking::keep_alive(), Duration::from_secs(1));
/// ```
pub fn set_keep_alive(keep_alive: Duration) {
    POOL.set_keep_alive(keep_alive);
}

/// How long an idle blocking thread waits for work before it exits (see [`set_keep_alive`]).
pub fn keep_alive() -> Duration {
    POOL.keep_alive()
}
