//! The blocking pool: `spawn_blocking` outputs, panics, detached and aborted handles, wakes that
//! cross threads, and (in child processes, as the pool's settings are the process's) the cap,
//! growth on demand and idle threads exiting after the keep-alive.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};
use uring::time::sleep;
use uring::Runtime;
use uring_tests::{is_child, run_child_with_limit, watchdog};

/// Generous limit for one test: far above what any of them needs on an idle machine.
const LIMIT: Duration = Duration::from_secs(120);

fn watched<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog(LIMIT, f)
}

/// How many of this process's threads are the pool's (named `uring-blocking`).
fn pool_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == "uring-blocking")
        .count()
}

/// Runs this binary's test `name` alone in a child process as `role` and checks that the child
/// passed and printed `CHILD-OK`.
fn in_child(name: &str, role: &str) {
    let out = run_child_with_limit(name, role, LIMIT, || {}).unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child {role} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// Waits (sleeping on the runtime) until `done()` holds, or panics after a minute.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never happened: {what}"
        );
        sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn ten_thousand_calls_give_their_outputs() {
    watched(|| {
        uring::run(async {
            let handles: Vec<_> = (0..10_000u64)
                .map(|i| uring::spawn_blocking(move || i * 3))
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                assert_eq!(h.await.unwrap(), i as u64 * 3);
            }
        });
    });
}

#[test]
fn a_panicking_closure_gives_a_join_error_with_its_payload() {
    watched(|| {
        uring::run(async {
            let n = std::hint::black_box(3);
            let err = uring::spawn_blocking(move || -> u32 { panic!("blocking boom {n}") })
                .await
                .expect_err("a panicking closure gives a JoinError");
            assert!(err.is_panic(), "{err}");
            assert!(!err.is_cancelled());
            assert!(err.to_string().contains("blocking boom 3"), "{err}");
            let payload = err.into_panic();
            assert_eq!(payload.downcast_ref::<String>().unwrap(), "blocking boom 3");

            let err = uring::spawn_blocking(|| std::panic::panic_any(7u8))
                .await
                .unwrap_err();
            assert_eq!(*err.into_panic().downcast::<u8>().unwrap(), 7);

            // The pool goes on working.
            assert_eq!(uring::spawn_blocking(|| 5).await.unwrap(), 5);
        });
    });
}

#[test]
fn awaiting_while_the_loop_is_blocked_in_the_kernel() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        let (took, enters) = rt.block_on(async {
            let before = rt.driver_stats().enters;
            let start = Instant::now();
            // A task awaits the closure while the main future awaits the task: nothing on this
            // thread is runnable, so the loop sleeps in io_uring_enter until the pool's wake.
            let task = uring::spawn(async {
                uring::spawn_blocking(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    std::thread::current().name().map(str::to_owned)
                })
                .await
                .unwrap()
            });
            let name = task.await.unwrap();
            assert_eq!(name.as_deref(), Some("uring-blocking"));
            // The main future awaiting the closure directly.
            let n = uring::spawn_blocking(|| {
                std::thread::sleep(Duration::from_millis(50));
                9
            })
            .await
            .unwrap();
            assert_eq!(n, 9);
            (start.elapsed(), rt.driver_stats().enters - before)
        });
        assert!(took >= Duration::from_millis(140), "woke after {took:?}");
        assert!(
            enters <= 20,
            "the loop entered the kernel {enters} times while waiting 150 ms: it spins"
        );
    });
}

