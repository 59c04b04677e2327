//! The echo load generator: N connections doing request/response ping-pong of M-byte messages,
//! every echoed byte checked, every request's latency recorded.
//!
//! It is not the runtime under test, so it uses whatever drives the most load from one core: a
//! single thread with level-triggered epoll over non-blocking sockets. Each connection has one
//! message in flight; its content depends on the connection and the request number, so a byte
//! echoed to the wrong connection, reordered or repeated is caught.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The echo server.
    pub addr: SocketAddr,
    /// Concurrent connections, each with one message in flight.
    pub conns: usize,
    /// Bytes per message.
    pub msg_len: usize,
    /// Load before the measured window (connections settle, caches warm).
    pub warmup: Duration,
    /// The measured window.
    pub measure: Duration,
    /// The server process, whose CPU time is read before and after the measured window.
    pub server_pid: Option<u32>,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests completed (and verified) in the measured window.
    pub requests: u64,
    /// The measured window's actual length.
    pub elapsed: Duration,
    /// Median request latency (send of the first byte to receipt of the last echoed byte).
    pub p50: Duration,
    /// 99th percentile request latency.
    pub p99: Duration,
    /// The server's user+system CPU time over the measured window, if its pid was given.
    pub server_cpu: Option<Duration>,
}

impl LoadResult {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Server CPU microseconds per request.
    pub fn cpu_us_per_req(&self) -> Option<f64> {
        self.server_cpu
            .map(|c| c.as_secs_f64() * 1e6 / self.requests.max(1) as f64)
    }
}

/// A process's user+system CPU time so far, from `/proc/PID/stat` (utime and stime, in clock
/// ticks; all its threads, including io_uring's io-wq workers).
pub fn process_cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces and parentheses: fields after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other(format!("unexpected /proc/{pid}/stat: {stat:?}")))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 (state) is index 0, so utime (field 14) is index 11, stime index 12.
    let parse = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other(format!("unexpected /proc/{pid}/stat: {stat:?}")))
    };
    let ticks = parse(11)? + parse(12)?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// The bytes a connection sends for one request: a window into a fixed pattern, starting at an
/// offset that depends on the connection and the request number.
struct Pattern {
    bytes: Vec<u8>,
    msg_len: usize,
}

/// Offsets cycle through this many windows (a prime, so neighbours in connection and request
/// number differ).
const PATTERN_PERIOD: usize = 251;

impl Pattern {
    fn new(msg_len: usize) -> Pattern {
        let bytes = (0..msg_len + PATTERN_PERIOD)
            .map(|i| (i.wrapping_mul(131) ^ (i >> 8)) as u8)
            .collect();
        Pattern { bytes, msg_len }
    }

    fn message(&self, conn: usize, seq: u64) -> &[u8] {
        let off = (conn.wrapping_mul(7) + seq as usize) % PATTERN_PERIOD;
        &self.bytes[off..off + self.msg_len]
    }
}

struct Conn {
    stream: TcpStream,
    seq: u64,
    /// Bytes of the current message written so far.
    written: usize,
    /// Bytes of the echo received so far.
    received: usize,
    sent_at: Instant,
    /// Whether EPOLLOUT is in the interest set (after a short write).
    want_write: bool,
}

