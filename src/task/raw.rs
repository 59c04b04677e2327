//! The raw task: one `Arc` allocation holding a header that any thread may touch, and cells that
//! only the owner thread touches (the future, its output, the join waker), driven through a
//! vtable made for each future type.
//!
//! INV-task: a task's future and output are created, polled and dropped only on its owner's
//! thread; when the owner shuts down it drops every future first, so a reference that another
//! thread drops last releases nothing but the header and empty cells.
//!
//! INV-pin: a task's future is polled where it was put at spawn, inside the task allocation, and
//! dropped there too (`drop_in_place`, never moved out first), as `Pin` promises it: futures
//! that registered their own address somewhere (tokio's `Semaphore::acquire` in its waiter list,
//! every intrusive list) rely on it.

use crate::task::join::{JoinError, JoinHandle};
use crate::task::owned::OwnedTasks;
use crate::task::state::{TaskState, CANCELLED, COMPLETE, JOIN_DROPPED, JOIN_WAKER, OWNED};
use std::cell::UnsafeCell;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

/// How a woken task gets back to its owner's run queue. The task core knows nothing else of the
/// runtime: the owner is a 16-bit id in the header, which only the scheduler interprets.
pub(crate) trait Schedule: 'static {
    /// Queues `task` on the run queue of its owner ([`TaskRef::owner`]). Called by wakers and
    /// `abort`, from any thread.
    fn schedule(task: TaskRef);
}

/// A counted reference to a task of any future type: one pointer wide (the run queue and the
/// owned-task table hold millions of these in the spawn benchmark).
pub(crate) struct TaskRef(NonNull<Header>);

// SAFETY: the only thing another thread does with a `TaskRef` is move it into its owner's remote
// queue (or drop it if the owner is gone); the owner thread alone runs it. Dropping the last
// reference elsewhere frees only the header and empty cells (INV-task).
unsafe impl Send for TaskRef {}

impl TaskRef {
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: INV-vtable: a TaskRef holds a strong count, so the task allocation is alive.
        unsafe { self.0.as_ref() }
    }

    /// The id of the runtime that owns the task.
    pub(crate) fn owner(&self) -> u16 {
        self.header().owner
    }

    /// Polls the task once (or finishes its cancellation). Owner thread only.
    pub(crate) fn run(self, owned: &OwnedTasks) {
        // SAFETY: the vtable belongs to this task's future type; owner thread (INV-task).
        unsafe { (self.header().vtable.run)(self.0, owned) }
    }

    /// Drops the future without polling it, as the owner shuts down. Owner thread only.
    pub(crate) fn shut_down(&self) {
        // SAFETY: INV-vtable: as in `run`.
        unsafe { (self.header().vtable.shut_down)(self.0) }
    }

    pub(super) fn abort(&self) {
        // SAFETY: INV-vtable: the vtable is the task's own; `self` holds a count.
        unsafe { (self.header().vtable.abort)(self.0) }
    }

    /// Another counted reference to the same task (for an `AbortHandle`).
    pub(super) fn clone_ref(&self) -> TaskRef {
        // SAFETY: INV-vtable: the vtable is the task's own; `self` holds a count, so the task is
        // alive while another is added.
        unsafe { (self.header().vtable.clone_ref)(self.0) }
    }

    pub(super) fn detach(&self) {
        // SAFETY: INV-vtable: the vtable is the task's own; `self` holds a count. Any thread: a
        // detach is a flag change, and drops the output only where COMPLETE handed it over.
        unsafe { (self.header().vtable.detach)(self.0) }
    }

    /// Cancels a task made by [`spawn_elsewhere`] that never reached its owner (the owner shut
    /// down first): completes it as cancelled, dropping the closure that would have built its
    /// future, on the calling thread.
    ///
    /// # Safety
    ///
    /// The task was made by `spawn_elsewhere` and has never run: its stage holds only the
    /// `Send` closure, which may be dropped on any thread.
    pub(crate) unsafe fn cancel_unstarted(self) {
        // SAFETY: INV-task: the caller's promise: no future exists yet, so `shut_down` drops
        // only the closure, which is `Send`; it completes the task and wakes the join handle.
        unsafe { (self.header().vtable.shut_down)(self.0) }
    }

    /// Writes `Poll<Result<Output, JoinError>>` to `out`.
    ///
    /// # Safety
    ///
    /// `out` points to a `Poll<Result<F::Output, JoinError>>` for the task's future type `F`.
    pub(super) unsafe fn poll_join(&self, out: *mut (), cx: &mut Context<'_>) {
        // SAFETY: INV-vtable: the vtable is the task's own; the caller vouches for `out`.
        unsafe { (self.header().vtable.poll_join)(self.0, out, cx) }
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        // SAFETY: INV-vtable: releases the strong count this TaskRef owns, through the task's own
        // vtable.
        unsafe { (self.header().vtable.drop_ref)(self.0) }
    }
}

