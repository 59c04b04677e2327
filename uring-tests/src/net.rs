//! Helpers for the networking tests (`tests/net_*.rs`): connected pairs, an echo server, byte
//! patterns, writers that collect bytes, child processes and fd limits.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;
use uring::buf::IoBuf;
use uring::io::AsyncWriteOwned;
use uring::net::{TcpListener, TcpStream};
use uring::BufResult;

/// The watchdog limit of a networking test (generous: the machine is shared).
pub const LIMIT: Duration = Duration::from_secs(120);

/// A connected pair: (client, server side), with their addresses checked.
pub async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = uring::spawn(async move { TcpStream::connect(addr).await.unwrap() });
    let (server, peer) = listener.accept().await.unwrap();
    let client = client.await.unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(server.local_addr().unwrap(), addr);
    (client, server)
}

/// A connected pair of a uring stream and a blocking std stream (for a peer on another thread):
/// (uring side, std side).
pub fn tcp_pair_with_std() -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (TcpStream::from_std(client).unwrap(), server)
}

/// Serves echo on every connection; records each connection's outcome (bytes echoed or error).
pub fn spawn_echo_server(listener: TcpListener) -> Rc<RefCell<Vec<io::Result<u64>>>> {
    let outcomes = Rc::new(RefCell::new(Vec::new()));
    let out = outcomes.clone();
    uring::spawn(async move {
        let mut incoming = listener.incoming();
        while let Some(s) = incoming.next().await {
            let s = s.unwrap();
            let out = out.clone();
            uring::spawn(async move {
                let r = echo(&s).await;
                out.borrow_mut().push(r);
            });
        }
    });
    outcomes
}

/// Echoes everything `s` reads until end of stream; returns the bytes echoed.
pub async fn echo(s: &TcpStream) -> io::Result<u64> {
    let mut total = 0;
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        let (res, b) = s.read(buf).await;
        let n = res?;
        if n == 0 {
            return Ok(total);
        }
        let (res, b) = s.write_all(b).await;
        res?;
        total += n as u64;
        buf = b;
    }
}

/// `len` bytes of a pattern that depends on `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Byte `i` of a stream whose every position differs from its neighbours for a long stretch, so
/// a lost, repeated or reordered run of bytes changes a comparison.
pub fn stream_byte(i: usize) -> u8 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (i >> 16) as u8
}

/// Sends `data` and reads the same length back, asserting it is echoed in order.
pub async fn round_trip(s: &TcpStream, data: Vec<u8>) {
    let len = data.len();
    let (res, data) = s.write_all(data).await;
    res.unwrap();
    let (res, back) = s.read_exact(Vec::with_capacity(len)).await;
    res.unwrap();
    assert!(back == data, "echo differs");
}

/// Writes "ping" on `a` and reads it on `b`.
pub async fn round_trip_pair(a: &TcpStream, b: &TcpStream) {
    let (res, _) = a.write_all(b"ping".to_vec()).await;
    res.unwrap();
    let (res, got) = b.read_exact(Vec::with_capacity(4)).await;
    res.unwrap();
    assert_eq!(got, b"ping");
}

/// Sets SO_LINGER 0 and closes: the kernel sends RST instead of FIN.
pub fn reset(s: TcpStream) {
    let std_s = s.into_std().unwrap();
    socket2::SockRef::from(&std_s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(std_s);
}

/// Collects what is written into a Vec.
pub struct VecWriter<'a>(pub RefCell<&'a mut Vec<u8>>);

impl AsyncWriteOwned for VecWriter<'_> {
    async fn write<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        // SAFETY: the IoBuf contract: `bytes_init()` bytes at `stable_ptr()` are initialized.
        let bytes = unsafe { std::slice::from_raw_parts(buf.stable_ptr(), buf.bytes_init()) };
        self.0.borrow_mut().extend_from_slice(bytes);
        (Ok(bytes.len()), buf)
    }

    async fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Raises RLIMIT_NOFILE's soft limit to `want` (and the hard one if allowed), failing with a
/// clear message if that is not possible. For child processes only (see `run_child`).
pub fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur >= want {
        return;
    }
    if lim.rlim_max < want {
        lim.rlim_max = want;
    }
    lim.rlim_cur = want;
    // SAFETY: setrlimit reads the struct we own.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(
        rc,
        0,
        "this test needs RLIMIT_NOFILE >= {want} ({}); raise the hard limit (ulimit -Hn {want})",
        io::Error::last_os_error()
    );
}

/// Starts this test binary's `test_name` in a child process with role `role` and extra
/// environment `env`, stdout and stderr piped (see [`crate::run_child`] for one that waits).
pub fn spawn_child(test_name: &str, role: &str, env: &[(&str, String)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(crate::CHILD_ENV, role)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child test process")
}

/// Asserts a child test process succeeded and printed `marker`; shows its output otherwise.
pub fn assert_child_ok(out: &std::process::Output, marker: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(marker),
        "child did not report {marker:?}:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

/// An empty buffer with `cap` bytes of zeroed (so, for valgrind, defined) capacity.
pub fn zeroed_capacity(cap: usize) -> Vec<u8> {
    let mut v = crate::zeroed_buf(cap);
    v.clear();
    v
}

/// Runs a test body under the [`watchdog`](crate::watchdog), one at a time among the tests of
/// the binary that use this: for tests that compare the process's open fds with a baseline,
/// which another test opening sockets meanwhile would disturb.
pub fn serial<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    crate::watchdog(limit, f)
}
