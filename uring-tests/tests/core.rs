//! The runtime core against the real kernel: tasks, cross-thread wakes, timers, tiny rings, and
//! the error when io_uring cannot be set up.
//!
//! Every test builds its own runtime inside a watchdog, so tests run in parallel and a hang fails
//! the test. Time checks are lower bounds only (the machine is shared and noisy).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use uring::time::{interval, sleep, sleep_until, timeout, Elapsed};
use uring::Runtime;
use uring_tests::{is_child, run_child, watchdog};

/// Generous limit for one test: far above what any of them needs on an idle machine.
const LIMIT: Duration = Duration::from_secs(120);

fn watched<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog(LIMIT, f)
}

/// Sets its flag when dropped: shows that a future (or what it owns) was dropped.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

fn drop_flag() -> (DropFlag, Rc<Cell<bool>>) {
    let flag = Rc::new(Cell::new(false));
    (DropFlag(flag.clone()), flag)
}

/// A one-shot signal another OS thread sets, waking whoever waits for it.
#[derive(Clone, Default)]
struct ThreadSignal(Arc<Mutex<(bool, Option<Waker>)>>);

impl ThreadSignal {
    fn set(&self) {
        let waker = {
            let mut s = self.0.lock().unwrap();
            s.0 = true;
            s.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut s = self.0.lock().unwrap();
            if s.0 {
                Poll::Ready(())
            } else {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    fn has_waiter(&self) -> bool {
        self.0.lock().unwrap().1.is_some()
    }
}

/// Polls `fut` exactly once with the current task's context and reports whether it was ready.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
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

// ---------------------------------------------------------------------------------------------
// Timers
// ---------------------------------------------------------------------------------------------

#[test]
fn hundred_thousand_concurrent_sleeps() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        const N: usize = 100_000;
        let done = rt.block_on(async {
            let count = Rc::new(Cell::new(0usize));
            let start = Instant::now();
            let handles: Vec<_> = (0..N)
                .map(|i| {
                    let c = count.clone();
                    uring::spawn(async move {
                        let d = Duration::from_micros(500 + (i % 20) as u64 * 250);
                        let t = Instant::now();
                        sleep(d).await;
                        assert!(t.elapsed() >= d);
                        c.set(c.get() + 1);
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
            assert!(start.elapsed() >= Duration::from_micros(500 + 19 * 250));
            count.get()
        });
        assert_eq!(done, N);
    });
}

#[test]
fn no_sleep_ends_early() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        let early = rt.block_on(async {
            let early = Rc::new(Cell::new(0usize));
            let handles: Vec<_> = (0..3000u64)
                .map(|i| {
                    let early = early.clone();
                    uring::spawn(async move {
                        // Durations from 0 to ~60 ms, some sub-millisecond, in scattered order.
                        let dur = Duration::from_micros((i * 7919) % 60_000);
                        let start = Instant::now();
                        if i % 2 == 0 {
                            sleep(dur).await;
                        } else {
                            sleep_until(start + dur).await;
                        }
                        if Instant::now() < start + dur {
                            early.set(early.get() + 1);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
            // Sequential short sleeps, each checked.
            for us in [0u64, 1, 10, 100, 999, 1000, 1001, 2500] {
                let d = Duration::from_micros(us);
                let start = Instant::now();
                sleep(d).await;
                if start.elapsed() < d {
                    early.set(early.get() + 1);
                }
            }
            early.get()
        });
        assert_eq!(early, 0, "{early} sleeps ended before their deadline");
    });
}

#[test]
fn dropped_sleeps_do_not_wake_or_block() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            // Register then drop many far-future sleeps: the loop must not wait for them.
            for _ in 0..10_000 {
                let mut s = Box::pin(sleep(Duration::from_secs(3600)));
                assert!(poll_once(&mut s).await.is_pending());
            }
            let start = Instant::now();
            sleep(Duration::from_millis(5)).await;
            assert!(start.elapsed() >= Duration::from_millis(5));
        });
    });
}

#[test]
fn timeout_expires_and_drops_inner_future() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let (guard, dropped) = drop_flag();
            let start = Instant::now();
            let res = timeout(Duration::from_millis(20), async move {
                let _guard = guard;
                sleep(Duration::from_secs(3600)).await;
                1
            })
            .await;
            let _elapsed: Elapsed = res.expect_err("the timeout expired");
            assert!(start.elapsed() >= Duration::from_millis(20));
            assert!(dropped.get(), "the inner future was dropped on expiry");