struct TaskVTable {
    run: unsafe fn(NonNull<Header>, &OwnedTasks),
    shut_down: unsafe fn(NonNull<Header>),
    drop_ref: unsafe fn(NonNull<Header>),
    poll_join: unsafe fn(NonNull<Header>, *mut (), &mut Context<'_>),
    abort: unsafe fn(NonNull<Header>),
    detach: unsafe fn(NonNull<Header>),
    clone_ref: unsafe fn(NonNull<Header>) -> TaskRef,
}

/// The part of a task every thread may touch. 16 bytes: it decides how many tasks fit a cache
/// line and a malloc size class (a million tiny tasks are memory-bound, docs/benchmarks.md).
#[repr(C)]
pub(crate) struct Header {
    pub(crate) state: TaskState,
    /// The runtime the task belongs to. Ids are reused after a runtime is gone; a stale wake of
    /// a task of a dead runtime then reaches another runtime, which finds the task complete
    /// (shutdown marked it so) and drops the reference without touching the task.
    owner: u16,
    /// The task's key in the owner's `OwnedTasks`, valid while `OWNED` is set. Only touched on
    /// the owner thread; an atomic so the header stays `Sync` without unsafe.
    owned_key: AtomicU32,
    vtable: &'static TaskVTable,
}

impl Header {
    pub(super) fn owned_key(&self) -> usize {
        self.owned_key.load(Ordering::Relaxed) as usize
    }

    pub(super) fn set_owned_key(&self, key: usize) {
        let key = u32::try_from(key).expect("more than 4 billion live tasks");
        self.owned_key.store(key, Ordering::Relaxed);
    }
}

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output, JoinError>),
    Consumed,
}

/// A task: the header first (`repr(C)`), so a pointer to the task is a pointer to its header.
#[repr(C)]
struct Task<F: Future, S> {
    header: Header,
    stage: UnsafeCell<Stage<F>>,
    join_waker: UnsafeCell<Option<Waker>>,
    _schedule: PhantomData<fn(S)>,
}

