//! Networking against the real kernel: TCP, UDP and Unix sockets, hostile peers, fd exhaustion,
//! 10,000 connections on one thread, half-close through a proxy.

use socket2::{Domain, Socket, Type};
use std::cell::RefCell;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};
use uring::buf::IoBuf;
use uring::io::{AsyncReadOwned, AsyncWriteOwned};
use uring::net::{
    AcceptBackoff, TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener, UnixStream,
};
use uring::BufResult;
use uring_tests::{is_child, run_child, watchdog};

const LIMIT: Duration = Duration::from_secs(120);

/// A fresh directory for Unix socket paths, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("uring-net-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A connected pair: (client, server side).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = uring::spawn(async move { TcpStream::connect(addr).await.unwrap() });
    let (server, peer) = listener.accept().await.unwrap();
    let client = client.await.unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(server.local_addr().unwrap(), addr);
    (client, server)
}

/// Serves echo on every connection; records each connection's outcome (bytes echoed or error).
fn spawn_echo_server(listener: TcpListener) -> Rc<RefCell<Vec<io::Result<u64>>>> {
    let outcomes = Rc::new(RefCell::new(Vec::new()));
    let out = outcomes.clone();
    uring::spawn(async move {
        let mut incoming = listener.incoming();
        while let Some(s) = incoming.next().await {
            let s = s.unwrap();
            let out = out.clone();
            uring::spawn(async move {
                let r = echo(&s).await;
                out.borrow_mut().push(r);
            });
        }
    });
    outcomes
}

async fn echo(s: &TcpStream) -> io::Result<u64> {
    let mut total = 0;
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        let (res, b) = s.read(buf).await;
        let n = res?;
        if n == 0 {
            return Ok(total);
        }
        let (res, b) = s.write_all(b).await;
        res?;
        total += n as u64;
        buf = b;
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Sends `data` and reads the same length back, asserting it is echoed in order.
async fn round_trip(s: &TcpStream, data: Vec<u8>) {
    let len = data.len();
    let (res, data) = s.write_all(data).await;
    res.unwrap();
    let (res, back) = s.read_exact(Vec::with_capacity(len)).await;
    res.unwrap();
    assert!(back == data, "echo differs");
}

#[test]
fn tcp_read_write_vectored_and_addresses() {
    watchdog(LIMIT, || {
        uring::run(async {
            let (client, server) = tcp_pair().await;
            client.set_nodelay(true).unwrap();
            assert!(client.nodelay().unwrap());
            assert_eq!(client.peer_addr().unwrap(), server.local_addr().unwrap());
            assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());

            let (res, buf) = client.write(b"hello".to_vec()).await;
            assert_eq!(res.unwrap(), 5);
            assert_eq!(buf, b"hello", "the buffer comes back");
            let (res, got) = server.read(Vec::with_capacity(64)).await;
            assert_eq!(res.unwrap(), 5);
            assert_eq!(got, b"hello");

            let bufs = vec![b"ab".to_vec(), b"".to_vec(), b"cdef".to_vec()];
            let (res, _) = client.writev(bufs).await;
            assert_eq!(res.unwrap(), 6);
            let (res, bufs) = server
                .readv(vec![Vec::with_capacity(3), Vec::with_capacity(10)])
                .await;
            let n = res.unwrap();
            assert_eq!(n, 6);
            assert_eq!(bufs[0], b"abc");
            assert_eq!(bufs[1], b"def");

            // write_all with a large buffer exercises short writes under socket buffer pressure.
            let big = pattern(8 << 20, 7);
            let reader = uring::spawn(async move {
                let (res, got) = server.read_exact(Vec::with_capacity(8 << 20)).await;
                res.unwrap();
                got
            });
            let (res, big) = client.write_all(big).await;
            res.unwrap();
            assert!(reader.await.unwrap() == big);

            // A slice of a buffer sends just that range.
            let (res, _) = client.write_all(b"0123456789".to_vec().slice(3..6)).await;
            res.unwrap();
        });
    });
}

