//! Cancel-safe reads: read futures dropped at any point, on TCP and Unix streams, their read
//! halves and datagram sockets, must never lose or reorder a byte (or a datagram), and leak no fd
//! or buffer.
//!
//! What is guaranteed: a dropped read cancels its op; if the cancel lost the race and the read
//! took bytes, they are kept for the socket and the next read returns them first, then the end of
//! stream or error that read got. While a dropped read is still in flight, the next read waits
//! for it. These tests drop reads before data arrives, while it is arriving, and after their
//! completion was reaped but before their future saw it.
//!
//! A separate test binary so valgrind can run it alone (it zeroes every buffer, because
//! valgrind cannot see the kernel's writes into them):
//!
//! ```text
//! URING_VALGRIND=1 valgrind --error-exitcode=1 --leak-check=full \
//!     --errors-for-leak-kinds=definite target/debug/deps/net_cancel-HASH --test-threads=1
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;
use uring::io::AsyncWriteOwned;
use uring::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixStream};
use uring::time::{sleep, timeout};
use uring::BufResult;
use uring_tests::net::{serial, stream_byte, tcp_pair, tcp_pair_with_std, zeroed_capacity};
use uring_tests::{open_fds, poll_once, scaled, under_valgrind, zeroed_buf, Rng};

/// Generous: valgrind slows everything down by an order of magnitude or more.
const LIMIT: Duration = Duration::from_secs(600);

/// How long a whole message may take to arrive before the bytes count as lost (generous: the
/// machine is shared, and valgrind is slow).
const WHOLE: Duration = Duration::from_secs(60);

/// Long enough for the loop to reap a completion that is already due (loopback delivers at
/// once); a read dropped after it completed hands its bytes on.
const REAP: Duration = Duration::from_millis(20);

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

