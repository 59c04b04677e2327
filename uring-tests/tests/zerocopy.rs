//! Zero-copy sends (`write_zc`, `write_all_zc`: `IORING_OP_SEND_ZC`) and `send_file`
//! (`IORING_OP_SPLICE` through a pipe): data compared byte for byte at the receiver; a buffer
//! held by a dropped zero-copy send stays out of its pool until the kernel's notification;
//! dropped sends leak nothing (run under valgrind by `.ci/run`); typed errors for a peer that
//! went away; the fallback on Unix-domain sockets.

use std::future::Future;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;
use uring::buf::{FixedBufPool, IoBuf};
use uring::fs::File;
use uring::net::{TcpListener, TcpStream, UnixStream};
use uring::time::{sleep, timeout};
use uring_tests::{open_fds, run_watched, scaled, Rng, TempDir};

const LIMIT: Duration = Duration::from_secs(180);

fn run<T: Send + 'static, F: Future<Output = T> + 'static>(
    make: impl FnOnce() -> F + Send + 'static,
) -> T {
    run_watched(LIMIT, make)
}

const SEND_ZC: u8 = io_uring::opcode::SendZc::CODE;
const SPLICE: u8 = io_uring::opcode::Splice::CODE;

fn has_send_zc() -> bool {
    uring::probe().unwrap().is_supported(SEND_ZC)
}

/// A connected pair: (server side, client side).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = uring::spawn(async move { TcpStream::connect(addr).await.unwrap() });
    let (server, _) = listener.accept().await.unwrap();
    (server, client.await.unwrap())
}

/// A connected pair whose client (the receiver) has a tiny receive buffer, so that what the
/// server sends beyond a few KiB stays queued in the server's send buffer until the client
/// reads: (server, client).
async fn tcp_pair_tiny_window(sndbuf: usize) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // Before connecting, so the advertised window is small from the start.
    s.set_recv_buffer_size(4096).unwrap();
    // A loopback connect to a listening socket completes at once, without an accept.
    s.connect(&addr.into()).unwrap();
    let client = TcpStream::from_std(s.into()).unwrap();
    let (server, _) = listener.accept().await.unwrap();
    socket2::SockRef::from(&server.as_fd())
        .set_send_buffer_size(sndbuf)
        .unwrap();
    (server, client)
}

/// Gives the receiver of a [`tcp_pair_tiny_window`] a normal receive buffer before it drains
/// the connection: with a window below the segment size, TCP's silly-window avoidance leaves
/// the sender waiting for its persist timer (backing off to minutes).
fn open_window(client: &TcpStream) {
    socket2::SockRef::from(&client.as_fd())
        .set_recv_buffer_size(1 << 20)
        .unwrap();
}

