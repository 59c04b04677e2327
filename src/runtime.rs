//! The runtime: one ring, one run queue and one timer table per thread, and the loop that drives
//! them.
//!
//! ```text
//! loop {
//!     poll the main future if it was woken; return when it is ready
//!     run the tasks that are ready now (those woken meanwhile wait for the next turn)
//!     submit queued SQEs; if nothing is runnable, wait in io_uring_enter for a CQE or the
//!     next timer; reap every CQE and wake its owner; fire expired timers
//! }
//! ```

use crate::driver::{Driver, DriverStats, RingSetup};
use crate::task::{self, JoinHandle, OwnedTasks, TaskRef};
use crate::time::Timers;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

thread_local! {
    /// The runtime running on this thread. An `Enter` guard holds a strong count of it for as
    /// long as it is set, so the pointer is valid whenever it is not null. A plain `Cell` of a
    /// pointer needs no destructor, which makes this the cheapest kind of thread-local to read:
    /// every wake and every op submission reads it.
    static CURRENT: Cell<*const Handle> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` with the current runtime's handle, if there is one.
fn with_current<R>(f: impl FnOnce(Option<&Handle>) -> R) -> R {
    let ptr = CURRENT.with(|c| c.get());
    // SAFETY: a non-null CURRENT points to a Handle kept alive by the `Enter` guard that set it,
    // which outlives this call (guards are dropped in reverse order of creation on this thread).
    f(unsafe { ptr.as_ref() })
}

/// The part of a runtime that other threads reach through wakers.
pub(crate) struct Remote {
    queue: Mutex<Vec<TaskRef>>,
    /// Something is in `queue`, or the main future was woken from another thread.
    pending: AtomicBool,
    /// An eventfd write is on its way and not yet consumed by the loop.
    notified: AtomicBool,
    /// The runtime is gone: tasks woken now are dropped, not queued.
    closed: AtomicBool,
    eventfd: OwnedFd,
}

impl Remote {
    pub(crate) fn push(&self, task: TaskRef) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if self.closed.load(Ordering::Acquire) {
                drop(q);
                drop(task);
                return;
            }
            q.push(task);
        }
        self.pending.store(true, Ordering::Release);
        self.notify();
    }

    /// Wakes the loop if it is (or is about to be) blocked in `io_uring_enter`: the eventfd write
    /// completes the read the loop keeps armed on its ring.
    pub(crate) fn notify(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to the eventfd this struct owns.
            let _ = unsafe {
                libc::write(
                    self.eventfd.as_raw_fd(),
                    &one as *const u64 as *const libc::c_void,
                    8,
                )
            };
        }
    }
}

/// Queues a woken task on the local run queue if this thread runs the task's runtime; otherwise
/// gives the task back for the remote queue.
pub(crate) fn schedule_local(task: TaskRef) -> Option<TaskRef> {
    with_current(|h| match h {
        Some(h) if h.id == task.runtime() => {
            h.queue.borrow_mut().push_back(task);
            None
        }
        _ => Some(task),
    })
}

/// Every live runtime's remote part, by id: how a waker on another thread finds the queue of the
/// task's runtime without each task carrying an `Arc` (which would cost every spawn an atomic
/// increment and 8 bytes).
/// A runtime's id is its index here; a 16-bit id keeps the task header at 16 bytes.
static REMOTES: Mutex<Vec<Option<Arc<Remote>>>> = Mutex::new(Vec::new());

/// The remote part of runtime `id`, if it is still running.
pub(crate) fn remote_of(id: u16) -> Option<Arc<Remote>> {
    let remotes = REMOTES.lock().unwrap_or_else(|p| p.into_inner());
    remotes.get(id as usize).and_then(|r| r.clone())
}

/// Registers a new runtime's remote part and returns its id: the lowest free one.
fn register_remote(remote: Arc<Remote>) -> io::Result<u16> {
    let mut remotes = REMOTES.lock().unwrap_or_else(|p| p.into_inner());
    let id = match remotes.iter().position(Option::is_none) {
        Some(free) => free,
        None => {
            remotes.push(None);
            remotes.len() - 1
        }
    };
    let Ok(id16) = u16::try_from(id) else {
        remotes.truncate(id);
        return Err(io::Error::other(
            "too many uring runtimes at once in this process (at most 65536)",
        ));
    };
    remotes[id] = Some(remote);
    Ok(id16)
}

/// A runtime's state, shared by everything running on it through the thread-local context.
pub(crate) struct Handle {
    pub(crate) id: u16,
    pub(crate) driver: RefCell<Driver>,
    pub(crate) timers: RefCell<Timers>,
    pub(crate) remote: Arc<Remote>,
    queue: RefCell<VecDeque<TaskRef>>,
    pub(crate) owned: OwnedTasks,
}

impl Handle {
    /// The handle of the runtime running on this thread.
    ///
    /// # Panics
    ///
    /// Outside a runtime.
    pub(crate) fn current() -> Rc<Handle> {
        let ptr = CURRENT.with(|c| c.get());
        if ptr.is_null() {
            panic!(
                "this must be called from within a uring runtime \
                 (inside uring::run or Runtime::block_on)"
            );
        }
        // SAFETY: a non-null CURRENT came from `Rc::as_ptr` of a Handle whose `Enter` guard
        // holds a strong count; we add one for the Rc we return.
        unsafe {
            Rc::increment_strong_count(ptr);
            Rc::from_raw(ptr)
        }
    }

    /// Runs `f` with the current runtime's handle, if there is one.
    pub(crate) fn try_with<R>(f: impl FnOnce(&Handle) -> R) -> Option<R> {
        with_current(|h| h.map(f))
    }

    pub(crate) fn push_local(&self, task: TaskRef) {
        self.queue.borrow_mut().push_back(task);
    }

    /// Runs the tasks that are ready now; returns whether more became ready meanwhile.
    fn run_ready(&self) -> bool {
        if self.remote.pending.load(Ordering::Acquire) {
            self.remote.pending.store(false, Ordering::Release);
            let remote: Vec<TaskRef> =
                std::mem::take(&mut *self.remote.queue.lock().unwrap_or_else(|p| p.into_inner()));
            self.queue.borrow_mut().extend(remote);
        }
        // At least as many polls as tasks were ready at the start, and at least 61 (tokio's
        // event interval): tasks woken by the ones running now run in the same turn instead of
        // paying a loop turn each, while I/O completions are still reaped every 61 polls or so.
        let budget = self.queue.borrow().len().max(61);
        for _ in 0..budget {
            let Some(task) = self.queue.borrow_mut().pop_front() else {
                break;
            };
            task.run(self);
        }
        !self.queue.borrow().is_empty()
    }

    /// Drops every task's future, including those spawned by futures being dropped.
    fn shut_down_tasks(&self) {
        // Tasks that never returned Pending are not in the owned list yet: they are queued.
        loop {
            let mut tasks: Vec<TaskRef> = self.owned.drain();
            tasks.extend(self.queue.borrow_mut().drain(..));
            if tasks.is_empty() {
                break;
            }
            for t in &tasks {
                t.shut_down();
            }
        }
    }
}

/// Sets the thread's current runtime for the guard's lifetime, holding a strong count of it.
struct Enter {
    mine: Rc<Handle>,
    previous: *const Handle,
}

impl Enter {
    fn new(handle: &Rc<Handle>, nested_ok: bool) -> Enter {
        let previous = CURRENT.with(|c| c.get());
        if !previous.is_null() && !nested_ok {
            panic!(
                "cannot start a uring runtime from within a runtime: \
                 block_on was called inside uring::run or Runtime::block_on"
            );
        }
        CURRENT.with(|c| c.set(Rc::as_ptr(handle)));
        Enter {
            mine: handle.clone(),
            previous,
        }
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        // The previous runtime's guard is further up this thread's stack, still alive.
        CURRENT.with(|c| c.set(self.previous));
        let _ = &self.mine;
    }
}

/// Wakes the future given to `block_on`.
struct MainWake {
    woken: AtomicBool,
    remote: Arc<Remote>,
}

impl Wake for MainWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let here = Handle::try_with(|h| Arc::ptr_eq(&h.remote, &self.remote)).unwrap_or(false);
        if !here {
            self.remote.pending.store(true, Ordering::Release);
            self.remote.notify();
        }
    }
}

/// An io_uring event loop on the current thread: runs futures, their spawned tasks, timers and
/// I/O.
///
/// A runtime is not `Send`: its ring, tasks and timers belong to the thread that made it. For
/// several cores, run one runtime per thread.
///
/// ```
/// let rt = uring::Runtime::new().unwrap();
/// let n = rt.block_on(async {
///     uring::time::sleep(std::time::Duration::from_millis(1)).await;
///     7
/// });
/// assert_eq!(n, 7);
/// ```
pub struct Runtime {
    handle: Rc<Handle>,
}

/// Configures and builds a [`Runtime`].
#[derive(Debug, Clone)]
pub struct Builder {
    entries: u32,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder { entries: 1024 }
    }
}

