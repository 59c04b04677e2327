//! What dropped reads leave for the next read on the same socket.
//!
//! A read whose future is dropped while the kernel holds it is cancelled, but the cancel can lose
//! the race: the read then completes with bytes nobody asked for any more. Those bytes are the
//! next bytes of the stream, so they must not be thrown away. The read op's
//! [`unclaimed`](crate::op::OpCode::unclaimed) hook puts them here, in the socket's stash (one per
//! socket, shared by a stream and its halves), and the next read takes them from here before it
//! submits anything. An end of stream or an error such an abandoned read got is kept too and
//! handed on after the bytes (a one-shot `ECONNRESET` is not lost); the `ECANCELED` of the cancel
//! itself is no result of the socket's and is dropped. On a datagram socket each abandoned
//! receive keeps its whole datagram (and its sender when it asked for one).
//!
//! Order: while an abandoned read is still in flight (its cancel has not resolved), a new read
//! must not be submitted, or the kernel could complete the new one with later bytes before the
//! old one's completion hands over earlier bytes. So the stash counts abandoned reads (from
//! [`abandoned`](crate::op::OpCode::abandoned) until their final completion) and a new read
//! waits for them with its waker in the stash. Only abandoned reads count: a read future that is
//! merely not being polled still owns its result and blocks nobody. An abandoned read can only
//! complete while its runtime turns, so they are counted per runtime and a read waits only for
//! those of the runtime it runs on; elsewhere (the runtime is gone, or another one runs) it goes
//! ahead and fails as ops do.
//!
//! The steady path pays nothing for this: a read whose stash is empty and has no abandoned read
//! looks at one `RefCell` and submits; the stash allocates only when a read was abandoned.
//!
//! The hooks run while the driver is borrowed: filling the stash and waking wakers is all they do.

use crate::op::net::{Received, RecvSink};
use crate::runtime::{context, RuntimeState};
use socket2::SockAddr;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

/// How the socket's bytes are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// A byte stream (TCP, Unix stream): reads may split or join what was sent.
    Stream,
    /// Datagrams (UDP, Unix datagram): each receive takes one whole message.
    Datagram,
}

/// One receive's worth that an abandoned receive on a datagram socket took.
#[derive(Debug)]
pub(crate) enum Taken {
    /// A datagram (already truncated to the abandoned receive's buffer) and its sender, if that
    /// receive asked for it.
    Datagram(Vec<u8>, Option<SockAddr>),
    /// The error that receive got (a negated errno).
    Error(i32),
}

/// What a stream read gets from the stash.
#[derive(Debug)]
pub(crate) enum Stashed {
    /// Bytes, at most as many as the read has room for.
    Bytes(Vec<u8>),
    /// The end of stream (`Ok(0)`) or the error an abandoned read got, after all its bytes.
    End(io::Result<usize>),
}

/// The leftovers of a socket's abandoned reads. Shared (`Rc`) by the socket's handles (a
/// stream and its halves) and by each read op in flight on it.
#[derive(Debug)]
pub(crate) struct Stash {
    inner: RefCell<Inner>,
}

#[derive(Debug)]
struct Inner {
    framing: Framing,
    /// Stream bytes abandoned reads took and no read has taken yet: `bytes[start..]`.
    bytes: Vec<u8>,
    start: usize,
    /// A stream's end (0) or error (a negated errno) an abandoned read got, handed on after
    /// `bytes`.
    end: Option<i32>,
    /// A datagram socket's receives that abandoned receives took, in order.
    datagrams: VecDeque<Taken>,
    /// Abandoned reads the kernel may still complete, counted per runtime they were submitted
    /// on (only that runtime's loop can complete them). Usually empty or one entry.
    in_flight: Vec<(Weak<RuntimeState>, usize)>,
    /// Reads waiting for the abandoned ones to finish.
    waiters: Vec<Waker>,
}

impl Stash {
    /// An empty stash for a socket with this framing.
    pub(crate) fn new(framing: Framing) -> Rc<Stash> {
        Rc::new(Stash {
            inner: RefCell::new(Inner {
                framing,
                bytes: Vec::new(),
                start: 0,
                end: None,
                datagrams: VecDeque::new(),
                in_flight: Vec::new(),
                waiters: Vec::new(),
            }),
        })
    }

