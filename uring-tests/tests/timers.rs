//! Timers: `sleep`, `reset`, and sleeps that outlive their runtime.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use uring::time::{sleep, Sleep};
use uring_tests::watchdog;

const LIMIT: Duration = Duration::from_secs(60);

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
