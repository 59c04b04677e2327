//! The socket core shared by TCP, UDP and Unix sockets: an fd every op holds a clone of, how
//! sockets are opened, bound and connected, and the [`Acceptor`] behind `incoming()`. (Reads and
//! writes are in `conn.rs`, with the stash that makes reads cancel-safe.)
//!
//! Sockets stay in blocking mode. io_uring never blocks the loop on them: it tries each operation
//! without waiting and, if the socket is not ready, parks it on the socket's wait queue inside the
//! kernel and completes it later. So there is no `O_NONBLOCK`, no `EAGAIN` and no readiness
//! polling in this crate.

use crate::fd::SharedFd;
use crate::op::net::{self as op, AcceptMulti, AcceptOne};
use crate::op::MultiOp;
use socket2::{Domain, SockAddr, SockRef, Type};
use std::collections::VecDeque;
use std::io;
use std::net::ToSocketAddrs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

/// Listen backlog for sockets this crate puts into listening state (the kernel caps it at
/// `net.core.somaxconn`).
pub(crate) const LISTEN_BACKLOG: i32 = 1024;

/// Which address-sharing options a listener gets before it binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// Neither (Unix sockets, where the options mean nothing).
    Nothing,
    /// `SO_REUSEADDR`, as std and tokio set it: a restarted server can bind while old
    /// connections linger in TIME_WAIT. It does not let two live listeners share the address.
    Address,
    /// `SO_REUSEADDR` and `SO_REUSEPORT`: live listeners that all set it share the address
    /// (one per thread, say), and the kernel spreads new connections across them.
    AddressAndPort,
}

/// An open socket; closed (a plain close(2)) when the socket and every op using it are gone.
#[derive(Debug, Clone)]
pub(crate) struct Socket {
    fd: SharedFd,
}

impl Socket {
    /// A new close-on-exec socket.
    pub(crate) fn new(domain: Domain, ty: Type) -> io::Result<Socket> {
        let s = socket2::Socket::new(domain, ty, None)?;
        Ok(Socket::from_fd(SharedFd::new(s.into_raw_fd())))
    }

    pub(crate) fn from_fd(fd: SharedFd) -> Socket {
        Socket { fd }
    }

    /// Takes a socket from std or socket2, putting it back into blocking mode if it was not:
    /// io_uring waits for blocking sockets without blocking the loop.
    pub(crate) fn from_owned(fd: OwnedFd) -> io::Result<Socket> {
        SockRef::from(&fd).set_nonblocking(false)?;
        Ok(Socket::from_fd(SharedFd::new(fd.into_raw_fd())))
    }

    /// A socket bound to `addr` and listening.
    pub(crate) fn listen(addr: &SockAddr, reuse: Reuse) -> io::Result<Socket> {
        let s = socket2::Socket::new(addr.domain(), Type::STREAM, None)?;
        if reuse != Reuse::Nothing {
            s.set_reuse_address(true)?;
        }
        if reuse == Reuse::AddressAndPort {
            s.set_reuse_port(true)?;
        }
        s.bind(addr)?;
        s.listen(LISTEN_BACKLOG)?;
        Ok(Socket::from_fd(SharedFd::new(s.into_raw_fd())))
    }

