//! Runtime shutdown against a filesystem that hangs: the drain is bounded, and a close in
//! flight at shutdown still closes its fd.
//!
//! The hung filesystem is [`uring_tests::fuse::HungFs`], served by a thread of the test process;
//! each test runs in a child process (mounting is process-wide state) under a time limit.

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};
use uring::fs::File;
use uring_tests::fuse::{abort_all_connections, HungFs};
use uring_tests::{is_child, poll_once, run_child_with_limit};

/// Runs `test` in a child as `role`; it must print `CHILD-OK` within `limit`.
fn in_child(test: &str, role: &str, limit: Duration) -> String {
    let out = run_child_with_limit(test, role, limit, abort_all_connections)
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed ({}): {stdout}\n{stderr}",
        out.status
    );
    for line in stdout.lines().filter(|l| l.contains("CHILD")) {
        eprintln!("{line}");
    }
    stderr
}

/// Lets the loop turn (so queued SQEs reach the kernel) until `done` holds.
async fn until(done: impl Fn() -> bool, what: &str) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(30), "{what}");
        uring::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A read the kernel cannot cancel (an io-wq worker waits for a FUSE answer, as it would for a
/// hung NFS server) holds the runtime's drop for the shutdown timeout, no longer; its buffer is
/// leaked, never freed, and the kernel's late write into it is harmless.
#[test]
fn the_shutdown_drain_gives_up_on_an_op_the_kernel_cannot_cancel() {
    if is_child("hung-read") {
        let fs = HungFs::mount().expect("mount the FUSE fixture");
        fs.reads_go_to_workers(true);
        fs.hold_reads(true);
        let file = std::fs::File::open(fs.file_path()).expect("open the FUSE file");
        let rt = uring::Runtime::builder()
            .shutdown_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        rt.block_on(async {
            let file = File::from_std(file).unwrap();
            drop(uring::spawn(async move {
                let _ = file.read_at(vec![0u8; 4096], 0).await;
                unreachable!("the read is held until after the runtime is gone");
            }));
            let start = Instant::now();
            while fs.held_reads() == 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the read never arrived"
                );
                uring::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let start = Instant::now();
        drop(rt);
        let took = start.elapsed();
        // Released only now: the worker's write lands in the leaked buffer.
        fs.hold_reads(false);
        fs.shutdown().expect("shutdown the FUSE fixture");
        assert!(
            took >= Duration::from_secs(1),
            "the drain waited ({took:?})"
        );
        println!("CHILD-OK the runtime's drop returned after {took:?}");
        return;
    }
    let stderr = in_child(
        "the_shutdown_drain_gives_up_on_an_op_the_kernel_cannot_cancel",
        "hung-read",
        Duration::from_secs(120),
    );
    assert!(
        stderr.contains("shutdown timeout") && stderr.contains("leaking"),
        "a clear warning: {stderr}"
    );
}

/// A `close()` polled once (its SQE queued) whose runtime shuts down before the kernel ran it,
/// and which is dropped later without a poll, still closes its fd. A FUSE file's close goes to an
/// io-wq worker (the file has a flush method), where a cancel could catch it before it runs.
#[test]
fn a_close_in_flight_at_shutdown_and_dropped_later_closes_its_fd() {
    if is_child("close-at-shutdown") {
        let fs = HungFs::mount().expect("mount the FUSE fixture");
        let path = fs.file_path();
        let file = std::fs::File::open(&path).expect("open the FUSE file");
        let fd = file.as_raw_fd();
        let pending = RefCell::new(None);
        let rt = uring::Runtime::new().unwrap();
        rt.block_on(async {
            let file = File::from_std(file).unwrap();
            let mut close: Pin<Box<_>> = Box::pin(file.close());
            assert!(poll_once(&mut close).await.is_pending());
            *pending.borrow_mut() = Some(close);
        });
        drop(rt);
        drop(pending);
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}"));
        assert!(
            !matches!(&link, Ok(l) if *l == path),
            "fd {fd} still open on {}",
            path.display()
        );
        fs.shutdown().expect("shutdown the FUSE fixture");
        println!("CHILD-OK fd {fd} closed");
        return;
    }
    in_child(
        "a_close_in_flight_at_shutdown_and_dropped_later_closes_its_fd",
        "close-at-shutdown",
        Duration::from_secs(120),
    );
}

/// A read whose future outlives a runtime that gave up on it (the kernel still holds the read)
/// stays pending: it never hands its buffer back while the kernel may write into it.
#[test]
fn a_kept_read_the_drain_gave_up_on_stays_pending() {
    if is_child("kept-read") {
        let fs = HungFs::mount().expect("mount the FUSE fixture");
        fs.reads_go_to_workers(true);
        fs.hold_reads(true);
        let file = File::from_std(std::fs::File::open(fs.file_path()).unwrap()).unwrap();
        let kept = RefCell::new(None);
        let rt = uring::Runtime::builder()
            .shutdown_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        rt.block_on(async {
            let mut read: Pin<Box<_>> = Box::pin(file.read_at(vec![0u8; 4096], 0));
            assert!(poll_once(&mut read).await.is_pending());
            until(|| fs.held_reads() == 1, "the read never arrived").await;
            *kept.borrow_mut() = Some(read);
        });
        drop(rt);
        let mut read = kept.into_inner().unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            read.as_mut().poll(&mut cx).is_pending(),
            "outside any runtime"
        );
        uring::run(async {
            assert!(
                poll_once(&mut read).await.is_pending(),
                "in another runtime"
            );
        });
        // Dropped while the kernel holds it: its buffer is leaked, then the kernel writes.
        drop(read);
        fs.hold_reads(false);
        fs.shutdown().expect("shutdown the FUSE fixture");
        println!("CHILD-OK the kept read stayed pending");
        return;
    }
    in_child(
        "a_kept_read_the_drain_gave_up_on_stays_pending",
        "kept-read",
        Duration::from_secs(120),
    );
}

