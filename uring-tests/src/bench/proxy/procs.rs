//! The processes of the `proxy` suite: the nginx upstream and the proxies under test, each a
//! child process started on a chosen CPU and stopped when dropped, and the measurements taken
//! of them (CPU time, a curl fetch).

use super::config;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a program gets to start listening, or to exit once asked to.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A process's user+system CPU time so far, all its threads, the exited ones included: its
/// CPU-time clock (`clock_getcpuclockid`), which counts what `/proc/PID/stat`'s utime+stime
/// count, in nanoseconds rather than 10 ms ticks (a bulk transfer through a splicing proxy
/// costs only tens of ms). Falls back to `/proc/PID/stat` where the clock is refused.
///
/// # Errors
///
/// When the process is gone.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t into the variable we own.
    let r = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    if r == 0 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into the variable we own.
        if unsafe { libc::clock_gettime(clock, &mut ts) } == 0 {
            return Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
        }
    }
    crate::bench::echo::loadgen::process_cpu_time(pid)
}

/// A free TCP port on 127.0.0.1 for a program that needs one in its configuration (bound and
/// released: another process could take it in between, which on this machine is unlikely and
/// shows as a failure to start).
///
/// # Errors
///
/// When no port can be bound.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where a proxy runs: its CPU, and the CPU of the rest (the suite's own thread, nginx, the
/// load generators). `None`: any (a machine with one CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpus {
    /// The proxy's CPU.
    pub proxy: Option<usize>,
    /// Everything else's.
    pub rest: Option<usize>,
}

/// Spawns `cmd` on `cpus.proxy`: the calling thread is pinned to it for the spawn (the child
/// inherits the calling thread's affinity, before it runs any code of its own, so even the
/// threads it starts at once are on that CPU), then pinned back to `cpus.rest`.
///
/// # Errors
///
/// When the program cannot be started.
pub fn spawn_on(cmd: &mut Command, cpus: Cpus) -> io::Result<Child> {
    if let Some(c) = cpus.proxy {
        crate::bench::echo::pin_current_thread(c);
    }
    let child = cmd.spawn();
    if let (Some(_), Some(h)) = (cpus.proxy, cpus.rest) {
        crate::bench::echo::pin_current_thread(h);
    }
    child.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("start {}: {e}", cmd.get_program().to_string_lossy()),
        )
    })
}

/// Waits until `addr` accepts a TCP connection, while `child` is running.
fn wait_listening(child: &mut Child, addr: SocketAddr, what: &str, log: &Path) -> io::Result<()> {
    let start = Instant::now();
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "{what} exited with {status} before listening on {addr}: {}",
                tail(log)
            )));
        }
        if start.elapsed() > START_TIMEOUT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} did not listen on {addr} in time: {}", tail(log)),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last lines of the log file at `path`, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(10);
    format!("({}:) {}", path.display(), lines[start..].join(" | "))
}

