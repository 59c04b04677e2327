//! Where zero-copy sends and `send_file` pay: the sender's CPU per GiB and its throughput for
//! `write_all` against `write_all_zc` (plain and registered buffers) at 4 KiB, 64 KiB and 1 MiB
//! writes, and `send_file` against a `read_at` + `write_all` loop, over loopback TCP to a sink
//! in a child process (a blocking std reader, so its CPU is not the sender's). Also asks the
//! kernel, with a raw `SEND_ZC` and `IORING_SEND_ZC_REPORT_USAGE`, whether it really sent from
//! the user pages or copied them (loopback copies: the kernel must not let a local receiver
//! pin the sender's pages for as long as it does not read).
//!
//! ```text
//! cargo run --release -p uring-tests --bin zerocopy-bench -- [--mib N] [--rounds R]
//! ```
//!
//! Each configuration runs `R` times (default 5) in alternating order (reversed every round);
//! the table gives medians. CPU is the sending process's user+system time (its io-wq workers
//! included), which on loopback also carries the receive side's softirq work that runs in the
//! sender's context.

use std::io::{Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use uring::buf::FixedBufPool;
use uring::net::TcpStream;

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The sink's time on CPU (it is single-threaded): `/proc/PID/schedstat`'s first field, ns.
fn sink_cpu(pid: u32) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
    Duration::from_nanos(
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

/// The child: accepts connections and reads each to its end, forever.
fn sink(listener: StdListener) -> ! {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let (mut s, _) = listener.accept().unwrap();
        while s.read(&mut buf).unwrap_or(0) > 0 {}
        // Tell the sender every byte arrived.
        let _ = s.write_all(b"k");
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Write(usize),
    WriteZc(usize),
    WriteZcFixed(usize),
    SendFile,
    ReadWrite(usize),
}

impl Mode {
    fn name(&self) -> String {
        let kib = |n: usize| {
            if n >= 1 << 20 {
                format!("{} MiB", n >> 20)
            } else {
                format!("{} KiB", n >> 10)
            }
        };
        match self {
            Mode::Write(n) => format!("write_all, {} writes", kib(*n)),
            Mode::WriteZc(n) => format!("write_all_zc (Vec), {} writes", kib(*n)),
            Mode::WriteZcFixed(n) => format!("write_all_zc (FixedBuf), {} writes", kib(*n)),
            Mode::SendFile => "send_file (splice through a pipe)".to_string(),
            Mode::ReadWrite(n) => format!("read_at + write_all, {} buffer", kib(*n)),
        }
    }
}

/// Sends `total` bytes in `mode` to the sink; the wall time until the sink had them all, and the
/// sender's CPU time.
async fn one(
    addr: std::net::SocketAddr,
    mode: Mode,
    total: usize,
    file: &uring::fs::File,
    sink_pid: u32,
) -> (Duration, Duration, Duration) {
    let s = TcpStream::connect(addr).await.unwrap();
    let cpu0 = cpu_time();
    let sink0 = sink_cpu(sink_pid);
    let t0 = Instant::now();
    match mode {
        Mode::Write(n) | Mode::WriteZc(n) => {
            let mut buf = vec![0x5au8; n];
            let mut sent = 0;
            while sent < total {
                let (res, b) = if matches!(mode, Mode::Write(_)) {
                    s.write_all(buf).await
                } else {
                    s.write_all_zc(buf).await
                };
                res.unwrap();
                buf = b;
                sent += n;
            }
        }
        Mode::WriteZcFixed(n) => {
            let pool = FixedBufPool::new(1, n).unwrap();
            let mut buf = pool.get().unwrap();
            buf.set_len(n);
            let mut sent = 0;
            while sent < total {
                let (res, b) = s.write_all_zc(buf).await;
                res.unwrap();
                buf = b;
                sent += n;
            }
        }
        Mode::SendFile => {
            assert_eq!(
                s.send_file(file, 0, total as u64).await.unwrap(),
                total as u64
            );
        }
        Mode::ReadWrite(n) => {
            let mut buf = Vec::with_capacity(n);
            let mut off = 0;
            while off < total {
                buf.clear();
                let (res, b) = file.read_at(buf, off as u64).await;
                let got = res.unwrap();
                assert!(got > 0);
                let (res, b) = s.write_all(b).await;
                res.unwrap();
                buf = b;
                off += got;
            }
        }
    }
    s.shutdown_write().await.unwrap();
    let (res, _) = s.read(Vec::with_capacity(1)).await;
    assert_eq!(res.unwrap(), 1, "the sink confirms");
    (
        t0.elapsed(),
        cpu_time() - cpu0,
        sink_cpu(sink_pid).saturating_sub(sink0),
    )
}

/// A raw `SEND_ZC` of 1 MiB with `IORING_SEND_ZC_REPORT_USAGE` on a loopback connection:
/// whether the kernel reports it copied the data.
fn kernel_copied_on_loopback(addr: std::net::SocketAddr) -> String {
    use io_uring::{opcode, types, IoUring};
    // IORING_SEND_ZC_REPORT_USAGE (Linux 6.2) and IORING_NOTIF_USAGE_ZC_COPIED.
    const REPORT_USAGE: u16 = 1 << 3;
    const COPIED: i32 = 1 << 31;
    let s = StdStream::connect(addr).unwrap();
    let buf = vec![1u8; 1 << 20];
    let mut ring = IoUring::new(8).unwrap();
    let sqe = opcode::SendZc::new(types::Fd(s.as_raw_fd()), buf.as_ptr(), buf.len() as u32)
        .zc_flags(REPORT_USAGE)
        .flags(libc::MSG_WAITALL)
        .build();
    // SAFETY: the buffer and the socket outlive the op: we wait for its notification below.
    unsafe { ring.submission().push(&sqe).unwrap() };
    let mut result = None;
    loop {
        ring.submit_and_wait(1).unwrap();
        let cqes: Vec<_> = ring.completion().collect();
        for c in cqes {
            if io_uring::cqueue::notif(c.flags()) {
                if !matches!(result, Some(r) if r > 0) {
                    return format!("the send failed ({result:?}): no answer");
                }
                let copied = c.result() & COPIED != 0;
                return format!(
                    "first completion {:?}; notification says {}",
                    result,
                    if copied {
                        "COPIED (the kernel copied the data: no zero-copy on loopback)"
                    } else {
                        "sent from the user pages"
                    }
                );
            }
            result = Some(c.result());
            if !io_uring::cqueue::more(c.flags()) {
                return format!("a single completion {}: no notification", c.result());
            }
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse().unwrap())
            .unwrap_or(default)
    };
    if args.get(1).map(String::as_str) == Some("--sink") {
        let fd: i32 = args[2].parse().unwrap();
        // SAFETY: the parent passed us this listening socket's fd.
        let listener = unsafe { <StdListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        sink(listener);
    }
    let mib = arg("--mib", 256);
    let rounds = arg("--rounds", 5);
    let total = mib << 20;

    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    // Keep the fd across exec (std sets CLOEXEC).
    // SAFETY: fcntl on our own fd.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--sink", &fd.to_string()])
        .spawn()
        .unwrap();
    drop(listener);
    let sink_pid = child.id();

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "zero-copy sends and send_file over loopback TCP: {mib} MiB per run, {rounds} rounds, \
         load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("kernel check: {}", kernel_copied_on_loopback(addr));

    let modes = [
        Mode::Write(4 << 10),
        Mode::WriteZc(4 << 10),
        Mode::Write(64 << 10),
        Mode::WriteZc(64 << 10),
        Mode::WriteZcFixed(64 << 10),
        Mode::Write(1 << 20),
        Mode::WriteZc(1 << 20),
        Mode::WriteZcFixed(1 << 20),
        Mode::ReadWrite(1 << 20),
        Mode::SendFile,
    ];
    let results = uring::run(async move {
        let path = std::env::temp_dir().join(format!("zerocopy-bench-{}", std::process::id()));
        std::fs::write(&path, vec![0xa5u8; total]).unwrap();
        let file = uring::fs::File::open(&path).await.unwrap();
        // Warm the page cache and the connection path.
        one(addr, Mode::ReadWrite(1 << 20), total, &file, sink_pid).await;
        let mut results: Vec<[Vec<f64>; 3]> = vec![Default::default(); modes.len()];
        for round in 0..rounds {
            let mut order: Vec<usize> = (0..modes.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let (wall, cpu, sink) = one(addr, modes[i], total, &file, sink_pid).await;
                let gib = total as f64 / (1u64 << 30) as f64;
                results[i][0].push(cpu.as_secs_f64() * 1000.0 / gib);
                results[i][1].push(sink.as_secs_f64() * 1000.0 / gib);
                results[i][2].push(gib / wall.as_secs_f64());
            }
        }
        let _ = std::fs::remove_file(&path);
        results
    });
    println!();
    println!("| mode | sender CPU ms/GiB | receiver CPU ms/GiB | GiB/s |");
    println!("|---|---|---|---|");
    for (m, [cpu, sink, rate]) in modes.iter().zip(results) {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} |",
            m.name(),
            median(cpu),
            median(sink),
            median(rate)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
