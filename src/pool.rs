//! [`Pool`]: one runtime per thread, each with its own ring, for every core.
//!
//! The io_uring way to use many cores: no shared run queue and no work stealing. A task stays on
//! the worker that runs it, with its ring, its buffers and its sockets; work crosses threads only
//! when asked, as a `Send` closure that builds its (possibly `!Send`) future on the target worker
//! ([`Pool::spawn`], [`Pool::spawn_on`], [`Spawner`]). Give each worker its own listener
//! (`TcpListener::bind_reuseport`) and the kernel spreads connections.

use crate::runtime::{Builder, Spawner};
use crate::task::{JoinError, JoinHandle};
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

/// A set of runtime threads ("workers"), each with its own io_uring. Made by
/// [`Pool::builder`]; dropping it stops every worker: their tasks are dropped, their rings
/// drained, their threads joined.
///
/// ```
/// let pool = uring::Pool::builder().threads(2).build().unwrap();
/// // One future per worker, built there (it need not be Send), outputs in worker order.
/// let names = pool.run_each(|w| async move {
///     let here = std::rc::Rc::new(w.index());
///     uring::time::sleep(std::time::Duration::from_millis(1)).await;
///     format!("worker {} of {}", here, w.count())
/// });
/// assert_eq!(names, ["worker 0 of 2", "worker 1 of 2"]);
/// // A task on some worker, awaited from a plain thread's runtime.
/// let handle = pool.spawn(|| async { 6 * 7 });
/// assert_eq!(uring::run(handle).unwrap(), 42);
/// ```
pub struct Pool {
    workers: Vec<WorkerThread>,
    next: AtomicUsize,
}

struct WorkerThread {
    spawner: Spawner,
    stop: Arc<Stop>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Configures and builds a [`Pool`].
#[derive(Debug, Clone, Default)]
pub struct PoolBuilder {
    threads: usize,
    pin_cpus: bool,
    runtime: Builder,
    iowq_max_workers: Option<[u32; 2]>,
}

/// Which worker of a [`Pool`] a future runs on, as [`Pool::run_each`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    index: usize,
    count: usize,
}

impl Worker {
    /// This worker's index, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many workers the pool has.
    pub fn count(&self) -> usize {
        self.count
    }
}

impl PoolBuilder {
    /// How many workers: 0 (the default) for one per CPU this process may run on.
    pub fn threads(&mut self, n: usize) -> &mut PoolBuilder {
        self.threads = n;
        self
    }

    /// Pins worker `i` to the `i`-th CPU of the process's affinity mask (wrapping around if
    /// there are more workers than CPUs). Default: not pinned.
    pub fn pin_cpus(&mut self, pin: bool) -> &mut PoolBuilder {
        self.pin_cpus = pin;
        self
    }

    /// Each worker's submission queue size, as [`Builder::entries`]. Default 1024.
    pub fn entries(&mut self, entries: u32) -> &mut PoolBuilder {
        self.runtime.entries(entries);
        self
    }

