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

use std::net::SocketAddr;
use uring::net::{AcceptBackoff, TcpListener, TcpStream};

const USAGE: &str = "usage: proxy --listen IP:PORT --upstream IP:PORT";

fn main() {
    let (listen, upstream) = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("proxy: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("proxy: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    let runtime = uring::Runtime::new().unwrap_or_else(|e| {
        eprintln!("proxy: {e}");
        std::process::exit(1);
    });
    println!("{}", listener.local_addr().expect("bound address"));
    runtime.block_on(async move {
        let mut incoming = listener.incoming();
        let mut backoff = AcceptBackoff::default();
        while let Some(accepted) = incoming.next().await {
            match accepted {
                Ok(client) => {
                    backoff.on_success();
                    uring::spawn(relay(client, upstream));
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
    });
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
    if let Err(e) = uring::io::copy_bidirectional(&client, &server).await {
        eprintln!("proxy: {who}: {e}");
    }
}

fn parse_args() -> Result<(SocketAddr, SocketAddr), String> {
    let (mut listen, mut upstream) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<SocketAddr, String> {
            let v = args.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|e| format!("bad {name} {v:?}: {e}"))
        };
        match arg.as_str() {
            "--listen" => listen = Some(value("--listen")?),
            "--upstream" => upstream = Some(value("--upstream")?),
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
    ))
}
