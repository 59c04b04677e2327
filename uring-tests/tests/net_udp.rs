//! UDP against the real kernel: send_to/recv_from, truncation, connected sockets, IPv6.

use std::io;
use uring::net::UdpSocket;
use uring_tests::net::{pattern, LIMIT};
use uring_tests::watchdog;

#[test]
fn bind_to_used_address_is_addr_in_use() {
    watchdog(LIMIT, || {
        uring::run(async {
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            let e = UdpSocket::bind(u.local_addr().unwrap()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
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