/// The stream reads a test drives; implemented for each handle that reads.
trait Reader {
    fn read_buf(&self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>>;
    fn readv_bufs(
        &self,
        bufs: Vec<Vec<u8>>,
    ) -> impl Future<Output = BufResult<usize, Vec<Vec<u8>>>>;
}

macro_rules! reader {
    ($($t:ty),*) => {$(
        impl Reader for $t {
            fn read_buf(&self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>> {
                self.read(buf)
            }
            fn readv_bufs(
                &self,
                bufs: Vec<Vec<u8>>,
            ) -> impl Future<Output = BufResult<usize, Vec<Vec<u8>>>> {
                self.readv(bufs)
            }
        }
    )*};
}

reader!(
    TcpStream,
    UnixStream,
    uring::net::tcp::OwnedReadHalf,
    uring::net::unix::OwnedReadHalf
);

/// Drives `fut` the way a `select` or `timeout` might: polls it once (its op is submitted), lets
/// the loop run a while (so its completion may arrive and be reaped), then polls it once more
/// or drops it. Some reads are simply awaited. `None`: it was dropped.
async fn maybe_drop<F: Future>(fut: F, rng: &mut Rng) -> Option<F::Output> {
    let mut fut = Box::pin(fut);
    if rng.below(4) == 0 {
        return Some(fut.await);
    }
    if let Poll::Ready(out) = poll_once(&mut fut).await {
        return Some(out);
    }
    if rng.below(4) == 0 {
        sleep(Duration::from_micros(rng.below(1500))).await;
    } else {
        for _ in 0..rng.below(4) {
            uring::yield_now().await;
        }
    }
    if rng.below(2) == 0 {
        if let Poll::Ready(out) = poll_once(&mut fut).await {
            return Some(out);
        }
    }
    None
}

/// Reads `r` to its end while dropping reads at random points; returns every byte read.
async fn read_to_end_dropping(r: &impl Reader, seed: u64) -> (Vec<u8>, usize) {
    let mut rng = Rng(seed);
    let mut got = Vec::new();
    let mut dropped = 0;
    loop {
        let cap = 1 + rng.below(64 * 1024) as usize;
        let n = if rng.below(3) == 0 {
            let first = rng.below(cap as u64) as usize;
            let bufs = vec![zeroed_buf(first), zeroed_buf(cap - first)];
            match maybe_drop(r.readv_bufs(bufs), &mut rng).await {
                None => None,
                Some((res, bufs)) => {
                    let n = res.expect("readv");
                    let mut left = n;
                    for b in &bufs {
                        let here = left.min(b.capacity());
                        got.extend_from_slice(&b[..here]);
                        left -= here;
                    }
                    Some(n)
                }
            }
        } else {
            match maybe_drop(r.read_buf(zeroed_buf(cap)), &mut rng).await {
                None => None,
                Some((res, buf)) => {
                    let n = res.expect("read");
                    got.extend_from_slice(&buf[..n]);
                    Some(n)
                }
            }
        };
        match n {
            None => dropped += 1,
            Some(0) => return (got, dropped),
            Some(_) => {}
        }
    }
}

/// Writes `total` bytes of [`stream_byte`] in chunks of random sizes with random pauses, then
/// drops `w` (the reader sees end of stream). A task on the reader's runtime: a peer on another
/// thread would stall under valgrind, which holds its lock while a thread waits in
/// io_uring_enter.
async fn write_stream<W: AsyncWriteOwned>(w: W, total: usize, seed: u64) {
    let mut rng = Rng(seed);
    let mut pos = 0;
    while pos < total {
        let n = (1 + rng.below(100_000) as usize).min(total - pos);
        let chunk: Vec<u8> = (pos..pos + n).map(stream_byte).collect();
        w.write_all(chunk).await.0.expect("the reader went away");
        pos += n;
        match rng.below(6) {
            0 => sleep(Duration::from_micros(rng.below(2000))).await,
            1 | 2 => {
                for _ in 0..rng.below(3) {
                    uring::yield_now().await;
                }
            }
            _ => {}
        }
    }
}

/// Streams megabytes from `peer` into `reader` while reads are dropped at random points; every
/// byte must arrive once, in order.
async fn stream_with_drops<R: Reader, W: AsyncWriteOwned + 'static>(
    name: &str,
    seed: u64,
    reader: R,
    peer: W,
) {
    let total = scaled(8 << 20);
    let writer = uring::spawn(write_stream(peer, total, seed ^ 0x5555));
    let (got, dropped) = read_to_end_dropping(&reader, seed).await;
    writer.await.unwrap();
    assert_eq!(
        got.len(),
        total,
        "{name}: bytes lost or repeated ({dropped} reads dropped)"
    );
    if let Some(i) = (0..total).find(|&i| got[i] != stream_byte(i)) {
        panic!("{name}: byte {i} differs: bytes reordered or lost ({dropped} reads dropped)");
    }
    assert!(dropped > 10, "{name}: only {dropped} reads were dropped");
}

#[test]
fn tcp_stream_reads_dropped_at_random_lose_no_byte() {
    serial(LIMIT, || {
        uring::run(async {
            let (a, b) = tcp_pair().await;
            stream_with_drops("tcp", 1, a, b).await;
        })
    });
}

#[test]
fn unix_stream_reads_dropped_at_random_lose_no_byte() {
    serial(LIMIT, || {
        uring::run(async {
            let (a, b) = UnixStream::pair().unwrap();
            stream_with_drops("unix", 2, a, b).await;
        })
    });
}

#[test]
fn tcp_read_half_reads_dropped_at_random_lose_no_byte() {
    serial(LIMIT, || {
        uring::run(async {
            let (a, b) = tcp_pair().await;
            let (r, _w) = a.into_split();
            stream_with_drops("tcp read half", 3, r, b).await;
        })
    });
}

#[test]
fn unix_read_half_reads_dropped_at_random_lose_no_byte() {
    serial(LIMIT, || {
        uring::run(async {
            let (a, b) = UnixStream::pair().unwrap();
            let (r, _w) = a.into_split();
            stream_with_drops("unix read half", 4, r, b).await;
        })
    });
}

/// Polls a receive once (submitted), lets `arrive` deliver its datagram and the loop reap the
/// completion, then drops it unclaimed.
async fn drop_after_completion<F: Future>(fut: F, arrive: impl Future<Output = ()>) {
    let mut fut = Box::pin(fut);
    assert!(
        poll_once(&mut fut).await.is_pending(),
        "nothing was sent yet"
    );
    arrive.await;
    sleep(REAP).await;
    drop(fut);
}

#[test]
fn udp_datagram_of_a_dropped_receive_goes_to_the_next() {
    serial(LIMIT, || {
        uring::run(async {
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let (rx_addr, tx_addr) = (rx.local_addr().unwrap(), tx.local_addr().unwrap());
            let send = |d: &'static [u8]| {
                let tx = &tx;
                async move {
                    assert_eq!(tx.send_to(d, rx_addr).await.0.unwrap(), d.len());
                }
            };

            // recv dropped after its datagram arrived: the next recv gets it, then the next one.
            drop_after_completion(rx.recv(zeroed_buf(64)), send(b"one")).await;
            send(b"two").await;
            let (res, buf) = rx.recv(zeroed_buf(64)).await;
            assert_eq!(
                &buf[..res.unwrap()],
                b"one",
                "the dropped receive's datagram"
            );
            let (res, buf) = rx.recv(zeroed_buf(64)).await;
            assert_eq!(&buf[..res.unwrap()], b"two");

            // recv_from dropped: the next recv_from gets the datagram and its sender.
            drop_after_completion(rx.recv_from(zeroed_buf(64)), send(b"three")).await;
            let (res, buf) = rx.recv_from(zeroed_buf(64)).await;
            let (n, from) = res.unwrap();
            assert_eq!((&buf[..n], from), (&b"three"[..], tx_addr));

            // A datagram a dropped recv took, truncated to the next buffer as recv truncates.
            drop_after_completion(rx.recv(zeroed_buf(64)), send(b"0123456789")).await;
            let (res, buf) = rx.recv(zeroed_buf(4)).await;
            assert_eq!(&buf[..res.unwrap()], b"0123");

            // A plain recv asks for no sender: on an unconnected socket recv_from reports it as
            // unspecified; on a connected one it is the peer.
            drop_after_completion(rx.recv(zeroed_buf(64)), send(b"anon")).await;
            let (res, _) = rx.recv_from(zeroed_buf(64)).await;
            let (n, from) = res.unwrap();
            assert_eq!((n, from), (4, "0.0.0.0:0".parse::<SocketAddr>().unwrap()));
            rx.connect(tx_addr).await.unwrap();
            drop_after_completion(rx.recv(zeroed_buf(64)), send(b"peer")).await;
            let (res, _) = rx.recv_from(zeroed_buf(64)).await;
            assert_eq!(res.unwrap(), (4, tx_addr));

            // Dropped before anything arrived: nothing is taken.
            let early = timeout(Duration::from_millis(2), rx.recv(zeroed_buf(64))).await;
            assert!(early.is_err());
            send(b"later").await;
            let (res, buf) = rx.recv(zeroed_buf(64)).await;
            assert_eq!(&buf[..res.unwrap()], b"later");
        });
    });
}

