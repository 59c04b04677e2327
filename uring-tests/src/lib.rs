//! Shared helpers for uring's integration, stress and fault tests and its benchmarks.

use std::cell::Cell;
use std::future::Future;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, Output};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

/// Runs `f` on a fresh thread and panics if it has not returned within `limit`: a hang fails the
/// test instead of running into CI's time limit. Limits are generous (the machine is shared).
pub fn watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("watched".into())
        .spawn(move || {
            let out = f();
            let _ = tx.send(());
            out
        })
        .expect("spawn test thread");
    match rx.recv_timeout(limit) {
        Ok(()) => worker
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: propagate its panic.
            match worker.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: test still running after {limit:?}: it hangs")
        }
    }
}

/// Runs the future `make` builds on a fresh runtime, on a watchdog's thread (see [`watchdog`]).
pub fn run_watched<T, F>(limit: Duration, make: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T>,
{
    watchdog(limit, move || uring::run(make()))
}

/// How many fds this process has open (entries of /proc/self/fd).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The environment variable that tells a re-executed test binary it is the child.
pub const CHILD_ENV: &str = "URING_TEST_CHILD";

/// Whether this process is a child started by [`run_child`] for `role`.
pub fn is_child(role: &str) -> bool {
    std::env::var(CHILD_ENV).map(|v| v == role).unwrap_or(false)
}

/// Re-runs the current test binary's test `test_name` alone in a child process with
/// `URING_TEST_CHILD=role`, for tests that change process-wide state (rlimits, seccomp filters).
/// Returns the child's output; the test asserts on it.
pub fn run_child(test_name: &str, role: &str) -> Output {
    let exe = std::env::current_exe().expect("current exe");
    Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .output()
        .expect("run child test process")
}

/// As [`run_child`], but a child still running after `limit` is killed (after `on_timeout` ran,
/// to release whatever the child may be stuck on) and reported as `Err` with its output so far.
pub fn run_child_with_limit(
    test_name: &str,
    role: &str,
    limit: Duration,
    on_timeout: impl FnOnce(),
) -> Result<Output, String> {
    use std::io::Read;
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run child test process");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if start.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let Some(status) = status else {
        on_timeout();
        let _ = child.kill();
        let _ = child.wait();
        let (out, err) = (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        );
        return Err(format!(
            "child still running after {limit:?}; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        ));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Sets RLIMIT_NOFILE's soft limit (not above the hard limit) and returns the old soft limit.
pub fn set_nofile_limit(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let old = lim.rlim_cur;
    lim.rlim_cur = soft.min(lim.rlim_max);
    // SAFETY: setrlimit reads the struct we own.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    old
}

/// Whether the process runs under valgrind (tests then use smaller counts and zeroed buffers).
pub fn under_valgrind() -> bool {
    std::env::var("URING_VALGRIND").is_ok()
}
/// Polls `fut` exactly once with the current task's context (so its op is submitted) and reports
/// whether it was ready.
pub async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

/// A pipe: (read end, write end), both close-on-exec and blocking.
pub fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are fresh and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    (r.into(), w.into())
}

/// Sets its flag when dropped: shows that a future (or what it owns) was dropped.
pub struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// A [`DropFlag`] and the flag it sets.
pub fn drop_flag() -> (DropFlag, Rc<Cell<bool>>) {
    let flag = Rc::new(Cell::new(false));
    (DropFlag(flag.clone()), flag)
}

/// A one-shot signal another OS thread sets, waking whoever waits for it.
#[derive(Clone, Default)]
pub struct ThreadSignal(Arc<Mutex<(bool, Option<Waker>)>>);

impl ThreadSignal {
    /// Sets the signal and wakes the waiter.
    pub fn set(&self) {
        let waker = {
            let mut s = self.0.lock().unwrap();
            s.0 = true;
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Waits until the signal is set.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut s = self.0.lock().unwrap();
            if s.0 {
                Poll::Ready(())
            } else {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Whether a waiter has registered its waker.
    pub fn has_waiter(&self) -> bool {
        self.0.lock().unwrap().1.is_some()
    }
}

/// A fresh directory under the temp dir, removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory whose name contains `tag`, the pid and a counter.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "uring-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// The directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.0
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A buffer for the kernel to write into: zeroed (so valgrind, which cannot see the kernel's
/// writes, sees initialized memory), with room for `n` bytes.
pub fn zeroed_buf(n: usize) -> Vec<u8> {
    vec![0u8; n]
}

/// `n`, or a tenth of it (at least 10) under valgrind, which slows tests down tenfold or more.
pub fn scaled(n: usize) -> usize {
    if under_valgrind() {
        (n / 10).max(10)
    } else {
        n
    }
}

/// Deterministic pseudo-random numbers (xorshift64), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// How many of this process's fds are open on `path` (links in /proc/self/fd).
pub fn fds_open_on(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target == path)
                .count()
        })
        .unwrap_or(0)
}

/// An empty buffer with room for `capacity` bytes, all of them zeroed first (so valgrind, which
/// cannot see the kernel's writes, sees initialized memory where the kernel writes).
pub fn zeroed_empty(capacity: usize) -> Vec<u8> {
    let mut v = vec![0u8; capacity];
    v.clear();
    v
}

pub mod bench;
pub mod e2e;
pub mod fuse;
pub mod net;