impl Builder {
    /// The submission queue's size (rounded up to a power of two; the completion queue is four
    /// times larger). Any size works, down to 1: more concurrent ops than entries are queued in
    /// userspace and the kernel's overflow list keeps completions that do not fit. Default 1024.
    pub fn entries(&mut self, entries: u32) -> &mut Builder {
        self.entries = entries.max(1);
        self
    }

    /// Builds the runtime.
    ///
    /// # Errors
    ///
    /// When io_uring cannot be set up; the error says why and how to fix it (io_uring disabled
    /// by the `kernel.io_uring_disabled` sysctl or a seccomp policy, a kernel without io_uring,
    /// a ring too large for the memory limits).
    pub fn build(&self) -> io::Result<Runtime> {
        // SAFETY: plain syscall creating a new fd; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `efd` is a fresh fd that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        let driver = Driver::new(self.entries, eventfd.as_raw_fd())?;
        let remote = Arc::new(Remote {
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            notified: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            eventfd,
        });
        let id = register_remote(remote.clone())?;
        Ok(Runtime {
            handle: Rc::new(Handle {
                id,
                driver: RefCell::new(driver),
                timers: RefCell::new(Timers::default()),
                remote,
                queue: RefCell::new(VecDeque::with_capacity(64)),
                owned: OwnedTasks::default(),
            }),
        })
    }
}

