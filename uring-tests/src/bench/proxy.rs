//! The `proxy` benchmark suite: `examples/proxy` against a tokio `copy_bidirectional` proxy
//! and haproxy, relaying real HTTP traffic from real tools to a real upstream (issue 10).
//!
//! The upstream is nginx (Debian's `nginx-light`: one worker, no access log, sendfile) serving
//! a 1 KiB file and a large one (1 GiB; 256 MiB in the short pass) from a scratch directory in
//! /dev/shm. The proxies under test, each its own process pinned to CPU 1:
//!
//! - `uring`: `examples/proxy` (this crate's; `cargo build --release --example proxy`),
//! - `tokio`: `tokio-proxy` (a bin of this crate: tokio current_thread,
//!   `tokio::io::copy_bidirectional` per connection),
//! - `haproxy` in tcp mode with one thread, and `haproxy splice`: the same with
//!   `option splice-auto`.
//!
//! nginx, the load generators and this process run on CPU 0. Rows: `wrk -t1` fetching the
//! 1 KiB file over 50 and 500 keep-alive connections (requests/s, p50/p99 latency, proxy CPU
//! µs per request), and `curl -o /dev/null` fetching the large file (MB/s, proxy CPU ms per
//! GiB). The programs are installed with apt-get when missing (as root), or their rows are
//! skipped with a note.
//!
//! Each round runs one window of the row per proxy, the order rotating each round, so noise
//! on the shared machine hits all alike. A wrk window is one run of wrk on fresh connections;
//! a curl window is one fetch. The proxy's CPU time is read just before the tool starts and
//! just after it exits ([`procs::cpu_time`]: the process's CPU clock, the total
//! `/proc/PID/stat` reports, in ns). Tables show medians over rounds; ratios are medians of the
//! per-round ratios.
//!
//! Targets: proxy CPU per request <= 0.90x tokio's and below haproxy's; proxy CPU per GiB <=
//! 0.35x tokio's and below haproxy splice's.

pub mod config;
pub mod procs;

use super::http::load::{self, Tool};
use super::{median, print_table, Better, SummaryRow};
use procs::{Cpus, Nginx, ProxyProcess, Scratch};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Target: uring's CPU per request at most this much of tokio's.
pub const REQUEST_CPU_TARGET: f64 = 0.90;
/// Target: uring's CPU per GiB moved at most this much of tokio's.
pub const BULK_CPU_TARGET: f64 = 0.35;
/// Target against haproxy (per request: plain haproxy; per GiB: haproxy with splice): below it.
pub const HAPROXY_TARGET: f64 = 1.00;

/// A proxy under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// `examples/proxy`.
    Uring,
    /// `tokio-proxy`: tokio current_thread with `copy_bidirectional`.
    Tokio,
    /// haproxy, tcp mode, one thread.
    Haproxy,
    /// haproxy, tcp mode, one thread, `option splice-auto`.
    HaproxySplice,
}

impl Proxy {
    /// Every proxy, in table order.
    pub const ALL: [Proxy; 4] = [
        Proxy::Uring,
        Proxy::Tokio,
        Proxy::Haproxy,
        Proxy::HaproxySplice,
    ];

    /// Its name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Proxy::Uring => "uring",
            Proxy::Tokio => "tokio",
            Proxy::Haproxy => "haproxy",
            Proxy::HaproxySplice => "haproxy splice",
        }
    }

    fn index(self) -> usize {
        Proxy::ALL
            .iter()
            .position(|p| *p == self)
            .expect("a proxy of ALL")
    }
}

/// One row: what loads the proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// `wrk -t1 -cN` fetching the 1 KiB file.
    Wrk {
        /// Concurrent connections.
        conns: usize,
    },
    /// `curl` fetching the large file, one connection.
    Curl,
}

impl Row {
    /// The rows of the suite, in table order.
    pub const ALL: [Row; 3] = [Row::Wrk { conns: 50 }, Row::Wrk { conns: 500 }, Row::Curl];

    /// The name that picks the row on the command line: `wrk50`, `wrk500`, `curl`.
    pub fn key(&self) -> String {
        match self {
            Row::Wrk { conns } => format!("wrk{conns}"),
            Row::Curl => "curl".to_string(),
        }
    }

