//! `uring::metrics()` and `Runtime::metrics()` against known workloads: n file reads are n READ
//! submissions and n completions, k spawns are k tasks, live sleeps are pending timers, a full
//! submission queue backlogs, a burst of completions overflows a tiny completion ring, a much
//! read file takes a registered-file slot, and outside a runtime everything reads zero.
//!
//! Every test builds its own runtime inside a watchdog.

use io_uring::opcode;
use std::time::Duration;
use uring::fs::File;
use uring::task::JoinSet;
use uring::time::sleep;
use uring::{Metrics, Runtime};
use uring_tests::{run_watched, watchdog, zeroed_empty, TempDir};

const LIMIT: Duration = Duration::from_secs(120);
const READ: u8 = opcode::Read::CODE;

fn test_file(tag: &str, len: usize) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(tag);
    let path = dir.path("data");
    std::fs::write(&path, vec![7u8; len]).unwrap();
    (dir, path)
}

#[test]
fn n_file_reads_are_n_read_submissions_and_n_completions() {
    let (_dir, path) = test_file("metrics-reads", 4096);
    run_watched(LIMIT, move || async move {
        let file = File::open(&path).await.unwrap();
        let n = 10u64;
        let before = uring::metrics();
        for i in 0..n {
            let (res, _) = file.read_at(zeroed_empty(64), i * 64).await;
            assert_eq!(res.unwrap(), 64);
        }
        let after = uring::metrics();
        assert_eq!(after.submitted(READ) - before.submitted(READ), n);
        assert_eq!(after.ops_submitted() - before.ops_submitted(), n);
        assert_eq!(after.completions() - before.completions(), n);
        assert!(after.enters() > before.enters());
        assert_eq!(after.ops_in_flight(), before.ops_in_flight());
        // Other opcodes did not move.
        for code in [
            opcode::Write::CODE,
            opcode::Recv::CODE,
            opcode::OpenAt::CODE,
        ] {
            assert_eq!(after.submitted(code), before.submitted(code));
        }
        let reads = after
            .submitted_by_opcode()
            .find(|(name, _)| *name == "READ")
            .map(|(_, c)| c);
        assert_eq!(reads, Some(after.submitted(READ)));
        // The open was one OPENAT.
        assert!(after.submitted(opcode::OpenAt::CODE) >= 1);
        let dbg = format!("{after:?}");
        assert!(dbg.contains("\"READ\""), "{dbg}");
    });
}

#[test]
fn concurrent_reads_in_k_tasks() {
    let (_dir, path) = test_file("metrics-tasks", 64 * 1024);
    run_watched(LIMIT, move || async move {
        let file = std::rc::Rc::new(File::open(&path).await.unwrap());
        let k = 50u64;
        let reads_each = 4u64;
        let before = uring::metrics();
        let mut set = JoinSet::new();
        for t in 0..k {
            let f = file.clone();
            set.spawn(async move {
                for r in 0..reads_each {
                    let (res, _) = f.read_at(zeroed_empty(100), (t * 4 + r) * 100).await;
                    assert_eq!(res.unwrap(), 100);
                }
            });
        }
        let spawned = uring::metrics();
        assert_eq!(spawned.tasks_spawned() - before.tasks_spawned(), k);
        assert_eq!(spawned.tasks_alive() - before.tasks_alive(), k);
        while let Some(res) = set.join_next().await {
            res.unwrap();
        }
        let after = uring::metrics();
        assert_eq!(
            after.submitted(READ) - before.submitted(READ),
            k * reads_each
        );
        assert_eq!(after.completions() - before.completions(), k * reads_each);
        assert_eq!(after.tasks_spawned() - before.tasks_spawned(), k);
        assert_eq!(after.tasks_alive(), before.tasks_alive(), "all finished");
        assert_eq!(after.ops_in_flight(), before.ops_in_flight());
    });
}

#[test]
fn tasks_spawned_and_alive() {
    watchdog(LIMIT, || {
        let rt = Runtime::new().unwrap();
        let m = rt.metrics();
        assert_eq!((m.tasks_spawned(), m.tasks_alive()), (0, 0));
        rt.block_on(async {
            let mut set = JoinSet::new();
            for _ in 0..7 {
                set.spawn(std::future::pending::<()>());
            }
            let done = uring::spawn(async { 1 });
            done.await.unwrap();
            // A task spawned from another thread counts too.
            let spawner = uring::spawner();
            let remote = std::thread::spawn(move || spawner.spawn(|| async { 2 }))
                .join()
                .unwrap();
            assert_eq!(remote.await.unwrap(), 2);
            let m = uring::metrics();
            assert_eq!(m.tasks_spawned(), 9);
            assert_eq!(m.tasks_alive(), 7);
            set.abort_all();
            while set.join_next().await.is_some() {}
            assert_eq!(uring::metrics().tasks_alive(), 0);
        });
        // Read from outside the runtime, after it ran.
        let m = rt.metrics();
        assert_eq!((m.tasks_spawned(), m.tasks_alive()), (9, 0));
    });
}