#[test]
fn connect_to_closed_port_is_refused() {
    watchdog(LIMIT, || {
        uring::run(async {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            let e = TcpStream::connect(port).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        });
    });
}

#[test]
fn bind_to_used_address_is_addr_in_use() {
    watchdog(LIMIT, || {
        uring::run(async {
            let a = TcpListener::bind("127.0.0.1:0").unwrap();
            let e = TcpListener::bind(a.local_addr().unwrap()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");

            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            let e = UdpSocket::bind(u.local_addr().unwrap()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");

            let dir = TempDir::new("inuse");
            let path = dir.0.join("s");
            let _l = UnixListener::bind(&path).unwrap();
            let e = UnixListener::bind(&path).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        });
    });
}

#[test]
fn from_socket_with_reuseport_and_from_std() {
    watchdog(LIMIT, || {
        uring::run(async {
            let make = |addr: SocketAddr| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                s.set_reuse_port(true).unwrap();
                s.bind(&addr.into()).unwrap();
                TcpListener::from_socket(s).unwrap()
            };
            let first = make("127.0.0.1:0".parse().unwrap());
            let addr = first.local_addr().unwrap();
            // SO_REUSEPORT lets a second listener share the port.
            let second = make(addr);
            assert_eq!(second.local_addr().unwrap(), addr);

            let udp = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
            let e = TcpListener::from_socket(udp).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);

            // from_std on a nonblocking std listener still accepts through the ring.
            let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            std_l.set_nonblocking(true).unwrap();
            let l = TcpListener::from_std(std_l).unwrap();
            let addr = l.local_addr().unwrap();
            let client = std::net::TcpStream::connect(addr).unwrap();
            let (s, _) = l.accept().await.unwrap();
            let client = TcpStream::from_std(client).unwrap();
            round_trip_pair(&client, &s).await;
            // into_std gives a working blocking std stream.
            let mut std_s = s.into_std().unwrap();
            use std::io::{Read, Write};
            std_s.write_all(b"std").unwrap();
            let (res, got) = client.read_exact(Vec::with_capacity(3)).await;
            res.unwrap();
            assert_eq!(got, b"std");
            let (res, _) = client.write_all(b"back".to_vec()).await;
            res.unwrap();
            let mut four = [0u8; 4];
            std_s.read_exact(&mut four).unwrap();
            assert_eq!(&four, b"back");
        });
    });
}

async fn round_trip_pair(a: &TcpStream, b: &TcpStream) {
    let (res, _) = a.write_all(b"ping".to_vec()).await;
    res.unwrap();
    let (res, got) = b.read_exact(Vec::with_capacity(4)).await;
    res.unwrap();
    assert_eq!(got, b"ping");
}

#[test]
fn read_exact_at_early_eof_is_unexpected_eof() {
    watchdog(LIMIT, || {
        uring::run(async {
            let (client, server) = tcp_pair().await;
            let (res, _) = client.write_all(b"abc".to_vec()).await;
            res.unwrap();
            client.shutdown(Shutdown::Write).await.unwrap();
            let (res, got) = server.read_exact(Vec::with_capacity(10)).await;
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(got, b"abc", "what arrived is kept");
            // The other direction still works after the half-close.
            let (res, _) = server.write_all(b"ok".to_vec()).await;
            res.unwrap();
            let (res, got) = client.read_exact(Vec::with_capacity(2)).await;
            res.unwrap();
            assert_eq!(got, b"ok");
        });
    });
}

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

