//! [`Listener`]: a listening stream socket of any family, and its [`Incoming`] connections.

use crate::net::family::Family;
use crate::net::socket::{AcceptMode, Acceptor, Socket};
use crate::net::stream::Stream;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::task::{Context, Poll};

/// A stream socket listening for connections: [`TcpListener`](crate::net::TcpListener)
/// (`Listener<Inet>`) or [`UnixListener`](crate::net::UnixListener) (`Listener<Unix>`).
///
/// ```
/// use uring::net::{TcpListener, TcpStream};
///
/// uring::run(async {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     let client = uring::spawn(async move {
///         let stream = TcpStream::connect(addr).await.unwrap();
///         stream.write_all(b"hello".to_vec()).await.0.unwrap();
///     });
///     let (stream, _peer) = listener.accept().await.unwrap();
///     let (res, buf) = stream.read_exact(Vec::with_capacity(5)).await;
///     res.unwrap();
///     assert_eq!(buf, b"hello");
///     client.await.unwrap();
/// });
/// ```
pub struct Listener<F: Family> {
    socket: Socket,
    _family: PhantomData<fn() -> F>,
}

impl<F: Family> Listener<F> {
    pub(crate) fn from_listening(socket: Socket) -> Listener<F> {
        Listener {
            socket,
            _family: PhantomData,
        }
    }

    /// Takes a listening std listener ([`std::net::TcpListener`],
    /// [`std::os::unix::net::UnixListener`]), put back into blocking mode if it was not.
    ///
    /// # Errors
    ///
    /// If the mode cannot be changed.
    pub fn from_std(listener: F::StdListener) -> io::Result<Listener<F>> {
        Ok(Listener::from_listening(Socket::from_owned(
            listener.into(),
        )?))
    }

    /// Gives the listener back as a blocking std listener (a duplicate fd if a dropped accept's
    /// cancel is still in flight).
    ///
    /// # Errors
    ///
    /// If the fd had to be duplicated and that failed (`EMFILE`).
    pub fn into_std(self) -> io::Result<F::StdListener> {
        Ok(F::StdListener::from(self.socket.into_owned_fd()?))
    }

    /// The address the listener is bound to (with the port the kernel chose for port 0).
    ///
    /// # Errors
    ///
    /// If `getsockname` fails.
    pub fn local_addr(&self) -> io::Result<F::Addr> {
        F::decode(&self.socket.local_addr()?)
    }

    /// Accepts one connection (`IORING_OP_ACCEPT`): the stream and the peer's address (an
    /// unnamed one for most Unix-domain clients).
    ///
    /// # Errors
    ///
    /// Those of accept4(2): `EMFILE`/`ENFILE` when out of fds (the connection waits in the
    /// backlog), `ECONNABORTED`, and so on. Dropping the future cancels the accept; a connection
    /// accepted meanwhile is closed, not leaked.
    pub async fn accept(&self) -> io::Result<(Stream<F>, F::Addr)> {
        let (socket, addr) = self.socket.accept().await?;
        Ok((Stream::from_socket(socket), F::decode(&addr)?))
    }

    /// A stream of accepted connections. Peer addresses are not fetched: ask each stream's
    /// [`peer_addr`](Stream::peer_addr).
    ///
    /// Backpressure: the kernel takes at most 64 connections nobody asked for yet. The stream
    /// keeps up to 64 single-shot accepts in flight (as many as recent connections showed are
    /// needed) and arms them only when it is polled, so a server that stops calling `next()`
    /// holds at most 64 accepted fds; the listen backlog holds further clients, and none is
    /// lost.
    ///
    /// ```
    /// use uring::net::{TcpListener, TcpStream};
    ///
    /// uring::run(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ///     let addr = listener.local_addr().unwrap();
    ///     let clients = uring::spawn(async move {
    ///         let a = TcpStream::connect(addr).await.unwrap();
    ///         let b = TcpStream::connect(addr).await.unwrap();
    ///         (a, b)
    ///     });
    ///     let mut incoming = listener.incoming();
    ///     for _ in 0..2 {
    ///         let stream = incoming.next().await.unwrap().unwrap();
    ///         assert!(stream.peer_addr().is_ok());
    ///     }
    ///     clients.await.unwrap();
    /// });
    /// ```
    pub fn incoming(&self) -> Incoming<'_, F> {
        self.incoming_with(AcceptMode::Pipelined)
    }

    /// A stream of accepted connections driven by one multishot accept (Linux 5.19+; a loop of
    /// single-shot accepts on older kernels): one SQE serves a whole burst of connections.
    ///
    /// Weaker backpressure than [`incoming`](Listener::incoming): the accept is stopped once 64
    /// connections wait unclaimed, but the kernel takes a burst whole (every connection waiting
    /// in the backlog when it wakes) before the stop lands, so a server that stops asking can
    /// hold up to a listen backlog's worth of accepted fds (1024 by default). None is lost.
    pub fn incoming_multishot(&self) -> Incoming<'_, F> {
        self.incoming_with(AcceptMode::Multishot)
    }

    fn incoming_with(&self, mode: AcceptMode) -> Incoming<'_, F> {
        Incoming {
            acceptor: Acceptor::new(&self.socket, mode),
            _listener: PhantomData,
        }
    }
}

impl<F: Family> AsRawFd for Listener<F> {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl<F: Family> AsFd for Listener<F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl<F: Family> fmt::Debug for Listener<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.socket.debug(f, "Listener", F::NAME)
    }
}

