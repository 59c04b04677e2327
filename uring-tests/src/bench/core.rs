//! The core benchmark suite: the executor and the timers of uring against tokio's current_thread
//! runtime, on the same work, in one process run, pinned to one CPU.
//!
//! Rows:
//! * `spawn`: spawn 1M tiny tasks, then await every handle (target: uring <= 0.25x tokio).
//! * `sleep`: spawn 100k tasks that each sleep 1 ms, then await every handle (target <= 0.7x).
//! * `pingpong`: two tasks hand a baton back and forth, 1M wakeups in all (target <= 1.0x).
//!
//! Each figure is the median of several rounds of the `block_on` call that does the work (the
//! runtime is built before the clock starts and dropped after it stops), in milliseconds. Rounds
//! alternate between the two runtimes so that noise from the shared machine hits both alike.

use super::{median, print_table, Better, SummaryRow};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Tasks spawned and joined in the `spawn` row.
pub const SPAWN_TASKS: usize = 1_000_000;
/// Concurrent sleeping tasks in the `sleep` row.
pub const SLEEP_TASKS: usize = 100_000;
/// How long each of them sleeps.
pub const SLEEP_FOR: Duration = Duration::from_millis(1);
/// Wakeups in the `pingpong` row (each task wakes the other half of this many times).
pub const PINGPONG_WAKEUPS: usize = 1_000_000;
/// Rounds per figure by default (the median is printed).
pub const DEFAULT_ROUNDS: usize = 5;

/// The rows of this suite, by the name that selects one on the command line.
pub const ROWS: &[&str] = &["spawn", "sleep", "pingpong"];

/// A row of the suite: its name, its description, and the target ratio uring/tokio.
struct Row {
    name: &'static str,
    what: String,
    target: f64,
    uring: fn() -> Duration,
    tokio: fn() -> Duration,
}

/// What to run of the suite.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds per figure (the median is printed), plus one warm-up round that is not counted.
    pub rounds: usize,
    /// Only this row (one of [`ROWS`]); `None` runs them all.
    pub row: Option<String>,
    /// Only this runtime (`"uring"` or `"tokio"`), for profiling one side; `None` runs both.
    pub runtime: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            rounds: DEFAULT_ROUNDS,
            row: None,
            runtime: None,
        }
    }
}

