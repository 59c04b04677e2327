//! Unix-domain sockets: [`UnixListener`], [`UnixStream`] (same shape as TCP) and its owned
//! halves, and [`UnixDatagram`].

use crate::buf::{IoBuf, IoBufMut};
use crate::io::{AsyncReadOwned, AsyncWriteOwned};
use crate::net::socket::{unix_addr, Acceptor, Socket};
use crate::BufResult;
use socket2::{Domain, SockAddr, Type};
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::task::{Context, Poll};

/// The socket address of a Unix path. A path with a NUL byte inside is `InvalidInput`, as in std:
/// the kernel would stop at the NUL and use a different path. (A leading NUL is an abstract name.)
fn unix_sockaddr(path: &Path) -> io::Result<SockAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if bytes.first() != Some(&0) && bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "paths must not contain interior null bytes",
        ));
    }
    SockAddr::unix(path)
}

/// A Unix-domain stream socket listening for connections.
///
/// ```
/// use uring::net::{UnixListener, UnixStream};
///
/// uring::run(async {
///     let dir = std::env::temp_dir().join(format!("uring-doc-unix-{}", std::process::id()));
///     std::fs::create_dir_all(&dir).unwrap();
///     let path = dir.join("sock");
///     let _ = std::fs::remove_file(&path);
///     let listener = UnixListener::bind(&path).unwrap();
///     let client = uring::spawn({
///         let path = path.clone();
///         async move { UnixStream::connect(&path).await.unwrap() }
///     });
///     let (server, _) = listener.accept().await.unwrap();
///     let client = client.await.unwrap();
///     client.write_all(b"hi".to_vec()).await.0.unwrap();
///     let (res, buf) = server.read_exact(Vec::with_capacity(2)).await;
///     res.unwrap();
///     assert_eq!(buf, b"hi");
///     std::fs::remove_dir_all(&dir).unwrap();
/// });
/// ```
#[derive(Debug)]
pub struct UnixListener {
    socket: Socket,
}

impl UnixListener {
    /// Binds to the filesystem path `path` (or, if it starts with a NUL byte, the abstract
    /// name after it) and listens (backlog 1024). The socket file is not removed on drop.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] if the path exists; `ENOENT`, `EACCES` and the like.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        let addr = unix_sockaddr(path.as_ref())?;
        Ok(UnixListener {
            socket: Socket::listen(&addr, false)?,
        })
    }

    /// Takes a listening `std::os::unix::net::UnixListener`.
    ///
    /// # Errors
    ///
    /// If the socket cannot be put back into blocking mode.
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        Ok(UnixListener {
            socket: Socket::from_owned(OwnedFd::from(listener))?,
        })
    }

    /// Accepts one connection: the stream and the peer's address (usually unnamed).
    ///
    /// # Errors
    ///
    /// Those of accept4(2), such as `EMFILE`.
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (socket, addr) = self.socket.accept().await?;
        Ok((UnixStream { socket }, unix_addr(&addr)?))
    }

    /// A stream of accepted connections driven by one multishot accept; see
    /// [`TcpListener::incoming`](crate::net::TcpListener::incoming).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            acceptor: Acceptor::new(&self.socket, true),
            _listener: PhantomData,
        }
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// If `getsockname` fails.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        unix_addr(&self.socket.local_addr()?)
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for UnixListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// The connections a [`UnixListener`] accepts. Made by [`UnixListener::incoming`].
pub struct Incoming<'a> {
    acceptor: Acceptor,
    _listener: PhantomData<&'a UnixListener>,
}

impl Incoming<'_> {
    /// Polls for the next connection; never `Ready(None)`. After an error, polling again
    /// accepts again.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<UnixStream>>> {
        self.acceptor
            .poll_accept(cx)
            .map(|r| Some(r.map(|socket| UnixStream { socket })))
    }

    /// The next accepted connection.
    pub async fn next(&mut self) -> Option<io::Result<UnixStream>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl std::fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

/// A Unix-domain stream connection, with the same methods as
/// [`TcpStream`](crate::net::TcpStream).
#[derive(Debug)]
pub struct UnixStream {
    socket: Socket,
}

impl UnixStream {
    /// Connects to the socket at `path` (`IORING_OP_CONNECT`).
    ///
    /// # Errors
    ///
    /// `ENOENT` if there is no such socket, [`io::ErrorKind::ConnectionRefused`] if nothing
    /// listens on it.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let addr = unix_sockaddr(path.as_ref())?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM)?;
        socket.connect(addr).await?;
        Ok(UnixStream { socket })
    }

    /// A connected pair of streams.
    ///
    /// # Errors
    ///
    /// If socketpair(2) fails (`EMFILE`).
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = socket2::Socket::pair(Domain::UNIX, Type::STREAM, None)?;
        Ok((
            UnixStream {
                socket: Socket::from_owned(OwnedFd::from(a))?,
            },
            UnixStream {
                socket: Socket::from_owned(OwnedFd::from(b))?,
            },
        ))
    }

    /// Takes a connected `std::os::unix::net::UnixStream`.
    ///
    /// # Errors
    ///
    /// If the socket cannot be put back into blocking mode.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        Ok(UnixStream {
            socket: Socket::from_owned(OwnedFd::from(stream))?,
        })
    }

    /// Gives the connection back as a blocking std stream (a duplicate fd if a dropped
    /// operation's cancel is still in flight).
    ///
    /// # Errors
    ///
    /// If the fd had to be duplicated and that failed.
    pub fn into_std(self) -> io::Result<std::os::unix::net::UnixStream> {
        Ok(std::os::unix::net::UnixStream::from(
            self.socket.into_owned_fd()?,
        ))
    }

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

    /// Shuts down the read side, the write side or both.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the connection is gone.
    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.socket.shutdown(how).await
    }

    /// The peer's address (unnamed for a client socket).
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the connection is gone.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        unix_addr(&self.socket.peer_addr()?)
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// If `getsockname` fails.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        unix_addr(&self.socket.local_addr()?)
    }

    /// Splits the stream into read and write halves usable from two tasks; see
    /// [`TcpStream::into_split`](crate::net::TcpStream::into_split).
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

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for UnixStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsyncReadOwned for UnixStream {
    fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        self.socket.read(buf)
    }
}

