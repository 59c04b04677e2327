//! The `http` benchmark suite: the same hyper service on uring and on tokio current_thread,
//! side by side in one run (issue 9).
//!
//! Each server is its own process (`http-server --runtime uring|tokio`, see [`server`]) pinned
//! to one CPU; the load generator runs pinned to the other: `wrk -t1` (HTTP/1.1 keep-alive, one
//! request in flight per connection) at 50 and 500 connections, and `h2load -t1` (HTTP/2 over
//! cleartext with prior knowledge) at 50 connections x 10 streams and 500 connections x 1
//! stream. Both tools are installed with apt-get when missing (as root), or their rows are
//! skipped with a note.
//!
//! Each round runs one window of the row per server, alternating (the order rotates each
//! round), so noise on the shared machine hits both alike. A window is one run of the tool on
//! fresh connections; the server's CPU time (user+system from `/proc/PID/stat`) is read just
//! before it starts and just after it exits, so it includes accepting and closing the window's
//! connections. Figures: requests/s, p50/p99 latency (wrk's `--latency`; h2load's per-request
//! log), server CPU µs per request, and the server's voluntary context switches (sleeps) per
//! 1000 requests; for uring also `io_uring_enter` calls and completions per request, read from
//! the server's driver counters (`http-server --control`). Tables show medians over rounds;
//! ratios uring/tokio are medians of the per-round ratios.
//!
//! The HTTP/1.1 rows also run two bare servers with no runtime and no HTTP library
//! ([`bare`]: an io_uring loop and an epoll loop answering with fixed bytes): their ratio is
//! what the kernel interface alone saves for this work, the floor under uring/tokio.
//!
//! Target, every row: uring <= 0.90x tokio's CPU per request and >= 1.00x its requests/s.

pub mod bare;
pub mod load;
pub mod server;

use super::{median, print_table, Better, SummaryRow};
use load::{Run, Tool};
use server::Runtime;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Target: uring's CPU per request at most this much of tokio's.
pub const CPU_TARGET: f64 = 0.90;
/// Target: uring's requests/s at least this much of tokio's.
pub const RATE_TARGET: f64 = 1.00;

/// One row: a load generator and its connection count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The tool (and for h2load its streams per connection).
    pub tool: Tool,
    /// Concurrent connections.
    pub conns: usize,
}

impl Row {
    /// The rows of the suite, in table order.
    pub const ALL: [Row; 4] = [
        Row {
            tool: Tool::Wrk,
            conns: 50,
        },
        Row {
            tool: Tool::Wrk,
            conns: 500,
        },
        Row {
            tool: Tool::H2load { streams: 10 },
            conns: 50,
        },
        Row {
            tool: Tool::H2load { streams: 1 },
            conns: 500,
        },
    ];

    /// The protocol, as the tables write it.
    pub fn protocol(&self) -> &'static str {
        match self.tool {
            Tool::Wrk => "HTTP/1.1",
            Tool::H2load { .. } => "HTTP/2",
        }
    }

    /// The load, as the tables write it (`wrk 50 conns`, `h2load 50 conns x 10 streams`).
    pub fn load(&self) -> String {
        match self.tool {
            Tool::Wrk => format!("wrk, {} conns", self.conns),
            Tool::H2load { streams } => format!(
                "h2load, {} conns x {streams} stream{}",
                self.conns,
                if streams == 1 { "" } else { "s" }
            ),
        }
    }

    /// The servers the row runs: all of them for HTTP/1.1, uring and tokio for HTTP/2 (the
    /// bare servers speak HTTP/1.1 only).
    pub fn servers(&self) -> &'static [Runtime] {
        match self.tool {
            Tool::Wrk => &Runtime::ALL,
            Tool::H2load { .. } => &Runtime::ALL[..2],
        }
    }

    /// The name that picks the row on the command line: `h1x50`, `h1x500`, `h2x50`, `h2x500`.
    pub fn key(&self) -> String {
        match self.tool {
            Tool::Wrk => format!("h1x{}", self.conns),
            Tool::H2load { .. } => format!("h2x{}", self.conns),
        }
    }
}