    /// The load, as the tables write it.
    pub fn load(&self, large: u64) -> String {
        match self {
            Row::Wrk { conns } => format!("wrk, 1 KiB, {conns} conns"),
            Row::Curl => format!("curl, {}", size_name(large)),
        }
    }

    /// The program that loads it.
    pub fn program(&self) -> &'static str {
        match self {
            Row::Wrk { .. } => "wrk",
            Row::Curl => "curl",
        }
    }

    /// Its CPU target against tokio.
    pub fn tokio_target(&self) -> f64 {
        match self {
            Row::Wrk { .. } => REQUEST_CPU_TARGET,
            Row::Curl => BULK_CPU_TARGET,
        }
    }

    /// The haproxy its CPU is held against: plain for requests, splice for bulk.
    pub fn haproxy_peer(&self) -> Proxy {
        match self {
            Row::Wrk { .. } => Proxy::Haproxy,
            Row::Curl => Proxy::HaproxySplice,
        }
    }
}

/// `1 GiB`, `256 MiB`.
fn size_name(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// The names of the rows (see [`Row::key`]).
pub fn row_keys() -> Vec<String> {
    Row::ALL.iter().map(Row::key).collect()
}

/// What the suite runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds: each proxy gets one window of each row per round.
    pub rounds: usize,
    /// Each wrk window.
    pub window: Duration,
    /// One wrk run per proxy before the rows, to warm it up.
    pub warmup: Duration,
    /// The size of the large file the curl row fetches.
    pub large: u64,
    /// The rows to run.
    pub rows: Vec<Row>,
}

impl Options {
    /// The full suite (`bench proxy`, `bench --full`): every row, 5 rounds, 1.5 s wrk windows,
    /// a 1 GiB file (about 100 s).
    pub fn full(rounds: Option<usize>) -> Options {
        Options {
            rounds: rounds.unwrap_or(5).max(1),
            window: Duration::from_millis(1500),
            warmup: Duration::from_millis(500),
            large: 1 << 30,
            rows: Row::ALL.to_vec(),
        }
    }

    /// The short pass `bench` runs by default: every row, 3 rounds, 0.3 s wrk windows, a
    /// 256 MiB file (about 20 s; the proxy's CPU clock counts in ns, so even a short window
    /// measures its CPU exactly, but a short wrk window is more of connecting and closing).
    pub fn short(rounds: Option<usize>) -> Options {
        Options {
            rounds: rounds.unwrap_or(3).max(1),
            window: Duration::from_millis(300),
            warmup: Duration::from_millis(200),
            large: 256 << 20,
            rows: Row::ALL.to_vec(),
        }
    }

    /// Only the row named `key` (see [`Row::key`]).
    ///
    /// # Panics
    ///
    /// When `key` names no row.
    pub fn only(mut self, key: &str) -> Options {
        let row = Row::ALL
            .into_iter()
            .find(|r| r.key() == key)
            .unwrap_or_else(|| panic!("unknown proxy row {key:?}; rows are {:?}", row_keys()));
        self.rows = vec![row];
        self
    }
}

/// One window's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Requests answered (wrk) or 1 (curl).
    pub requests: u64,
    /// Bytes of body moved (curl; 0 for wrk).
    pub bytes: u64,
    /// Requests/s (wrk) or MB/s (curl).
    pub rate: f64,
    /// Median latency, µs (wrk; NaN for curl).
    pub p50_us: f64,
    /// 99th percentile latency, µs (wrk; NaN for curl).
    pub p99_us: f64,
    /// The proxy's CPU time over the window.
    pub cpu: Duration,
}

impl Window {
    /// The proxy's CPU cost: µs per request (wrk), or ms per GiB moved (curl).
    pub fn cost(&self) -> f64 {
        if self.bytes > 0 {
            self.cpu.as_secs_f64() * 1e3 / (self.bytes as f64 / (1u64 << 30) as f64)
        } else if self.requests > 0 {
            self.cpu.as_secs_f64() * 1e6 / self.requests as f64
        } else {
            f64::NAN
        }
    }
}

/// What one row measured.
#[derive(Debug, Clone)]
pub struct RowResult {
    /// The row.
    pub row: Row,
    /// Every window, per proxy (`windows[i][round]`, proxies in [`Proxy::ALL`] order; empty
    /// for a proxy that did not run).
    pub windows: Vec<Vec<Window>>,
}