#[test]
fn timers_pending_follow_live_sleeps() {
    run_watched(LIMIT, || async {
        let base = uring::metrics().timers_pending();
        let mut set = JoinSet::new();
        for _ in 0..20 {
            set.spawn(sleep(Duration::from_secs(3600)));
        }
        for _ in 0..5 {
            set.spawn(sleep(Duration::from_millis(10)));
        }
        // Let each task register its sleep.
        uring::yield_now().await;
        uring::yield_now().await;
        assert_eq!(uring::metrics().timers_pending() - base, 25);
        // The short ones fire.
        for _ in 0..5 {
            set.join_next().await.unwrap().unwrap();
        }
        assert_eq!(uring::metrics().timers_pending() - base, 20);
        // Aborting the rest drops their sleeps.
        set.shutdown().await;
        assert_eq!(uring::metrics().timers_pending(), base);
        // A timeout is a timer while it waits, and none once it is over.
        let waited = uring::time::timeout(Duration::from_secs(3600), async {
            sleep(Duration::from_millis(5)).await;
            uring::metrics().timers_pending()
        });
        assert_eq!(
            waited.await.unwrap() - base,
            1,
            "the timeout's (the inner sleep fired)"
        );
        assert_eq!(uring::metrics().timers_pending(), base);
    });
}

#[test]
fn a_full_submission_queue_backlogs_and_a_completion_burst_overflows() {
    watchdog(LIMIT, || {
        // One SQ entry and the smallest completion ring (8).
        let rt = Runtime::builder().entries(1).build().unwrap();
        rt.block_on(async {
            let before = uring::metrics();
            let sockets: Vec<uring::net::UdpSocket> = (0..32)
                .map(|_| uring::net::UdpSocket::bind("127.0.0.1:0").unwrap())
                .collect();
            let addrs: Vec<_> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
            let sockets = std::rc::Rc::new(sockets);
            let mut set = JoinSet::new();
            for i in 0..32 {
                let s = sockets.clone();
                set.spawn(async move {
                    let (res, _) = s[i].recv_from(zeroed_empty(16)).await;
                    res.unwrap().0
                });
            }
            // Let every receive reach the kernel (32 SQEs through a 1-entry queue).
            while uring::metrics().ops_in_flight() < before.ops_in_flight() + 32 {
                uring::yield_now().await;
            }
            let queued = uring::metrics();
            assert!(
                queued.backlogged() > before.backlogged(),
                "32 ops through one SQ entry backlog: {queued:?}"
            );
            // Give the kernel a moment to have them all armed, then make every one complete
            // at once, from this thread, without yielding: 32 completions for 8 CQ entries.
            sleep(Duration::from_millis(20)).await;
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for a in &addrs {
                sender.send_to(b"ping", a).unwrap();
            }
            while let Some(res) = set.join_next().await {
                assert_eq!(res.unwrap(), 4);
            }
            let after = uring::metrics();
            assert!(
                after.cq_overflows() > before.cq_overflows(),
                "a burst of 32 completions overflows an 8-entry CQ: {after:?}"
            );
        });
    });
}

#[test]
fn a_much_read_file_is_a_registered_file_in_use() {
    let (_dir, path) = test_file("metrics-fixed", 8192);
    run_watched(LIMIT, move || async move {
        let before = uring::metrics();
        let file = File::open(&path).await.unwrap();
        // The file takes a slot at its 17th read or write.
        for i in 0..20u64 {
            let (res, _) = file.read_at(zeroed_empty(100), i * 100).await;
            res.unwrap();
        }
        let during = uring::metrics();
        assert_eq!(during.fixed_files_in_use() - before.fixed_files_in_use(), 1);
        assert_eq!(
            during.fixed_files_registered() - before.fixed_files_registered(),
            1
        );
        drop(file);
        assert_eq!(
            uring::metrics().fixed_files_in_use(),
            before.fixed_files_in_use()
        );
    });
}

#[test]
fn outside_a_runtime_metrics_are_zeros_and_driver_stats_agree() {
    watchdog(LIMIT, || {
        let m = uring::metrics();
        assert_eq!(m.tasks_spawned(), 0);
        assert_eq!(m.ops_submitted(), 0);
        assert_eq!(m.enters(), 0);
        assert_eq!(m.submitted_by_opcode().count(), 0);
        let zero = Metrics::default();
        assert_eq!(format!("{m:?}"), format!("{zero:?}"));

        let rt = Runtime::new().unwrap();
        rt.block_on(sleep(Duration::from_millis(1)));
        let m = rt.metrics();
        let d = rt.driver_stats();
        assert_eq!(m.enters(), d.enters);
        assert_eq!(m.completions(), d.completions);
        assert_eq!(m.ops_submitted(), d.ops_submitted);
        assert_eq!(m.driver_stats().enters, d.enters);
        assert!(m.enters() > 0, "the sleep waited in io_uring_enter");
    });
}