            // A fast future: Ok, with its output.
            let res = timeout(Duration::from_secs(60), async {
                sleep(Duration::from_millis(1)).await;
                "fast"
            })
            .await;
            assert_eq!(res, Ok("fast"));
            // An immediately ready future wins even with a zero timeout.
            assert_eq!(timeout(Duration::ZERO, async { 3 }).await, Ok(3));
            // Elapsed converts into a TimedOut io::Error.
            let e: io::Error = timeout(Duration::from_millis(1), std::future::pending::<()>())
                .await
                .unwrap_err()
                .into();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        });
    });
}

#[test]
fn interval_ticks_on_schedule_without_drift() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let period = Duration::from_millis(5);
            let created = Instant::now();
            let mut every = interval(period);
            // The first tick is ready at once, on the first poll.
            let first = match poll_once(&mut Box::pin(every.tick())).await {
                Poll::Ready(t) => t,
                Poll::Pending => panic!("the first tick was not immediate"),
            };
            assert!(first >= created && first <= Instant::now());
            let mut previous = first;
            for k in 1..=20u32 {
                let due = every.tick().await;
                let now = Instant::now();
                assert!(now >= due, "tick {k} came {:?} early", due - now);
                // Deadlines are exact multiples of the period from the first: no drift.
                assert_eq!(due, first + period * k, "tick {k} drifted");
                assert_eq!(due - previous, period);
                previous = due;
                // Falling behind now and then must not shift later deadlines.
                if k % 5 == 0 {
                    std::thread::sleep(Duration::from_millis(7));
                }
            }
            assert!(Instant::now() >= first + period * 20);
            assert_eq!(every.period(), period);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Tiny rings: far more concurrent ops than ring entries (SQ full, CQ overflow)
// ---------------------------------------------------------------------------------------------

/// An unlinked temporary file holding `len` bytes of a known pattern.
fn pattern_file(len: usize) -> std::fs::File {
    use std::io::Write;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "uring-core-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f.write_all(&(0..len).map(pattern_byte).collect::<Vec<u8>>())
        .unwrap();
    f
}

fn pattern_byte(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8)) as u8
}

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: both fds are fresh and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    (r.into(), w.into())
}

