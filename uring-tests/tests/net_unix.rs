//! Unix-domain sockets against the real kernel: streams and listeners on paths and abstract
//! names, pairs and halves, datagram sockets bound, unbound and connected.

use std::io;
use std::net::Shutdown;
use uring::net::{UnixDatagram, UnixListener, UnixStream};
use uring_tests::net::LIMIT;
use uring_tests::{watchdog, TempDir};

#[test]
fn bind_to_used_path_is_addr_in_use() {
    watchdog(LIMIT, || {
        uring::run(async {
            let dir = TempDir::new("inuse");
            let path = dir.path("s");
            let _l = UnixListener::bind(&path).unwrap();
            let e = UnixListener::bind(&path).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        });
    });
}

#[test]
fn unix_stream_listener_round_trip() {
    watchdog(LIMIT, || {
        uring::run(async {
            let dir = TempDir::new("stream");
            let path = dir.path("sock");
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
            let e = UnixStream::connect(dir.path("missing")).await.unwrap_err();
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
            let (pa, pb) = (dir.path("a"), dir.path("b"));
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

            let (res, _) = anon.send_to(b"x".to_vec(), dir.path("nobody")).await;
            assert_eq!(res.unwrap_err().kind(), io::ErrorKind::NotFound);
        });
    });
}

/// Unix halves have the addresses TCP halves have; listeners and datagram sockets convert to std
/// and back.
#[test]
fn unix_halves_addresses_and_std_conversions() {
    watchdog(LIMIT, || {
        uring::run(async {
            let dir = TempDir::new("halves");
            let path = dir.path("s");
            let listener = UnixListener::bind(&path).unwrap();
            let p = path.clone();
            let client = uring::spawn(async move { UnixStream::connect(&p).await.unwrap() });
            let (server, _) = listener.accept().await.unwrap();
            let client = client.await.unwrap();
            let (r, w) = client.into_split();
            assert_eq!(r.peer_addr().unwrap().as_pathname(), Some(path.as_path()));
            assert_eq!(w.peer_addr().unwrap().as_pathname(), Some(path.as_path()));
            assert!(r.local_addr().unwrap().is_unnamed());
            assert!(w.local_addr().unwrap().is_unnamed());
            let client = r.reunite(w).unwrap();
            let std_c = client.into_std().unwrap();
            drop((std_c, server));

            let std_l = listener.into_std().unwrap();
            assert_eq!(
                std_l.local_addr().unwrap().as_pathname(),
                Some(path.as_path())
            );
            let listener = UnixListener::from_std(std_l).unwrap();
            assert!(listener.local_addr().is_ok());

            let (x, y) = UnixDatagram::pair().unwrap();
            let std_x = x.into_std().unwrap();
            std_x.send(b"std").unwrap();
            let (res, got) = y.recv(Vec::with_capacity(8)).await;
            assert_eq!(res.unwrap(), 3);
            assert_eq!(got, b"std");
            let x = UnixDatagram::from_std(std_x).unwrap();
            x.send(b"back".to_vec()).await.0.unwrap();
            let (res, _) = y.recv(Vec::with_capacity(8)).await;
            assert_eq!(res.unwrap(), 4);
        });
    });
}