    /// Whether a read on this socket may submit now. While an abandoned read is in flight on
    /// the runtime running now, it must wait (the waker is registered). While one is in flight
    /// on another runtime that still runs (one not turning now: runtimes on a thread take
    /// turns), it may not go ahead either, or it could overtake that read's bytes; it cannot
    /// wait for a loop that does not turn, so it fails. Reads in flight on a runtime that shut
    /// down no longer count: their completions will never be reaped.
    fn gate(inner: &mut Inner, cx: &Context<'_>) -> Gate {
        if inner.in_flight.is_empty() {
            return Gate::Go;
        }
        inner.in_flight.retain(|(rt, _)| {
            rt.upgrade()
                .is_some_and(|rt| !rt.driver.try_borrow().is_ok_and(|d| d.is_shut_down()))
        });
        if inner.in_flight.is_empty() {
            return Gate::Go;
        }
        let here = context::with_current(|c| {
            c.is_some_and(|c| {
                inner
                    .in_flight
                    .iter()
                    .any(|(rt, _)| std::ptr::eq(c, rt.as_ptr()))
            })
        });
        if !here {
            return Gate::Elsewhere;
        }
        crate::waker::store_in(&mut inner.waiters, cx);
        Gate::Wait
    }

    /// For a stream read with room for `room` bytes: what the stash holds for it
    /// (`Ready(Some)`), nothing so it should submit (`Ready(None)`), or `Pending` while an
    /// abandoned read is in flight.
    pub(crate) fn poll_stream(&self, cx: &Context<'_>, room: usize) -> Poll<Option<Stashed>> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if inner.start < inner.bytes.len() {
            let avail = inner.bytes.len() - inner.start;
            let n = avail.min(room);
            let out = if inner.start == 0 && n == avail {
                std::mem::take(&mut inner.bytes)
            } else {
                inner.bytes[inner.start..inner.start + n].to_vec()
            };
            inner.start += n;
            if inner.start >= inner.bytes.len() {
                inner.bytes = Vec::new();
                inner.start = 0;
            }
            return Poll::Ready(Some(Stashed::Bytes(out)));
        }
        if let Some(end) = inner.end.take() {
            return Poll::Ready(Some(Stashed::End(result(end))));
        }
        match Self::gate(inner, cx) {
            Gate::Go => Poll::Ready(None),
            Gate::Wait => Poll::Pending,
            Gate::Elsewhere => Poll::Ready(Some(Stashed::End(Err(elsewhere())))),
        }
    }

    #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
    /// Gives back stream bytes that were read but not consumed (an adapter's read buffer): they
    /// come before everything the stash holds, so the next read gets them first.
    pub(crate) fn unread(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        let start = inner.start;
        let mut joined = Vec::with_capacity(bytes.len() + inner.bytes.len() - start);
        joined.extend_from_slice(bytes);
        joined.extend_from_slice(&inner.bytes[start..]);
        inner.bytes = joined;
        inner.start = 0;
    }

    /// For a datagram receive: the next receive an abandoned one took (`Ready(Some)`), nothing
    /// (`Ready(None)`), or `Pending` while an abandoned receive is in flight.
    pub(crate) fn poll_datagram(&self, cx: &Context<'_>) -> Poll<Option<Taken>> {
        let mut inner = self.inner.borrow_mut();
        if let Some(t) = inner.datagrams.pop_front() {
            return Poll::Ready(Some(t));
        }
        match Self::gate(&mut inner, cx) {
            Gate::Go => Poll::Ready(None),
            Gate::Wait => Poll::Pending,
            Gate::Elsewhere => Poll::Ready(Some(Taken::Error(-libc::EBUSY))),
        }
    }

    /// Whether the stash holds anything no read has taken yet, or an abandoned read may still
    /// bring some (on a runtime that has not shut down).
    pub(crate) fn holds_data(&self) -> bool {
        let mut inner = self.inner.borrow_mut();
        inner.in_flight.retain(|(rt, _)| {
            rt.upgrade()
                .is_some_and(|rt| !rt.driver.try_borrow().is_ok_and(|d| d.is_shut_down()))
        });
        inner.start < inner.bytes.len()
            || inner.end.is_some()
            || !inner.datagrams.is_empty()
            || !inner.in_flight.is_empty()
    }
}