/// Stops `child`: SIGTERM, then SIGKILL if it has not exited in [`START_TIMEOUT`] (nginx's
/// master stops its worker on SIGTERM; a SIGKILL would leave the worker running).
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // SAFETY: kill only sends a signal, to our own child (not yet waited for, so its pid is
    // not reused).
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < START_TIMEOUT {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A directory of the suite's files (configurations, logs, the files nginx serves), removed
/// when dropped.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Makes a fresh directory under `parent` (readable by all: nginx's worker runs as
    /// `nobody` when the master is root).
    ///
    /// # Errors
    ///
    /// When it cannot be made.
    pub fn new(parent: &Path) -> io::Result<Scratch> {
        use std::os::unix::fs::PermissionsExt;
        // A run that was killed leaves its directory (with a file of up to 1 GiB, in memory
        // when `parent` is /dev/shm): remove those whose process is gone.
        if let Ok(entries) = std::fs::read_dir(parent) {
            for e in entries.flatten() {
                let name = e.file_name();
                let pid = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("uring-proxy-bench-"))
                    .and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let path = parent.join(format!("uring-proxy-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("www"))?;
        for d in [&path, &path.join("www")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(Scratch { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the files nginx serves: [`config::SMALL_PATH`] (1 KiB) and
    /// [`config::LARGE_PATH`] (`large` bytes), of a byte pattern that is not all zeros.
    ///
    /// # Errors
    ///
    /// When they cannot be written.
    pub fn write_files(&self, large: u64) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let www = self.path.join("www");
        let chunk: Vec<u8> = (0..1usize << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let small = www.join(&config::SMALL_PATH[1..]);
        std::fs::write(&small, &chunk[..config::SMALL_BYTES])?;
        let big = www.join(&config::LARGE_PATH[1..]);
        let mut f = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&big)?);
        let mut left = large;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        for p in [small, big] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The nginx upstream, stopped when dropped.
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Nginx {
    /// Writes `nginx.conf` into `dir` and starts `nginx` (the program at `exe`) on it, on the
    /// calling thread's CPU, and waits until it listens.
    ///
    /// # Errors
    ///
    /// When it does not start or listen.
    pub fn start(exe: &Path, dir: &Path) -> io::Result<Nginx> {
        let port = free_port()?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config::nginx_conf(dir, port))?;
        let log = dir.join("nginx-error.log");
        let mut child = Command::new(exe)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("start {}: {e}", exe.display())))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(e) = wait_listening(&mut child, addr, "nginx", &log) {
            stop(&mut child);
            return Err(e);
        }
        Ok(Nginx { child, addr })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A proxy under test in its own process, stopped when dropped.
pub struct ProxyProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ProxyProcess {
    /// Starts a proxy that takes `--listen 127.0.0.1:0 --upstream ADDR` and prints the address
    /// it listens on as its first line of stdout (`examples/proxy`, `tokio-proxy`), on
    /// `cpus.proxy`;
    /// its stderr goes to `log`. The rest of its stdout is read and dropped by a thread, so it
    /// never blocks on a full pipe.
    ///
    /// # Errors
    ///
    /// When it does not start or print its address.
    pub fn start_printing(
        exe: &Path,
        upstream: SocketAddr,
        cpus: Cpus,
        log: &Path,
    ) -> io::Result<ProxyProcess> {
        let mut cmd = Command::new(exe);
        cmd.args(["--listen", "127.0.0.1:0", "--upstream"])
            .arg(upstream.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?);
        let mut child = spawn_on(&mut cmd, cpus)?;
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let addr = out
            .read_line(&mut line)
            .ok()
            .and_then(|_| line.trim().parse().ok());
        let Some(addr) = addr else {
            stop(&mut child);
            return Err(io::Error::other(format!(
                "{} did not print its address (got {line:?}): {}",
                exe.display(),
                tail(log)
            )));
        };
        std::thread::spawn(move || {
            let mut sink = [0u8; 4096];
            while matches!(out.read(&mut sink), Ok(n) if n > 0) {}
        });
        Ok(ProxyProcess { child, addr })
    }

    /// Writes an haproxy configuration (see [`config::haproxy_cfg`]) into `dir` and starts
    /// `haproxy -db` (in the foreground) on it, on `cpus.proxy`, and waits until it listens. Its
    /// output goes to `dir/NAME.log`.
    ///
    /// # Errors
    ///
    /// When it does not start or listen.
    pub fn start_haproxy(
        exe: &Path,
        dir: &Path,
        name: &str,
        upstream: SocketAddr,
        maxconn: u64,
        splice: bool,
        cpus: Cpus,
    ) -> io::Result<ProxyProcess> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let cfg = dir.join(format!("{name}.cfg"));
        std::fs::write(&cfg, config::haproxy_cfg(addr, upstream, maxconn, splice))?;
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(exe);
        cmd.arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::options().append(true).open(&log)?);
        let mut child = spawn_on(&mut cmd, cpus)?;
        if let Err(e) = wait_listening(&mut child, addr, name, &log) {
            stop(&mut child);
            return Err(e);
        }
        Ok(ProxyProcess { child, addr })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running (a proxy that died in a window fails the window).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Fetches `http://addr{path}` with curl (the program at `exe`) into /dev/null and checks it
/// got `expected` bytes with status 200.
///
/// # Errors
///
/// When curl fails, or the fetch failed or came up short.
pub fn curl_fetch(
    exe: &Path,
    addr: SocketAddr,
    path: &str,
    expected: u64,
) -> io::Result<config::Fetch> {
    let out = Command::new(exe)
        .args(["-s", "-S", "-o", "/dev/null", "--max-time", "300", "-w"])
        .arg(config::CURL_WRITE_OUT)
        .arg(format!("http://{addr}{path}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("start {}: {e}", exe.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "curl exited with {}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    config::parse_curl(&stdout, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_a_process_in_ns_as_proc_stat_does() {
        // Burn 30 ms of CPU on a thread that then exits: the process clock still counts it.
        let me = std::process::id();
        let before = cpu_time(me).unwrap();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut x = 0u64;
            while cpu_time(me).unwrap() < before + Duration::from_millis(30)
                && start.elapsed() < Duration::from_secs(60)
            {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
        })
        .join()
        .unwrap();
        let a = cpu_time(me).unwrap();
        assert!(
            a >= before + Duration::from_millis(30),
            "{before:?} then {a:?}"
        );
        let ticks = crate::bench::echo::loadgen::process_cpu_time(me).unwrap();
        let b = cpu_time(me).unwrap();
        assert!(b >= a, "{a:?} then {b:?}");
        // /proc/PID/stat rounds to ticks (10 ms); the clock is never behind it by a tick.
        assert!(b + Duration::from_millis(20) >= ticks, "{b:?} vs {ticks:?}");
        // Not a process (pids are below pid_max): an error, not a panic or zero.
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(cpu_time(pid_max).is_err());
    }

    #[test]
    fn scratch_holds_the_served_files_and_goes_away() {
        let s = Scratch::new(&std::env::temp_dir()).unwrap();
        let dir = s.path().to_path_buf();
        s.write_files(3 << 20 | 17).unwrap();
        let www = dir.join("www");
        let small = std::fs::read(www.join(&config::SMALL_PATH[1..])).unwrap();
        assert_eq!(small.len(), config::SMALL_BYTES);
        let large = std::fs::metadata(www.join(&config::LARGE_PATH[1..])).unwrap();
        assert_eq!(large.len(), 3 << 20 | 17);
        assert!(small.iter().any(|&b| b != 0));
        drop(s);
        assert!(!dir.exists());
    }
}
