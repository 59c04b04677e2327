//! HTTP end to end with real clients: `examples/http` (hyper over `Compat`) served to `curl`
//! over HTTP/1.1 and HTTP/2 with prior knowledge (a 16 MiB random file compared by sha256) and
//! to `h2load` with many concurrent streams; `examples/http_client` fetching from
//! `python3 -m http.server`; and HTTPS with tokio-rustls over `Compat`, served in this process
//! and fetched by `curl --cacert`.
//!
//! The example binaries and the tools are those of `uring_tests::e2e` (`.ci/test` installs the
//! tools: curl, python3, coreutils, nghttp2-client for h2load).

use std::process::Command;
use std::time::Duration;
use uring_tests::e2e::{
    example, require, run_ok, sha256sum, start_example, start_python_http_server, write_random_file,
};
use uring_tests::{watchdog, TempDir};

const LIMIT: Duration = Duration::from_secs(300);
/// How long one client run may take (generous: the machine is shared).
const CLIENT_LIMIT: Duration = Duration::from_secs(200);

/// `curl` with the given protocol flag: prints the body into `out` (or stdout) and then, on its
/// own last line, the HTTP version and status it got (`2 200`).
fn curl(protocol: &str, url: &str, out: Option<&std::path::Path>) -> (String, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "180",
        protocol,
        "-w",
        "\n%{http_version} %{http_code}",
    ]);
    if let Some(out) = out {
        cmd.arg("-o").arg(out);
    }
    let res = run_ok(
        cmd.arg(url),
        CLIENT_LIMIT,
        &format!("curl {protocol} {url}"),
    );
    let text = String::from_utf8(res.stdout).expect("curl's output is text here");
    let (body, tail) = text.rsplit_once('\n').expect("curl printed the -w line");
    (body.to_string(), tail.to_string())
}

/// `/`, a 16 MiB file (compared by sha256) and the error routes, over one protocol.
fn curl_against_the_http_example(protocol: &'static str, version: &'static str) {
    require("curl", "curl");
    require("sha256sum", "coreutils");
    watchdog(LIMIT, move || {
        let dir = TempDir::new("http-curl");
        let file = dir.path("big file.bin");
        write_random_file(&file, 16 << 20);
        let (_server, addr) = start_example("http", &["--addr", "127.0.0.1:0"]);
        let base = format!("http://{addr}");

        let (body, tail) = curl(protocol, &format!("{base}/"), None);
        assert_eq!(body, "hello from uring\n");
        assert_eq!(tail, format!("{version} 200"));

        // The path percent-encoded (it has a space), as a client must send it.
        let encoded = file
            .to_str()
            .unwrap()
            .replace('/', "%2F")
            .replace(' ', "%20");
        let fetched = dir.path("fetched.bin");
        let (_, tail) = curl(
            protocol,
            &format!("{base}/file?path={encoded}"),
            Some(&fetched),
        );
        assert_eq!(tail, format!("{version} 200"));
        assert_eq!(std::fs::metadata(&fetched).unwrap().len(), 16 << 20);
        assert_eq!(
            sha256sum(&fetched),
            sha256sum(&file),
            "the file came intact"
        );

        let missing = dir.path("missing");
        let (body, tail) = curl(
            protocol,
            &format!("{base}/file?path={}", missing.display()),
            None,
        );
        assert_eq!(tail, format!("{version} 404"));
        assert!(
            body.contains("No such file"),
            "a clear error body: {body:?}"
        );
        let (body, tail) = curl(protocol, &format!("{base}/file"), None);
        assert_eq!(tail, format!("{version} 400"));
        assert!(body.contains("missing the path parameter"), "{body:?}");
        let (_, tail) = curl(
            protocol,
            &format!("{base}/file?path={}", dir.dir().display()),
            None,
        );
        assert_eq!(tail, format!("{version} 400"), "a directory is no file");
    });
}

#[test]
fn curl_http1_gets_the_root_and_a_16_mib_file_intact() {
    curl_against_the_http_example("--http1.1", "1.1");
}

#[test]
fn curl_http2_prior_knowledge_gets_the_root_and_a_16_mib_file_intact() {
    curl_against_the_http_example("--http2-prior-knowledge", "2");
}