/// What a read finds at the stash's gate.
enum Gate {
    /// Nothing is in flight that it could overtake: submit.
    Go,
    /// An abandoned read is in flight on this runtime: wait for it.
    Wait,
    /// An abandoned read is in flight on another runtime that still runs: fail.
    Elsewhere,
}

/// The error of a read that would overtake an abandoned read in flight on another runtime.
fn elsewhere() -> io::Error {
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        "a read dropped on another uring runtime of this thread is still in flight on this \
         socket: read it there (a read here could overtake its bytes)",
    )
}

impl Inner {
    fn keep(&mut self, received: Received<'_>) {
        let Received {
            result,
            room,
            from,
            fill,
            ..
        } = received;
        // The cancel's own result, or a signal: nothing the socket said.
        if result == -libc::ECANCELED || result == -libc::EINTR {
            return;
        }
        match self.framing {
            Framing::Datagram if result >= 0 => {
                let mut data = Vec::new();
                fill(&mut data);
                self.datagrams.push_back(Taken::Datagram(data, from));
            }
            Framing::Datagram => self.datagrams.push_back(Taken::Error(result)),
            Framing::Stream if result > 0 => {
                if self.start > 0 {
                    self.bytes.drain(..self.start);
                    self.start = 0;
                }
                fill(&mut self.bytes);
            }
            // A read with no room returns 0 without meaning end of stream.
            Framing::Stream if result == 0 && room == 0 => {}
            Framing::Stream => {
                // The first end wins: an end of stream or an error is followed by more ends.
                self.end.get_or_insert(result);
            }
        }
    }
}