#[test]
fn unix_datagram_of_a_dropped_receive_goes_to_the_next() {
    serial(LIMIT, || {
        uring::run(async {
            let (rx, tx) = UnixDatagram::pair().unwrap();
            let send = |d: &'static [u8]| {
                let tx = &tx;
                async move {
                    assert_eq!(tx.send(d).await.0.unwrap(), d.len());
                }
            };
            drop_after_completion(rx.recv(zeroed_buf(64)), send(b"one")).await;
            send(b"two").await;
            let (res, buf) = rx.recv(zeroed_buf(64)).await;
            assert_eq!(
                &buf[..res.unwrap()],
                b"one",
                "the dropped receive's datagram"
            );
            drop_after_completion(rx.recv_from(zeroed_buf(64)), send(b"three")).await;
            let (res, buf) = rx.recv_from(zeroed_buf(64)).await;
            let (n, from) = res.unwrap();
            assert_eq!(&buf[..n], b"two");
            assert!(from.is_unnamed());
            let (res, buf) = rx.recv_from(zeroed_buf(64)).await;
            assert_eq!(&buf[..res.unwrap().0], b"three");
        });
    });
}

#[test]
fn an_error_a_dropped_read_got_is_handed_on() {
    serial(LIMIT, || {
        uring::run(async {
            let (s, peer) = tcp_pair_with_std();
            let reset = async move {
                socket2::SockRef::from(&peer)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(peer);
            };
            drop_after_completion(s.read(zeroed_buf(64)), reset).await;
            let (res, _) = s.read(zeroed_buf(64)).await;
            assert_eq!(
                res.unwrap_err().kind(),
                io::ErrorKind::ConnectionReset,
                "the reset the dropped read got"
            );
            let (res, _) = s.read(zeroed_buf(64)).await;
            assert_eq!(res.unwrap(), 0, "then the end of stream");
        });
    });
}

#[test]
fn into_std_refuses_to_lose_bytes_a_dropped_read_took() {
    serial(LIMIT, || {
        uring::run(async {
            let (s, mut peer) = tcp_pair_with_std();
            drop_after_completion(s.read(zeroed_buf(64)), async {
                peer.write_all(b"kept").unwrap();
            })
            .await;
            let e = s.into_std().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Other, "{e}");

            let (s, _peer) = tcp_pair_with_std();
            let (r, w) = s.into_split();
            let s = r.reunite(w).unwrap();
            s.into_std().expect("nothing was left unread");
        });
    });
}