/// Sets SO_LINGER 0 and closes: the kernel sends RST instead of FIN.
fn reset(s: TcpStream) {
    let std_s = s.into_std().unwrap();
    socket2::SockRef::from(&std_s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(std_s);
}

#[test]
fn peer_reset_mid_read_fails_that_connection_only() {
    watchdog(LIMIT, || {
        uring::run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let outcomes = spawn_echo_server(listener);

            let healthy = TcpStream::connect(addr).await.unwrap();
            round_trip(&healthy, pattern(1000, 1)).await;

            // The hostile peer sends a little, then resets while the server waits in read.
            let hostile = TcpStream::connect(addr).await.unwrap();
            round_trip(&hostile, pattern(10, 2)).await;
            uring::time::sleep(Duration::from_millis(20)).await;
            reset(hostile);

            let deadline = Instant::now() + Duration::from_secs(30);
            while outcomes.borrow().is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "the reset never reached the server"
                );
                uring::time::sleep(Duration::from_millis(5)).await;
            }
            {
                let out = outcomes.borrow();
                assert_eq!(out.len(), 1);
                let e = out[0].as_ref().unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
            }
            // The server keeps serving the other connection and new ones.
            round_trip(&healthy, pattern(5000, 3)).await;
            let fresh = TcpStream::connect(addr).await.unwrap();
            round_trip(&fresh, pattern(100, 4)).await;
        });
    });
}

#[test]
fn peer_reset_mid_write_fails_that_connection_only() {
    watchdog(LIMIT, || {
        uring::run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // Server: floods each connection with data until the write fails; then keeps
            // answering the "healthy" connection with echo.
            let outcome: Rc<RefCell<Option<io::Error>>> = Rc::new(RefCell::new(None));
            let out = outcome.clone();
            let writing = Rc::new(std::cell::Cell::new(false));
            let writing2 = writing.clone();
            uring::spawn(async move {
                let mut incoming = listener.incoming();
                // First connection: the flood target.
                let flood = incoming.next().await.unwrap().unwrap();
                uring::spawn(async move {
                    let chunk = vec![0x5a; 256 * 1024];
                    let mut buf = chunk;
                    loop {
                        writing2.set(true);
                        let (res, b) = flood.write_all(buf).await;
                        buf = b;
                        if let Err(e) = res {
                            *out.borrow_mut() = Some(e);
                            return;
                        }
                    }
                });
                while let Some(s) = incoming.next().await {
                    let s = s.unwrap();
                    uring::spawn(async move {
                        let _ = echo(&s).await;
                    });
                }
            });
            let victim = TcpStream::connect(addr).await.unwrap();
            let healthy = TcpStream::connect(addr).await.unwrap();
            // Let the flood fill the socket buffers so the server sits in a write.
            while !writing.get() {
                uring::time::sleep(Duration::from_millis(5)).await;
            }
            let (res, _) = victim.read_exact(Vec::with_capacity(64 * 1024)).await;
            res.unwrap();
            uring::time::sleep(Duration::from_millis(50)).await;
            reset(victim);
            let deadline = Instant::now() + Duration::from_secs(30);
            while outcome.borrow().is_none() {
                assert!(Instant::now() < deadline, "the server's write never failed");
                uring::time::sleep(Duration::from_millis(5)).await;
            }
            let kind = outcome.borrow().as_ref().unwrap().kind();
            assert!(
                matches!(
                    kind,
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                "write to a reset peer: {kind:?}"
            );
            round_trip(&healthy, pattern(3000, 9)).await;
        });
    });
}

#[test]
fn dropped_accept_loses_no_connection() {
    watchdog(LIMIT, || {
        uring::run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            for _ in 0..20 {
                let r = uring::time::timeout(Duration::from_millis(1), listener.accept()).await;
                assert!(r.is_err(), "nobody connected yet");
            }
            let client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            round_trip_pair(&client, &server).await;
        });
    });
}

#[test]
fn dropped_incoming_closes_connections_it_accepted() {
    watchdog(LIMIT, || {
        uring::run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut incoming = listener.incoming();
            let first = uring::spawn(async move { TcpStream::connect(addr).await.unwrap() });
            let taken = incoming.next().await.unwrap().unwrap();
            let first = first.await.unwrap();
            let mut others = Vec::new();
            for _ in 0..3 {
                others.push(TcpStream::connect(addr).await.unwrap());
            }
            // The multishot accept takes them in the kernel; give it a moment, then drop the
            // stream with them unclaimed.
            uring::time::sleep(Duration::from_millis(50)).await;
            drop(incoming);
            for c in &others {
                let (res, _) = c.read(Vec::with_capacity(8)).await;
                match res {
                    Ok(0) => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                    other => panic!("an unclaimed connection must be closed, got {other:?}"),
                }
            }
            round_trip_pair(&first, &taken).await;
        });
    });
}

