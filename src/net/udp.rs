//! UDP: [`UdpSocket`].

use crate::buf::{IoBuf, IoBufMut};
use crate::net::socket::{inet_addr, Socket};
use crate::BufResult;
use socket2::{SockAddr, Type};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// A UDP socket. Datagrams go through the ring: `send_to`/`recv_from` as `IORING_OP_SENDMSG`/
/// `RECVMSG` (header, address and iovec in one heap block the op owns), `send`/`recv` on a
/// connected socket as `IORING_OP_SEND`/`RECV`.
///
/// ```
/// use uring::net::UdpSocket;
///
/// uring::run(async {
///     let a = UdpSocket::bind("127.0.0.1:0").unwrap();
///     let b = UdpSocket::bind("127.0.0.1:0").unwrap();
///     let b_addr = b.local_addr().unwrap();
///     let (res, _) = a.send_to(b"ping".to_vec(), b_addr).await;
///     assert_eq!(res.unwrap(), 4);
///     let (res, buf) = b.recv_from(Vec::with_capacity(64)).await;
///     let (n, from) = res.unwrap();
///     assert_eq!((&buf[..n], from), (&b"ping"[..], a.local_addr().unwrap()));
/// });
/// ```
#[derive(Debug)]
pub struct UdpSocket {
    socket: Socket,
}

impl UdpSocket {
    /// Binds to the first of `addr`'s addresses that works (port 0: the kernel picks one).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] if the address is taken; the resolver's error otherwise.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match Socket::bind(&SockAddr::from(a), Type::DGRAM) {
                Ok(socket) => return Ok(UdpSocket { socket }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")
        }))
    }

    /// Takes a `std::net::UdpSocket` (put back into blocking mode if it was not).
    ///
    /// # Errors
    ///
    /// If the mode cannot be changed.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        Ok(UdpSocket {
            socket: Socket::from_owned(OwnedFd::from(socket))?,
        })
    }

    /// Gives the socket back as a blocking `std::net::UdpSocket` (a duplicate fd if a dropped
    /// operation's cancel is still in flight).
    ///
    /// # Errors
    ///
    /// If the fd had to be duplicated and that failed.
    pub fn into_std(self) -> io::Result<std::net::UdpSocket> {
        Ok(std::net::UdpSocket::from(self.socket.into_owned_fd()?))
    }

    /// Sets the default destination for [`UdpSocket::send`] and the only source
    /// [`UdpSocket::recv`] accepts (`IORING_OP_CONNECT`).
    ///
    /// # Errors
    ///
    /// `EAFNOSUPPORT` for an address of the other IP family, and the like.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        self.socket.connect(SockAddr::from(addr)).await
    }

    /// Sends the buffer's initialized bytes as one datagram to `addr`.
    pub async fn send_to<B: IoBuf>(&self, buf: B, addr: SocketAddr) -> BufResult<usize, B> {
        self.socket.send_to(buf, &SockAddr::from(addr)).await
    }

    /// Receives one datagram into `buf` (from its start up to its capacity; a longer datagram
    /// is truncated) and the sender's address.
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> BufResult<(usize, SocketAddr), B> {
        let (res, buf) = self.socket.recv_from(buf).await;
        (res.and_then(|(n, a)| Ok((n, inet_addr(&a)?))), buf)
    }

    /// Sends one datagram to the connected peer.
    ///
    /// # Errors
    ///
    /// `EDESTADDRREQ` if the socket is not connected; `ECONNREFUSED` if an earlier datagram
    /// drew an ICMP port-unreachable.
    pub async fn send<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        self.socket.write(buf).await
    }

    /// Receives one datagram from the connected peer.
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        self.socket.read(buf).await
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// If `getsockname` fails.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        inet_addr(&self.socket.local_addr()?)
    }

    /// The connected peer's address.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the socket is not connected.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        inet_addr(&self.socket.peer_addr()?)
    }

    /// Sets `SO_BROADCAST`.
    ///
    /// # Errors
    ///
    /// If `setsockopt` fails.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.socket.sock_ref().set_broadcast(on)
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
