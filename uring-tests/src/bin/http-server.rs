//! An HTTP server for the `http` benchmark: `http-server --runtime
//! uring|tokio|raw-ring|raw-epoll [--addr ADDR] [--cpu N] [--control]`. The same hyper service
//! (`/` answers `hello from uring`) on hyper-util's auto builder (HTTP/1.1 and h2c) on either
//! runtime, or one of the bare loops that answer HTTP/1.1 with fixed bytes (the kernel's floor).
//! Pins itself to cpu N if given, prints its bound address on stdout first, and serves until
//! killed.

use std::io::Write;
use std::net::SocketAddr;
use uring_tests::bench::echo::pin_current_thread;
use uring_tests::bench::http::server::{self, Runtime};

const USAGE: &str = "usage: http-server --runtime uring|tokio|raw-ring|raw-epoll [--addr ADDR] [--cpu N] [--control]
  uring      a uring::Runtime, Compat<TcpStream>, HyperExecutor and HyperTimer
  tokio      tokio current_thread with a LocalSet, TokioIo, a local executor and TokioTimer
  raw-ring   a bare io_uring loop answering every HTTP/1.1 request with fixed bytes (no hyper)
  raw-epoll  a bare epoll loop doing the same
  --addr  where to listen (default 127.0.0.1:0: any free port); the bound address is printed
  --cpu   pin the server to this cpu
  --control  (uring) also listen on a second port, printed on the second line as
          `control ADDR`, that answers each connection with the driver's counters:
          `enters E completions C` (io_uring_enter calls and completions so far)";

fn main() {
    let mut runtime = None;
    let mut addr: SocketAddr = "127.0.0.1:0".parse().expect("valid default address");
    let mut cpu = None;
    let mut control = false;
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
                runtime = Some(
                    Runtime::parse(&v).unwrap_or_else(|| fail(&format!("unknown runtime {v:?}"))),
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
            "--control" => control = true,
            _ => fail(&format!("unexpected argument {a:?}")),
        }
    }
    let runtime = runtime.unwrap_or_else(|| fail("--runtime is required"));
    if let Some(c) = cpu {
        pin_current_thread(c);
    }
    let served = server::serve_with_control(runtime, addr, control, |bound, control| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{bound}");
        if let Some(c) = control {
            let _ = writeln!(out, "control {c}");
        }
        let _ = out.flush();
    });
    if let Err(e) = served {
        eprintln!("http-server ({}): {e}", runtime.name());
        std::process::exit(1);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("http-server: {msg}\n{USAGE}");
    std::process::exit(2);
}