/// A close whose flush hangs, kept past a runtime that gave up on it, does not close the fd
/// number again when polled or dropped later (the kernel removed the fd from the table before
/// the flush; the number may belong to another file by then).
#[test]
fn a_kept_close_the_drain_gave_up_on_closes_no_other_fd() {
    if is_child("kept-close") {
        let fs = HungFs::mount().expect("mount the FUSE fixture");
        fs.hold_flush(true);
        let file = File::from_std(std::fs::File::open(fs.file_path()).unwrap()).unwrap();
        let fd = file.as_raw_fd();
        let kept = RefCell::new(None);
        let rt = uring::Runtime::builder()
            .shutdown_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        rt.block_on(async {
            let mut close: Pin<Box<_>> = Box::pin(file.close());
            assert!(poll_once(&mut close).await.is_pending());
            until(|| fs.held_flushes() == 1, "the flush never arrived").await;
            *kept.borrow_mut() = Some(close);
        });
        drop(rt);
        // The number is free again: the next open gets it.
        let other = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            other.as_raw_fd(),
            fd,
            "the kernel freed the number before the flush"
        );
        let mut close = kept.into_inner().unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(close.as_mut().poll(&mut cx).is_pending());
        drop(close);
        // SAFETY: INV-ffi: F_GETFD on a number; no memory is passed.
        let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
        assert!(open, "the other file's fd was closed");
        drop(other);
        fs.hold_flush(false);
        fs.shutdown().expect("shutdown the FUSE fixture");
        println!("CHILD-OK fd {fd} (now /dev/null) stayed open");
        return;
    }
    in_child(
        "a_kept_close_the_drain_gave_up_on_closes_no_other_fd",
        "kept-close",
        Duration::from_secs(120),
    );
}

/// The drain's warning goes to stderr; a closed stderr (a pipe whose reader is gone) must not
/// make it panic, which would unwind out of the runtime's drop and free buffers the kernel still
/// holds.
#[test]
fn a_drain_that_gives_up_with_stderr_closed_does_not_panic() {
    if is_child("stderr-closed") {
        let fs = HungFs::mount().expect("mount the FUSE fixture");
        fs.reads_go_to_workers(true);
        fs.hold_reads(true);
        let file = File::from_std(std::fs::File::open(fs.file_path()).unwrap()).unwrap();
        let rt = uring::Runtime::builder()
            .shutdown_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        rt.block_on(async {
            drop(uring::spawn(async move {
                let _ = file.read_at(vec![0u8; 4096], 0).await;
            }));
            until(|| fs.held_reads() == 1, "the read never arrived").await;
        });
        // The parent closed its end of our stderr: writes to it fail with EPIPE.
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(rt)));
        fs.hold_reads(false);
        fs.shutdown().expect("shutdown the FUSE fixture");
        assert!(dropped.is_ok(), "the runtime's drop panicked");
        println!("CHILD-OK the drop returned");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "a_drain_that_gives_up_with_stderr_closed_does_not_panic",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(uring_tests::CHILD_ENV, "stderr-closed")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let mut stdout = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success() && stdout.contains("CHILD-OK"),
        "child failed ({status}): {stdout}"
    );
}

/// A zero shutdown timeout still gives ordinary ops (a read on an idle socket) the turn they
/// need to answer their cancel: nothing is leaked, the socket closes.
#[test]
fn a_zero_shutdown_timeout_still_cancels_ordinary_ops() {
    uring_tests::watchdog(Duration::from_secs(60), || {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a = uring::net::UnixStream::from_std(a).unwrap();
        let rt = uring::Runtime::builder()
            .shutdown_timeout(Duration::ZERO)
            .build()
            .unwrap();
        rt.block_on(async move {
            drop(uring::spawn(async move {
                let _ = a.read(vec![0u8; 64]).await;
            }));
            uring::yield_now().await;
        });
        drop(rt);
        // The read's cancel completed, its data (and the socket) were freed: the peer sees EOF.
        b.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 8];
        use std::io::Read;
        assert_eq!(b.read(&mut buf).unwrap(), 0, "the socket was closed");
    });
}