impl<F: Future + 'static, S: Schedule> Task<F, S> {
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
        clone_ref: Self::clone_ref_raw,
    };

    /// The task behind `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` points to a live `Task<F, S>` (the vtable the caller came through is this type's,
    /// and the caller holds a count for the duration of the borrow).
    unsafe fn from_header<'a>(ptr: NonNull<Header>) -> &'a Self {
        // SAFETY: INV-vtable: the caller's promise; `Task` is `repr(C)` with the header first.
        unsafe { &*(ptr.as_ptr() as *const Self) }
    }

    /// A TaskRef taking over one strong count of `this`.
    fn into_task_ref(this: Arc<Self>) -> TaskRef {
        let ptr = Arc::into_raw(this) as *mut Header;
        // SAFETY: INV-vtable: `Arc::into_raw` never returns null; `Task` is `repr(C)` with the
        // header first.
        TaskRef(unsafe { NonNull::new_unchecked(ptr) })
    }

    /// Queues the task through its scheduler, with a new count taken from a live one.
    ///
    /// # Safety
    ///
    /// `ptr` points to a live `Task<F, S>` whose count the caller holds.
    unsafe fn schedule_new_ref(ptr: *const Self) {
        // SAFETY: INV-vtable: adds a count for the run queue entry, from the caller's live one.
        let task = unsafe {
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        };
        S::schedule(Self::into_task_ref(task));
    }

    unsafe fn run_raw(ptr: NonNull<Header>, owned: &OwnedTasks) {
        // SAFETY: INV-vtable: reached through this type's vtable; the caller's TaskRef keeps it
        // alive.
        unsafe { Self::from_header(ptr) }.run(ptr, owned);
    }

    unsafe fn shut_down_raw(ptr: NonNull<Header>) {
        // SAFETY: INV-vtable: as in `run_raw`.
        unsafe { Self::from_header(ptr) }.shut_down();
    }

    unsafe fn drop_ref_raw(ptr: NonNull<Header>) {
        // SAFETY: INV-vtable: releases one strong count of the `Arc<Task<F, S>>` this pointer came
        // from.
        unsafe { Arc::decrement_strong_count(ptr.as_ptr() as *const Self) };
    }

    unsafe fn poll_join_raw(ptr: NonNull<Header>, out: *mut (), cx: &mut Context<'_>) {
        // SAFETY: INV-vtable: reached through this type's vtable while a JoinHandle holds a count;
        // `out` points to a `Poll<Result<F::Output, JoinError>>` (the caller's contract).
        unsafe {
            let this = Self::from_header(ptr);
            *(out as *mut Poll<Result<F::Output, JoinError>>) = this.poll_join(cx);
        }
    }

    unsafe fn abort_raw(ptr: NonNull<Header>) {
        // SAFETY: INV-vtable: reached through this type's vtable; the caller's JoinHandle holds a
        // count.
        let this = unsafe { Self::from_header(ptr) };
        if this.header.state.is(COMPLETE) {
            return;
        }
        this.header.state.set(CANCELLED);
        if this.header.state.schedule() {
            // SAFETY: INV-vtable: a live task whose count the JoinHandle holds.
            unsafe { Self::schedule_new_ref(ptr.as_ptr() as *const Self) };
        }
    }

    unsafe fn detach_raw(ptr: NonNull<Header>) {
        // SAFETY: INV-vtable: reached through this type's vtable; the caller's JoinHandle holds a
        // count.
        let this = unsafe { Self::from_header(ptr) };
        let before = this.header.state.set(JOIN_DROPPED);
        if before & COMPLETE != 0 {
            // SAFETY: INV-task: COMPLETE (acquired by the RMW above) handed the stage to this
            // join handle, which is going away: it drops the output, on its own thread (the
            // output is `Send` whenever the handle could leave the owner's thread).
            unsafe { *this.stage.get() = Stage::Consumed };
        }
    }

    unsafe fn clone_ref_raw(ptr: NonNull<Header>) -> TaskRef {
        // SAFETY: INV-vtable: reached through this type's vtable; the caller's TaskRef holds a
        // count, so adding one keeps the `Arc<Task<F, S>>` valid; the new TaskRef owns it.
        unsafe { Arc::increment_strong_count(ptr.as_ptr() as *const Self) };
        TaskRef(ptr)
    }

    unsafe fn clone_raw(ptr: *const ()) -> RawWaker {
        // SAFETY: INV-vtable: `ptr` came from `Arc::into_raw` of a `Task<F, S>` (a waker holds one
        // count).
        unsafe { Arc::increment_strong_count(ptr as *const Self) };
        RawWaker::new(ptr, &Self::WAKER_VTABLE)
    }

    unsafe fn wake_raw(ptr: *const ()) {
        // SAFETY: INV-vtable: the waker owns one strong count, which this takes over.
        let task = unsafe { Arc::from_raw(ptr as *const Self) };
        if task.header.state.schedule() {
            S::schedule(Self::into_task_ref(task));
        }
    }

    unsafe fn wake_by_ref_raw(ptr: *const ()) {
        // SAFETY: INV-vtable: the waker's count keeps the task alive for this call.
        let task = unsafe { &*(ptr as *const Self) };
        if task.header.state.schedule() {
            // SAFETY: INV-vtable: a live task whose count the waker holds.
            unsafe { Self::schedule_new_ref(ptr as *const Self) };
        }
    }

    unsafe fn drop_raw(ptr: *const ()) {
        // SAFETY: the waker owns one strong count, released here. If it is the last one, only
        // the header and empty cells are freed (INV-task).
        unsafe { Arc::decrement_strong_count(ptr as *const Self) };
    }

    /// Drops the future where it lies (INV-pin) and leaves the stage empty. A panicking drop is
    /// caught and its payload returned: the stage is empty either way.
    ///
    /// # Safety
    ///
    /// Owner thread (INV-task), not from inside the future's own poll, and the stage holds the
    /// future (`Running`).
    unsafe fn drop_future(&self) -> std::thread::Result<()> {
        let stage = self.stage.get();
        // SAFETY: INV-task: the caller's promise: nothing else touches the stage now. After a
        // panicking drop the value counts as dropped (drop glue finishes the other fields while
        // unwinding), so the stage is overwritten without dropping it again.
        unsafe {
            let dropped = catch_unwind(AssertUnwindSafe(|| ptr::drop_in_place(stage)));
            ptr::write(stage, Stage::Consumed);
            dropped
        }
    }

    /// Records the result of a task whose future is gone and wakes its joiner. Owner thread.
    fn finish(&self, owned: &OwnedTasks, result: Result<F::Output, JoinError>) {
        #[cfg(feature = "tracing")]
        tracing::trace!(
            target: "uring::task",
            task = self as *const Self as usize,
            outcome = match &result {
                Ok(_) => "returned",
                Err(e) if e.is_panic() => "panicked",
                Err(_) => "cancelled",
            },
            "task finished"
        );
        // The caller's TaskRef keeps the task alive after the table's count is released.
        let table_ref = owned.remove(&self.header);
        owned.count_finished();
        self.complete(result);
        drop(table_ref);
    }

    /// Stores the result, sets `COMPLETE`, and then either drops the result (the join handle is
    /// gone) or wakes the join handle. Owner thread, the future gone (the stage `Consumed`).
    fn complete(&self, result: Result<F::Output, JoinError>) {
        // SAFETY: INV-task: owner thread; the future is gone and COMPLETE is not set, so the
        // stage is the owner's and nothing borrows it.
        unsafe { *self.stage.get() = Stage::Finished(result) };
        let before = self.header.state.set(COMPLETE);
        if before & JOIN_DROPPED != 0 {
            // The join handle went away before COMPLETE: nobody else will drop the output. A
            // panicking drop is contained like a panicking poll.
            // SAFETY: INV-task: the join handle is gone, so the stage is still the owner's.
            let out = unsafe { std::ptr::replace(self.stage.get(), Stage::Consumed) };
            contain(catch_unwind(AssertUnwindSafe(move || drop(out))));
        } else if before & JOIN_WAKER != 0 {
            // SAFETY: INV-task: JOIN_WAKER was set before COMPLETE, so the cell holds the join
            // handle's waker, which the handle no longer changes (its CAS fails once COMPLETE is
            // set) and only reads: a shared borrow to wake it by reference is sound.
            let waker = unsafe { &*self.join_waker.get() };
            if let Some(w) = waker {
                contain(catch_unwind(AssertUnwindSafe(|| w.wake_by_ref())));
            }
        }
    }

    fn run(&self, ptr: NonNull<Header>, owned: &OwnedTasks) {
        self.header.state.unschedule();
        let flags = self.header.state.load();
        if flags & COMPLETE != 0 {
            return;
        }
        if flags & CANCELLED != 0 {
            // SAFETY: INV-task: owner thread, not inside the future's poll, the future is there
            // (not complete).
            let err = match unsafe { self.drop_future() } {
                Ok(()) => JoinError::cancelled(),
                Err(p) => JoinError::panicked(p),
            };
            self.finish(owned, Err(err));
            return;
        }
        // A waker that borrows the run queue's count instead of taking one: no refcount traffic
        // per poll. It is never dropped, only cloned by whoever keeps it.
        let raw = RawWaker::new(ptr.as_ptr() as *const (), &Self::WAKER_VTABLE);
        // SAFETY: INV-vtable: the vtable's contract holds for this pointer (a live `Task<F, S>`
        // whose count the caller's TaskRef holds for the whole poll); ManuallyDrop keeps us from
        // releasing a count we did not take.
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw) });
        let mut cx = Context::from_waker(&waker);
        // SAFETY: INV-task; the stage is only accessed on this thread, and nothing else touches
        // it while the future is polled (a JoinHandle reads it only once COMPLETE is set).
        let stage = unsafe { &mut *self.stage.get() };
        let Stage::Running(fut) = stage else {
            return;
        };
        // SAFETY: INV-pin: the future lives inside the Arc allocation and never moves out of it;
        // it is dropped there (`drop_future`).
        let fut = unsafe { Pin::new_unchecked(fut) };
        let polled = catch_unwind(AssertUnwindSafe(|| fut.poll(&mut cx)));
        let result = match polled {
            Ok(Poll::Pending) => {
                // Only tasks that outlive their first poll join the owned table (for shutdown);
                // the many that finish at once never touch it. Until then a task is in the run
                // queue, which shutdown drains too.
                if !self.header.state.is(OWNED) {
                    // SAFETY: INV-vtable: adds the table's count from the live one the caller's
                    // TaskRef holds.
                    unsafe { Arc::increment_strong_count(ptr.as_ptr() as *const Self) };
                    owned.insert(TaskRef(ptr));
                }
                return;
            }
            Ok(Poll::Ready(out)) => Ok(out),
            Err(panic) => Err(JoinError::panicked(panic)),
        };
        // SAFETY: INV-task: owner thread, the poll is over, the future is still there. A panic in
        // the drop of a future that already returned its output does not undo the output.
        contain(unsafe { self.drop_future() });
        self.finish(owned, result);
    }

    fn shut_down(&self) {
        if self.header.state.is(COMPLETE) {
            return;
        }
        // SAFETY: INV-task: owner thread, the future is not being polled, and it is there (not
        // complete).
        contain(unsafe { self.drop_future() });
        self.complete(Err(JoinError::cancelled()));
    }

    /// The join handle's poll, from any thread (the handle is `Send` when the output is).
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<F::Output, JoinError>> {
        let state = &self.header.state;
        if state.is(COMPLETE) {
            return Poll::Ready(self.take_output());
        }
        let cell = self.join_waker.get();
        if state.is(JOIN_WAKER) {
            // SAFETY: INV-task: with JOIN_WAKER set the owner only reads the cell (to wake it by
            // reference), so reading it here too is sound.
            let same = unsafe { &*cell }
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()));
            if same {
                return Poll::Pending;
            }
            // Take the cell back to change the waker, unless the task completed meanwhile.
            if !state.clear_unless_complete(JOIN_WAKER) {
                return Poll::Ready(self.take_output());
            }
        }
        // SAFETY: INV-task: JOIN_WAKER is clear, so the cell is the join handle's alone.
        unsafe { *cell = Some(cx.waker().clone()) };
        if !state.set_unless_complete(JOIN_WAKER) {
            // Completed before the owner could see the waker: nobody will wake it.
            return Poll::Ready(self.take_output());
        }
        Poll::Pending
    }

    /// Takes the output of a complete task. Join handle only, once.
    fn take_output(&self) -> Result<F::Output, JoinError> {
        // SAFETY: INV-task: COMPLETE (acquired by the caller's load or failed CAS) handed the
        // stage to the join handle, the only caller; the owner no longer touches it.
        let stage = unsafe { &mut *self.stage.get() };
        match std::mem::replace(stage, Stage::Consumed) {
            Stage::Finished(r) => r,
            _ => panic!("JoinHandle polled after it returned its result"),
        }
    }
}

