//! Tasks: spawned futures owned by one runtime thread, and the handles that join them.
//!
//! A task is one `Arc` allocation holding a small header (atomics, so its waker is `Send + Sync`)
//! and cells that only the owning runtime thread touches (the future, its output, the join
//! waker). INV-task: a task's future and output are created, polled and dropped only on its
//! runtime's thread; when the runtime shuts down it drops every future first, so a reference
//! that another thread drops last releases nothing but the header.

use crate::runtime::{Handle, Remote};
use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

/// The type-erased face of a task, as the scheduler sees it.
pub(crate) trait Runnable {
    /// Polls the task once (or finishes its cancellation). Runtime thread only.
    fn run(self: Arc<Self>, handle: &Handle);
    /// Drops the future without polling it, as the runtime shuts down. Runtime thread only.
    fn shut_down(&self);
}

/// A task ready to run, moved through the runtime's cross-thread queue.
pub(crate) struct Notified(pub(crate) Arc<dyn Runnable>);

// SAFETY: the only thing another thread does with a `Notified` is move it into the runtime's
// remote queue (or drop it if the runtime is gone); the runtime thread alone runs it. Dropping the
// last reference elsewhere frees only the header, because of INV-task.
unsafe impl Send for Notified {}

const COMPLETE: u8 = 1;
const CANCELLED: u8 = 2;
const JOIN_DROPPED: u8 = 4;

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output, JoinError>),
    Consumed,
}

struct Task<F: Future> {
    scheduled: AtomicBool,
    flags: AtomicU8,
    owner: usize,
    owned_key: usize,
    remote: Arc<Remote>,
    stage: UnsafeCell<Stage<F>>,
    join_waker: UnsafeCell<Option<Waker>>,
}

impl<F: Future + 'static> Task<F> {
    const VTABLE: RawWakerVTable =
        RawWakerVTable::new(Self::clone_raw, Self::wake_raw, Self::wake_by_ref_raw, Self::drop_raw);

    fn flag(&self, f: u8) -> bool {
        self.flags.load(Ordering::Acquire) & f != 0
    }

    fn schedule(self: Arc<Self>) {
        let owner = self.owner;
        let remote = self.remote.clone();
        crate::runtime::schedule(owner, &remote, Notified(self));
    }

    unsafe fn clone_raw(ptr: *const ()) -> RawWaker {
        // SAFETY: `ptr` came from `Arc::into_raw` of a `Task<F>` (a waker holds one count).
        unsafe { Arc::increment_strong_count(ptr as *const Self) };
        RawWaker::new(ptr, &Self::VTABLE)
    }

    unsafe fn wake_raw(ptr: *const ()) {
        // SAFETY: the waker owns one strong count, which this takes over.
        let task = unsafe { Arc::from_raw(ptr as *const Self) };
        if !task.scheduled.swap(true, Ordering::AcqRel) {
            task.schedule();
        }
    }

    unsafe fn wake_by_ref_raw(ptr: *const ()) {
        // SAFETY: the waker's count keeps the task alive for this call.
        let task = unsafe { &*(ptr as *const Self) };
        if !task.scheduled.swap(true, Ordering::AcqRel) {
            // SAFETY: a new count for the queue entry, from a live Arc.
            unsafe { Arc::increment_strong_count(ptr as *const Self) };
            // SAFETY: takes over the count just added.
            unsafe { Arc::from_raw(ptr as *const Self) }.schedule();
        }
    }

    unsafe fn drop_raw(ptr: *const ()) {
        // SAFETY: the waker owns one strong count, released here. If it is the last one, only
        // the header is freed (INV-task).
        unsafe { Arc::decrement_strong_count(ptr as *const Self) };
    }

    /// Records the task's result and wakes its joiner. Runtime thread only.
    fn finish(&self, handle: &Handle, result: Result<F::Output, JoinError>) {
        // SAFETY: INV-task; the future is not being polled (we are past its poll).
        let stage = unsafe { &mut *self.stage.get() };
        let (next, detached_output) = if self.flag(JOIN_DROPPED) {
            (Stage::Consumed, Some(result))
        } else {
            (Stage::Finished(result), None)
        };
        let old = std::mem::replace(stage, next);
        self.flags.fetch_or(COMPLETE, Ordering::AcqRel);
        handle.remove_owned(self.owned_key);
        // SAFETY: INV-task; `join_waker` is only touched on this thread, never across a poll.
        let waker = unsafe { (*self.join_waker.get()).take() };
        // The future (and a detached task's output) are dropped here, outside any borrow of the
        // runtime, and a panicking drop is contained like a panicking poll.
        let _ = catch_unwind(AssertUnwindSafe(move || {
            drop(old);
            drop(detached_output);
        }));
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<F: Future + 'static> Runnable for Task<F> {
    fn run(self: Arc<Self>, handle: &Handle) {
        self.scheduled.store(false, Ordering::Release);
        if self.flag(COMPLETE) {
            return;
        }
        if self.flag(CANCELLED) {
            // SAFETY: INV-task; runtime thread, not inside the future's poll.
            let old = unsafe { std::mem::replace(&mut *self.stage.get(), Stage::Consumed) };
            let dropped = catch_unwind(AssertUnwindSafe(move || drop(old)));
            let err = match dropped {
                Ok(()) => JoinError::cancelled(),
                Err(p) => JoinError::panicked(p),
            };
            self.finish(handle, Err(err));
            return;
        }
        // A waker that borrows this task's count instead of taking one: no refcount traffic per
        // poll. It is never dropped, only cloned by whoever keeps it.
        let raw = RawWaker::new(Arc::as_ptr(&self) as *const (), &Self::VTABLE);
        // SAFETY: the vtable's contract holds for this pointer (an `Arc<Task<F>>` we hold alive
        // for the whole poll); ManuallyDrop keeps us from releasing a count we did not take.
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw) });
        let mut cx = Context::from_waker(&waker);
        // SAFETY: INV-task; the stage is only ever accessed on this thread, and nothing else
        // touches it while the future is polled (JoinHandle reads it only once COMPLETE is set).
        let stage = unsafe { &mut *self.stage.get() };
        let Stage::Running(fut) = stage else {
            return;
        };
        // SAFETY: the future lives inside the Arc allocation and is never moved out of it
        // while running; it is dropped in place (replaced) when it finishes.
        let fut = unsafe { Pin::new_unchecked(fut) };
        match catch_unwind(AssertUnwindSafe(|| fut.poll(&mut cx))) {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(out)) => self.finish(handle, Ok(out)),
            Err(panic) => self.finish(handle, Err(JoinError::panicked(panic))),
        }
    }

    fn shut_down(&self) {
        if self.flag(COMPLETE) {
            return;
        }
        // SAFETY: INV-task; runtime thread, the future is not being polled.
        let old = unsafe { std::mem::replace(&mut *self.stage.get(), Stage::Consumed) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(old)));
        if !self.flag(JOIN_DROPPED) {
            // SAFETY: as above.
            unsafe { *self.stage.get() = Stage::Finished(Err(JoinError::cancelled())) };
        }
        self.flags.fetch_or(COMPLETE, Ordering::AcqRel);
        // SAFETY: INV-task; runtime thread.
        let waker = unsafe { (*self.join_waker.get()).take() };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The joining side of a task, without the future's type.
