//! Pinned futures are dropped where they were pinned (INV-pin): a task's future is dropped in
//! place on abort, at runtime shutdown and when it finishes, never moved out first. tokio's sync
//! primitives keep their waiters in intrusive lists that point into the pinned future: a future
//! moved before its drop leaves a dangling waiter behind (valgrind: reads of freed memory; a
//! segfault when the runtime is dropped). These tests run under valgrind in `.ci/run`.

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomPinned;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Mutex, Notify, Semaphore};
use uring_tests::watchdog;

const LIMIT: Duration = Duration::from_secs(120);

/// Pending forever; records the address it was polled at and, in `Drop`, whether it is dropped
/// at that same address.
struct AddressCheck {
    polled_at: Cell<usize>,
    verdict: Rc<Cell<Option<bool>>>,
    _pinned: PhantomPinned,
}

impl AddressCheck {
    fn new() -> (AddressCheck, Rc<Cell<Option<bool>>>) {
        let verdict = Rc::new(Cell::new(None));
        let f = AddressCheck {
            polled_at: Cell::new(0),
            verdict: verdict.clone(),
            _pinned: PhantomPinned,
        };
        (f, verdict)
    }
}

impl Future for AddressCheck {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        self.polled_at.set(&*self as *const AddressCheck as usize);
        Poll::Pending
    }
}

impl Drop for AddressCheck {
    fn drop(&mut self) {
        let at = self.polled_at.get();
        if at != 0 {
            self.verdict
                .set(Some(at == self as *const AddressCheck as usize));
        }
    }
}

/// Lets the tasks spawned so far run until they wait.
async fn settle() {
    for _ in 0..4 {
        uring::yield_now().await;
    }
}

#[test]
fn an_aborted_task_drops_its_future_where_it_was_pinned() {
    watchdog(LIMIT, || {
        uring::run(async {
            let (f, verdict) = AddressCheck::new();
            let task = uring::spawn(f);
            settle().await;
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            assert_eq!(
                verdict.get(),
                Some(true),
                "dropped at the address it was polled at"
            );
        })
    });
}

#[test]
fn shutdown_drops_pending_futures_where_they_were_pinned() {
    watchdog(LIMIT, || {
        let rt = uring::Runtime::new().unwrap();
        let (f, verdict) = AddressCheck::new();
        let _task = rt.spawn(f);
        rt.block_on(settle());
        drop(rt);
        assert_eq!(verdict.get(), Some(true));
    });
}

/// Ready on its second poll; records its address like [`AddressCheck`]. A hand-written future
/// keeps its state after returning `Ready`, so the task still owns (and must drop in place) a
/// live value when it finishes.
struct ReadySecond {
    check: AddressCheck,
    polls: u32,
}

impl Future for ReadySecond {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: nothing is moved out of the pinned future; `check` is structurally pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        let _ = unsafe { Pin::new_unchecked(&mut this.check) }.poll(cx);
        this.polls += 1;
        if this.polls == 2 {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn a_finished_task_drops_its_future_where_it_was_pinned() {
    watchdog(LIMIT, || {
        uring::run(async {
            let (check, verdict) = AddressCheck::new();
            let task = uring::spawn(ReadySecond { check, polls: 0 });
            task.await.unwrap();
            assert_eq!(verdict.get(), Some(true));
        })
    });
}

#[test]
fn semaphore_permit_reaches_the_next_waiter_after_an_abort() {
    watchdog(LIMIT, || {
        uring::run(async {
            let sem = Arc::new(Semaphore::new(0));
            let first = uring::spawn({
                let sem = sem.clone();
                async move { drop(sem.acquire().await.unwrap()) }
            });
            settle().await;
            first.abort();
            assert!(first.await.unwrap_err().is_cancelled());
            let second = uring::spawn({
                let sem = sem.clone();
                async move { sem.acquire().await.unwrap().forget() }
            });
            settle().await;
            sem.add_permits(1);
            second.await.unwrap();
            assert_eq!(
                sem.available_permits(),
                0,
                "the second waiter took the permit"
            );
        })
    });
}

#[test]
fn mutex_reaches_the_next_waiter_after_an_abort() {
    watchdog(LIMIT, || {
        uring::run(async {
            let m = Arc::new(Mutex::new(0u32));
            let guard = m.clone().lock_owned().await;
            let first = uring::spawn({
                let m = m.clone();
                async move { *m.lock().await += 1 }
            });
            settle().await;
            first.abort();
            assert!(first.await.unwrap_err().is_cancelled());
            let second = uring::spawn({
                let m = m.clone();
                async move { *m.lock().await += 10 }
            });
            settle().await;
            drop(guard);
            second.await.unwrap();
            assert_eq!(*m.lock().await, 10);
        })
    });
}

#[test]
fn notify_reaches_the_next_waiter_after_an_abort() {
    watchdog(LIMIT, || {
        uring::run(async {
            let n = Arc::new(Notify::new());
            let first = uring::spawn({
                let n = n.clone();
                async move { n.notified().await }
            });
            settle().await;
            first.abort();
            assert!(first.await.unwrap_err().is_cancelled());
            let second = uring::spawn({
                let n = n.clone();
                async move { n.notified().await }
            });
            settle().await;
            n.notify_one();
            second.await.unwrap();
        })
    });
}

#[test]
fn waiters_left_pending_at_shutdown_leave_the_primitives_usable() {
    watchdog(LIMIT, || {
        let sem = Arc::new(Semaphore::new(0));
        let m = Arc::new(Mutex::new(()));
        let n = Arc::new(Notify::new());
        let rt = uring::Runtime::new().unwrap();
        let held = rt.block_on(m.clone().lock_owned());
        for _ in 0..3 {
            let sem = sem.clone();
            drop(rt.spawn(async move { drop(sem.acquire().await.unwrap()) }));
            let m = m.clone();
            drop(rt.spawn(async move { drop(m.lock().await) }));
            let n = n.clone();
            drop(rt.spawn(async move { n.notified().await }));
        }
        rt.block_on(settle());
        // Every task waits in an intrusive list of one of the primitives; dropping the runtime
        // drops their futures, which must unlink themselves where they are.
        drop(rt);
        drop(held);
        sem.add_permits(1);
        assert!(
            sem.try_acquire().is_ok(),
            "the permit is not swallowed by a dead waiter"
        );
        assert!(m.try_lock().is_ok(), "the lock is free");
        n.notify_one();
        // The permit `notify_one` stores (no live waiter) is there for the next waiter.
        let rt = uring::Runtime::new().unwrap();
        rt.block_on(async {
            uring::time::timeout(Duration::from_secs(30), n.notified())
                .await
                .expect("the notification reached the next waiter")
        });
    });
}