/// The names of the rows (see [`Row::key`]).
pub fn row_keys() -> Vec<String> {
    Row::ALL.iter().map(Row::key).collect()
}

/// What the suite runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds: each server gets one window of each row per round.
    pub rounds: usize,
    /// Each window (one run of the tool).
    pub window: Duration,
    /// One run of each tool against each server before the rows, to warm the server up.
    pub warmup: Duration,
    /// The rows to run.
    pub rows: Vec<Row>,
}

impl Options {
    /// The full suite (`bench http`, `bench --full`): every row, 7 rounds of 1.5 s windows
    /// (about 90 s).
    pub fn full(rounds: Option<usize>) -> Options {
        Options {
            rounds: rounds.unwrap_or(7).max(1),
            window: Duration::from_millis(1500),
            warmup: Duration::from_millis(500),
            rows: Row::ALL.to_vec(),
        }
    }

    /// The short pass `bench` runs by default: every row, 3 rounds of 0.6 s windows (about
    /// 20 s). CPU time comes from `/proc` in 10 ms ticks, so a window much shorter than this
    /// makes CPU per request coarse.
    pub fn short(rounds: Option<usize>) -> Options {
        Options {
            rounds: rounds.unwrap_or(3).max(1),
            window: Duration::from_millis(600),
            warmup: Duration::from_millis(300),
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
            .unwrap_or_else(|| panic!("unknown http row {key:?}; rows are {:?}", row_keys()));
        self.rows = vec![row];
        self
    }
}

/// One window's figures, with uring's driver counters over it.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// What the tool and `/proc` measured.
    pub run: Run,
    /// uring only: `io_uring_enter` calls and completions over the window.
    pub counters: Option<(u64, u64)>,
}

/// What one row measured.
#[derive(Debug, Clone)]
pub struct RowResult {
    /// The row.
    pub row: Row,
    /// Every window, per server (`windows[i][round]`, servers in [`Runtime::ALL`] order).
    pub windows: Vec<Vec<Window>>,
}

impl RowResult {
    /// The median over rounds of `f` for `runtime`'s windows (windows where it is not finite
    /// are left out).
    pub fn median_of(&self, runtime: Runtime, f: impl Fn(&Window) -> Option<f64>) -> f64 {
        let i = index(runtime);
        let mut v: Vec<f64> = self.windows[i]
            .iter()
            .filter_map(&f)
            .filter(|x| x.is_finite())
            .collect();
        median(&mut v)
    }

    /// uring relative to tokio: (req/s ratio, CPU per request ratio), each the median over
    /// rounds of the ratio within a round.
    pub fn ratios(&self) -> (f64, f64) {
        self.ratios_of(Runtime::Uring, Runtime::Tokio)
    }

    /// `a` relative to `b`, as [`RowResult::ratios`] (NaN when the row did not run them).
    pub fn ratios_of(&self, a: Runtime, b: Runtime) -> (f64, f64) {
        let (u, t) = (&self.windows[index(a)], &self.windows[index(b)]);
        let mut rate: Vec<f64> = u
            .iter()
            .zip(t)
            .map(|(a, b)| a.run.rate / b.run.rate)
            .filter(|x| x.is_finite())
            .collect();
        let mut cpu: Vec<f64> = u
            .iter()
            .zip(t)
            .map(|(a, b)| {
                a.run.cpu_us_per_req().unwrap_or(f64::NAN)
                    / b.run.cpu_us_per_req().unwrap_or(f64::NAN)
            })
            .filter(|x| x.is_finite())
            .collect();
        (median(&mut rate), median(&mut cpu))
    }