#[test]
fn dropping_a_stream_closes_it_even_with_a_cancelled_read() {
    watchdog(LIMIT, || {
        uring::run(async {
            let (client, server) = tcp_pair().await;
            let server = Rc::new(server);
            let reader = {
                let server = server.clone();
                uring::spawn(async move { server.read(Vec::with_capacity(8)).await.0 })
            };
            uring::time::sleep(Duration::from_millis(10)).await;
            reader.abort();
            assert!(reader.await.unwrap_err().is_cancelled());
            drop(server);
            let (res, _) = client.read(Vec::with_capacity(8)).await;
            assert_eq!(res.unwrap(), 0, "the peer sees end of stream");
        });
    });
}

#[test]
fn split_halves_work_from_two_tasks_at_once() {
    watchdog(LIMIT, || {
        uring::run(async {
            let (client, server) = tcp_pair().await;
            const LEN: usize = 4 << 20;
            let (sr, sw) = server.into_split();
            let (cr, cw) = client.into_split();
            // All four directions run concurrently: each side writes LEN bytes while reading
            // the other side's LEN bytes, so neither can finish its write without the reads.
            let tasks = vec![
                uring::spawn(async move {
                    let (res, _) = sw.write_all(pattern(LEN, 1)).await;
                    res.unwrap();
                    sw.shutdown().await.unwrap();
                    Vec::new()
                }),
                uring::spawn(async move {
                    let (res, _) = cw.write_all(pattern(LEN, 2)).await;
                    res.unwrap();
                    cw.shutdown().await.unwrap();
                    Vec::new()
                }),
                uring::spawn(async move {
                    let mut all = Vec::new();
                    uring::io::copy(&sr, &VecWriter(RefCell::new(&mut all)))
                        .await
                        .unwrap();
                    all
                }),
                uring::spawn(async move {
                    let mut all = Vec::new();
                    uring::io::copy(&cr, &VecWriter(RefCell::new(&mut all)))
                        .await
                        .unwrap();
                    all
                }),
            ];
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await.unwrap());
            }
            assert!(
                results[2] == pattern(LEN, 2),
                "server read what the client wrote"
            );
            assert!(
                results[3] == pattern(LEN, 1),
                "client read what the server wrote"
            );
        });
    });
}

/// Collects what is written into a Vec.
struct VecWriter<'a>(RefCell<&'a mut Vec<u8>>);

impl AsyncWriteOwned for VecWriter<'_> {
    async fn write<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        // SAFETY: the IoBuf contract: `bytes_init()` bytes at `stable_ptr()` are initialized.
        let bytes = unsafe { std::slice::from_raw_parts(buf.stable_ptr(), buf.bytes_init()) };
        self.0.borrow_mut().extend_from_slice(bytes);
        (Ok(bytes.len()), buf)
    }

    async fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn split_halves_reunite() {
    watchdog(LIMIT, || {
        uring::run(async {
            let (a, _a_peer) = tcp_pair().await;
            let (b, _b_peer) = tcp_pair().await;
            let (ar, aw) = a.into_split();
            let (br, bw) = b.into_split();
            let (ar, bw) = ar.reunite(bw).unwrap_err();
            assert!(ar.reunite(aw).is_ok());
            assert!(br.reunite(bw).is_ok());
        });
    });
}

