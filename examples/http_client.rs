//! An HTTP/1.1 client: fetches one `http://` URL with hyper over `uring` and prints the
//! response's status and how many body bytes came.
//!
//! ```text
//! cargo run --release --features hyper --example http_client -- http://localhost:8080/
//! ```
//!
//! The host may be a name: `TcpStream::connect_host` resolves it on the blocking pool and tries
//! each address in turn. The connection's I/O goes through `uring::compat::Compat`, and the body
//! is counted frame by frame as it arrives, never held whole. Output, on stdout:
//!
//! ```text
//! status: 200 OK
//! body: 1048576 bytes
//! ```
//!
//! Exit status 0 once a response came back whole (whatever its status), 1 when the connection
//! or the transfer failed, 2 for a bad command line (a URL that is not `http://host[:port]/...`;
//! `https://` is not supported: this example speaks cleartext only).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use std::process::ExitCode;
use uring::compat::Compat;
use uring::net::TcpStream;

const USAGE: &str = "usage: http_client http://HOST[:PORT][/PATH]";

fn main() -> ExitCode {
    let uri = match parse_args() {
        Ok(u) => u,
        Err(msg) => {
            eprintln!("http_client: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match uring::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("http_client: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fetch(uri)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("http_client: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn fetch(uri: Uri) -> Result<(), String> {
    let authority = uri.authority().expect("checked by parse_args").clone();
    let host_port = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    // The Host header: the authority without any user information.
    let host_header = match authority.port() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_string(),
    };
    let stream = TcpStream::connect_host(&host_port)
        .await
        .map_err(|e| format!("connect to {host_port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(Compat::new(stream))
        .await
        .map_err(|e| format!("handshake with {host_port}: {e}"))?;
    // The connection's I/O runs in its own task; the request and its response go through
    // `sender`.
    let conn = uring::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host_header)
        .header(hyper::header::USER_AGENT, "uring-http-client")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET {uri}: {e}"))?;
    println!("status: {}", res.status());
    let mut body = res.into_body();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| format!("GET {uri}: the body broke off after {len} bytes: {e}"))?;
        if let Some(data) = frame.data_ref() {
            len += data.len() as u64;
        }
    }
    println!("body: {len} bytes");
    // No more requests: the connection task ends once hyper has closed the connection.
    drop(sender);
    match conn.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("connection to {host_port}: {e}")),
        Err(e) => Err(format!("connection task: {e}")),
    }
}

fn parse_args() -> Result<Uri, String> {
    let mut args = std::env::args().skip(1);
    let url = match (args.next(), args.next()) {
        (Some(u), None) if u == "-h" || u == "--help" => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        (Some(u), None) => u,
        (None, _) => return Err("no URL given".into()),
        (Some(_), Some(extra)) => return Err(format!("one URL only (got {extra:?} too)")),
    };
    let uri: Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{url:?}: https:// is not supported (this example speaks cleartext HTTP only)"
            ))
        }
        Some(other) => return Err(format!("{url:?}: unsupported scheme {other:?}")),
        None => return Err(format!("{url:?} is not an absolute http:// URL")),
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() => {}
        _ => return Err(format!("{url:?} has no host")),
    }
    Ok(uri)
}
