//! The load generators of the `http` suite, run as child processes: `wrk` for HTTP/1.1
//! keep-alive, `h2load` (nghttp2's) for HTTP/2 over cleartext with prior knowledge. Each run
//! opens its connections, loads the server for a window and exits; the server's CPU time is
//! read from `/proc/PID/stat` just before it starts and just after it exits.
//!
//! `wrk -d` takes whole seconds only: a run is started with a longer `-d` and sent `SIGINT`
//! when its window is over, on which wrk stops and reports as at the end of `-d` (its
//! `Requests/sec` divides by the time it actually ran).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Which load generator, with the options that differ between rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `wrk -t1 -cN --timeout 10s --latency`: HTTP/1.1, keep-alive, one request in flight per connection.
    Wrk,
    /// `h2load -cN -mM`: HTTP/2 (h2c, prior knowledge), M concurrent streams per connection.
    H2load {
        /// Concurrent streams per connection (`-m`).
        streams: usize,
    },
}

impl Tool {
    /// The program's name.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Wrk => "wrk",
            Tool::H2load { .. } => "h2load",
        }
    }

    /// The Debian package that has the program.
    pub fn package(self) -> &'static str {
        match self {
            Tool::Wrk => "wrk",
            Tool::H2load { .. } => "nghttp2-client",
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run {
    /// Responses received (2xx; a run with any other status or socket error is an error).
    pub requests: u64,
    /// Requests per second, as the tool reports it (responses over the time it ran).
    pub rate: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// The server's user+system CPU time from just before the tool started to just after it
    /// exited (so it includes accepting and closing the run's connections).
    pub server_cpu: Option<Duration>,
    /// The server's voluntary context switches over the same span (each one a sleep in
    /// `epoll_wait` or `io_uring_enter` with nothing to do).
    pub server_sleeps: Option<u64>,
}

impl Run {
    /// Server CPU microseconds per request.
    pub fn cpu_us_per_req(&self) -> Option<f64> {
        self.server_cpu
            .filter(|_| self.requests > 0)
            .map(|c| c.as_secs_f64() * 1e6 / self.requests as f64)
    }
}

/// Whether `program` runs here (see [`find_program`]).
pub fn available(program: &str) -> bool {
    find_program(program).is_some()
}

/// Where `program` is: the first executable file of that name in `$PATH`, or in the sbin
/// directories (nginx and haproxy live in /usr/sbin, which a non-root `$PATH` may lack).
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Makes sure the tools are installed: those missing are installed with `apt-get` when this
/// process is root and apt-get exists (one `apt-get update` first if the plain install fails).
/// Returns the tools that run, and prints a note for each that does not.
pub fn ensure(tools: &[Tool]) -> Vec<Tool> {
    let wanted: Vec<(&str, &str)> = tools.iter().map(|t| (t.program(), t.package())).collect();
    let ok = ensure_programs("http", "the load generators", &wanted);
    tools
        .iter()
        .zip(ok)
        .filter_map(|(&t, ok)| ok.then_some(t))
        .collect()
}

/// Makes sure each `(program, Debian package)` of `wanted` is installed, as [`ensure`] does for
/// the load generators: the missing packages are installed with `apt-get` when this process is
/// root. `suite` and `what` name them in the notes printed. Returns, per entry, whether the
/// program is there now.
pub fn ensure_programs(suite: &str, what: &str, wanted: &[(&str, &str)]) -> Vec<bool> {
    let mut packages: Vec<&str> = wanted
        .iter()
        .filter(|(program, _)| !available(program))
        .map(|&(_, package)| package)
        .collect();
    packages.dedup();
    if !packages.is_empty() {
        // SAFETY: geteuid only reads the process's credentials.
        let root = unsafe { libc::geteuid() } == 0;
        if root && available_apt() {
            println!(
                "\n{suite}: installing {} with apt-get ({what})",
                packages.join(" ")
            );
            let install = || {
                Command::new("apt-get")
                    .args(["install", "-y", "-qq"])
                    .args(&packages)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !install() {
                let _ = Command::new("apt-get")
                    .args(["update", "-qq"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                install();
            }
        }
    }
    wanted
        .iter()
        .map(|&(program, package)| {
            let ok = available(program);
            if !ok {
                println!(
                    "\n{suite}: note: `{program}` is not installed and could not be installed (as \
                     root: `apt-get install -y {package}`): its rows are skipped"
                );
            }
            ok
        })
        .collect()
}

fn available_apt() -> bool {
    Command::new("apt-get")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A process's voluntary context switches so far, all its threads (`/proc/PID/status`
/// counts the main thread only, so the threads' are summed).
pub fn voluntary_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for t in tasks {
        let status = std::fs::read_to_string(t.ok()?.path().join("status")).ok()?;
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
            .trim()
            .parse::<u64>()
            .ok()?;
    }
    Some(total)
}

/// Loads `addr` with `tool` over `conns` connections for `window`, measuring the server `pid`
/// (its CPU time and sleeps). `scratch` is a directory for h2load's per-request log.
///
/// # Errors
///
/// When the tool cannot be started, fails, reports errors or non-2xx responses, or prints
/// something this parser does not know.
pub fn run(
    tool: Tool,
    addr: SocketAddr,
    conns: usize,
    window: Duration,
    pid: Option<u32>,
    scratch: &Path,
) -> io::Result<Run> {
    run_path(tool, addr, "/", conns, window, pid, scratch)
}

/// [`run`] for the URL path `path` (which starts with `/`) instead of `/`.
///
/// # Errors
///
/// As [`run`].
pub fn run_path(
    tool: Tool,
    addr: SocketAddr,
    path: &str,
    conns: usize,
    window: Duration,
    pid: Option<u32>,
    scratch: &Path,
) -> io::Result<Run> {
    let url = format!("http://{addr}{path}");
    let log = scratch.join(format!("h2load-{}.log", std::process::id()));
    let mut cmd = Command::new(tool.program());
    match tool {
        Tool::Wrk => {
            // Whole seconds only, and a margin: the run is stopped by SIGINT at `window`.
            let secs = window.as_secs() + 2;
            // A request slower than wrk's default 2 s timeout (a stalled shared machine) would
            // count as a socket error, which fails the run.
            cmd.args([
                "-t1",
                &format!("-c{conns}"),
                &format!("-d{secs}"),
                "--timeout",
                "10s",
                "--latency",
            ]);
        }
        Tool::H2load { streams } => {
            cmd.args([
                "-t1",
                &format!("-c{conns}"),
                &format!("-m{streams}"),
                &format!("-D{}ms", window.as_millis().max(1)),
                &format!("--log-file={}", log.display()),
            ]);
        }
    }
    cmd.arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cpu0 = pid.and_then(|p| crate::bench::echo::loadgen::process_cpu_time(p).ok());
    let sleeps0 = pid.and_then(voluntary_switches);
    let child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("start {}: {e}", tool.program())))?;
    let started = Instant::now();
    if tool == Tool::Wrk {
        let left = window.saturating_sub(started.elapsed());
        std::thread::sleep(left);
        // SAFETY: kill only sends a signal, to our own child (not yet waited for, so its pid
        // is not reused).
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    }
    let out = child.wait_with_output()?;
    let cpu1 = pid.and_then(|p| crate::bench::echo::loadgen::process_cpu_time(p).ok());
    let sleeps1 = pid.and_then(voluntary_switches);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} exited with {}: {}{}",
            tool.program(),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let mut run = match tool {
        Tool::Wrk => parse_wrk(&stdout)?,
        Tool::H2load { .. } => {
            let text = std::fs::read_to_string(&log);
            let _ = std::fs::remove_file(&log);
            let mut run = parse_h2load(&stdout)?;
            let (p50, p99) = h2load_log_percentiles(&text?)?;
            run.p50_us = p50;
            run.p99_us = p99;
            run
        }
    };
    run.server_cpu = cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a));
    run.server_sleeps = sleeps0.zip(sleeps1).map(|(a, b)| b.saturating_sub(a));
    Ok(run)
}