#[test]
fn udp_send_to_recv_from_and_connected() {
    watchdog(LIMIT, || {
        uring::run(async {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());

            let (res, _) = a.send_to(pattern(1200, 5), b_addr).await;
            assert_eq!(res.unwrap(), 1200);
            let (res, got) = b.recv_from(Vec::with_capacity(2000)).await;
            let (n, from) = res.unwrap();
            assert_eq!((n, from), (1200, a_addr));
            assert!(got == pattern(1200, 5));

            // A datagram longer than the buffer is truncated to the buffer.
            let (res, _) = b.send_to(pattern(100, 6), a_addr).await;
            res.unwrap();
            let (res, got) = a.recv_from(Vec::with_capacity(10)).await;
            assert_eq!(res.unwrap(), (10, b_addr));
            assert_eq!(got, pattern(100, 6)[..10]);

            // Connected: send/recv without addresses.
            a.connect(b_addr).await.unwrap();
            b.connect(a_addr).await.unwrap();
            assert_eq!(a.peer_addr().unwrap(), b_addr);
            for i in 0..10u8 {
                let (res, _) = a.send(vec![i; 64]).await;
                assert_eq!(res.unwrap(), 64);
            }
            for i in 0..10u8 {
                let (res, got) = b.recv(Vec::with_capacity(64)).await;
                assert_eq!(res.unwrap(), 64);
                assert_eq!(got, vec![i; 64], "datagrams in order on loopback");
            }
            // An unconnected socket cannot `send`.
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            let (res, _) = c.send(b"x".to_vec()).await;
            assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EDESTADDRREQ));

            // IPv6 loopback, where the machine has it.
            if let Ok(v6) = UdpSocket::bind("[::1]:0") {
                let v6b = UdpSocket::bind("[::1]:0").unwrap();
                let (res, _) = v6.send_to(b"six".to_vec(), v6b.local_addr().unwrap()).await;
                res.unwrap();
                let (res, got) = v6b.recv_from(Vec::with_capacity(8)).await;
                assert_eq!(res.unwrap(), (3, v6.local_addr().unwrap()));
                assert_eq!(got, b"six");
            }
        });
    });
}

#[test]
fn unix_stream_listener_round_trip() {
    watchdog(LIMIT, || {
        uring::run(async {
            let dir = TempDir::new("stream");
            let path = dir.0.join("sock");
            let listener = UnixListener::bind(&path).unwrap();
            assert_eq!(
                listener.local_addr().unwrap().as_pathname(),
                Some(path.as_path())
            );
            let p = path.clone();
            let clients = uring::spawn(async move {
                let mut v = Vec::new();
                for _ in 0..3 {
                    v.push(UnixStream::connect(&p).await.unwrap());
                }
                v
            });
            let (first, peer) = listener.accept().await.unwrap();
            assert!(peer.is_unnamed());
            let mut incoming = listener.incoming();
            let second = incoming.next().await.unwrap().unwrap();
            let third = incoming.next().await.unwrap().unwrap();
            let clients = clients.await.unwrap();
            assert_eq!(
                clients[0].peer_addr().unwrap().as_pathname(),
                Some(path.as_path())
            );
            for (c, s) in clients.iter().zip([&first, &second, &third]) {
                let (res, _) = c.write_all(b"unix!".to_vec()).await;
                res.unwrap();
                let (res, got) = s.read_exact(Vec::with_capacity(5)).await;
                res.unwrap();
                assert_eq!(got, b"unix!");
            }
            // Half-close and vectored I/O on a Unix stream.
            let (res, _) = third.writev(vec![b"a".to_vec(), b"bc".to_vec()]).await;
            assert_eq!(res.unwrap(), 3);
            third.shutdown(Shutdown::Write).await.unwrap();
            let (res, bufs) = clients[2]
                .readv(vec![Vec::with_capacity(1), Vec::with_capacity(8)])
                .await;
            assert_eq!(res.unwrap(), 3);
            assert_eq!((&bufs[0][..], &bufs[1][..]), (&b"a"[..], &b"bc"[..]));
            let (res, _) = clients[2].read(Vec::with_capacity(8)).await;
            assert_eq!(res.unwrap(), 0);

            // A socket path with nothing listening.
            let e = UnixStream::connect(dir.0.join("missing"))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound);

            // An abstract name (leading NUL byte): no file, the name comes back as given.
            use std::os::linux::net::SocketAddrExt;
            let name = format!("uring-test-{}", std::process::id());
            let abstract_path = format!("\0{name}");
            let abs = UnixListener::bind(&abstract_path).unwrap();
            assert_eq!(
                abs.local_addr().unwrap().as_abstract_name(),
                Some(name.as_bytes())
            );
            let c = UnixStream::connect(&abstract_path).await.unwrap();
            let (s, _) = abs.accept().await.unwrap();
            let (res, _) = c.write_all(b"abs".to_vec()).await;
            res.unwrap();
            let (res, got) = s.read_exact(Vec::with_capacity(3)).await;
            res.unwrap();
            assert_eq!(got, b"abs");

            // pair() and split halves.
            let (x, y) = UnixStream::pair().unwrap();
            let (xr, xw) = x.into_split();
            let t = uring::spawn(async move {
                let (res, got) = xr.read_exact(Vec::with_capacity(4)).await;
                res.unwrap();
                got
            });
            let (res, _) = y.write_all(b"pair".to_vec()).await;
            res.unwrap();
            assert_eq!(t.await.unwrap(), b"pair");
            xw.shutdown().await.unwrap();
            let (res, _) = y.read(Vec::with_capacity(4)).await;
            assert_eq!(res.unwrap(), 0);
        });
    });
}

