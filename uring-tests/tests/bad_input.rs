//! Hostile or out-of-range arguments give a typed error (or a sane result), never a panic or an
//! abort: regression tests for findings of a review.

use std::io;
use std::time::Duration;
use uring::net::{AcceptBackoff, UnixDatagram, UnixListener, UnixStream};
use uring_tests::watchdog;

const LIMIT: Duration = Duration::from_secs(60);

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("uring-bad-input-{}-{name}", std::process::id()))
}

#[test]
fn positions_beyond_i64_max_are_invalid_input() {
    watchdog(LIMIT, || {
        uring::run(async {
            let path = temp_path("pos");
            uring::fs::write(&path, b"0123456789".to_vec())
                .await
                .unwrap();
            let f = uring::fs::File::open(&path).await.unwrap();
            // u64::MAX is -1 for the kernel: "the cursor". It must not be read as such.
            let (res, _) = f.read_at(Vec::with_capacity(8), u64::MAX).await;
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
            let (res, _) = f.read_exact_at(Vec::with_capacity(20), u64::MAX).await;
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
            let (res, _) = f.write_all_at(b"x".to_vec(), i64::MAX as u64 + 1).await;
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
            // A real position still works, and the cursor did not move the data.
            let (res, buf) = f.read_at(Vec::with_capacity(4), 2).await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(buf, b"2345");
            f.close().await.unwrap();
            uring::fs::remove_file(&path).await.unwrap();
        })
    });
}

#[test]
fn reading_a_huge_sparse_file_is_an_error_not_an_abort() {
    watchdog(LIMIT, || {
        uring::run(async {
            let path = temp_path("sparse");
            let f = uring::fs::File::create(&path).await.unwrap();
            f.set_len(1 << 42).await.unwrap();
            f.close().await.unwrap();
            let err = uring::fs::read(&path).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
            uring::fs::remove_file(&path).await.unwrap();
        })
    });
}

#[test]
fn unix_paths_with_interior_nul_are_invalid_input() {
    watchdog(LIMIT, || {
        uring::run(async {
            let bad = temp_path("a\0junk");
            let err = UnixListener::bind(&bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(
                !temp_path("a").exists(),
                "nothing bound at the truncated path"
            );
            let err = UnixStream::connect(&bad).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            let err = UnixDatagram::bind(&bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            let sock = UnixDatagram::unbound().unwrap();
            let (res, _) = sock.send_to(b"x".to_vec(), &bad).await;
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        })
    });
}

#[test]
fn extreme_durations_do_not_panic() {
    watchdog(LIMIT, || {
        uring::run(async {
            let mut every = uring::time::interval(Duration::MAX);
            every.tick().await;
            // The next tick is "never": it must simply not be ready.
            let next = uring::time::timeout(Duration::from_millis(5), every.tick()).await;
            assert!(next.is_err());

            let mut backoff = AcceptBackoff::new(Duration::MAX, Duration::MAX);
            let emfile = io::Error::from_raw_os_error(libc::EMFILE);
            let pause = uring::time::timeout(Duration::from_millis(5), backoff.on_error(emfile));
            assert!(pause.await.is_err(), "a huge pause is still a pause");
            assert_eq!(backoff.next_pause(), Duration::MAX);
        })
    });
}

#[test]
fn repeated_per_connection_errors_make_the_accept_loop_pause() {
    watchdog(LIMIT, || {
        uring::run(async {
            let mut backoff = AcceptBackoff::default();
            // EPERM from an LSM denial repeats forever without taking the connection: after a
            // run of them the loop must pause instead of spinning.
            for _ in 0..70 {
                backoff
                    .on_error(io::Error::from_raw_os_error(libc::EPERM))
                    .await
                    .unwrap();
            }
            assert!(backoff.pauses() > 0, "the loop never paused");
            backoff.on_success();
            assert_eq!(backoff.next_pause(), AcceptBackoff::default().next_pause());
        })
    });
}