impl RowResult {
    /// Whether `p` ran in this row.
    pub fn ran(&self, p: Proxy) -> bool {
        !self.windows[p.index()].is_empty()
    }

    /// The median over rounds of `f` for `p`'s windows (NaN when it did not run).
    pub fn median_of(&self, p: Proxy, f: impl Fn(&Window) -> f64) -> f64 {
        let mut v: Vec<f64> = self.windows[p.index()]
            .iter()
            .map(f)
            .filter(|x| x.is_finite())
            .collect();
        median(&mut v)
    }

    /// `a` relative to `b`: (rate ratio, CPU cost ratio), each the median over rounds of the
    /// ratio within a round (NaN when either did not run).
    pub fn ratios(&self, a: Proxy, b: Proxy) -> (f64, f64) {
        let (x, y) = (&self.windows[a.index()], &self.windows[b.index()]);
        let paired = |f: fn(&Window) -> f64| {
            let mut v: Vec<f64> = x
                .iter()
                .zip(y)
                .map(|(a, b)| f(a) / f(b))
                .filter(|r| r.is_finite())
                .collect();
            median(&mut v)
        };
        (paired(|w| w.rate), paired(Window::cost))
    }

    /// "met", or "MISSED: ..." with the figures that missed (a peer that did not run is said
    /// so, and misses).
    pub fn status(&self) -> String {
        let (_, tokio) = self.ratios(Proxy::Uring, Proxy::Tokio);
        let peer = self.row.haproxy_peer();
        let (_, haproxy) = self.ratios(Proxy::Uring, peer);
        let what = match self.row {
            Row::Wrk { .. } => "CPU/req",
            Row::Curl => "CPU/GiB",
        };
        let target = self.row.tokio_target();
        let mut misses = Vec::new();
        if tokio.is_nan() || tokio > target {
            misses.push(format!("{what} {tokio:.2}x tokio > {target:.2}x"));
        }
        if !self.ran(peer) {
            misses.push(format!("{} did not run", peer.name()));
        } else if haproxy.is_nan() || haproxy >= HAPROXY_TARGET {
            misses.push(format!("{what} {haproxy:.2}x {} >= 1", peer.name()));
        }
        if misses.is_empty() {
            "met".to_string()
        } else {
            format!("MISSED: {}", misses.join(", "))
        }
    }
}

/// Runs the suite, prints its tables and returns its rows for the closing summary (none when
/// nginx or every load generator is unavailable).
///
/// # Panics
///
/// When a proxy or nginx cannot be started or a load generator fails (the message says which
/// and why).
pub fn run(opts: &Options) -> Vec<SummaryRow> {
    let (results, large) = run_with(opts).unwrap_or_else(|e| panic!("proxy benchmark: {e}"));
    summary(&results, large)
}

/// The programs the suite drives, where they are installed (installing them first, see
/// [`load::ensure_programs`]).
struct Programs {
    nginx: Option<PathBuf>,
    haproxy: Option<PathBuf>,
    wrk: Option<PathBuf>,
    curl: Option<PathBuf>,
}

impl Programs {
    fn find(rows: &[Row]) -> Programs {
        let mut wanted = vec![("nginx", "nginx-light"), ("haproxy", "haproxy")];
        for r in rows {
            if !wanted.iter().any(|(p, _)| *p == r.program()) {
                wanted.push((r.program(), r.program()));
            }
        }
        load::ensure_programs(
            "proxy",
            "the upstream, haproxy and the load generators",
            &wanted,
        );
        Programs {
            nginx: load::find_program("nginx"),
            haproxy: load::find_program("haproxy"),
            wrk: load::find_program("wrk"),
            curl: load::find_program("curl"),
        }
    }

    fn has(&self, row: Row) -> bool {
        match row {
            Row::Wrk { .. } => self.wrk.is_some(),
            Row::Curl => self.curl.is_some(),
        }
    }
}

/// The first line `exe ARG` prints on stdout or stderr (a version), or `?`.
fn version(exe: &Path, arg: &str) -> String {
    Command::new(exe)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "?".to_string())
}