/// 100k concurrent reads from a file, each checked byte for byte, plus 100k concurrent writes at
/// distinct offsets read back afterwards, on a ring of `entries` entries.
fn tiny_ring_file_ops(entries: u32) {
    const OPS: usize = 100_000;
    const LEN: usize = 64 * 1024;
    let rt = Runtime::builder().entries(entries).build().unwrap();
    let file = Rc::new(uring::fs::File::from_std(pattern_file(LEN)).unwrap());
    let bad = rt.block_on(async {
        let handles: Vec<_> = (0..OPS)
            .map(|i| {
                let f = file.clone();
                uring::spawn(async move {
                    let pos = (i * 61) % (LEN - 16);
                    let (res, buf) = f.read_at(Vec::with_capacity(16), pos as u64).await;
                    let n = res.expect("read_at");
                    let expected: Vec<u8> = (pos..pos + 16).map(pattern_byte).collect();
                    n == 16 && buf == expected
                })
            })
            .collect();
        let mut bad = 0;
        for h in handles {
            if !h.await.unwrap() {
                bad += 1;
            }
        }
        bad
    });
    assert_eq!(
        bad, 0,
        "{bad} reads gave wrong data on an entries({entries}) ring"
    );

    let out = Rc::new(uring::fs::File::from_std(pattern_file(0)).unwrap());
    rt.block_on(async {
        let handles: Vec<_> = (0..OPS)
            .map(|i| {
                let f = out.clone();
                uring::spawn(async move {
                    let word = (i as u32).to_le_bytes().to_vec();
                    let (res, _) = f.write_at(word, i as u64 * 4).await;
                    assert_eq!(res.expect("write_at"), 4);
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let (res, buf) = out.read_at(Vec::with_capacity(OPS * 4), 0).await;
        assert_eq!(res.unwrap(), OPS * 4);
        for (i, w) in buf.chunks_exact(4).enumerate() {
            assert_eq!(u32::from_le_bytes(w.try_into().unwrap()), i as u32);
        }
    });
    let stats = rt.driver_stats();
    assert!(
        stats.backlogged > 0,
        "the SQ-full path was never taken on an entries({entries}) ring: {stats:?}"
    );
    assert!(stats.completions >= 2 * OPS as u64, "{stats:?}");
}

/// 100k concurrent one-byte reads on pipes that get their data only while the reads wait; every
/// byte arrives exactly once.
fn tiny_ring_pipe_reads(entries: u32) {
    const OPS: usize = 100_000;
    const PIPES: usize = 16;
    let rt = Runtime::builder().entries(entries).build().unwrap();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..PIPES {
        let (r, w) = pipe();
        readers.push(Rc::new(uring::fs::File::from_std(r).unwrap()));
        writers.push(uring::fs::File::from_std(w).unwrap());
    }
    let counts = rt.block_on(async {
        let handles: Vec<_> = (0..OPS)
            .map(|i| {
                let r = readers[i % PIPES].clone();
                uring::spawn(async move {
                    let (res, buf) = r.read_at(Vec::with_capacity(1), 0).await;
                    assert_eq!(res.expect("pipe read"), 1);
                    buf[0]
                })
            })
            .collect();
        // Let every read reach the kernel and wait there.
        sleep(Duration::from_millis(20)).await;
        // Each pipe gets OPS / PIPES bytes: value (i % 251) for its i-th byte.
        let per_pipe = OPS / PIPES;
        for w in &writers {
            let data: Vec<u8> = (0..per_pipe).map(|i| (i % 251) as u8).collect();
            let mut sent = 0;
            while sent < data.len() {
                let (res, _) = w.write_at(data[sent..].to_vec(), 0).await;
                sent += res.expect("pipe write");
            }
        }
        let mut counts = [0usize; 251];
        for h in handles {
            counts[h.await.unwrap() as usize] += 1;
        }
        counts
    });
    let per_pipe = OPS / PIPES;
    for (v, &c) in counts.iter().enumerate() {
        let per = (0..per_pipe).filter(|i| i % 251 == v).count();
        assert_eq!(c, per * PIPES, "byte value {v} arrived {c} times");
    }
}

#[test]
fn tiny_ring_2_entries_file_ops() {
    watched(|| tiny_ring_file_ops(2));
}

#[test]
fn tiny_ring_4_entries_file_ops() {
    watched(|| tiny_ring_file_ops(4));
}

#[test]
fn tiny_ring_2_entries_pipe_reads() {
    watched(|| tiny_ring_pipe_reads(2));
}

#[test]
fn tiny_ring_4_entries_pipe_reads() {
    watched(|| tiny_ring_pipe_reads(4));
}

// ---------------------------------------------------------------------------------------------
// The clear error when io_uring cannot be set up
// ---------------------------------------------------------------------------------------------

/// `io_uring_setup`'s syscall number: 425 on both x86_64 and aarch64 (the generic table).
const SYS_IO_URING_SETUP: u32 = 425;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// Installs a seccomp filter on this thread (and its future children) that makes
/// `io_uring_setup` fail with EPERM and allows every other syscall, as a container runtime's
/// default profile does.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn deny_io_uring_setup() {
    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }
    fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }
    let arch_offset = std::mem::offset_of!(libc::seccomp_data, arch) as u32;
    let nr_offset = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
    let mut filter = [
        // A foreign syscall ABI: allow (nothing of ours runs there).
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, arch_offset),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH,
            0,
            3,
        ),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, nr_offset),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            SYS_IO_URING_SETUP,
            0,
            1,
        ),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl; no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_NO_NEW_PRIVS: {}", io::Error::last_os_error());
    // SAFETY: `prog` points to `filter`, both alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    assert_eq!(rc, 0, "PR_SET_SECCOMP: {}", io::Error::last_os_error());
}

