//! A TCP proxy: every connection to `--listen` is relayed to `--upstream`, in its own task.
//!
//! ```text
//! cargo run --release --example proxy -- --listen 127.0.0.1:8080 --upstream 127.0.0.1:8000
//! ```
//!
//! Half-close is passed on both ways: when one side shuts down its write half (or closes), the
//! proxy shuts down its write half towards the other side and keeps relaying the other
//! direction. Errors are logged per connection on stderr and end only that connection. When
//! accept fails for lack of fds or memory, the accept loop pauses (10 ms doubling up to 100 ms)
//! instead of spinning, and picks up again once resources are freed. The first line of stdout
//! is the address it listens on.
//!
//! With `--threads N` (0: one per CPU) it runs a `uring::Pool` of N workers, each with its own
//! ring and its own `SO_REUSEPORT` listener on `--listen`, so the kernel spreads connections
//! between them; each connection is relayed on the worker that accepted it.
//!
//! Bytes are relayed with `uring::io::copy_bidirectional`, which splices bulk transfers
//! inside the kernel (`IORING_OP_SPLICE` through a pipe per direction) once a direction has
//! moved 256 KiB in full 64 KiB reads, and uses buffers for request/response traffic, where
//! splicing does not pay (see the guide's "Splice" section). With `--stats` it prints on stderr,
//! when it exits, the connections it relayed and the bytes moved through buffers and by splice.
//!
//! SIGINT (Ctrl-C) or SIGTERM stops it gracefully: it stops accepting (the listening socket is
//! shut down, so new connections are refused), lets the connections being relayed finish for up to
//! `--grace SECS` (default 5; a second signal cuts the wait short), then exits 0, dropping the
//! connections still open. With `--threads`, every worker listens for the signals and stops on
//! its own (`examples/support/shutdown.rs`).

#[path = "support/shutdown.rs"]
mod shutdown;

use shutdown::Connections;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uring::net::{AcceptBackoff, TcpListener, TcpStream};

const USAGE: &str = "usage: proxy --listen IP:PORT --upstream IP:PORT [--threads N] \
                     [--grace SECS] [--stats]   (defaults: 1 thread (0 = all CPUs), 5 s)";

/// Connections relayed (every worker), for `--stats`.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// With `--stats`: what was relayed, and how.
fn print_stats() {
    let s = uring::io::copy_stats();
    eprintln!(
        "proxy: stats: {} connections, {} bytes relayed: {} through buffers, {} by splice",
        CONNECTIONS.load(Ordering::Relaxed),
        s.buffered + s.spliced,
        s.buffered,
        s.spliced
    );
}

fn main() {
    let (listen, upstream, threads, grace, stats) = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("proxy: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    shutdown::serve(
        "proxy",
        listen,
        threads,
        grace,
        move |listener, connections| accept_loop(listener, upstream, connections),
    );
    if stats {
        print_stats();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, connections: Connections) {
    let mut incoming = listener.incoming();
    let mut backoff = AcceptBackoff::default();
    while let Some(accepted) = incoming.next().await {
        match accepted {
            Ok(client) => {
                backoff.on_success();
                connections.spawn(relay(client, upstream));
            }
            Err(e) => {
                eprintln!("proxy: accept: {e}");
                if let Err(e) = backoff.on_error(e).await {
                    eprintln!("proxy: the listener failed, stopping: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr) {
    let who = client
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "client".into());
    let server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("proxy: {who}: connect to upstream {upstream}: {e}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = uring::io::copy_bidirectional(&client, &server).await {
        eprintln!("proxy: {who}: {e}");
    }
}

type Args = (SocketAddr, SocketAddr, usize, Duration, bool);

fn parse_args() -> Result<Args, String> {
    let (mut listen, mut upstream, mut threads, mut stats) = (None, None, 1, false);
    let mut grace = shutdown::DEFAULT_GRACE;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<SocketAddr, String> {
            let v = args.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|e| format!("bad {name} {v:?}: {e}"))
        };
        match arg.as_str() {
            "--listen" => listen = Some(value("--listen")?),
            "--upstream" => upstream = Some(value("--upstream")?),
            "--threads" => {
                let v = args.next().ok_or("--threads needs a value")?;
                threads = v.parse().map_err(|e| format!("bad --threads {v:?}: {e}"))?;
            }
            "--grace" => {
                let v = args.next().ok_or("--grace needs a value")?;
                grace = shutdown::parse_grace(&v)?;
            }
            "--stats" => stats = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((
        listen.ok_or("--listen is required")?,
        upstream.ok_or("--upstream is required")?,
        threads,
        grace,
        stats,
    ))
}