/// An example of the `uring` package: `$env`, or `examples/NAME` in the running executable's
/// target directory. Under `cargo run` (`$CARGO` set) it is built first (`cargo build
/// --example NAME`, in release when this is a release build), so a stale one is brought up to
/// date.
///
/// # Errors
///
/// When it cannot be built or found.
pub fn example_exe(name: &str, env: &str) -> io::Result<PathBuf> {
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
        cmd.args(["build", "-q", "-p", "uring", "--example", name]);
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        if manifest.exists() {
            cmd.arg("--manifest-path").arg(manifest);
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd.stderr(Stdio::null()).status()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "building example {name} failed: run `cargo build --release --example {name}`"
            )));
        }
    }
    // Test binaries live one level deeper, in deps/.
    let candidates = [
        dir.join("examples").join(name),
        dir.join("..").join("examples").join(name),
    ];
    candidates.into_iter().find(|p| p.exists()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no examples/{name} next to {}: build it with `cargo build --release \
                 --example {name}` or set {env}",
                me.display()
            ),
        )
    })
}

/// The proxies that started, in [`Proxy::ALL`] order.
struct Proxies {
    running: Vec<(Proxy, ProxyProcess)>,
}

impl Proxies {
    fn get(&mut self, p: Proxy) -> Option<&mut ProxyProcess> {
        self.running
            .iter_mut()
            .find(|(q, _)| *q == p)
            .map(|(_, s)| s)
    }
}

