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
use crate::task::{self, JoinHandle, Notified, Runnable};
use crate::time::Timers;
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

thread_local! {
    static CURRENT: RefCell<Option<Rc<Handle>>> = const { RefCell::new(None) };
}

static NEXT_RUNTIME_ID: AtomicUsize = AtomicUsize::new(1);

/// The part of a runtime that other threads reach through wakers.
pub(crate) struct Remote {
    queue: Mutex<Vec<Notified>>,
    /// Something is in `queue`, or the main future was woken from another thread.
    pending: AtomicBool,
    /// An eventfd write is on its way and not yet consumed by the loop.
    notified: AtomicBool,
    /// The runtime is gone: tasks woken now are dropped, not queued.
    closed: AtomicBool,
    eventfd: OwnedFd,
}

impl Remote {
    fn push(&self, task: Notified) {
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

/// Queues a woken task on its runtime: directly when on that runtime's thread, through the remote
/// queue (and a wake of the loop) otherwise.
pub(crate) fn schedule(owner: usize, remote: &Arc<Remote>, task: Notified) {
    let task = CURRENT.with(|c| match &*c.borrow() {
        Some(h) if h.id == owner => {
            h.queue.borrow_mut().push_back(task.0);
            None
        }
        _ => Some(task),
    });
    if let Some(task) = task {
        remote.push(task);
    }
}

/// A runtime's state, shared by everything running on it through the thread-local context.
pub(crate) struct Handle {
    pub(crate) id: usize,
    pub(crate) driver: RefCell<Driver>,
    pub(crate) timers: RefCell<Timers>,
    pub(crate) remote: Arc<Remote>,
    queue: RefCell<VecDeque<Arc<dyn Runnable>>>,
    owned: RefCell<Slab<Arc<dyn Runnable>>>,
}

impl Handle {
    /// The handle of the runtime running on this thread.
    ///
    /// # Panics
    ///
    /// Outside a runtime.
    pub(crate) fn current() -> Rc<Handle> {
        CURRENT.with(|c| c.borrow().clone()).unwrap_or_else(|| {
            panic!(
                "this must be called from within a uring runtime \
                 (inside uring::run or Runtime::block_on)"
            )
        })
    }

    /// Runs `f` with the current runtime's handle, if there is one.
    pub(crate) fn try_with<R>(f: impl FnOnce(&Handle) -> R) -> Option<R> {
        CURRENT.with(|c| c.borrow().as_deref().map(f))
    }

    pub(crate) fn next_owned_key(&self) -> usize {
        self.owned.borrow().vacant_key()
    }

    pub(crate) fn insert_owned(&self, key: usize, task: Arc<dyn Runnable>) {
        let inserted = self.owned.borrow_mut().insert(task);
        debug_assert_eq!(inserted, key);
    }

    pub(crate) fn remove_owned(&self, key: usize) {
        let task = self.owned.borrow_mut().try_remove(key);
        drop(task);
    }

    pub(crate) fn push_local(&self, task: Arc<dyn Runnable>) {
        self.queue.borrow_mut().push_back(task);
    }

    /// Runs the tasks that are ready now; returns whether more became ready meanwhile.
    fn run_ready(&self) -> bool {
        if self.remote.pending.load(Ordering::Acquire) {
            self.remote.pending.store(false, Ordering::Release);
            let remote: Vec<Notified> =
                std::mem::take(&mut *self.remote.queue.lock().unwrap_or_else(|p| p.into_inner()));
            let mut q = self.queue.borrow_mut();
            q.extend(remote.into_iter().map(|n| n.0));
        }
        let budget = self.queue.borrow().len();
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
        loop {
            let tasks: Vec<Arc<dyn Runnable>> = self.owned.borrow_mut().drain().collect();
            if tasks.is_empty() {
                break;
            }
            for t in &tasks {
                t.shut_down();
            }
        }
        let queued: Vec<_> = self.queue.borrow_mut().drain(..).collect();
        drop(queued);
    }
}

/// Sets the thread's current runtime for the guard's lifetime.
struct Enter {
    previous: Option<Rc<Handle>>,
}

impl Enter {
    fn new(handle: &Rc<Handle>, nested_ok: bool) -> Enter {
        let previous = CURRENT.with(|c| c.borrow_mut().replace(handle.clone()));
        if previous.is_some() && !nested_ok {
            CURRENT.with(|c| *c.borrow_mut() = previous);
            panic!(
                "cannot start a uring runtime from within a runtime: \
                 block_on was called inside uring::run or Runtime::block_on"
            );
        }
        Enter { previous }
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        let previous = self.previous.take();
        let mine = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous));
        drop(mine);
    }
}

/// Wakes the future given to `block_on`.
struct MainWake {
    woken: AtomicBool,
    owner: usize,
    remote: Arc<Remote>,
}

impl Wake for MainWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let here = Handle::try_with(|h| h.id == self.owner).unwrap_or(false);
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
        Ok(Runtime {
            handle: Rc::new(Handle {
                id: NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed),
                driver: RefCell::new(driver),
                timers: RefCell::new(Timers::default()),
                remote,
                queue: RefCell::new(VecDeque::with_capacity(64)),
                owned: RefCell::new(Slab::with_capacity(64)),
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
            owner: handle.id,
            remote: handle.remote.clone(),
        });
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        let mut wakers: Vec<Waker> = Vec::with_capacity(64);
        let mut orphans = Vec::new();
        let now_cache = Cell::new(None::<Instant>);
        loop {
            if main.woken.swap(false, Ordering::AcqRel) {
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
                let now = Instant::now();
                now_cache.set(Some(now));
                handle.timers.borrow_mut().next_timeout(now)
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
                    handle.remote.notified.store(false, Ordering::Release);
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
    CURRENT.with(|c| match &*c.borrow() {
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
