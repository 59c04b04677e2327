//! 1,000 connections whose read futures are dropped mid-flight (inside `timeout`, and by aborting
//! the task), then used again: no byte may be lost or reordered, and no fd or buffer leaks.
//!
//! What is guaranteed: dropping a read submits `IORING_OP_ASYNC_CANCEL`; the read then either
//! is cancelled before it took any bytes, or had already completed. A read that completed but
//! whose future was dropped before it saw the completion loses the bytes it read. So the drops
//! here happen while no data is in flight (the timeouts fire before the peer writes): then
//! nothing may be lost, and every byte written afterwards must arrive, in order, at the next
//! read.
//!
//! A separate test binary so valgrind can run it alone (it zeroes every buffer, because
//! valgrind cannot see the kernel's writes into them):
//!
//! ```text
//! URING_VALGRIND=1 valgrind --error-exitcode=1 --leak-check=full \
//!     --errors-for-leak-kinds=definite target/debug/deps/net_cancel-HASH
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use uring::net::{TcpListener, TcpStream};
use uring::time::timeout;
use uring_tests::{open_fds, under_valgrind, watchdog};

/// How long a whole message may take to arrive before the bytes count as lost (generous: the
/// machine is shared, and valgrind is slow).
const WHOLE: Duration = Duration::from_secs(60);

/// An empty buffer with `cap` bytes of zeroed (so, for valgrind, defined) capacity.
fn zeroed(cap: usize) -> Vec<u8> {
    let mut v = vec![0u8; cap];
    v.clear();
    v
}

/// The bytes connection `conn` sends in `round` from side `side`: every position is distinct
/// enough that a lost, repeated or reordered byte changes the comparison.
fn message(conn: usize, round: usize, side: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| {
            let x = (conn as u64) * 1_000_003 + (round as u64) * 7919 + k as u64 * 31 + side as u64;
            (x ^ (x >> 8) ^ (x >> 16)) as u8
        })
        .collect()
}

/// Starts a read on `s` and drops it before any data can arrive. Alternates between a plain
/// read (IORING_OP_RECV) and a vectored one (IORING_OP_RECVMSG).
async fn abandoned_read(s: &TcpStream, vectored: bool, wait_ms: u64) {
    let wait = Duration::from_millis(wait_ms);
    let elapsed = if vectored {
        timeout(wait, s.readv(vec![zeroed(16), zeroed(48)]))
            .await
            .is_err()
    } else {
        timeout(wait, s.read(zeroed(64))).await.is_err()
    };
    assert!(elapsed, "a read completed although nothing was sent");
}

async fn connect_pairs(n: usize) -> (TcpListener, Vec<(Rc<TcpStream>, Rc<TcpStream>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut clients = Vec::with_capacity(n);
    let mut servers: HashMap<SocketAddr, TcpStream> = HashMap::with_capacity(n);
    let wave = 250;
    let mut started = 0;
    while started < n {
        let count = wave.min(n - started);
        let tasks: Vec<_> = (0..count)
            .map(|_| uring::spawn(async move { TcpStream::connect(addr).await.unwrap() }))
            .collect();
        for _ in 0..count {
            let (s, peer) = listener.accept().await.unwrap();
            servers.insert(peer, s);
        }
        for t in tasks {
            clients.push(t.await.unwrap());
        }
        started += count;
    }
    let pairs = clients
        .into_iter()
        .map(|c| {
            let s = servers
                .remove(&c.local_addr().unwrap())
                .expect("server side of a client");
            (Rc::new(c), Rc::new(s))
        })
        .collect();
    (listener, pairs)
}

#[test]
fn dropped_reads_lose_no_bytes_and_leak_nothing() {
    let valgrind = under_valgrind();
    let (conns, rounds, drops) = if valgrind { (40, 2, 2) } else { (1000, 3, 3) };
    let msg_len = 300;
    watchdog(Duration::from_secs(900), move || {
        let fds_before = open_fds();
        let rt = uring::Runtime::new().unwrap();
        rt.block_on(async move {
            let (_listener, pairs) = connect_pairs(conns).await;
            for round in 0..rounds {
                // 1. Reads on both sides of every connection, dropped mid-flight with nothing
                //    in flight; plus one read per connection cancelled by aborting its task.
                let mut tasks = Vec::with_capacity(conns);
                for (i, (c, s)) in pairs.iter().enumerate() {
                    let (c, s) = (c.clone(), s.clone());
                    tasks.push(uring::spawn(async move {
                        for d in 0..drops {
                            let wait = 1 + ((i + d) % 4) as u64;
                            abandoned_read(&c, (i + d) % 2 == 0, wait).await;
                            abandoned_read(&s, (i + d) % 2 == 1, wait).await;
                        }
                        let victim = c.clone();
                        let reader = uring::spawn(async move {
                            let _ = victim.read(zeroed(32)).await;
                            unreachable!("nothing was sent");
                        });
                        uring::time::sleep(Duration::from_millis(1)).await;
                        reader.abort();
                        assert!(reader.await.unwrap_err().is_cancelled());
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                // 2. Now data flows both ways, in two writes per side, and each side reads it
                //    whole: every byte must arrive, in order.
                let mut tasks = Vec::with_capacity(conns);
                for (i, (c, s)) in pairs.iter().enumerate() {
                    let (c, s) = (c.clone(), s.clone());
                    tasks.push(uring::spawn(async move {
                        for (writer, side) in [(&s, 1u8), (&c, 2u8)] {
                            let mut m = message(i, round, side, msg_len);
                            let tail = m.split_off(msg_len / 3);
                            writer.write_all(m).await.0.unwrap();
                            writer.write_all(tail).await.0.unwrap();
                        }
                        for (reader, side) in [(&c, 1u8), (&s, 2u8)] {
                            // If a dropped read were still armed, it would have taken some of
                            // these bytes and this read would wait forever for them.
                            let (res, got) = timeout(WHOLE, reader.read_exact(zeroed(msg_len)))
                                .await
                                .unwrap_or_else(|_| {
                                    panic!(
                                        "connection {i} round {round}: the message never arrived \
                                         whole: a dropped read took bytes"
                                    )
                                });
                            res.unwrap();
                            assert!(
                                got == message(i, round, side, msg_len),
                                "connection {i} round {round}: bytes lost or reordered"
                            );
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            }
            // Nothing extra is left to read on any connection.
            let mut tasks = Vec::with_capacity(conns);
            for (c, s) in &pairs {
                let (c, s) = (c.clone(), s.clone());
                tasks.push(uring::spawn(async move {
                    s.shutdown(std::net::Shutdown::Write).await.unwrap();
                    let (res, _) = c.read(zeroed(8)).await;
                    assert_eq!(res.unwrap(), 0, "stray bytes after the last message");
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        drop(rt);
        assert_eq!(
            open_fds(),
            fds_before,
            "every socket is closed once the runtime is gone"
        );
    });
}