#[test]
fn a_dropped_or_aborted_handle_lets_the_closure_finish_and_frees_its_output() {
    watched(|| {
        uring::run(async {
            let output = Arc::new(());
            let finished = Arc::new(AtomicUsize::new(0));
            let (go, wait) = mpsc::channel::<()>();
            let wait = Arc::new(std::sync::Mutex::new(wait));
            let spawn = || {
                let (output, finished, wait) = (output.clone(), finished.clone(), wait.clone());
                uring::spawn_blocking(move || {
                    wait.lock().unwrap().recv().unwrap();
                    finished.fetch_add(1, Ordering::SeqCst);
                    output
                })
            };
            let aborted = spawn();
            let dropped = spawn();
            aborted.abort();
            assert!(aborted.await.unwrap_err().is_cancelled());
            drop(dropped);
            go.send(()).unwrap();
            go.send(()).unwrap();
            eventually("both closures finish", || {
                finished.load(Ordering::SeqCst) == 2
            })
            .await;
            // The aborted one's output is dropped on the pool thread, the detached one's by its
            // task: no copy of `output` is left anywhere.
            eventually("both outputs are dropped", || {
                Arc::strong_count(&output) == 1
            })
            .await;
        });
    });
}

#[test]
fn a_closure_outliving_its_runtime_finishes_harmlessly() {
    watched(|| {
        let output = Arc::new(());
        let finished = Arc::new(AtomicUsize::new(0));
        let (go, wait) = mpsc::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(wait));
        let kept = {
            let rt = Runtime::new().unwrap();
            rt.block_on(async {
                let spawn = || {
                    let (out, fin, wait) = (output.clone(), finished.clone(), wait.clone());
                    uring::spawn_blocking(move || {
                        wait.lock().unwrap().recv().unwrap();
                        fin.fetch_add(1, Ordering::SeqCst);
                        out
                    })
                };
                let dropped = spawn();
                let kept = spawn();
                // Both tasks wait for their closure, their wakers registered.
                uring::yield_now().await;
                uring::yield_now().await;
                drop(dropped);
                vec![kept]
            })
        };
        // The closures finish after their runtime is gone; their wakes reach no runtime.
        go.send(()).unwrap();
        go.send(()).unwrap();
        let start = Instant::now();
        while !(finished.load(Ordering::SeqCst) == 2 && Arc::strong_count(&output) == 1) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the closures never finished"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // A handle kept past its runtime reports its task cancelled (by the runtime's drop).
        uring::run(async move {
            for h in kept {
                assert!(h.await.unwrap_err().is_cancelled());
            }
        });
        // And a new runtime uses the pool as before.
        assert_eq!(
            uring::run(async { uring::spawn_blocking(|| 1).await.unwrap() }),
            1
        );
    });
}

