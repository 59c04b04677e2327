//! UDP: [`UdpSocket`] (the generic [`Datagram`] for [`Inet`]) and what only UDP has: binding,
//! connecting and sending by IP address, `SO_BROADCAST`.

use crate::buf::IoBuf;
use crate::net::family::Inet;
use crate::net::socket::Socket;
use crate::net::Datagram;
use crate::BufResult;
use socket2::{SockAddr, Type};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// A UDP socket: [`Datagram<Inet>`](Datagram). Receives are cancel-safe: see [`Datagram`].
pub type UdpSocket = Datagram<Inet>;

impl Datagram<Inet> {
    /// Binds to the first of `addr`'s addresses that works (port 0: the kernel picks one).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] if the address is taken; the resolver's error otherwise.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        Socket::first_of(addr, |a| Socket::bind(a, Type::DGRAM)).map(Datagram::from_socket)
    }

    /// Sets the default destination for [`UdpSocket::send`] and the only source
    /// [`UdpSocket::recv`] accepts (`IORING_OP_CONNECT`).
    ///
    /// # Errors
    ///
    /// `EAFNOSUPPORT` for an address of the other IP family, and the like.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        self.conn().socket().connect(SockAddr::from(addr)).await
    }

    /// Sends the buffer's initialized bytes as one datagram to `addr`.
    pub async fn send_to<B: IoBuf>(&self, buf: B, addr: SocketAddr) -> BufResult<usize, B> {
        self.conn().send_to(buf, &SockAddr::from(addr)).await
    }

    /// Sets `SO_BROADCAST`.
    ///
    /// # Errors
    ///
    /// If `setsockopt` fails.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.conn().socket().sock_ref().set_broadcast(on)
    }
}
