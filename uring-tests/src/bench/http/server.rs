//! The HTTP servers the `http` suite compares: one hyper service ([`Hello`]), written once,
//! served by hyper-util's auto builder (HTTP/1.1 and h2c, told apart by the HTTP/2 preface) on
//! either runtime. Only the runtime differs:
//!
//! - `uring`: a `uring::Runtime`, `uring::net::TcpListener`, each connection a `uring` task over
//!   `Compat<TcpStream>`, the builder with `HyperExecutor` and `HyperTimer`;
//! - `tokio`: a tokio current_thread runtime, `tokio::net::TcpListener`, each connection a local
//!   task (`spawn_local` on a `LocalSet`) over `TokioIo<TcpStream>`, the builder with a local
//!   executor (`spawn_local`, so the service need not be `Send`, as on uring) and `TokioTimer`.
//!
//! Both listen with the echo servers' backlog (4096) and set `TCP_NODELAY` on every connection.
//! Beside them run the two bare servers of [`super::bare`] (`raw-ring`, `raw-epoll`: no runtime,
//! no HTTP library), the kernel's floor for the HTTP/1.1 rows.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// The body of `/`: the same as `examples/http.rs`'s.
pub const HELLO: &[u8] = b"hello from uring\n";

/// Which runtime serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `uring::Runtime`, `Compat<TcpStream>`, `HyperExecutor`, `HyperTimer`.
    Uring,
    /// tokio current_thread, `TokioIo<TcpStream>`, a local executor, `TokioTimer`.
    Tokio,
    /// A bare io_uring loop answering HTTP/1.1 with fixed bytes ([`super::bare::serve_ring`]).
    RawRing,
    /// A bare epoll loop answering HTTP/1.1 with fixed bytes ([`super::bare::serve_epoll`]).
    RawEpoll,
}

impl Runtime {
    /// Every server, in table order.
    pub const ALL: [Runtime; 4] = [
        Runtime::Uring,
        Runtime::Tokio,
        Runtime::RawRing,
        Runtime::RawEpoll,
    ];

    /// The name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Uring => "uring",
            Runtime::Tokio => "tokio",
            Runtime::RawRing => "raw-ring",
            Runtime::RawEpoll => "raw-epoll",
        }
    }

    /// Parses a name given by [`Runtime::name`].
    pub fn parse(s: &str) -> Option<Runtime> {
        Runtime::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// The service both runtimes serve: `GET /` (or `HEAD /`) answers 200 with [`HELLO`], anything
/// else 404. It does no I/O of its own, so its future is a plain [`Ready`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Hello;

/// What [`Hello`] answers with.
pub type Body = Full<Bytes>;

impl hyper::service::Service<Request<Incoming>> for Hello {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        ready(Ok(respond(req.method(), req.uri().path())))
    }
}

/// The response to `method path`.
pub fn respond(method: &Method, path: &str) -> Response<Body> {
    if path == "/" && (method == Method::GET || method == Method::HEAD) {
        Response::new(Full::new(Bytes::from_static(HELLO)))
    } else {
        let mut res = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *res.status_mut() = StatusCode::NOT_FOUND;
        res
    }
}

/// The auto builder both runtimes use (HTTP/1.1 and HTTP/2, hyper's defaults), with `exec` to
/// run HTTP/2 streams and `timer` for hyper's timeouts (HTTP/1's header-read timeout).
pub fn builder<E, T>(exec: E, timer: T) -> auto::Builder<E>
where
    T: hyper::rt::Timer + Clone + Send + Sync + 'static,
{
    let mut b = auto::Builder::new(exec);
    b.http1().timer(timer.clone());
    b.http2().timer(timer);
    b
}

/// Serves one connection with [`Hello`] until the client goes (errors, such as a client that
/// hangs up mid-request at the end of a benchmark window, end the connection quietly).
pub async fn serve_connection<I, E>(builder: &auto::Builder<E>, io: I)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    E: auto::HttpServerConnExec<
        <Hello as hyper::service::Service<Request<Incoming>>>::Future,
        Body,
    >,
{
    let _ = builder.serve_connection(io, Hello).await;
}