#[test]
fn unix_datagram_round_trips() {
    watchdog(LIMIT, || {
        uring::run(async {
            let dir = TempDir::new("dgram");
            let (pa, pb) = (dir.0.join("a"), dir.0.join("b"));
            let a = UnixDatagram::bind(&pa).unwrap();
            let b = UnixDatagram::bind(&pb).unwrap();
            let (res, _) = a.send_to(b"to b".to_vec(), &pb).await;
            assert_eq!(res.unwrap(), 4);
            let (res, got) = b.recv_from(Vec::with_capacity(16)).await;
            let (n, from) = res.unwrap();
            assert_eq!(n, 4);
            assert_eq!(got, b"to b");
            assert_eq!(from.as_pathname(), Some(pa.as_path()));

            // An unbound sender: its address is unnamed.
            let anon = UnixDatagram::unbound().unwrap();
            let (res, _) = anon.send_to(b"anon".to_vec(), &pb).await;
            res.unwrap();
            let (res, _) = b.recv_from(Vec::with_capacity(16)).await;
            assert!(res.unwrap().1.is_unnamed());

            // Connected send/recv.
            a.connect(&pb).await.unwrap();
            b.connect(&pa).await.unwrap();
            let (res, _) = b.send(b"reply".to_vec()).await;
            res.unwrap();
            let (res, got) = a.recv(Vec::with_capacity(16)).await;
            assert_eq!(res.unwrap(), 5);
            assert_eq!(got, b"reply");
            assert_eq!(a.peer_addr().unwrap().as_pathname(), Some(pb.as_path()));

            let (x, y) = UnixDatagram::pair().unwrap();
            let (res, _) = x.send(vec![1, 2, 3]).await;
            res.unwrap();
            let (res, got) = y.recv(Vec::with_capacity(3)).await;
            assert_eq!(res.unwrap(), 3);
            assert_eq!(got, [1, 2, 3]);

            let (res, _) = anon.send_to(b"x".to_vec(), dir.0.join("nobody")).await;
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::NotFound);
        });
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

/// Raises RLIMIT_NOFILE's soft limit to `want`, failing with a clear message if the hard limit
/// is lower.
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur >= want {
        return;
    }
    if lim.rlim_max < want {
        lim.rlim_max = want;
    }
    lim.rlim_cur = want;
    // SAFETY: setrlimit reads the struct we own.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(
        rc,
        0,
        "this test needs RLIMIT_NOFILE >= {want} ({}); raise the hard limit (ulimit -Hn {want})",
        io::Error::last_os_error()
    );
}

const TEN_K: usize = 10_000;
const TEN_K_ADDR_ENV: &str = "URING_TEST_10K_ADDR";

