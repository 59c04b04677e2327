//! The hung-FUSE fixture ([`uring_tests::fuse::HungFs`]) on the real kernel: reads and FLUSHes it
//! holds block until released, and an io_uring read it holds cannot be cancelled.
//!
//! Each scenario mounts in a child process (`run_child`), in a private mount namespace. The
//! child prints `CHILD-OK` and what it observed; the parent shows those lines (`--nocapture`).

#![deny(clippy::undocumented_unsafe_blocks)]

use io_uring::{opcode, squeue, types, IoUring};
use std::fs::File;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use uring_tests::fuse::{file_contents, HungFs, FILE_SIZE};
use uring_tests::{is_child, run_child};

/// How long a held operation must stay blocked to count as blocked.
const STILL_BLOCKED: Duration = Duration::from_millis(300);
/// How long anything that should happen promptly may take (the machine is shared).
const PROMPT: Duration = Duration::from_secs(10);

/// Runs `test` in a child as `role` and asserts it printed `CHILD-OK`.
fn in_child(test: &str, role: &str) {
    let out = run_child(test, role);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for line in stdout.lines().filter(|l| l.contains("CHILD")) {
        eprintln!("{line}");
    }
}

/// Scenario 1: nothing held. The file reads back as the pattern (a whole-file read, then EOF),
/// and the mount is in this thread's mount namespace only, not in init's.
#[test]
fn unheld_read_returns_the_pattern() {
    if is_child("plain") {
        let fs = HungFs::mount().expect("mount the FUSE fixture");
        let data = std::fs::read(fs.file_path()).expect("read the FUSE file");
        assert_eq!(data, file_contents());
        let names: Vec<_> = std::fs::read_dir(fs.mount_point())
            .expect("list the root")
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"]);
        let mnt = fs.mount_point().to_str().unwrap().to_owned();
        let mounted_in = |mountinfo: &str| {
            std::fs::read_to_string(mountinfo)
                .unwrap()
                .lines()
                .any(|l| l.split(' ').nth(4) == Some(mnt.as_str()))
        };
        assert!(mounted_in("/proc/thread-self/mountinfo"), "mounted here");
        assert!(!mounted_in("/proc/1/mountinfo"), "invisible to init");
        fs.shutdown().expect("shutdown");
        assert!(!mounted_in("/proc/thread-self/mountinfo"), "unmounted");
        assert!(!std::path::Path::new(&mnt).exists(), "mount point removed");
        println!(
            "CHILD-OK read {} bytes, root lists {names:?}; mounted only in this thread's \
             namespace; unmounted and removed on shutdown",
            data.len()
        );
        return;
    }
    in_child("unheld_read_returns_the_pattern", "plain");
}

/// Scenario 2: a held READ blocks a thread's pread until released; then it returns the right bytes.
#[test]
fn held_read_blocks_pread_until_released() {
    if is_child("pread") {
        let fs = HungFs::mount().expect("mount the FUSE fixture");
        fs.hold_reads(true);
        let path = fs.file_path();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let file = File::open(path).expect("open the FUSE file");
            let mut buf = vec![0u8; FILE_SIZE];
            let res = file.read_at(&mut buf, 0).map(|n| buf[..n].to_vec());
            tx.send((res, Instant::now())).unwrap();
        });
        assert!(
            fs.wait_held_reads(1, PROMPT),
            "the pread never reached the daemon"
        );
        assert_eq!(fs.held_reads(), 1);
        assert!(
            rx.recv_timeout(STILL_BLOCKED).is_err(),
            "pread returned while its READ was held"
        );
        let released = Instant::now();
        fs.hold_reads(false);
        let (res, done) = rx
            .recv_timeout(PROMPT)
            .expect("pread finishes once released");
        reader.join().unwrap();
        let data = res.expect("pread after release");
        assert_eq!(data, file_contents());
        assert_eq!(fs.held_reads(), 0);
        fs.shutdown().expect("shutdown");
        println!(
            "CHILD-OK pread blocked while held, returned {} right bytes {:?} after release",
            data.len(),
            done.duration_since(released)
        );
        return;
    }
    in_child("held_read_blocks_pread_until_released", "pread");
}

