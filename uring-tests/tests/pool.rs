//! Every core: `Pool` workers, cross-thread spawns and joins, `Spawner`, wakers crossing threads.
//!
//! Each test builds its own pool (or runtimes) under a watchdog; no time bounds beyond generous
//! limits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uring::net::{TcpListener, TcpStream};
use uring::{Pool, Runtime};
use uring_tests::{open_fds, watchdog};

const LIMIT: Duration = Duration::from_secs(300);

fn pool(n: usize) -> Pool {
    Pool::builder().threads(n).build().expect("start the pool")
}

#[test]
fn run_each_runs_one_future_per_worker_in_order() {
    watchdog(LIMIT, || {
        let p = pool(3);
        assert_eq!(p.threads(), 3);
        let got = p.run_each(|w| async move {
            // A !Send future: built and run on its worker.
            let rc = std::rc::Rc::new(w.index() * 10);
            uring::yield_now().await;
            (
                *rc,
                w.count(),
                std::thread::current().name().map(str::to_owned),
            )
        });
        let idx: Vec<usize> = got.iter().map(|g| g.0).collect();
        assert_eq!(idx, [0, 10, 20]);
        assert!(got.iter().all(|g| g.1 == 3));
        let names: std::collections::HashSet<_> = got.iter().map(|g| g.2.clone()).collect();
        assert_eq!(names.len(), 3, "three different threads: {names:?}");
    });
}

#[test]
fn a_panic_in_one_worker_is_raised_after_the_others_finish() {
    watchdog(LIMIT, || {
        let p = pool(2);
        let finished = Arc::new(AtomicUsize::new(0));
        let f = finished.clone();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.run_each(move |w| {
                let f = f.clone();
                async move {
                    if w.index() == 0 {
                        panic!("worker zero fails");
                    }
                    uring::time::sleep(Duration::from_millis(50)).await;
                    f.fetch_add(1, Ordering::SeqCst);
                }
            })
        }));
        let msg = caught
            .unwrap_err()
            .downcast::<&str>()
            .map(|m| m.to_string())
            .unwrap_or_default();
        assert_eq!(msg, "worker zero fails");
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the other worker finished first"
        );
        // The pool still works.
        assert_eq!(p.run_each(|w| async move { w.index() }), [0, 1]);
    });
}

#[test]
fn hundred_thousand_spawns_from_a_plain_thread_are_all_joined() {
    watchdog(LIMIT, || {
        let p = pool(2);
        let n = uring_tests::scaled(100_000);
        let handles: Vec<_> = (0..n)
            .map(|i| p.spawn(move || async move { i * 2 }))
            .collect();
        // Joined from this thread's own runtime.
        let sum = uring::run(async move {
            let mut sum = 0usize;
            for h in handles {
                sum += h.await.unwrap();
            }
            sum
        });
        assert_eq!(sum, n * (n - 1));
    });
}

#[test]
fn hundred_thousand_spawns_from_a_worker_to_the_others() {
    watchdog(LIMIT, || {
        let p = pool(3);
        let spawners: Vec<_> = (0..3).map(|i| p.spawner(i)).collect();
        let n = uring_tests::scaled(100_000);
        let total = p.spawn_on(0, move || async move {
            let mut handles = Vec::with_capacity(n);
            for i in 0..n {
                let target = &spawners[1 + i % 2];
                handles.push(target.spawn(move || async move {
                    (i, std::thread::current().name().map(str::to_owned))
                }));
            }
            let mut seen = std::collections::HashSet::new();
            let mut sum = 0;
            for h in handles {
                let (i, name) = h.await.unwrap();
                sum += i;
                seen.insert(name);
            }
            (sum, seen)
        });
        let (sum, seen) = uring::run(total).unwrap();
        assert_eq!(sum, n * (n - 1) / 2);
        assert_eq!(seen.len(), 2, "both other workers ran some: {seen:?}");
        assert!(!seen.contains(&Some("uring-worker-0".to_string())));
    });
}

#[test]
fn a_join_handle_is_awaited_on_another_worker_and_aborted_from_another_thread() {
    watchdog(LIMIT, || {
        let p = pool(2);
        let slow = p.spawn_on(0, || async {
            uring::time::sleep(Duration::from_millis(20)).await;
            "done on worker 0"
        });
        let got = uring::run(p.spawn_on(1, move || async move { slow.await.unwrap() }));
        assert_eq!(got.unwrap(), "done on worker 0");

        let forever = p.spawn_on(0, || async {
            std::future::pending::<()>().await;
        });
        let forever = Arc::new(Mutex::new(Some(forever)));
        let f = forever.clone();
        std::thread::spawn(move || f.lock().unwrap().as_ref().unwrap().abort())
            .join()
            .unwrap();
        let h = forever.lock().unwrap().take().unwrap();
        let err = uring::run(h).unwrap_err();
        assert!(err.is_cancelled());
    });
}

