//! An echo server for the echo benchmark: `echo-server --runtime
//! uring|tokio|raw|raw-single|uring-pool2|tokio-mt2|tokio-ct2 --addr ADDR [--cpu N] [--buf
//! BYTES]`. Pins itself to cpu N if given, prints its bound address on stdout, and serves until
//! killed. The last three serve on 2 threads (for the `threads` suite).

use std::io::Write;
use std::net::SocketAddr;
use uring_tests::bench::echo::{self, ServerKind};

const USAGE: &str = "usage: echo-server --runtime SERVER [--addr ADDR] [--cpu N] [--buf BYTES]
       echo-server --bench [CONNSxBYTES] [--rounds N]   (the echo suite alone, as `bench echo`)
       echo-server --load ADDR [--conns N] [--size BYTES] [--secs S] [--pid SERVER_PID] [--cpu N]
                   (only the load generator, against a running server: for profiling one)
  SERVER  uring, tokio (current_thread), raw, raw-single (hand-written io_uring loops), or on
          2 threads: uring-pool2 (uring::Pool, an SO_REUSEPORT listener per worker), tokio-mt2
          (tokio multi-thread, one listener), tokio-ct2 (2 current_thread runtimes, SO_REUSEPORT)
  --addr  where to listen (default 127.0.0.1:0: any free port); the bound address is printed
  --cpu   pin the server to this cpu
  --buf   each connection's read buffer in bytes (uring and tokio servers; default 16384)";

fn main() {
    let mut kind = None;
    let mut addr: SocketAddr = "127.0.0.1:0".parse().expect("valid default address");
    let mut cpu = None;
    let mut bench = false;
    let mut row = None;
    let mut rounds = echo::DEFAULT_ROUNDS;
    let mut load: Option<SocketAddr> = None;
    let mut conns = 50usize;
    let mut size = 64usize;
    let mut secs = 5.0f64;
    let mut pid = None;
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
            "--buf" => echo::server::set_conn_buf(number(&value("--buf")) as usize),
            "--bench" => bench = true,
            "--load" => {
                let v = value("--load");
                load =
                    Some(v.parse().unwrap_or_else(|_| {
                        fail(&format!("--load {v:?} is not an IP:PORT address"))
                    }));
            }
            "--conns" => conns = number(&value("--conns")) as usize,
            "--size" => size = number(&value("--size")) as usize,
            "--secs" => secs = number(&value("--secs")),
            "--pid" => pid = Some(number(&value("--pid")) as u32),
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
    if let Some(addr) = load {
        if let Some(c) = cpu {
            echo::pin_current_thread(c);
        }
        let spec = echo::loadgen::LoadSpec {
            addr,
            conns,
            msg_len: size,
            warmup: std::time::Duration::from_millis(300),
            measure: std::time::Duration::from_secs_f64(secs),
            server_pid: pid,
        };
        match echo::loadgen::run(&spec) {
            Ok(r) => println!(
                "{conns} conns x {size} B: {:.0} req/s, p50 {:.1} µs, p99 {:.1} µs, server CPU {} µs/req",
                r.rate(),
                r.p50.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() * 1e6,
                r.cpu_us_per_req()
                    .map_or("-".to_string(), |c| format!("{c:.2}"))
            ),
            Err(e) => fail(&format!("load: {e}")),
        }
        return;
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

fn number(v: &str) -> f64 {
    v.parse::<f64>()
        .ok()
        .filter(|n| *n > 0.0)
        .unwrap_or_else(|| fail(&format!("{v:?} is not a positive number")))
}

fn fail(msg: &str) -> ! {
    eprintln!("echo-server: {msg}\n{USAGE}");
    std::process::exit(2);
}