/// Ends a caught panic without unwinding again: the payload is leaked, not dropped, since its
/// own `Drop` could panic. Used where a panic must not escape (the runtime's shutdown, a task's
/// end), so that no unwind can leave the runtime half shut down.
fn contain(caught: std::thread::Result<()>) {
    if let Err(payload) = caught {
        std::mem::forget(payload);
    }
}

/// Creates a task owned by runtime `owner` and scheduled through `S`. Returns the reference to
/// put in the run queue (the task starts out scheduled) and the join handle.
pub(crate) fn spawn<F, S>(owner: u16, fut: F) -> (TaskRef, JoinHandle<F::Output>)
where
    F: Future + 'static,
    S: Schedule,
{
    let task = Arc::new(Task::<F, S> {
        header: Header {
            state: TaskState::new(),
            owner,
            owned_key: AtomicU32::new(0),
            vtable: &Task::<F, S>::TASK_VTABLE,
        },
        stage: UnsafeCell::new(Stage::Running(fut)),
        join_waker: UnsafeCell::new(None),
        _schedule: PhantomData,
    });
    #[cfg(feature = "tracing")]
    tracing::trace!(
        target: "uring::task",
        task = Arc::as_ptr(&task) as usize,
        future = std::any::type_name::<F>(),
        "task spawned"
    );
    let queued = Task::into_task_ref(task.clone());
    (queued, JoinHandle::new(Task::into_task_ref(task)))
}

