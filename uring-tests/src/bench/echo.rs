//! The echo benchmark suite: echo servers on uring, on tokio (current_thread) and two
//! hand-written io_uring loops with no runtime, each in its own process pinned to one core,
//! driven by a load generator pinned to another core that verifies every echoed byte.
//!
//! For each row (connections x message size) all servers start, each with its own connections;
//! then they are measured in short windows, one server at a time, alternating (the order rotates
//! each round), so that noise on the shared machine hits all of them alike; the tables show
//! medians over the windows. Columns: requests per second, p50/p99 latency, and the server's CPU time
//! per request (user+system from `/proc/PID/stat` over the measured window); ratios are medians
//! of the ratios within each round. On two cores the load generator saturates first, so CPU per
//! request is the sharper figure.
//!
//! The servers run from the `echo-server` binary (`echo-server --runtime
//! uring|tokio|raw|raw-single --addr ADDR [--cpu N]`), found next to the running executable (or
//! at `$URING_ECHO_SERVER`); `echo-server --bench [CONNSxBYTES] [--rounds N]` runs this suite,
//! `echo-server --load ADDR ...` only the load generator (to profile one server).
//! `URING_BENCH_QUICK=1` runs short windows for a quick look; `URING_ECHO_SERVERS=tokio,raw`
//! picks the servers. `bench` with no arguments runs the short pass ([`Options::short`]: two
//! rows, shorter windows) and `bench --full` or `bench echo` the full suite.
//!
//! Two hand-written loops run: `raw` (multishot recv into a provided buffer ring, send from the
//! received buffer) and `raw-single` (exactly the uring server's ops: single-shot recv into the
//! connection's buffer, then send). uring against `raw-single` is the pure cost of the runtime's
//! abstraction; `raw-single` against `raw` is what multishot recv changes. The target's "within
//! 5% of the hand-written loop" is checked against the better of the two.

pub mod loadgen;
pub mod raw;
pub mod raw_single;
pub mod server;

use super::{Better, SummaryRow};
use loadgen::LoadResult;
pub use server::ServerKind;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Rounds by default (each server gets two measured windows per round; medians are shown).
pub const DEFAULT_ROUNDS: usize = 5;

/// Connection counts of the rows.
pub const CONNS: [usize; 3] = [1, 50, 500];
/// Message sizes of the rows.
pub const SIZES: [usize; 2] = [64, 4096];

/// What the suite runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Measured windows per server and row (the servers alternate, one window each per round).
    pub rounds: usize,
    /// Load before each measured window.
    pub warmup: Duration,
    /// Each measured window.
    pub measure: Duration,
    /// Rows as (connections, message bytes).
    pub rows: Vec<(usize, usize)>,
    /// Servers to compare.
    pub servers: Vec<ServerKind>,
}

impl Options {
    /// The full suite: every row, every server, `2 x rounds` alternating windows of 0.5 s per
    /// server (about 3 minutes with 5 rounds). Many short alternating windows rather than a
    /// few long ones: on a shared machine the noise comes in bursts, and the closer in time the
    /// windows of a pair are, the more alike the noise they see.
    pub fn full(rounds: usize) -> Options {
        Options {
            rounds: 2 * rounds.max(1),
            warmup: Duration::from_millis(120),
            measure: Duration::from_millis(500),
            rows: CONNS
                .iter()
                .flat_map(|&c| SIZES.iter().map(move |&s| (c, s)))
                .collect(),
            servers: ServerKind::ALL.to_vec(),
        }
    }

    /// A quick look: `rounds` windows of 0.3 s per server (about 10 seconds a round).
    pub fn quick(rounds: usize) -> Options {
        Options {
            rounds: rounds.max(1),
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(300),
            ..Options::full(rounds)
        }
    }

    /// The short pass `bench` runs by default: two rows, one per connection count the target
    /// names (50 x 64 B and 500 x 4 KiB, so both message sizes are seen too), every server,
    /// `rounds` alternating windows of 0.4 s per server (about 11 seconds a row with 5).
    /// Windows stay at 0.4 s rather than the quick look's 0.3 s because CPU time comes from
    /// `/proc` in 10 ms ticks: a shorter window makes CPU per request coarser.
    pub fn short(rounds: usize) -> Options {
        Options {
            rounds: rounds.max(1),
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(400),
            rows: vec![(50, 64), (500, 4096)],
            servers: ServerKind::ALL.to_vec(),
        }
    }
}

