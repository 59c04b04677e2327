//! Networking over io_uring: TCP, UDP and Unix sockets.
//!
//! Every operation is a ring op (`IORING_OP_ACCEPT`, `CONNECT`, `SEND`, `RECV`, `SENDMSG`,
//! `RECVMSG`, `SHUTDOWN`) with owned buffers returned as a [`BufResult`](crate::BufResult).
//! Sockets stay in blocking mode: the kernel parks an op on the socket until it can complete, so
//! there is no readiness polling and no `EAGAIN` loop. Dropping a socket closes it at once
//! (a plain close(2)) when no in-flight op holds it, else when the last such op completes, so its
//! fd number is never reused under an op.
//!
//! # Cancel-safe reads
//!
//! Dropping a read future never loses or reorders a byte, on a TCP or Unix stream and on either
//! of its halves. A dropped read cancels its op (`IORING_OP_ASYNC_CANCEL`); if the cancel lost the
//! race and the read took bytes, they are kept for the socket (in a stash its handles share) and
//! the next read returns them first, without a syscall, followed by the end of stream or the
//! error that read got, if any. While a dropped read is still in flight, the next read waits for
//! it before it submits, so the kernel cannot hand it later bytes first. A read future that is
//! merely not polled makes nobody wait. On datagram sockets a datagram a dropped `recv` or
//! `recv_from` took is returned by the next receive. So reads can sit in
//! [`timeout`](crate::time::timeout) or a `select` and be dropped at any point. (Accepts: a
//! connection a dropped accept took is closed, not leaked.)
//!
//! # One surface for every family
//!
//! The socket types are written once, generic over an address [`Family`] ([`Inet`] or [`Unix`]),
//! which fixes the address type and the std types to convert from and to:
//!
//! | generic | [`Inet`] | [`Unix`] |
//! |---|---|---|
//! | [`Stream<F>`](Stream) | [`TcpStream`] | [`UnixStream`] |
//! | [`Listener<F>`](Listener) | [`TcpListener`] | [`UnixListener`] |
//! | [`Datagram<F>`](Datagram) | [`UdpSocket`] | [`UnixDatagram`] |
//! | [`OwnedReadHalf<F>`](OwnedReadHalf) | [`tcp::OwnedReadHalf`] | [`unix::OwnedReadHalf`] |
//! | [`OwnedWriteHalf<F>`](OwnedWriteHalf) | [`tcp::OwnedWriteHalf`] | [`unix::OwnedWriteHalf`] |
//! | [`Incoming<'a, F>`](Incoming) | [`tcp::Incoming`] | [`unix::Incoming`] |
//!
//! The familiar names are aliases of these. A stream's halves are the stream type with another
//! [`side`] marker (`Stream<F, side::Read>`, `Stream<F, side::Write>`), so each method exists
//! once for every handle that may use it: reads on the stream and its read half, writes on the
//! stream and its write half, addresses on all. What only one family has (binding and connecting
//! by IP address or by path, `TcpListener::from_socket`, `set_nodelay`, `set_broadcast`,
//! `pair()`, `unbound()`) is in [`tcp`], [`udp`] and [`unix`].
//!
//! Spellings: vectored I/O is `readv`/`writev` (as `File::readv_at`); the write side shuts down
//! with `shutdown_write()`, on every stream, write half and
//! [`AsyncWriteOwned`](crate::io::AsyncWriteOwned) (the older `shutdown(Shutdown::Write)` on a
//! stream and `shutdown()` on a write half stay). Every socket type has `from_std` and
//! `into_std`.
//!
//! Names: [`lookup_host`] resolves `"host:port"` on the [blocking pool](crate::blocking), and
//! [`TcpStream::connect_host`] connects by name through it. (`bind` accepts a name too but
//! resolves it with std's blocking resolver on the loop's thread: fine at startup, not inside a
//! running server.) For one listener per thread on one port, [`TcpListener::bind_reuseport`].
//!
//! ```
//! use uring::net::{TcpListener, TcpStream};
//!
//! uring::run(async {
//!     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     uring::spawn(async move {
//!         let mut incoming = listener.incoming();
//!         while let Some(Ok(stream)) = incoming.next().await {
//!             uring::spawn(async move {
//!                 let mut buf = Vec::with_capacity(4096);
//!                 loop {
//!                     buf.clear();
//!                     let (res, b) = stream.read(buf).await;
//!                     if !matches!(res, Ok(n) if n > 0) { break; }
//!                     let (res, b) = stream.write_all(b).await;
//!                     if res.is_err() { break; }
//!                     buf = b;
//!                 }
//!             });
//!         }
//!     });
//!     let s = TcpStream::connect(addr).await.unwrap();
//!     s.write_all(b"hello".to_vec()).await.0.unwrap();
//!     let (res, buf) = s.read_exact(Vec::with_capacity(5)).await;
//!     res.unwrap();
//!     assert_eq!(buf, b"hello");
//! });
//! ```

mod backoff;
pub(crate) mod conn;
mod datagram;
mod family;
mod listener;
mod lookup;
mod multishot;
pub mod side;
mod socket;
mod stash;
mod stream;
pub mod tcp;
pub mod udp;
pub mod unix;

pub use backoff::{AcceptBackoff, AcceptErrorKind};
pub use datagram::Datagram;
pub use family::{Family, Inet, Unix};
pub use listener::{Incoming, Listener};
pub use lookup::lookup_host;
pub use multishot::RecvMultishot;
pub use stream::{OwnedReadHalf, OwnedWriteHalf, Stream};
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixListener, UnixStream};
