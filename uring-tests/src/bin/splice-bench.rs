//! When does splice pay in a proxy? Measures a one-connection-at-a-time uring proxy
//! (`copy_bidirectional`) three ways: `buffers` (streams wrapped so copy cannot splice),
//! `splice` (every chunk spliced: `uring::io::splice` in a loop each way) and `auto` (plain
//! `copy_bidirectional`, with the rule it implements), on two workloads:
//!
//! - bulk: an upstream sends `--mib` MiB to the client through the proxy (one connection);
//! - rr: `--reqs` 1 KiB requests, each answered by a response of each of `--sizes` bytes
//!   (default 1024), over one connection.
//!
//! The proxy runs in a child process pinned to CPU 1 (its io-wq workers inherit that), the
//! client and upstream (plain blocking std sockets) on CPU 0. Proxy CPU is the child's
//! `getrusage(RUSAGE_SELF)` user+system time over the workload, io-wq workers included. Modes
//! alternate in each round (the order reverses every round); medians are printed.
//!
//! ```text
//! cargo run --release -p uring-tests --bin splice-bench -- [--mib 1024] [--reqs 20000]
//!     [--rounds 5] [--only bulk|rr] [--sizes 1024,65536,...]
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;
use uring::buf::{IoBuf, IoBufMut};
use uring::io::{AsyncReadOwned, AsyncWriteOwned};
use uring::BufResult;

const MODES: [&str; 3] = ["buffers", "splice", "auto"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--proxy") {
        proxy(&args[1], args[2].parse().expect("upstream address"));
        return;
    }
    let mut mib = 1024usize;
    let mut reqs = 20_000usize;
    let mut rounds = 5usize;
    let mut only = None;
    let mut sizes = vec![1024usize];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || it.next().expect("a value").clone();
        match a.as_str() {
            "--mib" => mib = v().parse().expect("--mib N"),
            "--reqs" => reqs = v().parse().expect("--reqs N"),
            "--rounds" => rounds = v().parse().expect("--rounds N"),
            "--only" => only = Some(v()),
            "--sizes" => {
                sizes = v()
                    .split(',')
                    .map(|x| x.parse().expect("--sizes BYTES,BYTES,..."))
                    .collect()
            }
            _ => {
                eprintln!("usage: splice-bench [--mib N] [--reqs N] [--rounds N] [--only bulk|rr]");
                std::process::exit(2);
            }
        }
    }
    pin(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    let mut works = vec![("bulk", 0usize)];
    works.extend(sizes.iter().map(|&s| ("rr", s)));
    for (work, size) in works {
        if only.as_deref().is_some_and(|o| o != work) {
            continue;
        }
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
        let mut wall: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
        for round in 0..rounds {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..MODES.len()).collect()
            } else {
                (0..MODES.len()).rev().collect()
            };
            for m in order {
                let (c, w) = if work == "bulk" {
                    bulk(MODES[m], mib)
                } else {
                    rr(MODES[m], reqs, size)
                };
                cpu[m].push(c);
                wall[m].push(w);
            }
        }
        if work == "bulk" {
            println!("\nbulk: {mib} MiB upstream -> client, {rounds} rounds (medians; all rounds)");
            println!("| mode | proxy CPU ms per GiB | GiB/s | CPU per GiB, every round |");
            println!("|---|---|---|---|");
            let gib = mib as f64 / 1024.0;
            for (m, name) in MODES.iter().enumerate() {
                let per: Vec<f64> = cpu[m].iter().map(|c| c * 1e3 / gib).collect();
                let rate: Vec<f64> = wall[m].iter().map(|w| gib / w).collect();
                println!(
                    "| {name} | {:.0} | {:.2} | {:?} |",
                    median(&per),
                    median(&rate),
                    per.iter().map(|x| x.round() as i64).collect::<Vec<_>>()
                );
            }
        } else {
            println!(
                "\nrr: {reqs} x (1 KiB request, {size} B response), one connection, {rounds} rounds"
            );
            println!("| mode | proxy CPU µs per request | round trip µs | CPU per request, every round |");
            println!("|---|---|---|---|");
            for (m, name) in MODES.iter().enumerate() {
                let per: Vec<f64> = cpu[m].iter().map(|c| c * 1e6 / reqs as f64).collect();
                let rt: Vec<f64> = wall[m].iter().map(|w| w * 1e6 / reqs as f64).collect();
                println!(
                    "| {name} | {:.1} | {:.1} | {:?} |",
                    median(&per),
                    median(&rt),
                    per.iter()
                        .map(|x| (x * 10.0).round() / 10.0)
                        .collect::<Vec<_>>()
                );
            }
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_setaffinity reads it during the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Starts the proxy child for `mode` in front of `upstream`; returns it, its address and its
/// stdout (which gives the CPU seconds at the end).
fn start_proxy(
    mode: &str,
    upstream: SocketAddr,
) -> (
    std::process::Child,
    SocketAddr,
    BufReader<std::process::ChildStdout>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--proxy", mode, &upstream.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the proxy child");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (child, line.trim().parse().expect("proxy address"), out)
}