/// Scenario 3, the case the fixture exists for: an IORING_OP_READ on the held file, in an io-wq
/// worker (IOSQE_ASYNC, as a read of a hung NFS file would be: scenario 3b shows why it is
/// needed), then IORING_OP_ASYNC_CANCEL for it. The kernel cannot cancel it: the cancel's CQE
/// says so and no CQE for the read arrives within 1 s; once released, the read completes with the
/// right bytes.
#[test]
fn held_io_uring_read_cannot_be_cancelled() {
    if is_child("uring") {
        const READ: u64 = 1;
        const CANCEL: u64 = 2;
        // Declaration order is drop order reversed: on a failed assertion `file` and then `fs`
        // drop first (releasing the held read, which completes into the still-live `buf`), then
        // `buf`, then the ring.
        let mut ring = IoUring::new(8).expect("io_uring");
        let mut buf = vec![0u8; FILE_SIZE];
        let fs = HungFs::mount().expect("mount the FUSE fixture");
        let file = File::open(fs.file_path()).expect("open the FUSE file");
        fs.hold_reads(true);

        let read = opcode::Read::new(
            types::Fd(file.as_raw_fd()),
            buf.as_mut_ptr(),
            FILE_SIZE as u32,
        )
        .offset(0)
        .build()
        .flags(squeue::Flags::ASYNC)
        .user_data(READ);
        // SAFETY: `buf` and `file` outlive the read: it completes (we wait for its CQE below,
        // or on unwinding `fs` releases it) before either is dropped.
        unsafe { ring.submission().push(&read).expect("SQ has room") };
        ring.submit().expect("submit the read");
        assert!(
            fs.wait_held_reads(1, PROMPT),
            "the io_uring read never reached the daemon"
        );
        assert!(
            ring.completion().is_empty(),
            "the read completed while held"
        );

        let cancel = opcode::AsyncCancel::new(READ).build().user_data(CANCEL);
        // SAFETY: the cancel SQE refers to no memory.
        unsafe { ring.submission().push(&cancel).expect("SQ has room") };
        let cancelled_at = Instant::now();
        ring.submit().expect("submit the cancel");

        // Collect CQEs for 1 s after the cancel.
        let mut cancel_res = None;
        let mut read_res = None;
        let window = Duration::from_secs(1);
        while cancelled_at.elapsed() < window {
            let left = window.saturating_sub(cancelled_at.elapsed());
            let ts = types::Timespec::from(left);
            let args = types::SubmitArgs::new().timespec(&ts);
            match ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                Err(e) => panic!("wait for CQEs: {e}"),
            }
            for cqe in ring.completion() {
                match cqe.user_data() {
                    READ => read_res = Some((cqe.result(), cancelled_at.elapsed())),
                    CANCEL => cancel_res = Some(cqe.result()),
                    other => panic!("unexpected CQE {other}"),
                }
            }
        }
        let interrupts = fs.interrupts();
        let describe = |res: i32| {
            if res < 0 {
                format!("{res} ({})", std::io::Error::from_raw_os_error(-res))
            } else {
                res.to_string()
            }
        };
        let cancel_res = cancel_res.expect("the cancel's CQE arrives within 1 s");
        if let Some((res, after)) = read_res {
            // The kernel did cancel it: report loudly, this changes the plan.
            fs.hold_reads(false);
            panic!(
                "THE KERNEL CANCELLED THE HELD READ: read CQE {} after {after:?}, cancel CQE {}, \
                 {interrupts} INTERRUPT(s) seen by the daemon",
                describe(res),
                describe(cancel_res)
            );
        }
        assert_eq!(
            fs.held_reads(),
            1,
            "the READ is still held after the cancel"
        );

        let released = Instant::now();
        fs.hold_reads(false);
        let deadline = released + PROMPT;
        let (res, after) = loop {
            let ts = types::Timespec::from(deadline.saturating_duration_since(Instant::now()));
            let args = types::SubmitArgs::new().timespec(&ts);
            match ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                Err(e) => panic!("wait for the read's CQE: {e}"),
            }
            if let Some(cqe) = ring.completion().next() {
                assert_eq!(cqe.user_data(), READ);
                break (cqe.result(), released.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "the released read did not complete"
            );
        };
        assert_eq!(res, FILE_SIZE as i32, "read result {}", describe(res));
        assert_eq!(buf, file_contents());
        drop(file);
        fs.shutdown().expect("shutdown");
        drop(ring);
        println!(
            "CHILD-OK cancel CQE {}; no read CQE within 1 s of the cancel; {interrupts} \
             INTERRUPT(s) reached the daemon; after release the read completed with {res} right \
             bytes in {after:?}",
            describe(cancel_res)
        );
        return;
    }
    in_child("held_io_uring_read_cannot_be_cancelled", "uring");
}

