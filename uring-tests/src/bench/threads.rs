//! The `threads` suite: uring on every core against tokio's multi-thread runtime, the rows of
//! the "every core" issue, side by side in one run.
//!
//! Rows (`bench threads [ROW]`):
//! * `spawn`: 100k tiny tasks spawned across threads and joined: on a `uring::Pool` of 2 workers
//!   from a plain thread (round-robin, joined on that thread's runtime) and from worker 0 onto
//!   worker 1 (joined on worker 0), against tokio's multi-thread runtime with 2 workers
//!   (`Runtime::spawn` from the plain thread, joined by its `block_on`; `tokio::spawn` from a
//!   task on a worker, joined there). Median ms; target uring <= 0.5x tokio.
//! * `blocking`: 100k `spawn_blocking` round trips, one after the other, from one task: uring's
//!   against tokio's on a current_thread runtime. Target <= 1.0x.
//! * `echo`: the echo server on 2 threads (`echo-server --runtime uring-pool2|tokio-mt2|
//!   tokio-ct2`): a `uring::Pool` of 2 workers with an `SO_REUSEPORT` listener each, tokio
//!   multi-thread with 2 workers and one listener, and 2 tokio current_thread runtimes on 2
//!   threads with an `SO_REUSEPORT` listener each. Nothing is pinned: the load generator shares
//!   the 2 cores, so server CPU per request (from `/proc`) is the figure that matters. Target:
//!   uring's CPU per request <= 0.95x tokio multi-thread's.
//! * `memory`: the server's VmRSS with 10k idle connections (accepted, each with a read pending),
//!   `echo-server --runtime uring` against `--runtime tokio` (current_thread). Target <= 1.0x.
//!
//! Rounds alternate between the runtimes so that noise on the shared machine hits both alike.

use super::echo::{self, loadgen, Figures, RowFigures, ServerKind, ServerProcess};
use super::{median, print_table, Better, SummaryRow};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Worker threads on each side.
pub const WORKERS: usize = echo::server::WORKERS;
/// Tasks spawned and joined in each `spawn` figure.
pub const SPAWN_TASKS: usize = 100_000;
/// `spawn_blocking` round trips in the `blocking` row.
pub const BLOCKING_TRIPS: usize = 100_000;
/// Idle connections in the `memory` row.
pub const IDLE_CONNS: usize = 10_000;

/// The rows, by the name that selects one on the command line.
pub const ROWS: &[&str] = &["spawn", "blocking", "echo", "memory"];

/// Targets, uring/tokio.
const SPAWN_TARGET: f64 = 0.5;
const BLOCKING_TARGET: f64 = 1.0;
const ECHO_CPU_TARGET: f64 = 0.95;
const MEMORY_TARGET: f64 = 1.0;

/// What the suite runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds of the `spawn` rows (median), plus one warm-up round each.
    pub spawn_rounds: usize,
    /// Rounds of the `blocking` row (median), plus one warm-up round each.
    pub blocking_rounds: usize,
    /// Round trips per round of the `blocking` row; the figure is scaled to
    /// [`BLOCKING_TRIPS`]. Fewer than that in the short pass: shorter rounds pair better on a
    /// shared machine (a wake-up's cost swings with what the other core runs) than one long one.
    pub blocking_trips: usize,
    /// Echo rows as (connections, message bytes).
    pub echo_rows: Vec<(usize, usize)>,
    /// Measured echo windows per server and row (the servers alternate).
    pub echo_rounds: usize,
    /// Load before each echo window.
    pub echo_warmup: Duration,
    /// Each echo window.
    pub echo_measure: Duration,
    /// Idle connections of the memory row.
    pub idle_conns: usize,
    /// The memory row's per-connection read buffers, bytes: one measurement per size.
    pub memory_bufs: Vec<usize>,
    /// Rounds of the memory row (each server set up afresh; median).
    pub memory_rounds: usize,
    /// Only this row (one of [`ROWS`]); `None` runs them all.
    pub row: Option<String>,
}