/// Runs the suite, prints its tables and returns its figures. `row` picks one row, written
/// `CONNSxBYTES` (`50x64`). With `URING_BENCH_QUICK=1` in the environment, windows are short;
/// `URING_ECHO_SERVERS=tokio,raw` picks the servers.
///
/// # Panics
///
/// When `row` does not name a row, or a server or the load generator fails (the message says
/// which and why).
pub fn run(rounds: usize, row: Option<&str>) -> Vec<RowFigures> {
    let quick = std::env::var("URING_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let mut opts = if quick {
        Options::quick(rounds)
    } else {
        Options::full(rounds)
    };
    servers_from_env(&mut opts);
    if let Some(r) = row {
        let parsed = r
            .split_once('x')
            .and_then(|(c, s)| Some((c.parse().ok()?, s.parse().ok()?)))
            .unwrap_or_else(|| panic!("echo row {r:?}: expected CONNSxBYTES, such as 50x64"));
        opts.rows = vec![parsed];
    }
    run_with(&opts).unwrap_or_else(|e| panic!("echo benchmark: {e}"))
}

/// Runs the short pass ([`Options::short`]) with `rounds` windows per server, prints its tables
/// and returns its figures. `URING_ECHO_SERVERS` picks the servers, as for [`run`].
///
/// # Panics
///
/// When a server or the load generator fails (the message says which and why).
pub fn run_short(rounds: usize) -> Vec<RowFigures> {
    let mut opts = Options::short(rounds);
    servers_from_env(&mut opts);
    run_with(&opts).unwrap_or_else(|e| panic!("echo benchmark: {e}"))
}

/// `URING_ECHO_SERVERS=tokio,raw`: only these servers.
fn servers_from_env(opts: &mut Options) {
    if let Ok(list) = std::env::var("URING_ECHO_SERVERS") {
        opts.servers = list
            .split(',')
            .map(|n| {
                ServerKind::parse(n.trim()).unwrap_or_else(|| {
                    panic!(
                        "URING_ECHO_SERVERS: unknown server {n:?} (uring, tokio, raw, raw-single, \
                         uring-multishot, ...)"
                    )
                })
            })
            .collect();
    }
}

/// The closing summary's rows for `results`: per row, server CPU per request (the sharper
/// figure on two cores, where the load generator saturates first) and requests per second,
/// with the paired ratios of [`RowFigures::ratio`], the same numbers as the ratio table.
pub fn summary(results: &[RowFigures]) -> Vec<SummaryRow> {
    let peers = [
        (ServerKind::Tokio, "tokio"),
        (ServerKind::Raw, "io_uring loop"),
        (ServerKind::RawSingle, "loop, same ops"),
    ];
    let mut rows = Vec::new();
    for row in results {
        let figure = |k| row.figures.iter().find(|(x, _)| *x == k).map(|(_, f)| *f);
        let Some(uring) = figure(ServerKind::Uring) else {
            continue;
        };
        let conns = if row.conns == 1 { "conn" } else { "conns" };
        let work = format!("TCP echo, {} {conns} x {}", row.conns, size_name(row.size));
        let side = |cpu: bool| {
            peers
                .iter()
                .filter_map(|&(k, column)| {
                    let f = figure(k)?;
                    let (rate, cpu_ratio) = row.ratio(ServerKind::Uring, k)?;
                    Some(if cpu {
                        (column, f.cpu_us, cpu_ratio)
                    } else {
                        (column, f.rate, rate)
                    })
                })
                .collect()
        };
        rows.push(SummaryRow {
            suite: "echo",
            work: work.clone(),
            figure: "server CPU µs/req",
            better: Better::Lower,
            decimals: 2,
            uring: uring.cpu_us,
            peers: side(true),
        });
        rows.push(SummaryRow {
            suite: "echo",
            work,
            figure: "req/s",
            better: Better::Higher,
            decimals: 0,
            uring: uring.rate,
            peers: side(false),
        });
    }
    rows
}

/// One figure set: medians over rounds for one server at one row.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Requests per second.
    pub rate: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Server CPU µs per request.
    pub cpu_us: f64,
}

/// What one row measured.
#[derive(Debug, Clone)]
pub struct RowFigures {
    /// Connections.
    pub conns: usize,
    /// Message bytes.
    pub size: usize,
    /// The medians over rounds, per server.
    pub figures: Vec<(ServerKind, Figures)>,
    /// Every round's result, per server (`rounds[server][round]`, servers in `figures` order).
    pub rounds: Vec<Vec<LoadResult>>,
}

