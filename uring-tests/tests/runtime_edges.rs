//! Runtime edges: nesting, several runtimes on one thread, misuse gives clear panics.

use std::future::Future;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};
use uring::time::{sleep, sleep_until, timeout};
use uring::Runtime;
use uring_tests::{pipe, poll_once, watchdog, ThreadSignal};

/// Generous limit for one test: far above what any of them needs on an idle machine.
const LIMIT: Duration = Duration::from_secs(120);

fn watched<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog(LIMIT, f)
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
