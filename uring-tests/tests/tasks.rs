//! Tasks against the real kernel: spawn and join, abort, panics, detached tasks, many tasks,
//! and wakes from other threads while the loop blocks in the kernel.
//!
//! Every test builds its own runtime inside a watchdog. Time checks are lower bounds only.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use uring::time::sleep;
use uring::Runtime;
use uring_tests::{drop_flag, watchdog, ThreadSignal};

/// Generous limit for one test: far above what any of them needs on an idle machine.
const LIMIT: Duration = Duration::from_secs(120);

fn watched<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog(LIMIT, f)
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

#[test]
fn spawn_and_join_gives_each_output() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        let out = rt.block_on(async {
            let handles: Vec<_> = (0..100u64)
                .map(|i| {
                    uring::spawn(async move {
                        if i % 3 == 0 {
                            uring::yield_now().await;
                        }
                        if i % 7 == 0 {
                            sleep(Duration::from_millis(1)).await;
                        }
                        i * i
                    })
                })
                .collect();
            let mut outs = Vec::new();
            for h in handles {
                outs.push(h.await.expect("task output"));
            }
            outs
        });
        let expected: Vec<u64> = (0..100u64).map(|i| i * i).collect();
        assert_eq!(out, expected);
    });
}

#[test]
fn uring_run_returns_the_output() {
    watched(|| {
        let s = uring::run(async {
            let h = uring::spawn(async { String::from("from a task") });
            h.await.unwrap()
        });
        assert_eq!(s, "from a task");
    });
}

#[test]
fn abort_cancels_and_drops_the_future() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let (guard, dropped) = drop_flag();
            let reached_end = Rc::new(Cell::new(false));
            let end = reached_end.clone();
            let h = uring::spawn(async move {
                let _guard = guard;
                sleep(Duration::from_secs(3600)).await;
                end.set(true);
                1
            });
            // Let it start and block in its sleep.
            uring::yield_now().await;
            uring::yield_now().await;
            assert!(!h.is_finished());
            h.abort();
            let err = h.await.expect_err("an aborted task gives a JoinError");
            assert!(err.is_cancelled(), "{err}");
            assert!(!err.is_panic());
            assert!(dropped.get(), "abort dropped the task's future");
            assert!(!reached_end.get());

            // Aborting before the task ever ran: it never runs.
            let ran = Rc::new(Cell::new(false));
            let r = ran.clone();
            let h = uring::spawn(async move { r.set(true) });
            h.abort();
            assert!(h.await.unwrap_err().is_cancelled());
            assert!(
                !ran.get(),
                "a task aborted before its first poll never runs"
            );

            // Aborting a finished task changes nothing.
            let h = uring::spawn(async { 5 });
            while !h.is_finished() {
                uring::yield_now().await;
            }
            h.abort();
            assert_eq!(h.await.unwrap(), 5);
        });
    });
}

#[test]
fn detached_task_runs_to_completion() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        let done = Rc::new(Cell::new(0u32));
        let d = done.clone();
        rt.block_on(async move {
            let seen = d.clone();
            let h = uring::spawn(async move {
                for _ in 0..3 {
                    sleep(Duration::from_millis(2)).await;
                    uring::yield_now().await;
                }
                seen.set(seen.get() + 1);
            });
            drop(h);
            // The main future waits for the side effect only, not for the handle.
            let start = Instant::now();
            while d.get() == 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "detached task never finished"
                );
                sleep(Duration::from_millis(1)).await;
            }
        });
        assert_eq!(done.get(), 1);
    });
}

#[test]
fn is_finished_tracks_completion() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let signal = Rc::new(Cell::new(false));
            let s = signal.clone();
            let h = uring::spawn(async move {
                while !s.get() {
                    uring::yield_now().await;
                }
                "ok"
            });
            for _ in 0..10 {
                uring::yield_now().await;
                assert!(!h.is_finished());
            }
            signal.set(true);
            let start = Instant::now();
            while !h.is_finished() {
                assert!(start.elapsed() < Duration::from_secs(60));
                uring::yield_now().await;
            }
            assert_eq!(h.await.unwrap(), "ok");
        });
    });
}

#[test]
fn panicking_task_is_isolated() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let steady = uring::spawn(async {
                let mut n = 0;
                for _ in 0..50 {
                    uring::yield_now().await;
                    n += 1;
                }
                n
            });
            let bad = uring::spawn(async {
                uring::yield_now().await;
                panic!("boom in a task");
            });
            // A detached panicking task must not take the loop down either.
            drop(uring::spawn(async {
                sleep(Duration::from_millis(1)).await;
                panic!("boom in a detached task");
            }));
            let err = bad.await.expect_err("a panicking task gives a JoinError");
            assert!(err.is_panic(), "{err}");
            assert!(!err.is_cancelled());
            assert!(err.to_string().contains("boom in a task"), "{err}");
            let payload = err.into_panic();
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in a task"));
            assert_eq!(steady.await.unwrap(), 50);
            // The main future keeps working: timers, spawns.
            sleep(Duration::from_millis(5)).await;
            assert_eq!(uring::spawn(async { 9 }).await.unwrap(), 9);
        });
        // And the runtime stays usable for the next block_on.
        assert_eq!(
            rt.block_on(async { uring::spawn(async { 3 }).await.unwrap() }),
            3
        );
    });
}