/// Runs the suite with `opts`, prints the tables and returns the figures per row, with the
/// size of the large file.
///
/// # Errors
///
/// When a proxy or nginx cannot be started or a load generator fails.
pub fn run_with(opts: &Options) -> io::Result<(Vec<RowResult>, u64)> {
    let programs = Programs::find(&opts.rows);
    let Some(nginx_exe) = programs.nginx.clone() else {
        println!("\nproxy: no nginx (the upstream): the suite is skipped");
        return Ok((Vec::new(), opts.large));
    };
    let rows: Vec<Row> = opts
        .rows
        .iter()
        .copied()
        .filter(|r| programs.has(*r))
        .collect();
    if rows.is_empty() {
        println!("\nproxy: neither wrk nor curl is available: the suite is skipped");
        return Ok((Vec::new(), opts.large));
    }
    let uring_exe = example_exe("proxy", "URING_PROXY_EXAMPLE")?;
    let tokio_exe = super::echo::bench_exe("tokio-proxy", "URING_TOKIO_PROXY")?;
    // 500 connections for wrk, twice that in each proxy: raise the soft fd limit (the children
    // inherit it), and tell haproxy what it may use.
    crate::set_nofile_limit(u64::MAX);
    let nofile = crate::set_nofile_limit(u64::MAX);
    let maxconn = (nofile.saturating_sub(64) / 2).min(4096);
    let load_at_start = super::echo::load_average();
    let (rest, proxy_cpu) = super::echo::pick_cpus();
    let cpus = Cpus {
        proxy: proxy_cpu,
        rest,
    };
    // nginx and the tools inherit this thread's CPU.
    if let Some(c) = rest {
        super::echo::pin_current_thread(c);
    }
    let scratch = Scratch::new(&load::scratch_dir())?;
    let dir = scratch.path().to_path_buf();
    let large = if rows.contains(&Row::Curl) {
        opts.large
    } else {
        0
    };
    scratch.write_files(large)?;
    let nginx = Nginx::start(&nginx_exe, &dir)?;
    let mut proxies = Proxies {
        running: Vec::new(),
    };
    for p in Proxy::ALL {
        let started = match p {
            Proxy::Uring | Proxy::Tokio => {
                let exe = if p == Proxy::Uring {
                    &uring_exe
                } else {
                    &tokio_exe
                };
                let log = dir.join(format!("{}.log", p.name()));
                ProxyProcess::start_printing(exe, nginx.addr, cpus, &log)?
            }
            Proxy::Haproxy | Proxy::HaproxySplice => {
                let Some(exe) = &programs.haproxy else {
                    continue;
                };
                let name = p.name().replace(' ', "-");
                let splice = p == Proxy::HaproxySplice;
                ProxyProcess::start_haproxy(exe, &dir, &name, nginx.addr, maxconn, splice, cpus)?
            }
        };
        proxies.running.push((p, started));
    }
    println!(
        "\nproxy: examples/proxy (uring), tokio-proxy (tokio current_thread, \
         copy_bidirectional), {} in tcp mode (1 thread; plain, and with option splice-auto); \
         upstream {}; {} alternating round(s), wrk windows of {:.1} s, curl fetching {}; \
         proxies on cpu {}, nginx, wrk and curl on cpu {}",
        programs
            .haproxy
            .as_deref()
            .map_or("haproxy (not installed)".to_string(), |h| {
                // "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"
                let v = version(h, "-v");
                v.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            }),
        version(&nginx_exe, "-v"),
        opts.rounds,
        opts.window.as_secs_f64(),
        size_name(opts.large),
        proxy_cpu.map_or("any".to_string(), |c| c.to_string()),
        rest.map_or("any".to_string(), |c| c.to_string()),
    );
    let shm = load::scratch_dir();
    // Warm up: wrk once through each proxy at the largest connection count.
    let warm_conns = rows
        .iter()
        .filter_map(|r| match r {
            Row::Wrk { conns } => Some(*conns),
            Row::Curl => None,
        })
        .max();
    if let Some(conns) = warm_conns {
        for (p, s) in &proxies.running {
            load::run_path(
                Tool::Wrk,
                s.addr,
                config::SMALL_PATH,
                conns,
                opts.warmup,
                None,
                &shm,
            )
            .map_err(|e| context(e, *p, "warm-up"))?;
        }
    }
    let curl = programs.curl.clone();
    let mut results = Vec::new();
    for &row in &rows {
        let mut windows: Vec<Vec<Window>> = vec![Vec::new(); Proxy::ALL.len()];
        let present: Vec<Proxy> = proxies.running.iter().map(|(p, _)| *p).collect();
        for round in 0..opts.rounds {
            for k in 0..present.len() {
                let p = present[(k + round) % present.len()];
                let s = proxies.get(p).expect("a running proxy");
                let w = window(s, row, opts.window, large, curl.as_deref(), &shm)
                    .map_err(|e| context(e, p, &row.load(large)))?;
                if !s.running() {
                    return Err(context(
                        io::Error::other(format!(
                            "it exited during the window (its log is in {})",
                            dir.display()
                        )),
                        p,
                        &row.load(large),
                    ));
                }
                windows[p.index()].push(w);
            }
        }
        let result = RowResult { row, windows };
        let (_, t) = result.ratios(Proxy::Uring, Proxy::Tokio);
        let (_, h) = result.ratios(Proxy::Uring, Proxy::Haproxy);
        let (_, hs) = result.ratios(Proxy::Uring, Proxy::HaproxySplice);
        eprintln!(
            "proxy {}: uring CPU {t:.2}x tokio's, {h:.2}x haproxy's, {hs:.2}x haproxy splice's",
            row.load(large)
        );
        results.push(result);
    }
    drop(proxies);
    drop(nginx);
    drop(scratch);
    print_tables(&results, large);
    println!(
        "\nproxy: load average (1/5/15 min) at start {load_at_start}, at end {}",
        super::echo::load_average()
    );
    Ok((results, large))
}

/// One measured window of `row` through `proxy`.
fn window(
    proxy: &ProxyProcess,
    row: Row,
    window: Duration,
    large: u64,
    curl: Option<&Path>,
    scratch: &Path,
) -> io::Result<Window> {
    let pid = proxy.pid();
    match row {
        Row::Wrk { conns } => {
            let cpu0 = procs::cpu_time(pid)?;
            let run = load::run_path(
                Tool::Wrk,
                proxy.addr,
                config::SMALL_PATH,
                conns,
                window,
                None,
                scratch,
            )?;
            let cpu = procs::cpu_time(pid)?.saturating_sub(cpu0);
            Ok(Window {
                requests: run.requests,
                bytes: 0,
                rate: run.rate,
                p50_us: run.p50_us,
                p99_us: run.p99_us,
                cpu,
            })
        }
        Row::Curl => {
            let curl = curl.ok_or_else(|| io::Error::other("no curl"))?;
            let cpu0 = procs::cpu_time(pid)?;
            let fetch = procs::curl_fetch(curl, proxy.addr, config::LARGE_PATH, large)?;
            let cpu = procs::cpu_time(pid)?.saturating_sub(cpu0);
            Ok(Window {
                requests: 1,
                bytes: fetch.bytes,
                rate: fetch.mb_per_s(),
                p50_us: f64::NAN,
                p99_us: f64::NAN,
                cpu,
            })
        }
    }
}