/// Runs the load and returns what it measured.
///
/// # Errors
///
/// When a connection fails, the server closes one, an echoed byte differs from what was sent,
/// or nothing moves for 10 seconds.
pub fn run(spec: &LoadSpec) -> io::Result<LoadResult> {
    let pattern = Pattern::new(spec.msg_len);
    let mut conns = Vec::with_capacity(spec.conns);
    for _ in 0..spec.conns {
        let stream = TcpStream::connect(spec.addr)
            .map_err(|e| io::Error::new(e.kind(), format!("connect to {}: {e}", spec.addr)))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        conns.push(Conn {
            stream,
            seq: 0,
            written: 0,
            received: 0,
            sent_at: Instant::now(),
            want_write: false,
        });
    }
    // SAFETY: plain syscall creating a new fd; the result is checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ep` is a fresh fd nothing else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for (i, c) in conns.iter().enumerate() {
        epoll_ctl(&ep, libc::EPOLL_CTL_ADD, &c.stream, libc::EPOLLIN as u32, i)?;
    }
    let mut buf = vec![0u8; spec.msg_len];
    for (i, c) in conns.iter_mut().enumerate() {
        c.seq = i as u64;
        c.sent_at = Instant::now();
        send_more(&ep, c, i, &pattern)?;
    }

    let mut latencies: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let start = Instant::now();
    let window_start_at = start + spec.warmup;
    let window_end_at = window_start_at + spec.measure;
    let mut measuring = false;
    let mut window_start = start;
    let mut cpu_before = None;
    let mut requests = 0u64;
    let mut last_progress = Instant::now();
    loop {
        // SAFETY: `events` is a live buffer of `events.len()` entries the kernel fills.
        let n = unsafe {
            libc::epoll_wait(
                ep.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                1000,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let now = Instant::now();
        if n == 0 && now - last_progress > Duration::from_secs(10) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the echo server answered nothing for 10 s",
            ));
        }
        if !measuring && now >= window_start_at {
            measuring = true;
            window_start = now;
            requests = 0;
            latencies.clear();
            cpu_before = spec.server_pid.map(process_cpu_time).transpose()?;
        }
        if measuring && now >= window_end_at {
            let cpu_after = spec.server_pid.map(process_cpu_time).transpose()?;
            let elapsed = now - window_start;
            latencies.sort_unstable();
            let pct = |p: f64| -> Duration {
                if latencies.is_empty() {
                    return Duration::ZERO;
                }
                let i = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
                Duration::from_nanos(latencies[i] as u64)
            };
            return Ok(LoadResult {
                requests,
                elapsed,
                p50: pct(0.50),
                p99: pct(0.99),
                server_cpu: match (cpu_before, cpu_after) {
                    (Some(b), Some(a)) => Some(a.saturating_sub(b)),
                    _ => None,
                },
            });
        }
        for ev in &events[..n as usize] {
            let i = ev.u64 as usize;
            let c = &mut conns[i];
            if c.want_write && ev.events & libc::EPOLLOUT as u32 != 0 {
                send_more(&ep, c, i, &pattern)?;
            }
            if ev.events & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                continue;
            }
            let got = match c.stream.read(&mut buf[c.received..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the echo server closed connection {i}"),
                    ))
                }
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("connection {i}: {e}"))),
            };
            let expected = pattern.message(i, c.seq);
            let lo = c.received;
            c.received += got;
            if buf[lo..c.received] != expected[lo..c.received] {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "connection {i}, request {}: echoed bytes {lo}..{} differ from those sent",
                        c.seq, c.received
                    ),
                ));
            }
            if c.received < spec.msg_len {
                continue;
            }
            if c.written < spec.msg_len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("connection {i}: more bytes echoed than sent"),
                ));
            }
            let done = Instant::now();
            if measuring {
                requests += 1;
                let ns = (done - c.sent_at).as_nanos().min(u32::MAX as u128) as u32;
                latencies.push(ns);
            }
            last_progress = done;
            c.seq += 1;
            c.received = 0;
            c.written = 0;
            c.sent_at = done;
            send_more(&ep, c, i, &pattern)?;
        }
    }
}

/// Writes what is left of the connection's current message; after a short write, asks epoll to
/// report when the socket takes more.
fn send_more(ep: &OwnedFd, c: &mut Conn, i: usize, pattern: &Pattern) -> io::Result<()> {
    let msg = pattern.message(i, c.seq);
    while c.written < msg.len() {
        match c.stream.write(&msg[c.written..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("connection {i}: {e}"))),
        }
    }
    let want_write = c.written < msg.len();
    if want_write != c.want_write {
        c.want_write = want_write;
        let mut flags = libc::EPOLLIN as u32;
        if want_write {
            flags |= libc::EPOLLOUT as u32;
        }
        epoll_ctl(ep, libc::EPOLL_CTL_MOD, &c.stream, flags, i)?;
    }
    Ok(())
}

fn epoll_ctl(
    ep: &OwnedFd,
    op: i32,
    stream: &TcpStream,
    events: u32,
    token: usize,
) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events,
        u64: token as u64,
    };
    // SAFETY: both fds are live for the call; `ev` is a live struct the kernel reads.
    let r = unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, stream.as_raw_fd(), &mut ev) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