/// Counts drops, to show an output is dropped exactly once wherever its handle goes.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn outputs_are_dropped_once_when_handles_are_dropped_on_other_threads() {
    watchdog(LIMIT, || {
        let p = pool(2);
        let drops = Arc::new(AtomicUsize::new(0));
        let n = 2000;
        let mut handles = Vec::new();
        for i in 0..n {
            let d = drops.clone();
            handles.push(p.spawn(move || async move {
                if i % 2 == 0 {
                    uring::yield_now().await;
                }
                Counted(d)
            }));
        }
        // Dropped on another thread, racing with the tasks finishing.
        std::thread::spawn(move || drop(handles)).join().unwrap();
        let start = std::time::Instant::now();
        while drops.load(Ordering::SeqCst) < n {
            assert!(start.elapsed() < Duration::from_secs(60), "outputs leaked");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(p);
        assert_eq!(drops.load(Ordering::SeqCst), n, "each output dropped once");
    });
}

#[test]
fn tokio_channels_between_workers_lose_no_message() {
    watchdog(LIMIT, || {
        let p = pool(2);
        let n: u64 = uring_tests::scaled(1_000_000) as u64;
        let (tx, rx) = tokio::sync::mpsc::channel::<u64>(1024);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<u64>();
        let consumer = p.spawn_on(1, move || async move {
            let mut rx = rx;
            let mut sum = 0u64;
            let mut count = 0u64;
            while let Some(v) = rx.recv().await {
                sum += v;
                count += 1;
            }
            done_tx.send(count).unwrap();
            sum
        });
        let producer = p.spawn_on(0, move || async move {
            for i in 0..n {
                tx.send(i).await.unwrap();
            }
            drop(tx);
            done_rx.await.unwrap()
        });
        let (count, sum) =
            uring::run(async move { (producer.await.unwrap(), consumer.await.unwrap()) });
        assert_eq!(count, n);
        assert_eq!(sum, n * (n - 1) / 2);
    });
}

#[test]
fn four_workers_on_one_reuseport_port_serve_two_thousand_connections() {
    watchdog(LIMIT, || {
        let p = pool(4);
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // The first listener picks the port; the others share it.
        let first = reuseport_listener(addr);
        let port = first.local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut listeners = vec![Some(first)];
        for _ in 1..4 {
            listeners.push(Some(reuseport_listener(addr)));
        }
        let listeners = Arc::new(Mutex::new(listeners));
        let served = Arc::new(Mutex::new(vec![0usize; 4]));
        let total = Arc::new(AtomicUsize::new(0));
        const N: usize = 2000;
        let servers: Vec<_> = (0..4)
            .map(|i| {
                let (listeners, served, total) = (listeners.clone(), served.clone(), total.clone());
                p.spawn_on(i, move || async move {
                    let l = listeners.lock().unwrap()[i].take().unwrap();
                    let l = TcpListener::from_std(l).unwrap();
                    let mut incoming = l.incoming();
                    while total.load(Ordering::SeqCst) < N {
                        let accept =
                            uring::time::timeout(Duration::from_millis(50), incoming.next());
                        let Ok(Some(Ok(s))) = accept.await else {
                            continue;
                        };
                        total.fetch_add(1, Ordering::SeqCst);
                        served.lock().unwrap()[i] += 1;
                        uring::spawn(async move {
                            let (res, buf) = s.read(Vec::with_capacity(8)).await;
                            if res.is_ok() {
                                let _ = s.write_all(buf).await;
                            }
                        });
                    }
                })
            })
            .collect();
        uring::run(async move {
            for wave in 0..N / 200 {
                let mut clients = Vec::new();
                for i in 0..200 {
                    clients.push(uring::spawn(async move {
                        let s = TcpStream::connect(addr).await.unwrap();
                        let msg = ((wave * 200 + i) as u32).to_le_bytes().to_vec();
                        let (res, _) = s.write_all(msg.clone()).await;
                        res.unwrap();
                        let (res, back) = s.read_exact(Vec::with_capacity(4)).await;
                        res.unwrap();
                        assert_eq!(back, msg);
                    }));
                }
                for c in clients {
                    c.await.unwrap();
                }
            }
            for s in servers {
                s.await.unwrap();
            }
        });
        let served = served.lock().unwrap().clone();
        assert_eq!(served.iter().sum::<usize>(), N, "all served: {served:?}");
        assert!(
            served.iter().filter(|&&n| n > 0).count() > 1,
            "more than one worker served: {served:?}"
        );
    });
}

fn reuseport_listener(addr: SocketAddr) -> std::net::TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&addr.into()).unwrap();
    s.listen(1024).unwrap();
    s.into()
}

