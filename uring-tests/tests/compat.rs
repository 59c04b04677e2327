//! `uring::compat::Compat`: tokio's, the futures crate's and hyper's I/O traits over `uring`
//! streams, with their guarantees: reads kept in flight inside the adapter lose nothing,
//! write-behind with errors on the next call, an end of stream held back until writes are out,
//! buffered bytes given back on `into_inner`.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;
use uring::compat::{Compat, HyperExecutor, HyperTimer};
use uring::net::{TcpListener, TcpStream, UnixStream};
use uring_tests::Rng;

const LIMIT: Duration = Duration::from_secs(120);

fn run<T: Send + 'static, F: Future<Output = T>>(make: impl FnOnce() -> F + Send + 'static) -> T {
    uring_tests::run_watched(LIMIT, make)
}

#[test]
fn tokio_traits_move_megabytes_both_ways_intact() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    run(|| async {
        let (a, b) = UnixStream::pair().unwrap();
        // Reads and writes at once on one adapter each (tokio's split shares it).
        let (mut ar, mut aw) = tokio::io::split(Compat::new(a));
        let (mut br, mut bw) = tokio::io::split(Compat::new(b));
        let n = uring_tests::scaled(8 << 20);
        let data = Rng(3).bytes(n);
        let back = Rng(4).bytes(n);
        let (d, bk) = (data.clone(), back.clone());
        let peer = uring::spawn(async move {
            let mut got = vec![0u8; n];
            // Reads and writes interleaved on one adapter: write-behind must not stall reads.
            let (r, w) = tokio::join!(br.read_exact(&mut got), async {
                bw.write_all(&bk).await?;
                bw.flush().await
            });
            r.unwrap();
            w.unwrap();
            got
        });
        let mut got = vec![0u8; n];
        let (r, w) = tokio::join!(ar.read_exact(&mut got), async {
            // Odd-sized writes, to cross buffer boundaries.
            for chunk in d.chunks(7_777) {
                aw.write_all(chunk).await?;
            }
            aw.flush().await
        });
        r.unwrap();
        w.unwrap();
        assert!(got == back, "a got what b sent");
        assert!(peer.await.unwrap() == data, "b got what a sent");
    });
}

/// A read future that is polled once (its read goes in flight inside the adapter) and then
/// dropped, again and again, with another buffer each time: every byte still arrives in order.
#[test]
fn reads_dropped_after_one_poll_and_switched_buffers_lose_nothing() {
    use tokio::io::AsyncReadExt;
    run(|| async {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = Compat::new(a);
        let n = uring_tests::scaled(1 << 20);
        let data = Rng(9).bytes(n);
        let d = data.clone();
        let writer = uring::spawn(async move {
            let mut rng = Rng(10);
            let mut off = 0;
            while off < d.len() {
                let len = (rng.below(5000) as usize + 1).min(d.len() - off);
                b.write_all(d[off..off + len].to_vec()).await.0.unwrap();
                off += len;
                uring::yield_now().await;
            }
        });
        let mut got = Vec::with_capacity(n);
        let mut rng = Rng(11);
        while got.len() < n {
            let mut buf = vec![0u8; rng.below(3000) as usize + 1];
            let mut read = Box::pin(a.read(&mut buf));
            match uring_tests::poll_once(&mut read).await {
                Poll::Ready(r) => {
                    let k = r.unwrap();
                    drop(read);
                    got.extend_from_slice(&buf[..k]);
                }
                // Dropped while pending: the adapter keeps the read in flight.
                Poll::Pending => drop(read),
            }
            if rng.below(3) == 0 {
                uring::yield_now().await;
            }
        }
        writer.await.unwrap();
        assert!(got == data, "every byte, in order");
    });
}

#[test]
fn a_failed_send_comes_back_from_the_next_call() {
    use tokio::io::AsyncWriteExt;
    run(|| async {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = Compat::new(a);
        drop(b);
        // Accepted (write-behind), then the send fails: the next call reports it.
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = a.write_all(&[1u8; 1000]).await {
                err = Some(e);
                break;
            }
            if let Err(e) = a.flush().await {
                err = Some(e);
                break;
            }
        }
        let e = err.expect("the peer is gone: a write or flush fails");
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    });
}

/// The client sends a request and hangs up at once; the server's answer goes out before the
/// server's read reports the end of stream.
#[test]
fn an_end_of_stream_is_held_back_until_the_writes_are_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    run(|| async {
        let (a, b) = UnixStream::pair().unwrap();
        let mut server = Compat::new(a);
        let client = uring::spawn(async move {
            b.write_all(b"ask".to_vec()).await.0.unwrap();
            b.shutdown_write().await.unwrap();
            let mut answer = Vec::new();
            loop {
                let (res, buf) = b.read(Vec::with_capacity(1 << 16)).await;
                if res.unwrap() == 0 {
                    break;
                }
                answer.extend_from_slice(&buf);
            }
            answer
        });
        let mut ask = [0u8; 3];
        server.read_exact(&mut ask).await.unwrap();
        let answer = vec![7u8; 300_000];
        server.write_all(&answer).await.unwrap();
        // No flush: the read below must not report the end before the answer is out.
        let mut rest = Vec::new();
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
        server.shutdown().await.unwrap();
        assert_eq!(client.await.unwrap().len(), answer.len());
    });
}