/// Runs the suite, prints its table and returns its rows for the closing summary.
///
/// # Panics
///
/// If `opts` names an unknown row or runtime, or if a runtime cannot be built.
pub fn run(opts: &Options) -> Vec<SummaryRow> {
    let rounds = opts.rounds.max(1);
    let row = opts.row.as_deref();
    let only = opts.runtime.as_deref();
    assert!(
        matches!(only, None | Some("uring") | Some("tokio")),
        "unknown runtime {only:?}: uring or tokio"
    );
    let run_uring = only != Some("tokio");
    let run_tokio = only != Some("uring");
    let rows = [
        Row {
            name: "spawn",
            what: format!("spawn and join {} tiny tasks", SPAWN_TASKS),
            target: 0.25,
            uring: uring_spawn_join,
            tokio: tokio_spawn_join,
        },
        Row {
            name: "sleep",
            what: format!(
                "{} concurrent {} ms sleeps",
                SLEEP_TASKS,
                SLEEP_FOR.as_millis()
            ),
            target: 0.7,
            uring: uring_sleeps,
            tokio: tokio_sleeps,
        },
        Row {
            name: "pingpong",
            what: format!(
                "ping-pong of {} wakeups between two tasks",
                PINGPONG_WAKEUPS
            ),
            target: 1.0,
            uring: uring_ping_pong,
            tokio: tokio_ping_pong,
        },
    ];
    if let Some(r) = row {
        assert!(
            ROWS.contains(&r),
            "unknown core benchmark row {r:?}; rows are {ROWS:?}"
        );
    }

    let setup = uring::Runtime::new()
        .expect("build a uring runtime")
        .ring_setup();
    let pin = PinToOneCpu::new();
    println!(
        "core suite: uring ring setup {setup}; pinned to CPU {}; median of {rounds} rounds \
         (plus 1 warm-up), time of the block_on doing the work",
        pin.cpu
            .map(|c| c.to_string())
            .unwrap_or_else(|| "none (sched_setaffinity failed)".into())
    );

    let mut table = Vec::new();
    let mut summary = Vec::new();
    for r in rows
        .iter()
        .filter(|r| row.is_none_or(|name| name == r.name))
    {
        let mut u = Vec::with_capacity(rounds);
        let mut t = Vec::with_capacity(rounds);
        // One warm-up round each (first-touch page faults, allocator growth), then the rounds.
        for round in 0..=rounds {
            if run_uring {
                let ms = (r.uring)().as_secs_f64() * 1e3;
                if round > 0 {
                    u.push(ms);
                }
            }
            if run_tokio {
                let ms = (r.tokio)().as_secs_f64() * 1e3;
                if round > 0 {
                    t.push(ms);
                }
            }
        }
        let (u, t) = (median(&mut u), median(&mut t));
        let ratio = u / t;
        summary.push(SummaryRow {
            suite: "core",
            work: r.what.clone(),
            figure: "ms",
            better: Better::Lower,
            decimals: 1,
            uring: u,
            peers: if run_tokio {
                vec![("tokio", t, ratio)]
            } else {
                Vec::new()
            },
        });
        let fmt = |x: f64| {
            if x.is_nan() {
                "-".to_string()
            } else {
                format!("{x:.1}")
            }
        };
        table.push(vec![
            r.what.clone(),
            fmt(u),
            fmt(t),
            if ratio.is_nan() {
                "-".to_string()
            } else {
                format!("{ratio:.2}")
            },
            format!("<= {:.2}", r.target),
            match ratio {
                x if x.is_nan() => "-",
                x if x <= r.target => "met",
                _ => "MISSED",
            }
            .to_string(),
        ]);
    }
    drop(pin);
    print_table(
        &format!("core: uring ({setup}) vs tokio current_thread, one CPU, median ms"),
        &[
            "work",
            "uring ms",
            "tokio ms",
            "uring/tokio",
            "target",
            "status",
        ],
        &table,
    );
    summary
}

/// Pins the calling thread to the CPU it runs on, so both runtimes see the same core; restores
/// the previous affinity on drop.
struct PinToOneCpu {
    previous: Option<libc::cpu_set_t>,
    cpu: Option<usize>,
}

impl PinToOneCpu {
    fn new() -> PinToOneCpu {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut previous: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: the kernel writes at most `size` bytes into `previous`, which we own.
        if unsafe { libc::sched_getaffinity(0, size, &mut previous) } != 0 {
            return PinToOneCpu {
                previous: None,
                cpu: None,
            };
        }
        // SAFETY: plain query of the current CPU.
        let cpu = unsafe { libc::sched_getcpu() };
        let cpu = if cpu >= 0 { cpu as usize } else { 0 };
        // SAFETY: as above, plain data.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` is below CPU_SETSIZE (it is a CPU the kernel just ran us on); CPU_SET
        // only sets a bit in `one`.
        unsafe { libc::CPU_SET(cpu, &mut one) };
        // SAFETY: the kernel reads `size` bytes from `one`, which we own.
        let ok = unsafe { libc::sched_setaffinity(0, size, &one) } == 0;
        PinToOneCpu {
            previous: Some(previous),
            cpu: ok.then_some(cpu),
        }
    }
}

impl Drop for PinToOneCpu {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            // SAFETY: the kernel reads the saved set, which we own.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), previous) };
        }
    }
}