/// A read dropped while its completion is still on its way (the kernel already took the bytes
/// but the loop has not reaped them) must not let the next read overtake it.
///
/// To hold a completion back, the ring is tiny (2 SQ entries, 8 CQ entries) and 16 receives on
/// other sockets complete in the same batch just before it, so its completion waits in the
/// kernel's overflow list for the next loop turn. The read is dropped in between, and more bytes
/// arrive: the next read must return the first bytes first.
#[test]
fn a_read_after_an_abandoned_one_in_flight_keeps_the_order() {
    serial(LIMIT, || {
        let rt = uring::Runtime::builder().entries(2).build().unwrap();
        rt.block_on(async {
            let (a, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
            let a = UnixStream::from_std(a).unwrap();
            let fillers: Vec<_> = (0..16)
                .map(|_| {
                    let (x, y) = std::os::unix::net::UnixDatagram::pair().unwrap();
                    (UnixDatagram::from_std(x).unwrap(), y)
                })
                .collect();
            let mut filler_recvs: Vec<Pin<Box<_>>> = fillers
                .iter()
                .map(|(x, _)| Box::pin(x.recv(zeroed_buf(8))))
                .collect();
            for r in &mut filler_recvs {
                assert!(poll_once(r).await.is_pending());
            }
            let mut first = Box::pin(a.read(zeroed_buf(64)));
            assert!(poll_once(&mut first).await.is_pending());
            // Every receive is armed in the kernel.
            sleep(REAP).await;
            // Data for all, the fillers' first: their completions fill the CQ.
            for (_, y) in &fillers {
                y.send(b"x").unwrap();
            }
            peer.write_all(b"first").unwrap();
            // One loop turn: the receives complete; the CQ holds 8 completions, the rest wait.
            uring::yield_now().await;
            drop(first);
            peer.write_all(b"second").unwrap();
            let mut got = Vec::new();
            while got.len() < 11 {
                let (res, buf) = timeout(WHOLE, a.read(zeroed_buf(64)))
                    .await
                    .expect("the bytes never arrived: a dropped read lost them");
                let n = res.unwrap();
                assert!(n > 0, "end of stream before every byte arrived");
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, b"firstsecond", "the dropped read's bytes come first");
            drop(filler_recvs);
        });
    });
}

/// A read abandoned on one runtime is only completed when that runtime's loop turns. A read of
/// the same stream on another runtime must neither wait for it (it would wait forever) nor go
/// ahead (it could overtake the abandoned read's bytes): it fails with `ResourceBusy`. Once the
/// first runtime is gone (its drain completed the abandoned read), reads work again and every
/// byte arrives.
#[test]
fn a_read_on_another_runtime_fails_while_one_abandoned_elsewhere_is_in_flight() {
    serial(LIMIT, || {
        let (a, b) = UnixStream::pair().unwrap();
        let first = uring::Runtime::new().unwrap();
        first.block_on(async {
            let mut read = Box::pin(a.read(zeroed_buf(8)));
            assert!(poll_once(&mut read).await.is_pending());
            // Abandoned; `first` will not turn again until it is dropped.
        });
        let second = uring::Runtime::new().unwrap();
        second.block_on(async {
            b.write_all(b"x".to_vec()).await.0.unwrap();
            let (res, _) = timeout(WHOLE, a.read(zeroed_buf(8)))
                .await
                .expect("the read waited for a read abandoned on another runtime");
            let e = res.unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy, "{e}");
        });
        drop(first);
        second.block_on(async {
            let (res, buf) = timeout(WHOLE, a.read(zeroed_buf(8)))
                .await
                .expect("the byte never arrived");
            assert_eq!(&buf[..res.unwrap()], b"x", "the byte is not lost");
        });
        drop(second);
    });
}

/// Starts a read on `s` and drops it before any data can arrive. Alternates between a plain
/// read (IORING_OP_RECV) and a vectored one (IORING_OP_RECVMSG).
async fn abandoned_read(s: &TcpStream, vectored: bool, wait_ms: u64) {
    let wait = Duration::from_millis(wait_ms);
    let elapsed = if vectored {
        timeout(
            wait,
            s.readv(vec![zeroed_capacity(16), zeroed_capacity(48)]),
        )
        .await
        .is_err()
    } else {
        timeout(wait, s.read(zeroed_capacity(64))).await.is_err()
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

/// 1,000 connections whose reads are dropped mid-flight (inside `timeout`, and by aborting the
/// task) while nothing is in flight, then used again: every byte written afterwards arrives in
/// order, and no fd or buffer leaks.
#[test]
fn dropped_reads_lose_no_bytes_and_leak_nothing() {
    let valgrind = under_valgrind();
    let (conns, rounds, drops) = if valgrind { (40, 2, 2) } else { (1000, 3, 3) };
    let msg_len = 300;
    serial(Duration::from_secs(900), move || {
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
                            let _ = victim.read(zeroed_capacity(32)).await;
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
                            let (res, got) =
                                timeout(WHOLE, reader.read_exact(zeroed_capacity(msg_len)))
                                    .await
                                    .unwrap_or_else(|_| {
                                        panic!(
                                            "connection {i} round {round}: the message never \
                                             arrived whole: a dropped read took bytes"
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
                    let (res, _) = c.read(zeroed_capacity(8)).await;
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
