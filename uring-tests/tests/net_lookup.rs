//! Names and shared ports: `lookup_host` on the blocking pool, `TcpStream::connect_host`, and
//! `TcpListener::bind_reuseport` next to plain `bind`.

use std::io;
use std::net::SocketAddr;
use uring::net::{lookup_host, TcpListener, TcpStream};
use uring_tests::net::LIMIT;
use uring_tests::watchdog;

#[test]
fn lookup_host_resolves_localhost() {
    watchdog(LIMIT, || {
        uring::run(async {
            let addrs = lookup_host("localhost:80").await.unwrap();
            assert!(!addrs.is_empty(), "localhost resolves to no address");
            for a in &addrs {
                assert!(a.ip().is_loopback(), "{a}");
                assert_eq!(a.port(), 80);
            }
            // Numeric addresses come back as they are.
            let addrs = lookup_host("127.0.0.1:8080").await.unwrap();
            assert_eq!(addrs, ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]);
            let addrs = lookup_host("[::1]:9").await.unwrap();
            assert_eq!(addrs, ["[::1]:9".parse::<SocketAddr>().unwrap()]);
            // The future owns its copy of the name.
            let lookup = {
                let name = String::from("localhost:443");
                lookup_host(&name)
            };
            assert!(lookup.await.unwrap().iter().all(|a| a.port() == 443));
        });
    });
}

#[test]
fn lookup_host_errors_are_io_errors() {
    watchdog(LIMIT, || {
        uring::run(async {
            let err = lookup_host("no-such-host.invalid:80")
                .await
                .expect_err("an unknown name is an error");
            println!("unknown name: {err} ({:?})", err.kind());
            let err = lookup_host("localhost").await.expect_err("no port");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            let err = lookup_host("localhost:http")
                .await
                .expect_err("a port name");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            let err = lookup_host("").await.expect_err("nothing at all");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            // Many lookups at once, from several tasks.
            let tasks: Vec<_> = (0..50u16)
                .map(|i| uring::spawn(lookup_host(&format!("localhost:{}", 1000 + i))))
                .collect();
            for (i, t) in tasks.into_iter().enumerate() {
                let addrs = t.await.unwrap().unwrap();
                assert!(addrs.iter().all(|a| a.port() == 1000 + i as u16));
            }
        });
    });
}

#[test]
fn connect_host_reaches_a_listener() {
    watchdog(LIMIT, || {
        uring::run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = uring::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                let (res, buf) = s.read_exact(Vec::with_capacity(5)).await;
                res.unwrap();
                buf
            });
            let s = TcpStream::connect_host(&format!("localhost:{}", addr.port()))
                .await
                .unwrap();
            assert_eq!(s.peer_addr().unwrap(), addr);
            s.write_all(b"hello".to_vec()).await.0.unwrap();
            assert_eq!(server.await.unwrap(), b"hello");
        });
    });
}

#[test]
fn connect_host_errors() {
    watchdog(LIMIT, || {
        uring::run(async {
            // A port nobody listens on: the last address's error.
            let free = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = free.local_addr().unwrap().port();
            drop(free);
            let err = TcpStream::connect_host(&format!("127.0.0.1:{port}"))
                .await
                .expect_err("nothing listens");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
            let err = TcpStream::connect_host("localhost")
                .await
                .expect_err("no port");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
            assert!(TcpStream::connect_host("no-such-host.invalid:80")
                .await
                .is_err());
        });
    });
}

#[test]
fn reuseport_listeners_share_a_port() {
    watchdog(LIMIT, || {
        uring::run(async {
            let a = TcpListener::bind_reuseport("127.0.0.1:0").unwrap();
            let addr = a.local_addr().unwrap();
            let b = TcpListener::bind_reuseport(addr).expect("a second reuseport listener binds");
            assert_eq!(b.local_addr().unwrap(), addr);

            // A plain bind on the port the reuseport listeners hold fails.
            let err = TcpListener::bind(addr).expect_err("plain bind on a shared port");
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
            let err = std::net::TcpListener::bind(addr).expect_err("std's bind too");
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");

            // Connections reach the listeners (the kernel picks one for each).
            let accepted = std::rc::Rc::new(std::cell::Cell::new(0));
            for l in [a, b] {
                let accepted = accepted.clone();
                uring::spawn(async move {
                    while let Ok((s, _)) = l.accept().await {
                        accepted.set(accepted.get() + 1);
                        s.write_all(b"x".to_vec()).await.0.unwrap();
                    }
                });
            }
            for _ in 0..8 {
                let s = TcpStream::connect(addr).await.unwrap();
                let (res, buf) = s.read_exact(Vec::with_capacity(1)).await;
                res.unwrap();
                assert_eq!(buf, b"x");
            }
            assert_eq!(accepted.get(), 8);
        });
    });
}

#[test]
fn reuseport_is_refused_next_to_a_plain_listener() {
    watchdog(LIMIT, || {
        uring::run(async {
            let plain = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = plain.local_addr().unwrap();
            let err = TcpListener::bind_reuseport(addr).expect_err("the plain listener holds it");
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
            drop(plain);
            // Once it is gone, the port is free for reuseport listeners.
            let _a = TcpListener::bind_reuseport(addr).unwrap();
            let _b = TcpListener::bind_reuseport(addr).unwrap();
        });
    });
}

#[test]
fn one_reuseport_listener_per_thread() {
    watchdog(LIMIT, || {
        const THREADS: usize = 2;
        const CLIENTS: usize = 40;
        // The first worker's listener is bound here, to learn the port; it crosses to its thread
        // as a std listener.
        let first = TcpListener::bind_reuseport("127.0.0.1:0").unwrap();
        let addr = first.local_addr().unwrap();
        let mut first = Some(first.into_std().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS + 1));
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (tx, barrier, first) = (tx.clone(), barrier.clone(), first.take());
                std::thread::spawn(move || {
                    uring::run(async move {
                        let listener = match first {
                            Some(l) => TcpListener::from_std(l).unwrap(),
                            None => TcpListener::bind_reuseport(addr).unwrap(),
                        };
                        barrier.wait();
                        // Each worker serves until a client sends "stop".
                        loop {
                            let (s, _) = listener.accept().await.unwrap();
                            let (res, buf) = s.read(Vec::with_capacity(8)).await;
                            res.unwrap();
                            tx.send(()).unwrap();
                            if buf == b"stop" {
                                return;
                            }
                        }
                    })
                })
            })
            .collect();
        barrier.wait();
        for _ in 0..CLIENTS {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            std::io::Write::write_all(&mut s, b"hi").unwrap();
        }
        for _ in 0..CLIENTS {
            rx.recv().unwrap();
        }
        // Each "stop" stops the worker that accepts it; the next one is sent only once that
        // worker (and its listener) is gone, so it cannot wait in a closing listener's backlog.
        for k in 1..=THREADS {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            std::io::Write::write_all(&mut s, b"stop").unwrap();
            rx.recv().unwrap();
            while workers.iter().filter(|w| w.is_finished()).count() < k {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        for w in workers {
            w.join().unwrap();
        }
    });
}