impl Runtime {
    /// A runtime with default settings.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn new() -> io::Result<Runtime> {
        Builder::default().build()
    }

    /// A builder to configure a runtime.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// How the ring was set up (which task-run mode the kernel offered).
    pub fn ring_setup(&self) -> RingSetup {
        self.handle.driver.borrow().setup()
    }

    /// What the driver has done so far: `io_uring_enter` calls, completions, backlogged SQEs.
    pub fn driver_stats(&self) -> DriverStats {
        self.handle.driver.borrow().stats()
    }

    /// Runs `fut` to completion on this thread, driving spawned tasks, timers and I/O meanwhile.
    /// Tasks still running when it returns stay on the runtime for the next `block_on`, or are
    /// dropped with the runtime.
    ///
    /// # Panics
    ///
    /// If called from within a runtime, if `fut` panics, or if the ring fails in a way the loop
    /// cannot recover from (an `io_uring_enter` error other than `EINTR`, `EBUSY`, `ETIME`).
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let _enter = Enter::new(&self.handle, false);
        let handle = &*self.handle;
        let main = Arc::new(MainWake {
            woken: AtomicBool::new(true),
            remote: handle.remote.clone(),
        });
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        let mut wakers: Vec<Waker> = Vec::with_capacity(64);
        let mut orphans = Vec::new();
        loop {
            // A load first: the swap is a locked instruction, and most turns find no wake.
            if main.woken.load(Ordering::Acquire) && main.woken.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                    return out;
                }
            }
            let more = handle.run_ready();
            let busy = more
                || main.woken.load(Ordering::Acquire)
                || handle.remote.pending.load(Ordering::Acquire);
            let timeout = if busy {
                None
            } else {
                handle.timers.borrow_mut().next_timeout(Instant::now())
            };
            let turned = handle
                .driver
                .borrow_mut()
                .turn(!busy, timeout, &mut wakers, &mut orphans);
            if let Err(e) = turned {
                panic!("uring runtime loop: {e}");
            }
            for w in wakers.drain(..) {
                w.wake();
            }
            orphans.clear();
            let remote_wake = {
                let mut d = handle.driver.borrow_mut();
                let woke = std::mem::take(&mut d.woken_remotely);
                if woke {
                    // A swap, not a store: it synchronizes with the waker's swap that saw `true`,
                    // so the `pending` flag it set before is visible to the next drain.
                    handle.remote.notified.swap(false, Ordering::AcqRel);
                    d.arm_wake();
                }
                woke
            };
            let _ = remote_wake;
            handle.timers.borrow_mut().fire_expired(&mut wakers);
            for w in wakers.drain(..) {
                w.wake();
            }
        }
    }

    /// Spawns a task on this runtime; it starts running at the next `block_on`.
    pub fn spawn<F: Future + 'static>(&self, fut: F) -> JoinHandle<F::Output> {
        task::spawn_on(&self.handle, fut)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Futures dropped here may drop ops, which need the runtime to hand their data to the
        // driver; enter it even if another runtime is current on this thread.
        let _enter = Enter::new(&self.handle, true);
        self.handle.shut_down_tasks();
        self.handle.timers.borrow_mut().clear();
        let mut orphans = Vec::new();
        self.handle.driver.borrow_mut().shut_down(&mut orphans);
        drop(orphans);
        let remote = &self.handle.remote;
        // The id is free for the next runtime from here on (see the task header's `runtime`).
        let unregistered = REMOTES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(self.handle.id as usize)
            .and_then(|r| r.take());
        drop(unregistered);
        let late = {
            let mut q = remote.queue.lock().unwrap_or_else(|p| p.into_inner());
            remote.closed.store(true, Ordering::Release);
            std::mem::take(&mut *q)
        };
        drop(late);
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("ring_setup", &self.ring_setup())
            .finish()
    }
}

