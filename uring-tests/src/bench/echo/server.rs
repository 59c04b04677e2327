//! The echo servers the benchmark compares, each as plain as a user would write it: one task per
//! connection, read into a buffer, write it all back.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Which server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// This crate: `uring::net::TcpListener`/`TcpStream`, one task per connection.
    Uring,
    /// tokio's current_thread runtime, one task per connection.
    Tokio,
    /// A hand-written io_uring loop with no runtime (see `raw.rs`).
    Raw,
}

impl ServerKind {
    /// Every kind, in table order.
    pub const ALL: [ServerKind; 3] = [ServerKind::Uring, ServerKind::Tokio, ServerKind::Raw];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Uring => "uring",
            ServerKind::Tokio => "tokio",
            ServerKind::Raw => "raw",
        }
    }

    /// Parses a name given by [`ServerKind::name`].
    pub fn parse(s: &str) -> Option<ServerKind> {
        ServerKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Each connection's read buffer (and the raw loop's provided buffers): larger than the largest
/// message, so a message arrives in one read when the kernel has it all.
pub const BUF_SIZE: usize = 16 * 1024;

/// Serves echo on `addr` with `kind` until killed; calls `ready` with the bound address.
///
/// # Errors
///
/// When the runtime or the listener cannot be set up.
pub fn serve(kind: ServerKind, addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    match kind {
        ServerKind::Uring => serve_uring(addr, ready),
        ServerKind::Tokio => serve_tokio(addr, ready),
        ServerKind::Raw => super::raw::serve(addr, BUF_SIZE, ready),
    }
}

/// After a failed accept (out of fds, say), wait this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

fn serve_tokio(addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // The same listen backlog as the other servers (tokio's bind uses 1024).
        let std_listener = super::raw::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        ready(listener.local_addr()?);
        loop {
            let (mut stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("tokio echo server: accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let mut buf = vec![0u8; BUF_SIZE];
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

fn serve_uring(addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    use uring::net::TcpListener;
    uring::run(async move {
        // The same listen backlog as the other servers.
        let listener = TcpListener::from_std(super::raw::bind(addr)?)?;
        ready(listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("uring echo server: accept: {e}");
                    uring::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            stream.set_nodelay(true)?;
            uring::spawn(async move {
                let mut buf = Vec::with_capacity(BUF_SIZE);
                loop {
                    // A read fills the buffer from its start and grows its length to cover the
                    // bytes read (never shrinks it): start empty so write_all sends exactly those.
                    buf.clear();
                    let (res, b) = stream.read(buf).await;
                    match res {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let (res, b) = stream.write_all(b).await;
                    if res.is_err() {
                        break;
                    }
                    buf = b;
                }
            });
        }
    })
}