/// A future built, on its first poll, by a closure: the future of a task spawned from another
/// thread. The closure is `Send` and crosses threads; the future it builds need not be, and
/// exists only on the owner's thread (INV-task).
enum BuiltThere<C, Fut> {
    Closure(Option<C>),
    Future(Fut),
}

impl<C, Fut> Future for BuiltThere<C, Fut>
where
    C: FnOnce() -> Fut,
    Fut: Future,
{
    type Output = Fut::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Fut::Output> {
        // SAFETY: INV-pin: the closure is never pinned (it is moved out of its `Option`, not out
        // of the pinned value), and the future is only reached through a pinned reference.
        let this = unsafe { self.as_mut().get_unchecked_mut() };
        if let BuiltThere::Closure(c) = this {
            let build = c.take().expect("a task's closure is taken once");
            // `Pin::set` drops the old value in place and writes the new one where it lies.
            self.as_mut().set(BuiltThere::Future(build()));
        }
        // SAFETY: INV-pin: the future stays where it was written inside the pinned value; it is
        // only ever reached through this pinned reference.
        let this = unsafe { self.get_unchecked_mut() };
        match this {
            // SAFETY: INV-pin: as above, the future does not move.
            BuiltThere::Future(f) => unsafe { Pin::new_unchecked(f) }.poll(cx),
            BuiltThere::Closure(_) => unreachable!("the future was just built"),
        }
    }
}