#[test]
fn into_inner_gives_buffered_bytes_back_to_the_stream() {
    use tokio::io::AsyncBufReadExt;
    run(|| async {
        let (a, b) = UnixStream::pair().unwrap();
        b.write_all(b"first line\nthe rest".to_vec())
            .await
            .0
            .unwrap();
        let mut a = Compat::new(a);
        let mut line = String::new();
        a.read_line(&mut line).await.unwrap();
        assert_eq!(line, "first line\n");
        let a = a.into_inner();
        let (res, buf) = a.read_exact(Vec::with_capacity(8)).await;
        res.unwrap();
        assert_eq!(buf, b"the rest", "the adapter's buffered bytes come first");
    });
}

#[test]
fn halves_get_the_traits_of_their_side() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    run(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = uring::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (server, _) = listener.accept().await.unwrap();
        let (r, w) = client.await.unwrap().into_split();
        let (mut r, mut w) = (Compat::new(r), Compat::new(w));
        let server = uring::spawn(async move {
            let mut s = Compat::new(server);
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            s.flush().await.unwrap();
        });
        w.write_all(b"halve").await.unwrap();
        w.flush().await.unwrap();
        let mut back = [0u8; 5];
        r.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"halve");
        server.await.unwrap();
    });
}

#[test]
fn futures_io_traits_and_incoming_as_a_stream() {
    use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use futures_util::StreamExt;
    run(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let clients = uring::spawn(async move {
            for i in 0..3u8 {
                let mut c = Compat::new(TcpStream::connect(addr).await.unwrap());
                c.write_all(&[i; 4]).await.unwrap();
                c.close().await.unwrap();
            }
        });
        let mut got = Vec::new();
        let mut incoming = listener.incoming().take(3);
        while let Some(s) = incoming.next().await {
            let mut s = Compat::new(s.unwrap());
            let mut v = Vec::new();
            s.read_to_end(&mut v).await.unwrap();
            got.push(v);
        }
        clients.await.unwrap();
        assert_eq!(got, [vec![0u8; 4], vec![1; 4], vec![2; 4]]);
    });
}

#[test]
fn tokio_util_framed_lines_over_compat() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_util::codec::{Framed, LinesCodec};
    run(|| async {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = Framed::new(Compat::new(a), LinesCodec::new());
        let mut b = Framed::new(Compat::new(b), LinesCodec::new());
        let echo = uring::spawn(async move {
            while let Some(line) = b.next().await {
                let line = line.unwrap();
                b.send(line.to_uppercase()).await.unwrap();
            }
        });
        for word in ["alpha", "beta", "gamma"] {
            a.send(word).await.unwrap();
            assert_eq!(a.next().await.unwrap().unwrap(), word.to_uppercase());
        }
        drop(a);
        echo.await.unwrap();
    });
}

#[test]
fn hyper_http1_server_and_client_over_compat() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    run(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = uring::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let body = req.into_body().collect().await?.to_bytes();
                let reply = format!("got {} bytes", body.len());
                Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(reply))))
            });
            hyper::server::conn::http1::Builder::new()
                .timer(HyperTimer)
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(Compat::new(s), service)
                .await
                .unwrap();
        });
        let stream = Compat::new(TcpStream::connect(addr).await.unwrap());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(stream).await.unwrap();
        uring::spawn(conn);
        for size in [0usize, 10, 100_000] {
            let req = hyper::Request::post("/")
                .body(Full::new(Bytes::from(vec![b'x'; size])))
                .unwrap();
            let res = sender.send_request(req).await.unwrap();
            assert_eq!(res.status(), 200);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("got {size} bytes"));
        }
        drop(sender);
        server.await.unwrap();
    });
}

#[test]
fn hyper_http2_with_the_executor_and_timer() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    run(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = uring::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            // A !Send service: the executor runs streams on this thread.
            let hits = std::rc::Rc::new(std::cell::Cell::new(0));
            let service = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                let hits = hits.clone();
                async move {
                    hits.set(hits.get() + 1);
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(format!(
                        "hit {}",
                        hits.get()
                    )))))
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(HyperExecutor)
                .timer(HyperTimer)
                .serve_connection(Compat::new(s), service)
                .await;
        });
        let stream = Compat::new(TcpStream::connect(addr).await.unwrap());
        let (sender, conn) = hyper::client::conn::http2::Builder::new(HyperExecutor)
            .timer(HyperTimer)
            .handshake(stream)
            .await
            .unwrap();
        uring::spawn(conn);
        // Many concurrent streams on one connection.
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let mut sender = sender.clone();
            tasks.push(uring::spawn(async move {
                let req = hyper::Request::get("/")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let res = sender.send_request(req).await.unwrap();
                assert_eq!(res.status(), 200);
                res.into_body().collect().await.unwrap().to_bytes()
            }));
        }
        let mut bodies = Vec::new();
        for t in tasks {
            bodies.push(t.await.unwrap());
        }
        assert_eq!(bodies.len(), 50);
        assert!(bodies.iter().all(|b| b.starts_with(b"hit ")));
        drop(sender);
        server.await.unwrap();
    });
}

/// A hyper timer's sleep, which hyper wants `Send + Sync`, works as a uring sleep.
#[test]
fn hyper_timer_sleeps_and_resets() {
    use hyper::rt::Timer;
    run(|| async {
        let start = std::time::Instant::now();
        HyperTimer.sleep(Duration::from_millis(20)).await;
        assert!(start.elapsed() >= Duration::from_millis(20));
        let mut s = HyperTimer.sleep(Duration::from_secs(3600));
        HyperTimer.reset(&mut s, std::time::Instant::now() + Duration::from_millis(5));
        s.await;
        fn send_sync<T: Send + Sync>(_: &T) {}
        send_sync(&HyperTimer.sleep(Duration::ZERO));
    });
}