impl Options {
    /// The full suite (`bench threads`, `bench --full`): about a minute.
    pub fn full(rounds: Option<usize>) -> Options {
        Options {
            spawn_rounds: rounds.unwrap_or(7),
            blocking_rounds: rounds.unwrap_or(5),
            blocking_trips: BLOCKING_TRIPS,
            echo_rows: vec![(50, 64), (500, 64), (500, 4096)],
            echo_rounds: 2 * rounds.unwrap_or(5),
            echo_warmup: Duration::from_millis(120),
            echo_measure: Duration::from_millis(500),
            idle_conns: IDLE_CONNS,
            memory_bufs: vec![echo::server::BUF_SIZE, 64],
            memory_rounds: 3,
            row: None,
        }
    }

    /// The short pass `bench` runs by default (about 15 s, so that the whole default pass stays
    /// well under 2 minutes): every row, with 3 rounds of 10k `spawn_blocking` round trips
    /// (scaled to 100k), two echo rows (50 x 64 B and 500 x 4 KiB, as the echo suite's short
    /// pass) in 3 windows of 0.3 s per server, and one memory round.
    pub fn short(rounds: Option<usize>) -> Options {
        Options {
            spawn_rounds: rounds.unwrap_or(3),
            blocking_rounds: rounds.unwrap_or(3),
            blocking_trips: BLOCKING_TRIPS / 10,
            echo_rows: vec![(50, 64), (500, 4096)],
            echo_rounds: rounds.unwrap_or(3),
            echo_warmup: Duration::from_millis(100),
            echo_measure: Duration::from_millis(300),
            idle_conns: IDLE_CONNS,
            memory_bufs: vec![echo::server::BUF_SIZE, 64],
            memory_rounds: 1,
            row: None,
        }
    }
}

/// One line of the closing targets table.
struct Target {
    work: String,
    figure: &'static str,
    uring: f64,
    peer: &'static str,
    theirs: f64,
    ratio: f64,
    target: f64,
}