/// Reads to end of stream; every byte, in order.
async fn read_all(s: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        buf.clear();
        let (res, b) = s.read(buf).await;
        buf = b;
        match res.unwrap() {
            0 => return out,
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn write_zc_of_64_mib_arrives_byte_for_byte() {
    run(|| async {
        let before = uring::metrics().submitted(SEND_ZC);
        let data = Rc::new(Rng(3).bytes(scaled(64 << 20)));
        let (server, client) = tcp_pair().await;
        let reader = uring::spawn(async move { read_all(&client).await });
        // write_zc with short counts handled by the caller, 1 MiB at a time.
        let chunk = 1 << 20;
        let mut sent = 0;
        let mut buf: Vec<u8> = Vec::with_capacity(chunk);
        while sent < data.len() {
            let end = (sent + chunk).min(data.len());
            buf.clear();
            buf.extend_from_slice(&data[sent..end]);
            let mut off = 0;
            while off < buf.len() {
                let (res, slice) = server.write_zc(buf.slice(off..)).await;
                buf = slice.into_inner();
                let n = res.unwrap();
                assert!(n > 0);
                off += n;
            }
            sent = end;
        }
        server.shutdown_write().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == *data, "the bytes differ");
        if has_send_zc() {
            assert!(uring::metrics().submitted(SEND_ZC) > before, "SEND_ZC ran");
        }
    });
}

#[test]
fn write_all_zc_from_registered_buffers_arrives_byte_for_byte() {
    run(|| async {
        let data = Rc::new(Rng(5).bytes(scaled(64 << 20)));
        let size = 256 * 1024;
        let pool = FixedBufPool::new(2, size).unwrap();
        let (server, client) = tcp_pair().await;
        let reader = uring::spawn(async move { read_all(&client).await });
        for piece in data.chunks(size) {
            let mut buf = pool.next().await;
            buf.extend_from_slice(piece);
            let (res, buf) = server.write_all_zc(buf).await;
            res.unwrap();
            assert_eq!(&buf[..], piece, "the buffer comes back as it was");
        }
        // Four 64 MiB-sized Vec writes too: one SEND_ZC each with MSG_WAITALL.
        server.shutdown_write().await.unwrap();
        let got = reader.await.unwrap();
        assert!(got == *data, "the bytes differ");
        assert_eq!(pool.available(), 2);
    });
}

#[test]
fn a_buffer_stays_out_of_its_pool_until_the_notification() {
    run(|| async {
        if !has_send_zc() {
            eprintln!("no SEND_ZC on this kernel: nothing to hold");
            return;
        }
        // The receiver's window is tiny and it does not read yet: the send's data is taken
        // into the sender's send buffer (the first completion) but cannot leave, so the
        // kernel's notification waits.
        let (server, client) = tcp_pair_tiny_window(200_000).await;
        let size = 64 * 1024;
        let pool = FixedBufPool::new(1, size).unwrap();
        let pattern = Rng(9).bytes(size);
        let mut buf = pool.get().unwrap();
        buf.extend_from_slice(&pattern);
        let completions = uring::metrics().completions();
        let mut send = Box::pin(server.write_zc(buf));
        // Polled until the first completion arrived; the future stays pending (no
        // notification yet).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while uring::metrics().completions() == completions {
            assert!(std::time::Instant::now() < deadline, "no first completion");
            let polled = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
            assert!(
                polled.is_pending(),
                "resolved before the peer read anything"
            );
            sleep(Duration::from_millis(5)).await;
        }
        sleep(Duration::from_millis(100)).await;
        let polled = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
        assert!(polled.is_pending(), "resolved before the notification");
        drop(send);
        assert!(pool.get().is_none(), "the kernel still reads the buffer");
        sleep(Duration::from_millis(200)).await;
        assert!(pool.get().is_none(), "still held: no notification yet");
        // The receiver reads: the data leaves, is acknowledged, the notification arrives.
        open_window(&client);
        server.shutdown_write().await.unwrap();
        let got = read_all(&client).await;
        assert_eq!(got.len(), size, "the dropped send had taken all its bytes");
        assert!(
            got == pattern,
            "the buffer was not touched while the kernel read it"
        );
        let mut buf = timeout(Duration::from_secs(30), pool.next())
            .await
            .expect("the buffer came back after the notification");
        assert!(buf.as_mut_capacity()[..size] == pattern[..]);
    });
}

#[test]
fn a_send_cancelled_midway_keeps_its_buffer_until_the_notification() {
    run(|| async {
        let (server, client) = tcp_pair_tiny_window(64 * 1024).await;
        let size = 1 << 20;
        let pool = FixedBufPool::new(1, size).unwrap();
        let pattern = Rng(13).bytes(size);
        let mut buf = pool.get().unwrap();
        buf.extend_from_slice(&pattern);
        // 1 MiB cannot fit the window and the send buffer: the send waits for room, and the
        // timeout drops (cancels) it after it took part of the buffer.
        let res = timeout(Duration::from_millis(300), server.write_all_zc(buf)).await;
        assert!(res.is_err(), "the send could not finish");
        if has_send_zc() {
            sleep(Duration::from_millis(100)).await;
            assert!(
                pool.get().is_none(),
                "the bytes it took are still queued: the kernel holds the buffer"
            );
        }
        open_window(&client);
        server.shutdown_write().await.unwrap();
        let got = read_all(&client).await;
        assert!(!got.is_empty() && got.len() < size);
        assert!(
            got[..] == pattern[..got.len()],
            "a prefix of the buffer, intact"
        );
        let mut buf = timeout(Duration::from_secs(30), pool.next())
            .await
            .expect("the buffer came back");
        assert!(buf.as_mut_capacity()[..size] == pattern[..]);
    });
}

