//! A stream or datagram socket with its stash: the I/O every stream, half and datagram socket
//! shares. Reads look at the stash first (see `stash.rs`), so what a dropped read took comes
//! back to the next read, in order.

use crate::buf::{IoBuf, IoBufMut};
use crate::fd::SharedFd;
use crate::io::{Leftover, Leftovers, SpliceEnd};
use crate::net::socket::Socket;
use crate::net::stash::{Framing, Stash, Stashed, Taken};
use crate::op::net as op;
use crate::op::net::RecvSink;
use crate::BufResult;
use socket2::SockAddr;
use std::future::{poll_fn, Future};
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// A socket that reads (a stream, one of its halves, or a datagram socket) and its stash,
/// shared by every handle of the socket.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    socket: Socket,
    stash: Rc<Stash>,
}

impl Conn {
    pub(crate) fn new(socket: Socket, framing: Framing) -> Conn {
        Conn {
            socket,
            stash: Stash::new(framing),
        }
    }

    pub(crate) fn socket(&self) -> &Socket {
        &self.socket
    }

    #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
    /// Gives back stream bytes that were read but not consumed: the next read gets them first.
    pub(crate) fn unread(&self, bytes: &[u8]) {
        self.stash.unread(bytes);
    }

    pub(crate) fn sink(&self) -> Rc<dyn RecvSink> {
        self.stash.clone()
    }

    /// The socket's stash (what dropped reads left).
    pub(crate) fn stash(&self) -> &Stash {
        &self.stash
    }

    /// Whether both handles are of the same socket.
    pub(crate) fn same_as(&self, other: &Conn) -> bool {
        Rc::ptr_eq(&self.stash, &other.stash)
    }

    /// Gives the socket's fd to the caller (see [`Socket::into_owned_fd`]).
    ///
    /// # Errors
    ///
    /// If a dropped read took bytes (or a datagram) no read has taken yet, or is still in flight
    /// and may take some: handing the fd over would lose them. Also if the fd had to be
    /// duplicated and that failed.
    pub(crate) fn into_owned_fd(self) -> io::Result<OwnedFd> {
        if self.stash.holds_data() {
            return Err(io::Error::other(
                "a dropped read took data that no read has taken yet, or is still in flight: \
                 read from the socket before into_std, or that data would be lost",
            ));
        }
        self.socket.into_owned_fd()
    }

    /// A stream read into `buf` from its start up to its capacity; 0 at end of stream.
    pub(crate) fn read<B: IoBufMut>(&self, buf: B) -> Read<B> {
        Read {
            stash: self.stash.clone(),
            fd: self.socket.fd().clone(),
            state: ReadState::Gate(Some(buf)),
            pipe: false,
        }
    }

    /// A stream read into several buffers in order, each filled to its capacity first.
    pub(crate) async fn readv<B: IoBufMut>(&self, mut bufs: Vec<B>) -> BufResult<usize, Vec<B>> {
        let room = bufs.iter().map(|b| b.bytes_total()).sum();
        match poll_fn(|cx| self.stash.poll_stream(cx, room)).await {
            None => op::recv_vectored(self.socket.fd(), bufs, self.sink()).await,
            Some(Stashed::Bytes(bytes)) => {
                let n = fill(&mut bufs, &bytes);
                (Ok(n), bufs)
            }
            Some(Stashed::End(res)) => (res, bufs),
        }
    }

    /// Receives one datagram into `buf` (truncated to its capacity).
    pub(crate) async fn recv<B: IoBufMut>(&self, mut buf: B) -> BufResult<usize, B> {
        match poll_fn(|cx| self.stash.poll_datagram(cx)).await {
            None => op::RecvOp::new(self.socket.fd().clone(), buf, self.sink()).await,
            Some(Taken::Datagram(data, _)) => {
                let n = fill(std::slice::from_mut(&mut buf), &data);
                (Ok(n), buf)
            }
            Some(Taken::Error(e)) => (Err(io::Error::from_raw_os_error(-e)), buf),
        }
    }

    /// Receives one datagram into `buf` and its sender (`None`: a dropped `recv`, which asks
    /// for no sender, took it).
    pub(crate) async fn recv_from<B: IoBufMut>(
        &self,
        mut buf: B,
    ) -> BufResult<(usize, Option<SockAddr>), B> {
        match poll_fn(|cx| self.stash.poll_datagram(cx)).await {
            None => {
                let (res, buf) = op::recv_from(self.socket.fd(), buf, self.sink()).await;
                (res.map(|(n, from)| (n, Some(from))), buf)
            }
            Some(Taken::Datagram(data, from)) => {
                let n = fill(std::slice::from_mut(&mut buf), &data);
                (Ok((n, from)), buf)
            }
            Some(Taken::Error(e)) => (Err(io::Error::from_raw_os_error(-e)), buf),
        }
    }

    /// A send of the buffer's initialized bytes, as one future that owns what it needs.
    pub(crate) fn write<B: IoBuf>(&self, buf: B) -> op::SendOp<B> {
        op::SendOp::new(self.socket.fd().clone(), buf)
    }

    pub(crate) async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> BufResult<usize, Vec<B>> {
        op::send_vectored(self.socket.fd(), bufs).await
    }

