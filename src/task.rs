//! Tasks: spawned futures owned by one runtime thread, and the handles that join them.
//!
//! A task is one `Arc` allocation holding a small header (atomics, so its waker is `Send + Sync`)
//! and cells that only the owning runtime thread touches (the future, its output, the join
//! waker). INV-task: a task's future and output are created, polled and dropped only on its
//! runtime's thread; when the runtime shuts down it drops every future first, so a reference
//! that another thread drops last releases nothing but the header.

use crate::runtime::Handle;
use slab::Slab;
use std::any::Any;
use std::cell::{RefCell, UnsafeCell};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

/// A counted reference to a task of any future type: one pointer wide (the run queue and the
/// owned-task table hold millions of these in the spawn benchmark).
pub(crate) struct TaskRef(NonNull<Header>);

// SAFETY: the only thing another thread does with a `TaskRef` is move it into the runtime's
// remote queue (or drop it if the runtime is gone); the runtime thread alone runs it. Dropping the
// last reference elsewhere frees only the header and empty cells, because of INV-task.
unsafe impl Send for TaskRef {}

impl TaskRef {
    fn header(&self) -> &Header {
        // SAFETY: a TaskRef holds a strong count, so the task allocation is alive.
        unsafe { self.0.as_ref() }
    }

    /// Polls the task once (or finishes its cancellation). Runtime thread only.
    pub(crate) fn run(self, handle: &Handle) {
        // SAFETY: the vtable belongs to this task's future type; runtime thread (INV-task).
        unsafe { (self.header().vtable.run)(self.0, handle) }
    }

    /// Drops the future without polling it, as the runtime shuts down. Runtime thread only.
    pub(crate) fn shut_down(&self) {
        // SAFETY: as in `run`.
        unsafe { (self.header().vtable.shut_down)(self.0) }
    }

    /// Queues the task on its runtime: the local run queue when on that runtime's thread,
    /// the remote queue (waking the loop) otherwise.
    fn schedule(self) {
        if let Some(task) = crate::runtime::schedule_local(self) {
            match crate::runtime::remote_of(task.header().runtime) {
                Some(remote) => remote.push(task),
                // The runtime is gone: it dropped the future already (INV-task).
                None => drop(task),
            }
        }
    }

    /// The id of the runtime the task belongs to.
    pub(crate) fn runtime(&self) -> u16 {
        self.header().runtime
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        // SAFETY: releases the strong count this TaskRef owns, through the task's own vtable.
        unsafe { (self.header().vtable.drop_ref)(self.0) }
    }
}

const COMPLETE: u8 = 1;
const CANCELLED: u8 = 2;
const JOIN_DROPPED: u8 = 4;
/// In the runtime's owned table. Only changed on the runtime thread.
const OWNED: u8 = 8;

struct TaskVTable {
    run: unsafe fn(NonNull<Header>, &Handle),
    shut_down: unsafe fn(NonNull<Header>),
    drop_ref: unsafe fn(NonNull<Header>),
    /// Writes `Poll<Result<F::Output, JoinError>>` to the second argument.
    poll_join: unsafe fn(NonNull<Header>, *mut (), &mut Context<'_>),
    abort: unsafe fn(NonNull<Header>),
    detach: unsafe fn(NonNull<Header>),
}

/// The part of a task every thread may touch: atomics and the runtime's id.
#[repr(C)]
struct Header {
    scheduled: AtomicBool,
    flags: AtomicU8,
    /// The runtime the task belongs to (see `runtime::remote_of` for waking it from elsewhere).
    /// Ids are reused after a runtime is gone; a stale wake of a task of a dead runtime then
    /// reaches another runtime, which finds the task complete (shutdown marked it so) and drops
    /// the reference without touching the task.
    runtime: u16,
    /// The task's key in the runtime's owned table, valid while `OWNED` is set. Only touched on
    /// the runtime thread; an atomic so the header stays `Sync` without unsafe.
    owned_key: AtomicU32,
    vtable: &'static TaskVTable,
}

impl Header {
    #[inline]
    fn flag(&self, f: u8) -> bool {
        self.flags.load(Ordering::Acquire) & f != 0
    }
}

/// Every task of a runtime that has returned `Pending` at least once and not finished yet (the
/// others are in the run queue), so shutdown can drop their futures. Tasks that finish on their
/// first poll never enter it. It holds one strong count per task. Runtime thread only.
#[derive(Default)]
pub(crate) struct OwnedTasks {
    tasks: RefCell<Slab<TaskRef>>,
}

impl OwnedTasks {
    /// Adds a task, taking over the count `task` holds.
    fn insert(&self, task: TaskRef) {
        let header = task.header();
        let key = self.tasks.borrow().vacant_key();
        header.owned_key.store(
            u32::try_from(key).expect("more than 4 billion live tasks"),
            Ordering::Relaxed,
        );
        header.flags.fetch_or(OWNED, Ordering::Relaxed);
        self.tasks.borrow_mut().insert(task);
    }