#[test]
fn zero_copy_sends_dropped_mid_flight_leak_nothing() {
    run(|| async {
        let fds = open_fds();
        let ops = uring::metrics().ops_in_flight();
        let mut rng = Rng(17);
        for round in 0..scaled(40) {
            // A normal window (a tiny one would stall on TCP's silly-window avoidance while
            // the slow reader drains it) and a slow reader.
            let (server, client) = tcp_pair().await;
            let reader = uring::spawn(async move {
                // A slow reader: the sends are dropped at every stage.
                let mut buf = vec![0u8; 16 * 1024];
                let mut total = 0;
                loop {
                    buf.clear();
                    let (res, b) = client.read(buf).await;
                    buf = b;
                    match res {
                        Ok(0) | Err(_) => return total,
                        Ok(n) => total += n,
                    }
                    sleep(Duration::from_millis(1)).await;
                }
            });
            let size = 64 * 1024 * (1 + rng.below(16) as usize);
            let buf = vec![round as u8; size];
            let wait = Duration::from_micros(rng.below(20_000));
            let _ = timeout(wait, async {
                let (res, buf) = server.write_all_zc(buf).await;
                res.unwrap();
                server.write_zc(buf).await.0.unwrap();
            })
            .await;
            drop(server);
            reader.await.unwrap();
        }
        // Every dropped send ends with its notification; give the kernel time to post them.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while uring::metrics().ops_in_flight() > ops || open_fds() > fds {
            assert!(
                std::time::Instant::now() < deadline,
                "ops in flight {} (was {ops}), fds {} (was {fds})",
                uring::metrics().ops_in_flight(),
                open_fds()
            );
            sleep(Duration::from_millis(10)).await;
        }
    });
}

#[test]
fn write_zc_to_a_closed_peer_is_a_typed_error() {
    run(|| async {
        let (server, client) = tcp_pair().await;
        drop(client);
        let mut buf = vec![1u8; 64 * 1024];
        let err = loop {
            let (res, b) = server.write_zc(buf).await;
            buf = b;
            if let Err(e) = res {
                break e;
            }
        };
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{err:?}"
        );
        let (res, _) = server.write_all_zc(buf).await;
        let kind = res.unwrap_err().kind();
        assert!(matches!(
            kind,
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ));
    });
}

#[test]
fn write_zc_on_a_unix_stream_is_a_plain_send() {
    run(|| async {
        let before = uring::metrics().submitted(SEND_ZC);
        let (a, b) = UnixStream::pair().unwrap();
        let data = Rng(21).bytes(scaled(4 << 20));
        let expect = data.clone();
        let reader = uring::spawn(async move {
            let mut buf = vec![0u8; expect.len()];
            buf.clear();
            let (res, buf) = b.read_exact(buf).await;
            res.unwrap();
            assert!(buf == expect);
        });
        let (res, _) = a.write_zc(Vec::new()).await;
        assert_eq!(res.unwrap(), 0);
        let (res, _) = a.write_all_zc(data).await;
        res.unwrap();
        reader.await.unwrap();
        assert_eq!(
            uring::metrics().submitted(SEND_ZC),
            before,
            "no SEND_ZC tried"
        );
    });
}

/// A file of `n` pseudo-random bytes in `dir`, and its bytes.
fn make_file(dir: &TempDir, n: usize, seed: u64) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.path("data");
    let data = Rng(seed).bytes(n);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