fn context(e: io::Error, proxy: Proxy, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{} proxy, {what}: {e}", proxy.name()))
}

fn fmt(x: f64, d: usize) -> String {
    if x.is_finite() {
        format!("{x:.d$}")
    } else {
        "-".to_string()
    }
}

fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}x")
    } else {
        "-".to_string()
    }
}

fn print_tables(results: &[RowResult], large: u64) {
    let mut wrk_rows = Vec::new();
    let mut curl_rows = Vec::new();
    for r in results {
        for p in Proxy::ALL.into_iter().filter(|p| r.ran(*p)) {
            match r.row {
                Row::Wrk { .. } => wrk_rows.push(vec![
                    r.row.load(large),
                    p.name().to_string(),
                    fmt(r.median_of(p, |w| w.rate), 0),
                    fmt(r.median_of(p, |w| w.p50_us), 0),
                    fmt(r.median_of(p, |w| w.p99_us), 0),
                    fmt(r.median_of(p, Window::cost), 2),
                ]),
                Row::Curl => curl_rows.push(vec![
                    r.row.load(large),
                    p.name().to_string(),
                    fmt(r.median_of(p, |w| w.rate), 0),
                    fmt(r.median_of(p, Window::cost), 0),
                ]),
            }
        }
    }
    if !wrk_rows.is_empty() {
        print_table(
            "proxy: wrk through each proxy to nginx, medians per proxy (req/s; latency in µs; \
             the proxy's CPU µs per request)",
            &["load", "proxy", "req/s", "p50 µs", "p99 µs", "CPU µs/req"],
            &wrk_rows,
        );
    }
    if !curl_rows.is_empty() {
        print_table(
            "proxy: curl -o /dev/null through each proxy to nginx, medians per proxy (MB/s; the \
             proxy's CPU ms per GiB moved)",
            &["load", "proxy", "MB/s", "CPU ms/GiB"],
            &curl_rows,
        );
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let (rate_t, cpu_t) = r.ratios(Proxy::Uring, Proxy::Tokio);
            let (rate_h, cpu_h) = r.ratios(Proxy::Uring, Proxy::Haproxy);
            let (rate_s, cpu_s) = r.ratios(Proxy::Uring, Proxy::HaproxySplice);
            vec![
                r.row.load(large),
                ratio(cpu_t),
                ratio(cpu_h),
                ratio(cpu_s),
                ratio(rate_t),
                ratio(rate_h),
                ratio(rate_s),
                r.status(),
            ]
        })
        .collect();
    print_table(
        &format!(
            "proxy: uring (examples/proxy) over each peer, medians of the ratios within each \
             round (CPU: per request for wrk, per GiB for curl; rate: req/s or MB/s). Targets: \
             CPU/req <= {REQUEST_CPU_TARGET:.2}x tokio's and below haproxy's; CPU/GiB <= \
             {BULK_CPU_TARGET:.2}x tokio's and below haproxy splice's"
        ),
        &[
            "load",
            "CPU /tokio",
            "CPU /haproxy",
            "CPU /haproxy splice",
            "rate /tokio",
            "rate /haproxy",
            "rate /haproxy splice",
            "target",
        ],
        &rows,
    );
}

