//! The tokio peer of `examples/proxy` for the `proxy` benchmark: `tokio-proxy --listen ADDR
//! --upstream ADDR`. A tokio current_thread runtime; every accepted connection is relayed to
//! the upstream in its own task with `tokio::io::copy_bidirectional` (nodelay on both sockets,
//! as `examples/proxy` does). Prints the address it listens on as the first line of stdout and
//! serves until killed.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "usage: tokio-proxy --listen IP:PORT --upstream IP:PORT
  --listen    where to listen (port 0: any free port); the bound address is printed first
  --upstream  where every connection is relayed to";

fn main() {
    let (listen, upstream) = parse_args(std::env::args().skip(1)).unwrap_or_else(|msg| {
        eprintln!("tokio-proxy: {msg}\n{USAGE}");
        std::process::exit(2)
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("tokio-proxy: {e}");
            std::process::exit(1)
        });
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await.unwrap_or_else(|e| {
            eprintln!("tokio-proxy: cannot listen on {listen}: {e}");
            std::process::exit(1)
        });
        println!("{}", listener.local_addr().expect("bound address"));
        loop {
            match listener.accept().await {
                Ok((client, who)) => {
                    tokio::spawn(relay(client, who, upstream));
                }
                Err(e) => {
                    // Out of fds or memory: wait for some to be freed rather than spin.
                    eprintln!("tokio-proxy: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

async fn relay(mut client: TcpStream, who: SocketAddr, upstream: SocketAddr) {
    let mut server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tokio-proxy: {who}: connect to upstream {upstream}: {e}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
        eprintln!("tokio-proxy: {who}: {e}");
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(SocketAddr, SocketAddr), String> {
    let (mut listen, mut upstream) = (None, None);
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
