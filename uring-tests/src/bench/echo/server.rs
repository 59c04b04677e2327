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
    /// This crate with `TcpStream::recv_multishot`: one multishot receive per connection into
    /// one `BufRing` the runtime's connections share, each buffer written back as it came.
    UringMultishot,
    /// A hand-written io_uring loop with no runtime (see `raw.rs`).
    Raw,
    /// A hand-written io_uring loop doing the same ops as the uring server (see
    /// `raw_single.rs`): what uring costs over the same ops without a runtime.
    RawSingle,
    /// A `uring::Pool` of [`WORKERS`] workers, each accepting on its own `SO_REUSEPORT`
    /// listener and serving its connections as the `uring` server does.
    UringPool,
    /// tokio's multi-thread runtime with [`WORKERS`] workers and one listener (the accept loop
    /// is itself a task, so only the workers work).
    TokioMt,
    /// [`WORKERS`] tokio current_thread runtimes, one per thread, each with its own
    /// `SO_REUSEPORT` listener.
    TokioCt,
}

/// Worker threads of the many-core servers ([`ServerKind::MANY_CORES`]).
pub const WORKERS: usize = 2;

impl ServerKind {
    /// Every kind, in table order.
    pub const ALL: [ServerKind; 4] = [
        ServerKind::Uring,
        ServerKind::Tokio,
        ServerKind::Raw,
        ServerKind::RawSingle,
    ];

    /// The servers on [`WORKERS`] threads, which the `threads` suite compares (the echo suite's
    /// servers, [`ServerKind::ALL`], run on one thread each).
    pub const MANY_CORES: [ServerKind; 3] = [
        ServerKind::UringPool,
        ServerKind::TokioMt,
        ServerKind::TokioCt,
    ];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Uring => "uring",
            ServerKind::Tokio => "tokio",
            ServerKind::UringMultishot => "uring-multishot",
            ServerKind::Raw => "raw",
            ServerKind::RawSingle => "raw-single",
            ServerKind::UringPool => "uring-pool2",
            ServerKind::TokioMt => "tokio-mt2",
            ServerKind::TokioCt => "tokio-ct2",
        }
    }

    /// How many threads serve: 1, or [`WORKERS`] for the many-core servers. A server on more
    /// than one thread is not pinned to one CPU.
    pub fn threads(self) -> usize {
        if ServerKind::MANY_CORES.contains(&self) {
            WORKERS
        } else {
            1
        }
    }

    /// Servers for side comparisons, run only when named (`URING_ECHO_SERVERS`).
    pub const EXTRA: [ServerKind; 1] = [ServerKind::UringMultishot];

    /// Parses a name given by [`ServerKind::name`].
    pub fn parse(s: &str) -> Option<ServerKind> {
        ServerKind::ALL
            .into_iter()
            .chain(ServerKind::MANY_CORES)
            .chain(ServerKind::EXTRA)
            .find(|k| k.name() == s)
    }
}

/// Each connection's read buffer (and the raw loop's provided buffers): larger than the largest
/// message, so a message arrives in one read when the kernel has it all.
pub const BUF_SIZE: usize = 16 * 1024;

