//! Sockets going away: peers that reset mid-read and mid-write, dropped accepts and accept
//! streams, and the close on drop (the last handle closes the fd at once).

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};
use uring::net::{TcpListener, TcpStream};
use uring_tests::net::{
    echo, pattern, reset, round_trip, round_trip_pair, spawn_echo_server, tcp_pair,
    tcp_pair_with_std, LIMIT,
};
use uring_tests::watchdog;

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
    for multishot in [false, true] {
        watchdog(LIMIT, move || {
            uring::run(async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let mut incoming = if multishot {
                    listener.incoming_multishot()
                } else {
                    listener.incoming()
                };
                // Four connections taken: the stream now keeps several accepts armed (or its
                // multishot accept).
                let first = uring::spawn(async move {
                    let mut v = Vec::new();
                    for _ in 0..4 {
                        v.push(TcpStream::connect(addr).await.unwrap());
                    }
                    v
                });
                let mut taken = Vec::new();
                for _ in 0..4 {
                    taken.push(incoming.next().await.unwrap().unwrap());
                }
                let first = first.await.unwrap();
                let mut others = Vec::new();
                for _ in 0..3 {
                    others.push(TcpStream::connect(addr).await.unwrap());
                }
                // The armed accepts take them in the kernel; give them a moment, then drop the
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
                // The connections it handed out still work.
                for s in &taken {
                    let peer = s.peer_addr().unwrap();
                    let c = first.iter().find(|c| c.local_addr().unwrap() == peer);
                    round_trip_pair(c.expect("a client of each taken connection"), s).await;
                }
            });
        });
    }
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

/// The last handle closes its fd at once (a plain close(2)): a listener dropped with no accept in
/// flight frees its address before the drop returns, as std's does.
#[test]
fn a_dropped_listener_frees_its_address_at_once() {
    watchdog(LIMIT, || {
        uring::run(async {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            drop(l);
            let l = TcpListener::bind(addr).expect("the address is free again at once");

            // After accepting (the accept op is done) and with the connection still open.
            let client = uring::spawn(async move { TcpStream::connect(addr).await.unwrap() });
            let (server, _) = l.accept().await.unwrap();
            let client = client.await.unwrap();
            drop(l);
            let l = TcpListener::bind(addr).expect("free again while a connection lives on");
            round_trip_pair(&client, &server).await;
            drop(l);

            let dir = uring_tests::TempDir::new("rebind");
            let path = dir.path("s");
            let u = uring::net::UnixListener::bind(&path).unwrap();
            drop(u);
            std::fs::remove_file(&path).unwrap();
            uring::net::UnixListener::bind(&path).expect("a Unix path can be bound again");
        });
    });
}

/// A stream dropped in the last poll of `block_on`, when the loop will not turn again before
/// `block_on` returns: the peer still sees end of stream while the runtime is alive.
#[test]
fn a_stream_dropped_in_the_last_poll_is_closed_at_once() {
    watchdog(LIMIT, || {
        use std::io::Read;
        let (s, mut peer) = tcp_pair_with_std();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8];
            let _ = tx.send(peer.read(&mut buf).map_err(|e| e.kind()));
        });
        let rt = uring::Runtime::new().unwrap();
        rt.block_on(async move { drop(s) });
        let seen = rx.recv_timeout(Duration::from_secs(20));
        assert!(
            matches!(seen, Ok(Ok(0))),
            "the peer must read end of stream before the runtime is dropped, got {seen:?}"
        );
        drop(rt);
        reader.join().unwrap();
    });
}