#[test]
fn hundred_thousand_tasks() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        const N: u64 = 100_000;
        let sum = rt.block_on(async {
            let counter = Rc::new(Cell::new(0u64));
            let handles: Vec<_> = (0..N)
                .map(|i| {
                    let c = counter.clone();
                    uring::spawn(async move {
                        if i % 2 == 0 {
                            uring::yield_now().await;
                        }
                        c.set(c.get() + 1);
                        i
                    })
                })
                .collect();
            let mut sum = 0;
            for h in handles {
                sum += h.await.unwrap();
            }
            assert_eq!(counter.get(), N);
            sum
        });
        assert_eq!(sum, N * (N - 1) / 2);
    });
}

#[test]
fn nested_spawns_deep_and_wide() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        // A chain: each task spawns the next and awaits it.
        fn chain(depth: u32) -> Pin<Box<dyn Future<Output = u32>>> {
            Box::pin(async move {
                if depth == 0 {
                    return 0;
                }
                uring::spawn(chain(depth - 1)).await.unwrap() + 1
            })
        }
        // A tree: each task spawns `fan` children, down to `depth`; returns its leaf count.
        fn tree(depth: u32, fan: u32) -> Pin<Box<dyn Future<Output = u64>>> {
            Box::pin(async move {
                if depth == 0 {
                    uring::yield_now().await;
                    return 1;
                }
                let kids: Vec<_> = (0..fan)
                    .map(|_| uring::spawn(tree(depth - 1, fan)))
                    .collect();
                let mut leaves = 0;
                for k in kids {
                    leaves += k.await.unwrap();
                }
                leaves
            })
        }
        let (depth, leaves) = rt.block_on(async {
            let d = uring::spawn(chain(10_000)).await.unwrap();
            let l = uring::spawn(tree(6, 6)).await.unwrap();
            (d, l)
        });
        assert_eq!(depth, 10_000);
        assert_eq!(leaves, 6u64.pow(6));
    });
}

#[test]
fn task_woken_from_another_thread_while_loop_blocks_in_kernel() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        let signal = ThreadSignal::default();
        let s = signal.clone();
        let (took, enters_while_blocked) = rt.block_on(async {
            let task_signal = s.clone();
            let h = uring::spawn(async move {
                task_signal.wait().await;
                42
            });
            // Let the task register its waker before the other thread starts its clock.
            while !s.has_waiter() {
                uring::yield_now().await;
            }
            let waker_thread = {
                let s = s.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    s.set();
                })
            };
            let before = rt.driver_stats().enters;
            let start = Instant::now();
            assert_eq!(h.await.unwrap(), 42);
            let took = start.elapsed();
            let enters = rt.driver_stats().enters - before;
            waker_thread.join().unwrap();
            (took, enters)
        });
        assert!(took >= Duration::from_millis(90), "woke after {took:?}");
        // Blocked in io_uring_enter the whole time: a handful of enters, not a spinning loop.
        assert!(
            enters_while_blocked <= 10,
            "the loop entered the kernel {enters_while_blocked} times while waiting 100 ms: it spins"
        );
    });
}

#[test]
fn main_future_woken_from_another_thread() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        let signal = ThreadSignal::default();
        let s = signal.clone();
        let waker_thread = std::thread::spawn(move || {
            // Wait until the main future is parked, then wake it.
            let start = Instant::now();
            while !s.has_waiter() {
                assert!(start.elapsed() < Duration::from_secs(60));
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(50));
            s.set();
        });
        let enters_before = rt.driver_stats().enters;
        let start = Instant::now();
        rt.block_on(signal.wait());
        let took = start.elapsed();
        let enters = rt.driver_stats().enters - enters_before;
        waker_thread.join().unwrap();
        assert!(took >= Duration::from_millis(45), "{took:?}");
        assert!(
            enters <= 10,
            "{enters} enters while the main future waited: the loop spins"
        );
    });
}

#[test]
fn many_cross_thread_wakes() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        const N: usize = 2000;
        let signals: Vec<ThreadSignal> = (0..N).map(|_| ThreadSignal::default()).collect();
        let for_thread = signals.clone();
        let woken = rt.block_on(async move {
            let count = Rc::new(Cell::new(0usize));
            let handles: Vec<_> = signals
                .into_iter()
                .map(|s| {
                    let c = count.clone();
                    uring::spawn(async move {
                        s.wait().await;
                        c.set(c.get() + 1);
                    })
                })
                .collect();
            let t = std::thread::spawn(move || {
                for s in for_thread {
                    s.set();
                }
            });
            for h in handles {
                h.await.unwrap();
            }
            t.join().unwrap();
            count.get()
        });
        assert_eq!(woken, N);
    });
}