    /// Takes a task out and returns the table's count of it, if it was in.
    fn remove(&self, header: &Header) -> Option<TaskRef> {
        if !header.flag(OWNED) {
            return None;
        }
        header.flags.fetch_and(!OWNED, Ordering::Relaxed);
        let key = header.owned_key.load(Ordering::Relaxed) as usize;
        self.tasks.borrow_mut().try_remove(key)
    }

    /// Empties the table, handing back its counts.
    pub(crate) fn drain(&self) -> Vec<TaskRef> {
        let tasks: Vec<TaskRef> = self.tasks.borrow_mut().drain().collect();
        for t in &tasks {
            t.header().flags.fetch_and(!OWNED, Ordering::Relaxed);
        }
        tasks
    }
}

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output, JoinError>),
    Consumed,
}

/// A task: the header first (`repr(C)`), so a pointer to the task is a pointer to its header.
#[repr(C)]
struct Task<F: Future> {
    header: Header,
    stage: UnsafeCell<Stage<F>>,
    join_waker: UnsafeCell<Option<Waker>>,
}

impl<F: Future + 'static> Task<F> {
    const WAKER_VTABLE: RawWakerVTable = RawWakerVTable::new(
        Self::clone_raw,
        Self::wake_raw,
        Self::wake_by_ref_raw,
        Self::drop_raw,
    );

    const TASK_VTABLE: TaskVTable = TaskVTable {
        run: Self::run_raw,
        shut_down: Self::shut_down_raw,
        drop_ref: Self::drop_ref_raw,
        poll_join: Self::poll_join_raw,
        abort: Self::abort_raw,
        detach: Self::detach_raw,
    };

    unsafe fn poll_join_raw(ptr: NonNull<Header>, out: *mut (), cx: &mut Context<'_>) {
        // SAFETY: `ptr` is a live `Task<F>` (the JoinHandle holds a count) and `out` points to a
        // `Poll<Result<F::Output, JoinError>>`: a `JoinHandle<T>` is only made with
        // `T = F::Output`.
        unsafe {
            let this = &*(ptr.as_ptr() as *const Self);
            *(out as *mut Poll<Result<F::Output, JoinError>>) = this.poll_join(cx);
        }
    }

    unsafe fn abort_raw(ptr: NonNull<Header>) {
        // SAFETY: `ptr` is a live `Task<F>`; the caller's JoinHandle holds a count.
        let this = unsafe { &*(ptr.as_ptr() as *const Self) };
        if this.flag(COMPLETE) {
            return;
        }
        this.header.flags.fetch_or(CANCELLED, Ordering::AcqRel);
        if !this.header.scheduled.swap(true, Ordering::AcqRel) {
            let raw = ptr.as_ptr() as *const Self;
            // SAFETY: adds a count for the run queue entry, from the JoinHandle's live one.
            let task = unsafe {
                Arc::increment_strong_count(raw);
                Arc::from_raw(raw)
            };
            Self::into_task_ref(task).schedule();
        }
    }

    unsafe fn detach_raw(ptr: NonNull<Header>) {
        // SAFETY: `ptr` is a live `Task<F>`; the caller's JoinHandle holds a count.
        let this = unsafe { &*(ptr.as_ptr() as *const Self) };
        this.header.flags.fetch_or(JOIN_DROPPED, Ordering::AcqRel);
        if this.flag(COMPLETE) {
            // SAFETY: INV-task; complete, runtime thread (JoinHandle is !Send).
            let old = unsafe { std::mem::replace(&mut *this.stage.get(), Stage::Consumed) };
            drop(old);
        }
    }

    #[inline]
    fn flag(&self, f: u8) -> bool {
        self.header.flag(f)
    }

    /// A TaskRef taking over one strong count of `this`.
    fn into_task_ref(this: Arc<Self>) -> TaskRef {
        let ptr = Arc::into_raw(this) as *mut Header;
        // SAFETY: `Arc::into_raw` never returns null; `Task` is `repr(C)` with the header first.
        TaskRef(unsafe { NonNull::new_unchecked(ptr) })
    }

    unsafe fn run_raw(ptr: NonNull<Header>, handle: &Handle) {
        // SAFETY: `ptr` is a live `Task<F>` (the vtable is this type's); the caller's TaskRef
        // keeps it alive for the call.
        let this = unsafe { &*(ptr.as_ptr() as *const Self) };
        this.run(ptr, handle);
    }

    unsafe fn shut_down_raw(ptr: NonNull<Header>) {
        // SAFETY: as in `run_raw`.
        let this = unsafe { &*(ptr.as_ptr() as *const Self) };
        this.shut_down();
    }

    unsafe fn drop_ref_raw(ptr: NonNull<Header>) {
        // SAFETY: releases one strong count of the `Arc<Task<F>>` this pointer came from.
        unsafe { Arc::decrement_strong_count(ptr.as_ptr() as *const Self) };
    }

    unsafe fn clone_raw(ptr: *const ()) -> RawWaker {
        // SAFETY: `ptr` came from `Arc::into_raw` of a `Task<F>` (a waker holds one count).
        unsafe { Arc::increment_strong_count(ptr as *const Self) };
        RawWaker::new(ptr, &Self::WAKER_VTABLE)
    }

    unsafe fn wake_raw(ptr: *const ()) {
        // SAFETY: the waker owns one strong count, which this takes over.
        let task = unsafe { Arc::from_raw(ptr as *const Self) };
        if !task.header.scheduled.swap(true, Ordering::AcqRel) {
            Self::into_task_ref(task).schedule();
        }
    }

    unsafe fn wake_by_ref_raw(ptr: *const ()) {
        // SAFETY: the waker's count keeps the task alive for this call.
        let task = unsafe { &*(ptr as *const Self) };
        if !task.header.scheduled.swap(true, Ordering::AcqRel) {
            // SAFETY: adds a count for the run queue entry, from a live Arc.
            unsafe { Arc::increment_strong_count(ptr as *const Self) };
            // SAFETY: takes over the count just added.
            let task = unsafe { Arc::from_raw(ptr as *const Self) };
            Self::into_task_ref(task).schedule();
        }
    }

    unsafe fn drop_raw(ptr: *const ()) {
        // SAFETY: the waker owns one strong count, released here. If it is the last one, only
        // the header and empty cells are freed (INV-task).
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
        self.header.flags.fetch_or(COMPLETE, Ordering::AcqRel);
        let owned = handle.owned.remove(&self.header);
        // SAFETY: INV-task; `join_waker` is only touched on this thread, never across a poll.
        let waker = unsafe { (*self.join_waker.get()).take() };
        // The future (and a detached task's output) are dropped here, outside any borrow of the
        // runtime, and a panicking drop is contained like a panicking poll.
        let _ = catch_unwind(AssertUnwindSafe(move || {
            drop(old);
            drop(detached_output);
        }));
        drop(owned);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn run(&self, ptr: NonNull<Header>, handle: &Handle) {
        self.header.scheduled.store(false, Ordering::Release);
        let flags = self.header.flags.load(Ordering::Acquire);
        if flags & COMPLETE != 0 {
            return;
        }
        if flags & CANCELLED != 0 {
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
        // A waker that borrows the run queue's count instead of taking one: no refcount traffic
        // per poll. It is never dropped, only cloned by whoever keeps it.
        let raw = RawWaker::new(ptr.as_ptr() as *const (), &Self::WAKER_VTABLE);
        // SAFETY: the vtable's contract holds for this pointer (a live `Task<F>` whose count the
        // caller's TaskRef holds for the whole poll); ManuallyDrop keeps us from releasing a
        // count we did not take.
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
            Ok(Poll::Pending) => {
                // Only tasks that outlive their first poll join the owned list (for shutdown);
                // the many that finish at once never touch it. Until then a task is in the run
                // queue, which shutdown drains too.
                if !self.flag(OWNED) {
                    // SAFETY: adds the list's count from the live one the caller's TaskRef holds.
                    unsafe { Arc::increment_strong_count(ptr.as_ptr() as *const Self) };
                    handle.owned.insert(TaskRef(ptr));
                }
            }
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
        self.header.flags.fetch_or(COMPLETE, Ordering::AcqRel);
        // SAFETY: INV-task; runtime thread.
        let waker = unsafe { (*self.join_waker.get()).take() };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<F: Future + 'static> Task<F> {
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
}

/// Ties a `JoinHandle` to its output type, and keeps it `!Send` (a task belongs to its thread).
type OutputMarker<T> = PhantomData<(fn() -> T, Rc<()>)>;

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
    /// One pointer wide, like the task references in the run queue.
    task: TaskRef,
    _output: OutputMarker<T>,
}

impl<T> JoinHandle<T> {
    /// Cancels the task: its future is dropped at the runtime's next chance, and awaiting this
    /// handle gives a [`JoinError`] whose `is_cancelled()` is true. No effect on a finished task.
    pub fn abort(&self) {
        // SAFETY: the vtable is the task's own; the handle holds a count.
        unsafe { (self.task.header().vtable.abort)(self.task.0) }
    }

    /// Whether the task has finished (returned, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.task.header().flag(COMPLETE)
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut out: Poll<Result<T, JoinError>> = Poll::Pending;
        // SAFETY: the vtable is the task's own, whose output type is `T` (set at spawn), and
        // `out` is a valid place for its result.
        unsafe {
            (self.task.header().vtable.poll_join)(
                self.task.0,
                &mut out as *mut Poll<Result<T, JoinError>> as *mut (),
                cx,
            )
        };
        out
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        // SAFETY: the vtable is the task's own; the handle still holds its count.
        unsafe { (self.task.header().vtable.detach)(self.task.0) }
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
    fn cancelled() -> JoinError {
        JoinError { panic: None }
    }

    fn panicked(p: Box<dyn Any + Send + 'static>) -> JoinError {
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

/// Creates a task on `handle`, queues it to run, and returns its join handle.
pub(crate) fn spawn_on<F>(handle: &Handle, fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
{
    let task = Arc::new(Task {
        header: Header {
            scheduled: AtomicBool::new(true),
            flags: AtomicU8::new(0),
            vtable: &Task::<F>::TASK_VTABLE,
            runtime: handle.id,
            owned_key: AtomicU32::new(0),
        },
        stage: UnsafeCell::new(Stage::Running(fut)),
        join_waker: UnsafeCell::new(None),
    });
    handle.push_local(Task::into_task_ref(task.clone()));
    JoinHandle {
        task: Task::into_task_ref(task),
        _output: PhantomData,
    }
}

#[cfg(test)]
mod tests {
    /// The header's size decides how many tasks fit a cache line and a malloc size class: a
    /// million tiny tasks are memory-bound (docs/benchmarks.md).
    #[test]
    fn task_header_is_16_bytes() {
        assert_eq!(std::mem::size_of::<super::Header>(), 16);
    }
}