trait Join<T> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>>;
    fn abort(&self);
    fn is_finished(&self) -> bool;
    fn detach(&self);
}

impl<F: Future + 'static> Join<F::Output> for Task<F> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<F::Output, JoinError>> {
        if self.flag(COMPLETE) {
            // SAFETY: INV-task; the task is complete, so nothing else touches the stage.
            let stage = unsafe { &mut *self.stage.get() };
            match std::mem::replace(stage, Stage::Consumed) {
                Stage::Finished(r) => return Poll::Ready(r),
                _ => panic!("JoinHandle polled after it returned its result"),
            }
        }
        // SAFETY: INV-task; the join waker is only touched on this thread, never while the task
        // itself is in `finish` (which is not re-entrant with this poll).
        let slot = unsafe { &mut *self.join_waker.get() };
        match slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn abort(&self) {
        if self.flag(COMPLETE) {
            return;
        }
        self.flags.fetch_or(CANCELLED, Ordering::AcqRel);
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            let ptr = self as *const Self;
            // SAFETY: `self` is borrowed from a live `Arc<Task<F>>` held by the JoinHandle; this
            // adds a count for the run queue entry.
            let task = unsafe {
                Arc::increment_strong_count(ptr);
                Arc::from_raw(ptr)
            };
            task.schedule();
        }
    }

    fn is_finished(&self) -> bool {
        self.flag(COMPLETE)
    }

    fn detach(&self) {
        self.flags.fetch_or(JOIN_DROPPED, Ordering::AcqRel);
        if self.flag(COMPLETE) {
            // SAFETY: INV-task; complete, runtime thread (JoinHandle is !Send).
            let old = unsafe { std::mem::replace(&mut *self.stage.get(), Stage::Consumed) };
            drop(old);
        }
    }
}

/// An owned permission to await a spawned task's output.
///
/// Awaiting it gives `Ok(output)`, or a [`JoinError`] if the task panicked or was aborted.
/// Dropping it detaches the task, which keeps running. It is not `Send`: a task belongs to the
/// runtime thread that spawned it.
///
/// ```
/// uring::run(async {
///     let handle = uring::spawn(async { 6 * 7 });
///     assert_eq!(handle.await.unwrap(), 42);
/// });
/// ```
pub struct JoinHandle<T> {
    task: Arc<dyn Join<T>>,
    _not_send: PhantomData<Rc<()>>,
}

impl<T> JoinHandle<T> {
    /// Cancels the task: its future is dropped at the runtime's next chance, and awaiting this
    /// handle gives a [`JoinError`] whose `is_cancelled()` is true. No effect on a finished task.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the task has finished (returned, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.task.poll_join(cx)
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
    panic: Option<Box<dyn Any + Send + 'static>>,
}

impl JoinError {
    fn cancelled() -> JoinError {
        JoinError { panic: None }
    }

    fn panicked(p: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError { panic: Some(p) }
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
        self.panic.expect("JoinError::into_panic on a cancelled task")
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

/// Creates a task on `handle` and returns its join handle; the caller schedules it.
pub(crate) fn spawn_on<F>(handle: &Handle, fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
{
    let owned_key = handle.next_owned_key();
    let task = Arc::new(Task {
        scheduled: AtomicBool::new(true),
        flags: AtomicU8::new(0),
        owner: handle.id,
        owned_key,
        remote: handle.remote.clone(),
        stage: UnsafeCell::new(Stage::Running(fut)),
        join_waker: UnsafeCell::new(None),
    });
    handle.insert_owned(owned_key, task.clone());
    handle.push_local(task.clone());
    JoinHandle {
        task,
        _not_send: PhantomData,
    }
}
