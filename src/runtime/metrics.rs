//! [`Metrics`]: a snapshot of one runtime's counters.
//!
//! Every counter is a plain integer the runtime bumps on a path it takes anyway (a spawn, a
//! submission, a reap, a timer insert or fire); nothing allocates or locks per op, so the
//! counters are always on. Reading them copies them (about 2 KiB, most of it the per-opcode
//! table).

use crate::driver::{opcodes, DriverStats};
use crate::runtime::{context, Runtime, RuntimeState};
use std::fmt;

/// What a runtime has done so far and holds now: tasks, ops, completions, `io_uring_enter`
/// calls, the submission backlog, completion-queue overflows, timers, registered files and
/// submissions per opcode. Made by [`uring::metrics()`](crate::metrics) (the current runtime)
/// or [`Runtime::metrics`]; a snapshot, not live.
///
/// ```
/// uring::run(async {
///     let before = uring::metrics();
///     let file = uring::fs::File::open("/proc/self/stat").await.unwrap();
///     let (n, _buf) = file.read_at(Vec::with_capacity(64), 0).await;
///     n.unwrap();
///     let after = uring::metrics();
///     let read = 22; // IORING_OP_READ (io_uring::opcode::Read::CODE)
///     assert_eq!(after.submitted(read) - before.submitted(read), 1);
///     assert!(after.completions() > before.completions());
///     assert!(after.enters() > before.enters());
/// });
/// ```
#[derive(Clone)]
pub struct Metrics {
    tasks_spawned: u64,
    tasks_finished: u64,
    timers_pending: u64,
    driver: DriverStats,
    submitted: [u64; 256],
}

impl Default for Metrics {
    /// All zeros: what [`uring::metrics()`](crate::metrics) gives outside a runtime.
    fn default() -> Metrics {
        Metrics {
            tasks_spawned: 0,
            tasks_finished: 0,
            timers_pending: 0,
            driver: DriverStats::default(),
            submitted: [0; 256],
        }
    }
}

impl Metrics {
    /// Tasks alive now: spawned on the runtime (from its own thread or another) and not
    /// finished yet.
    pub fn tasks_alive(&self) -> u64 {
        self.tasks_spawned.saturating_sub(self.tasks_finished)
    }

    /// Tasks spawned on the runtime so far, from its own thread ([`uring::spawn`](crate::spawn),
    /// `JoinSet::spawn`) or from others (a [`Spawner`](crate::Spawner)).
    pub fn tasks_spawned(&self) -> u64 {
        self.tasks_spawned
    }

    /// Ops in flight now: submitted, and their final completion not yet taken by their future
    /// (an op whose future was dropped counts until the kernel is done with it).
    pub fn ops_in_flight(&self) -> u64 {
        self.driver.ops_in_flight
    }

    /// Ops submitted so far (the sum of [`submitted`](Metrics::submitted) over every opcode).
    /// The driver's own SQEs (cancels, the cross-thread wake's eventfd read) are not ops.
    pub fn ops_submitted(&self) -> u64 {
        self.driver.ops_submitted
    }

    /// Completions reaped so far: every op's (a multishot op has several) and those of the
    /// driver's own SQEs.
    pub fn completions(&self) -> u64 {
        self.driver.completions
    }

    /// `io_uring_enter` calls so far: each submits what is queued and, when nothing is ready to
    /// run, waits for a completion or the next timer.
    pub fn enters(&self) -> u64 {
        self.driver.enters
    }

    /// SQEs that found the submission queue full and waited in the userspace backlog until the
    /// next `io_uring_enter` made room. Many means `Builder::entries` is small for the load.
    pub fn backlogged(&self) -> u64 {
        self.driver.backlogged
    }

    /// Loop turns that found the completion queue overflowed (`IORING_SQ_CQ_OVERFLOW`): more
    /// completions arrived at once than the completion ring holds, and the kernel kept the rest
    /// in its overflow list until the next enter. Nothing is lost, but each costs an extra
    /// `io_uring_enter`.
    pub fn cq_overflows(&self) -> u64 {
        self.driver.cq_overflows
    }

    /// Cancels the driver submitted: for ops whose future was dropped in flight, multishot ops
    /// stopped, and everything the kernel held at shutdown.
    pub fn cancels(&self) -> u64 {
        self.driver.cancels
    }