/// Runs the suite, prints its tables and returns its rows for the closing summary.
///
/// # Panics
///
/// If `opts.row` names an unknown row, a runtime cannot be built, or a server or the load
/// generator fails (the message says which and why).
pub fn run(opts: &Options) -> Vec<SummaryRow> {
    let row = opts.row.as_deref();
    if let Some(r) = row {
        assert!(
            ROWS.contains(&r),
            "unknown threads row {r:?}; rows are {ROWS:?}"
        );
    }
    let wants = |name: &str| row.is_none_or(|r| r == name);
    // A suite run before may have pinned this thread (the echo suite pins its load generator);
    // threads inherit it, so widen it to every CPU for this suite.
    let _cpus = AllCpus::new();
    crate::set_nofile_limit(u64::MAX);
    println!(
        "\nthreads: uring::Pool ({WORKERS} workers) against tokio multi-thread ({WORKERS} \
         workers) and friends; nothing pinned, {} CPUs; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        echo::load_average()
    );
    let mut targets = Vec::new();
    let mut summary = Vec::new();

    if wants("spawn") {
        let rounds = opts.spawn_rounds.max(1);
        let mut table = Vec::new();
        for (what, uring, tokio) in [
            (
                "from a plain thread",
                uring_spawn_outside as fn() -> Duration,
                tokio_spawn_outside as fn() -> Duration,
            ),
            (
                "from a worker (uring: onto the other)",
                uring_spawn_inside,
                tokio_spawn_inside,
            ),
        ] {
            let (u, t, _) = alternate(rounds, uring, tokio);
            let work = format!("cross-thread spawn+join {SPAWN_TASKS} tasks, {what}");
            table.push(vec![
                work.clone(),
                format!("{u:.1}"),
                format!("{t:.1}"),
                format!("{:.2}", u / t),
            ]);
            summary.push(SummaryRow {
                suite: "threads",
                work: work.clone(),
                figure: "ms",
                better: Better::Lower,
                decimals: 1,
                uring: u,
                peers: vec![("tokio mt", t, u / t)],
            });
            targets.push(Target {
                work,
                figure: "ms",
                uring: u,
                peer: "tokio mt",
                theirs: t,
                ratio: u / t,
                target: SPAWN_TARGET,
            });
        }
        print_table(
            &format!(
                "threads: spawn and join across threads, uring::Pool vs tokio multi-thread, \
                 {WORKERS} workers each, median ms of {rounds} rounds (plus 1 warm-up)"
            ),
            &["work", "uring ms", "tokio mt ms", "uring/tokio"],
            &table,
        );
    }

    if wants("blocking") {
        let rounds = opts.blocking_rounds.max(1);
        let trips = opts.blocking_trips.clamp(1, BLOCKING_TRIPS);
        let scale = BLOCKING_TRIPS as f64 / trips as f64;
        let work = format!("{BLOCKING_TRIPS} spawn_blocking round trips, one at a time");
        let (u, t, pairs) = alternate(
            rounds,
            || uring_blocking(trips).mul_f64(scale),
            || tokio_blocking(trips).mul_f64(scale),
        );
        print_table(
            &format!(
                "threads: spawn_blocking round trips, uring vs tokio current_thread, median ms \
                 of {rounds} rounds (plus 1 warm-up){}",
                if trips == BLOCKING_TRIPS {
                    String::new()
                } else {
                    format!(" of {trips} round trips each, scaled to {BLOCKING_TRIPS}")
                }
            ),
            &["work", "uring ms", "tokio ms", "uring/tokio"],
            &[vec![
                work.clone(),
                format!("{u:.1}"),
                format!("{t:.1}"),
                format!("{:.2}", u / t),
            ]],
        );
        // Each round is thousands of cross-thread wake-ups, whose cost depends on where the
        // scheduler puts the threads and what else runs: show the spread.
        println!(
            "\neach round, uring / tokio ms: {}",
            pairs
                .iter()
                .map(|(a, b)| format!("{a:.0} / {b:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        summary.push(SummaryRow {
            suite: "threads",
            work: work.clone(),
            figure: "ms",
            better: Better::Lower,
            decimals: 1,
            uring: u,
            peers: vec![("tokio", t, u / t)],
        });
        targets.push(Target {
            work,
            figure: "ms",
            uring: u,
            peer: "tokio",
            theirs: t,
            ratio: u / t,
            target: BLOCKING_TARGET,
        });
    }

    if wants("echo") {
        let results = run_echo(opts).unwrap_or_else(|e| panic!("threads echo: {e}"));
        print_echo(&results);
        for r in &results {
            let figure = |k| r.figures.iter().find(|(x, _)| *x == k).map(|(_, f)| *f);
            let (Some(u), Some(mt), Some(ct)) = (
                figure(ServerKind::UringPool),
                figure(ServerKind::TokioMt),
                figure(ServerKind::TokioCt),
            ) else {
                continue;
            };
            let vs_mt = r.ratio(ServerKind::UringPool, ServerKind::TokioMt);
            let vs_ct = r.ratio(ServerKind::UringPool, ServerKind::TokioCt);
            let (Some(vs_mt), Some(vs_ct)) = (vs_mt, vs_ct) else {
                continue;
            };
            let work = format!(
                "TCP echo on {WORKERS} threads, {} conns x {}",
                r.conns,
                echo::size_name(r.size)
            );
            summary.push(SummaryRow {
                suite: "threads",
                work: work.clone(),
                figure: "server CPU µs/req",
                better: Better::Lower,
                decimals: 2,
                uring: u.cpu_us,
                peers: vec![
                    ("tokio mt", mt.cpu_us, vs_mt.1),
                    ("tokio ct x2", ct.cpu_us, vs_ct.1),
                ],
            });
            summary.push(SummaryRow {
                suite: "threads",
                work: work.clone(),
                figure: "req/s",
                better: Better::Higher,
                decimals: 0,
                uring: u.rate,
                peers: vec![
                    ("tokio mt", mt.rate, vs_mt.0),
                    ("tokio ct x2", ct.rate, vs_ct.0),
                ],
            });
            targets.push(Target {
                work,
                figure: "server CPU µs/req",
                uring: u.cpu_us,
                peer: "tokio mt",
                theirs: mt.cpu_us,
                ratio: vs_mt.1,
                target: ECHO_CPU_TARGET,
            });
        }
    }

    if wants("memory") {
        let conns = opts.idle_conns;
        let mib = |kib: f64| kib / 1024.0;
        let per_conn = |total: f64, base: f64| (total - base) * 1024.0 / conns as f64;
        let mut table = Vec::new();
        for &buf in &opts.memory_bufs {
            let m = run_memory(opts, buf).unwrap_or_else(|e| panic!("threads memory: {e}"));
            for (name, r) in [("uring", &m.uring), ("tokio current_thread", &m.tokio)] {
                table.push(vec![
                    name.to_string(),
                    echo::size_name(buf),
                    format!("{:.1}", mib(r.base)),
                    format!("{:.1}", mib(r.idle)),
                    format!("{:.0}", per_conn(r.idle, r.base)),
                    format!("{:.1}", mib(r.echoed)),
                    format!("{:.0}", per_conn(r.echoed, r.base)),
                ]);
            }
            let work = format!(
                "server RSS, {conns} idle conns, {} read buffers",
                echo::size_name(buf)
            );
            let ratio = m.uring.idle / m.tokio.idle;
            summary.push(SummaryRow {
                suite: "threads",
                work: work.clone(),
                figure: "MiB",
                better: Better::Lower,
                decimals: 1,
                uring: mib(m.uring.idle),
                peers: vec![("tokio", mib(m.tokio.idle), ratio)],
            });
            targets.push(Target {
                work,
                figure: "MiB",
                uring: mib(m.uring.idle),
                peer: "tokio",
                theirs: mib(m.tokio.idle),
                ratio,
                target: MEMORY_TARGET,
            });
        }
        print_table(
            &format!(
                "threads: echo server VmRSS with {conns} idle connections (each accepted, a read \
                 pending), median of {} round(s); the servers of the echo suite (uring: an \
                 uninitialised Vec, tokio: a zeroed one)",
                opts.memory_rounds.max(1)
            ),
            &[
                "server",
                "read buffer",
                "before MiB",
                "idle MiB",
                "idle B/conn",
                "after one 64 B echo each MiB",
                "after echo B/conn",
            ],
            &table,
        );
    }

    let table: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            let fmt = |x: f64| {
                if !x.is_finite() {
                    "-".to_string()
                } else if x >= 1000.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x:.2}")
                }
            };
            vec![
                t.work.clone(),
                t.figure.to_string(),
                fmt(t.uring),
                t.peer.to_string(),
                fmt(t.theirs),
                if t.ratio.is_finite() {
                    format!("{:.2}", t.ratio)
                } else {
                    "-".to_string()
                },
                format!("<= {:.2}", t.target),
                match t.ratio {
                    x if !x.is_finite() => "-",
                    x if x <= t.target => "met",
                    _ => "MISSED",
                }
                .to_string(),
            ]
        })
        .collect();
    print_table(
        "threads: targets (uring/peer; every figure lower is better)",
        &[
            "work",
            "figure",
            "uring",
            "peer",
            "peer's",
            "uring/peer",
            "target",
            "status",
        ],
        &table,
    );
    summary
}