impl RowFigures {
    /// Server `a` relative to server `b`: (req/s ratio, CPU per request ratio), each the median
    /// over rounds of the ratio within a round. Paired this way, a stretch of noise that slowed
    /// one round slows both sides of its ratio.
    pub fn ratio(&self, a: ServerKind, b: ServerKind) -> Option<(f64, f64)> {
        let idx = |k| self.figures.iter().position(|(x, _)| *x == k);
        let (ra, rb) = (&self.rounds[idx(a)?], &self.rounds[idx(b)?]);
        // A window can have no CPU tick or no request on one side (a stalled machine): its
        // ratio is not finite and is left out.
        let mut rate: Vec<f64> = ra
            .iter()
            .zip(rb)
            .map(|(x, y)| x.rate() / y.rate())
            .filter(|v| v.is_finite())
            .collect();
        let mut cpu: Vec<f64> = ra
            .iter()
            .zip(rb)
            .map(|(x, y)| {
                x.cpu_us_per_req().unwrap_or(f64::NAN) / y.cpu_us_per_req().unwrap_or(f64::NAN)
            })
            .filter(|v| v.is_finite())
            .collect();
        Some((super::median(&mut rate), super::median(&mut cpu)))
    }
}

/// Runs the suite with `opts`, prints the tables and returns the figures per row and server.
///
/// # Errors
///
/// When a server cannot be started or the load generator fails.
pub fn run_with(opts: &Options) -> io::Result<Vec<RowFigures>> {
    let exe = server_exe()?;
    // The load generator holds every server's connections of a row at once: raise the soft
    // fd limit to the hard one (often 1024 soft, far more hard).
    crate::set_nofile_limit(u64::MAX);
    let load_at_start = load_average();
    let (client_cpu, server_cpu) = pick_cpus();
    if let Some(c) = client_cpu {
        pin_current_thread(c);
    }
    println!(
        "\necho: {} alternating window(s) per server of {:.1} s after {:.2} s warmup; servers on \
         cpu {}, load generator on cpu {}",
        opts.rounds,
        opts.measure.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        server_cpu.map_or("any".to_string(), |c| c.to_string()),
        client_cpu.map_or("any".to_string(), |c| c.to_string()),
    );
    let mut results = Vec::new();
    for &(conns, size) in &opts.rows {
        // Every server of the row runs at once (each idle while another is measured), each with
        // its own connections, so the windows can alternate quickly without reconnecting.
        let mut servers = Vec::new();
        for &kind in &opts.servers {
            let server = ServerProcess::start(&exe, kind, server_cpu)?;
            let gen = loadgen::LoadGen::connect(server.addr, conns, size)
                .and_then(|mut g| g.run(opts.warmup * 2, Duration::ZERO, None).map(|_| g))
                .map_err(|e| context(e, kind, conns, size))?;
            servers.push((kind, server, gen));
        }
        let mut samples: Vec<Vec<LoadResult>> = vec![Vec::new(); opts.servers.len()];
        for round in 0..opts.rounds {
            // Rotate the order each round so no server always runs first (or last).
            for k in 0..servers.len() {
                let i = (k + round) % servers.len();
                let (kind, server, gen) = &mut servers[i];
                let r = gen
                    .run(opts.warmup, opts.measure, Some(server.child.id()))
                    .map_err(|e| context(e, *kind, conns, size))?;
                samples[i].push(r);
            }
        }
        drop(servers);
        let figures: Vec<(ServerKind, Figures)> = opts
            .servers
            .iter()
            .zip(&samples)
            .map(|(&k, rs)| (k, medians(rs)))
            .collect();
        eprintln!(
            "echo {conns} x {size} B: {}",
            figures
                .iter()
                .map(|(k, f)| format!("{} {:.0} req/s {:.2} µs/req", k.name(), f.rate, f.cpu_us))
                .collect::<Vec<_>>()
                .join(", ")
        );
        results.push(RowFigures {
            conns,
            size,
            figures,
            rounds: samples,
        });
    }
    print_tables(&results);
    print_breakdown(&results);
    println!(
        "\necho: load average (1/5/15 min) at start {load_at_start}, at end {}: other work on this \
         machine during the run moves req/s far more than CPU/req",
        load_average()
    );
    Ok(results)
}

/// The first three fields of /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