/// A completion result as a read's result.
fn result(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

impl RecvSink for Stash {
    fn abandoned(&self, runtime: &Weak<RuntimeState>) {
        let mut inner = self.inner.borrow_mut();
        match inner
            .in_flight
            .iter_mut()
            .find(|(rt, _)| rt.ptr_eq(runtime))
        {
            Some((_, n)) => *n += 1,
            None => inner.in_flight.push((runtime.clone(), 1)),
        }
    }

    fn unclaimed(&self, received: Received<'_>) {
        let waiters = {
            let mut inner = self.inner.borrow_mut();
            let runtime = received.runtime;
            let more = received.more;
            inner.keep(received);
            // A multishot receive's completion with more to come: it is still in flight.
            let ended = if more {
                None
            } else {
                inner
                    .in_flight
                    .iter()
                    .position(|(rt, _)| rt.ptr_eq(runtime))
            };
            if let Some(i) = ended {
                inner.in_flight[i].1 -= 1;
                if inner.in_flight[i].1 == 0 {
                    inner.in_flight.swap_remove(i);
                }
            }
            std::mem::take(&mut inner.waiters)
        };
        // Each waiting read looks again: at bytes this brought, or at whether it may submit.
        for w in waiters {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands `b` to the stash as an abandoned read's completion.
    fn done(s: &Stash, result: i32, room: usize, b: &[u8]) {
        s.unclaimed(Received {
            result,
            room,
            from: None,
            fill: &mut |v| v.extend_from_slice(b),
            runtime: &Weak::new(),
            more: false,
        });
    }

    fn take(stash: &Stash, room: usize) -> Option<Stashed> {
        let waker = Waker::noop();
        match stash.poll_stream(&Context::from_waker(waker), room) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("pending outside a runtime"),
        }
    }

    #[test]
    fn stream_bytes_come_back_in_order_then_the_end() {
        let s = Stash::new(Framing::Stream);
        let rt = Weak::new();
        s.abandoned(&rt);
        done(&s, 5, 8, b"hello");
        s.abandoned(&rt);
        done(&s, 6, 8, b" world");
        s.abandoned(&rt);
        done(&s, -libc::ECONNRESET, 8, b"");
        assert!(s.holds_data());
        let mut got = Vec::new();
        while let Some(Stashed::Bytes(b)) = take(&s, 4) {
            assert!(b.len() <= 4);
            got.extend(b);
        }
        assert_eq!(got, b"hello world");
        // The error came out of the loop above; it is handed on once.
        assert!(take(&s, 4).is_none());
        assert!(!s.holds_data());
    }

    #[test]
    fn the_end_follows_the_bytes_and_is_handed_on_once() {
        let s = Stash::new(Framing::Stream);
        s.abandoned(&Weak::new());
        done(&s, -libc::ECONNRESET, 8, b"");
        match take(&s, 8) {
            Some(Stashed::End(Err(e))) => assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET)),
            other => panic!("{other:?}"),
        }
        assert!(take(&s, 8).is_none());
        s.abandoned(&Weak::new());
        done(&s, 0, 8, b"");
        assert!(matches!(take(&s, 8), Some(Stashed::End(Ok(0)))));
    }

    #[test]
    fn a_cancelled_or_roomless_read_leaves_nothing() {
        let s = Stash::new(Framing::Stream);
        s.abandoned(&Weak::new());
        done(&s, -libc::ECANCELED, 8, b"");
        s.abandoned(&Weak::new());
        done(&s, 0, 0, b"");
        assert!(!s.holds_data());
        assert!(take(&s, 8).is_none());
    }

    #[test]
    fn partly_taken_bytes_stay_in_order_with_later_ones() {
        let s = Stash::new(Framing::Stream);
        done(&s, 4, 4, b"abcd");
        assert!(matches!(take(&s, 1), Some(Stashed::Bytes(b)) if b == b"a"));
        done(&s, 2, 4, b"ef");
        assert!(matches!(take(&s, 100), Some(Stashed::Bytes(b)) if b == b"bcdef"));
        assert!(take(&s, 100).is_none());
    }

    #[test]
    fn datagrams_keep_their_boundaries_and_errors() {
        let s = Stash::new(Framing::Datagram);
        done(&s, 3, 8, b"one");
        done(&s, 0, 8, b"");
        done(&s, -libc::ECONNREFUSED, 8, b"");
        done(&s, -libc::ECANCELED, 8, b"");
        let cx = Context::from_waker(Waker::noop());
        let next = |s: &Stash| match s.poll_datagram(&cx) {
            Poll::Ready(t) => t,
            Poll::Pending => panic!("pending"),
        };
        assert!(matches!(next(&s), Some(Taken::Datagram(d, None)) if d == b"one"));
        assert!(matches!(next(&s), Some(Taken::Datagram(d, None)) if d.is_empty()));
        assert!(matches!(next(&s), Some(Taken::Error(e)) if e == -libc::ECONNREFUSED));
        assert!(next(&s).is_none());
    }

    #[test]
    fn waiters_are_woken_when_an_abandoned_read_completes() {
        let s = Stash::new(Framing::Stream);
        s.abandoned(&Weak::new());
        s.inner.borrow_mut().waiters.push(Waker::noop().clone());
        done(&s, 2, 4, b"hi");
        let inner = s.inner.borrow();
        assert!(inner.waiters.is_empty(), "the waiting reads were woken");
        assert!(inner.in_flight.is_empty());
    }

    #[test]
    fn a_multishot_receive_is_in_flight_until_its_final_completion() {
        let s = Stash::new(Framing::Stream);
        let rt = Weak::new();
        s.abandoned(&rt);
        for (b, more) in [(&b"ab"[..], true), (b"cd", true), (b"", false)] {
            s.unclaimed(Received {
                result: if b.is_empty() { -libc::ECANCELED } else { 2 },
                room: 8,
                from: None,
                fill: &mut |v| v.extend_from_slice(b),
                runtime: &rt,
                more,
            });
            assert_eq!(s.inner.borrow().in_flight.is_empty(), !more);
        }
        assert!(matches!(take(&s, 8), Some(Stashed::Bytes(b)) if b == b"abcd"));
    }

    #[test]
    fn no_wait_outside_the_reads_runtime() {
        let s = Stash::new(Framing::Stream);
        // In flight on a runtime that is not running here (none is): the read goes ahead.
        s.abandoned(&Weak::new());
        assert!(take(&s, 8).is_none());
    }
}
