//! Shared helpers for uring's integration, stress and fault tests and its benchmarks.

use std::process::{Command, Output};
use std::sync::mpsc;
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
pub mod bench;
pub mod fuse;
