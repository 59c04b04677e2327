//! [`Datagram`]: a datagram socket of any family.

use crate::buf::{IoBuf, IoBufMut};
use crate::net::conn::Conn;
use crate::net::family::Family;
use crate::net::socket::Socket;
use crate::net::stash::Framing;
use crate::BufResult;
use socket2::SockAddr;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// A datagram socket: [`UdpSocket`](crate::net::UdpSocket) (`Datagram<Inet>`) or
/// [`UnixDatagram`](crate::net::UnixDatagram) (`Datagram<Unix>`). Datagrams go through the ring:
/// `send_to`/`recv_from` as `IORING_OP_SENDMSG`/`RECVMSG` (header, address and iovec in one heap
/// block the op owns), `send`/`recv` as `IORING_OP_SEND`/`RECV`.
///
/// Cancel-safe receives: a datagram a dropped `recv` or `recv_from` had taken is not lost; the
/// next `recv` or `recv_from` returns it (truncated to its buffer, as a receive truncates), with
/// its sender. A receive started while a dropped one is still in flight waits for it, so
/// datagrams keep their order.
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
pub struct Datagram<F: Family> {
    conn: Conn,
    _family: PhantomData<fn() -> F>,
}

impl<F: Family> Datagram<F> {
    pub(crate) fn from_socket(socket: Socket) -> Datagram<F> {
        Datagram {
            conn: Conn::new(socket, Framing::Datagram),
            _family: PhantomData,
        }
    }

    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Takes a std datagram socket ([`std::net::UdpSocket`],
    /// [`std::os::unix::net::UnixDatagram`]), put back into blocking mode if it was not.
    ///
    /// # Errors
    ///
    /// If the mode cannot be changed.
    pub fn from_std(socket: F::StdDatagram) -> io::Result<Datagram<F>> {
        Ok(Datagram::from_socket(Socket::from_owned(socket.into())?))
    }

    /// Gives the socket back as a blocking std socket (a duplicate fd if a dropped operation's
    /// cancel is still in flight).
    ///
    /// # Errors
    ///
    /// If a dropped receive took a datagram no receive has taken yet (receive it first), or if
    /// the fd had to be duplicated and that failed.
    pub fn into_std(self) -> io::Result<F::StdDatagram> {
        Ok(F::StdDatagram::from(self.conn.into_owned_fd()?))
    }

    /// Sends one datagram to the connected peer.
    ///
    /// # Errors
    ///
    /// `EDESTADDRREQ` if the socket is not connected; `ECONNREFUSED` if an earlier datagram
    /// drew an ICMP port-unreachable (UDP).
    pub async fn send<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        self.conn.write(buf).await
    }

    /// Receives one datagram into `buf` (from its start up to its capacity; a longer datagram
    /// is truncated). On a connected socket, only from the peer.
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        self.conn.recv(buf).await
    }

    /// Receives one datagram into `buf` (truncated to its capacity) and the sender's address.
    ///
    /// If a dropped [`recv`](Datagram::recv) (which asks for no address) had taken the
    /// datagram, its sender is the connected peer's address, or, on a socket that is not
    /// connected, unknown: reported as unspecified (`0.0.0.0:0` or `[::]:0`) or unnamed (Unix).
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> BufResult<(usize, F::Addr), B> {
        let (res, buf) = self.conn.recv_from(buf).await;
        let res = res.and_then(|(n, from)| Ok((n, self.sender(from)?)));
        (res, buf)
    }

    /// The sender of a received datagram, as the caller's type.
    fn sender(&self, from: Option<SockAddr>) -> io::Result<F::Addr> {
        match from {
            Some(a) => F::decode(&a),
            None => match self.peer_addr() {
                Ok(peer) => Ok(peer),
                Err(_) => F::unknown_sender(&self.local_addr()?),
            },
        }
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// If `getsockname` fails.
    pub fn local_addr(&self) -> io::Result<F::Addr> {
        F::decode(&self.conn.socket().local_addr()?)
    }

    /// The connected peer's address.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the socket is not connected.
    pub fn peer_addr(&self) -> io::Result<F::Addr> {
        F::decode(&self.conn.socket().peer_addr()?)
    }
}

impl<F: Family> AsRawFd for Datagram<F> {
    fn as_raw_fd(&self) -> RawFd {
        self.conn.socket().as_raw_fd()
    }
}

impl<F: Family> AsFd for Datagram<F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn.socket().as_fd()
    }
}

impl<F: Family> fmt::Debug for Datagram<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.conn.socket().debug(f, "Datagram", F::NAME)
    }
}
