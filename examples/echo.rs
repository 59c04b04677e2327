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

use shutdown::Connections;
use std::net::SocketAddr;
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
    shutdown::serve("echo", addr, threads, grace, accept_loop);
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
