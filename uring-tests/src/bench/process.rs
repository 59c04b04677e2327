//! The process benchmark suite: spawn-and-wait of `true` processes with `uring::process`
//! against tokio's `process` (current_thread runtime) and std's `Command::status` in a loop.
//!
//! Rows:
//! * `sequential`: spawn one `true`, wait for it, then the next; 1,000 in all (target: uring
//!   <= 1.0x tokio).
//! * `concurrent`: 1,000 `true`, 16 in flight at a time (16 tasks taking the next spawn as they
//!   finish one; target <= 1.0x tokio). std has no row here (it would need 16 threads).
//!
//! Each figure is the time of 1,000 processes in milliseconds (the median over rounds when there
//! are several), with the CPU time of the spawning thread per process beside it. Within a round
//! the sides take turns every 100 processes (a fresh runtime each turn, built before the clock
//! starts), so the shared machine's noise hits all alike. Unlike the core suite nothing is pinned:
//! the children run on the other CPU while the parent spawns the next. Almost all of the time is
//! the kernel's (fork or vfork, exec, exit, reap), the same for every side; what differs is how
//! each waits for the exit and moves on.

use super::{median, print_table, Better, SummaryRow};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Processes per round.
pub const PROCESSES: usize = 1_000;
/// Children in flight at once in the `concurrent` row.
pub const IN_FLIGHT: usize = 16;
/// Children a side spawns before the next side takes its turn within a round.
pub const CHUNK: usize = 100;
/// Rounds per figure when the suite runs alone (the median is printed); the short pass runs 1.
pub const DEFAULT_ROUNDS: usize = 3;
/// The rows of this suite.
pub const ROWS: &[&str] = &["sequential", "concurrent"];

/// One batch's figures: wall time, and the CPU time of the thread that spawned and waited (user
/// + system, `RUSAGE_THREAD`; every side here runs on that one thread).
#[derive(Clone, Copy)]
struct Took {
    wall: Duration,
    cpu: Duration,
}

/// The calling thread's CPU time so far.
fn thread_cpu() -> Duration {
    // SAFETY: plain data; the kernel fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` lives through the call.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Times `f` (wall and thread CPU).
fn measure(f: impl FnOnce()) -> Took {
    let (start, cpu) = (Instant::now(), thread_cpu());
    f();
    Took {
        wall: start.elapsed(),
        cpu: thread_cpu() - cpu,
    }
}

/// One round: every side spawns and waits [`PROCESSES`] children, in [`CHUNK`]s taken in turn
/// (the order turning each chunk), so that a burst of noise on the shared machine lands on all
/// sides alike; each side's figures are the sums over its chunks.
fn interleaved<const N: usize>(sides: [fn(usize) -> Took; N]) -> [Took; N] {
    let mut sum = [Took {
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
    }; N];
    for chunk in 0..PROCESSES / CHUNK {
        for k in 0..N {
            let side = (chunk + k) % N;
            let took = sides[side](CHUNK);
            sum[side].wall += took.wall;
            sum[side].cpu += took.cpu;
        }
    }
    sum
}

/// Runs the suite (`rounds` rounds per figure, after one short warm-up batch each), prints its
/// table and returns its rows for the closing summary.
pub fn run(rounds: usize, row: Option<&str>) -> Vec<SummaryRow> {
    let rounds = rounds.max(1);
    if let Some(r) = row {
        assert!(
            ROWS.contains(&r),
            "unknown process row {r:?}; rows are {ROWS:?}"
        );
    }
    println!(
        "process suite: spawn and wait {PROCESSES} `true` processes; median of {rounds} rounds, \
         ms per {PROCESSES}, the sides taking turns every {CHUNK} processes"
    );
    // Warm-up: page cache, the dynamic loader, the pool's first thread.
    uring_sequential(50);
    tokio_sequential(50);
    std_sequential(50);

    let mut table = Vec::new();
    let mut summary = Vec::new();
    if row.is_none_or(|r| r == "sequential") {
        let (mut u, mut t, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let [a, b, c] = interleaved([uring_sequential, tokio_sequential, std_sequential]);
            u.push(a);
            t.push(b);
            s.push(c);
        }
        let what = format!("spawn and wait {PROCESSES} `true`, one at a time");
        let (u, t, s) = (Figures::of(&u), Figures::of(&t), Figures::of(&s));
        table.push(row_cells(&what, u, t, Some(s)));
        let (u, t, s) = (u.ms, t.ms, s.ms);
        summary.push(SummaryRow {
            suite: "process",
            work: what,
            figure: "ms",
            better: Better::Lower,
            decimals: 0,
            uring: u,
            peers: vec![("tokio", t, u / t), ("std loop", s, u / s)],
        });
    }
    if row.is_none_or(|r| r == "concurrent") {
        let (mut u, mut t) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let [a, b] = interleaved([uring_concurrent, tokio_concurrent]);
            u.push(a);
            t.push(b);
        }
        let what = format!("spawn and wait {PROCESSES} `true`, {IN_FLIGHT} at a time");
        let (u, t) = (Figures::of(&u), Figures::of(&t));
        table.push(row_cells(&what, u, t, None));
        let (u, t) = (u.ms, t.ms);
        summary.push(SummaryRow {
            suite: "process",
            work: what,
            figure: "ms",
            better: Better::Lower,
            decimals: 0,
            uring: u,
            peers: vec![("tokio", t, u / t)],
        });
    }
    print_table(
        "process: uring::process vs tokio::process (current_thread) and std, median ms",
        &[
            "work",
            "uring ms",
            "tokio ms",
            "std ms",
            "uring/tokio",
            "uring/std",
            "CPU µs/proc uring",
            "tokio",
            "std",
            "target",
            "status",
        ],
        &table,
    );
    summary
}

