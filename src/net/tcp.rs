//! TCP: [`TcpListener`], [`TcpStream`] and a stream's owned halves.

use crate::buf::{IoBuf, IoBufMut};
use crate::io::{AsyncReadOwned, AsyncWriteOwned};
use crate::net::socket::{inet_addr, Acceptor, Socket, LISTEN_BACKLOG};
use crate::BufResult;
use socket2::{Domain, SockAddr, Type};
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

/// A TCP socket listening for connections.
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
#[derive(Debug)]
pub struct TcpListener {
    socket: Socket,
}

impl TcpListener {
    /// Binds to the first of `addr`'s addresses that works and listens (backlog 1024, capped by
    /// `net.core.somaxconn`), with `SO_REUSEADDR` as std and tokio set it. A host name is
    /// resolved with std's blocking resolver; use an IP address inside a running server.
    ///
    /// For `SO_REUSEPORT`, `IPV6_V6ONLY` or another backlog, configure a `socket2::Socket` and
    /// use [`TcpListener::from_socket`].
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] if another socket listens there; the resolver's or the last
    /// address's error otherwise.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match Socket::listen(&SockAddr::from(a), true) {
                Ok(socket) => return Ok(TcpListener { socket }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")
        }))
    }

    /// Takes a socket configured with socket2 (for instance with `SO_REUSEPORT`,
    /// `IPV6_V6ONLY` or its own backlog). If it is not listening yet, this calls `listen` with a
    /// backlog of 1024; bind it first, or the kernel picks an ephemeral port.
    ///
    /// ```
    /// use socket2::{Domain, Socket, Type};
    /// use std::net::SocketAddr;
    ///
    /// uring::run(async {
    ///     let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ///     let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    ///     s.set_reuse_port(true).unwrap();
    ///     s.bind(&addr.into()).unwrap();
    ///     s.listen(4096).unwrap();
    ///     let listener = uring::net::TcpListener::from_socket(s).unwrap();
    ///     assert_ne!(listener.local_addr().unwrap().port(), 0);
    /// });
    /// ```
    ///
    /// # Errors
    ///
    /// If the socket is not a TCP socket, or `listen` fails.
    pub fn from_socket(socket: socket2::Socket) -> io::Result<TcpListener> {
        if socket.r#type()? != Type::STREAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TcpListener::from_socket needs a stream socket",
            ));
        }
        match socket.domain()? {
            Domain::IPV4 | Domain::IPV6 => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "TcpListener::from_socket needs an IPv4 or IPv6 socket",
                ))
            }
        }
        if !socket.is_listener()? {
            socket.listen(LISTEN_BACKLOG)?;
        }
        Ok(TcpListener {
            socket: Socket::from_owned(OwnedFd::from(socket))?,
        })
    }

    /// Takes a listening `std::net::TcpListener`.
    ///
    /// # Errors
    ///
    /// If the socket cannot be put back into blocking mode.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        Ok(TcpListener {
            socket: Socket::from_owned(OwnedFd::from(listener))?,
        })
    }

    /// The address the listener is bound to (with the port the kernel chose for port 0).
    ///
    /// # Errors
    ///
    /// If `getsockname` fails.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        inet_addr(&self.socket.local_addr()?)
    }

    /// Accepts one connection (`IORING_OP_ACCEPT`): the stream and the peer's address.
    ///
    /// # Errors
    ///
    /// Those of accept4(2): `EMFILE`/`ENFILE` when out of fds (the connection waits in the
    /// backlog), `ECONNABORTED`, and so on. Dropping the future cancels the accept; a connection
    /// accepted meanwhile is closed, not leaked.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (socket, addr) = self.socket.accept().await?;
        Ok((TcpStream { socket }, inet_addr(&addr)?))
    }

    /// A stream of accepted connections, driven by one multishot accept where the kernel has it
    /// (Linux 5.19+; a loop of single-shot accepts otherwise). Peer addresses are not fetched:
    /// ask each stream's [`TcpStream::peer_addr`].
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
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            acceptor: Acceptor::new(&self.socket, true),
            _listener: PhantomData,
        }
    }

    /// An `incoming()` stream that uses single-shot accepts only, as on kernels without
    /// multishot accept.
    #[cfg(test)]
    fn incoming_single_shot(&self) -> Incoming<'_> {
        Incoming {
            acceptor: Acceptor::new(&self.socket, false),
            _listener: PhantomData,
        }
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// The connections a [`TcpListener`] accepts, one after another. Made by
/// [`TcpListener::incoming`].
///
/// Dropping it cancels the accept in flight; connections the kernel accepted but nobody took
/// are closed.
pub struct Incoming<'a> {
    acceptor: Acceptor,
    _listener: PhantomData<&'a TcpListener>,
}