/// Runs a future to completion on a new runtime with default settings: the `asyncio.run` of
/// this crate.
///
/// # Panics
///
/// If io_uring cannot be set up (the panic message says why and how to fix it; use
/// [`Runtime::new`] to get the error instead), or if `fut` panics.
///
/// ```
/// let answer = uring::run(async { 42 });
/// assert_eq!(answer, 42);
/// ```
pub fn run<F: Future>(fut: F) -> F::Output {
    let rt = Runtime::new().unwrap_or_else(|e| panic!("uring::run: {e}"));
    rt.block_on(fut)
}

/// Spawns a task on the current thread's runtime. The future need not be `Send`; it runs on this
/// thread only.
///
/// # Panics
///
/// Outside a runtime.
///
/// ```
/// uring::run(async {
///     let a = uring::spawn(async { 1 });
///     let b = uring::spawn(async { 2 });
///     assert_eq!(a.await.unwrap() + b.await.unwrap(), 3);
/// });
/// ```
pub fn spawn<F: Future + 'static>(fut: F) -> JoinHandle<F::Output> {
    with_current(|h| match h {
        Some(h) => task::spawn_on(h, fut),
        None => panic!(
            "uring::spawn must be called from within a uring runtime \
             (inside uring::run or Runtime::block_on)"
        ),
    })
}

/// Yields to the runtime once: other ready tasks and I/O completions get a turn.
///
/// ```
/// uring::run(async { uring::yield_now().await });
/// ```
pub async fn yield_now() {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
    YieldNow(false).await
}
