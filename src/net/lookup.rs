//! Name resolution: [`lookup_host`], std's resolver (`getaddrinfo`) on the blocking pool.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// Resolves `"host:port"` (a name, an IPv4 address or a bracketed IPv6 address, then a port) to
/// its socket addresses, without blocking the loop: the counterpart of tokio's `lookup_host` and
/// asyncio's `loop.getaddrinfo`.
///
/// `getaddrinfo(3)`, behind std's [`ToSocketAddrs`], blocks (it reads `/etc/hosts`, asks DNS
/// servers) and has no io_uring op, so it runs on the blocking pool (see
/// [`spawn_blocking`](crate::spawn_blocking)); an address that is already numeric is parsed at
/// once, on the loop's thread. The addresses come in the resolver's order (the order to try
/// them in). The returned future does not borrow `host_and_port`.
///
/// ```
/// uring::run(async {
///     let addrs = uring::net::lookup_host("localhost:80").await.unwrap();
///     assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
///
///     let addrs = uring::net::lookup_host("[::1]:443").await.unwrap();
///     assert_eq!(addrs, ["[::1]:443".parse().unwrap()]);
///
///     assert!(uring::net::lookup_host("localhost").await.is_err(), "no port");
/// });
/// ```
///
/// # Errors
///
/// [`io::ErrorKind::InvalidInput`] without a port (or with one that is not a number); the
/// resolver's error for a name it does not know (the message carries `getaddrinfo`'s).
///
/// # Panics
///
/// When polled outside a runtime, as [`spawn_blocking`](crate::spawn_blocking).
pub fn lookup_host(
    host_and_port: &str,
) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + 'static {
    let host = host_and_port.to_owned();
    async move {
        if let Ok(addr) = host.parse::<SocketAddr>() {
            return Ok(vec![addr]);
        }
        let resolved =
            crate::spawn_blocking(move || host.to_socket_addrs().map(Iterator::collect)).await;
        match resolved {
            Ok(addrs) => addrs,
            // The resolver's panic is the caller's, as if it had called it directly.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(e.into()),
        }
    }
}
