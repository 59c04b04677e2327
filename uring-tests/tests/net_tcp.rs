//! TCP against the real kernel: reads and writes (plain, vectored, large), addresses, bind and
//! connect errors, std and socket2 conversions, half-close, split halves.

use socket2::{Domain, Socket, Type};
use std::cell::RefCell;
use std::io;
use std::net::{Shutdown, SocketAddr};
use uring::buf::IoBuf;
use uring::net::{TcpListener, TcpStream};
use uring_tests::net::{pattern, round_trip_pair, tcp_pair, VecWriter, LIMIT};
use uring_tests::watchdog;

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

/// Every socket type converts from and to its std type; the listener's std form keeps accepting.
#[test]
fn listeners_and_udp_sockets_convert_to_std_and_back() {
    watchdog(LIMIT, || {
        uring::run(async {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let std_l = l.into_std().unwrap();
            let client = std::net::TcpStream::connect(addr).unwrap();
            let (accepted, _) = std_l.accept().unwrap();
            drop((client, accepted));
            let l = TcpListener::from_std(std_l).unwrap();
            let client = uring::spawn(async move { TcpStream::connect(addr).await.unwrap() });
            let (s, _) = l.accept().await.unwrap();
            round_trip_pair(&client.await.unwrap(), &s).await;

            let u = uring::net::udp::UdpSocket::bind("127.0.0.1:0").unwrap();
            let u_addr = u.local_addr().unwrap();
            let std_u = u.into_std().unwrap();
            assert_eq!(std_u.local_addr().unwrap(), u_addr);
            let u = uring::net::UdpSocket::from_std(std_u).unwrap();
            assert_eq!(u.local_addr().unwrap(), u_addr);
        });
    });
}

/// One spelling for the write shutdown on every handle that writes: `shutdown_write`; the older
/// ones still work.
#[test]
fn shutdown_write_on_streams_and_write_halves() {
    watchdog(LIMIT, || {
        uring::run(async {
            let (a, b) = tcp_pair().await;
            a.shutdown_write().await.unwrap();
            let (res, _) = b.read(Vec::with_capacity(1)).await;
            assert_eq!(res.unwrap(), 0);
            // The other way still works after the half-close.
            b.write_all(b"ok".to_vec()).await.0.unwrap();
            let (res, got) = a.read_exact(Vec::with_capacity(2)).await;
            res.unwrap();
            assert_eq!(got, b"ok");

            let (a, b) = tcp_pair().await;
            let (ar, aw) = a.into_split();
            aw.shutdown_write().await.unwrap();
            let (res, _) = b.read(Vec::with_capacity(1)).await;
            assert_eq!(res.unwrap(), 0);
            assert_eq!(ar.peer_addr().unwrap(), b.local_addr().unwrap());
            assert_eq!(aw.local_addr().unwrap(), b.peer_addr().unwrap());
            // The old spellings.
            let (c, d) = tcp_pair().await;
            c.shutdown(Shutdown::Write).await.unwrap();
            let (_cr, cw) = d.into_split();
            cw.shutdown().await.unwrap();
        });
    });
}

/// The generic types serve both families with one piece of code.
async fn echo_once<F: uring::net::Family, S: uring::net::side::Reads>(
    r: &uring::net::Stream<F, S>,
    w: &impl uring::io::AsyncWriteOwned,
) {
    let (res, buf) = r.read(Vec::with_capacity(16)).await;
    res.unwrap();
    w.write_all(buf).await.0.unwrap();
}

#[test]
fn generic_code_over_families_and_sides() {
    watchdog(LIMIT, || {
        uring::run(async {
            let (a, b) = tcp_pair().await;
            let (br, bw) = b.into_split();
            a.write_all(b"tcp".to_vec()).await.0.unwrap();
            echo_once(&br, &bw).await;
            let (res, got) = a.read_exact(Vec::with_capacity(3)).await;
            res.unwrap();
            assert_eq!(got, b"tcp");

            let (x, y) = uring::net::UnixStream::pair().unwrap();
            x.write_all(b"unix".to_vec()).await.0.unwrap();
            echo_once(&y, &y).await;
            let (res, got) = x.read_exact(Vec::with_capacity(4)).await;
            res.unwrap();
            assert_eq!(got, b"unix");
            let name: uring::net::unix::OwnedReadHalf = y.into_split().0;
            assert!(format!("{name:?}").contains("unix"));
        });
    });
}