    /// Tries `open` on each of `addrs` in turn: the first socket it opens, or the last error.
    pub(crate) fn first_of(
        addrs: impl ToSocketAddrs,
        open: impl Fn(&SockAddr) -> io::Result<Socket>,
    ) -> io::Result<Socket> {
        let mut last = None;
        for a in addrs.to_socket_addrs()? {
            match open(&SockAddr::from(a)) {
                Ok(socket) => return Ok(socket),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")
        }))
    }

    /// A socket bound to `addr`.
    pub(crate) fn bind(addr: &SockAddr, ty: Type) -> io::Result<Socket> {
        let s = socket2::Socket::new(addr.domain(), ty, None)?;
        s.bind(addr)?;
        Ok(Socket::from_fd(SharedFd::new(s.into_raw_fd())))
    }

    /// Gives the socket's fd to the caller. If a dropped op still holds it (its cancel has not
    /// completed yet), the caller gets a duplicate, and this one is closed when that op is done.
    pub(crate) fn into_owned_fd(self) -> io::Result<OwnedFd> {
        match self.fd.try_unwrap() {
            // SAFETY: INV-fd: `try_unwrap` gave us the only handle to this open fd.
            Ok(raw) => Ok(unsafe { OwnedFd::from_raw_fd(raw) }),
            Err(shared) => {
                let fd = SockRef::from(&Socket { fd: shared }).try_clone()?;
                Ok(OwnedFd::from(fd))
            }
        }
    }

    /// A connected pair of Unix-domain sockets of type `ty` (socketpair(2)).
    pub(crate) fn pair(ty: Type) -> io::Result<(Socket, Socket)> {
        let (a, b) = socket2::Socket::pair(Domain::UNIX, ty, None)?;
        Ok((
            Socket::from_owned(OwnedFd::from(a))?,
            Socket::from_owned(OwnedFd::from(b))?,
        ))
    }

    /// The shared fd, for the ops on it.
    pub(crate) fn fd(&self) -> &SharedFd {
        &self.fd
    }

    /// `Debug` output for a socket type named `kind` of family `family`.
    pub(crate) fn debug(
        &self,
        f: &mut std::fmt::Formatter<'_>,
        kind: &str,
        family: &str,
    ) -> std::fmt::Result {
        f.debug_struct(kind)
            .field("family", &family)
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }

    pub(crate) fn sock_ref(&self) -> SockRef<'_> {
        SockRef::from(self)
    }

    pub(crate) fn local_addr(&self) -> io::Result<SockAddr> {
        self.sock_ref().local_addr()
    }

    pub(crate) fn peer_addr(&self) -> io::Result<SockAddr> {
        self.sock_ref().peer_addr()
    }

    pub(crate) async fn connect(&self, addr: SockAddr) -> io::Result<()> {
        op::connect(&self.fd, addr).await
    }

    pub(crate) async fn accept(&self) -> io::Result<(Socket, SockAddr)> {
        let (fd, addr) = op::accept(&self.fd).await?;
        Ok((Socket::from_fd(fd), addr))
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: INV-fd: the fd stays open at least as long as `self`, which holds a `SharedFd` to
        // it.
        unsafe { BorrowedFd::borrow_raw(self.fd.as_raw_fd()) }
    }
}

/// Accepts connections one after another for a listener's `incoming()` stream.
///
/// Backpressure: the kernel takes at most [`ACCEPT_QUEUE`](op::ACCEPT_QUEUE) connections that
/// nobody asked for; the listen backlog holds the next ones. So a server that stops asking holds
/// a bounded number of accepted fds, and loses no connection.
///
/// - [`AcceptMode::Pipelined`] (what `incoming()` uses): single-shot accepts, each of which takes
///   at most one connection, armed only when the stream is polled and at most `ACCEPT_QUEUE` at
///   once (the number doubles with each connection taken, from 1, and goes back to 1 after an
///   error, so an accept loop out of fds makes one attempt per poll). The bound is strict.
/// - [`AcceptMode::Multishot`] (`incoming_multishot()`): one multishot accept (Linux 5.19+) posts
///   a completion per connection; the driver stops it once `ACCEPT_QUEUE` wait unclaimed, and it
///   is submitted again when the stream is next polled. One SQE serves a whole burst, but the
///   kernel takes a burst whole (every connection waiting in the backlog when it wakes) before
///   the stop lands: a server that stops asking can hold up to a listen backlog's worth. If the
///   kernel rejects the multishot flag (`EINVAL` before any success), it falls back to one
///   single-shot accept at a time.
pub(crate) struct Acceptor {
    listener: SharedFd,
    mode: Mode,
}

/// How an [`Acceptor`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptMode {
    /// Up to `ACCEPT_QUEUE` single-shot accepts in flight.
    Pipelined,
    /// One multishot accept.
    Multishot,
}

enum Mode {
    Pipelined(Pipeline),
    Multishot(Multishot),
}

impl Acceptor {
    pub(crate) fn new(listener: &Socket, mode: AcceptMode) -> Acceptor {
        let mode = match mode {
            AcceptMode::Pipelined => Mode::Pipelined(Pipeline {
                ops: VecDeque::new(),
                ready: VecDeque::new(),
                depth: 1,
            }),
            AcceptMode::Multishot => Mode::Multishot(Multishot {
                multi: None,
                single: None,
                multishot: true,
                multishot_worked: false,
                just_stopped: false,
            }),
        };
        Acceptor {
            listener: listener.fd.clone(),
            mode,
        }
    }

    /// Whether a multishot accept is in use (it may have fallen back to single-shot).
    #[cfg(test)]
    pub(crate) fn is_multishot(&self) -> bool {
        matches!(&self.mode, Mode::Multishot(m) if m.multishot)
    }