#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn setup_blocked_by_seccomp_gives_a_clear_error() {
    if is_child("seccomp") {
        deny_io_uring_setup();
        match Runtime::new() {
            Ok(_) => println!("RESULT:ok"),
            Err(e) => {
                println!("RESULT:err");
                println!("KIND:{:?}", e.kind());
                println!("MESSAGE:{e}");
            }
        }
        // uring::run panics with the same message.
        std::panic::set_hook(Box::new(|_| {}));
        let panicked = std::panic::catch_unwind(|| uring::run(async {}));
        let _ = std::panic::take_hook();
        match panicked {
            Ok(()) => println!("RUN:returned"),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("RUN_PANIC:{msg}");
            }
        }
        return;
    }
    let out = watched(|| run_child("setup_blocked_by_seccomp_gives_a_clear_error", "seccomp"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    let field = |name: &str| {
        stdout
            .lines()
            // The harness may print its "test ... " prefix on the same line as the first field.
            .find_map(|l| l.find(name).map(|at| &l[at + name.len()..]))
            .unwrap_or_else(|| panic!("child printed no {name}: {stdout}\n{stderr}"))
            .to_string()
    };
    assert_eq!(
        field("RESULT:"),
        "err",
        "Runtime::new() succeeded under the filter"
    );
    assert_eq!(field("KIND:"), "PermissionDenied");
    let message = field("MESSAGE:");
    assert!(
        message.contains("seccomp"),
        "the message does not mention seccomp: {message}"
    );
    assert!(message.contains("EPERM"), "{message}");
    assert_ne!(message.trim(), "Operation not permitted (os error 1)");
    assert!(message.len() > 60, "too terse to help: {message}");
    let panic = field("RUN_PANIC:");
    assert!(
        panic.contains("seccomp"),
        "uring::run panicked without the explanation: {panic}"
    );
}

// ---------------------------------------------------------------------------------------------
// Runtime edges: nesting, several runtimes on one thread, misuse gives clear panics
// ---------------------------------------------------------------------------------------------

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn nested_block_on_panics_clearly_and_leaves_the_runtime_working() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        let inner = Runtime::new().unwrap();
        rt.block_on(async {
            let nested =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.block_on(async {})));
            let msg = panic_message(nested.expect_err("nested block_on must panic"));
            assert!(msg.contains("within a runtime"), "{msg}");
            // This thread's current runtime is still `rt`.
            assert_eq!(uring::spawn(async { 1 }).await.unwrap(), 1);
            sleep(Duration::from_millis(1)).await;
            // Dropping another runtime in here is fine and restores `rt` as current.
            let other = Runtime::new().unwrap();
            drop(other.spawn(async { sleep(Duration::from_secs(3600)).await }));
            drop(other);
            assert_eq!(uring::spawn(async { 2 }).await.unwrap(), 2);
        });
        // The inner runtime was never entered; it still works on its own.
        assert_eq!(inner.block_on(async { 3 }), 3);
    });
}

#[test]
fn spawn_outside_a_runtime_panics_clearly() {
    watched(|| {
        let p = std::panic::catch_unwind(|| drop(uring::spawn(async {})));
        let msg = panic_message(p.expect_err("spawn outside a runtime must panic"));
        assert!(msg.contains("within a uring runtime"), "{msg}");
    });
}

