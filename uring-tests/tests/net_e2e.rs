//! End to end with real clients: `curl` through `examples/proxy` to `python3 -m http.server`
//! (a 64 MiB random file, compared by `sha256sum`), `nc -N` half-close through the proxy, and
//! `examples/echo` serving a plain std client.
//!
//! The example binaries and the tools are those of `uring_tests::e2e` (`.ci/test` installs the
//! tools).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;
use uring_tests::e2e::{
    example, require, sha256sum, start_example, start_example_with, start_python_http_server,
    wait_with_limit, write_random_file,
};
use uring_tests::{watchdog, TempDir};

const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn curl_fetches_64_mib_through_the_proxy_intact() {
    curl_through_the_proxy(&[]);
}

#[test]
fn curl_fetches_64_mib_through_a_two_worker_proxy_intact() {
    curl_through_the_proxy(&["--threads", "2"]);
}

fn curl_through_the_proxy(extra: &[&'static str]) {
    let extra: Vec<&'static str> = extra.to_vec();
    require("curl", "curl");
    require("python3", "python3");
    require("sha256sum", "coreutils");
    watchdog(LIMIT, move || {
        let dir = TempDir::new(if extra.is_empty() {
            "curl"
        } else {
            "curl-threads"
        });
        let served = dir.path("www");
        std::fs::create_dir_all(&served).unwrap();
        let file = served.join("big.bin");
        write_random_file(&file, 64 << 20);

        let (_http, upstream) = start_python_http_server(&served);
        let upstream = upstream.to_string();

        let mut args = vec!["--listen", "127.0.0.1:0", "--upstream", &upstream];
        args.extend(&extra);
        let (_proxy, proxy_addr) = start_example("proxy", &args);
        let out_file = dir.path("fetched.bin");
        let curl = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "240", "-o"])
            .arg(&out_file)
            .arg(format!("http://{proxy_addr}/big.bin"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_with_limit(curl, Duration::from_secs(250), "curl");
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::metadata(&out_file).unwrap().len(),
            64 << 20,
            "size through the proxy"
        );
        assert_eq!(
            sha256sum(&out_file),
            sha256sum(&file),
            "sha256 through the proxy"
        );
    });
}

#[test]
fn nc_half_close_passes_through_the_proxy() {
    require("nc", "netcat-openbsd");
    watchdog(LIMIT, || {
        // The origin reads until the client's EOF arrives, then answers and closes: without
        // half-close passed on, it would wait forever.
        let origin = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin_addr = origin.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = origin.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(format!("got {} bytes\n", got.len()).as_bytes())
                .unwrap();
            got
        });
        let (_proxy, proxy_addr) = start_example(
            "proxy",
            &[
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                &origin_addr.to_string(),
            ],
        );
        let payload: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut nc = Command::new("nc")
            .arg("-N")
            .arg(proxy_addr.ip().to_string())
            .arg(proxy_addr.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nc");
        let mut stdin = nc.stdin.take().unwrap();
        let feeder = {
            let payload = payload.clone();
            // Closing stdin is nc's EOF: with -N it then shuts down its write side.
            std::thread::spawn(move || stdin.write_all(&payload).unwrap())
        };
        let out = wait_with_limit(nc, Duration::from_secs(60), "nc -N through the proxy");
        feeder.join().unwrap();
        assert!(
            out.status.success(),
            "nc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "got 200000 bytes\n",
            "the origin saw the client's EOF and its answer came back"
        );
        assert!(server.join().unwrap() == payload);
    });
}

#[test]
fn echo_example_with_two_workers_serves_many_clients_at_once() {
    watchdog(LIMIT, || {
        let (_echo, addr) = start_example("echo", &["--addr", "127.0.0.1:0", "--threads", "2"]);
        let clients: Vec<_> = (0..64)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut c = std::net::TcpStream::connect(addr).unwrap();
                    for round in 0..20 {
                        let msg = vec![(i + round) as u8; 1000 + i];
                        c.write_all(&msg).unwrap();
                        let mut back = vec![0u8; msg.len()];
                        c.read_exact(&mut back).unwrap();
                        assert_eq!(back, msg);
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let out = Command::new(example("echo"))
            .args(["--threads", "many"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("bad --threads"));
    });
}

#[test]
fn echo_example_serves_clients() {
    watchdog(LIMIT, || {
        let (_echo, addr) = start_example("echo", &["--addr", "127.0.0.1:0"]);
        let mut clients: Vec<std::net::TcpStream> = (0..20)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        for (i, c) in clients.iter_mut().enumerate() {
            let msg = vec![i as u8; 10_000 + i];
            c.write_all(&msg).unwrap();
            let mut back = vec![0u8; msg.len()];
            c.read_exact(&mut back).unwrap();
            assert_eq!(back, msg);
        }
        // A bad argument is a clear usage error, not a panic.
        let out = Command::new(example("echo"))
            .args(["--addr", "not-an-address"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("bad --addr"));
    });
}

#[test]
fn proxy_logs_a_failed_upstream_and_keeps_serving() {
    watchdog(LIMIT, || {
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (mut proxy, addr) = start_example_with(
            "proxy",
            &["--listen", "127.0.0.1:0", "--upstream", &dead.to_string()],
            Stdio::piped(),
        );
        // Each client is closed by the proxy once its upstream connect is refused.
        for _ in 0..3 {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            let mut buf = Vec::new();
            match c.read_to_end(&mut buf) {
                Ok(n) => assert_eq!(n, 0),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
            }
        }
        // Still accepting: a fourth connection is taken too (it gets closed the same way).
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        let _ = c.read_to_end(&mut Vec::new());
        let _ = proxy.0.kill();
        let mut err = String::new();
        proxy
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let refused = err
            .lines()
            .filter(|l| l.contains("connect to upstream") && l.contains("refused"))
            .count();
        assert_eq!(refused, 4, "one log line per failed connection:\n{err}");
    });
}