/// h2load's summary line: `requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0
/// failed, 0 errored, 0 timeout`, as (name, count) pairs.
fn h2load_requests(output: &str) -> Vec<(String, u64)> {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .unwrap_or_else(|| panic!("no requests line in h2load's output:\n{output}"));
    line.split(", ")
        .map(|part| {
            let (n, name) = part.split_once(' ').expect("`N name`");
            (name.to_string(), n.parse().expect("a count"))
        })
        .collect()
}

fn h2load_against_the_http_example(server_args: &[&str], client_args: &[&str]) {
    require("h2load", "nghttp2-client");
    let server_args: Vec<String> = server_args.iter().map(|s| s.to_string()).collect();
    let client_args: Vec<String> = client_args.iter().map(|s| s.to_string()).collect();
    watchdog(LIMIT, move || {
        let mut args = vec!["--addr", "127.0.0.1:0"];
        args.extend(server_args.iter().map(String::as_str));
        let (_server, addr) = start_example("http", &args);
        let out = run_ok(
            Command::new("h2load")
                .args(&client_args)
                .args(["-n", "2000", "-c", "10"])
                .arg(format!("http://{addr}/")),
            CLIENT_LIMIT,
            "h2load",
        );
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let counts = h2load_requests(&out);
        let count = |name: &str| {
            counts
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no {name:?} in h2load's requests line:\n{out}"))
                .1
        };
        assert_eq!(count("succeeded"), 2000, "{out}");
        assert_eq!(count("failed"), 0, "{out}");
        assert_eq!(count("errored"), 0, "{out}");
        assert_eq!(count("timeout"), 0, "{out}");
        assert!(out.contains("status codes: 2000 2xx"), "{out}");
    });
}

#[test]
fn h2load_http2_with_many_concurrent_streams_has_no_failed_request() {
    // 10 connections with 20 streams each in flight at once.
    h2load_against_the_http_example(&[], &["-m", "20"]);
}

#[test]
fn h2load_on_a_two_worker_server_over_http1_and_http2() {
    h2load_against_the_http_example(&["--threads", "2"], &["-m", "20"]);
    // HTTP/1.1 with 10 requests pipelined on each connection.
    h2load_against_the_http_example(&["--threads", "2"], &["--h1", "-m", "10"]);
}

