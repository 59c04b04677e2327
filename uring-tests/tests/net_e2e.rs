//! End to end with real clients: `curl` through `examples/proxy` to `python3 -m http.server`
//! (a 64 MiB random file, compared by `sha256sum`), `nc -N` half-close through the proxy,
//! `examples/echo` serving a plain std client, and the graceful shutdown of both on SIGINT and
//! SIGTERM (a 64 MiB transfer through the proxy finishes, open echo connections are served
//! during the grace period and dropped after it, the exit code is 0).
//!
//! The example binaries and the tools are those of `uring_tests::e2e` (`.ci/test` installs the
//! tools).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use uring_tests::e2e::{
    example, require, sha256sum, start_example, start_example_with, start_python_http_server,
    wait_with_limit, write_random_file,
};
use uring_tests::{watchdog, Rng, TempDir};

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

// ---------------------------------------------------------------------------------------------
// Graceful shutdown on SIGINT and SIGTERM
// ---------------------------------------------------------------------------------------------

/// Sends `signum` to a child process.
fn send_signal(child: &Child, signum: i32) {
    // SAFETY: kill(2) takes no pointer; the pid is our unreaped child's.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signum) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// Waits for `child` to exit within `limit` (it is killed by its guard otherwise).
fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child's stderr, read line by line on a thread (each line is also copied to the test's
/// stderr).
struct StderrLines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl StderrLines {
    fn take(child: &mut Child) -> StderrLines {
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("  | {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        StderrLines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits until `count` lines in all contain `needle`.
    fn wait_for(&mut self, needle: &str, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.seen.iter().filter(|l| l.contains(needle)).count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "{count} line(s) with {needle:?} expected within {limit:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every line the child wrote, once it has exited (its stderr is closed).
    fn all(mut self) -> String {
        while let Ok(line) = self.rx.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

/// A connection to `addr` is refused (the listener is closed).
fn assert_refused(addr: std::net::SocketAddr) {
    match std::net::TcpStream::connect(addr) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("{addr} still accepts connections after the stop"),
    }
}

#[test]
fn sigterm_to_the_proxy_during_a_64_mib_transfer_lets_it_finish_and_exits_0() {
    proxy_sigterm_during_transfer(&[]);
}

#[test]
fn sigterm_to_a_two_worker_proxy_during_a_64_mib_transfer_lets_it_finish_and_exits_0() {
    proxy_sigterm_during_transfer(&["--threads", "2"]);
}

fn proxy_sigterm_during_transfer(extra: &[&'static str]) {
    let extra: Vec<&'static str> = extra.to_vec();
    watchdog(LIMIT, move || {
        const LEN: usize = 64 << 20;
        let data = Arc::new(Rng(0x5eed_5e7e).bytes(LEN));
        // The upstream sends 64 MiB on its one connection, then closes.
        let origin = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin_addr = origin.local_addr().unwrap();
        let server = {
            let data = data.clone();
            std::thread::spawn(move || {
                let (mut s, _) = origin.accept().unwrap();
                s.write_all(&data).unwrap();
            })
        };
        let workers = if extra.is_empty() { 1 } else { 2 };
        let upstream = origin_addr.to_string();
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            // Long enough that only the transfer's own end lets the proxy exit.
            "--grace",
            "200",
        ];
        args.extend(&extra);
        let (mut proxy, proxy_addr) = start_example_with("proxy", &args, Stdio::piped());
        let mut stderr = StderrLines::take(&mut proxy.0);

        let mut client = std::net::TcpStream::connect(proxy_addr).unwrap();
        let mut got = vec![0u8; 1 << 20];
        client.read_exact(&mut got).unwrap();
        // The client stops reading: the rest of the 64 MiB is still to come when the signal lands.
        send_signal(&proxy.0, libc::SIGTERM);
        stderr.wait_for(
            "SIGTERM: stopped accepting",
            workers,
            Duration::from_secs(60),
        );
        assert_refused(proxy_addr);
        client.read_to_end(&mut got).unwrap();
        drop(client);
        assert_eq!(got.len(), LEN, "bytes through the proxy");
        assert!(got == *data, "the 64 MiB arrived intact");
        server.join().unwrap();

        let status = wait_exit(&mut proxy.0, Duration::from_secs(60), "the proxy");
        let log = stderr.all();
        assert_eq!(status.code(), Some(0), "exit status; stderr:\n{log}");
        assert!(log.contains("every connection finished"), "{log}");
    });
}

#[test]
fn sigint_to_an_idle_echo_exits_0_promptly() {
    for extra in [&[][..], &["--threads", "2"][..]] {
        let extra: Vec<&'static str> = extra.to_vec();
        watchdog(LIMIT, move || {
            let mut args = vec!["--addr", "127.0.0.1:0", "--grace", "100"];
            args.extend(&extra);
            let (mut echo, _) = start_example_with("echo", &args, Stdio::piped());
            let stderr = StderrLines::take(&mut echo.0);
            let start = Instant::now();
            send_signal(&echo.0, libc::SIGINT);
            // No connection is open: no grace period to wait out (it is 100 s here).
            let status = wait_exit(&mut echo.0, Duration::from_secs(60), "echo");
            let log = stderr.all();
            assert_eq!(
                status.code(),
                Some(0),
                "exit status {extra:?}; stderr:\n{log}"
            );
            assert!(log.contains("SIGINT: stopped accepting"), "{log}");
            eprintln!("echo {extra:?} exited {:?} after SIGINT", start.elapsed());
        });
    }
}

#[test]
fn a_connection_still_open_after_the_grace_period_is_dropped_and_echo_exits_0() {
    watchdog(LIMIT, || {
        let (mut echo, addr) = start_example_with(
            "echo",
            &["--addr", "127.0.0.1:0", "--grace", "1"],
            Stdio::piped(),
        );
        let mut stderr = StderrLines::take(&mut echo.0);
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello");
        let start = Instant::now();
        send_signal(&echo.0, libc::SIGTERM);
        stderr.wait_for("1 connection(s) open", 1, Duration::from_secs(60));
        // The client neither sends nor closes: the grace period runs out.
        let status = wait_exit(&mut echo.0, Duration::from_secs(60), "echo");
        let waited = start.elapsed();
        let log = stderr.all();
        assert_eq!(status.code(), Some(0), "exit status; stderr:\n{log}");
        assert!(log.contains("the grace period is over"), "{log}");
        assert!(
            waited >= Duration::from_secs(1),
            "exited before the grace period: {waited:?}"
        );
        // The connection was dropped: end of stream (or a reset).
        client
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        match client.read(&mut back) {
            Ok(n) => assert_eq!(n, 0, "end of stream"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    });
}

#[test]
fn sigterm_to_a_two_worker_echo_serves_open_connections_to_their_end_and_exits_0() {
    watchdog(LIMIT, || {
        let (mut echo, addr) = start_example_with(
            "echo",
            &["--addr", "127.0.0.1:0", "--threads", "2", "--grace", "200"],
            Stdio::piped(),
        );
        let mut stderr = StderrLines::take(&mut echo.0);
        let round = |c: &mut std::net::TcpStream, i: usize| {
            let msg = vec![i as u8; 1000 + i];
            c.write_all(&msg).unwrap();
            let mut back = vec![0u8; msg.len()];
            c.read_exact(&mut back).unwrap();
            assert_eq!(back, msg);
        };
        // Enough connections that both workers (SO_REUSEPORT spreads them) hold some.
        let mut clients: Vec<std::net::TcpStream> = (0..16)
            .map(|i| {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                round(&mut c, i);
                c
            })
            .collect();
        send_signal(&echo.0, libc::SIGTERM);
        // Both workers stop accepting, each on its own signal listener.
        stderr.wait_for("SIGTERM: stopped accepting", 2, Duration::from_secs(60));
        assert_refused(addr);
        // The open connections are still served during the grace period.
        for (i, c) in clients.iter_mut().enumerate() {
            for r in 0..5 {
                round(c, i + r);
            }
        }
        drop(clients);
        let status = wait_exit(&mut echo.0, Duration::from_secs(60), "echo --threads 2");
        let log = stderr.all();
        assert_eq!(status.code(), Some(0), "exit status; stderr:\n{log}");
        assert_eq!(log.matches("stopped accepting").count(), 2, "{log}");
        assert!(
            !log.contains("grace period is over"),
            "no connection was cut:\n{log}"
        );
    });
}