/// Runs `uring` and `tokio` alternately, one warm-up round each and then `rounds` counted;
/// returns the medians in ms and every counted round's pair, in order.
fn alternate(
    rounds: usize,
    uring: impl Fn() -> Duration,
    tokio: impl Fn() -> Duration,
) -> (f64, f64, Vec<(f64, f64)>) {
    let mut pairs = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        let a = uring().as_secs_f64() * 1e3;
        let b = tokio().as_secs_f64() * 1e3;
        if round > 0 {
            pairs.push((a, b));
        }
    }
    let mut u: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let mut t: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    (median(&mut u), median(&mut t), pairs)
}

fn uring_pool() -> uring::Pool {
    uring::Pool::builder()
        .threads(WORKERS)
        .build()
        .expect("build a uring pool")
}

fn tokio_multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("build a tokio multi-thread runtime")
}

/// Awaits every handle and sums the outputs; the same code for both runtimes.
macro_rules! join_sum {
    ($handles:expr) => {
        async {
            let mut sum = 0usize;
            for h in $handles {
                sum = sum.wrapping_add(h.await.expect("task"));
            }
            sum
        }
    };
}

fn check_sum(sum: usize) {
    assert_eq!(sum, SPAWN_TASKS * (SPAWN_TASKS - 1) / 2);
}

