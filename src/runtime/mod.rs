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
//!
//! `context` is the thread-local pointer to the running runtime's [`RuntimeState`] (`state`),
//! `run_queue` the queue of ready tasks with its budget and scheduler, `remote` the cross-thread
//! wake path, `timers` the timer table, `join_set` the spawning half of `JoinSet`, `metrics` the
//! counters' snapshot.

pub(crate) mod context;
mod join_set;
mod metrics;
mod remote;
mod run_queue;
mod state;
pub(crate) mod timers;

pub use metrics::{metrics, Metrics};
pub(crate) use state::RuntimeState;

use crate::driver::{Driver, DriverStats, RingSetup, DEFAULT_ENTRIES};
use crate::task::{self, JoinHandle};
use context::Enter;
use remote::{MainWake, Remote};
use run_queue::{RunQueue, Scheduler};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use timers::Timers;

impl RuntimeState {
    /// Creates a task on this runtime and queues it to run.
    pub(crate) fn spawn<F: Future + 'static>(&self, fut: F) -> JoinHandle<F::Output> {
        let (queued, join) = task::spawn::<F, Scheduler>(self.id, fut);
        self.run_queue.push(queued);
        self.tasks_spawned.set(self.tasks_spawned.get() + 1);
        join
    }

    /// Runs the tasks that are ready now, those woken from other threads included; returns
    /// whether more became ready meanwhile.
    fn run_ready(&self) -> bool {
        if let Some(woken) = self.remote.take_pending() {
            self.run_queue.extend(woken);
        }
        self.run_queue.run_ready(&self.owned)
    }

    /// Drops every task's future, including those spawned by futures being dropped and those
    /// other threads spawned on this runtime.
    fn shut_down_tasks(&self) {
        // Tasks that never returned Pending are not in the owned table yet: they are queued,
        // locally or (spawned or woken from elsewhere) in the remote queue.
        loop {
            let mut tasks = self.owned.drain();
            tasks.extend(self.run_queue.drain());
            tasks.extend(self.remote.take_pending().unwrap_or_default());
            if tasks.is_empty() {
                break;
            }
            for t in &tasks {
                t.shut_down();
            }
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
    state: Rc<RuntimeState>,
}

/// Configures and builds a [`Runtime`].
///
/// ```
/// use std::time::Duration;
/// let rt = uring::Runtime::builder()
///     .entries(256)
///     .shutdown_timeout(Duration::from_secs(2))
///     .build()
///     .unwrap();
/// assert_eq!(rt.block_on(async { 1 + 1 }), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    entries: u32,
    shutdown_timeout: Duration,
    iowq_max_workers: [u32; 2],
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            entries: DEFAULT_ENTRIES,
            shutdown_timeout: Duration::from_secs(10),
            iowq_max_workers: [0, 0],
        }
    }
}

impl Builder {
    /// The submission queue's size (rounded up to a power of two; the completion queue is four
    /// times larger, between 8 and 65536 entries). Any size works, down to 1: more concurrent
    /// ops than entries are queued in userspace and the kernel's overflow list keeps completions
    /// that do not fit. Default 1024.
    pub fn entries(&mut self, entries: u32) -> &mut Builder {
        self.entries = entries.max(1);
        self
    }

    /// How long dropping the runtime waits for the kernel to finish the ops it holds, after
    /// cancelling them all. An op the kernel cannot cancel (a read on a hung network
    /// filesystem) would otherwise hold the drop forever; after this long, the data of such ops
    /// is leaked, never freed (the kernel may still write into it), with a warning on stderr,
    /// and a future of such an op that is still alive stays pending for good. Whatever the
    /// limit, the drain takes one turn of up to 20 ms, so ops that answer a cancel at once (all
    /// ordinary ones) are never leaked. Default 10 seconds.
    pub fn shutdown_timeout(&mut self, limit: Duration) -> &mut Builder {
        self.shutdown_timeout = limit;
        self
    }

