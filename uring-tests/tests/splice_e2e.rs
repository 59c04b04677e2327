//! The splice path end to end, through `examples/proxy --stats`: `curl` fetches 1 GiB from
//! `python3 -m http.server` (a random file in the temp dir, compared by `sha256sum`), and a
//! half-close after a bulk upload is still passed on (the answer comes after it). Each run
//! stops the proxy with SIGTERM and reads its `--stats` line: the bulk went by splice.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uring_tests::e2e::{
    example, require, sha256sum, start_python_http_server, wait_with_limit, write_random_file,
    ChildGuard,
};
use uring_tests::net::pattern;
use uring_tests::{watchdog, TempDir};

const LIMIT: Duration = Duration::from_secs(600);

/// Starts `examples/proxy --stats` in front of `upstream`, its stderr piped; returns it and its
/// address.
fn start_proxy(upstream: &str, extra: &[&str]) -> (ChildGuard, std::net::SocketAddr) {
    let mut child = Command::new(example("proxy"))
        .args(["--listen", "127.0.0.1:0", "--upstream", upstream, "--stats"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start examples/proxy");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().parse().expect("the proxy prints its address");
    (ChildGuard(child), addr)
}

/// SIGTERM to the proxy, then its exit status (0 expected) and the bytes its stats line gives:
/// (connections, through buffers, by splice).
fn stop_and_read_stats(guard: &mut ChildGuard) -> (u64, u64, u64) {
    let child: &mut Child = &mut guard.0;
    // SAFETY: kill(2) takes no pointer; the pid is our unreaped child's.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the proxy did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "proxy exit: {status}; stderr:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("proxy: stats:"))
        .unwrap_or_else(|| panic!("no stats line in:\n{stderr}"));
    // "proxy: stats: C connections, T bytes relayed: B through buffers, S by splice"
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(nums.len(), 4, "{line}");
    assert_eq!(nums[1], nums[2] + nums[3], "{line}");
    (nums[0], nums[2], nums[3])
}

#[test]
fn curl_fetches_1_gib_through_the_splicing_proxy_intact() {
    require("curl", "curl");
    require("python3", "python3");
    require("sha256sum", "coreutils");
    watchdog(LIMIT, || {
        let dir = TempDir::new("splice-curl");
        let served = dir.path("www");
        std::fs::create_dir_all(&served).unwrap();
        let file = served.join("big.bin");
        write_random_file(&file, 1 << 30);
        let want = sha256sum(&file);
        let (_http, upstream) = start_python_http_server(&served);
        let (mut proxy, proxy_addr) = start_proxy(&upstream.to_string(), &[]);
        // Straight into sha256sum: no second GiB on disk.
        let curl = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -o pipefail; curl -sS --fail --max-time 500 \
                 http://{proxy_addr}/big.bin | sha256sum"
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_with_limit(curl, Duration::from_secs(520), "curl | sha256sum");
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            got.split_whitespace().next(),
            Some(want.as_str()),
            "sha256 of 1 GiB through the proxy"
        );
        let (conns, buffered, spliced) = stop_and_read_stats(&mut proxy);
        assert_eq!(conns, 1);
        assert!(
            spliced > 900 << 20,
            "the bulk went by splice: {spliced} spliced, {buffered} through buffers"
        );
    });
}

#[test]
fn half_close_after_a_bulk_upload_passes_through_the_splicing_proxy() {
    watchdog(LIMIT, || {
        let origin = TcpListener::bind("127.0.0.1:0").unwrap();
        let up_addr = origin.local_addr().unwrap();
        let upload = pattern(32 << 20, 5);
        let answer = pattern(24 << 20, 6);
        let server = std::thread::spawn({
            let (upload, answer) = (upload.clone(), answer.clone());
            move || {
                let (mut s, _) = origin.accept().unwrap();
                let mut got = Vec::new();
                // Reads to EOF: the client's half-close must come through the proxy.
                s.read_to_end(&mut got).unwrap();
                assert!(got == upload, "the upload, intact, then EOF");
                s.write_all(&answer).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
            }
        });
        let (mut proxy, proxy_addr) = start_proxy(&up_addr.to_string(), &["--threads", "2"]);
        let mut c = TcpStream::connect(proxy_addr).unwrap();
        let writer = std::thread::spawn({
            let mut c = c.try_clone().unwrap();
            move || {
                c.write_all(&upload).unwrap();
                c.shutdown(Shutdown::Write).unwrap();
            }
        });
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).unwrap();
        writer.join().unwrap();
        server.join().unwrap();
        assert!(
            reply == answer,
            "the answer after the half-close, intact, then EOF"
        );
        drop(c);
        let (conns, _buffered, spliced) = stop_and_read_stats(&mut proxy);
        assert_eq!(conns, 1);
        assert!(
            spliced > 16 << 20,
            "both directions spliced most: {spliced}"
        );
    });
}