fn uring_runtime() -> uring::Runtime {
    uring::Runtime::new().expect("build a uring runtime")
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

/// Times `rt.block_on(work)` for uring.
fn time_uring<F: Future>(work: F) -> Duration {
    let rt = uring_runtime();
    let start = Instant::now();
    rt.block_on(work);
    let took = start.elapsed();
    drop(rt);
    took
}

/// Times `rt.block_on(work)` for tokio.
fn time_tokio<F: Future>(work: F) -> Duration {
    let rt = tokio_runtime();
    let start = Instant::now();
    rt.block_on(work);
    let took = start.elapsed();
    drop(rt);
    took
}

/// The same spawn-and-join code for both runtimes; only the `spawn` function differs.
macro_rules! spawn_join {
    ($spawn:path) => {
        async {
            let handles: Vec<_> = (0..SPAWN_TASKS).map(|i| $spawn(async move { i })).collect();
            let mut sum = 0usize;
            for h in handles {
                sum = sum.wrapping_add(h.await.expect("task"));
            }
            assert_eq!(sum, SPAWN_TASKS * (SPAWN_TASKS - 1) / 2);
        }
    };
}

/// The same sleeping-tasks code for both runtimes; only `spawn` and `sleep` differ.
macro_rules! sleepers {
    ($spawn:path, $sleep:path) => {
        async {
            let handles: Vec<_> = (0..SLEEP_TASKS)
                .map(|_| $spawn(async { $sleep(SLEEP_FOR).await }))
                .collect();
            for h in handles {
                h.await.expect("task");
            }
        }
    };
}

/// The same ping-pong code for both runtimes; only `spawn` differs.
macro_rules! ping_pong {
    ($spawn:path) => {
        async {
            let baton = Baton::new();
            let rounds = PINGPONG_WAKEUPS / 2;
            let sides: Vec<_> = (0..2)
                .map(|me| {
                    let baton = baton.clone();
                    $spawn(async move {
                        for _ in 0..rounds {
                            baton.wait_turn(me).await;
                            baton.pass(me);
                        }
                    })
                })
                .collect();
            for s in sides {
                s.await.expect("ping-pong side");
            }
            assert_eq!(baton.passes(), 2 * rounds);
        }
    };
}

fn uring_spawn_join() -> Duration {
    time_uring(spawn_join!(uring::spawn))
}

fn tokio_spawn_join() -> Duration {
    time_tokio(spawn_join!(tokio::spawn))
}

fn uring_sleeps() -> Duration {
    time_uring(sleepers!(uring::spawn, uring::time::sleep))
}

fn tokio_sleeps() -> Duration {
    time_tokio(sleepers!(tokio::spawn, tokio::time::sleep))
}

fn uring_ping_pong() -> Duration {
    time_uring(ping_pong!(uring::spawn))
}

fn tokio_ping_pong() -> Duration {
    time_tokio(ping_pong!(tokio::spawn))
}

/// A baton two tasks pass back and forth: whose turn it is, and each side's waker. `Send`, so
/// tokio's ordinary `spawn` can run it; the lock is never contended (one thread).
#[derive(Clone)]
struct Baton(Arc<Mutex<BatonState>>);

struct BatonState {
    turn: usize,
    passes: usize,
    wakers: [Option<Waker>; 2],
}

impl Baton {
    fn new() -> Baton {
        Baton(Arc::new(Mutex::new(BatonState {
            turn: 0,
            passes: 0,
            wakers: [None, None],
        })))
    }

    /// Waits until it is side `me`'s turn.
    fn wait_turn(&self, me: usize) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut s = self.0.lock().expect("baton lock");
            if s.turn == me {
                return Poll::Ready(());
            }
            match &s.wakers[me] {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => s.wakers[me] = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }

    /// Hands the turn to the other side and wakes it.
    fn pass(&self, me: usize) {
        let mut s = self.0.lock().expect("baton lock");
        let other = 1 - me;
        s.turn = other;
        s.passes += 1;
        if let Some(w) = &s.wakers[other] {
            w.wake_by_ref();
        }
    }

    fn passes(&self) -> usize {
        self.0.lock().expect("baton lock").passes
    }
}