/// Counts this process's fds against a baseline, so it runs alone in a child process (other
/// tests of this binary open fds in parallel).
#[test]
fn a_pool_dropped_with_ops_in_flight_leaks_nothing_and_does_not_hang() {
    if !uring_tests::is_child("pool-drop") {
        let out = uring_tests::run_child(
            "a_pool_dropped_with_ops_in_flight_leaks_nothing_and_does_not_hang",
            "pool-drop",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("CHILD-OK"),
            "child failed ({}): {stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    watchdog(LIMIT, || {
        let before = open_fds();
        let p = pool(3);
        let mut peers = Vec::new();
        for i in 0..3 {
            for _ in 0..20 {
                let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
                peers.push(b);
                drop(p.spawn_on(i, move || async move {
                    let a = uring::net::UnixStream::from_std(a).unwrap();
                    // Waits for ever: the pool's drop must cancel it.
                    let _ = a.read(vec![0u8; 64]).await;
                }));
            }
            drop(p.spawn_on(i, || async {
                uring::time::sleep(Duration::from_secs(3600)).await;
            }));
        }
        // Let every worker submit its reads.
        p.run_each(|_| async {
            for _ in 0..10 {
                uring::yield_now().await;
            }
        });
        drop(p);
        drop(peers);
        assert_eq!(open_fds(), before, "every fd closed, every ring gone");
        println!("CHILD-OK");
    });
}

#[test]
fn a_spawner_of_a_dropped_runtime_gives_cancelled_handles() {
    watchdog(LIMIT, || {
        let rt = Runtime::new().unwrap();
        let spawner = rt.spawner();
        // Spawned, never run: the runtime is dropped first.
        let queued = spawner.spawn(|| async { 1 });
        drop(rt);
        let late = spawner.spawn(|| async { 2 });
        uring::run(async move {
            assert!(queued.await.unwrap_err().is_cancelled());
            assert!(late.await.unwrap_err().is_cancelled());
        });
    });
}

#[test]
fn a_plain_thread_hands_work_to_a_running_loop() {
    watchdog(LIMIT, || {
        uring::run(async {
            let spawner = uring::spawner();
            let from_thread = std::thread::spawn(move || {
                (0..1000)
                    .map(|i| spawner.spawn(move || async move { i + 1 }))
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap();
            let mut sum = 0;
            for h in from_thread {
                sum += h.await.unwrap();
            }
            assert_eq!(sum, 1000 * 1001 / 2);
        });
    });
}

/// The io-wq worker cap holds: fsyncs (which the kernel always hands to io-wq workers) of eight
/// files at once from one runtime capped at one bounded worker never show more than one worker,
/// where the same load uncapped starts several. Thread counts are process-wide, so this runs
/// alone in a child process.
#[test]
fn the_iowq_worker_cap_holds() {
    if !uring_tests::is_child("iowq-cap") {
        let out = uring_tests::run_child("the_iowq_worker_cap_holds", "iowq-cap");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("CHILD-OK"),
            "child failed ({}): {stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    watchdog(LIMIT, || {
        let dir = uring_tests::TempDir::new("iowq-cap");
        let most = |capped: bool| {
            let mut b = Runtime::builder();
            if capped {
                b.iowq_max_workers(1, 1);
            }
            let rt = b.build().unwrap();
            let paths: Vec<_> = (0..8).map(|i| dir.path(&format!("f{i}"))).collect();
            let most = rt.block_on(async move {
                let files: Vec<_> = futures_files(&paths).await;
                let most = std::rc::Rc::new(std::cell::Cell::new(0usize));
                let mut tasks = Vec::new();
                for f in files {
                    let most = most.clone();
                    tasks.push(uring::spawn(async move {
                        for round in 0..10u64 {
                            let (res, _) = f.write_all_at(vec![7u8; 256 << 10], round << 18).await;
                            res.unwrap();
                            f.sync_all().await.unwrap();
                            most.set(most.get().max(iowq_workers()));
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                most.get()
            });
            drop(rt);
            // The kernel's workers of a closed ring linger a little: wait until they are gone.
            let start = std::time::Instant::now();
            while iowq_workers() > 0 && start.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        };
        let uncapped = most(false);
        let capped = most(true);
        assert!(capped <= 1, "{capped} io-wq workers with a cap of one");
        assert!(
            uncapped > 1,
            "the load starts several workers without a cap ({uncapped})"
        );
        println!("CHILD-OK at most {capped} io-wq worker(s) with the cap, {uncapped} without");
    });
}

async fn futures_files(paths: &[std::path::PathBuf]) -> Vec<uring::fs::File> {
    let mut files = Vec::new();
    for p in paths {
        files.push(
            uring::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .open(p)
                .await
                .unwrap(),
        );
    }
    files
}

/// The kernel's io-wq worker threads of this process (named `iou-wrk-<owner tid>`).
fn iowq_workers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .filter(|c| c.starts_with("iou-wrk"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn pinned_workers_each_run_on_their_own_cpu() {
    watchdog(LIMIT, || {
        let p = Pool::builder().threads(2).pin_cpus(true).build().unwrap();
        let cpus = p.run_each(|_| async {
            // SAFETY: INV-ffi: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes
            // into the set we own, of the size we pass.
            let set = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                assert_eq!(
                    libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
                    0
                );
                set
            };
            (0..libc::CPU_SETSIZE as usize)
                // SAFETY: INV-ffi: CPU_ISSET reads a bit of the set we own, within CPU_SETSIZE.
                .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
                .collect::<Vec<_>>()
        });
        assert!(cpus.iter().all(|c| c.len() == 1), "one CPU each: {cpus:?}");
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        if available >= 2 {
            assert_ne!(cpus[0], cpus[1], "different CPUs: {cpus:?}");
        }
    });
}