/// The plain (main) thread spawns onto the pool, round-robin, and joins on its own runtime.
fn uring_spawn_outside() -> Duration {
    let pool = uring_pool();
    let joiner = uring::Runtime::new().expect("build a uring runtime");
    let start = Instant::now();
    let handles: Vec<_> = (0..SPAWN_TASKS)
        .map(|i| pool.spawn(move || async move { i }))
        .collect();
    let sum = joiner.block_on(join_sum!(handles));
    let took = start.elapsed();
    check_sum(sum);
    took
}

/// The plain (main) thread spawns onto the runtime and joins in `block_on`.
fn tokio_spawn_outside() -> Duration {
    let rt = tokio_multi_thread();
    let start = Instant::now();
    let handles: Vec<_> = (0..SPAWN_TASKS)
        .map(|i| rt.spawn(async move { i }))
        .collect();
    let sum = rt.block_on(join_sum!(handles));
    let took = start.elapsed();
    check_sum(sum);
    took
}

/// A task on worker 0 spawns every task onto worker 1 and joins them.
fn uring_spawn_inside() -> Duration {
    let pool = uring_pool();
    let joiner = uring::Runtime::new().expect("build a uring runtime");
    let other = pool.spawner(1 % WORKERS);
    let start = Instant::now();
    let outer = pool.spawn_on(0, move || async move {
        let handles: Vec<_> = (0..SPAWN_TASKS)
            .map(|i| other.spawn(move || async move { i }))
            .collect();
        join_sum!(handles).await
    });
    let sum = joiner.block_on(outer).expect("outer task");
    let took = start.elapsed();
    check_sum(sum);
    took
}

/// A task on a worker spawns every task with `tokio::spawn` (onto its own queue, from which the
/// other worker steals) and joins them.
fn tokio_spawn_inside() -> Duration {
    let rt = tokio_multi_thread();
    let start = Instant::now();
    let outer = rt.spawn(async {
        let handles: Vec<_> = (0..SPAWN_TASKS)
            .map(|i| tokio::spawn(async move { i }))
            .collect();
        join_sum!(handles).await
    });
    let sum = rt.block_on(outer).expect("outer task");
    let took = start.elapsed();
    check_sum(sum);
    took
}

fn uring_blocking(trips: usize) -> Duration {
    let rt = uring::Runtime::new().expect("build a uring runtime");
    let start = Instant::now();
    let sum = rt.block_on(async {
        let mut sum = 0usize;
        for i in 0..trips {
            sum = sum.wrapping_add(uring::spawn_blocking(move || i).await.expect("blocking"));
        }
        sum
    });
    let took = start.elapsed();
    assert_eq!(sum, trips * (trips - 1) / 2);
    took
}

fn tokio_blocking(trips: usize) -> Duration {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let start = Instant::now();
    let sum = rt.block_on(async {
        let mut sum = 0usize;
        for i in 0..trips {
            sum = sum.wrapping_add(
                tokio::task::spawn_blocking(move || i)
                    .await
                    .expect("blocking"),
            );
        }
        sum
    });
    let took = start.elapsed();
    assert_eq!(sum, trips * (trips - 1) / 2);
    took
}