/// Scenario 3b: without IOSQE_ASYNC the same read does not reach io-wq. The FUSE file has a
/// `poll` method and, POLL being answered ENOSYS, counts as always ready, so io_uring issues the
/// read inline with IOCB_NOWAIT, which FUSE's direct I/O ignores. The read then blocks the
/// submitting thread inside io_uring_enter(2) until it is answered, and completes there.
#[test]
fn held_inline_io_uring_read_blocks_the_submitter() {
    if is_child("inline") {
        let fs = HungFs::mount().expect("mount the FUSE fixture");
        let file = File::open(fs.file_path()).expect("open the FUSE file");
        fs.hold_reads(true);
        let fd = file.as_raw_fd();
        // The submitter reports as soon as io_uring_enter returns: its result and the read's
        // CQE if that was already posted.
        let (tx, rx) = mpsc::channel();
        let submitter = std::thread::spawn(move || {
            let mut ring = IoUring::new(8).expect("io_uring");
            let mut buf = vec![0u8; FILE_SIZE];
            let read = opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), FILE_SIZE as u32)
                .offset(0)
                .build()
                .user_data(1);
            // SAFETY: `buf` outlives the read (this thread takes its CQE before returning `buf`)
            // and the fd stays open: the test thread keeps `file` until this thread has joined.
            unsafe { ring.submission().push(&read).expect("SQ has room") };
            let submitted = ring.submit().map_err(|e| e.to_string());
            let posted = ring.completion().next().map(|c| c.result());
            tx.send((submitted, posted, Instant::now())).unwrap();
            if posted.is_none() {
                ring.submit_and_wait(1).expect("wait for the read");
            }
            buf
        });
        assert!(
            fs.wait_held_reads(1, PROMPT),
            "the io_uring read never reached the daemon"
        );
        let early = rx.recv_timeout(STILL_BLOCKED).ok();
        let blocked = early.is_none();
        let released = Instant::now();
        fs.hold_reads(false);
        let (submitted, posted, returned) = match early {
            Some(report) => report,
            None => rx
                .recv_timeout(PROMPT)
                .expect("io_uring_enter returns once the read is released"),
        };
        let buf = submitter.join().unwrap();
        drop(file);
        let enosys = fs.enosys_opcodes();
        fs.shutdown().expect("shutdown");
        assert_eq!(submitted, Ok(1));
        assert!(
            blocked,
            "io_uring_enter returned while the READ was held (the read was punted, not issued \
             inline; CQE posted by then: {posted:?}; ENOSYS'd opcodes {enosys:?})"
        );
        assert_eq!(
            posted,
            Some(FILE_SIZE as i32),
            "the read's CQE was posted by the submit itself"
        );
        assert_eq!(buf, file_contents());
        println!(
            "CHILD-OK plain IORING_OP_READ: io_uring_enter blocked while the READ was held and \
             returned {:?} after release with the read's CQE ({} bytes) already posted; opcodes \
             answered ENOSYS: {enosys:?} (40 = POLL)",
            returned.duration_since(released),
            FILE_SIZE
        );
        return;
    }
    in_child("held_inline_io_uring_read_blocks_the_submitter", "inline");
}

/// Scenario 4: a held FLUSH blocks close(2) until released.
#[test]
fn held_flush_blocks_close_until_released() {
    if is_child("flush") {
        let fs = HungFs::mount().expect("mount the FUSE fixture");
        let fd = File::open(fs.file_path())
            .expect("open the FUSE file")
            .into_raw_fd();
        fs.hold_flush(true);
        let (tx, rx) = mpsc::channel();
        let closer = std::thread::spawn(move || {
            // SAFETY: `fd` is ours (taken from the File above) and closed only here.
            let rc = unsafe { libc::close(fd) };
            let err = std::io::Error::last_os_error();
            tx.send((rc, err, Instant::now())).unwrap();
        });
        assert!(
            fs.wait_held_flushes(1, PROMPT),
            "close(2) sent no FLUSH to the daemon"
        );
        assert!(
            rx.recv_timeout(STILL_BLOCKED).is_err(),
            "close(2) returned while its FLUSH was held"
        );
        let released = Instant::now();
        fs.hold_flush(false);
        let (rc, err, done) = rx
            .recv_timeout(PROMPT)
            .expect("close finishes once released");
        closer.join().unwrap();
        assert_eq!(rc, 0, "close: {err}");
        fs.shutdown().expect("shutdown");
        println!(
            "CHILD-OK close(2) blocked while FLUSH was held, returned 0 {:?} after release",
            done.duration_since(released)
        );
        return;
    }
    in_child("held_flush_blocks_close_until_released", "flush");
}

/// Scenario 5: teardown with a READ held. `shutdown` answers it (the blocked pread returns the
/// right bytes) and the server thread joins; a file still open afterwards fails with ENOTCONN.
#[test]
fn shutdown_answers_held_requests() {
    if is_child("teardown") {
        let fs = HungFs::mount().expect("mount the FUSE fixture");
        let file = std::sync::Arc::new(File::open(fs.file_path()).expect("open the FUSE file"));
        fs.hold_reads(true);
        let (tx, rx) = mpsc::channel();
        let reader = {
            let file = file.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; FILE_SIZE];
                let res = file.read_at(&mut buf, 0).map(|n| buf[..n].to_vec());
                tx.send(res).unwrap();
            })
        };
        assert!(
            fs.wait_held_reads(1, PROMPT),
            "the pread never reached the daemon"
        );
        let started = Instant::now();
        fs.shutdown().expect("shutdown with a READ held");
        let took = started.elapsed();
        let data = rx
            .recv_timeout(PROMPT)
            .expect("the held pread finishes on shutdown")
            .expect("the held pread is answered, not failed");
        reader.join().unwrap();
        assert_eq!(data, file_contents());
        let mut buf = [0u8; 16];
        let after = file.read_at(&mut buf, 0).expect_err("read after shutdown");
        assert_eq!(after.raw_os_error(), Some(libc::ENOTCONN), "{after}");
        println!(
            "CHILD-OK shutdown took {took:?} with a READ held; the pread got its bytes; a later \
             read of the still-open file: {after}"
        );
        return;
    }
    in_child("shutdown_answers_held_requests", "teardown");
}
