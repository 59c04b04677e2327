//! TCP: [`TcpListener`] and [`TcpStream`] (the generic [`Listener`] and [`Stream`] for
//! [`Inet`]), a stream's owned halves, and what only TCP has: binding and connecting by IP
//! address or by name ([`TcpStream::connect_host`]), [`TcpListener::bind_reuseport`],
//! [`TcpListener::from_socket`], `TCP_NODELAY`.

use crate::net::family::Inet;
use crate::net::socket::{Reuse, Socket, LISTEN_BACKLOG};
use crate::net::{Listener, Stream};
use socket2::{Domain, SockAddr, Type};
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;

/// A TCP socket listening for connections: [`Listener<Inet>`](Listener).
pub type TcpListener = Listener<Inet>;

/// A TCP connection: [`Stream<Inet>`](Stream). Reads are cancel-safe: see [`Stream`].
pub type TcpStream = Stream<Inet>;

/// The read half of a [`TcpStream`], made by [`TcpStream::into_split`].
pub type OwnedReadHalf = crate::net::OwnedReadHalf<Inet>;

/// The write half of a [`TcpStream`], made by [`TcpStream::into_split`].
pub type OwnedWriteHalf = crate::net::OwnedWriteHalf<Inet>;

/// The connections a [`TcpListener`] accepts. Made by [`TcpListener::incoming`].
pub type Incoming<'a> = crate::net::Incoming<'a, Inet>;

impl Listener<Inet> {
    /// Binds to the first of `addr`'s addresses that works and listens (backlog 1024, capped by
    /// `net.core.somaxconn`), with `SO_REUSEADDR` as std and tokio set it. A host name is
    /// resolved with std's blocking resolver; use an IP address inside a running server.
    ///
    /// For one listener per thread on the same port, use [`TcpListener::bind_reuseport`]; for
    /// `IPV6_V6ONLY` or another backlog, configure a `socket2::Socket` and use
    /// [`TcpListener::from_socket`].
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] if another socket listens there (one bound with
    /// `bind_reuseport` included); the resolver's or the last address's error otherwise.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        Socket::first_of(addr, |a| Socket::listen(a, Reuse::Address)).map(Listener::from_listening)
    }

    /// As [`bind`](TcpListener::bind), with `SO_REUSEPORT` set before binding (and
    /// `SO_REUSEADDR`, as `bind` sets it): every listener bound this way to the same address
    /// (by the same user) listens at once, and the kernel spreads incoming connections across
    /// them. This is how a server runs one runtime per thread, each thread with its own listener
    /// and ring, with no accept shared between threads.
    ///
    /// ```
    /// use uring::net::TcpListener;
    ///
    /// let first = TcpListener::bind_reuseport("127.0.0.1:0").unwrap();
    /// let addr = first.local_addr().unwrap();
    /// let workers: Vec<_> = (0..2)
    ///     .map(|_| {
    ///         std::thread::spawn(move || {
    ///             // Each thread: its own runtime and its own listener on the shared port.
    ///             let listener = TcpListener::bind_reuseport(addr).unwrap();
    ///             uring::run(async move { listener.local_addr().unwrap() })
    ///         })
    ///     })
    ///     .collect();
    /// for w in workers {
    ///     assert_eq!(w.join().unwrap(), addr);
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] if a socket without `SO_REUSEPORT` (or another user's)
    /// listens there; the resolver's or the last address's error otherwise.
    pub fn bind_reuseport(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        Socket::first_of(addr, |a| Socket::listen(a, Reuse::AddressAndPort))
            .map(Listener::from_listening)
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
        Ok(Listener::from_listening(Socket::from_owned(
            OwnedFd::from(socket),
        )?))
    }
}

impl Stream<Inet> {
    /// Connects to `addr` (`IORING_OP_CONNECT`). It takes a resolved address: name resolution
    /// would block the loop.
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
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::ConnectionRefused`] when nothing listens there; `ETIMEDOUT`,
    /// `ENETUNREACH` and the like otherwise.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM)?;
        socket.connect(SockAddr::from(addr)).await?;
        Ok(Stream::from_socket(socket))
    }

    /// Resolves `host_and_port` with [`lookup_host`](crate::net::lookup_host) (on the blocking
    /// pool, without blocking the loop) and connects to each address in turn until one
    /// accepts: the counterpart of tokio's `TcpStream::connect("host:port")` and asyncio's
    /// `open_connection(host, port)`. The returned future does not borrow `host_and_port`.
    ///
    /// ```
    /// use uring::net::{TcpListener, TcpStream};
    ///
    /// uring::run(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ///     let port = listener.local_addr().unwrap().port();
    ///     let accept = uring::spawn(async move { listener.accept().await.unwrap().0 });
    ///     let s = TcpStream::connect_host(&format!("localhost:{port}")).await.unwrap();
    ///     assert_eq!(s.peer_addr().unwrap().port(), port);
    ///     accept.await.unwrap();
    /// });
    /// ```
    ///
    /// # Errors
    ///
    /// [`lookup_host`](crate::net::lookup_host)'s errors; the last address's error (for
    /// instance [`io::ErrorKind::ConnectionRefused`]) when none accepts;
    /// [`io::ErrorKind::InvalidInput`] when the name resolves to no address.
    pub fn connect_host(
        host_and_port: &str,
    ) -> impl Future<Output = io::Result<TcpStream>> + 'static {
        let resolve = crate::net::lookup_host(host_and_port);
        let host = host_and_port.to_owned();
        async move {
            let mut last = None;
            for addr in resolve.await? {
                match TcpStream::connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{host}: the name resolved to no address"),
                )
            }))
        }
    }

    /// Sets `TCP_NODELAY`: small writes go out at once instead of waiting to be coalesced.
    ///
    /// # Errors
    ///
    /// If `setsockopt` fails.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.socket().sock_ref().set_tcp_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    ///
    /// If `getsockopt` fails.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.socket().sock_ref().tcp_nodelay()
    }
}