/// The echo rows: every many-core server of a row runs at once, each with its own connections,
/// measured in alternating windows (the order rotates each round), as the echo suite does.
fn run_echo(opts: &Options) -> io::Result<Vec<RowFigures>> {
    let exe = echo::server_exe()?;
    let servers = ServerKind::MANY_CORES;
    println!(
        "\nthreads echo: {} alternating window(s) per server of {:.1} s after {:.2} s warmup; \
         servers and load generator unpinned",
        opts.echo_rounds,
        opts.echo_measure.as_secs_f64(),
        opts.echo_warmup.as_secs_f64(),
    );
    let mut results = Vec::new();
    for &(conns, size) in &opts.echo_rows {
        let mut running = Vec::new();
        for kind in servers {
            let server = ServerProcess::start(&exe, kind, None)?;
            let gen = loadgen::LoadGen::connect(server.addr, conns, size)
                .and_then(|mut g| g.run(opts.echo_warmup * 2, Duration::ZERO, None).map(|_| g))
                .map_err(|e| echo::context(e, kind, conns, size))?;
            running.push((kind, server, gen));
        }
        let mut samples: Vec<Vec<loadgen::LoadResult>> = vec![Vec::new(); servers.len()];
        for round in 0..opts.echo_rounds.max(1) {
            for k in 0..running.len() {
                let i = (k + round) % running.len();
                let (kind, server, gen) = &mut running[i];
                let r = gen
                    .run(opts.echo_warmup, opts.echo_measure, Some(server.pid()))
                    .map_err(|e| echo::context(e, *kind, conns, size))?;
                samples[i].push(r);
            }
        }
        drop(running);
        let figures: Vec<(ServerKind, Figures)> = servers
            .iter()
            .zip(&samples)
            .map(|(&k, rs)| (k, echo::medians(rs)))
            .collect();
        results.push(RowFigures {
            conns,
            size,
            figures,
            rounds: samples,
        });
    }
    Ok(results)
}

fn print_echo(results: &[RowFigures]) {
    let mut rows = Vec::new();
    for row in results {
        for (k, f) in &row.figures {
            rows.push(vec![
                row.conns.to_string(),
                echo::size_name(row.size),
                k.name().to_string(),
                format!("{:.0}", f.rate),
                format!("{:.1}", f.p50_us),
                format!("{:.1}", f.p99_us),
                format!("{:.2}", f.cpu_us),
            ]);
        }
    }
    print_table(
        &format!(
            "threads echo: servers on {WORKERS} threads, medians (req/s, latency µs, server CPU \
             µs per request, all its threads)"
        ),
        &[
            "conns",
            "msg",
            "server",
            "req/s",
            "p50 µs",
            "p99 µs",
            "CPU µs/req",
        ],
        &rows,
    );
    let cell = |r: Option<(f64, f64)>, cpu: bool| {
        r.map_or("-".to_string(), |(rate, c)| {
            format!("{:.2}x", if cpu { c } else { rate })
        })
    };
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|row| {
            let mt = row.ratio(ServerKind::UringPool, ServerKind::TokioMt);
            let ct = row.ratio(ServerKind::UringPool, ServerKind::TokioCt);
            let status = match mt {
                Some((_, c)) if c <= ECHO_CPU_TARGET => "met".to_string(),
                Some((_, c)) => format!("missed: CPU {c:.2}x>{ECHO_CPU_TARGET:.2}x"),
                None => "-".to_string(),
            };
            vec![
                row.conns.to_string(),
                echo::size_name(row.size),
                cell(mt, true),
                cell(mt, false),
                cell(ct, true),
                cell(ct, false),
                status,
            ]
        })
        .collect();
    print_table(
        &format!(
            "threads echo: ratios, medians of the ratios within each round. Target: \
             uring-pool2 <= {ECHO_CPU_TARGET:.2}x tokio-mt2's CPU/req"
        ),
        &[
            "conns",
            "msg",
            "uring-pool2/tokio-mt2 CPU/req",
            "req/s",
            "uring-pool2/tokio-ct2 CPU/req",
            "req/s",
            "target",
        ],
        &rows,
    );
}