impl Incoming<'_> {
    /// Polls for the next connection, in the manner of `futures::Stream::poll_next`. Never
    /// `Ready(None)`: the stream lasts as long as the listener.
    ///
    /// An error (such as `EMFILE`) ends nothing: polling again accepts again. An accept loop
    /// should pause after resource errors rather than retry at once; see
    /// [`AcceptBackoff`](crate::net::AcceptBackoff).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<TcpStream>>> {
        self.acceptor
            .poll_accept(cx)
            .map(|r| Some(r.map(|socket| TcpStream { socket })))
    }

    /// The next accepted connection; see [`Incoming::poll_next`].
    pub async fn next(&mut self) -> Option<io::Result<TcpStream>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl std::fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

/// A TCP connection. Every I/O method takes `&self` and an owned buffer, and goes through the
/// ring (`IORING_OP_RECV`, `SEND`, `RECVMSG`, `SENDMSG`, `SHUTDOWN`).
///
/// Dropping a read or write future cancels its operation. A read cancelled before data arrived
/// takes nothing from the socket, so the next read gets every byte in order; but a read whose
/// completion had already arrived when its future was dropped loses the bytes it read. Dropping
/// the stream closes the socket once no operation holds it.
///
/// ```
/// use uring::net::{TcpListener, TcpStream};
///
/// uring::run(async {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     let echo = uring::spawn(async move {
///         let (s, _) = listener.accept().await.unwrap();
///         let (n, buf) = s.read(Vec::with_capacity(64)).await;
///         n.unwrap();
///         s.write_all(buf).await.0.unwrap();
///     });
///     let s = TcpStream::connect(addr).await.unwrap();
///     s.set_nodelay(true).unwrap();
///     s.write_all(b"echo".to_vec()).await.0.unwrap();
///     let (res, buf) = s.read_exact(Vec::with_capacity(4)).await;
///     res.unwrap();
///     assert_eq!(buf, b"echo");
///     echo.await.unwrap();
/// });
/// ```
#[derive(Debug)]
pub struct TcpStream {
    socket: Socket,
}

