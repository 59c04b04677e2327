//! hyper's `rt::Read` and `rt::Write` for [`Compat`], and [`HyperExecutor`] and [`HyperTimer`]
//! so hyper runs on the current `uring` runtime (feature `hyper`).

use super::Compat;
use crate::net::side::{Reads, Writes};
use crate::net::Family;
use crate::net::Stream;
use crate::runtime::context;
use crate::runtime::timers::TimerKey;
use hyper::rt::{Read, ReadBufCursor, Write};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

impl<F: Family, S: Reads> Read for Compat<Stream<F, S>> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let data = std::task::ready!(this.poll_fill_buf(cx))?;
        let n = data.len().min(buf.remaining());
        buf.put_slice(&data[..n]);
        this.consume_read(n);
        Poll::Ready(Ok(()))
    }
}

impl<F: Family, S: Writes> Write for Compat<Stream<F, S>> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_out(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_shutdown_out(cx)
    }
}

/// hyper's `rt::Executor` for any `'static` future: spawns it on the current `uring` runtime
/// (it need not be `Send`: it runs on this thread).
///
/// # Panics
///
/// `execute` outside a runtime, as [`spawn`](crate::spawn).
#[derive(Debug, Clone, Copy, Default)]
pub struct HyperExecutor;

impl<Fut> hyper::rt::Executor<Fut> for HyperExecutor
where
    Fut: Future + 'static,
    Fut::Output: 'static,
{
    fn execute(&self, fut: Fut) {
        drop(crate::spawn(fut));
    }
}

/// hyper's `rt::Timer` on the current `uring` runtime's timers. hyper needs one: without a
/// timer it silently drops its header-read timeout.
#[derive(Debug, Clone, Copy, Default)]
pub struct HyperTimer;

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let deadline = Instant::now()
            .checked_add(duration)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365 * 30));
        self.sleep_until(deadline)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HyperSleep::until(deadline))
    }
}

/// A sleep for hyper, which wants its timers `Send + Sync`: it holds only its deadline and the
/// key of its registration in one runtime's timer table (plain numbers), and reaches that
/// table through the thread's current runtime when polled. Polled under another runtime it
/// registers there. Dropped where its runtime is not current (hyper does not do that), its
/// entry stays in that table until the runtime shuts down.
///
/// # Panics
///
/// When polled outside a runtime before its deadline, as [`Sleep`](crate::time::Sleep).
#[derive(Debug)]
pub struct HyperSleep {
    deadline: Instant,
    /// The runtime's id and the timer's key, once registered.
    timer: Option<(u16, TimerKey)>,
}

impl HyperSleep {
    /// A sleep that completes at `deadline`.
    pub fn until(deadline: Instant) -> HyperSleep {
        HyperSleep {
            deadline,
            timer: None,
        }
    }
}

impl Future for HyperSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let timer = self.timer;
        let state = context::current();
        let mut timers = state.timers.borrow_mut();
        match timer {
            Some((id, key)) if id == state.id => {
                if timers.poll(key, cx) {
                    return Poll::Ready(());
                }
            }
            _ => {
                let key = timers.insert(deadline, cx.waker().clone());
                self.timer = Some((state.id, key));
            }
        }
        Poll::Pending
    }
}

impl Drop for HyperSleep {
    fn drop(&mut self) {
        if let Some((id, key)) = self.timer {
            context::with_current(|s| {
                if let Some(s) = s.filter(|s| s.id == id) {
                    s.timers.borrow_mut().remove(key);
                }
            });
        }
    }
}

impl hyper::rt::Sleep for HyperSleep {}