fn finish_proxy(
    mut child: std::process::Child,
    mut out: BufReader<std::process::ChildStdout>,
) -> f64 {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    child.wait().unwrap();
    line.trim().parse().expect("proxy cpu seconds")
}

/// Upstream sends `mib` MiB, the client reads it all: (proxy CPU s, wall s).
fn bulk(mode: &str, mib: usize) -> (f64, f64) {
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        pin(0);
        let (mut s, _) = up.accept().unwrap();
        let chunk: Vec<u8> = (0..1 << 20)
            .map(|i: usize| (i * 7 + i / 4096) as u8)
            .collect();
        for _ in 0..mib {
            s.write_all(&chunk).unwrap();
        }
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let (child, addr, out) = start_proxy(mode, up_addr);
    let start = Instant::now();
    let mut c = TcpStream::connect(addr).unwrap();
    let mut buf = vec![0u8; 1 << 18];
    let mut total = 0usize;
    loop {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    c.shutdown(Shutdown::Write).unwrap();
    let wall = start.elapsed().as_secs_f64();
    assert_eq!(total, mib << 20, "{mode}: every byte arrived");
    drop(c);
    server.join().unwrap();
    (finish_proxy(child, out), wall)
}

/// `reqs` round trips, 1 KiB requests and `size`-byte responses: (proxy CPU s, wall s).
fn rr(mode: &str, reqs: usize, size: usize) -> (f64, f64) {
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        pin(0);
        let (mut s, _) = up.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 1024];
        let resp = vec![9u8; size];
        loop {
            if s.read_exact(&mut buf).is_err() {
                break;
            }
            s.write_all(&resp).unwrap();
        }
    });
    let (child, addr, out) = start_proxy(mode, up_addr);
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let req = [7u8; 1024];
    let mut resp = vec![0u8; size];
    // Warm-up round trip (connect, accept and the upstream connect are not measured).
    c.write_all(&req).unwrap();
    c.read_exact(&mut resp).unwrap();
    let start = Instant::now();
    for _ in 0..reqs {
        c.write_all(&req).unwrap();
        c.read_exact(&mut resp).unwrap();
    }
    let wall = start.elapsed().as_secs_f64();
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    drop(c);
    server.join().unwrap();
    (finish_proxy(child, out), wall)
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into our zeroed local struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The proxy child: one connection, relayed with `mode`; prints its address, then its CPU
/// seconds from accept to the end of the relay.
fn proxy(mode: &str, upstream: SocketAddr) {
    pin(1);
    let mode = mode.to_string();
    uring::run(async move {
        let l = uring::net::TcpListener::bind("127.0.0.1:0").unwrap();
        println!("{}", l.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        let (c, _) = l.accept().await.unwrap();
        let start = cpu_seconds();
        let s = uring::net::TcpStream::connect(upstream).await.unwrap();
        c.set_nodelay(true).unwrap();
        s.set_nodelay(true).unwrap();
        match mode.as_str() {
            "buffers" => {
                uring::io::copy_bidirectional(&NoSplice(&c), &NoSplice(&s))
                    .await
                    .unwrap();
            }
            "auto" => {
                uring::io::copy_bidirectional(&c, &s).await.unwrap();
            }
            "splice" => {
                futures_util::future::try_join(splice_all(&c, &s), splice_all(&s, &c))
                    .await
                    .unwrap();
            }
            other => panic!("unknown mode {other}"),
        }
        println!("{}", cpu_seconds() - start);
        if std::env::var_os("SPLICE_BENCH_STATS").is_some() {
            eprintln!("{mode}: {:?}", uring::io::copy_stats());
        }
    });
}

async fn splice_all(
    from: &uring::net::TcpStream,
    to: &uring::net::TcpStream,
) -> std::io::Result<()> {
    loop {
        if uring::io::splice(from, to, 1 << 20).await? == 0 {
            return to.shutdown_write().await;
        }
    }
}

/// A stream that hides its splice ends, so `copy` uses buffers.
struct NoSplice<'a>(&'a uring::net::TcpStream);

impl AsyncReadOwned for NoSplice<'_> {
    async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        self.0.read(buf).await
    }
}

impl AsyncWriteOwned for NoSplice<'_> {
    async fn write<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        self.0.write(buf).await
    }

    async fn shutdown_write(&self) -> std::io::Result<()> {
        self.0.shutdown_write().await
    }
}