/// The connections a [`Listener`] accepts, one after another. Made by
/// [`Listener::incoming`] or [`Listener::incoming_multishot`].
///
/// Dropping it cancels the accept in flight; connections the kernel accepted but nobody took
/// are closed.
pub struct Incoming<'a, F: Family> {
    acceptor: Acceptor,
    _listener: PhantomData<&'a Listener<F>>,
}

impl<F: Family> Incoming<'_, F> {
    /// Polls for the next connection, in the manner of `futures::Stream::poll_next`. Never
    /// `Ready(None)`: the stream lasts as long as the listener.
    ///
    /// An error (such as `EMFILE`) ends nothing: polling again accepts again. An accept loop
    /// should pause after resource errors rather than retry at once; see
    /// [`AcceptBackoff`](crate::net::AcceptBackoff).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Stream<F>>>> {
        self.acceptor
            .poll_accept(cx)
            .map(|r| Some(r.map(Stream::from_socket)))
    }

    /// The next accepted connection; see [`Incoming::poll_next`].
    pub async fn next(&mut self) -> Option<io::Result<Stream<F>>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl<F: Family> fmt::Debug for Incoming<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("family", &F::NAME)
            .finish_non_exhaustive()
    }
}

/// The accepted connections as a `futures_core::Stream` (feature `futures-io`), for
/// combinators such as `StreamExt::for_each_concurrent`. Never ends, as [`Incoming::poll_next`].
#[cfg(feature = "futures-io")]
impl<F: Family> futures_core::Stream for Incoming<'_, F> {
    type Item = io::Result<Stream<F>>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Stream<F>>>> {
        Incoming::poll_next(self.get_mut(), cx)
    }
}

#[cfg(test)]
mod tests {
    use crate::net::{TcpListener, TcpStream};
    use socket2::{Domain, SockAddr, Type};
    use std::net::SocketAddr;
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    use super::*;

    /// A bound socket that is not listening: the kernel answers accept with EINVAL, as a
    /// kernel without multishot accept answers the multishot flag.
    fn not_listening() -> TcpListener {
        let s = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SockAddr::from(
            "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        ))
        .unwrap();
        Listener::from_listening(Socket::from_owned(OwnedFd::from(s)).unwrap())
    }

    #[test]
    fn incoming_accepts_and_arms_a_bounded_number_of_accepts() {
        crate::run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let clients = crate::spawn(async move {
                let mut v = Vec::new();
                for _ in 0..100 {
                    v.push(TcpStream::connect(addr).await.unwrap());
                }
                v
            });
            let mut incoming = listener.incoming();
            assert!(!incoming.acceptor.is_multishot());
            let mut peers = Vec::new();
            for _ in 0..100 {
                let s = incoming.next().await.unwrap().unwrap();
                peers.push(s.peer_addr().unwrap());
                assert!(incoming.acceptor.taken_or_armed() <= crate::op::net::ACCEPT_QUEUE);
            }
            let clients = clients.await.unwrap();
            let mut locals: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
            locals.sort();
            peers.sort();
            assert_eq!(locals, peers);
        });
    }

    #[test]
    fn incoming_reports_each_error_and_tries_again() {
        crate::run(async {
            let listener = not_listening();
            let mut incoming = listener.incoming();
            for _ in 0..3 {
                let e = incoming.next().await.unwrap().unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
                assert_eq!(
                    incoming.acceptor.taken_or_armed(),
                    0,
                    "one attempt at a time"
                );
            }
        });
    }

    #[test]
    fn multishot_incoming_falls_back_to_single_shot_on_einval() {
        crate::run(async {
            let listener = not_listening();
            let mut incoming = listener.incoming_multishot();
            let e = incoming.next().await.unwrap().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
            assert!(
                !incoming.acceptor.is_multishot(),
                "EINVAL before any success switches to single-shot accepts"
            );
            let e = incoming.next().await.unwrap().unwrap_err();
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EINVAL),
                "and reports the error"
            );
        });
    }

    #[test]
    fn multishot_incoming_stays_multishot() {
        crate::run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut incoming = listener.incoming_multishot();
            let clients = crate::spawn(async move {
                let mut v = Vec::new();
                for _ in 0..4 {
                    v.push(TcpStream::connect(addr).await.unwrap());
                }
                v
            });
            for _ in 0..4 {
                incoming.next().await.unwrap().unwrap();
            }
            assert!(
                incoming.acceptor.is_multishot(),
                "this kernel has multishot accept; it must not fall back"
            );
            drop(clients.await.unwrap());
        });
    }

    #[test]
    fn a_dropped_incoming_closes_what_it_took_and_leaves_the_backlog() {
        crate::run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut incoming = listener.incoming();
            let c = crate::spawn(async move { TcpStream::connect(addr).await.unwrap() });
            let first = incoming.next().await.unwrap().unwrap();
            drop(c.await.unwrap());
            drop(first);
            // Two accepts are armed now (one connection doubled the depth); drop them.
            let _ = crate::time::timeout(Duration::from_millis(5), incoming.next()).await;
            drop(incoming);
            let late = TcpStream::connect(addr).await.unwrap();
            let (s, _) = listener.accept().await.unwrap();
            assert_eq!(s.peer_addr().unwrap(), late.local_addr().unwrap());
        });
    }
}
