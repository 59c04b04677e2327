//! An HTTP server: hyper over `uring`, HTTP/1.1 and HTTP/2 over cleartext (h2c, prior knowledge)
//! on one port, each connection in its own task.
//!
//! ```text
//! cargo run --release --features hyper --example http -- --addr 127.0.0.1:8080 [--threads N]
//! curl http://127.0.0.1:8080/
//! curl --http2-prior-knowledge 'http://127.0.0.1:8080/file?path=/etc/os-release'
//! ```
//!
//! Routes:
//!
//! - `/`: a short fixed body.
//! - `/file?path=P`: the file at `P` (percent-decoded), read through `uring::fs` in 64 KiB
//!   pieces as the client takes them (a chunked body in HTTP/1.1; never the whole file in
//!   memory). 400 without `path` or for a path that is not a regular file, 404 for a missing
//!   file, 403 when it cannot be read. It serves any file the process can read: this is an
//!   example, keep it on the loopback address.
//!
//! hyper-util's auto builder tells HTTP/2's preface from an HTTP/1.1 request on each
//! connection. The connection's I/O goes through `uring::compat::Compat` (hyper's `rt::Read` and
//! `rt::Write` over the ring), HTTP/2's streams run as tasks through `HyperExecutor`, and hyper's
//! timeouts (the HTTP/1.1 header-read timeout among them) through `HyperTimer`.
//!
//! The first line of stdout is the address it listens on (useful with port 0). With `--threads
//! N` (0: one per CPU) it runs a `uring::Pool` of N workers, each with its own ring and its own
//! `SO_REUSEPORT` listener on the address (see `examples/echo.rs`). Errors are logged per
//! connection on stderr.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::server::conn::auto;
use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;
use uring::compat::{Compat, HyperExecutor, HyperTimer};
use uring::net::{AcceptBackoff, TcpListener, TcpStream};

const USAGE: &str =
    "usage: http [--addr IP:PORT] [--threads N]   (defaults 127.0.0.1:8080, 1; 0 = all CPUs)";

/// How much of a file one read asks for: the size of one piece of the body.
const CHUNK: usize = 64 * 1024;

/// A response body: a fixed one, or a file streamed in pieces (neither is `Send`, nor needs to
/// be: a connection never leaves its thread).
type Body = Pin<Box<dyn hyper::body::Body<Data = Bytes, Error = io::Error>>>;

fn main() {
    let (addr, threads) = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("http: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if threads == 1 {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| fail(addr, e));
        let runtime = uring::Runtime::new().unwrap_or_else(|e| {
            eprintln!("http: {e}");
            std::process::exit(1);
        });
        println!("{}", listener.local_addr().expect("bound address"));
        runtime.block_on(accept_loop(listener));
        return;
    }
    // The first listener fixes the port (the address may say 0); every worker gets its own on
    // that port, the first worker this one (as a std listener: it crosses to its thread).
    let first = TcpListener::bind_reuseport(addr).unwrap_or_else(|e| fail(addr, e));
    let addr = first.local_addr().expect("bound address");
    let first = Mutex::new(Some(first.into_std().expect("a listener without ops")));
    let pool = uring::Pool::builder()
        .threads(threads)
        .build()
        .unwrap_or_else(|e| {
            eprintln!("http: {e}");
            std::process::exit(1);
        });
    println!("{addr}");
    pool.run_each(move |_worker| {
        let listener = match first.lock().unwrap().take() {
            Some(l) => TcpListener::from_std(l),
            None => TcpListener::bind_reuseport(addr),
        };
        accept_loop(listener.unwrap_or_else(|e| fail(addr, e)))
    });
}

fn fail(addr: SocketAddr, e: io::Error) -> ! {
    eprintln!("http: cannot listen on {addr}: {e}");
    std::process::exit(1);
}

/// One builder per worker, shared by its connections: HTTP/1.1 and h2c, hyper's timers on the
/// ring, HTTP/2 streams spawned on this thread.
fn builder() -> auto::Builder<HyperExecutor> {
    let mut builder = auto::Builder::new(HyperExecutor);
    builder
        .http1()
        .timer(HyperTimer)
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(HyperTimer);
    builder
}

async fn accept_loop(listener: TcpListener) {
    let builder = Rc::new(builder());
    let mut incoming = listener.incoming();
    let mut backoff = AcceptBackoff::default();
    while let Some(accepted) = incoming.next().await {
        match accepted {
            Ok(stream) => {
                backoff.on_success();
                uring::spawn(serve(builder.clone(), stream));
            }
            Err(e) => {
                eprintln!("http: accept: {e}");
                if let Err(e) = backoff.on_error(e).await {
                    eprintln!("http: the listener failed, stopping: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}

async fn serve(builder: Rc<auto::Builder<HyperExecutor>>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "connection".into());
    let service = hyper::service::service_fn(handle);
    if let Err(e) = builder.serve_connection(Compat::new(stream), service).await {
        eprintln!("http: {peer}: {e}");
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, io::Error> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n"));
    }
    Ok(match req.uri().path() {
        "/" => text(StatusCode::OK, "hello from uring\n"),
        "/file" => match query_param(req.uri().query().unwrap_or(""), "path") {
            Some(path) => file(path).await,
            None => text(
                StatusCode::BAD_REQUEST,
                "missing the path parameter: /file?path=/some/file\n",
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "no such route: try / or /file?path=P\n",
        ),
    })
}

/// A body of one piece, known in full.
fn fixed(bytes: Bytes) -> Body {
    Box::pin(Full::new(bytes).map_err(|never| -> io::Error { match never {} }))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(fixed(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// The file at `path` as a body read in `CHUNK`-sized pieces: each read starts when hyper
/// polls the body for its next piece, that is when the connection has room for it.
async fn file(path: OsString) -> Response<Body> {
    let file = match uring::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            let status = match e.kind() {
                io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return error(status, &path, &e.to_string());
        }
    };
    match file.metadata().await {
        Ok(m) if m.is_file() => {}
        Ok(_) => return error(StatusCode::BAD_REQUEST, &path, "not a regular file"),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &path, &e.to_string()),
    }
    let pieces = futures_util::stream::try_unfold((file, 0u64), |(file, pos)| async move {
        let (res, buf) = file.read_at(Vec::with_capacity(CHUNK), pos).await;
        match res? {
            0 => Ok(None),
            n => Ok(Some((
                Frame::data(Bytes::from(buf)),
                (file, pos + n as u64),
            ))),
        }
    });
    let mut res = Response::new(Box::pin(StreamBody::new(pieces)) as Body);
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    res
}

fn error(status: StatusCode, path: &OsString, why: &str) -> Response<Body> {
    let msg = format!("{}: {why}\n", path.to_string_lossy());
    let mut res = Response::new(fixed(Bytes::from(msg)));
    *res.status_mut() = status;
    res
}

/// The percent-decoded value of `name` in a query string (`a=1&path=%2Ftmp%2Fx`); `+` is a
/// space, as in a form. The value is bytes: a path need not be UTF-8.
fn query_param(query: &str, name: &str) -> Option<OsString> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name.as_bytes()).then(|| OsString::from_vec(percent_decode(value)))
    })
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn parse_args() -> Result<(SocketAddr, usize), String> {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().expect("default address");
    let mut threads = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                let v = args.next().ok_or("--addr needs a value")?;
                addr = v.parse().map_err(|e| format!("bad --addr {v:?}: {e}"))?;
            }
            "--threads" => {
                let v = args.next().ok_or("--threads needs a value")?;
                threads = v.parse().map_err(|e| format!("bad --threads {v:?}: {e}"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((addr, threads))
}