#[test]
fn http_example_rejects_a_bad_command_line() {
    let out = Command::new(example("http"))
        .args(["--addr", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad --addr"));
}

#[test]
fn http_client_fetches_from_python_http_server() {
    require("python3", "python3");
    watchdog(LIMIT, || {
        let dir = TempDir::new("http-client");
        let len = (3 << 20) + 12_345;
        write_random_file(&dir.path("served.bin"), len);
        let (_http, addr) = start_python_http_server(dir.dir());
        // By name: connect_host resolves it (localhost may give ::1 first, where nothing
        // listens: the next address is tried).
        let url = format!("http://localhost:{}/served.bin", addr.port());
        let out = run_ok(
            Command::new(example("http_client")).arg(&url),
            CLIENT_LIMIT,
            "http_client",
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("status: 200 OK\nbody: {len} bytes\n")
        );
        let out = run_ok(
            Command::new(example("http_client")).arg(format!("http://{addr}/not-there")),
            CLIENT_LIMIT,
            "http_client",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("status: 404 Not Found\n"), "{stdout}");
    });
}

#[test]
fn http_client_rejects_bad_urls_with_usage_errors() {
    for (url, says) in [
        ("https://localhost/", "https:// is not supported"),
        ("ftp://localhost/", "unsupported scheme"),
        ("not a url", "bad URL"),
        ("/just/a/path", "not an absolute http:// URL"),
    ] {
        let out = Command::new(example("http_client"))
            .arg(url)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{url}: {err}");
        assert!(err.contains("usage: http_client"), "{url}: {err}");
    }
    let out = Command::new(example("http_client")).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no URL");
}

mod tls {
    //! HTTPS: tokio-rustls (ring as the crypto provider) over `Compat<TcpStream>`, hyper-util's
    //! auto builder on top (through its `TokioIo`), served on a uring runtime in this process.

    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    use hyper_util::server::conn::auto;
    use std::sync::Arc;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::rustls::{self, ServerConfig};
    use tokio_rustls::TlsAcceptor;
    use uring::compat::{Compat, HyperExecutor, HyperTimer};
    use uring::net::TcpListener;
    use uring_tests::{Rng, ThreadSignal};

    /// The body of `/data`.
    fn data() -> Vec<u8> {
        Rng(77).bytes((2 << 20) + 999)
    }

    fn tls_config(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        // h2 when the client offers it, HTTP/1.1 otherwise.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    /// Serves HTTPS on `listener` until `stop` is set: each connection's TLS handshake and
    /// HTTP in a task of its own.
    async fn serve(listener: std::net::TcpListener, config: ServerConfig, stop: ThreadSignal) {
        let listener = TcpListener::from_std(listener).unwrap();
        use futures_util::future::{select, Either};
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let mut builder = auto::Builder::new(HyperExecutor);
        builder.http1().timer(HyperTimer);
        builder.http2().timer(HyperTimer);
        let builder = std::rc::Rc::new(builder);
        let data = Bytes::from(data());
        let mut stopped = std::pin::pin!(stop.wait());
        loop {
            let stream = match select(std::pin::pin!(listener.accept()), stopped.as_mut()).await {
                Either::Left((accepted, _)) => accepted.expect("accept").0,
                Either::Right(_) => return,
            };
            let (acceptor, builder, data) = (acceptor.clone(), builder.clone(), data.clone());
            uring::spawn(async move {
                let tls = match acceptor.accept(Compat::new(stream)).await {
                    Ok(tls) => tls,
                    Err(e) => return eprintln!("tls: handshake: {e}"),
                };
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let body = match req.uri().path() {
                        "/data" => data.clone(),
                        _ => Bytes::from_static(b"hello over TLS\n"),
                    };
                    async move { Ok::<_, hyper::Error>(hyper::Response::new(Full::new(body))) }
                });
                if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                    eprintln!("tls: connection: {e}");
                }
            });
        }
    }

    #[test]
    fn curl_fetches_over_https_from_tokio_rustls_over_compat() {
        require("curl", "curl");
        watchdog(LIMIT, || {
            let dir = TempDir::new("https");
            let cert = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .unwrap();
            let pem = dir.path("cert.pem");
            std::fs::write(&pem, cert.cert.pem()).unwrap();
            let key =
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
            let config = tls_config(cert.cert.der().clone(), key);

            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let stop = ThreadSignal::default();
            let server = {
                let stop = stop.clone();
                std::thread::spawn(move || uring::run(serve(listener, config, stop)))
            };

            let fetch = |protocol: &str, host: &str, path: &str, out: Option<&std::path::Path>| {
                let mut cmd = Command::new("curl");
                cmd.args(["-sS", "--max-time", "120", protocol, "--cacert"])
                    .arg(&pem)
                    // The name in the certificate, at this server's address.
                    .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
                    .args(["-w", "\n%{http_version} %{http_code}"]);
                if let Some(out) = out {
                    cmd.arg("-o").arg(out);
                }
                let url = format!("https://{host}:{port}{path}");
                let res = run_ok(cmd.arg(&url), CLIENT_LIMIT, &format!("curl {url}"));
                let text = String::from_utf8(res.stdout).unwrap();
                let (body, tail) = text.rsplit_once('\n').unwrap();
                (body.to_string(), tail.to_string())
            };

            // HTTP/1.1 by the certificate's DNS name, then h2 (ALPN) by its IP address.
            let (body, tail) = fetch("--http1.1", "localhost", "/", None);
            assert_eq!(
                (body.as_str(), tail.as_str()),
                ("hello over TLS\n", "1.1 200")
            );
            for (protocol, host) in [("--http1.1", "localhost"), ("--http2", "127.0.0.1")] {
                let out = dir.path("data.bin");
                let (_, tail) = fetch(protocol, host, "/data", Some(&out));
                let version = if protocol == "--http2" { "2" } else { "1.1" };
                assert_eq!(tail, format!("{version} 200"), "{protocol}");
                assert!(
                    std::fs::read(&out).unwrap() == data(),
                    "{protocol}: the body"
                );
            }

            // Without the certificate, curl refuses the server (the TLS is real).
            let refused = Command::new("curl")
                .args(["-sS", "--max-time", "60"])
                .arg(format!("https://127.0.0.1:{port}/"))
                .output()
                .unwrap();
            assert!(
                !refused.status.success(),
                "curl trusted an unknown certificate"
            );

            stop.set();
            server.join().unwrap();
        });
    }
}