#[test]
fn send_file_of_64_mib_arrives_byte_for_byte() {
    run(|| async {
        let dir = TempDir::new("send-file");
        let (path, data) = make_file(&dir, scaled(64 << 20), 23);
        let before = uring::metrics().submitted(SPLICE);
        let file = File::open(&path).await.unwrap();
        let (server, client) = tcp_pair().await;
        let reader = uring::spawn(async move { read_all(&client).await });
        let n = server.send_file(&file, 0, data.len() as u64).await.unwrap();
        assert_eq!(n, data.len() as u64);
        server.shutdown_write().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the bytes differ");
        assert!(uring::metrics().submitted(SPLICE) > before, "SPLICE ran");
    });
}

#[test]
fn send_file_sends_a_range_from_the_middle_and_stops_at_end_of_file() {
    run(|| async {
        let dir = TempDir::new("send-file-range");
        let size = scaled(8 << 20);
        let (path, data) = make_file(&dir, size, 29);
        let file = File::open(&path).await.unwrap();
        let (server, client) = tcp_pair().await;
        let reader = uring::spawn(async move { read_all(&client).await });
        let (off, len) = (size / 3 + 7, size / 3 + 11);
        assert_eq!(
            server
                .send_file(&file, off as u64, len as u64)
                .await
                .unwrap(),
            len as u64
        );
        // Beyond the end: stops at end of file with the count.
        let tail = 1000.min(size);
        let start = (size - tail) as u64;
        assert_eq!(
            server.send_file(&file, start, 1 << 40).await.unwrap(),
            tail as u64
        );
        assert_eq!(
            server.send_file(&file, size as u64 + 5, 100).await.unwrap(),
            0
        );
        assert_eq!(server.send_file(&file, 0, 0).await.unwrap(), 0);
        server.shutdown_write().await.unwrap();
        let got = reader.await.unwrap();
        let mut expect = data[off..off + len].to_vec();
        expect.extend_from_slice(&data[size - tail..]);
        assert!(got == expect, "the bytes differ");
        // The file's position was neither used nor moved.
        let (res, buf) = file.read_at(vec![0u8; 4], 0).await;
        res.unwrap();
        assert_eq!(&buf[..], &data[..4]);
        let err = server.send_file(&file, u64::MAX - 1, 10).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    });
}

#[test]
fn send_file_to_a_closed_peer_is_a_typed_error() {
    run(|| async {
        let dir = TempDir::new("send-file-closed");
        let (path, _) = make_file(&dir, scaled(16 << 20), 31);
        let file = File::open(&path).await.unwrap();
        let (server, client) = tcp_pair().await;
        drop(client);
        let err = loop {
            match server.send_file(&file, 0, 16 << 20).await {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{err:?}"
        );
    });
}

#[test]
fn send_file_dropped_mid_flight_leaks_nothing() {
    run(|| async {
        let dir = TempDir::new("send-file-drop");
        let (path, _) = make_file(&dir, scaled(8 << 20), 37);
        let file = Rc::new(File::open(&path).await.unwrap());
        let fds = open_fds();
        let ops = uring::metrics().ops_in_flight();
        let mut rng = Rng(41);
        for _ in 0..scaled(30) {
            let (server, client) = tcp_pair().await;
            let reader = uring::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    buf.clear();
                    let (res, b) = client.read(buf).await;
                    buf = b;
                    if !matches!(res, Ok(n) if n > 0) {
                        return;
                    }
                    sleep(Duration::from_millis(1)).await;
                }
            });
            let wait = Duration::from_micros(rng.below(20_000));
            let _ = timeout(wait, server.send_file(&file, 0, 8 << 20)).await;
            drop(server);
            reader.await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while uring::metrics().ops_in_flight() > ops || open_fds() > fds {
            assert!(
                std::time::Instant::now() < deadline,
                "ops in flight {} (was {ops}), fds {} (was {fds})",
                uring::metrics().ops_in_flight(),
                open_fds()
            );
            sleep(Duration::from_millis(10)).await;
        }
    });
}

