//! Networking over io_uring: TCP, UDP and Unix sockets.
//!
//! Every operation is a ring op (`IORING_OP_ACCEPT`, `CONNECT`, `SEND`, `RECV`, `SENDMSG`,
//! `RECVMSG`, `SHUTDOWN`) with owned buffers returned as a [`BufResult`](crate::BufResult).
//! Sockets stay in blocking mode: the kernel parks an op on the socket until it can complete, so
//! there is no readiness polling and no `EAGAIN` loop. Dropping a socket closes it through the
//! ring once no in-flight op holds it, so its fd number is never reused under an op.
//!
//! A dropped read or accept future cancels its op (`IORING_OP_ASYNC_CANCEL`). The cancel either
//! takes effect before the kernel took any bytes (or connection), or arrives too late and the
//! op completes: bytes such a completed-but-unclaimed read took are lost, and a connection such
//! an accept took is closed. Reads abandoned while no data is in flight therefore lose nothing.
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
mod socket;
pub mod tcp;
mod udp;
pub mod unix;

pub use backoff::{AcceptBackoff, AcceptErrorKind};
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixListener, UnixStream};
