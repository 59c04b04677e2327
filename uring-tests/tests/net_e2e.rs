//! End to end with real clients: `curl` through `examples/proxy` to `python3 -m http.server`
//! (a 64 MiB random file, compared by `sha256sum`), `nc -N` half-close through the proxy, and
//! `examples/echo` serving a plain std client.
//!
//! The example binaries are the ones `cargo test --workspace` builds (it builds the root
//! package's examples into `target/<profile>/examples/`). The tools come from Debian packages
//! (`.ci/run` installs them): `apt-get install -y curl netcat-openbsd python3 coreutils`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uring_tests::watchdog;

const LIMIT: Duration = Duration::from_secs(300);

/// A child process killed (by its own pid) and reaped when the test is done with it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `target/<profile>/examples/NAME`, next to this test binary's `target/<profile>/deps/`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds the uring \
         package's examples), or build it first with `cargo build --examples`",
        path.display()
    );
    path
}

/// Fails (never skips) when a required program is not installed.
fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed; this test needs it: apt-get install -y {package}"
    );
}

/// Starts an example that prints its listening address as its first stdout line.
fn start_example(name: &str, args: &[&str]) -> (Guard, SocketAddr) {
    start_example_with(name, args, Stdio::inherit())
}

fn start_example_with(name: &str, args: &[&str], stderr: Stdio) -> (Guard, SocketAddr) {
    let mut child = Command::new(example(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name} printed {line:?}, not an address: {e}"));
    (Guard(child), addr)
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("uring-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Writes `len` pseudo-random bytes (xorshift; incompressible enough for a transfer test).
fn write_random_file(path: &Path, len: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
        }
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}

/// Waits for `child` to exit within `limit`; kills it and fails otherwise.
fn wait_with_limit(mut child: Child, limit: Duration, what: &str) -> std::process::Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not finish within {limit:?}; stdout {:?}, stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
        let served = dir.0.join("www");
        std::fs::create_dir_all(&served).unwrap();
        let file = served.join("big.bin");
        write_random_file(&file, 64 << 20);

        let mut http = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&served)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let mut line = String::new();
        BufReader::new(http.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _http = Guard(http);
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port: u16 = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected http.server banner {line:?}"));
        let upstream = format!("127.0.0.1:{port}");

        let mut args = vec!["--listen", "127.0.0.1:0", "--upstream", &upstream];
        args.extend(&extra);
        let (_proxy, proxy_addr) = start_example("proxy", &args);
        let out_file = dir.0.join("fetched.bin");
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
