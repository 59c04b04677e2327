//! [`RecvMultishot`]: a stream's received bytes in buffers of a [`BufRing`], from one multishot
//! receive re-armed as needed.
//!
//! Modes, chosen at run time:
//! - multishot (`IORING_RECV_MULTISHOT` with buffer select, Linux 6.0): one SQE, one completion
//!   per chunk received, re-armed when it ends (a completion without `IORING_CQE_F_MORE`: the
//!   kernel ran out of the ring's buffers, `ENOBUFS`, or stopped the op for its own reasons);
//! - single-shot with buffer select (5.19, where the multishot flag is refused with `EINVAL`);
//! - single-shot receives into the ring's free buffers when the ring is unregistered (before
//!   5.19), through the stream's ordinary read path.
//!
//! After `ENOBUFS`, the receive is re-armed only once a buffer was provided back after it was
//! armed (the count of returns moved), so a consumer that holds every buffer costs no syscall
//! until it drops one: no busy loop. Cancel safety is the stash's: the stream looks at the
//! socket's stash before each arm (bytes a dropped read took come first, and an abandoned read
//! still in flight is waited for), and a dropped stream's late completions go to the stash,
//! copied out of their buffers, which go back to the ring.

use crate::buf::{BufRing, RingBuf};
use crate::net::conn::{Conn, Read};
use crate::net::stash::Stashed;
use crate::op::net as op;
use crate::op::MultiOp;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The buffers a stream receives through a [`BufRing`]: made by
/// [`Stream::recv_multishot`](crate::net::Stream::recv_multishot).
///
/// [`next`](RecvMultishot::next) gives each chunk received as a [`RingBuf`] (which goes back to
/// the ring when dropped), `None` at end of stream, after an error, or after the end of stream
/// or error was returned. Running out of buffers is handled inside: the receive waits for one
/// to come back and goes on; the caller sees nothing of it but the wait.
///
/// Cancel-safe: dropping the stream (or a `next` future) loses no byte. Chunks the kernel
/// received for it that nobody took are copied out of their buffers into the socket's stash
/// (the buffers go back to the ring), and the socket's next read, or next `recv_multishot`,
/// returns them first, in order.
///
/// Under the `futures-io` feature it is also a `futures_core::Stream`.
pub struct RecvMultishot {
    conn: Conn,
    ring: BufRing,
    mode: Mode,
    /// The ring receive in flight (registered ring).
    op: Option<MultiOp<op::RecvRing>>,
    /// The read in flight (unregistered ring).
    read: Option<Read<RingBuf>>,
    /// The ring's count of returns when the receive was last armed.
    armed_at: u64,
    /// The last receive ended with `ENOBUFS`: re-arm once a buffer came back since it was armed.
    starved: bool,
    /// A multishot completion brought data: an `EINVAL` now is the socket's.
    worked: bool,
    /// The end of stream or an error was returned: nothing more.
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Multishot,
    SingleSelect,
    Unregistered,
}

impl RecvMultishot {
    pub(crate) fn new(conn: Conn, ring: &BufRing) -> RecvMultishot {
        RecvMultishot {
            conn,
            ring: ring.clone(),
            mode: if ring.is_registered() {
                Mode::Multishot
            } else {
                Mode::Unregistered
            },
            op: None,
            read: None,
            armed_at: 0,
            starved: false,
            worked: false,
            done: false,
        }
    }

