//! An echo server for the echo benchmark: `echo-server --runtime uring|tokio|raw --addr ADDR
//! [--cpu N]`. Pins itself to cpu N if given, prints its bound address on stdout, and serves
//! until killed.

use std::io::Write;
use std::net::SocketAddr;
use uring_tests::bench::echo::{self, ServerKind};

const USAGE: &str = "usage: echo-server --runtime uring|tokio|raw [--addr ADDR] [--cpu N]
       echo-server --bench [CONNSxBYTES] [--rounds N]   (the echo suite alone, as `bench echo`)
  --addr  where to listen (default 127.0.0.1:0: any free port); the bound address is printed
  --cpu   pin the server to this cpu";

fn main() {
    let mut kind = None;
    let mut addr: SocketAddr = "127.0.0.1:0".parse().expect("valid default address");
    let mut cpu = None;
    let mut bench = false;
    let mut row = None;
    let mut rounds = echo::DEFAULT_ROUNDS;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| fail(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            "--runtime" => {
                let v = value("--runtime");
                kind = Some(
                    ServerKind::parse(&v)
                        .unwrap_or_else(|| fail(&format!("unknown runtime {v:?}"))),
                );
            }
            "--addr" => {
                let v = value("--addr");
                addr = v
                    .parse()
                    .unwrap_or_else(|_| fail(&format!("--addr {v:?} is not an IP:PORT address")));
            }
            "--cpu" => {
                let v = value("--cpu");
                cpu = Some(
                    v.parse::<usize>()
                        .unwrap_or_else(|_| fail(&format!("--cpu {v:?} is not a cpu number"))),
                );
            }
            "--bench" => bench = true,
            "--rounds" => {
                let v = value("--rounds");
                rounds = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| fail("--rounds needs a positive number"));
            }
            _ if bench && row.is_none() => row = Some(a),
            _ => fail(&format!("unexpected argument {a:?}")),
        }
    }
    if bench {
        echo::run(rounds, row.as_deref());
        return;
    }
    let kind = kind.unwrap_or_else(|| fail("--runtime is required"));
    if let Some(c) = cpu {
        echo::pin_current_thread(c);
    }
    let served = echo::server::serve(kind, addr, |bound| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{bound}");
        let _ = out.flush();
    });
    if let Err(e) = served {
        eprintln!("echo-server ({}): {e}", kind.name());
        std::process::exit(1);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("echo-server: {msg}\n{USAGE}");
    std::process::exit(2);
}