#[test]
fn runtimes_on_several_threads_share_the_pool() {
    watched(|| {
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    uring::run(async move {
                        let hs: Vec<_> = (0..500u64)
                            .map(|i| uring::spawn_blocking(move || t * 1000 + i))
                            .collect();
                        for (i, h) in hs.into_iter().enumerate() {
                            assert_eq!(h.await.unwrap(), t * 1000 + i as u64);
                        }
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn outside_a_runtime_it_panics_clearly() {
    watched(|| {
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let panic = catch_unwind(AssertUnwindSafe(|| {
            uring::spawn_blocking(move || r.store(true, Ordering::SeqCst))
        }))
        .expect_err("spawn_blocking outside a runtime panics");
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(
            msg.contains("uring::spawn_blocking must be called from within a uring runtime"),
            "{msg}"
        );
        std::thread::sleep(Duration::from_millis(50));
        assert!(!ran.load(Ordering::SeqCst), "the closure was not run");
    });
}

#[test]
fn the_pool_grows_on_demand_up_to_its_cap() {
    if is_child("cap") {
        const CAP: usize = 4;
        uring::blocking::set_max_threads(CAP);
        assert_eq!(uring::blocking::max_threads(), CAP);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let most_threads = Arc::new(AtomicUsize::new(0));
        let outputs = uring::run(async {
            let hs: Vec<_> = (0..64usize)
                .map(|i| {
                    let (running, most, most_threads) =
                        (running.clone(), most.clone(), most_threads.clone());
                    uring::spawn_blocking(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        most_threads.fetch_max(pool_threads(), Ordering::SeqCst);
                        // Blocks, so later closures find every thread busy.
                        std::thread::sleep(Duration::from_millis(10));
                        running.fetch_sub(1, Ordering::SeqCst);
                        i
                    })
                })
                .collect();
            let mut outputs = Vec::new();
            for h in hs {
                outputs.push(h.await.unwrap());
            }
            outputs
        });
        assert_eq!(outputs, (0..64).collect::<Vec<_>>());
        let (most, threads) = (
            most.load(Ordering::SeqCst),
            most_threads.load(Ordering::SeqCst),
        );
        println!("most closures at once: {most}, most pool threads: {threads}");
        assert!(
            most <= CAP,
            "{most} closures ran at once, above the cap of {CAP}"
        );
        assert!(
            threads <= CAP,
            "{threads} pool threads, above the cap of {CAP}"
        );
        assert!(
            most > 1,
            "the pool never grew beyond one thread while closures blocked"
        );
        println!("CHILD-OK");
        return;
    }
    in_child("the_pool_grows_on_demand_up_to_its_cap", "cap");
}

#[test]
fn idle_threads_exit_after_the_keep_alive() {
    if is_child("keep-alive") {
        const N: usize = 4;
        let before = pool_threads();
        assert_eq!(before, 0, "no pool thread before the first spawn_blocking");
        let rt = Runtime::new().unwrap();
        // N closures that all wait for each other: the pool must run N threads at once.
        let run_together = || {
            rt.block_on(async {
                let barrier = Arc::new(Barrier::new(N));
                let hs: Vec<_> = (0..N)
                    .map(|_| {
                        let b = barrier.clone();
                        uring::spawn_blocking(move || {
                            b.wait();
                            pool_threads()
                        })
                    })
                    .collect();
                for h in hs {
                    assert!(h.await.unwrap() >= N, "{N} closures ran together");
                }
            })
        };
        let wait_for_no_threads = |what: &str| {
            let start = Instant::now();
            while pool_threads() > 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "{} pool threads still alive: {what}",
                    pool_threads()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };

        uring::blocking::set_keep_alive(Duration::from_millis(200));
        assert_eq!(uring::blocking::keep_alive(), Duration::from_millis(200));
        run_together();
        wait_for_no_threads("idle threads exit after a 200 ms keep-alive");

        // Kept alive for an hour, the threads stay; a shorter keep-alive set while they are
        // idle applies to them at once.
        uring::blocking::set_keep_alive(Duration::from_secs(3600));
        run_together();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            pool_threads(),
            N,
            "idle threads within their keep-alive stay"
        );
        // And an idle thread takes the next closure instead of a new one being started.
        rt.block_on(async { uring::spawn_blocking(|| ()).await.unwrap() });
        assert_eq!(pool_threads(), N, "an idle thread ran the closure");
        uring::blocking::set_keep_alive(Duration::from_millis(50));
        wait_for_no_threads("idle threads exit when the keep-alive is shortened");

        // The pool starts threads again afterwards.
        run_together();
        println!("CHILD-OK");
        return;
    }
    in_child("idle_threads_exit_after_the_keep_alive", "keep-alive");
}

#[test]
fn lowering_the_cap_lets_extra_idle_threads_exit() {
    if is_child("lower-cap") {
        uring::run(async {
            let barrier = Arc::new(Barrier::new(6));
            let hs: Vec<_> = (0..6)
                .map(|_| {
                    let b = barrier.clone();
                    uring::spawn_blocking(move || {
                        b.wait();
                    })
                })
                .collect();
            for h in hs {
                h.await.unwrap();
            }
            assert!(pool_threads() >= 6);
            uring::blocking::set_max_threads(2);
            eventually("idle threads above the new cap exit", || {
                pool_threads() <= 2
            })
            .await;
            // Two stay (their keep-alive is 10 s) and still serve.
            assert_eq!(uring::spawn_blocking(|| 3).await.unwrap(), 3);
        });
        println!("CHILD-OK");
        return;
    }
    in_child("lowering_the_cap_lets_extra_idle_threads_exit", "lower-cap");
}

#[test]
#[should_panic(expected = "at least one thread")]
fn a_cap_of_zero_is_refused() {
    uring::blocking::set_max_threads(0);
}
