//! Helpers for the end-to-end tests (`tests/net_e2e.rs`, `tests/http_e2e.rs`): the root
//! package's example binaries, real clients and servers run as child processes, files to send
//! and their checksums.
//!
//! The example binaries are the ones `cargo test --workspace` builds (it builds the root
//! package's examples, those that need the `hyper` feature too, into
//! `target/<profile>/examples/`). The tools come from Debian packages, which `.ci/test` installs
//! when missing: `apt-get install -y curl netcat-openbsd python3 coreutils nghttp2-client`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A child process killed (by its own pid) and reaped when the test is done with it.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `target/<profile>/examples/NAME`, next to this test binary's `target/<profile>/deps/`.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds the uring \
         package's examples), or build it first with `cargo build --examples --all-features`",
        path.display()
    );
    path
}

/// Fails (never skips) when a required program is not installed.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed; this test needs it: apt-get install -y {package}"
    );
}

/// Starts an example that prints its listening address as its first stdout line; its stderr
/// goes to the test's.
pub fn start_example(name: &str, args: &[&str]) -> (ChildGuard, SocketAddr) {
    start_example_with(name, args, Stdio::inherit())
}

/// As [`start_example`], with the example's stderr going to `stderr`.
pub fn start_example_with(name: &str, args: &[&str], stderr: Stdio) -> (ChildGuard, SocketAddr) {
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
    let guard = ChildGuard(child);
    let addr = line
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name} printed {line:?}, not an address: {e}"));
    (guard, addr)
}

/// Starts `python3 -m http.server` on a free loopback port, serving `dir`; returns its address
/// once it listens.
pub fn start_python_http_server(dir: &Path) -> (ChildGuard, SocketAddr) {
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
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3 -m http.server");
    let mut line = String::new();
    BufReader::new(http.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let guard = ChildGuard(http);
    // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
    let port: u16 = line
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected http.server banner {line:?}"));
    (guard, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The sha256 of a file, by `sha256sum`, in hex.
pub fn sha256sum(path: &Path) -> String {
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
pub fn write_random_file(path: &Path, len: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = crate::Rng(0x9e37_79b9_7f4a_7c15);
    let mut left = len;
    while left > 0 {
        let chunk = rng.bytes(left.min(1 << 20));
        f.write_all(&chunk).unwrap();
        left -= chunk.len();
    }
    f.flush().unwrap();
}

/// Waits for `child` to exit within `limit`, reading its piped stdout and stderr meanwhile (on
/// threads, so a chatty child never blocks on a full pipe); kills it and fails otherwise.
pub fn wait_with_limit(mut child: Child, limit: Duration, what: &str) -> Output {
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let collect = |h: Option<JoinHandle<Vec<u8>>>| h.map(|h| h.join().unwrap()).unwrap_or_default();
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{what} did not finish within {limit:?}; stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Reads a pipe to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut r| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    })
}

/// Runs `cmd` (its stdout and stderr piped) to its end within `limit` and fails unless it
/// exits with status 0; returns its output.
pub fn run_ok(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let out = wait_with_limit(child, limit, what);
    assert!(
        out.status.success(),
        "{what} failed ({}): stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