static CONN_BUF: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Sets the read buffer of each connection of the runtime servers (uring, tokio and their
/// many-core forms) for this process, instead of [`BUF_SIZE`]: `echo-server --buf BYTES`, for
/// the `threads` suite's memory row. Only the first call counts.
pub fn set_conn_buf(bytes: usize) {
    let _ = CONN_BUF.set(bytes.max(1));
}

fn conn_buf() -> usize {
    CONN_BUF.get().copied().unwrap_or(BUF_SIZE)
}

/// Serves echo on `addr` with `kind` until killed; calls `ready` with the bound address.
///
/// # Errors
///
/// When the runtime or the listener cannot be set up.
pub fn serve(kind: ServerKind, addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    match kind {
        ServerKind::Uring => serve_uring(addr, ready),
        ServerKind::Tokio => serve_tokio(addr, ready),
        ServerKind::UringMultishot => serve_uring_multishot(addr, ready),
        ServerKind::Raw => super::raw::serve(addr, BUF_SIZE, ready),
        ServerKind::RawSingle => super::raw_single::serve(addr, BUF_SIZE, ready),
        ServerKind::UringPool => serve_uring_pool(addr, ready),
        ServerKind::TokioMt => serve_tokio_mt(addr, ready),
        ServerKind::TokioCt => serve_tokio_ct(addr, ready),
    }
}

/// After a failed accept (out of fds, say), wait this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

fn tokio_current_thread() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn serve_tokio(addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let rt = tokio_current_thread()?;
    // The same listen backlog as the other servers (tokio's bind uses 1024).
    let std_listener = super::raw::bind(addr)?;
    ready(std_listener.local_addr()?);
    rt.block_on(tokio_accept_loop(std_listener))
}

fn serve_tokio_mt(addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()?;
    let std_listener = super::raw::bind(addr)?;
    ready(std_listener.local_addr()?);
    // The accept loop is a task too, so the workers do all the work (block_on's own thread
    // would be a third one).
    rt.block_on(rt.spawn(tokio_accept_loop(std_listener)))
        .map_err(io::Error::other)?
}

fn serve_tokio_ct(addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let listeners = reuseport_listeners(addr, WORKERS)?;
    ready(bound(&listeners[0])?);
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            std::thread::spawn(move || -> io::Result<()> {
                tokio_current_thread()?.block_on(tokio_accept_loop(l.into()))
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| io::Error::other("a tokio thread panicked"))??;
    }
    Ok(())
}

/// `n` listening sockets on one address with `SO_REUSEPORT` (the kernel spreads connections
/// over them), with the other servers' backlog. The first binds `addr` (port 0: a free port),
/// the others its actual address.
fn reuseport_listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<socket2::Socket>> {
    let mut out: Vec<socket2::Socket> = Vec::with_capacity(n);
    for _ in 0..n {
        let at = match out.first() {
            Some(s) => bound(s)?,
            None => addr,
        };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(at),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&at.into())?;
        socket.listen(4096)?;
        out.push(socket);
    }
    Ok(out)
}

fn bound(socket: &socket2::Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an inet socket"))
}

async fn tokio_accept_loop(std_listener: std::net::TcpListener) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
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
            let mut buf = vec![0u8; conn_buf()];
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
}

fn serve_uring(addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    // The same listen backlog as the other servers.
    let std_listener = super::raw::bind(addr)?;
    ready(std_listener.local_addr()?);
    uring::run(
        async move { uring_accept_loop(uring::net::TcpListener::from_std(std_listener)?).await },
    )
}

fn serve_uring_pool(addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    use std::sync::{Arc, Mutex};
    let pool = uring::Pool::builder().threads(WORKERS).build()?;
    // Not `TcpListener::bind_reuseport` (backlog 1024): the same sockets and backlog as
    // tokio-ct2 and the other servers.
    let listeners = reuseport_listeners(addr, WORKERS)?;
    ready(bound(&listeners[0])?);
    // Worker i takes listener i.
    let listeners: Arc<Mutex<Vec<Option<socket2::Socket>>>> =
        Arc::new(Mutex::new(listeners.into_iter().map(Some).collect()));
    let served = pool.run_each(move |w| {
        let socket = listeners.lock().expect("listeners")[w.index()]
            .take()
            .expect("one listener per worker");
        async move { uring_accept_loop(uring::net::TcpListener::from_socket(socket)?).await }
    });
    served.into_iter().collect()
}

/// Buffers of the ring the `uring-multishot` server's connections share: two per connection of
/// the 500-connection rows, so the ring rarely runs dry.
const MULTISHOT_RING: u16 = 1024;

fn serve_uring_multishot(addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let std_listener = super::raw::bind(addr)?;
    ready(std_listener.local_addr()?);
    uring::run(async move {
        let listener = uring::net::TcpListener::from_std(std_listener)?;
        let ring = uring::buf::BufRing::new(MULTISHOT_RING, conn_buf())?;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("uring-multishot echo server: accept: {e}");
                    uring::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            stream.set_nodelay(true)?;
            let ring = ring.clone();
            uring::spawn(async move {
                let mut bufs = stream.recv_multishot(&ring);
                while let Some(Ok(buf)) = bufs.next().await {
                    // Written back from the ring's memory; the buffer goes back after.
                    if stream.write_all(buf).await.0.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

async fn uring_accept_loop(listener: uring::net::TcpListener) -> io::Result<()> {
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
            let mut buf = Vec::with_capacity(conn_buf());
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
}
