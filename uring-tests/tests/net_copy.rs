//! Moving bytes between streams: `write_all` over short writes, `copy`, and half-close passed
//! through a `copy_bidirectional` proxy in both directions.

use std::cell::RefCell;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};
use uring::buf::IoBuf;
use uring::io::{AsyncReadOwned, AsyncWriteOwned};
use uring::net::{TcpListener, TcpStream};
use uring::BufResult;
use uring_tests::net::{pattern, tcp_pair, VecWriter, LIMIT};
use uring_tests::watchdog;

/// A writer that takes at most `chunk` bytes per write (0: takes nothing).
struct Trickle {
    chunk: usize,
    taken: RefCell<Vec<u8>>,
    writes: std::cell::Cell<usize>,
}

impl AsyncWriteOwned for Trickle {
    async fn write<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        self.writes.set(self.writes.get() + 1);
        // SAFETY: the IoBuf contract: `bytes_init()` bytes at `stable_ptr()` are initialized.
        let bytes = unsafe { std::slice::from_raw_parts(buf.stable_ptr(), buf.bytes_init()) };
        let n = bytes.len().min(self.chunk);
        self.taken.borrow_mut().extend_from_slice(&bytes[..n]);
        (Ok(n), buf)
    }

    async fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_all_loops_on_short_writes_and_fails_on_zero() {
    uring::run(async {
        let t = Trickle {
            chunk: 3,
            taken: RefCell::new(Vec::new()),
            writes: Default::default(),
        };
        let (res, buf) = t.write_all(b"0123456789".to_vec()).await;
        res.unwrap();
        assert_eq!(buf, b"0123456789");
        assert_eq!(&*t.taken.borrow(), b"0123456789");
        assert_eq!(t.writes.get(), 4);

        let zero = Trickle {
            chunk: 0,
            taken: RefCell::new(Vec::new()),
            writes: Default::default(),
        };
        let (res, _) = zero.write_all(b"x".to_vec()).await;
        assert_eq!(res.unwrap_err().kind(), io::ErrorKind::WriteZero);
        assert_eq!(zero.writes.get(), 1, "no retry loop on a zero write");
    });
}

/// Each proxied connection's outcome: bytes copied each way, or the error.
type ProxyResults = Rc<RefCell<Vec<io::Result<(u64, u64)>>>>;

/// A minimal proxy built on copy_bidirectional, as examples/proxy.rs does.
fn spawn_proxy(front: TcpListener, upstream: SocketAddr) -> ProxyResults {
    let results = Rc::new(RefCell::new(Vec::new()));
    let out = results.clone();
    uring::spawn(async move {
        let mut incoming = front.incoming();
        while let Some(c) = incoming.next().await {
            let client = c.unwrap();
            let out = out.clone();
            uring::spawn(async move {
                let server = TcpStream::connect(upstream).await.unwrap();
                let r = uring::io::copy_bidirectional(&client, &server).await;
                out.borrow_mut().push(r);
            });
        }
    });
    results
}

#[test]
fn half_close_passes_through_proxy_both_ways() {
    watchdog(LIMIT, || {
        uring::run(async {
            let origin = TcpListener::bind("127.0.0.1:0").unwrap();
            let front = TcpListener::bind("127.0.0.1:0").unwrap();
            let front_addr = front.local_addr().unwrap();
            let results = spawn_proxy(front, origin.local_addr().unwrap());

            // 1. The client half-closes first: the origin reads to EOF, then answers.
            let client = TcpStream::connect(front_addr).await.unwrap();
            let (up, _) = origin.accept().await.unwrap();
            let (res, _) = client.write_all(pattern(100_000, 1)).await;
            res.unwrap();
            client.shutdown(Shutdown::Write).await.unwrap();
            let mut got = Vec::new();
            uring::io::copy(&up, &VecWriter(RefCell::new(&mut got)))
                .await
                .unwrap();
            assert!(got == pattern(100_000, 1), "origin saw all bytes, then EOF");
            let (res, _) = up.write_all(b"answer after EOF".to_vec()).await;
            res.unwrap();
            drop(up);
            let mut reply = Vec::new();
            uring::io::copy(&client, &VecWriter(RefCell::new(&mut reply)))
                .await
                .unwrap();
            assert_eq!(reply, b"answer after EOF");

            // 2. The origin half-closes first: the client sees EOF and can still send.
            let client = TcpStream::connect(front_addr).await.unwrap();
            let (up, _) = origin.accept().await.unwrap();
            let (res, _) = up.write_all(b"banner".to_vec()).await;
            res.unwrap();
            up.shutdown(Shutdown::Write).await.unwrap();
            let mut banner = Vec::new();
            uring::io::copy(&client, &VecWriter(RefCell::new(&mut banner)))
                .await
                .unwrap();
            assert_eq!(banner, b"banner");
            let (res, _) = client.write_all(b"still talking".to_vec()).await;
            res.unwrap();
            let (res, got) = up.read_exact(Vec::with_capacity(13)).await;
            res.unwrap();
            assert_eq!(got, b"still talking");
            client.shutdown(Shutdown::Write).await.unwrap();
            let (res, _) = up.read(Vec::with_capacity(1)).await;
            assert_eq!(res.unwrap(), 0);
            drop(up);

            let deadline = Instant::now() + Duration::from_secs(30);
            while results.borrow().len() < 2 {
                assert!(
                    Instant::now() < deadline,
                    "proxy connections never finished"
                );
                uring::time::sleep(Duration::from_millis(5)).await;
            }
            let r = results.borrow();
            assert_eq!(*r[0].as_ref().unwrap(), (100_000, 16));
            assert_eq!(*r[1].as_ref().unwrap(), (13, 6));
        });
    });
}

#[test]
fn copy_moves_everything_and_counts() {
    watchdog(LIMIT, || {
        uring::run(async {
            let (a, a_peer) = tcp_pair().await;
            let (b, b_peer) = tcp_pair().await;
            // a_peer -> a ==copy==> b -> b_peer
            let writer = uring::spawn(async move {
                let (res, _) = a_peer.write_all(pattern(3 << 20, 4)).await;
                res.unwrap();
                a_peer.shutdown(Shutdown::Write).await.unwrap();
                a_peer
            });
            let n = uring::io::copy(&a, &b).await.unwrap();
            assert_eq!(n, 3 << 20);
            b.shutdown_write().await.unwrap();
            let mut got = Vec::new();
            uring::io::copy(&b_peer, &VecWriter(RefCell::new(&mut got)))
                .await
                .unwrap();
            assert!(got == pattern(3 << 20, 4));
            drop(writer.await.unwrap());
            // AsyncReadOwned::read_exact on a stream through the trait.
            let (x, y) = tcp_pair().await;
            let (res, _) = x.write_all(b"trait".to_vec()).await;
            res.unwrap();
            let (res, got) = AsyncReadOwned::read_exact(&y, Vec::with_capacity(5)).await;
            res.unwrap();
            assert_eq!(got, b"trait");
        });
    });
}