#[test]
fn yield_now_is_fair_and_does_not_starve_timers() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            // Two yielding tasks alternate.
            let order = Rc::new(RefCell::new(Vec::new()));
            let handles: Vec<_> = (0..2)
                .map(|me| {
                    let order = order.clone();
                    uring::spawn(async move {
                        for _ in 0..100 {
                            order.borrow_mut().push(me);
                            uring::yield_now().await;
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
            let order = order.take();
            assert_eq!(order.len(), 200);
            let longest_run = order
                .chunk_by(|a, b| a == b)
                .map(|run| run.len())
                .max()
                .unwrap();
            assert!(
                longest_run <= 2,
                "one yielding task ran {longest_run} times in a row: {order:?}"
            );

            // A task that yields forever does not starve a timer or another task.
            let stop = Rc::new(Cell::new(false));
            let spins = Rc::new(Cell::new(0u64));
            let (st, sp) = (stop.clone(), spins.clone());
            let spinner = uring::spawn(async move {
                while !st.get() {
                    sp.set(sp.get() + 1);
                    uring::yield_now().await;
                }
            });
            sleep(Duration::from_millis(20)).await;
            let other = uring::spawn(async { 7 }).await.unwrap();
            stop.set(true);
            spinner.await.unwrap();
            assert_eq!(other, 7);
            assert!(spins.get() > 0);
        });
    });
}

#[test]
fn tasks_left_running_continue_in_next_block_on() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        let progress = Rc::new(Cell::new(0u32));
        let p = progress.clone();
        // The handle leaves block_on unawaited on purpose: the next block_on awaits it.
        #[allow(clippy::async_yields_async)]
        let handle = rt.block_on(async move {
            uring::spawn(async move {
                p.set(1);
                sleep(Duration::from_millis(30)).await;
                p.set(2);
                "second half"
            })
        });
        // block_on returned before the task finished (it may or may not have started).
        assert!(progress.get() < 2);
        assert!(!handle.is_finished());
        let out = rt.block_on(handle).unwrap();
        assert_eq!(out, "second half");
        assert_eq!(progress.get(), 2);

        // Runtime::spawn outside block_on: runs at the next block_on.
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        let h = rt.spawn(async move { r.set(true) });
        assert!(!ran.get());
        rt.block_on(h).unwrap();
        assert!(ran.get());
    });
}

#[test]
fn runtime_drop_drops_unfinished_tasks() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        let (mut flags, handles) = rt.block_on(async {
            let mut flags: Vec<Rc<Cell<bool>>> = Vec::new();
            let mut handles = Vec::new();
            for i in 0..100 {
                let (guard, flag) = drop_flag();
                flags.push(flag);
                let h = uring::spawn(async move {
                    let _guard = guard;
                    if i % 2 == 0 {
                        sleep(Duration::from_secs(3600)).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                });
                if i % 3 == 0 {
                    handles.push(h);
                }
            }
            // Let them start.
            uring::yield_now().await;
            uring::yield_now().await;
            // The kept handles leave block_on and are dropped after the runtime.
            (flags, handles)
        });
        // A task that is never polled, holding a guard too.
        let (guard, flag) = drop_flag();
        flags.push(flag);
        drop(rt.spawn(async move {
            let _guard = guard;
        }));
        assert!(flags.iter().all(|f| !f.get()), "tasks were still running");
        drop(rt);
        for h in &handles {
            assert!(h.is_finished());
        }
        drop(handles);
        let dropped = flags.iter().filter(|f| f.get()).count();
        assert_eq!(
            dropped,
            flags.len(),
            "runtime drop dropped every unfinished task"
        );
    });
}

#[test]
fn join_handle_outliving_runtime_reports_cancelled() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        // The handle leaves block_on unawaited on purpose: it outlives the runtime.
        #[allow(clippy::async_yields_async)]
        let handle = rt.block_on(async {
            uring::spawn(async {
                sleep(Duration::from_secs(3600)).await;
                1
            })
        });
        drop(rt);
        assert!(handle.is_finished());
        // Polling it needs no runtime: it resolves to a cancellation at once.
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut handle = handle;
        match Pin::new(&mut handle).poll(&mut cx) {
            Poll::Ready(Err(e)) => assert!(e.is_cancelled(), "{e}"),
            Poll::Ready(Ok(v)) => panic!("task gave {v} after its runtime was dropped"),
            Poll::Pending => panic!("handle pending after its runtime was dropped"),
        }
    });
}
