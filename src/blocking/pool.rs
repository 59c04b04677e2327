//! The process's pool of blocking threads: one queue of jobs under a mutex, threads started on
//! demand up to a cap, idle threads waiting on a condvar and exiting when their keep-alive runs
//! out.
//!
//! Accounting (all under the one lock):
//!
//! - `threads` counts live threads; it goes up before a thread is started and down as the thread
//!   decides to exit, so the cap is never exceeded, not even briefly.
//! - `idle` counts threads waiting on the condvar that no job has claimed yet. `execute` claims
//!   one for its job (`idle -= 1`, `notified += 1`) and wakes one waiter; the first waiter to see
//!   `notified > 0` takes the claim and goes to the queue. A waiter that finds no claim (a
//!   spurious wake, a new setting) looks at the cap and its keep-alive and waits again.
//! - So a queued job always has a thread coming for it: a busy thread looks at the queue before
//!   it goes idle, a claimed idle thread is on its way, and `execute` starts a thread when
//!   neither exists (or, at the cap, every thread is busy and will look at the queue).

use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A closure for a pool thread.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// The most threads the pool runs at once unless set otherwise (tokio's default).
pub(crate) const DEFAULT_MAX_THREADS: usize = 512;

/// How long a thread waits for a job before it exits, unless set otherwise (tokio's default).
pub(crate) const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The name every pool thread carries (in panic messages, `/proc/self/task/*/comm`, debuggers).
pub(crate) const THREAD_NAME: &str = "uring-blocking";

/// The pool every runtime of the process shares.
pub(crate) static POOL: Pool = Pool {
    state: Mutex::new(State {
        queue: VecDeque::new(),
        threads: 0,
        idle: 0,
        notified: 0,
        max_threads: DEFAULT_MAX_THREADS,
        keep_alive: DEFAULT_KEEP_ALIVE,
    }),
    wake: Condvar::new(),
};

/// A pool of blocking threads.
pub(crate) struct Pool {
    state: Mutex<State>,
    /// Idle threads wait here for a job, a new setting or the end of their keep-alive.
    wake: Condvar,
}

struct State {
    /// Jobs no thread has taken yet.
    queue: VecDeque<Job>,
    /// Live threads: running a job, looking at the queue, or idle.
    threads: usize,
    /// Threads waiting on the condvar that no job has claimed.
    idle: usize,
    /// Claims on idle threads that no waiter has taken yet.
    notified: usize,
    max_threads: usize,
    keep_alive: Duration,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run without the lock and nothing else in here panics while holding it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job` for a pool thread: an idle one, else a new one while under the cap, else
    /// the first busy one to finish.
    ///
    /// # Errors
    ///
    /// When no thread runs and none can be started (the OS refused a new thread): the job, and
    /// any other job stranded with it, is dropped unrun.
    pub(crate) fn execute(&'static self, job: Job) -> io::Result<()> {
        let mut state = self.lock();
        state.queue.push_back(job);
        if state.idle > 0 {
            state.idle -= 1;
            state.notified += 1;
            drop(state);
            self.wake.notify_one();
            return Ok(());
        }
        if state.threads >= state.max_threads {
            return Ok(());
        }
        state.threads += 1;
        drop(state);
        let started = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || self.work());
        let Err(e) = started else {
            return Ok(());
        };
        let mut state = self.lock();
        state.threads -= 1;
        if state.threads > 0 {
            // A running thread takes the job when it is done with its own.
            return Ok(());
        }
        let stranded: Vec<Job> = state.queue.drain(..).collect();
        drop(state);
        drop(stranded);
        Err(e)
    }

    /// A pool thread: runs jobs while there are any, then waits idle for the keep-alive.
    fn work(&self) {
        let mut state = self.lock();
        'jobs: loop {
            while let Some(job) = state.queue.pop_front() {
                drop(state);
                run(job);
                state = self.lock();
            }
            if state.threads > state.max_threads {
                // The cap was lowered: this thread is one too many.
                state.threads -= 1;
                return;
            }
            state.idle += 1;
            let since = Instant::now();
            loop {
                if state.notified > 0 {
                    // A job claimed an idle thread (`execute` already took it off `idle`).
                    state.notified -= 1;
                    continue 'jobs;
                }
                let waited = since.elapsed();
                if state.threads > state.max_threads || waited >= state.keep_alive {
                    state.idle -= 1;
                    state.threads -= 1;
                    return;
                }
                let left = state.keep_alive - waited;
                state = self
                    .wake
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }

    pub(crate) fn set_max_threads(&self, n: usize) {
        self.lock().max_threads = n;
        // Idle threads above the new cap exit.
        self.wake.notify_all();
    }

    pub(crate) fn max_threads(&self) -> usize {
        self.lock().max_threads
    }

    pub(crate) fn set_keep_alive(&self, keep_alive: Duration) {
        self.lock().keep_alive = keep_alive;
        // Idle threads measure their wait against the new keep-alive.
        self.wake.notify_all();
    }

    pub(crate) fn keep_alive(&self) -> Duration {
        self.lock().keep_alive
    }
}

/// Runs a job. `spawn_blocking`'s jobs catch their closure's panic themselves and hand it to the
/// task; what can still unwind here is a value's `Drop` (an output nobody awaits any more). It
/// is contained, so a pool thread never dies with its count still held.
fn run(job: Job) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(job)) {
        // A payload whose own drop panics is leaked rather than unwinding further.
        if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(again);
        }
    }
}
