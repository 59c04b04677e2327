//! [`JoinHandle`]: awaiting a task's output; [`AbortHandle`]: cancelling it without awaiting;
//! [`JoinError`]: why there is no output.

use crate::task::raw::TaskRef;
use crate::task::state::COMPLETE;
use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Ties a `JoinHandle` to its output type.
type OutputMarker<T> = PhantomData<fn() -> T>;

/// An owned permission to await a spawned task's output.
///
/// Awaiting it gives `Ok(output)`, or a [`JoinError`] if the task panicked or was aborted.
/// Dropping it detaches the task, which keeps running.
///
/// The task runs on the runtime that spawned it, but its handle is `Send` and `Sync` when its
/// output is `Send`: it can be awaited from a task on another thread's runtime, and `abort`
/// works from any thread. Only the output crosses threads, never the future.
///
/// ```
/// uring::run(async {
///     let handle = uring::spawn(async { 6 * 7 });
///     assert_eq!(handle.await.unwrap(), 42);
/// });
/// ```
pub struct JoinHandle<T> {
    /// One pointer wide, like the task references in the run queue.
    task: TaskRef,
    _output: OutputMarker<T>,
}

impl<T> JoinHandle<T> {
    /// A handle for `task`, whose output type is `T`.
    pub(super) fn new(task: TaskRef) -> JoinHandle<T> {
        JoinHandle {
            task,
            _output: PhantomData,
        }
    }

    /// Cancels the task: its future is dropped (in place) at the runtime's next chance, and
    /// awaiting this handle gives a [`JoinError`] whose `is_cancelled()` is true. No effect on a
    /// finished task.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the task has finished (returned, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.task.header().state.is(COMPLETE)
    }

    /// A handle that can abort the task but not await it; it does not keep the output alive.
    ///
    /// ```
    /// uring::run(async {
    ///     let handle = uring::spawn(std::future::pending::<()>());
    ///     let abort = handle.abort_handle();
    ///     abort.abort();
    ///     assert!(handle.await.unwrap_err().is_cancelled());
    ///     assert!(abort.is_finished());
    /// });
    /// ```
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            task: self.task.clone_ref(),
        }
    }
}

/// Cancels a task without being able to await it, like tokio's `AbortHandle`: what
/// [`JoinSet::spawn`](crate::task::JoinSet::spawn) returns and
/// [`JoinHandle::abort_handle`] makes. Dropping it does nothing to the task. `Send` and `Sync`
/// whatever the task's output: it only touches the task's flags.
pub struct AbortHandle {
    task: TaskRef,
}

impl AbortHandle {
    /// Cancels the task, as [`JoinHandle::abort`] does. No effect on a finished task.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the task has finished (returned, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.task.header().state.is(COMPLETE)
    }
}

// SAFETY: INV-task: an abort handle touches only the task's atomic flags (`abort` sets one and
// wakes the task through its owner's scheduler, which any thread may do) and never the future,
// the output or the join waker cell. Dropping it may release the last reference on another
// thread only once the owner and the join handle are done with the task, which leaves nothing
// but the header and empty cells to free (the output was dropped by whichever of the join
// handle and the owner came second, see JOIN_DROPPED).
unsafe impl Send for AbortHandle {}
// SAFETY: INV-task: through `&AbortHandle` only `abort` and `is_finished` are reachable, both
// atomic operations on the task's flags.
unsafe impl Sync for AbortHandle {}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

// SAFETY: INV-task: a join handle touches only the task's atomics, its join waker cell (under the
// JOIN_WAKER protocol of `task/state.rs`) and, once COMPLETE hands it over, the output, which is
// `Send` here. The future stays on its owner's thread; abort and detach are atomic flag changes
// plus, for abort, a wake through the owner's scheduler, which any thread may do.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: INV-task: through `&JoinHandle` only `abort` and `is_finished` are reachable, both
// atomic operations on the task's flags.
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut out: Poll<Result<T, JoinError>> = Poll::Pending;
        // SAFETY: INV-vtable: the task's output type is `T` (a `JoinHandle<T>` is only made for a
        // task whose future's output is `T`), and `out` is a valid place for its result.
        unsafe {
            self.task
                .poll_join(&mut out as *mut Poll<Result<T, JoinError>> as *mut (), cx)
        };
        out
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        self.task.detach();
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a task gave no output: it panicked, or it was cancelled.
pub struct JoinError {
    // Boxed twice so a `Result<T, JoinError>` stored in every task stays one word larger than `T`.
    panic: Option<Box<Box<dyn Any + Send + 'static>>>,
}

impl JoinError {
    pub(crate) fn cancelled() -> JoinError {
        JoinError { panic: None }
    }

    pub(crate) fn panicked(p: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError {
            panic: Some(Box::new(p)),
        }
    }

    /// The task was aborted, or the runtime shut down before it finished.
    pub fn is_cancelled(&self) -> bool {
        self.panic.is_none()
    }

    /// The task panicked.
    pub fn is_panic(&self) -> bool {
        self.panic.is_some()
    }

    /// The panic's payload, to resume it with `std::panic::resume_unwind`.
    ///
    /// # Panics
    ///
    /// If the error is not a panic.
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        *self
            .panic
            .expect("JoinError::into_panic on a cancelled task")
    }

    fn message(&self) -> String {
        match &self.panic {
            None => "task was cancelled".to_string(),
            Some(p) => match p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
            {
                Some(m) => format!("task panicked: {m}"),
                None => "task panicked".to_string(),
            },
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinError({})", self.message())
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for std::io::Error {
    fn from(e: JoinError) -> std::io::Error {
        std::io::Error::other(e.message())
    }
}
