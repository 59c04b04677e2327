//! An echo server: every byte a client sends comes back.
//!
//! ```text
//! cargo run --release --example echo -- --addr 127.0.0.1:7000 [--threads N]
//! ```
//!
//! It prints the address it listens on (useful with port 0) as the first line of stdout, then
//! serves each connection in its own task until the client closes it. With `--threads N` (0: one
//! per CPU) it runs a `uring::Pool` of N workers, each with its own ring and its own
//! `SO_REUSEPORT` listener on the address, so the kernel spreads connections between them.
//!
//! SIGINT (Ctrl-C) or SIGTERM stops it gracefully: it stops accepting (the listening socket is
//! shut down, so new connections are refused), lets the open connections finish for up to `--grace SECS`
//! (default 5; a second signal cuts the wait short), then exits 0, dropping the connections
//! still open. With `--threads`, every worker listens for the signals and stops on its own.
//! (`examples/support/shutdown.rs`; the listeners are made before the address is printed, so a
//! signal sent by whoever read it is never missed.)

#[path = "support/shutdown.rs"]
mod shutdown;

use shutdown::{serve_until_stopped, Connections, ListenerControl, StopSignals};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use uring::net::{AcceptBackoff, TcpListener, TcpStream};

const USAGE: &str = "usage: echo [--addr IP:PORT] [--threads N] [--grace SECS]   \
                     (defaults 127.0.0.1:7000, 1 (0 = all CPUs), 5 s)";

fn main() {
    let (addr, threads, grace) = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("echo: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if threads == 1 {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| fail(addr, e));
        let runtime = uring::Runtime::new().unwrap_or_else(|e| {
            eprintln!("echo: {e}");
            std::process::exit(1);
        });
        let stop = stop_signals();
        println!("{}", listener.local_addr().expect("bound address"));
        let connections = Connections::default();
        let control = listener_control(&listener);
        runtime.block_on(serve_until_stopped(
            "echo",
            control,
            accept_loop(listener, connections.clone()),
            stop,
            connections,
            grace,
        ));
        return;
    }
    // The first listener fixes the port (the address may say 0); every worker gets its own on
    // that port, the first worker this one (as a std listener: it crosses to its thread).
    let first = TcpListener::bind_reuseport(addr).unwrap_or_else(|e| fail(addr, e));
    let addr = first.local_addr().expect("bound address");
    let first = Mutex::new(Some(first.into_std().expect("a listener without ops")));
    let pool = uring::Pool::builder()
        .threads(threads)
        .build()
        .unwrap_or_else(|e| {
            eprintln!("echo: {e}");
            std::process::exit(1);
        });
    // One pair of signal listeners per worker, all made before the address is printed.
    let stops = Mutex::new(
        (0..pool.threads())
            .map(|_| stop_signals())
            .collect::<Vec<_>>(),
    );
    println!("{addr}");
    pool.run_each(move |_worker| {
        let listener = match first.lock().unwrap().take() {
            Some(l) => TcpListener::from_std(l),
            None => TcpListener::bind_reuseport(addr),
        };
        let listener = listener.unwrap_or_else(|e| fail(addr, e));
        let stop = stops.lock().unwrap().pop().expect("one per worker");
        let connections = Connections::default();
        serve_until_stopped(
            "echo",
            listener_control(&listener),
            accept_loop(listener, connections.clone()),
            stop,
            connections,
            grace,
        )
    });
}

fn listener_control(listener: &TcpListener) -> ListenerControl {
    ListenerControl::new(listener).unwrap_or_else(|e| {
        eprintln!("echo: cannot duplicate the listener's fd: {e}");
        std::process::exit(1);
    })
}

fn stop_signals() -> StopSignals {
    StopSignals::new().unwrap_or_else(|e| {
        eprintln!("echo: cannot listen for SIGINT and SIGTERM: {e}");
        std::process::exit(1);
    })
}

fn fail(addr: SocketAddr, e: std::io::Error) -> ! {
    eprintln!("echo: cannot listen on {addr}: {e}");
    std::process::exit(1);
}

async fn accept_loop(listener: TcpListener, connections: Connections) {
    let mut incoming = listener.incoming();
    let mut backoff = AcceptBackoff::default();
    while let Some(accepted) = incoming.next().await {
        match accepted {
            Ok(stream) => {
                backoff.on_success();
                connections.spawn(serve(stream));
            }
            Err(e) => {
                eprintln!("echo: accept: {e}");
                if let Err(e) = backoff.on_error(e).await {
                    eprintln!("echo: the listener failed, stopping: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        let (res, b) = stream.read(buf).await;
        match res {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                eprintln!("echo: {}: read: {e}", peer(&stream));
                return;
            }
        }
        let (res, b) = stream.write_all(b).await;
        if let Err(e) = res {
            eprintln!("echo: {}: write: {e}", peer(&stream));
            return;
        }
        buf = b;
    }
}

fn peer(stream: &TcpStream) -> String {
    stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "connection".into())
}

fn parse_args() -> Result<(SocketAddr, usize, Duration), String> {
    let mut addr: SocketAddr = "127.0.0.1:7000".parse().expect("default address");
    let mut threads = 1;
    let mut grace = shutdown::DEFAULT_GRACE;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                let v = args.next().ok_or("--addr needs a value")?;
                addr = v.parse().map_err(|e| format!("bad --addr {v:?}: {e}"))?;
            }
            "--threads" => {
                let v = args.next().ok_or("--threads needs a value")?;
                threads = v.parse().map_err(|e| format!("bad --threads {v:?}: {e}"))?;
            }
            "--grace" => {
                let v = args.next().ok_or("--grace needs a value")?;
                grace = shutdown::parse_grace(&v)?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((addr, threads, grace))
}