/// A side's medians over its rounds: wall ms per batch, spawning thread's CPU µs per process.
#[derive(Clone, Copy)]
struct Figures {
    ms: f64,
    cpu_us: f64,
}

impl Figures {
    fn of(rounds: &[Took]) -> Figures {
        let mut ms: Vec<f64> = rounds.iter().map(|t| t.wall.as_secs_f64() * 1e3).collect();
        let mut cpu: Vec<f64> = rounds
            .iter()
            .map(|t| t.cpu.as_secs_f64() * 1e6 / PROCESSES as f64)
            .collect();
        Figures {
            ms: median(&mut ms),
            cpu_us: median(&mut cpu),
        }
    }
}

fn row_cells(what: &str, u: Figures, t: Figures, s: Option<Figures>) -> Vec<String> {
    let ratio = u.ms / t.ms;
    vec![
        what.to_string(),
        format!("{:.0}", u.ms),
        format!("{:.0}", t.ms),
        s.map_or("-".into(), |s| format!("{:.0}", s.ms)),
        format!("{ratio:.2}"),
        s.map_or("-".into(), |s| format!("{:.2}", u.ms / s.ms)),
        format!("{:.0}", u.cpu_us),
        format!("{:.0}", t.cpu_us),
        s.map_or("-".into(), |s| format!("{:.0}", s.cpu_us)),
        "<= 1.00 (tokio)".into(),
        if ratio <= 1.0 { "met" } else { "MISSED" }.into(),
    ]
}

fn uring_sequential(n: usize) -> Took {
    let rt = uring::Runtime::new().expect("build a uring runtime");
    measure(|| {
        rt.block_on(async {
            for _ in 0..n {
                let mut child = uring::process::Command::new("true")
                    .spawn()
                    .expect("spawn true");
                assert!(child.wait().await.expect("wait").success());
            }
        })
    })
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

fn tokio_sequential(n: usize) -> Took {
    let rt = tokio_runtime();
    measure(|| {
        rt.block_on(async {
            for _ in 0..n {
                let mut child = tokio::process::Command::new("true")
                    .spawn()
                    .expect("spawn true");
                assert!(child.wait().await.expect("wait").success());
            }
        })
    })
}

fn std_sequential(n: usize) -> Took {
    measure(|| {
        for _ in 0..n {
            assert!(std::process::Command::new("true")
                .status()
                .expect("run true")
                .success());
        }
    })
}

fn uring_concurrent(n: usize) -> Took {
    let rt = uring::Runtime::new().expect("build a uring runtime");
    measure(|| {
        rt.block_on(async {
            let left = Rc::new(Cell::new(n));
            let workers: Vec<_> = (0..IN_FLIGHT)
                .map(|_| {
                    let left = left.clone();
                    uring::spawn(async move {
                        while left.get() > 0 {
                            left.set(left.get() - 1);
                            let mut child = uring::process::Command::new("true")
                                .spawn()
                                .expect("spawn true");
                            assert!(child.wait().await.expect("wait").success());
                        }
                    })
                })
                .collect();
            for w in workers {
                w.await.expect("worker");
            }
        })
    })
}

fn tokio_concurrent(n: usize) -> Took {
    let rt = tokio_runtime();
    measure(|| {
        rt.block_on(async {
            let left = Arc::new(AtomicUsize::new(n));
            let workers: Vec<_> = (0..IN_FLIGHT)
                .map(|_| {
                    let left = left.clone();
                    tokio::spawn(async move {
                        while left
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                            .is_ok()
                        {
                            let mut child = tokio::process::Command::new("true")
                                .spawn()
                                .expect("spawn true");
                            assert!(child.wait().await.expect("wait").success());
                        }
                    })
                })
                .collect();
            for w in workers {
                w.await.expect("worker");
            }
        })
    })
}