#[test]
fn main_future_panic_propagates_and_runtime_stays_usable() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        let bystander = rt.spawn(async {
            sleep(Duration::from_millis(5)).await;
            "survived"
        });
        let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async {
                uring::yield_now().await;
                panic!("main future fails");
            })
        }));
        assert_eq!(panic_message(p.unwrap_err()), "main future fails");
        assert_eq!(rt.block_on(bystander).unwrap(), "survived");
    });
}

#[test]
fn two_runtimes_on_one_thread_wake_each_other() {
    watched(|| {
        let a = Runtime::new().unwrap();
        let b = Runtime::new().unwrap();
        let signal = ThreadSignal::default();
        let s = signal.clone();
        // A task of `a` waits for a signal...
        let waiting = a.spawn(async move {
            s.wait().await;
            "woken by b"
        });
        a.block_on(async {
            while !signal.has_waiter() {
                uring::yield_now().await;
            }
        });
        // ...that a task of `b` sets, on the same thread: the wake goes to `a`'s queue.
        b.block_on(async {
            let s = signal.clone();
            uring::spawn(async move { s.set() }).await.unwrap();
        });
        assert_eq!(a.block_on(waiting).unwrap(), "woken by b");
    });
}

#[test]
fn extreme_durations_and_ring_sizes() {
    watched(|| {
        for entries in [0, 1, 3, 100_000, u32::MAX] {
            match Runtime::builder().entries(entries).build() {
                Ok(rt) => {
                    let v = rt.block_on(async {
                        let (r, w) = pipe();
                        let (r, w) = (
                            uring::fs::File::from_std(r).unwrap(),
                            uring::fs::File::from_std(w).unwrap(),
                        );
                        let reads: Vec<_> = (0..8)
                            .map(|_| Box::pin(r.read_at(Vec::with_capacity(1), 0)))
                            .collect();
                        let (res, _) = w.write_at(b"abcdefgh".to_vec(), 0).await;
                        assert_eq!(res.unwrap(), 8);
                        let mut got = Vec::new();
                        for rd in reads {
                            let (res, buf) = rd.await;
                            assert_eq!(res.unwrap(), 1);
                            got.extend(buf);
                        }
                        got.sort();
                        got
                    });
                    assert_eq!(v, b"abcdefgh", "entries({entries})");
                }
                Err(e) => {
                    // Too large for this machine: a clear error, not a panic.
                    assert!(entries > 4096, "entries({entries}) failed: {e}");
                    assert!(e.to_string().contains("io_uring"), "{e}");
                }
            }
        }
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            // A sleep too long to represent never ends (and never overflows).
            let r = timeout(Duration::from_millis(5), sleep(Duration::MAX)).await;
            assert!(r.is_err());
            assert_eq!(timeout(Duration::MAX, async { 4 }).await, Ok(4));
            let past = Instant::now() - Duration::from_millis(1);
            sleep_until(past).await;
            sleep(Duration::ZERO).await;
        });
    });
}

#[test]
fn sleep_outliving_its_runtime_drops_cleanly() {
    watched(|| {
        let rt = Runtime::new().unwrap();
        // A sleep registered with the runtime's timers, then moved out of block_on.
        #[allow(clippy::async_yields_async)]
        let mut early = rt.block_on(async {
            let mut s = Box::pin(sleep(Duration::from_secs(3600)));
            assert!(poll_once(&mut s).await.is_pending());
            s
        });
        drop(rt);
        // Polling it without its runtime may at most panic with a message that says so (as
        // tokio does); a bare "invalid key" from the timer table is a bug. Dropping it must never
        // panic. (Nothing here may panic while `early` is alive: a second panic in its drop
        // would abort the whole test binary.)
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = early.as_mut().poll(&mut cx);
        }));
        let poll_panic = polled.err().map(panic_message);
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(early)));
        let drop_panic = dropped.err().map(panic_message);
        assert!(
            drop_panic.is_none(),
            "dropping a Sleep that outlived its runtime panicked: {drop_panic:?}"
        );
        if let Some(msg) = poll_panic {
            assert!(
                msg.contains("runtime"),
                "polling a Sleep whose runtime is gone panicked without saying why: {msg:?}"
            );
        }
    });
}