    pub(crate) async fn send_to<B: IoBuf>(&self, buf: B, addr: &SockAddr) -> BufResult<usize, B> {
        op::send_to(self.socket.fd(), buf, addr).await
    }

    pub(crate) async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        op::shutdown(self.socket.fd(), how).await
    }

    /// The socket as one end of a splice; as a source (`reads`), after its stash.
    pub(crate) fn splice_end(&self, reads: bool) -> SpliceEnd {
        let leftovers: Option<Rc<dyn Leftovers>> = match reads {
            true => Some(self.stash.clone()),
            false => None,
        };
        SpliceEnd::new(self.socket.fd().clone(), false, leftovers)
    }
}

/// The read end of a pipe (a child's stdout or stderr) and its stash: reads as cancel-safe as a
/// stream's, through `IORING_OP_READ`.
#[derive(Debug)]
pub(crate) struct PipeReader {
    fd: SharedFd,
    stash: Rc<Stash>,
}

impl PipeReader {
    /// Takes the pipe's read end (in blocking mode: the ring waits for it).
    pub(crate) fn new(fd: SharedFd) -> PipeReader {
        PipeReader {
            fd,
            stash: Stash::new(Framing::Stream),
        }
    }

    pub(crate) fn fd(&self) -> &SharedFd {
        &self.fd
    }

    /// The fd, giving up the reader (its stash must hold nothing the caller still wants).
    pub(crate) fn into_fd(self) -> SharedFd {
        self.fd
    }

    /// A read into `buf` from its start up to its capacity; 0 at end of stream.
    pub(crate) fn read<B: IoBufMut>(&self, buf: B) -> Read<B> {
        Read {
            stash: self.stash.clone(),
            fd: self.fd.clone(),
            state: ReadState::Gate(Some(buf)),
            pipe: true,
        }
    }

    /// Whether a dropped read took bytes no read has taken yet, or may still take some.
    pub(crate) fn holds_data(&self) -> bool {
        self.stash.holds_data()
    }

    /// The pipe as the source of a splice, after its stash.
    pub(crate) fn splice_end(&self) -> SpliceEnd {
        let leftovers: Rc<dyn Leftovers> = self.stash.clone();
        SpliceEnd::new(self.fd.clone(), true, Some(leftovers))
    }
}

impl Leftovers for Stash {
    fn poll_leftover(&self, cx: &Context<'_>, room: usize) -> Poll<Option<Leftover>> {
        self.poll_stream(cx, room).map(|stashed| {
            stashed.map(|s| match s {
                Stashed::Bytes(b) => Leftover::Bytes(b),
                Stashed::End(res) => Leftover::End(res),
            })
        })
    }
}

/// A stream read that owns what it needs (the stash and the fd, both counted), so it can be
/// kept in a struct across polls: the stash's bytes first (no syscall), else a receive. The
/// one read path of every stream, half and compat adapter.
pub(crate) struct Read<B: IoBufMut> {
    stash: Rc<Stash>,
    fd: SharedFd,
    state: ReadState<B>,
    /// The fd is a pipe: `IORING_OP_READ` rather than `RECV`.
    pipe: bool,
}

enum ReadState<B: IoBufMut> {
    /// At the stash's gate, with the buffer.
    Gate(Option<B>),
    /// The receive is in flight.
    Receiving(op::RecvOp<B>),
}

impl<B: IoBufMut> Future for Read<B> {
    type Output = BufResult<usize, B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let ReadState::Gate(buf) = &mut this.state {
            let room = buf.as_ref().map_or(0, |b| b.bytes_total());
            let stashed = std::task::ready!(this.stash.poll_stream(cx, room));
            let mut buf = buf.take().expect("a read polled after it completed");
            match stashed {
                Some(Stashed::Bytes(bytes)) => {
                    let n = fill(std::slice::from_mut(&mut buf), &bytes);
                    return Poll::Ready((Ok(n), buf));
                }
                Some(Stashed::End(res)) => return Poll::Ready((res, buf)),
                None => {
                    let sink: Rc<dyn RecvSink> = this.stash.clone();
                    let fd = this.fd.clone();
                    this.state = ReadState::Receiving(if this.pipe {
                        op::RecvOp::read(fd, buf, sink)
                    } else {
                        op::RecvOp::new(fd, buf, sink)
                    });
                }
            }
        }
        match &mut this.state {
            ReadState::Receiving(recv) => Pin::new(recv).poll(cx),
            ReadState::Gate(_) => unreachable!("the receive was just started"),
        }
    }
}

/// Copies `bytes` into `bufs` in order, each filled to its capacity before the next, and marks
/// them initialized; returns how many bytes fit.
fn fill<B: IoBufMut>(bufs: &mut [B], bytes: &[u8]) -> usize {
    let mut done = 0;
    for b in bufs {
        let here = (bytes.len() - done).min(b.bytes_total());
        // SAFETY: the IoBufMut contract (INV-heap): `stable_mut_ptr()` points to
        // `bytes_total()` writable bytes, and `here` is at most that; the source is a separate
        // allocation. Those `here` bytes are then initialized.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), b.stable_mut_ptr(), here);
            b.set_init(here);
        }
        done += here;
    }
    done
}
