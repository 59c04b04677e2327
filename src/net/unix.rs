//! Unix-domain sockets: [`UnixListener`], [`UnixStream`] and [`UnixDatagram`] (the generic
//! [`Listener`], [`Stream`] and [`Datagram`] for [`Unix`]), a stream's owned halves, and what only
//! Unix sockets have: binding and connecting by path (or abstract name), `pair()`, unbound
//! datagram sockets.

use crate::buf::IoBuf;
use crate::net::family::Unix;
use crate::net::socket::{Reuse, Socket};
use crate::net::{Datagram, Listener, Stream};
use crate::BufResult;
use socket2::{Domain, SockAddr, Type};
use std::io;
use std::path::Path;

/// A Unix-domain stream socket listening for connections: [`Listener<Unix>`](Listener).
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
pub type UnixListener = Listener<Unix>;

/// A Unix-domain stream connection: [`Stream<Unix>`](Stream), with the same methods as
/// [`TcpStream`](crate::net::TcpStream). Reads are cancel-safe: see [`Stream`].
pub type UnixStream = Stream<Unix>;

/// The read half of a [`UnixStream`], made by [`UnixStream::into_split`].
pub type OwnedReadHalf = crate::net::OwnedReadHalf<Unix>;

/// The write half of a [`UnixStream`], made by [`UnixStream::into_split`].
pub type OwnedWriteHalf = crate::net::OwnedWriteHalf<Unix>;

/// The connections a [`UnixListener`] accepts. Made by [`UnixListener::incoming`].
pub type Incoming<'a> = crate::net::Incoming<'a, Unix>;

/// A Unix-domain datagram socket: [`Datagram<Unix>`](Datagram). Receives are cancel-safe: see
/// [`Datagram`].
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
pub type UnixDatagram = Datagram<Unix>;

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

impl Listener<Unix> {
    /// Binds to the filesystem path `path` (or, if it starts with a NUL byte, the abstract
    /// name after it) and listens (backlog 1024). The socket file is not removed on drop.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] if the path exists; `ENOENT`, `EACCES` and the like.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        let addr = unix_sockaddr(path.as_ref())?;
        Ok(Listener::from_listening(Socket::listen(
            &addr,
            Reuse::Nothing,
        )?))
    }
}

impl Stream<Unix> {
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
        Ok(Stream::from_socket(socket))
    }

    /// A connected pair of streams.
    ///
    /// # Errors
    ///
    /// If socketpair(2) fails (`EMFILE`).
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = Socket::pair(Type::STREAM)?;
        Ok((Stream::from_socket(a), Stream::from_socket(b)))
    }
}

impl Datagram<Unix> {
    /// A datagram socket bound to `path`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] if the path exists, and the like.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixDatagram> {
        let addr = unix_sockaddr(path.as_ref())?;
        Ok(Datagram::from_socket(Socket::bind(&addr, Type::DGRAM)?))
    }

    /// A datagram socket bound to no address: it can send, and receive replies only if
    /// connected.
    ///
    /// # Errors
    ///
    /// If socket(2) fails.
    pub fn unbound() -> io::Result<UnixDatagram> {
        Ok(Datagram::from_socket(Socket::new(
            Domain::UNIX,
            Type::DGRAM,
        )?))
    }

    /// A connected pair of datagram sockets.
    ///
    /// # Errors
    ///
    /// If socketpair(2) fails.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = Socket::pair(Type::DGRAM)?;
        Ok((Datagram::from_socket(a), Datagram::from_socket(b)))
    }

    /// Sets the default destination for [`UnixDatagram::send`] (`IORING_OP_CONNECT`).
    ///
    /// # Errors
    ///
    /// `ENOENT` or `ECONNREFUSED` if nothing is bound at `path`.
    pub async fn connect(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let addr = unix_sockaddr(path.as_ref())?;
        self.conn().socket().connect(addr).await
    }

    /// Sends the buffer's initialized bytes as one datagram to the socket at `path`.
    pub async fn send_to<B: IoBuf>(&self, buf: B, path: impl AsRef<Path>) -> BufResult<usize, B> {
        match unix_sockaddr(path.as_ref()) {
            Ok(addr) => self.conn().send_to(buf, &addr).await,
            Err(e) => (Err(e), buf),
        }
    }
}