    /// Timers pending now: sleeps, timeouts and intervals registered and not yet fired.
    pub fn timers_pending(&self) -> u64 {
        self.timers_pending
    }

    /// Files in the ring's registered-file table now (`uring::fs::File`s and other fds the
    /// runtime registered so their ops skip the kernel's fd lookup).
    pub fn fixed_files_in_use(&self) -> u64 {
        self.driver.fixed_files_in_use
    }

    /// Files put in the registered-file table so far.
    pub fn fixed_files_registered(&self) -> u64 {
        self.driver.fixed_files_registered
    }

    /// Ops submitted so far with opcode `opcode`: the kernel's `IORING_OP_*` number
    /// (`io_uring::opcode::Read::CODE`, 22, for a read).
    pub fn submitted(&self, opcode: u8) -> u64 {
        self.submitted[opcode as usize]
    }

    /// `(name, count)` for every opcode submitted at least once, in opcode order; the name is
    /// the kernel's without its `IORING_OP_` prefix (`"READ"`, `"RECV"`, `"ACCEPT"`).
    pub fn submitted_by_opcode(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.submitted
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(code, &n)| (opcodes::name(code as u8).unwrap_or("UNKNOWN"), n))
    }

    /// The driver's part of these counters, as [`Runtime::driver_stats`] gives it.
    pub fn driver_stats(&self) -> DriverStats {
        self.driver
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct ByOpcode<'a>(&'a Metrics);
        impl fmt::Debug for ByOpcode<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(self.0.submitted_by_opcode()).finish()
            }
        }
        f.debug_struct("Metrics")
            .field("tasks_alive", &self.tasks_alive())
            .field("tasks_spawned", &self.tasks_spawned)
            .field("ops_in_flight", &self.ops_in_flight())
            .field("ops_submitted", &self.ops_submitted())
            .field("completions", &self.completions())
            .field("enters", &self.enters())
            .field("backlogged", &self.backlogged())
            .field("cq_overflows", &self.cq_overflows())
            .field("cancels", &self.cancels())
            .field("timers_pending", &self.timers_pending)
            .field("fixed_files_in_use", &self.fixed_files_in_use())
            .field("submitted", &ByOpcode(self))
            .finish()
    }
}

impl RuntimeState {
    fn metrics(&self) -> Metrics {
        let mut m = Metrics {
            tasks_spawned: self.tasks_spawned.get() + self.remote.spawned(),
            tasks_finished: self.owned.finished(),
            ..Metrics::default()
        };
        // Not borrowed while user code runs; `try_` all the same, so a metrics call can never
        // panic (the driver's counters then read as zeros).
        if let Ok(timers) = self.timers.try_borrow() {
            m.timers_pending = timers.pending() as u64;
        }
        if let Ok(driver) = self.driver.try_borrow() {
            m.driver = driver.stats();
            m.submitted = *driver.op_counts();
        }
        m
    }
}

impl Runtime {
    /// This runtime's counters now: tasks, ops, completions, enters, backlog, overflows,
    /// timers, registered files, submissions per opcode (see [`Metrics`]).
    ///
    /// ```
    /// let rt = uring::Runtime::new().unwrap();
    /// rt.block_on(async {
    ///     uring::spawn(async {}).await.unwrap();
    /// });
    /// let m = rt.metrics();
    /// assert_eq!(m.tasks_spawned(), 1);
    /// assert_eq!(m.tasks_alive(), 0);
    /// ```
    pub fn metrics(&self) -> Metrics {
        self.state.metrics()
    }
}

/// The current thread's runtime's counters (see [`Metrics`]).
///
/// Outside a runtime it returns all zeros ([`Metrics::default`]) rather than panic as
/// [`uring::spawn`](crate::spawn) does: metrics are read by logging and monitoring code, which
/// may run anywhere (after the runtime is gone, on a thread of its own), and a diagnostic call
/// should not be able to take a program down. Use [`Runtime::metrics`] to read a runtime from
/// outside it.
///
/// ```
/// assert_eq!(uring::metrics().tasks_spawned(), 0); // no runtime here
/// uring::run(async {
///     let _task = uring::spawn(std::future::pending::<()>());
///     assert_eq!(uring::metrics().tasks_alive(), 1);
/// });
/// ```
pub fn metrics() -> Metrics {
    context::with_current(|s| s.map(RuntimeState::metrics).unwrap_or_default())
}