    /// "met", or "MISSED: ..." with the figures that missed.
    pub fn status(&self) -> String {
        let (rate, cpu) = self.ratios();
        let mut misses = Vec::new();
        if cpu.is_nan() || cpu > CPU_TARGET {
            misses.push(format!("CPU/req {cpu:.2}x > {CPU_TARGET:.2}x"));
        }
        if rate.is_nan() || rate < RATE_TARGET {
            misses.push(format!("req/s {rate:.2}x < {RATE_TARGET:.2}x"));
        }
        if misses.is_empty() {
            "met".to_string()
        } else {
            format!("MISSED: {}", misses.join(", "))
        }
    }
}

fn index(runtime: Runtime) -> usize {
    Runtime::ALL
        .iter()
        .position(|r| *r == runtime)
        .expect("a runtime of ALL")
}

/// Runs the suite, prints its tables and returns its rows for the closing summary (none when
/// neither load generator is available).
///
/// # Panics
///
/// When a server cannot be started or a load generator fails (the message says which and why).
pub fn run(opts: &Options) -> Vec<SummaryRow> {
    let results = run_with(opts).unwrap_or_else(|e| panic!("http benchmark: {e}"));
    summary(&results)
}

/// Runs the suite with `opts`, prints the tables and returns the figures per row.
///
/// # Errors
///
/// When a server cannot be started or a load generator fails.
pub fn run_with(opts: &Options) -> io::Result<Vec<RowResult>> {
    let mut tools: Vec<Tool> = Vec::new();
    for r in &opts.rows {
        if !tools.iter().any(|t| t.program() == r.tool.program()) {
            tools.push(r.tool);
        }
    }
    let usable = load::ensure(&tools);
    let rows: Vec<Row> = opts
        .rows
        .iter()
        .copied()
        .filter(|r| usable.iter().any(|t| t.program() == r.tool.program()))
        .collect();
    if rows.is_empty() {
        println!("\nhttp: no load generator available: the suite is skipped");
        return Ok(Vec::new());
    }
    let exe = super::echo::bench_exe("http-server", "URING_HTTP_SERVER")?;
    // 500 connections for the tool, accepted by the server: raise the soft fd limit (the
    // children inherit it).
    crate::set_nofile_limit(u64::MAX);
    let load_at_start = super::echo::load_average();
    let (client_cpu, server_cpu) = super::echo::pick_cpus();
    // The tools inherit this thread's CPU.
    if let Some(c) = client_cpu {
        super::echo::pin_current_thread(c);
    }
    println!(
        "\nhttp: the same hyper service (auto builder, HTTP/1.1 and h2c) on uring and on tokio \
         current_thread; {} alternating round(s) of {:.1} s windows per server; servers on cpu \
         {}, wrk/h2load on cpu {}",
        opts.rounds,
        opts.window.as_secs_f64(),
        server_cpu.map_or("any".to_string(), |c| c.to_string()),
        client_cpu.map_or("any".to_string(), |c| c.to_string()),
    );
    let scratch = load::scratch_dir();
    let servers: Vec<ServerProcess> = Runtime::ALL
        .iter()
        .map(|&r| ServerProcess::start(&exe, r, server_cpu))
        .collect::<io::Result<_>>()?;
    // Warm up: each tool once against each server it loads, at the largest connection count.
    for s in &servers {
        for t in &usable {
            let conns = rows
                .iter()
                .filter(|r| r.tool.program() == t.program() && r.servers().contains(&s.runtime))
                .map(|r| r.conns)
                .max();
            let Some(conns) = conns else { continue };
            load::run(*t, s.addr, conns, opts.warmup, None, &scratch)
                .map_err(|e| context(e, s.runtime, "warm-up"))?;
        }
    }
    let mut results = Vec::new();
    for &row in &rows {
        let mut windows: Vec<Vec<Window>> = vec![Vec::new(); servers.len()];
        let serving: Vec<usize> = row.servers().iter().map(|&r| index(r)).collect();
        for round in 0..opts.rounds {
            for k in 0..serving.len() {
                let i = serving[(k + round) % serving.len()];
                let w = servers[i]
                    .window(row, opts.window, &scratch)
                    .map_err(|e| context(e, servers[i].runtime, &row.load()))?;
                windows[i].push(w);
            }
        }
        let result = RowResult { row, windows };
        let (rate, cpu) = result.ratios();
        let (_, floor) = result.ratios_of(Runtime::RawRing, Runtime::RawEpoll);
        eprintln!(
            "http {} {}: uring/tokio req/s {rate:.2}x, CPU/req {cpu:.2}x{}",
            row.protocol(),
            row.load(),
            if floor.is_finite() {
                format!("; bare loops raw-ring/raw-epoll CPU/req {floor:.2}x")
            } else {
                String::new()
            }
        );
        results.push(result);
    }
    drop(servers);
    print_tables(&results);
    println!(
        "\nhttp: load average (1/5/15 min) at start {load_at_start}, at end {}",
        super::echo::load_average()
    );
    Ok(results)
}