impl TcpStream {
    /// Connects to `addr` (`IORING_OP_CONNECT`). It takes a resolved address: name resolution
    /// would block the loop.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::ConnectionRefused`] when nothing listens there; `ETIMEDOUT`,
    /// `ENETUNREACH` and the like otherwise.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM)?;
        socket.connect(SockAddr::from(addr)).await?;
        Ok(TcpStream { socket })
    }

    /// Takes a connected `std::net::TcpStream` (put back into blocking mode if it was not).
    ///
    /// # Errors
    ///
    /// If the mode cannot be changed.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        Ok(TcpStream {
            socket: Socket::from_owned(OwnedFd::from(stream))?,
        })
    }

    /// Gives the connection back as a blocking `std::net::TcpStream`. If a dropped operation's
    /// cancel is still in flight, the result is a duplicate of the fd.
    ///
    /// # Errors
    ///
    /// If the fd had to be duplicated and that failed (`EMFILE`).
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        Ok(std::net::TcpStream::from(self.socket.into_owned_fd()?))
    }

    /// Reads into `buf` from its start up to its capacity; returns how many bytes arrived, 0 at
    /// end of stream.
    pub async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        self.socket.read(buf).await
    }

    /// Reads until `buf` is full (its capacity); [`io::ErrorKind::UnexpectedEof`] if the stream
    /// ends first.
    pub async fn read_exact<B: IoBufMut>(&self, buf: B) -> BufResult<(), B> {
        crate::io::read_exact(self, buf).await
    }

    /// Reads into several buffers in order, each filled to its capacity before the next.
    pub async fn readv<B: IoBufMut>(&self, bufs: Vec<B>) -> BufResult<usize, Vec<B>> {
        self.socket.readv(bufs).await
    }

    /// Writes the buffer's initialized bytes; returns how many were taken (maybe fewer).
    pub async fn write<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        self.socket.write(buf).await
    }

    /// Writes all of the buffer's initialized bytes, looping over short writes;
    /// [`io::ErrorKind::WriteZero`] if a write takes nothing.
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        crate::io::write_all(self, buf).await
    }

    /// Writes the buffers' initialized bytes in order; returns how many were taken.
    pub async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> BufResult<usize, Vec<B>> {
        self.socket.writev(bufs).await
    }

    /// Shuts down the read side, the write side (the peer reads end of stream) or both.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the connection is gone.
    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.socket.shutdown(how).await
    }

    /// Sets `TCP_NODELAY`: small writes go out at once instead of waiting to be coalesced.
    ///
    /// # Errors
    ///
    /// If `setsockopt` fails.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.socket.sock_ref().set_tcp_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    ///
    /// If `getsockopt` fails.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.socket.sock_ref().tcp_nodelay()
    }

    /// The remote address.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the connection is gone.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        inet_addr(&self.socket.peer_addr()?)
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// If `getsockname` fails.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        inet_addr(&self.socket.local_addr()?)
    }

    /// Splits the stream into a read half and a write half that can move to two tasks. Both
    /// hold the socket: it is closed when both halves (and their operations) are gone. Dropping
    /// the write half does not shut the write side down; call [`OwnedWriteHalf::shutdown`].
    ///
    /// ```
    /// use uring::net::{TcpListener, TcpStream};
    ///
    /// uring::run(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ///     let addr = listener.local_addr().unwrap();
    ///     let client = uring::spawn(async move { TcpStream::connect(addr).await.unwrap() });
    ///     let (server, _) = listener.accept().await.unwrap();
    ///     let client = client.await.unwrap();
    ///     let (reader, writer) = server.into_split();
    ///     let echo = uring::spawn(async move {
    ///         let (res, buf) = reader.read_exact(Vec::with_capacity(3)).await;
    ///         res.unwrap();
    ///         buf
    ///     });
    ///     client.write_all(b"abc".to_vec()).await.0.unwrap();
    ///     let buf = echo.await.unwrap();
    ///     writer.write_all(buf).await.0.unwrap();
    ///     let (res, buf) = client.read_exact(Vec::with_capacity(3)).await;
    ///     res.unwrap();
    ///     assert_eq!(buf, b"abc");
    /// });
    /// ```
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (
            OwnedReadHalf {
                socket: self.socket.clone(),
            },
            OwnedWriteHalf {
                socket: self.socket,
            },
        )
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsyncReadOwned for TcpStream {
    fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        self.socket.read(buf)
    }
}

impl AsyncWriteOwned for TcpStream {
    fn write<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        self.socket.write(buf)
    }

    fn shutdown_write(&self) -> impl Future<Output = io::Result<()>> {
        self.socket.shutdown(Shutdown::Write)
    }
}

/// The read half of a [`TcpStream`], made by [`TcpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    socket: Socket,
}

