//! Timers: many concurrent sleeps, never early, timeouts, intervals without drift, `reset`, and
//! sleeps that outlive their runtime.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use uring::time::{interval, sleep, sleep_until, timeout, Elapsed, Sleep};
use uring::Runtime;
use uring_tests::{drop_flag, poll_once, watchdog};

/// Generous limit for one test: far above what any of them needs on an idle machine.
const LIMIT: Duration = Duration::from_secs(120);

fn watched<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog(LIMIT, f)
}

/// Polls its sleep once, then resets it to a near deadline and returns `Pending` without polling
/// it again, as tokio code does with `Sleep::reset`: only the waker registered by the first poll
/// can wake the task.
struct ResetThenWait {
    sleep: Pin<Box<Sleep>>,
    reset_done: bool,
}

impl Future for ResetThenWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.reset_done {
            return match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            };
        }
        assert!(self.sleep.as_mut().poll(cx).is_pending());
        self.sleep
            .as_mut()
            .reset(Instant::now() + Duration::from_millis(20));
        self.reset_done = true;
        Poll::Pending
    }
}

#[test]
fn a_reset_sleep_wakes_the_task_that_polled_it_before() {
    watchdog(LIMIT, || {
        uring::run(async {
            let start = Instant::now();
            ResetThenWait {
                sleep: Box::pin(sleep(Duration::from_secs(3600))),
                reset_done: false,
            }
            .await;
            assert!(start.elapsed() >= Duration::from_millis(20));
        })
    });
}

#[test]
fn reset_to_a_later_deadline_waits_for_it() {
    watchdog(LIMIT, || {
        uring::run(async {
            let start = Instant::now();
            let mut s = Box::pin(sleep(Duration::from_millis(5)));
            assert!(uring_tests::poll_once(&mut s).await.is_pending());
            s.as_mut().reset(start + Duration::from_millis(60));
            s.await;
            assert!(start.elapsed() >= Duration::from_millis(60));
        })
    });
}

#[test]
fn a_sleep_polled_after_its_runtime_is_gone_completes_instead_of_panicking() {
    watchdog(LIMIT, || {
        let rt = uring::Runtime::new().unwrap();
        let mut pending = Box::pin(sleep(Duration::from_secs(3600)));
        rt.block_on(async {
            assert!(uring_tests::poll_once(&mut pending).await.is_pending());
        });
        drop(rt);
        // Outside any runtime, as an op in the same case completes with ECANCELED.
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(pending.as_mut().poll(&mut cx), Poll::Ready(()));
        pending
            .as_mut()
            .reset(Instant::now() + Duration::from_secs(10));
        assert_eq!(pending.as_mut().poll(&mut cx), Poll::Ready(()));
        // And inside another runtime.
        let mut again = Box::pin(sleep(Duration::from_secs(3600)));
        let rt = uring::Runtime::new().unwrap();
        rt.block_on(async {
            assert!(uring_tests::poll_once(&mut again).await.is_pending());
        });
        drop(rt);
        uring::run(again);
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