fn context(e: io::Error, runtime: Runtime, what: &str) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("{} http server, {what}: {e}", runtime.name()),
    )
}

/// A server in its own process, killed when dropped.
struct ServerProcess {
    child: Child,
    runtime: Runtime,
    addr: SocketAddr,
    control: Option<SocketAddr>,
}

impl ServerProcess {
    /// Starts `http-server --runtime R` (uring with `--control`) on a free port of 127.0.0.1,
    /// pinned to `cpu`, and waits until it listens.
    fn start(exe: &Path, runtime: Runtime, cpu: Option<usize>) -> io::Result<ServerProcess> {
        let mut cmd = Command::new(exe);
        cmd.args(["--runtime", runtime.name(), "--addr", "127.0.0.1:0"]);
        if runtime == Runtime::Uring {
            cmd.arg("--control");
        }
        if let Some(c) = cpu {
            cmd.args(["--cpu", &c.to_string()]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("start {}: {e}", exe.display())))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let addr = out
            .read_line(&mut line)
            .ok()
            .and_then(|_| line.trim().parse().ok());
        let control = if runtime == Runtime::Uring {
            let mut line = String::new();
            out.read_line(&mut line)
                .ok()
                .and_then(|_| line.trim().strip_prefix("control ")?.parse().ok())
        } else {
            None
        };
        match addr {
            Some(addr) if control.is_some() || runtime != Runtime::Uring => Ok(ServerProcess {
                child,
                runtime,
                addr,
                control,
            }),
            _ => {
                let _ = child.kill();
                let status = child.wait();
                Err(io::Error::other(format!(
                    "the {} http server did not print its addresses (got {line:?}; exit {status:?})",
                    runtime.name()
                )))
            }
        }
    }