impl AsyncWriteOwned for UnixStream {
    fn write<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        self.socket.write(buf)
    }

    fn shutdown_write(&self) -> impl Future<Output = io::Result<()>> {
        self.socket.shutdown(Shutdown::Write)
    }
}

/// The read half of a [`UnixStream`], made by [`UnixStream::into_split`].
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

    /// Puts the halves back together.
    ///
    /// # Errors
    ///
    /// If the halves come from different streams; they are given back.
    pub fn reunite(
        self,
        write: OwnedWriteHalf,
    ) -> Result<UnixStream, (OwnedReadHalf, OwnedWriteHalf)> {
        if self.socket.same_as(&write.socket) {
            drop(write);
            Ok(UnixStream {
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

/// The write half of a [`UnixStream`], made by [`UnixStream::into_split`].
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

    /// Shuts down the write side: the peer reads end of stream.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the connection is gone.
    pub async fn shutdown(&self) -> io::Result<()> {
        self.socket.shutdown(Shutdown::Write).await
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

/// A Unix-domain datagram socket.
///
/// ```
/// use uring::net::UnixDatagram;
///
/// uring::run(async {
///     let (a, b) = UnixDatagram::pair().unwrap();
///     a.send(b"one".to_vec()).await.0.unwrap();
///     let (res, buf) = b.recv(Vec::with_capacity(16)).await;
///     assert_eq!(res.unwrap(), 3);
///     assert_eq!(buf, b"one");
/// });
/// ```
#[derive(Debug)]
pub struct UnixDatagram {
    socket: Socket,
}

impl UnixDatagram {
    /// A datagram socket bound to `path`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] if the path exists, and the like.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            socket: Socket::bind(&unix_sockaddr(path.as_ref())?, Type::DGRAM)?,
        })
    }

    /// A datagram socket bound to no address: it can send, and receive replies only if
    /// connected.
    ///
    /// # Errors
    ///
    /// If socket(2) fails.
    pub fn unbound() -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            socket: Socket::new(Domain::UNIX, Type::DGRAM)?,
        })
    }

    /// A connected pair of datagram sockets.
    ///
    /// # Errors
    ///
    /// If socketpair(2) fails.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = socket2::Socket::pair(Domain::UNIX, Type::DGRAM, None)?;
        Ok((
            UnixDatagram {
                socket: Socket::from_owned(OwnedFd::from(a))?,
            },
            UnixDatagram {
                socket: Socket::from_owned(OwnedFd::from(b))?,
            },
        ))
    }

    /// Takes a `std::os::unix::net::UnixDatagram`.
    ///
    /// # Errors
    ///
    /// If the socket cannot be put back into blocking mode.
    pub fn from_std(socket: std::os::unix::net::UnixDatagram) -> io::Result<UnixDatagram> {
        Ok(UnixDatagram {
            socket: Socket::from_owned(OwnedFd::from(socket))?,
        })
    }

    /// Sets the default destination for [`UnixDatagram::send`] (`IORING_OP_CONNECT`).
    ///
    /// # Errors
    ///
    /// `ENOENT` or `ECONNREFUSED` if nothing is bound at `path`.
    pub async fn connect(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.socket.connect(unix_sockaddr(path.as_ref())?).await
    }

    /// Sends the buffer's initialized bytes as one datagram to the socket at `path`.
    pub async fn send_to<B: IoBuf>(&self, buf: B, path: impl AsRef<Path>) -> BufResult<usize, B> {
        match unix_sockaddr(path.as_ref()) {
            Ok(addr) => self.socket.send_to(buf, &addr).await,
            Err(e) => (Err(e), buf),
        }
    }

    /// Receives one datagram into `buf` and the sender's address.
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> BufResult<(usize, SocketAddr), B> {
        let (res, buf) = self.socket.recv_from(buf).await;
        (res.and_then(|(n, a)| Ok((n, unix_addr(&a)?))), buf)
    }

    /// Sends one datagram to the connected peer.
    pub async fn send<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        self.socket.write(buf).await
    }

    /// Receives one datagram.
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        self.socket.read(buf).await
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// If `getsockname` fails.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        unix_addr(&self.socket.local_addr()?)
    }

    /// The connected peer's address.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the socket is not connected.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        unix_addr(&self.socket.peer_addr()?)
    }
}

impl AsRawFd for UnixDatagram {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for UnixDatagram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