/// `e` with the server and row it happened in.
pub fn context(e: io::Error, kind: ServerKind, conns: usize, size: usize) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("{} server, {conns} conns x {size} B: {e}", kind.name()),
    )
}

/// The medians over measured windows of each figure.
pub fn medians(rs: &[LoadResult]) -> Figures {
    let med = |f: &dyn Fn(&LoadResult) -> f64| {
        let mut v: Vec<f64> = rs.iter().map(f).filter(|x| x.is_finite()).collect();
        super::median(&mut v)
    };
    Figures {
        rate: med(&|r| r.rate()),
        p50_us: med(&|r| r.p50.as_secs_f64() * 1e6),
        p99_us: med(&|r| r.p99.as_secs_f64() * 1e6),
        cpu_us: med(&|r| r.cpu_us_per_req().unwrap_or(f64::NAN)),
    }
}

fn print_tables(results: &[RowFigures]) {
    let mut rows = Vec::new();
    for row in results {
        let (conns, size) = (&row.conns, &row.size);
        for (k, f) in &row.figures {
            rows.push(vec![
                conns.to_string(),
                size_name(*size),
                k.name().to_string(),
                format!("{:.0}", f.rate),
                format!("{:.1}", f.p50_us),
                format!("{:.1}", f.p99_us),
                format!("{:.2}", f.cpu_us),
            ]);
        }
    }
    super::print_table(
        "echo: medians per server (req/s, latency in µs, server CPU µs per request)",
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

    let cell = |r: Option<(f64, f64)>, which: usize| {
        r.map_or("-".to_string(), |(rate, cpu)| {
            format!("{:.2}x", if which == 0 { rate } else { cpu })
        })
    };
    let mut rows = Vec::new();
    for row in results {
        let (conns, size) = (&row.conns, &row.size);
        let ut = row.ratio(ServerKind::Uring, ServerKind::Tokio);
        let rt = row.ratio(ServerKind::Raw, ServerKind::Tokio);
        let ur = row.ratio(ServerKind::Uring, ServerKind::Raw);
        // "Within 5% of the hand-written loop": of the better of the two loops, when both ran.
        let vs_loops = [ur, row.ratio(ServerKind::Uring, ServerKind::RawSingle)]
            .into_iter()
            .flatten()
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let target = if *conns < 50 {
            "n/a".to_string()
        } else {
            match (ut, vs_loops) {
                (Some((r, c)), Some((rr, _))) => {
                    let mut misses = Vec::new();
                    if r < 1.05 {
                        misses.push(format!("req/s {r:.2}x<1.05x"));
                    }
                    if c > 0.95 {
                        misses.push(format!("CPU {c:.2}x>0.95x"));
                    }
                    if rr < 0.95 {
                        misses.push(format!("vs best raw loop {rr:.2}x<0.95x"));
                    }
                    if misses.is_empty() {
                        "met".to_string()
                    } else {
                        format!("missed: {}", misses.join(", "))
                    }
                }
                _ => "-".to_string(),
            }
        };
        rows.push(vec![
            conns.to_string(),
            size_name(*size),
            cell(ut, 0),
            cell(ut, 1),
            cell(rt, 0),
            cell(rt, 1),
            cell(ur, 0),
            cell(ur, 1),
            target,
        ]);
    }
    super::print_table(
        "echo: ratios, medians of the ratios within each round (req/s: higher is better; \
         CPU/req: lower is better). Target at 50 and 500 conns: uring >= 1.05x tokio req/s, \
         <= 0.95x its CPU/req, req/s within 5% of the better raw loop",
        &[
            "conns",
            "msg",
            "uring/tokio req/s",
            "uring/tokio CPU/req",
            "raw/tokio req/s",
            "raw/tokio CPU/req",
            "uring/raw req/s",
            "uring/raw CPU/req",
            "target",
        ],
        &rows,
    );
}

/// With the raw-single loop in the run: where uring's cost over the raw loop comes from.
fn print_breakdown(results: &[RowFigures]) {
    let has = |k| {
        results
            .iter()
            .all(|r| r.figures.iter().any(|(x, _)| *x == k))
    };
    if !has(ServerKind::RawSingle) || !has(ServerKind::Uring) || !has(ServerKind::Raw) {
        return;
    }
    let fmt = |r: Option<(f64, f64)>| {
        r.map_or(["-".to_string(), "-".to_string()], |(a, b)| {
            [format!("{a:.2}x"), format!("{b:.2}x")]
        })
    };
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|row| {
            let [a, b] = fmt(row.ratio(ServerKind::Uring, ServerKind::RawSingle));
            let [c, d] = fmt(row.ratio(ServerKind::RawSingle, ServerKind::Raw));
            vec![row.conns.to_string(), size_name(row.size), a, b, c, d]
        })
        .collect();
    super::print_table(
        "echo: where uring's cost comes from (uring vs a runtime-free loop doing the same ops; \
         that loop vs multishot recv with a buffer ring)",
        &[
            "conns",
            "msg",
            "uring/raw-single req/s",
            "uring/raw-single CPU/req",
            "raw-single/raw req/s",
            "raw-single/raw CPU/req",
        ],
        &rows,
    );
}

