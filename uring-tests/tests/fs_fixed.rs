//! Registered (fixed) files: slots are taken, freed and reused; a full table falls back to fds.

use std::path::PathBuf;
use std::time::Duration;
use uring::fs::File;
use uring_tests::{is_child, run_child, watchdog, zeroed_empty, Rng, TempDir};

const LIMIT: Duration = Duration::from_secs(120);

/// An empty buffer of `capacity` bytes whose memory is zeroed, so valgrind (which cannot see the
/// kernel's writes) counts what a read puts there as initialized.
/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// A file read through the ring many times takes a slot in the ring's registered-file table
/// (at its 17th read or write), freed when the file closes (or, if a dropped read still holds it,
/// when that read completes) and handed to a later file. 10,000 opens, more than the table's
/// 4,096 slots, with up to 16 files open at once and some reads dropped in flight: every read
/// returns its own file's bytes, and at the end no slot is taken. Valgrind-clean:
/// `URING_VALGRIND=1 valgrind target/debug/deps/fs-<hash> registered --test-threads=1`.
#[test]
fn registered_file_slots_are_freed_and_reused() {
    const FILES: usize = 64;
    const OPENS: usize = 10_000;
    const READS_PER_OPEN: usize = 20;
    const WINDOW: usize = 16;
    let dir = TempDir::new("fixed");
    let contents: Vec<Vec<u8>> = (0..FILES)
        .map(|i| Rng(i as u64 + 1).bytes(8192 + i * 100))
        .collect();
    let paths: Vec<PathBuf> = (0..FILES).map(|i| dir.path(&format!("f{i}"))).collect();
    for (p, c) in paths.iter().zip(&contents) {
        std::fs::write(p, c).unwrap();
    }
    let stats = watchdog(LIMIT, move || {
        let rt = uring::Runtime::new().unwrap();
        rt.block_on(async {
            let mut open: std::collections::VecDeque<(usize, File)> = Default::default();
            for n in 0..OPENS {
                let i = (n * 7) % FILES;
                let f = File::open(&paths[i]).await.unwrap();
                let len = contents[i].len();
                for r in 0..READS_PER_OPEN {
                    let off = (n * 13 + r * 101) % (len - 100);
                    let (res, buf) = f.read_at(zeroed_empty(100), off as u64).await;
                    assert_eq!(res.unwrap(), 100, "open {n} of file {i}");
                    assert!(
                        buf[..] == contents[i][off..off + 100],
                        "open {n}: file {i}'s bytes"
                    );
                }
                if n % 10 == 0 {
                    // A read submitted and then dropped: it keeps the file's slot until the
                    // kernel completes it, even after the File below is gone.
                    let mut read = std::pin::pin!(f.read_at(vec![0u8; len], 0));
                    let _ = std::future::poll_fn(|cx| {
                        let polled = std::future::Future::poll(read.as_mut(), cx);
                        std::task::Poll::Ready(polled.is_ready())
                    })
                    .await;
                }
                open.push_back((i, f));
                if open.len() > WINDOW {
                    // Read the oldest open file once more (its slot was kept all along), then
                    // close it; alternate between close() and drop.
                    let (j, old) = open.pop_front().unwrap();
                    let (res, buf) = old.read_at(zeroed_empty(64), 0).await;
                    assert_eq!(res.unwrap(), 64);
                    assert!(buf[..] == contents[j][..64], "file {j} reread");
                    if n % 2 == 0 {
                        old.close().await.unwrap();
                    } else {
                        drop(old);
                    }
                }
            }
            drop(open);
            // The dropped reads free their slots when their completions arrive.
            for _ in 0..3000 {
                if rt.driver_stats().fixed_files_in_use == 0 {
                    break;
                }
                uring::time::sleep(Duration::from_millis(10)).await;
            }
        });
        rt.driver_stats()
    });
    if kernel_at_least(5, 19) {
        assert_eq!(
            stats.fixed_files_registered, OPENS as u64,
            "every file was registered once: {stats:?}"
        );
    }
    assert_eq!(
        stats.fixed_files_in_use, 0,
        "every slot was freed: {stats:?}"
    );
}

/// Reads 96 bytes `rounds` times from each file (`i`, file of `contents[i % 8]`) and checks them.
async fn read_all(files: &[(usize, File)], contents: &[Vec<u8>], rounds: usize) {
    for r in 0..rounds {
        for (i, f) in files {
            let off = (r * 37) % 4000;
            let (res, buf) = f.read_at(zeroed_empty(96), off as u64).await;
            assert_eq!(res.unwrap(), 96);
            assert!(buf[..] == contents[i % 8][off..off + 96], "file {i}");
        }
    }
}

/// With the registered-file table full, files are read by their fds, correctly, and take a slot
/// as soon as closing files free some. The table is made small (64 slots) by creating the
/// runtime under a low `RLIMIT_NOFILE`, in a child process.
#[test]
fn full_registered_file_table_falls_back_to_fds() {
    const SLOTS: usize = 64;
    const OPEN: usize = 100;
    const CLOSE: usize = 50;
    if is_child("fixed-full") {
        let dir = TempDir::new("fixed-full");
        let contents: Vec<Vec<u8>> = (0..8).map(|i| Rng(i + 11).bytes(4096)).collect();
        let paths: Vec<PathBuf> = (0..8).map(|i| dir.path(&format!("f{i}"))).collect();
        for (p, c) in paths.iter().zip(&contents) {
            std::fs::write(p, c).unwrap();
        }
        let old = uring_tests::set_nofile_limit(SLOTS as u64);
        let rt = uring::Runtime::new().unwrap();
        uring_tests::set_nofile_limit(old);
        rt.block_on(async {
            let mut files = Vec::new();
            for i in 0..OPEN {
                files.push((i, File::open(&paths[i % 8]).await.unwrap()));
            }
            read_all(&files, &contents, 20).await;
            let s = rt.driver_stats();
            assert_eq!(s.fixed_files_in_use, SLOTS as u64, "table full: {s:?}");
            assert_eq!(s.fixed_files_registered, SLOTS as u64, "{s:?}");
            files.drain(..CLOSE);
            read_all(&files, &contents, 2).await;
            let s = rt.driver_stats();
            assert_eq!(s.fixed_files_in_use, (OPEN - CLOSE) as u64, "{s:?}");
            assert_eq!(s.fixed_files_registered, OPEN as u64, "{s:?}");
        });
        println!("CHILD-OK");
        return;
    }
    if !kernel_at_least(5, 19) {
        eprintln!("skipped: sparse registered-file tables need Linux 5.19");
        return;
    }
    let out = run_child("full_registered_file_table_falls_back_to_fds", "fixed-full");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