/// VmRSS of one server, KiB: before any connection, with the idle connections, and after one
/// echo on each.
#[derive(Debug, Clone, Copy)]
struct Rss {
    base: f64,
    idle: f64,
    echoed: f64,
}

struct Memory {
    uring: Rss,
    tokio: Rss,
}

fn run_memory(opts: &Options, buf: usize) -> io::Result<Memory> {
    let exe = echo::server_exe()?;
    let mut u = Vec::new();
    let mut t = Vec::new();
    for _ in 0..opts.memory_rounds.max(1) {
        u.push(idle_rss(&exe, ServerKind::Uring, opts.idle_conns, buf)?);
        t.push(idle_rss(&exe, ServerKind::Tokio, opts.idle_conns, buf)?);
    }
    let med = |rs: &[Rss]| {
        let pick = |f: fn(&Rss) -> f64| median(&mut rs.iter().map(f).collect::<Vec<_>>());
        Rss {
            base: pick(|r| r.base),
            idle: pick(|r| r.idle),
            echoed: pick(|r| r.echoed),
        }
    };
    Ok(Memory {
        uring: med(&u),
        tokio: med(&t),
    })
}

/// Starts `kind` with `buf`-byte read buffers, opens `conns` connections, waits until the
/// server holds them all and its RSS settles, and reads VmRSS; then echoes 64 bytes on each and
/// reads it again.
fn idle_rss(exe: &PathBuf, kind: ServerKind, conns: usize, buf: usize) -> io::Result<Rss> {
    let server = ServerProcess::start_with(exe, kind, None, Some(buf))?;
    let pid = server.pid();
    let base_fds = open_fds(pid)?;
    let base = settled_rss(pid)?;
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        let s = TcpStream::connect(server.addr)?;
        s.set_nodelay(true)?;
        // Closed with a reset, so 10k client ports per round do not linger in TIME_WAIT.
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
        streams.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(pid)? < base_fds + conns {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "the {} server accepted only {} of {conns} connections in 30 s",
                kind.name(),
                open_fds(pid)? - base_fds
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let idle = settled_rss(pid)?;
    let msg = [0x5au8; 64];
    let mut back = [0u8; 64];
    for s in &mut streams {
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        if back != msg {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the {} server echoed other bytes", kind.name()),
            ));
        }
    }
    let echoed = settled_rss(pid)?;
    drop(streams);
    drop(server);
    Ok(Rss { base, idle, echoed })
}

fn open_fds(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// VmRSS in KiB, from `/proc/PID/status`.
fn vm_rss(pid: u32) -> io::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// VmRSS once it has stopped moving: the same over 5 reads 20 ms apart (at most 2 s).
fn settled_rss(pid: u32) -> io::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = vm_rss(pid)?;
    let mut same = 0;
    while same < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = vm_rss(pid)?;
        if now == last {
            same += 1;
        } else {
            same = 0;
            last = now;
        }
    }
    Ok(last)
}

/// Widens the calling thread's CPU affinity to every CPU the system allows (threads inherit
/// it) and restores the previous one on drop.
struct AllCpus {
    previous: Option<libc::cpu_set_t>,
}

impl AllCpus {
    fn new() -> AllCpus {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut previous: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes at most `size` bytes into `previous`, which we own.
        if unsafe { libc::sched_getaffinity(0, size, &mut previous) } != 0 {
            return AllCpus { previous: None };
        }
        // SAFETY: as above, plain data.
        let mut all: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for c in 0..libc::CPU_SETSIZE as usize {
            // SAFETY: `c` is below CPU_SETSIZE; CPU_SET only sets a bit in `all`.
            unsafe { libc::CPU_SET(c, &mut all) };
        }
        // The kernel keeps the CPUs of the mask that the cpuset allows.
        // SAFETY: the kernel reads `size` bytes from `all`, which we own.
        unsafe { libc::sched_setaffinity(0, size, &all) };
        AllCpus {
            previous: Some(previous),
        }
    }
}

impl Drop for AllCpus {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous {
            // SAFETY: the kernel reads the saved set, which we own.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), previous) };
        }
    }
}