#[test]
fn a_socket_without_zero_copy_falls_back_to_send() {
    run(|| async {
        if !has_send_zc() {
            return;
        }
        // A Unix-domain socket handed over as a TcpStream: the kernel answers SEND_ZC with
        // EOPNOTSUPP, and the same bytes go out by a plain SEND.
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a = TcpStream::from_std(std::os::fd::OwnedFd::from(a).into()).unwrap();
        let zc = uring::metrics().submitted(SEND_ZC);
        let send = uring::metrics().submitted(io_uring::opcode::Send::CODE);
        let data = Rng(43).bytes(100_000);
        let expect = data.clone();
        // The reader is a task on this runtime, not a thread: under valgrind before 3.23 the
        // loop's wait would keep a thread from running (docs/architecture.md, "Threads under
        // valgrind"); this way the test does not depend on the data fitting the socket buffer.
        let b = UnixStream::from_std(b).unwrap();
        let reader = uring::spawn(async move {
            let mut got = Vec::new();
            loop {
                let (res, buf) = b.read(uring_tests::zeroed_empty(64 * 1024)).await;
                if res.unwrap() == 0 {
                    break got;
                }
                got.extend_from_slice(&buf);
            }
        });
        let (res, _) = a.write_all_zc(data).await;
        res.unwrap();
        drop(a);
        assert!(reader.await.unwrap() == expect);
        assert!(
            uring::metrics().submitted(SEND_ZC) > zc,
            "SEND_ZC was tried"
        );
        assert!(
            uring::metrics().submitted(io_uring::opcode::Send::CODE) > send,
            "and SEND sent"
        );
    });
}

#[test]
fn a_runtime_shutting_down_with_a_send_its_peer_never_reads_gives_up_in_time() {
    if uring_tests::under_valgrind() {
        // The drain gives up and leaks the buffer on purpose: a definite leak for valgrind.
        return;
    }
    uring_tests::watchdog(LIMIT, || {
        let rt = uring::Runtime::builder()
            .shutdown_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        // The receiver is a std socket that outlives the runtime and never reads.
        let peer = rt.block_on(async {
            let (server, client) = tcp_pair_tiny_window(200_000).await;
            let client = client.into_std().unwrap();
            uring::spawn(async move {
                let _ = server.write_zc(vec![3u8; 64 * 1024]).await;
            });
            sleep(Duration::from_millis(100)).await;
            client
        });
        let t0 = std::time::Instant::now();
        drop(rt);
        assert!(t0.elapsed() < Duration::from_secs(20), "the drain gave up");
        drop(peer);
    });
}

#[test]
fn send_file_to_a_closed_peer_raises_no_sigpipe_even_with_the_default_action() {
    if uring_tests::is_child("sigpipe") {
        // SAFETY: restores the default action (terminate) for SIGPIPE, which Rust's runtime
        // had set to ignore; this child process exists for that.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        run(|| async {
            let dir = TempDir::new("send-file-sigpipe");
            let (path, _) = make_file(&dir, 4 << 20, 47);
            let file = File::open(&path).await.unwrap();
            let (server, client) = tcp_pair().await;
            drop(client);
            loop {
                if let Err(e) = server.send_file(&file, 0, 4 << 20).await {
                    println!("typed error: {:?}", e.kind());
                    break;
                }
            }
            // A zero-copy send and a plain one pass MSG_NOSIGNAL.
            let (res, _) = server.write_zc(vec![0u8; 4096]).await;
            assert!(res.is_err());
        });
        println!("child survived");
        return;
    }
    let out = uring_tests::run_child(
        "send_file_to_a_closed_peer_raises_no_sigpipe_even_with_the_default_action",
        "sigpipe",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child survived"),
        "status {:?}, stdout {stdout}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