impl OwnedReadHalf {
    /// Reads into `buf` from its start up to its capacity; 0 at end of stream.
    pub async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        self.socket.read(buf).await
    }

    /// Reads until `buf` is full; [`io::ErrorKind::UnexpectedEof`] if the stream ends first.
    pub async fn read_exact<B: IoBufMut>(&self, buf: B) -> BufResult<(), B> {
        crate::io::read_exact(self, buf).await
    }

    /// Reads into several buffers in order.
    pub async fn readv<B: IoBufMut>(&self, bufs: Vec<B>) -> BufResult<usize, Vec<B>> {
        self.socket.readv(bufs).await
    }

    /// The remote address.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the connection is gone.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        inet_addr(&self.socket.peer_addr()?)
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// If `getsockname` fails.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        inet_addr(&self.socket.local_addr()?)
    }

    /// Puts the halves back together.
    ///
    /// # Errors
    ///
    /// If the halves come from different streams; they are given back.
    pub fn reunite(
        self,
        write: OwnedWriteHalf,
    ) -> Result<TcpStream, (OwnedReadHalf, OwnedWriteHalf)> {
        if self.socket.same_as(&write.socket) {
            drop(write);
            Ok(TcpStream {
                socket: self.socket,
            })
        } else {
            Err((self, write))
        }
    }
}

impl AsRawFd for OwnedReadHalf {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for OwnedReadHalf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsyncReadOwned for OwnedReadHalf {
    fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        self.socket.read(buf)
    }
}

/// The write half of a [`TcpStream`], made by [`TcpStream::into_split`].
#[derive(Debug)]
pub struct OwnedWriteHalf {
    socket: Socket,
}

impl OwnedWriteHalf {
    /// Writes the buffer's initialized bytes; returns how many were taken.
    pub async fn write<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        self.socket.write(buf).await
    }

    /// Writes all of the buffer's initialized bytes; [`io::ErrorKind::WriteZero`] if a write
    /// takes nothing.
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        crate::io::write_all(self, buf).await
    }

    /// Writes the buffers' initialized bytes in order.
    pub async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> BufResult<usize, Vec<B>> {
        self.socket.writev(bufs).await
    }

    /// Shuts down the write side: the peer reads end of stream. The read half keeps reading.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the connection is gone.
    pub async fn shutdown(&self) -> io::Result<()> {
        self.socket.shutdown(Shutdown::Write).await
    }

    /// The remote address.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the connection is gone.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        inet_addr(&self.socket.peer_addr()?)
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// If `getsockname` fails.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        inet_addr(&self.socket.local_addr()?)
    }
}

impl AsRawFd for OwnedWriteHalf {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for OwnedWriteHalf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsyncWriteOwned for OwnedWriteHalf {
    fn write<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        self.socket.write(buf)
    }

    fn shutdown_write(&self) -> impl Future<Output = io::Result<()>> {
        self.socket.shutdown(Shutdown::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_shot_incoming_accepts() {
        crate::run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let clients = crate::spawn(async move {
                let mut v = Vec::new();
                for _ in 0..3 {
                    v.push(TcpStream::connect(addr).await.unwrap());
                }
                v
            });
            let mut incoming = listener.incoming_single_shot();
            assert!(!incoming.acceptor.is_multishot());
            let mut peers = Vec::new();
            for _ in 0..3 {
                let s = incoming.next().await.unwrap().unwrap();
                peers.push(s.peer_addr().unwrap());
            }
            let clients = clients.await.unwrap();
            let mut locals: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
            locals.sort();
            peers.sort();
            assert_eq!(locals, peers);
        });
    }

    #[test]
    fn incoming_falls_back_to_single_shot_on_einval() {
        crate::run(async {
            // A bound socket that is not listening: the kernel answers accept with EINVAL, as
            // a kernel without multishot accept answers the multishot flag.
            let s = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.bind(&SockAddr::from(
                "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
            ))
            .unwrap();
            let listener = TcpListener {
                socket: Socket::from_owned(OwnedFd::from(s)).unwrap(),
            };
            let mut incoming = listener.incoming();
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
            let mut incoming = listener.incoming();
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
}