/// Starts this test binary's `test_name` in a child process with role `role`, stdout piped.
fn spawn_child(test_name: &str, role: &str, env: &[(&str, String)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(uring_tests::CHILD_ENV, role)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child test process")
}

/// The server runtime holds 10,000 connections open at once and echoes on all of them, on one
/// thread. The clients run in a second process (on their own uring runtime): both ends in one
/// process would need 20,000+ fds, above the hard RLIMIT_NOFILE of many machines.
#[test]
fn ten_thousand_connections_on_one_thread() {
    const NAME: &str = "ten_thousand_connections_on_one_thread";
    if is_child("10k-server") {
        ten_thousand_server();
        return;
    }
    if is_child("10k-client") {
        ten_thousand_clients();
        return;
    }
    use std::io::BufRead;
    let mut server = spawn_child(NAME, "10k-server", &[]);
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server child exited before printing its address")
            .unwrap();
        // The harness may print "test NAME ... " on the same line first.
        if let Some((_, a)) = line.split_once("10k server listening on ") {
            break a.trim().to_string();
        }
    };
    let client = spawn_child(NAME, "10k-client", &[(TEN_K_ADDR_ENV, addr)]);
    let client_out = client.wait_with_output().unwrap();
    if !client_out.status.success() {
        // Nobody will close the server's connections: stop it rather than wait for its
        // watchdog.
        let _ = server.kill();
    }
    let server_rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let server_status = server.wait().unwrap();
    let mut server_err = String::new();
    use std::io::Read;
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut server_err)
        .unwrap();
    let client_stdout = String::from_utf8_lossy(&client_out.stdout);
    assert!(
        client_out.status.success(),
        "client child failed: {}\nstdout:\n{client_stdout}\nstderr:\n{}",
        client_out.status,
        String::from_utf8_lossy(&client_out.stderr)
    );
    assert!(
        server_status.success(),
        "server child failed: {server_status}\nstdout:\n{}\nstderr:\n{server_err}",
        server_rest.join("\n")
    );
    assert!(
        client_stdout.contains(&format!("echoed twice on {TEN_K} connections")),
        "{client_stdout}"
    );
    let report = server_rest
        .iter()
        .find(|l| l.contains("10k server:"))
        .unwrap_or_else(|| panic!("server did not report:\n{}", server_rest.join("\n")));
    assert!(
        report.contains(&format!("{TEN_K} open at once, {TEN_K} ended cleanly")),
        "{report}"
    );
}

fn ten_thousand_server() {
    raise_nofile(TEN_K as u64 + 500);
    watchdog(Duration::from_secs(600), || {
        uring::run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            println!("10k server listening on {}", listener.local_addr().unwrap());
            let open = Rc::new(std::cell::Cell::new(0usize));
            let max_open = Rc::new(std::cell::Cell::new(0usize));
            let outcomes = Rc::new(RefCell::new(Vec::new()));
            let mut incoming = listener.incoming();
            let mut accepted = 0;
            while accepted < TEN_K {
                let s = incoming.next().await.unwrap().unwrap();
                accepted += 1;
                open.set(open.get() + 1);
                max_open.set(max_open.get().max(open.get()));
                let (open, outcomes) = (open.clone(), outcomes.clone());
                uring::spawn(async move {
                    let r = echo(&s).await;
                    open.set(open.get() - 1);
                    outcomes.borrow_mut().push(r);
                });
            }
            let deadline = Instant::now() + Duration::from_secs(300);
            while outcomes.borrow().len() < TEN_K {
                assert!(Instant::now() < deadline, "connections did not all end");
                uring::time::sleep(Duration::from_millis(10)).await;
            }
            let ok = outcomes.borrow().iter().filter(|r| r.is_ok()).count();
            let echoed: u64 = outcomes.borrow().iter().flatten().sum();
            println!(
                "10k server: {} open at once, {ok} ended cleanly, {echoed} bytes echoed",
                max_open.get()
            );
        });
    });
}