    /// One measured window of `row`.
    fn window(&self, row: Row, window: Duration, scratch: &Path) -> io::Result<Window> {
        let before = self.control.map(server::read_counters).transpose()?;
        let run = load::run(
            row.tool,
            self.addr,
            row.conns,
            window,
            Some(self.child.id()),
            scratch,
        )?;
        let after = self.control.map(server::read_counters).transpose()?;
        Ok(Window {
            run,
            counters: before
                .zip(after)
                .map(|(a, b)| (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1))),
        })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn print_tables(results: &[RowResult]) {
    let fmt = |x: f64, d: usize| {
        if x.is_finite() {
            format!("{x:.d$}")
        } else {
            "-".to_string()
        }
    };
    let mut rows = Vec::new();
    for r in results {
        for &rt in r.row.servers() {
            let per_req = |w: &Window, n: fn((u64, u64)) -> u64| {
                w.counters
                    .map(|c| n(c) as f64 / w.run.requests.max(1) as f64)
            };
            rows.push(vec![
                r.row.protocol().to_string(),
                r.row.load(),
                rt.name().to_string(),
                fmt(r.median_of(rt, |w| Some(w.run.rate)), 0),
                fmt(r.median_of(rt, |w| Some(w.run.p50_us)), 0),
                fmt(r.median_of(rt, |w| Some(w.run.p99_us)), 0),
                fmt(r.median_of(rt, |w| w.run.cpu_us_per_req()), 2),
                fmt(
                    r.median_of(rt, |w| {
                        w.run
                            .server_sleeps
                            .map(|s| s as f64 * 1000.0 / w.run.requests.max(1) as f64)
                    }),
                    1,
                ),
                fmt(r.median_of(rt, |w| per_req(w, |c| c.0)), 3),
                fmt(r.median_of(rt, |w| per_req(w, |c| c.1)), 2),
            ]);
        }
    }
    print_table(
        "http: medians per server (req/s; latency in µs; server CPU µs per request; server \
         sleeps per 1000 requests; uring's io_uring_enter calls and completions per request)",
        &[
            "protocol",
            "load",
            "server",
            "req/s",
            "p50 µs",
            "p99 µs",
            "CPU µs/req",
            "sleeps/1k req",
            "enters/req",
            "CQEs/req",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let (rate, cpu) = r.ratios();
            let ratio = |x: f64| {
                if x.is_finite() {
                    format!("{x:.2}x")
                } else {
                    "-".to_string()
                }
            };
            vec![
                r.row.protocol().to_string(),
                r.row.load(),
                ratio(rate),
                ratio(cpu),
                ratio(r.ratios_of(Runtime::RawRing, Runtime::RawEpoll).1),
                ratio(r.ratios_of(Runtime::Uring, Runtime::RawRing).1),
                r.status(),
            ]
        })
        .collect();
    print_table(
        &format!(
            "http: uring/tokio, medians of the ratios within each round (the bare loops' \
             ratio is the kernel's floor: what io_uring saves against epoll with no runtime and \
             no HTTP library on top). Target: CPU/req <= {CPU_TARGET:.2}x and req/s >= \
             {RATE_TARGET:.2}x tokio's"
        ),
        &[
            "protocol",
            "load",
            "uring/tokio req/s",
            "uring/tokio CPU/req",
            "raw-ring/raw-epoll CPU/req",
            "uring/raw-ring CPU/req",
            "target",
        ],
        &rows,
    );
}

/// The closing summary's rows for `results`: per row, server CPU per request and requests per
/// second, uring against tokio, with the paired ratios of [`RowResult::ratios`].
pub fn summary(results: &[RowResult]) -> Vec<SummaryRow> {
    let mut out = Vec::new();
    for r in results {
        let (rate, cpu) = r.ratios();
        let work = format!("{} {}", r.row.protocol(), r.row.load());
        out.push(SummaryRow {
            suite: "http",
            work: work.clone(),
            figure: "server CPU µs/req",
            better: Better::Lower,
            decimals: 2,
            uring: r.median_of(Runtime::Uring, |w| w.run.cpu_us_per_req()),
            peers: vec![(
                "tokio",
                r.median_of(Runtime::Tokio, |w| w.run.cpu_us_per_req()),
                cpu,
            )],
        });
        out.push(SummaryRow {
            suite: "http",
            work,
            figure: "req/s",
            better: Better::Higher,
            decimals: 0,
            uring: r.median_of(Runtime::Uring, |w| Some(w.run.rate)),
            peers: vec![(
                "tokio",
                r.median_of(Runtime::Tokio, |w| Some(w.run.rate)),
                rate,
            )],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::server::{self, Runtime, HELLO};
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Starts `runtime`'s server on a thread of this process (it serves until the test process
    /// exits).
    fn start_in_process(runtime: Runtime, control: bool) -> (SocketAddr, Option<SocketAddr>) {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let addr = "127.0.0.1:0".parse().expect("address");
            let tx2 = tx.clone();
            let served = server::serve_with_control(runtime, addr, control, move |a, c| {
                tx2.send(Ok((a, c))).expect("send")
            });
            if let Err(e) = served {
                let _ = tx.send(Err(e));
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("server thread answers")
            .expect("server starts")
    }

    /// Two keep-alive HTTP/1.1 requests on one connection, then one for a missing path.
    fn http1(addr: SocketAddr) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        for _ in 0..2 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let want = format!("content-length: {}\r\n", HELLO.len());
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(HELLO) {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&got).to_lowercase();
            assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
            assert!(text.contains(&want), "{text}");
        }
        s.write_all(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).unwrap();
        assert!(rest.starts_with("HTTP/1.1 404"), "{rest}");
    }

    /// An HTTP/2 (prior knowledge) client: 20 concurrent requests on one connection.
    fn http2(addr: SocketAddr) {
        use bytes::Bytes;
        use http_body_util::{BodyExt, Empty};
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (sender, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
                TokioExecutor::new(),
                TokioIo::new(stream),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let mut tasks = Vec::new();
            for _ in 0..20 {
                let mut sender = sender.clone();
                tasks.push(tokio::spawn(async move {
                    let req = hyper::Request::get(format!("http://{addr}/"))
                        .body(Empty::new())
                        .unwrap();
                    let res = sender.send_request(req).await.unwrap();
                    assert_eq!(res.status(), 200);
                    res.into_body().collect().await.unwrap().to_bytes()
                }));
            }
            for t in tasks {
                assert_eq!(&t.await.unwrap()[..], HELLO);
            }
        });
    }

    /// Keep-alive requests one at a time, then two pipelined in one write, on one connection:
    /// every one gets hyper's answer to `GET /`, byte for byte but the date.
    fn bare_http1(addr: SocketAddr) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let answer = super::bare::RESPONSE;
        for (requests, answers) in [(1, 1), (1, 1), (2, 2)] {
            let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(requests);
            s.write_all(&request).unwrap();
            let mut got = vec![0u8; answer.len() * answers];
            s.read_exact(&mut got).unwrap();
            assert_eq!(got, answer.repeat(answers));
        }
    }

    #[test]
    fn bare_servers_answer_keep_alive_and_pipelined_requests() {
        crate::watchdog(Duration::from_secs(120), || {
            for runtime in [Runtime::RawRing, Runtime::RawEpoll] {
                let (addr, _) = start_in_process(runtime, false);
                bare_http1(addr);
            }
        });
    }

    #[test]
    fn bare_answer_is_as_long_as_hypers() {
        crate::watchdog(Duration::from_secs(120), || {
            let (addr, _) = start_in_process(Runtime::Uring, false);
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut got = vec![0u8; super::bare::RESPONSE.len()];
            s.read_exact(&mut got).unwrap();
            let text = String::from_utf8(got).unwrap();
            assert!(
                text.ends_with(std::str::from_utf8(HELLO).unwrap()),
                "{text}"
            );
        });
    }

    #[test]
    fn uring_server_speaks_http1_and_h2c() {
        crate::watchdog(Duration::from_secs(120), || {
            let (addr, control) = start_in_process(Runtime::Uring, true);
            let before = server::read_counters(control.expect("a control address")).unwrap();
            http1(addr);
            http2(addr);
            let after = server::read_counters(control.unwrap()).unwrap();
            assert!(
                after.0 > before.0 && after.1 > before.1,
                "{before:?} {after:?}"
            );
        });
    }

    #[test]
    fn tokio_server_speaks_http1_and_h2c() {
        crate::watchdog(Duration::from_secs(120), || {
            let (addr, control) = start_in_process(Runtime::Tokio, true);
            assert_eq!(control, None, "only uring has driver counters");
            http1(addr);
            http2(addr);
        });
    }
}