/// The closing summary's rows for `results`: per row, the proxy's CPU cost and the rate, uring
/// against tokio, haproxy and haproxy splice, with the paired ratios of [`RowResult::ratios`].
pub fn summary(results: &[RowResult], large: u64) -> Vec<SummaryRow> {
    let peers = [
        (Proxy::Tokio, "tokio"),
        (Proxy::Haproxy, "haproxy"),
        (Proxy::HaproxySplice, "haproxy splice"),
    ];
    let mut out = Vec::new();
    for r in results {
        let (cost, rate, cost_decimals) = match r.row {
            Row::Wrk { .. } => ("proxy CPU µs/req", "req/s", 2),
            Row::Curl => ("proxy CPU ms/GiB", "MB/s", 0),
        };
        let work = r.row.load(large);
        let row = |figure, better, decimals, f: fn(&Window) -> f64, pick: fn((f64, f64)) -> f64| {
            SummaryRow {
                suite: "proxy",
                work: work.clone(),
                figure,
                better,
                decimals,
                uring: r.median_of(Proxy::Uring, f),
                peers: peers
                    .iter()
                    .filter(|(p, _)| r.ran(*p))
                    .map(|&(p, col)| (col, r.median_of(p, f), pick(r.ratios(Proxy::Uring, p))))
                    .collect(),
            }
        };
        out.push(row(cost, Better::Lower, cost_decimals, Window::cost, |r| {
            r.1
        }));
        out.push(row(rate, Better::Higher, 0, |w| w.rate, |r| r.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(requests: u64, bytes: u64, rate: f64, cpu_ms: u64) -> Window {
        Window {
            requests,
            bytes,
            rate,
            p50_us: 100.0,
            p99_us: 900.0,
            cpu: Duration::from_millis(cpu_ms),
        }
    }

    #[test]
    fn rows_have_keys_and_loads() {
        assert_eq!(row_keys(), ["wrk50", "wrk500", "curl"]);
        assert_eq!(Row::Curl.load(1 << 30), "curl, 1 GiB");
        assert_eq!(Row::Curl.load(256 << 20), "curl, 256 MiB");
        assert_eq!(Row::Wrk { conns: 50 }.load(0), "wrk, 1 KiB, 50 conns");
        assert_eq!(
            Options::short(None).only("curl").rows,
            vec![Row::Curl],
            "one row picked"
        );
    }

    #[test]
    fn window_costs() {
        // 1000 requests in 10 ms of CPU: 10 µs each.
        assert!((w(1000, 0, 5e4, 10).cost() - 10.0).abs() < 1e-9);
        // 512 MiB moved in 100 ms of CPU: 200 ms per GiB.
        assert!((w(1, 512 << 20, 900.0, 100).cost() - 200.0).abs() < 1e-9);
        assert!(w(0, 0, 0.0, 10).cost().is_nan());
    }

    #[test]
    fn ratios_pair_rounds_and_status_names_misses() {
        // uring: 8 µs/req, tokio 10, haproxy 9 in every round, and one round where all are
        // twice as costly (paired ratios do not move).
        let windows = vec![
            vec![w(1000, 0, 100.0, 8), w(1000, 0, 100.0, 16)],
            vec![w(1000, 0, 80.0, 10), w(1000, 0, 80.0, 20)],
            vec![w(1000, 0, 90.0, 9), w(1000, 0, 90.0, 18)],
            vec![w(1000, 0, 90.0, 9), w(1000, 0, 90.0, 18)],
        ];
        let r = RowResult {
            row: Row::Wrk { conns: 50 },
            windows,
        };
        let (rate, cpu) = r.ratios(Proxy::Uring, Proxy::Tokio);
        assert!((rate - 1.25).abs() < 1e-9 && (cpu - 0.8).abs() < 1e-9);
        assert_eq!(r.status(), "met");
        assert!((r.median_of(Proxy::Uring, Window::cost) - 12.0).abs() < 1e-9);
        // Bulk: uring 0.5x tokio misses 0.35x; haproxy splice not run misses too.
        let windows = vec![
            vec![w(1, 1 << 30, 1000.0, 100)],
            vec![w(1, 1 << 30, 1000.0, 200)],
            vec![w(1, 1 << 30, 1000.0, 300)],
            vec![],
        ];
        let r = RowResult {
            row: Row::Curl,
            windows,
        };
        let s = r.status();
        assert!(s.starts_with("MISSED"), "{s}");
        assert!(s.contains("0.50x tokio > 0.35x"), "{s}");
        assert!(s.contains("haproxy splice did not run"), "{s}");
        let rows = summary(&[r], 1 << 30);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].figure, "proxy CPU ms/GiB");
        assert_eq!(rows[0].uring, 100.0);
        let cols: Vec<&str> = rows[0].peers.iter().map(|p| p.0).collect();
        assert_eq!(cols, ["tokio", "haproxy"]);
    }
}