/// A message size as the tables write it (`64 B`, `4 KiB`).
pub fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// An echo server in its own process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts the `kind` server from `exe` (see [`server_exe`]) on a free port of 127.0.0.1,
    /// pinned to `cpu` unless it runs on several threads, and waits until it listens.
    ///
    /// # Errors
    ///
    /// When it cannot be started or does not print its address.
    pub fn start(exe: &PathBuf, kind: ServerKind, cpu: Option<usize>) -> io::Result<ServerProcess> {
        ServerProcess::start_with(exe, kind, cpu, None)
    }

    /// As [`ServerProcess::start`], with each connection's read buffer `buf` bytes long
    /// instead of [`server::BUF_SIZE`] (uring and tokio servers only; see
    /// [`server::set_conn_buf`]).
    ///
    /// # Errors
    ///
    /// As [`ServerProcess::start`].
    pub fn start_with(
        exe: &PathBuf,
        kind: ServerKind,
        cpu: Option<usize>,
        buf: Option<usize>,
    ) -> io::Result<ServerProcess> {
        let mut cmd = Command::new(exe);
        cmd.args(["--runtime", kind.name(), "--addr", "127.0.0.1:0"]);
        if let Some(b) = buf {
            cmd.args(["--buf", &b.to_string()]);
        }
        // Threads inherit their creator's affinity: a pinned many-core server would run all its
        // workers on one CPU.
        if let Some(c) = cpu.filter(|_| kind.threads() == 1) {
            cmd.args(["--cpu", &c.to_string()]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("start {}: {e}", exe.display())))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let addr = match read.map(|_| line.trim().parse::<SocketAddr>()) {
            Ok(Ok(a)) => a,
            other => {
                let _ = child.kill();
                let status = child.wait();
                return Err(io::Error::other(format!(
                    "the {} echo server did not print its address (got {line:?}, {:?}; exit {:?})",
                    kind.name(),
                    other.err(),
                    status
                )));
            }
        };
        Ok(ServerProcess { child, addr })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The echo-server binary: `$URING_ECHO_SERVER`, or the one next to the running executable
/// (cargo puts a package's binaries in one directory). Under `cargo run` (`$CARGO` set) it is
/// built first, so a stale or missing one is brought up to date.
pub fn server_exe() -> io::Result<PathBuf> {
    bench_exe("echo-server", "URING_ECHO_SERVER")
}

/// The uring-tests binary `name`: `$env`, or the one next to the running executable (cargo
/// puts a package's binaries in one directory). Under `cargo run` (`$CARGO` set) it is built
/// first, so a stale or missing one is brought up to date.
pub fn bench_exe(name: &str, env: &str) -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe()?;
    let dir = me
        .parent()
        .ok_or_else(|| io::Error::other("the executable has no directory"))?;
    if let Some(cargo) = std::env::var_os("CARGO") {
        let release = me.components().any(|c| c.as_os_str() == "release");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "uring-tests", "--bin", name]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.stderr(Stdio::null()).status()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "building {name} failed: run `cargo build --release -p uring-tests --bins`"
            )));
        }
    }
    // Test binaries live one level deeper, in deps/.
    let candidates = [dir.join(name), dir.join("..").join(name)];
    candidates.into_iter().find(|p| p.exists()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no {name} binary next to {}: build it with \
                 `cargo build --release -p uring-tests --bins` or set {env}",
                me.display()
            ),
        )
    })
}

/// The CPUs for the load generator and the servers: the first two this process may run on, or
/// none when it has only one.
pub fn pick_cpus() -> (Option<usize>, Option<usize>) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return (None, None);
    }
    // SAFETY: CPU_ISSET reads the set we own, for indices below CPU_SETSIZE.
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    if cpus.len() < 2 {
        return (None, None);
    }
    (Some(cpus[0]), Some(cpus[1]))
}