    /// Polls for the next buffer received, in the manner of `futures::Stream::poll_next`.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<RingBuf>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = if self.mode == Mode::Unregistered {
            self.poll_unregistered(cx)
        } else {
            self.poll_ring(cx)
        };
        let next = std::task::ready!(next);
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
            self.op = None;
            self.read = None;
        }
        Poll::Ready(next)
    }

    /// The next buffer received; see [`RecvMultishot::poll_next`].
    pub async fn next(&mut self) -> Option<io::Result<RingBuf>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Whether one multishot receive serves the stream (false: single-shot receives, on a
    /// kernel without multishot receive or provided buffer rings).
    pub fn is_multishot(&self) -> bool {
        self.mode == Mode::Multishot
    }

    /// Uses single-shot receives with buffer select, as on a kernel without multishot receive
    /// (5.19). For tests of that fallback.
    #[doc(hidden)]
    pub fn force_single_shot(&mut self) {
        if self.mode == Mode::Multishot {
            self.mode = Mode::SingleSelect;
        }
    }

    fn poll_unregistered(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<RingBuf>>> {
        if self.read.is_none() {
            let Some(buf) = self.ring.take_free() else {
                // Every buffer is out: one coming back wakes us (no syscall meanwhile).
                self.ring.wait_for_return(cx);
                return Poll::Pending;
            };
            self.read = Some(self.conn.read(buf));
        }
        let read = self.read.as_mut().expect("a read in flight");
        let (res, buf) = std::task::ready!(Pin::new(read).poll(cx));
        self.read = None;
        Poll::Ready(match res {
            Ok(0) => None,
            Ok(_) => Some(Ok(buf)),
            Err(e) => Some(Err(e)),
        })
    }

    fn poll_ring(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<RingBuf>>> {
        loop {
            if self.op.is_none() {
                if self.starved {
                    if self.ring.returns() == self.armed_at {
                        self.ring.wait_for_return(cx);
                        return Poll::Pending;
                    }
                    self.starved = false;
                }
                // What dropped reads left comes first; an abandoned one in flight is waited for.
                let stash = self.conn.stash();
                match std::task::ready!(stash.poll_stream(cx, self.ring.buf_capacity())) {
                    Some(Stashed::Bytes(bytes)) => {
                        return Poll::Ready(Some(Ok(RingBuf::from_vec(bytes))))
                    }
                    Some(Stashed::End(Ok(_))) => return Poll::Ready(None),
                    Some(Stashed::End(Err(e))) => return Poll::Ready(Some(Err(e))),
                    None => {}
                }
                let Some(bgid) = self.ring.group_here() else {
                    return Poll::Ready(Some(Err(io::Error::other(
                        "this BufRing is registered with another uring runtime (or one that \
                         is gone): receive into it on the runtime it was made on",
                    ))));
                };
                self.armed_at = self.ring.returns();
                self.op = Some(op::recv_ring(
                    self.conn.socket().fd(),
                    &self.ring,
                    bgid,
                    self.mode == Mode::Multishot,
                    self.conn.sink(),
                ));
            }
            let multi = self.op.as_mut().expect("a receive in flight");
            let c = match multi.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.op = None;
                    continue;
                }
                Poll::Ready(Some(c)) => c,
            };
            if multi.is_done() {
                self.op = None;
            }
            let buf = io_uring::cqueue::buffer_select(c.flags).map(|bid| {
                // SAFETY: INV-bufring: this completion of a receive on the ring's group named
                // buffer `bid` with `c.result` bytes; it is handed out once, here.
                unsafe { self.ring.received(bid, c.result.max(0) as usize) }
            });
            if c.result > 0 {
                self.worked = true;
                return Poll::Ready(Some(buf.ok_or_else(|| {
                    io::Error::other("the kernel reported data without a buffer")
                })));
            }
            // An end, an error, or no buffer: a buffer it named, if any, goes back.
            drop(buf);
            match -c.result {
                0 => return Poll::Ready(None),
                libc::ENOBUFS => self.starved = true,
                libc::EINVAL if self.mode == Mode::Multishot && !self.worked => {
                    // A kernel without multishot receive (5.19): one receive per buffer.
                    self.mode = Mode::SingleSelect;
                }
                libc::EINTR => {}
                e => return Poll::Ready(Some(Err(io::Error::from_raw_os_error(e)))),
            }
            // Re-armed at the top of the loop (or the op goes on, if that was not its final
            // completion).
        }
    }
}

impl fmt::Debug for RecvMultishot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvMultishot")
            .field("mode", &self.mode)
            .field("starved", &self.starved)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// The received buffers as a `futures_core::Stream` (feature `futures-io`).
#[cfg(feature = "futures-io")]
impl futures_core::Stream for RecvMultishot {
    type Item = io::Result<RingBuf>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<RingBuf>>> {
        RecvMultishot::poll_next(self.get_mut(), cx)
    }
}