fn ten_thousand_clients() {
    raise_nofile(TEN_K as u64 + 500);
    let addr: SocketAddr = std::env::var(TEN_K_ADDR_ENV).unwrap().parse().unwrap();
    watchdog(Duration::from_secs(600), move || {
        uring::run(async move {
            let mut conns: Vec<Rc<TcpStream>> = Vec::with_capacity(TEN_K);
            // Connect in waves so the listen backlog never overflows (an overflow only delays
            // a SYN by a second, but that adds up).
            for wave in 0..TEN_K / 500 {
                let mut tasks = Vec::new();
                for i in 0..500 {
                    let id = (wave * 500 + i) as u32;
                    tasks.push(uring::spawn(async move {
                        let s = TcpStream::connect(addr).await.unwrap();
                        round_trip(&s, id.to_le_bytes().repeat(16)).await;
                        s
                    }));
                }
                for t in tasks {
                    conns.push(Rc::new(t.await.unwrap()));
                }
            }
            assert_eq!(conns.len(), TEN_K);
            // All are open at once: every connection echoes again, concurrently.
            let mut tasks = Vec::new();
            for (i, s) in conns.iter().enumerate() {
                let s = s.clone();
                tasks.push(uring::spawn(async move {
                    round_trip(&s, (i as u32 ^ 0xa5a5_a5a5).to_be_bytes().repeat(32)).await;
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            println!("echoed twice on {} connections", conns.len());
        });
    });
}

#[test]
fn accept_out_of_fds_backs_off_and_recovers() {
    if is_child("emfile") {
        accept_out_of_fds_child();
        return;
    }
    let out = run_child("accept_out_of_fds_backs_off_and_recovers", "emfile");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("recovered after EMFILE"),
        "child did not report recovery:\n{stdout}"
    );
}

fn accept_out_of_fds_child() {
    watchdog(LIMIT, accept_out_of_fds_child_inner);
}

fn accept_out_of_fds_child_inner() {
    uring_tests::set_nofile_limit(64);
    // Everything the test needs before the fds run out: runtime, listener, connected clients.
    let rt = uring::Runtime::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    // Use up every remaining fd.
    let mut fillers = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE));
                break;
            }
        }
    }
    let fillers = Rc::new(RefCell::new(fillers));
    rt.block_on(async {
        // A single accept reports the error, and the connection stays in the backlog.
        let e = listener.accept().await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");

        // The examples' accept loop: count attempts while out of fds for 400 ms.
        let freer = {
            let fillers = fillers.clone();
            uring::spawn(async move {
                uring::time::sleep(Duration::from_millis(400)).await;
                // Free a few fds: enough for the accepted connections.
                let mut f = fillers.borrow_mut();
                let keep = f.len().saturating_sub(8);
                f.truncate(keep);
                Instant::now()
            })
        };
        let mut incoming = listener.incoming();
        let mut backoff = AcceptBackoff::default();
        let mut attempts = 0u32;
        let mut errors = Vec::new();
        let started = Instant::now();
        let accepted = loop {
            attempts += 1;
            match incoming.next().await.unwrap() {
                Ok(s) => {
                    backoff.on_success();
                    break s;
                }
                Err(e) => {
                    errors.push(e.raw_os_error());
                    backoff.on_error(e).await.unwrap();
                }
            }
        };
        let freed_at = freer.await.unwrap();
        assert!(
            errors.iter().all(|e| *e == Some(libc::EMFILE)),
            "{errors:?}"
        );
        assert!(!errors.is_empty());
        // 10, 20, 40, 80, 100, 100... ms pauses: about 6 attempts in 400 ms. Spinning would
        // make thousands.
        assert!(
            attempts <= 15,
            "{attempts} accept attempts in {:?}: the loop spins",
            started.elapsed()
        );
        assert!(backoff.pauses() >= 2, "it paused ({})", backoff.pauses());
        // Recovered within about one maximum pause after the fds were freed.
        assert!(
            freed_at.elapsed() < Duration::from_secs(5),
            "slow recovery: {:?}",
            freed_at.elapsed()
        );
        let second = incoming.next().await.unwrap().unwrap();
        // Both connections work.
        let mut clients = clients.into_iter();
        for s in [accepted, second] {
            let mut c = clients.next().unwrap();
            let (res, _) = s.write_all(b"hi".to_vec()).await;
            res.unwrap();
            let mut two = [0u8; 2];
            use std::io::Read;
            c.read_exact(&mut two).unwrap();
            assert_eq!(&two, b"hi");
        }
        println!(
            "recovered after EMFILE: {attempts} attempts, {} pauses",
            backoff.pauses()
        );
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
