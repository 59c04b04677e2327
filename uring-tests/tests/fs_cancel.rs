//! Dropping `read_at` futures with the read in flight, then reading again: the bytes are right,
//! no fd leaks, and (run under valgrind) no invalid access or leak of the dropped buffers.
//!
//! A separate test binary so it can run under valgrind on its own:
//!
//! ```text
//! URING_VALGRIND=1 valgrind --error-exitcode=1 --leak-check=full \
//!     target/debug/deps/fs_cancel-<hash> --test-threads=1
//! ```
//!
//! Buffers are zero-initialised (`vec![0; n]`): valgrind cannot see the kernel's writes.

use std::future::Future;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;
use uring::fs::{AlignedBuf, File, OpenOptions};
use uring_tests::{fds_open_on, under_valgrind, watchdog};

const LIMIT: Duration = Duration::from_secs(300);

fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("uring-fs-cancel-{tag}-{}", std::process::id()))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

/// Polls `fut` up to `polls` times, yielding to the loop in between (so its SQE reaches the
/// kernel), then drops it if it has not finished. Returns its output if it finished.
async fn poll_then_drop<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for _ in 0..polls {
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if let Poll::Ready(v) = polled {
            return Some(v);
        }
        uring::yield_now().await;
    }
    None
}

/// How many of this process's fds are open on `path` (robust against other tests opening and
/// closing their own fds in parallel).

#[test]
fn dropped_reads_then_reread_give_correct_bytes() {
    let path = temp_path("file");
    let len = if under_valgrind() { 1 << 20 } else { 8 << 20 };
    let data = pattern(len);
    std::fs::write(&path, &data).unwrap();
    let p = path.clone();
    let (dropped, finished) = watchdog(LIMIT, move || {
        let watched = p.clone();
        let out = uring::run(async move {
            let f = File::open(&p).await.unwrap();
            let (mut dropped, mut finished) = (0, 0);
            for round in 0..24usize {
                let polls = round % 4;
                let off = (round * 4096 * 13) % (len / 2);
                let size = len / 2 - (round % 3) * 4096;
                let read = f.read_at(vec![0u8; size], off as u64);
                match poll_then_drop(read, polls).await {
                    Some((res, buf)) => {
                        finished += 1;
                        assert_eq!(res.unwrap(), size);
                        assert!(buf[..] == data[off..off + size]);
                    }
                    None => dropped += 1,
                }
                // The same range again, after the drop: correct bytes.
                let (res, buf) = f.read_at(vec![0u8; size], off as u64).await;
                assert_eq!(res.unwrap(), size);
                assert!(
                    buf[..] == data[off..off + size],
                    "round {round}: wrong bytes"
                );
            }
            // Several reads in flight dropped at once, with the file closed right after.
            let reads: Vec<_> = (0..8)
                .map(|i| Box::pin(f.read_at(vec![0u8; 65536], i * 65536)))
                .collect();
            let mut reads = reads;
            for r in reads.iter_mut() {
                let _ = poll_then_drop(r.as_mut(), 1).await;
            }
            drop(reads);
            f.close().await.unwrap();
            (dropped, finished)
        });
        // The runtime is gone: every op completed, every fd closed.
        assert_eq!(fds_open_on(&watched), 0, "fds leaked");
        out
    });
    let _ = std::fs::remove_file(&path);
    assert!(dropped > 0, "some reads were dropped in flight");
    assert_eq!(dropped + finished, 24);
}

/// A read that cannot complete (an empty FIFO) is certainly in flight when dropped; the cancel
/// must end it, so a later write is read by the next read, not swallowed by the dropped one.
#[test]
fn dropped_read_on_empty_fifo_is_cancelled() {
    let path = temp_path("fifo");
    let _ = std::fs::remove_file(&path);
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: plain syscall on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let p = path.clone();
    let got = watchdog(LIMIT, move || {
        uring::run(async move {
            // O_RDWR: opening does not wait for a writer.
            let std_file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&p)
                .unwrap();
            let writer = std_file.try_clone().unwrap();
            let f = File::from_std(std_file).unwrap();
            let res =
                uring::time::timeout(Duration::from_millis(50), f.read_at(vec![0u8; 64], 0)).await;
            assert!(
                res.is_err(),
                "nothing to read: the read times out and is dropped"
            );
            // Let the cancel reach the kernel and complete.
            uring::time::sleep(Duration::from_millis(50)).await;
            use std::io::Write;
            (&writer).write_all(b"after the cancel").unwrap();
            let (res, buf) = f.read_at(vec![0u8; 64], 0).await;
            let n = res.unwrap();
            buf[..n].to_vec()
        })
    });
    let _ = std::fs::remove_file(&path);
    assert_eq!(got, b"after the cancel");
}

/// An O_DIRECT read goes to the device, so it is in flight for real when dropped.
#[test]
fn dropped_o_direct_reads_then_reread() {
    let path = temp_path("direct");
    let len = 4 << 20;
    let data = pattern(len);
    std::fs::write(&path, &data).unwrap();
    let p = path.clone();
    let checked = watchdog(LIMIT, move || {
        uring::run(async move {
            let f = match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&p)
                .await
            {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return 0,
                Err(e) => panic!("{e}"),
            };
            let mut checked = 0;
            for round in 0..16usize {
                let off = round * 65536;
                let read = f.read_at(AlignedBuf::zeroed(1 << 20), off as u64);
                let _ = poll_then_drop(read, round % 3).await;
                let (res, buf) = f.read_at(AlignedBuf::zeroed(1 << 20), off as u64).await;
                assert_eq!(res.unwrap(), 1 << 20);
                assert!(buf[..] == data[off..off + (1 << 20)]);
                checked += 1;
            }
            checked
        })
    });
    let _ = std::fs::remove_file(&path);
    if checked == 0 {
        eprintln!("the temp dir's filesystem refuses O_DIRECT");
    } else {
        assert_eq!(checked, 16);
    }
}
