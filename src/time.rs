//! Time: sleeps, timeouts and intervals.
//!
//! Sleeps live in a userspace timer table (a binary heap of deadlines); the loop's one wait in
//! `io_uring_enter` carries the earliest deadline as its timeout (`IORING_ENTER_EXT_ARG`). So a
//! sleep costs a heap push and no SQE, CQE or kernel timer of its own; 100k concurrent sleeps are
//! 100k heap entries and one kernel wait. `docs/architecture.md` gives the measurements behind
//! this choice over one `IORING_OP_TIMEOUT` per sleep.
//!
//! A sleep never ends early: it completes only once `Instant::now()` (the same monotonic clock
//! the kernel waits on) has reached its deadline.

use crate::runtime::context;
use crate::runtime::timers::TimerKey;
use crate::runtime::RuntimeState;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A future that completes at a deadline. Made by [`sleep`] and [`sleep_until`].
///
/// Dropping it removes its timer. A sleep whose runtime has shut down completes at once when
/// polled, as an op whose runtime is gone completes at once with `ECANCELED`: the wait is over,
/// there is nothing left to wait with.
pub struct Sleep {
    deadline: Instant,
    /// The runtime and key of the registered timer, once polled.
    timer: Option<(Rc<RuntimeState>, TimerKey)>,
}

impl Sleep {
    /// When the sleep completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Moves the deadline; the sleep is pending again until the new one. The waker of the last
    /// poll is kept, so a task may reset a pending sleep and return `Pending` without polling
    /// it again: it is woken at the new deadline (as with tokio's `Sleep::reset`).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// uring::run(async {
    ///     let mut sleep = uring::time::sleep(Duration::from_secs(3600));
    ///     sleep.reset(Instant::now() + Duration::from_millis(1));
    ///     sleep.await;
    /// });
    /// ```
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some((state, key)) = &mut self.timer {
            // A timer that is gone (its runtime shut down) stays gone: polls report it done.
            if let Some(moved) = state.timers.borrow_mut().reset(*key, deadline) {
                *key = moved;
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((state, key)) = &self.timer {
            if state.timers.borrow_mut().poll(*key, cx) {
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let state = context::current();
        let key = state
            .timers
            .borrow_mut()
            .insert(self.deadline, cx.waker().clone());
        self.timer = Some((state, key));
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((state, key)) = self.timer.take() {
            state.timers.borrow_mut().remove(key);
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// Waits until `duration` has passed. The `asyncio.sleep` of this crate.
///
/// ```
/// use std::time::{Duration, Instant};
/// uring::run(async {
///     let start = Instant::now();
///     uring::time::sleep(Duration::from_millis(5)).await;
///     assert!(start.elapsed() >= Duration::from_millis(5));
/// });
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    let deadline = Instant::now()
        .checked_add(duration)
        .unwrap_or_else(far_future);
    sleep_until(deadline)
}

/// Waits until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        timer: None,
    }
}

fn far_future() -> Instant {
    // About 30 years: far enough to mean "never", near enough not to overflow.
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

/// The error of a [`timeout`] whose time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// A future with a time limit. Made by [`timeout`].
#[derive(Debug)]
pub struct Timeout<F> {
    fut: F,
    sleep: Sleep,
}

impl<F> Timeout<F> {
    /// The wrapped future.
    pub fn into_inner(self) -> F {
        self.fut
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: INV-pin: `fut` is structurally pinned: it is never moved out of a pinned
        // `Timeout` (no Drop impl moves it, `into_inner` takes an unpinned self). `sleep` is
        // `Unpin`.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: INV-pin: see above; `fut` stays where the pinned `Timeout` keeps it.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        if let Poll::Ready(v) = fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs `fut` with a time limit: `Err(Elapsed)` if `duration` passes first, and the inner future
/// is dropped (cancelling its I/O). The `asyncio.wait_for` of this crate.
///
/// ```
/// use std::time::Duration;
/// use uring::time::{sleep, timeout};
/// uring::run(async {
///     let slow = timeout(Duration::from_millis(1), sleep(Duration::from_secs(10))).await;
///     assert!(slow.is_err());
///     let fast = timeout(Duration::from_secs(10), async { 5 }).await;
///     assert_eq!(fast, Ok(5));
/// });
/// ```
pub fn timeout<F: Future>(duration: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        sleep: sleep(duration),
    }
}

/// Ticks at a fixed period. Made by [`interval`].
///
/// The first tick completes at once. Each later tick is due one period after the previous
/// deadline (not after the previous tick was observed), so ticks do not drift. If the task falls
/// behind, the missed ticks complete immediately one after another until it has caught up.
#[derive(Debug)]
pub struct Interval {
    next: Instant,
    period: Duration,
    sleep: Sleep,
}

impl Interval {
    /// Waits for the next tick and returns its deadline.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        if Pin::new(&mut self.sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let due = self.next;
        self.next = due.checked_add(self.period).unwrap_or_else(far_future);
        self.sleep.reset(self.next);
        Poll::Ready(due)
    }

    /// The period between ticks.
    pub fn period(&self) -> Duration {
        self.period
    }
}

/// Ticks every `period`, the first time immediately.
///
/// # Panics
///
/// If `period` is zero.
///
/// ```
/// use std::time::Duration;
/// uring::run(async {
///     let mut every = uring::time::interval(Duration::from_millis(2));
///     let first = every.tick().await;
///     let second = every.tick().await;
///     assert_eq!(second - first, Duration::from_millis(2));
/// });
/// ```
pub fn interval(period: Duration) -> Interval {
    assert!(!period.is_zero(), "interval period must be non-zero");
    let now = Instant::now();
    Interval {
        next: now,
        period,
        sleep: sleep_until(now),
    }
}
