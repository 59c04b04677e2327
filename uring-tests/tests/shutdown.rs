//! Runtime shutdown against a filesystem that hangs: the drain is bounded, and a close in
//! flight at shutdown still closes its fd.
//!
//! The hung filesystem is [`uring_tests::fuse::HungFs`], served by a thread of the test process;
//! each test runs in a child process (mounting is process-wide state) under a time limit.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::pin::Pin;
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
