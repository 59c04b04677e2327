//! Address families: what makes a [`Stream`](crate::net::Stream),
//! [`Listener`](crate::net::Listener) or [`Datagram`](crate::net::Datagram) a TCP/UDP socket or a
//! Unix-domain one.

use socket2::{Domain, SockAddr};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;

/// An address family of the generic socket types: [`Inet`] (IPv4 and IPv6: TCP and UDP) or
/// [`Unix`] (Unix-domain sockets). It fixes the address type and the std types a socket converts
/// from and to. Sealed: the crate implements it for these two only.
pub trait Family: sealed::Sealed + 'static {
    /// The socket address: [`std::net::SocketAddr`] or [`std::os::unix::net::SocketAddr`].
    type Addr: fmt::Debug + Clone;
    /// std's stream type: [`std::net::TcpStream`] or [`std::os::unix::net::UnixStream`].
    type StdStream: From<OwnedFd> + Into<OwnedFd>;
    /// std's listener type: [`std::net::TcpListener`] or [`std::os::unix::net::UnixListener`].
    type StdListener: From<OwnedFd> + Into<OwnedFd>;
    /// std's datagram socket type: [`std::net::UdpSocket`] or
    /// [`std::os::unix::net::UnixDatagram`].
    type StdDatagram: From<OwnedFd> + Into<OwnedFd>;
}

pub(crate) mod sealed {
    use super::Family;
    use socket2::SockAddr;
    use std::io;

    /// What the generic socket code needs of a family, out of the public API.
    pub trait Sealed {
        /// The family's name in `Debug` output.
        const NAME: &'static str;

        /// Whether the kernel can send this family's stream data from user pages
        /// (`IORING_OP_SEND_ZC`): TCP can, Unix-domain sockets cannot (`EOPNOTSUPP`).
        const ZERO_COPY: bool;

        /// Converts an address the kernel reported.
        fn decode(addr: &SockAddr) -> io::Result<<Self as Family>::Addr>
        where
            Self: Family;

        /// The address to report for a datagram whose sender is unknown, on a socket bound to
        /// `local`.
        fn unknown_sender(local: &<Self as Family>::Addr) -> io::Result<<Self as Family>::Addr>
        where
            Self: Family;
    }
}

/// Internet sockets (IPv4 and IPv6): [`TcpStream`](crate::net::TcpStream),
/// [`TcpListener`](crate::net::TcpListener) and [`UdpSocket`](crate::net::UdpSocket) are the
/// generic types for this family.
#[derive(Debug)]
pub enum Inet {}

impl Family for Inet {
    type Addr = std::net::SocketAddr;
    type StdStream = std::net::TcpStream;
    type StdListener = std::net::TcpListener;
    type StdDatagram = std::net::UdpSocket;
}

impl sealed::Sealed for Inet {
    const NAME: &'static str = "inet";
    const ZERO_COPY: bool = true;

    fn decode(addr: &SockAddr) -> io::Result<std::net::SocketAddr> {
        addr.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an IPv4 or IPv6 socket address",
            )
        })
    }

    fn unknown_sender(local: &std::net::SocketAddr) -> io::Result<std::net::SocketAddr> {
        let ip = match local.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        Ok(std::net::SocketAddr::new(ip, 0))
    }
}

/// Unix-domain sockets: [`UnixStream`](crate::net::UnixStream),
/// [`UnixListener`](crate::net::UnixListener) and [`UnixDatagram`](crate::net::UnixDatagram) are
/// the generic types for this family.
#[derive(Debug)]
pub enum Unix {}

impl Family for Unix {
    type Addr = std::os::unix::net::SocketAddr;
    type StdStream = std::os::unix::net::UnixStream;
    type StdListener = std::os::unix::net::UnixListener;
    type StdDatagram = std::os::unix::net::UnixDatagram;
}

impl sealed::Sealed for Unix {
    const NAME: &'static str = "unix";
    const ZERO_COPY: bool = false;

    fn decode(addr: &SockAddr) -> io::Result<std::os::unix::net::SocketAddr> {
        if let Some(path) = addr.as_pathname() {
            return std::os::unix::net::SocketAddr::from_pathname(path);
        }
        if let Some(name) = addr.as_abstract_namespace() {
            use std::os::linux::net::SocketAddrExt;
            return std::os::unix::net::SocketAddr::from_abstract_name(name);
        }
        // The kernel reports an unbound sender with an address length of 0 (nothing written).
        if addr.len() != 0 && addr.domain() != Domain::UNIX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a Unix-domain socket address",
            ));
        }
        // Unnamed (an unbound socket): std builds that from an empty path.
        std::os::unix::net::SocketAddr::from_pathname("")
    }

    fn unknown_sender(
        _local: &std::os::unix::net::SocketAddr,
    ) -> io::Result<std::os::unix::net::SocketAddr> {
        // Unnamed: what the kernel reports for an unbound sender.
        std::os::unix::net::SocketAddr::from_pathname("")
    }
}