/// A directory for the tools' scratch files: /dev/shm when it exists (a per-request log in
/// memory, not on disk), else the temp dir.
pub fn scratch_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// A duration as wrk and h2load print them (`242.00us`, `1.91ms`, `2.10s`, `1.00m`), in µs.
pub fn parse_duration_us(s: &str) -> Option<f64> {
    let s = s.trim().trim_end_matches(',');
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(n * scale)
}

fn bad(tool: &str, what: &str, text: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{tool}: {what} in its output:\n{text}"),
    )
}

/// Parses `wrk --latency`'s report. Socket errors or non-2xx/3xx responses are an error (the
/// server under test must answer every request).
///
/// # Errors
///
/// When a figure is missing or the run saw errors.
pub fn parse_wrk(text: &str) -> io::Result<Run> {
    let mut requests = None;
    let mut rate = None;
    let mut p50 = None;
    let mut p99 = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", ..] => requests = n.parse::<u64>().ok(),
            ["Requests/sec:", r] => rate = r.parse::<f64>().ok(),
            ["50%", d] => p50 = parse_duration_us(d),
            ["99%", d] => p99 = parse_duration_us(d),
            ["Socket", "errors:", ..] | ["Non-2xx", ..] => {
                return Err(bad("wrk", "errors", text));
            }
            _ => {}
        }
    }
    Ok(Run {
        requests: requests.ok_or_else(|| bad("wrk", "no request count", text))?,
        rate: rate.ok_or_else(|| bad("wrk", "no Requests/sec", text))?,
        p50_us: p50.ok_or_else(|| bad("wrk", "no 50% latency", text))?,
        p99_us: p99.ok_or_else(|| bad("wrk", "no 99% latency", text))?,
        server_cpu: None,
        server_sleeps: None,
    })
}

