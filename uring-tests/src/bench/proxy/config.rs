//! The files the `proxy` suite writes for the real programs it drives (nginx's and haproxy's
//! configuration), and the parser of curl's `--write-out` line.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

/// The URL path of the small file (1 KiB) the wrk rows fetch.
pub const SMALL_PATH: &str = "/1k";
/// The size of the small file.
pub const SMALL_BYTES: usize = 1024;
/// The URL path of the large file the curl row fetches.
pub const LARGE_PATH: &str = "/large";

/// A minimal nginx.conf for the upstream: one worker, no access log, listening on
/// `127.0.0.1:port`, serving `dir/www` (where the suite puts [`SMALL_PATH`] and
/// [`LARGE_PATH`]) with sendfile, its pid file and temp paths in `dir`, in the foreground
/// (`daemon off`). Keep-alive connections live as long as the load generator keeps them (no
/// request count or idle limit a window could reach), so each wrk connection is one upstream
/// connection for the whole window.
pub fn nginx_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "# Written by the uring proxy benchmark.
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
    }}
}}
"
    )
}

/// An haproxy configuration relaying `listen` to `upstream` in tcp mode, one thread (the
/// proxy under test is pinned to one CPU), at most `maxconn` connections, with
/// `option splice-auto` when `splice` (haproxy then moves data socket to socket with splice(2)
/// through a pipe when it judges it pays, as for bulk transfers). No logging.
pub fn haproxy_cfg(listen: SocketAddr, upstream: SocketAddr, maxconn: u64, splice: bool) -> String {
    format!(
        "# Written by the uring proxy benchmark.
global
    nbthread 1
    maxconn {maxconn}

defaults
    mode tcp
    timeout connect 10s
    timeout client 600s
    timeout server 600s
{splice}
listen proxy
    bind {listen}
    server upstream {upstream}
",
        splice = if splice {
            "    option splice-auto\n"
        } else {
            ""
        },
    )
}

/// The `--write-out` format the suite gives curl, parsed by [`parse_curl`].
pub const CURL_WRITE_OUT: &str = "%{http_code} %{size_download} %{time_total}\\n";

/// One curl fetch: what its `--write-out` line says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fetch {
    /// Bytes of body received.
    pub bytes: u64,
    /// From the start to the last byte, seconds (curl's `time_total`).
    pub secs: f64,
}

impl Fetch {
    /// Megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
}

/// Parses curl's [`CURL_WRITE_OUT`] line: `200 1073741824 0.912345`. A status other than 200
/// or a body of other than `expected` bytes is an error (the proxy must pass every byte).
///
/// # Errors
///
/// When the line does not parse, or the fetch failed or came up short.
pub fn parse_curl(text: &str, expected: u64) -> io::Result<Fetch> {
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("curl: {what} in its output {text:?}"),
        )
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let [code, bytes, secs] = words.as_slice() else {
        return Err(bad("not three figures"));
    };
    if *code != "200" {
        return Err(bad(&format!("status {code}, not 200")));
    }
    let bytes: u64 = bytes.parse().map_err(|_| bad("a bad size"))?;
    // curl prints its times with a decimal point whatever the locale (it uses its own printf).
    let secs: f64 = secs.parse().map_err(|_| bad("a bad time"))?;
    if bytes != expected {
        return Err(bad(&format!("{bytes} bytes, not {expected}")));
    }
    if secs.is_nan() || secs <= 0.0 {
        return Err(bad("a time that is not positive"));
    }
    Ok(Fetch { bytes, secs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_conf_is_minimal_and_local() {
        let c = nginx_conf(Path::new("/tmp/px"), 41234);
        for want in [
            "worker_processes 1;",
            "daemon off;",
            "access_log off;",
            "listen 127.0.0.1:41234;",
            "pid /tmp/px/nginx.pid;",
            "root /tmp/px/www;",
            "client_body_temp_path /tmp/px/body;",
            "sendfile on;",
        ] {
            assert!(c.contains(want), "{want:?} missing from\n{c}");
        }
        // Every brace closes, and no path outside the directory is named.
        assert_eq!(c.matches('{').count(), c.matches('}').count());
        for line in c
            .lines()
            .filter(|l| l.contains(" /") && !l.starts_with('#'))
        {
            assert!(line.contains("/tmp/px/"), "{line}");
        }
    }

    #[test]
    fn haproxy_cfg_plain_and_splice() {
        let listen: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let up: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let plain = haproxy_cfg(listen, up, 2048, false);
        let splice = haproxy_cfg(listen, up, 2048, true);
        for c in [&plain, &splice] {
            for want in [
                "nbthread 1",
                "maxconn 2048",
                "mode tcp",
                "bind 127.0.0.1:4000",
                "server upstream 127.0.0.1:5000",
                "timeout client",
                "timeout server",
                "timeout connect",
            ] {
                assert!(c.contains(want), "{want:?} missing from\n{c}");
            }
        }
        assert!(!plain.contains("splice"));
        assert!(splice.contains("\n    option splice-auto\n"));
        // The option is in the defaults section, before the proxy that uses it.
        assert!(splice.find("splice-auto") < splice.find("listen proxy"));
    }

    #[test]
    fn parses_curl() {
        let f = parse_curl("200 1073741824 0.912345\n", 1 << 30).unwrap();
        assert_eq!(f.bytes, 1 << 30);
        assert_eq!(f.secs, 0.912345);
        assert!((f.mb_per_s() - 1176.90).abs() < 0.01, "{}", f.mb_per_s());
        // A failed fetch, a short one, a status other than 200, garbage.
        assert!(parse_curl("000 0 0.000239\n", 1 << 30).is_err());
        assert!(parse_curl("200 1000 0.5\n", 1 << 30).is_err());
        assert!(parse_curl("404 153 0.001\n", 153).is_err());
        assert!(parse_curl("200 10 0\n", 10).is_err());
        assert!(parse_curl("", 10).is_err());
        assert!(parse_curl("200 ten 0.1", 10).is_err());
    }
}