/// Creates, on any thread, a task owned by runtime `owner` whose future `build` makes on its
/// first poll there. Returns the reference to queue on the owner (through its remote queue) and
/// the join handle. If the owner turns out to be gone, cancel the task with
/// [`TaskRef::cancel_unstarted`].
pub(crate) fn spawn_elsewhere<C, Fut, S>(owner: u16, build: C) -> (TaskRef, JoinHandle<Fut::Output>)
where
    C: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    S: Schedule,
{
    spawn::<_, S>(owner, BuiltThere::Closure(Some(build)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn task_header_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Header>(), 16);
    }

    thread_local! {
        static QUEUE: RefCell<Vec<TaskRef>> = const { RefCell::new(Vec::new()) };
    }

    /// A scheduler for these tests: one queue per thread, run by hand.
    struct TestQueue;

    impl Schedule for TestQueue {
        fn schedule(task: TaskRef) {
            QUEUE.with(|q| q.borrow_mut().push(task));
        }
    }

    fn run_queued(owned: &OwnedTasks) {
        loop {
            let Some(t) = QUEUE.with(|q| q.borrow_mut().pop()) else {
                return;
            };
            t.run(owned);
        }
    }

    /// A future that is pending until woken once, and checks in its `Drop` that it was dropped
    /// at the address where it was first polled.
    struct PinCheck {
        polled_at: Option<usize>,
        woken: bool,
        dropped_in_place: std::rc::Rc<std::cell::Cell<Option<bool>>>,
        _pin: std::marker::PhantomPinned,
    }

    impl Future for PinCheck {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            // SAFETY: INV-vtable: nothing is moved out of the pinned future.
            let this = unsafe { self.get_unchecked_mut() };
            this.polled_at = Some(this as *const PinCheck as usize);
            if this.woken {
                return Poll::Ready(());
            }
            this.woken = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    impl Drop for PinCheck {
        fn drop(&mut self) {
            if let Some(at) = self.polled_at {
                self.dropped_in_place
                    .set(Some(at == self as *const PinCheck as usize));
            }
        }
    }

    fn pin_check() -> (PinCheck, std::rc::Rc<std::cell::Cell<Option<bool>>>) {
        let flag = std::rc::Rc::new(std::cell::Cell::new(None));
        let f = PinCheck {
            polled_at: None,
            woken: false,
            dropped_in_place: flag.clone(),
            _pin: std::marker::PhantomPinned,
        };
        (f, flag)
    }

    #[test]
    fn futures_are_dropped_where_they_were_polled() {
        let owned = OwnedTasks::default();
        // Finished normally.
        let (f, done) = pin_check();
        let (t, join) = spawn::<_, TestQueue>(0, f);
        t.run(&owned);
        run_queued(&owned);
        assert_eq!(done.get(), Some(true));
        assert!(join.is_finished());
        // Aborted while pending.
        let (f, aborted) = pin_check();
        let (t, join) = spawn::<_, TestQueue>(0, async move {
            f.await;
            std::future::pending::<()>().await
        });
        t.run(&owned);
        join.abort();
        run_queued(&owned);
        assert_eq!(aborted.get(), Some(true));
        // Dropped at shutdown.
        let (f, shut) = pin_check();
        let (t, _join) = spawn::<_, TestQueue>(0, async move {
            f.await;
            std::future::pending::<()>().await
        });
        t.run(&owned);
        run_queued(&owned);
        for t in owned.drain() {
            t.shut_down();
        }
        assert_eq!(shut.get(), Some(true));
        assert_eq!(owned.len(), 0);
    }
}