    /// Each worker's cap on the kernel's io-wq threads, as [`Builder::iowq_max_workers`].
    /// Default: `max(2, 4 x CPUs / workers)` bounded workers per worker, so the pool as a whole
    /// keeps the kernel's own per-ring figure (4 per CPU) instead of multiplying it by the
    /// number of workers; unbounded ones left as the kernel has them.
    pub fn iowq_max_workers(&mut self, bounded: u32, unbounded: u32) -> &mut PoolBuilder {
        self.iowq_max_workers = Some([bounded, unbounded]);
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// If a worker's ring cannot be set up (as [`Builder::build`]), a thread cannot be started,
    /// or pinning fails; the workers started so far are stopped first.
    pub fn build(&self) -> io::Result<Pool> {
        let cpus = if self.pin_cpus {
            allowed_cpus()?
        } else {
            Vec::new()
        };
        let count = match self.threads {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut runtime = self.runtime.clone();
        let [bounded, unbounded] = self.iowq_max_workers.unwrap_or_else(|| {
            let cpus = thread::available_parallelism().map_or(1, |n| n.get());
            [(4 * cpus / count).max(2) as u32, 0]
        });
        runtime.iowq_max_workers(bounded, unbounded);
        let mut pool = Pool {
            workers: Vec::with_capacity(count),
            next: AtomicUsize::new(0),
        };
        for index in 0..count {
            let cpu = (!cpus.is_empty()).then(|| cpus[index % cpus.len()]);
            // On error, dropping `pool` stops the workers started so far.
            pool.workers.push(start_worker(index, cpu, &runtime)?);
        }
        Ok(pool)
    }
}

/// Starts worker `index`: a thread that builds its runtime, reports its spawner, and runs until
/// told to stop.
fn start_worker(index: usize, cpu: Option<usize>, runtime: &Builder) -> io::Result<WorkerThread> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let stop = Arc::new(Stop::default());
    let runtime = runtime.clone();
    let thread = thread::Builder::new()
        .name(format!("uring-worker-{index}"))
        .spawn({
            let stop = stop.clone();
            move || {
                if let Some(cpu) = cpu {
                    if let Err(e) = pin_to(cpu) {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
                let rt = match runtime.build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(rt.spawner()));
                rt.block_on(stop.wait());
            }
        })?;
    match ready_rx.recv() {
        Ok(Ok(spawner)) => Ok(WorkerThread {
            spawner,
            stop,
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(io::Error::other(format!(
                "uring worker {index} exited before its runtime was ready"
            )))
        }
    }
}

impl Pool {
    /// A builder for a pool.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// How many workers the pool has.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Sends `f` to a worker, which builds the future there and runs it as a task. Workers are
    /// taken in turn (round-robin). The handle can be awaited from any runtime.
    pub fn spawn<F, Fut>(&self, f: F) -> JoinHandle<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        self.workers[index].spawner.spawn(f)
    }

    /// As [`Pool::spawn`], on worker `index`.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`Pool::threads`].
    pub fn spawn_on<F, Fut>(&self, index: usize, f: F) -> JoinHandle<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        self.spawner(index).spawn(f)
    }

    /// A [`Spawner`] for worker `index`, for other threads to start tasks there.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`Pool::threads`].
    pub fn spawner(&self, index: usize) -> Spawner {
        match self.workers.get(index) {
            Some(w) => w.spawner.clone(),
            None => panic!(
                "uring::Pool: no worker {index} (the pool has {})",
                self.workers.len()
            ),
        }
    }

    /// Runs the future `f` builds on every worker (each builds its own, there: it need not be
    /// `Send`) and blocks until all have finished; returns their outputs in worker order.
    ///
    /// # Panics
    ///
    /// If one of the futures panicked: the first such panic is resumed here, after every
    /// worker's future has finished. Also if called from a runtime's thread (blocking it would
    /// stall that runtime).
    pub fn run_each<F, Fut, T>(&self, f: F) -> Vec<T>
    where
        F: Fn(Worker) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        if crate::runtime::context::with_current(|c| c.is_some()) {
            panic!(
                "uring::Pool::run_each blocks its thread: call it outside a runtime \
                 (spawn on the pool and await the handles instead)"
            );
        }
        let f = Arc::new(f);
        let count = self.workers.len();
        let handles = (0..count)
            .map(|index| {
                let f = f.clone();
                self.spawn_on(index, move || f(Worker { index, count }))
            })
            .collect();
        let mut outputs = Vec::with_capacity(count);
        let mut panic = None;
        for result in wait_all(handles) {
            match result {
                Ok(v) => outputs.push(v),
                Err(e) if e.is_panic() => {
                    panic.get_or_insert(e.into_panic());
                }
                Err(e) => {
                    panic.get_or_insert(Box::new(format!("a uring worker's future {e}")));
                }
            }
        }
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
        outputs
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for w in &self.workers {
            w.stop.set();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.workers.len())
            .finish()
    }
}

/// The signal that stops a worker: its `block_on` waits for it.
#[derive(Default)]
struct Stop(Mutex<(bool, Option<Waker>)>);

impl Stop {
    fn set(&self) {
        let waker = {
            let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
            s.0 = true;
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if s.0 {
                return Poll::Ready(());
            }
            crate::waker::store(&mut s.1, cx);
            Poll::Pending
        })
        .await
    }
}

/// Waits on this (non-runtime) thread for every handle, parking between wakes.
fn wait_all<T>(handles: Vec<JoinHandle<T>>) -> Vec<Result<T, JoinError>> {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut handles: Vec<Option<JoinHandle<T>>> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<Result<T, JoinError>>> = handles.iter().map(|_| None).collect();
    loop {
        for (h, r) in handles.iter_mut().zip(&mut results) {
            if let Some(handle) = h {
                if let Poll::Ready(out) = std::pin::Pin::new(handle).poll(&mut cx) {
                    *r = Some(out);
                    *h = None;
                }
            }
        }
        if handles.iter().all(Option::is_none) {
            return results.into_iter().map(|r| r.expect("joined")).collect();
        }
        thread::park();
    }
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: INV-ffi: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes into the
    // set we own, of the size we pass.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        set
    };
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: INV-ffi: CPU_ISSET reads a bit of the set we own, within CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    if cpus.is_empty() {
        return Err(io::Error::other("the process's CPU affinity mask is empty"));
    }
    Ok(cpus)
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: INV-ffi: a zeroed cpu_set_t is a valid empty set; CPU_SET writes one bit of it
    // (cpu < CPU_SETSIZE, from `allowed_cpus`); sched_setaffinity reads the set we own.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::new(
            io::Error::last_os_error().kind(),
            format!(
                "cannot pin a uring worker to CPU {cpu}: {}",
                io::Error::last_os_error()
            ),
        ));
    }
    Ok(())
}