/// After a failed accept (out of fds, say), wait this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Serves HTTP on `addr` with `runtime` until killed; calls `ready` with the bound address.
///
/// # Errors
///
/// When the runtime or the listener cannot be set up.
pub fn serve(runtime: Runtime, addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    serve_with_control(runtime, addr, false, |a, _| ready(a))
}

/// As [`serve`], and with `control` (uring only) a second listener on 127.0.0.1 that answers
/// every connection with one line of the runtime's driver counters, `enters E completions C`
/// (`io_uring_enter` calls and completions so far), then closes it. `ready` gets the HTTP
/// address and the control address.
///
/// # Errors
///
/// When the runtime or a listener cannot be set up.
pub fn serve_with_control(
    runtime: Runtime,
    addr: SocketAddr,
    control: bool,
    ready: impl FnOnce(SocketAddr, Option<SocketAddr>),
) -> io::Result<()> {
    // The same listen backlog as the echo servers (tokio's bind uses 1024).
    let listener = crate::bench::echo::raw::bind(addr)?;
    let control = match (runtime, control) {
        (Runtime::Uring, true) => Some(std::net::TcpListener::bind("127.0.0.1:0")?),
        _ => None,
    };
    ready(
        listener.local_addr()?,
        control.as_ref().map(|c| c.local_addr()).transpose()?,
    );
    match runtime {
        Runtime::Uring => serve_uring(listener, control),
        Runtime::Tokio => serve_tokio(listener),
        Runtime::RawRing => super::bare::serve_ring(listener),
        Runtime::RawEpoll => super::bare::serve_epoll(listener),
    }
}

fn serve_uring(
    listener: std::net::TcpListener,
    control: Option<std::net::TcpListener>,
) -> io::Result<()> {
    use uring::compat::{Compat, HyperExecutor, HyperTimer};
    let rt = uring::Runtime::new()?;
    let serve = async {
        let listener = uring::net::TcpListener::from_std(listener)?;
        let builder = Rc::new(builder(HyperExecutor, HyperTimer));
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    eprintln!("uring http server: accept: {e}");
                    uring::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            stream.set_nodelay(true)?;
            let builder = builder.clone();
            uring::spawn(async move { serve_connection(&builder, Compat::new(stream)).await });
        }
    };
    let Some(control) = control else {
        return rt.block_on(serve);
    };
    // The control loop reads the runtime's counters, so it runs in the main future (it borrows
    // the runtime), beside the accept loop.
    let rt = &rt;
    let report = async move {
        let control = uring::net::TcpListener::from_std(control)?;
        loop {
            let (s, _) = control.accept().await?;
            let st = rt.driver_stats();
            let line = format!("enters {} completions {}\n", st.enters, st.completions);
            let _ = s.write_all(line.into_bytes()).await;
        }
    };
    rt.block_on(async move {
        let (serve, report) = (std::pin::pin!(serve), std::pin::pin!(report));
        match futures_util::future::select(serve, report).await {
            futures_util::future::Either::Left((r, _)) => r,
            futures_util::future::Either::Right((r, _)) => r,
        }
    })
}

/// Reads the counters from a uring server's control address (see [`serve_with_control`]):
/// (`io_uring_enter` calls, completions).
///
/// # Errors
///
/// When the server does not answer with a line of counters.
pub fn read_counters(control: SocketAddr) -> io::Result<(u64, u64)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(control)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    s.read_to_string(&mut line)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["enters", e, "completions", c] => match (e.parse(), c.parse()) {
            (Ok(e), Ok(c)) => Ok((e, c)),
            _ => Err(io::Error::other(format!("bad counters line {line:?}"))),
        },
        _ => Err(io::Error::other(format!("bad counters line {line:?}"))),
    }
}

/// hyper's executor on tokio without `Send`: `spawn_local` on the current `LocalSet`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        drop(tokio::task::spawn_local(fut));
    }
}

fn serve_tokio(listener: std::net::TcpListener) -> io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let builder = Rc::new(builder(LocalExec, TokioTimer::new()));
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    eprintln!("tokio http server: accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            stream.set_nodelay(true)?;
            let builder = builder.clone();
            tokio::task::spawn_local(async move {
                serve_connection(&builder, TokioIo::new(stream)).await
            });
        }
    })
}