    /// Caps the kernel's io-wq worker threads for this runtime's thread
    /// (`IORING_REGISTER_IOWQ_MAX_WORKERS`): `bounded` for work on regular files and block
    /// devices the kernel hands to workers (buffered writes, for one), `unbounded` for waits of
    /// unknown length; 0 keeps the kernel's limit (by default, bounded: the ring's entries or 4
    /// per CPU, whichever is smaller). With one runtime per core, uncapped workers can add up to
    /// thousands of threads; `docs/architecture.md` has the measurements ("Kernel features for
    /// many cores"). Default: no cap; a `uring::Pool` sets one.
    pub fn iowq_max_workers(&mut self, bounded: u32, unbounded: u32) -> &mut Builder {
        self.iowq_max_workers = [bounded, unbounded];
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
        let remote = Arc::new(Remote::new()?);
        let mut driver = Driver::new(self.entries, remote.eventfd())?;
        if self.iowq_max_workers != [0, 0] {
            driver.cap_iowq_workers(self.iowq_max_workers)?;
        }
        let id = remote::register(remote.clone())?;
        Ok(Runtime {
            state: Rc::new(RuntimeState {
                id,
                driver: RefCell::new(driver),
                timers: RefCell::new(Timers::default()),
                remote,
                run_queue: RunQueue::new(),
                owned: Default::default(),
                shutdown_timeout: self.shutdown_timeout,
                tasks_spawned: Cell::new(0),
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
        self.state.driver.borrow().setup()
    }

    /// What the driver has done so far: `io_uring_enter` calls, completions, backlogged SQEs.
    pub fn driver_stats(&self) -> DriverStats {
        self.state.driver.borrow().stats()
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
        let _enter = Enter::new(&self.state, false);
        let state = &*self.state;
        let main = Arc::new(MainWake::new(state.remote.clone()));
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        let mut wakers: Vec<Waker> = Vec::with_capacity(64);
        let mut orphans = Vec::new();
        loop {
            if main.take_woken() {
                if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                    return out;
                }
            }
            let more = state.run_ready();
            let busy = more || main.is_woken() || state.remote.is_pending();
            let timeout = if busy {
                None
            } else {
                state.timers.borrow_mut().next_timeout(Instant::now())
            };
            let turned = state
                .driver
                .borrow_mut()
                .turn(!busy, timeout, &mut wakers, &mut orphans);
            if let Err(e) = turned {
                panic!("uring runtime loop: {e}");
            }
            wakers.drain(..).for_each(Waker::wake);
            // Dropped here, outside the driver's borrow: an orphan's fd closes in the same turn
            // as its op's final completion (INV-fd).
            orphans.clear();
            {
                let mut d = state.driver.borrow_mut();
                if std::mem::take(&mut d.woken_remotely) {
                    state.remote.rearm();
                    d.arm_wake();
                }
            }
            let mut timers = state.timers.borrow_mut();
            if !timers.is_empty() {
                timers.fire_expired(Instant::now(), &mut wakers);
            }
            drop(timers);
            wakers.drain(..).for_each(Waker::wake);
        }
    }

    /// Spawns a task on this runtime; it starts running at the next `block_on`.
    pub fn spawn<F: Future + 'static>(&self, fut: F) -> JoinHandle<F::Output> {
        self.state.spawn(fut)
    }

    /// A [`Spawner`] for this runtime: any thread can start tasks on it.
    pub fn spawner(&self) -> Spawner {
        self.state.spawner()
    }
}

impl RuntimeState {
    fn spawner(&self) -> Spawner {
        Spawner {
            owner: self.id,
            remote: self.remote.clone(),
        }
    }
}

/// Starts tasks on one runtime from any thread: asyncio's `run_coroutine_threadsafe`. `Send`,
/// `Sync` and cheap to clone; made by [`spawner()`] (the current runtime),
/// [`Runtime::spawner`] or `Pool::spawner`.
///
/// ```
/// let rt = uring::Runtime::new().unwrap();
/// let spawner = rt.spawner();
/// // A plain thread hands work to the loop; the closure runs there and builds the future
/// // there, so the future need not be `Send` (this one holds an `Rc`).
/// let handle = std::thread::spawn(move || {
///     spawner.spawn(|| async {
///         let here = std::rc::Rc::new(20);
///         *here + 1
///     })
/// })
/// .join()
/// .unwrap();
/// assert_eq!(rt.block_on(handle).unwrap(), 21);
/// ```
#[derive(Clone)]
pub struct Spawner {
    owner: u16,
    remote: Arc<Remote>,
}

impl Spawner {
    /// Sends `f` to the runtime, which calls it on its own thread and runs the future it builds
    /// as a task. The returned handle can be awaited from any runtime, or dropped to detach the
    /// task. If the runtime is gone (or shuts down before it gets to the task), the handle gives
    /// a cancelled [`JoinError`](crate::JoinError).
    pub fn spawn<F, Fut>(&self, f: F) -> JoinHandle<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let (queued, join) = task::spawn_elsewhere::<F, Fut, Scheduler>(self.owner, f);
        if let Err(task) = self.remote.push_new(queued) {
            // SAFETY: INV-task: the task never reached its runtime, so it never ran: its stage
            // holds only the `Send` closure.
            unsafe { task.cancel_unstarted() };
        }
        join
    }
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("runtime", &self.owner)
            .finish()
    }
}

/// A [`Spawner`] for the current thread's runtime, to hand to other threads.
///
/// # Panics
///
/// Outside a runtime.
///
/// ```
/// uring::run(async {
///     let spawner = uring::spawner();
///     let t = std::thread::spawn(move || spawner.spawn(|| async { 7 }));
///     let handle = t.join().unwrap();
///     assert_eq!(handle.await.unwrap(), 7);
/// });
/// ```
pub fn spawner() -> Spawner {
    context::with_current(|s| match s {
        Some(s) => s.spawner(),
        None => panic!(
            "uring::spawner must be called from within a uring runtime \
             (inside uring::run or Runtime::block_on)"
        ),
    })
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Futures dropped here may drop ops, which need the runtime to hand their data to the
        // driver; enter it even if another runtime is current on this thread.
        let _enter = Enter::new(&self.state, true);
        self.state.shut_down_tasks();
        let timers = self.state.timers.borrow_mut().clear();
        drop(timers);
        let mut orphans = Vec::new();
        self.state
            .driver
            .borrow_mut()
            .shut_down(self.state.shutdown_timeout, &mut orphans);
        drop(orphans);
        // The id is free for the next runtime from here on (see the task header's `owner`).
        remote::unregister(self.state.id);
        // Tasks other threads spawned here since the tasks were shut down never ran: cancel
        // them (on this thread, their owner's). Stale wakes find their task complete.
        for task in self.state.remote.close() {
            task.shut_down();
        }
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
    context::with_current(|s| match s {
        Some(s) => s.spawn(fut),
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
