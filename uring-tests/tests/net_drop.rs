//! Sockets going away: peers that reset mid-read and mid-write, dropped accepts and accept
//! streams, and the close on drop (the last handle closes the fd at once).

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};
use uring::net::{TcpListener, TcpStream};
use uring_tests::net::{
    echo, pattern, reset, round_trip, round_trip_pair, spawn_echo_server, tcp_pair, LIMIT,
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