    /// How many accepts are in flight or have results waiting (at most `ACCEPT_QUEUE`).
    #[cfg(test)]
    pub(crate) fn taken_or_armed(&self) -> usize {
        match &self.mode {
            Mode::Pipelined(p) => p.ops.len() + p.ready.len(),
            Mode::Multishot(_) => 0,
        }
    }

    pub(crate) fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Socket>> {
        let res = match &mut self.mode {
            Mode::Pipelined(p) => std::task::ready!(p.poll(&self.listener, cx)),
            Mode::Multishot(m) => std::task::ready!(m.poll(&self.listener, cx)),
        };
        Poll::Ready(res.map(Socket::from_fd))
    }
}

/// Single-shot accepts in flight, armed only when the stream is polled.
struct Pipeline {
    /// Accepts in flight, oldest first; each takes at most one connection.
    ops: VecDeque<AcceptOne>,
    /// Results of accepts that completed, taken out of their ops and not returned yet.
    ready: VecDeque<io::Result<SharedFd>>,
    /// How many accepts to keep in flight: doubles with each connection, up to
    /// `ACCEPT_QUEUE`; 1 after an error.
    depth: usize,
}

impl Pipeline {
    fn poll(&mut self, listener: &SharedFd, cx: &mut Context<'_>) -> Poll<io::Result<SharedFd>> {
        if let Some(res) = self.ready.pop_front() {
            return Poll::Ready(self.returning(res));
        }
        while self.ops.len() < self.depth {
            self.ops.push_back(AcceptOne::new(listener));
        }
        match self.take_completed(cx) {
            Some(res) => {
                if res.is_err() {
                    // The accepts that failed meanwhile tell the same news (say EMFILE): drop
                    // their errors, keep their connections.
                    while let Some(other) = self.take_completed(cx) {
                        if other.is_ok() {
                            self.ready.push_back(other);
                        }
                    }
                }
                Poll::Ready(self.returning(res))
            }
            None => Poll::Pending,
        }
    }

    /// Polls the accepts in flight (submitting new ones) and takes the oldest completed one.
    fn take_completed(&mut self, cx: &mut Context<'_>) -> Option<io::Result<SharedFd>> {
        for i in 0..self.ops.len() {
            if let Poll::Ready(res) = self.ops[i].poll(cx) {
                // Done: dropping it does nothing more.
                self.ops.remove(i);
                return Some(res);
            }
        }
        None
    }

    fn returning(&mut self, res: io::Result<SharedFd>) -> io::Result<SharedFd> {
        self.depth = if res.is_ok() {
            (self.depth * 2).min(op::ACCEPT_QUEUE)
        } else {
            1
        };
        res
    }
}

/// One multishot accept, resubmitted whenever it ends, with its single-shot fallback.
struct Multishot {
    multi: Option<MultiOp<AcceptMulti>>,
    single: Option<AcceptOne>,
    multishot: bool,
    multishot_worked: bool,
    /// The last completion was a multishot accept's `ECANCELED` end: another at once means the
    /// cancel came from elsewhere (the runtime shutting down), not from backpressure.
    just_stopped: bool,
}

impl Multishot {
    fn poll(&mut self, listener: &SharedFd, cx: &mut Context<'_>) -> Poll<io::Result<SharedFd>> {
        loop {
            if !self.multishot {
                let op = self.single.get_or_insert_with(|| AcceptOne::new(listener));
                let res = std::task::ready!(op.poll(cx));
                self.single = None;
                return Poll::Ready(res);
            }
            let op = self.multi.get_or_insert_with(|| op::accept_multi(listener));
            let c = match op.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                // Ended without a completion for us: submit a new one.
                Poll::Ready(None) => {
                    self.multi = None;
                    continue;
                }
                Poll::Ready(Some(c)) => c,
            };
            if op.is_done() {
                self.multi = None;
            }
            if c.result >= 0 {
                self.multishot_worked = true;
                self.just_stopped = false;
                return Poll::Ready(Ok(SharedFd::new(c.result)));
            }
            if c.result == -libc::ECANCELED && !c.has_more() && !self.just_stopped {
                // Stopped because the queue was full: every connection it took came before
                // this; start accepting again.
                self.just_stopped = true;
                continue;
            }
            if c.result == -libc::EINVAL && !self.multishot_worked {
                // A kernel without multishot accept; a listener that is not listening fails the
                // single-shot accept the same way, and that error is then returned.
                self.multishot = false;
                continue;
            }
            self.just_stopped = false;
            return Poll::Ready(Err(io::Error::from_raw_os_error(-c.result)));
        }
    }
}