/// Pins the calling thread to `cpu`; prints a note when the system refuses.
pub fn pin_current_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is checked against CPU_SETSIZE; CPU_SET writes the set we own.
    if cpu < libc::CPU_SETSIZE as usize {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a live cpu_set_t of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        eprintln!(
            "note: could not pin to cpu {cpu}: {}",
            io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::loadgen::{self, LoadSpec};
    use super::server::{self, ServerKind};
    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::mpsc;
    use std::time::Duration;

    /// Starts `kind` on a thread of this process (it serves until the test process exits).
    fn start_in_process(kind: ServerKind) -> SocketAddr {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let addr = "127.0.0.1:0".parse().expect("address");
            let tx2 = tx.clone();
            if let Err(e) = server::serve(kind, addr, move |a| tx2.send(Ok(a)).expect("send")) {
                let _ = tx.send(Err(e));
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("server thread answers")
            .expect("server starts")
    }

    fn short_load(
        addr: SocketAddr,
        conns: usize,
        msg_len: usize,
    ) -> io::Result<loadgen::LoadResult> {
        loadgen::run(&LoadSpec {
            addr,
            conns,
            msg_len,
            warmup: Duration::from_millis(50),
            measure: Duration::from_millis(200),
            server_pid: Some(std::process::id()),
        })
    }

    fn check_server(kind: ServerKind) {
        let addr = start_in_process(kind);
        for (conns, size) in [(1, 64), (20, 4096), (3, 100_000)] {
            // A short window can see no request on a loaded machine: try a few windows before
            // calling the server broken (every byte of every window is checked either way).
            let r = (0..5)
                .map(|_| {
                    short_load(addr, conns, size).expect("load runs and every byte checks out")
                })
                .find(|r| r.requests > 0);
            let Some(r) = r else {
                panic!("{kind:?} {conns}x{size}: no request completed in five windows");
            };
            assert!(r.p50 <= r.p99, "{r:?}");
            assert!(r.cpu_us_per_req().is_some());
        }
    }

    #[test]
    fn tokio_server_echoes_every_byte() {
        crate::watchdog(Duration::from_secs(120), || check_server(ServerKind::Tokio));
    }

    #[test]
    fn uring_server_echoes_every_byte() {
        crate::watchdog(Duration::from_secs(120), || check_server(ServerKind::Uring));
    }

    #[test]
    fn uring_multishot_server_echoes_every_byte() {
        crate::watchdog(Duration::from_secs(120), || {
            check_server(ServerKind::UringMultishot)
        });
    }

    #[test]
    fn raw_server_echoes_every_byte() {
        crate::watchdog(Duration::from_secs(120), || check_server(ServerKind::Raw));
    }

    #[test]
    fn raw_single_server_echoes_every_byte() {
        crate::watchdog(Duration::from_secs(120), || {
            check_server(ServerKind::RawSingle)
        });
    }

    #[test]
    fn uring_pool_server_echoes_every_byte() {
        crate::watchdog(Duration::from_secs(120), || {
            check_server(ServerKind::UringPool)
        });
    }

    #[test]
    fn tokio_multi_thread_server_echoes_every_byte() {
        crate::watchdog(Duration::from_secs(120), || {
            check_server(ServerKind::TokioMt)
        });
    }

    #[test]
    fn tokio_current_thread_pair_server_echoes_every_byte() {
        crate::watchdog(Duration::from_secs(120), || {
            check_server(ServerKind::TokioCt)
        });
    }

    #[test]
    fn load_generator_catches_a_corrupted_echo() {
        crate::watchdog(Duration::from_secs(120), || {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            // Echoes correctly for a while, then flips one byte.
            std::thread::spawn(move || {
                let (mut s, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 64];
                for i in 0.. {
                    if s.read_exact(&mut buf).is_err() {
                        return;
                    }
                    if i == 100 {
                        buf[17] ^= 1;
                    }
                    if s.write_all(&buf).is_err() {
                        return;
                    }
                }
            });
            let e = short_load(addr, 1, 64).expect_err("a flipped byte is caught");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        });
    }

    #[test]
    fn cpu_time_of_this_process_grows() {
        let pid = std::process::id();
        let before = loadgen::process_cpu_time(pid).expect("read /proc/self/stat");
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = loadgen::process_cpu_time(pid).expect("read /proc/self/stat");
        assert!(after > before, "{before:?} -> {after:?}");
    }
}