/// Parses h2load's report (requests/s and the request counts; latency percentiles come from its
/// log, [`h2load_log_percentiles`]). Failed, errored or timed-out requests, or non-2xx
/// statuses, are an error.
///
/// # Errors
///
/// When a figure is missing or the run saw errors.
pub fn parse_h2load(text: &str) -> io::Result<Run> {
    let mut requests = None;
    let mut rate = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "finished in 2.00s, 188260.00 req/s, 7.54MB/s"
            rate = rest
                .split(", ")
                .find_map(|p| p.strip_suffix(" req/s"))
                .and_then(|r| r.trim().parse::<f64>().ok());
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // "requests: 376520 total, 377020 started, 376520 done, 376520 succeeded, 0 failed,
            // 0 errored, 0 timeout"
            let count = |what: &str| {
                rest.split(", ")
                    .find_map(|p| p.strip_suffix(what))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            };
            let failed = count(" failed").unwrap_or(0)
                + count(" errored").unwrap_or(0)
                + count(" timeout").unwrap_or(0);
            if failed > 0 {
                return Err(bad("h2load", "failed requests", text));
            }
            requests = count(" succeeded");
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            let non_2xx = rest
                .split(", ")
                .filter(|p| !p.ends_with(" 2xx"))
                .any(|p| p.split_whitespace().next() != Some("0"));
            if non_2xx {
                return Err(bad("h2load", "non-2xx responses", text));
            }
        }
    }
    Ok(Run {
        requests: requests.ok_or_else(|| bad("h2load", "no request counts", text))?,
        rate: rate.ok_or_else(|| bad("h2load", "no req/s", text))?,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        server_cpu: None,
        server_sleeps: None,
    })
}

/// The median and 99th percentile, µs, of the third column (µs from a request's start to the
/// end of its response) of h2load's `--log-file`.
///
/// # Errors
///
/// When the log has no request in it or a line does not parse.
pub fn h2load_log_percentiles(log: &str) -> io::Result<(f64, f64)> {
    let mut us: Vec<f64> = Vec::with_capacity(log.len() / 24);
    for line in log.lines().filter(|l| !l.is_empty()) {
        let v = line
            .split('\t')
            .nth(2)
            .and_then(|f| f.trim().parse::<f64>().ok())
            .ok_or_else(|| bad("h2load", "an unexpected log line", line))?;
        us.push(v);
    }
    if us.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "h2load: its log has no request",
        ));
    }
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
    Ok((at(0.50), at(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 5s test @ http://127.0.0.1:40255/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.91ms    4.12ms  48.59ms   93.59%
    Req/Sec    58.71k    12.66k   82.68k    70.00%
  Latency Distribution
     50%  320.00us
     75%    2.13ms
     90%    4.46ms
     99%   22.04ms
  292764 requests in 695.83ms, 25.97MB read
Requests/sec:  58313.04
Transfer/sec:      5.17MB
";

    const H2LOAD: &str = "starting benchmark...
finished in 2.00s, 188260.00 req/s, 7.54MB/s
requests: 376520 total, 377020 started, 376520 done, 376520 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 376520 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 15.09MB (15820040) total, 2.52MB (2639090) headers (space savings 88.12%), 6.10MB (6400840) data
";

    #[test]
    fn finds_programs_in_path_and_sbin() {
        let sh = find_program("sh").expect("a shell");
        assert!(sh.ends_with("sh"), "{}", sh.display());
        assert!(available("sh"));
        assert_eq!(find_program("no-such-program-of-uring"), None);
        assert!(!available("no-such-program-of-uring"));
    }

    #[test]
    fn parses_wrk() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 292764);
        assert_eq!(r.rate, 58313.04);
        assert_eq!(r.p50_us, 320.0);
        assert!((r.p99_us - 22040.0).abs() < 1e-6);
    }

    #[test]
    fn wrk_errors_are_errors() {
        let text = WRK.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse_wrk(&text).is_err());
        let text = WRK.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 12\nRequests/sec",
        );
        assert!(parse_wrk(&text).is_err());
    }

    #[test]
    fn parses_h2load() {
        let r = parse_h2load(H2LOAD).unwrap();
        assert_eq!(r.requests, 376520);
        assert_eq!(r.rate, 188260.0);
        assert!(parse_h2load(&H2LOAD.replace("0 failed", "2 failed")).is_err());
        assert!(parse_h2load(&H2LOAD.replace("0 4xx", "7 4xx")).is_err());
    }

    #[test]
    fn parses_durations_and_log_percentiles() {
        assert_eq!(parse_duration_us("242.00us"), Some(242.0));
        assert_eq!(parse_duration_us("1.50ms"), Some(1500.0));
        assert_eq!(parse_duration_us("2.10s"), Some(2.1e6));
        assert_eq!(parse_duration_us("1.00m"), Some(60e6));
        assert_eq!(parse_duration_us("3 parsecs"), None);
        let log: String = (1..=100)
            .map(|i| format!("1796135533840773\t200\t{i}\n"))
            .collect();
        assert_eq!(h2load_log_percentiles(&log).unwrap(), (51.0, 100.0));
        assert!(h2load_log_percentiles("").is_err());
    }
}
