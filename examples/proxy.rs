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

use shutdown::{serve_until_stopped, Connections, ListenerControl, StopSignals};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
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
    if threads == 1 {
        let listener = TcpListener::bind(listen).unwrap_or_else(|e| fail(listen, e));
        let runtime = uring::Runtime::new().unwrap_or_else(|e| {
            eprintln!("proxy: {e}");
            std::process::exit(1);
        });
        let stop = stop_signals();
        println!("{}", listener.local_addr().expect("bound address"));
        let connections = Connections::default();
        let control = listener_control(&listener);
        runtime.block_on(serve_until_stopped(
            "proxy",
            control,
            accept_loop(listener, upstream, connections.clone()),
            stop,
            connections,
            grace,
        ));
        drop(runtime);
        if stats {
            print_stats();
        }
        return;
    }
    // The first listener fixes the port; every worker gets its own on it (see examples/echo.rs).
    let first = TcpListener::bind_reuseport(listen).unwrap_or_else(|e| fail(listen, e));
    let listen = first.local_addr().expect("bound address");
    let first = Mutex::new(Some(first.into_std().expect("a listener without ops")));
    let pool = uring::Pool::builder()
        .threads(threads)
        .build()
        .unwrap_or_else(|e| {
            eprintln!("proxy: {e}");
            std::process::exit(1);
        });
    // One pair of signal listeners per worker, all made before the address is printed.
    let stops = Mutex::new(
        (0..pool.threads())
            .map(|_| stop_signals())
            .collect::<Vec<_>>(),
    );
    println!("{listen}");
    pool.run_each(move |_worker| {
        let listener = match first.lock().unwrap().take() {
            Some(l) => TcpListener::from_std(l),
            None => TcpListener::bind_reuseport(listen),
        };
        let listener = listener.unwrap_or_else(|e| fail(listen, e));
        let stop = stops.lock().unwrap().pop().expect("one per worker");
        let connections = Connections::default();
        serve_until_stopped(
            "proxy",
            listener_control(&listener),
            accept_loop(listener, upstream, connections.clone()),
            stop,
            connections,
            grace,
        )
    });
    if stats {
        print_stats();
    }
}

fn listener_control(listener: &TcpListener) -> ListenerControl {
    ListenerControl::new(listener).unwrap_or_else(|e| {
        eprintln!("proxy: cannot duplicate the listener's fd: {e}");
        std::process::exit(1);
    })
}

fn stop_signals() -> StopSignals {
    StopSignals::new().unwrap_or_else(|e| {
        eprintln!("proxy: cannot listen for SIGINT and SIGTERM: {e}");
        std::process::exit(1);
    })
}

fn fail(addr: SocketAddr, e: std::io::Error) -> ! {
    eprintln!("proxy: cannot listen on {addr}: {e}");
    std::process::exit(1);
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
