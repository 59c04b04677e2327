//! Provided buffer rings: `BufRing` and `Stream::recv_multishot`.
//!
//! Every transfer is compared byte for byte against a position-dependent pattern, so a lost,
//! repeated or reordered chunk fails. Each test runs in three modes: the multishot receive
//! (this kernel's), single-shot receives with buffer select (what a 5.19 kernel gets) and an
//! unregistered ring (before 5.19).
//!
//! The peers that send (and check an echo) are tasks on the test's runtime, not threads:
//! valgrind before 3.23 keeps its lock, which lets one thread run at a time, while a thread
//! waits in `io_uring_enter`, so a peer thread could never run while the runtime waited for its
//! bytes (the whole process froze). With every peer on the runtime, only the kernel has to
//! move for the test to go on.
//!
//! valgrind: the ring's memory is zeroed at allocation and every buffer a read fills is zeroed
//! first (valgrind cannot see the kernel's writes), and transfers shrink under
//! `URING_VALGRIND`; `.ci/run` runs it so:
//!
//! ```text
//! URING_VALGRIND=1 valgrind --error-exitcode=1 --leak-check=full \
//!     --errors-for-leak-kinds=definite target/debug/deps/bufring-HASH --test-threads=1
//! ```

use std::cell::Cell;
use std::io::{self, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};
use uring::buf::{BufRing, RingBuf};
use uring::io::AsyncWriteOwned;
use uring::net::{RecvMultishot, TcpStream, UnixStream};
use uring::task::JoinHandle;
use uring::time::sleep;
use uring_tests::net::{stream_byte, tcp_pair, tcp_pair_with_std};
use uring_tests::{run_watched, scaled, under_valgrind, zeroed_buf};

const LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Multishot,
    SingleShot,
    Unregistered,
}

const MODES: [Mode; 3] = [Mode::Multishot, Mode::SingleShot, Mode::Unregistered];

fn ring(mode: Mode, count: u16, size: usize) -> BufRing {
    match mode {
        Mode::Unregistered => BufRing::new_unregistered(count, size).unwrap(),
        _ => {
            let ring = BufRing::new(count, size).unwrap();
            assert!(
                ring.is_registered(),
                "this kernel has provided buffer rings"
            );
            ring
        }
    }
}

fn recv(stream: &impl Receiver, ring: &BufRing, mode: Mode) -> RecvMultishot {
    let mut bufs = stream.recv_multishot_on(ring);
    match mode {
        Mode::Multishot => assert!(bufs.is_multishot()),
        Mode::SingleShot => bufs.force_single_shot(),
        Mode::Unregistered => assert!(!bufs.is_multishot()),
    }
    bufs
}

/// TCP and Unix streams alike.
trait Receiver {
    fn recv_multishot_on(&self, ring: &BufRing) -> RecvMultishot;
    fn read_some(&self, cap: usize) -> impl std::future::Future<Output = io::Result<Vec<u8>>>;
}

impl Receiver for TcpStream {
    fn recv_multishot_on(&self, ring: &BufRing) -> RecvMultishot {
        self.recv_multishot(ring)
    }
    async fn read_some(&self, cap: usize) -> io::Result<Vec<u8>> {
        let (res, buf) = self.read(vec![0u8; cap]).await;
        res.map(|n| buf[..n].to_vec())
    }
}

impl Receiver for UnixStream {
    fn recv_multishot_on(&self, ring: &BufRing) -> RecvMultishot {
        self.recv_multishot(ring)
    }
    async fn read_some(&self, cap: usize) -> io::Result<Vec<u8>> {
        let (res, buf) = self.read(vec![0u8; cap]).await;
        res.map(|n| buf[..n].to_vec())
    }
}

/// Bytes `from..from + len` of the test stream.
fn bytes(from: usize, len: usize) -> Vec<u8> {
    (from..from + len).map(stream_byte).collect()
}

/// Sends `total` bytes of the stream pattern from a task on this runtime, in 256 KiB writes,
/// then shuts the writing down (a task, not a thread: see the top of the file).
fn send_on_task(w: impl AsyncWriteOwned + 'static, total: usize) -> JoinHandle<()> {
    uring::spawn(async move {
        let mut at = 0;
        while at < total {
            let n = (total - at).min(256 << 10);
            if w.write_all(bytes(at, n)).await.0.is_err() {
                return;
            }
            at += n;
        }
        let _ = w.shutdown_write().await;
    })
}

/// Checks `chunk` against the pattern at `*at` and moves on.
fn check(chunk: &[u8], at: &mut usize) {
    assert!(
        chunk == bytes(*at, chunk.len()).as_slice(),
        "bytes differ in the {} bytes from {}",
        chunk.len(),
        *at
    );
    *at += chunk.len();
}

/// Waits until every buffer is back in the ring (the dropped stream's completions reaped).
async fn all_back(ring: &BufRing) {
    let start = Instant::now();
    while ring.available() != ring.count() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} of {} buffers came back",
            ring.available(),
            ring.count()
        );
        sleep(Duration::from_millis(2)).await;
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    run_watched(LIMIT, || async {
        for (count, size) in [(0, 4096), (3, 4096), (6, 1), (4, 0), (4, 1usize << 32)] {
            let e = BufRing::new(count, size).unwrap_err();
            assert_eq!(
                e.kind(),
                io::ErrorKind::InvalidInput,
                "{count} x {size}: {e}"
            );
            let e = BufRing::new_unregistered(count, size).unwrap_err();
            assert_eq!(
                e.kind(),
                io::ErrorKind::InvalidInput,
                "{count} x {size}: {e}"
            );
        }
        let ring = BufRing::new(1, 1).unwrap();
        assert_eq!(
            (ring.count(), ring.buf_capacity(), ring.available()),
            (1, 1, 1)
        );
    });
    let e = BufRing::new(4, 4096).unwrap_err();
    assert!(e.to_string().contains("runtime"), "{e}");
}

#[test]
fn a_ring_of_another_runtime_is_an_error_not_a_hang() {
    uring_tests::watchdog(LIMIT, || {
        let a = uring::Runtime::new().unwrap();
        let b = uring::Runtime::new().unwrap();
        let ring = a.block_on(async { BufRing::new(4, 1024).unwrap() });
        b.block_on(async {
            let (s, mut peer) = tcp_pair_with_std();
            peer.write_all(b"x").unwrap();
            let mut bufs = s.recv_multishot(&ring);
            let e = bufs.next().await.unwrap().unwrap_err();
            assert!(e.to_string().contains("another"), "{e}");
            assert!(bufs.next().await.is_none(), "the stream ended");
            // The byte is still there for a plain read.
            let (res, buf) = s.read(vec![0u8; 4]).await;
            assert_eq!(&buf[..res.unwrap()], b"x");
        });
        drop(ring);
    });
}

#[test]
fn eof_ends_the_stream() {
    for mode in MODES {
        run_watched(LIMIT, move || async move {
            let ring = ring(mode, 4, 64);
            let (s, mut peer) = tcp_pair_with_std();
            peer.write_all(b"the last words").unwrap();
            drop(peer);
            let mut bufs = recv(&s, &ring, mode);
            let mut got = Vec::new();
            while let Some(buf) = bufs.next().await {
                got.extend_from_slice(&buf.unwrap());
            }
            assert_eq!(got, b"the last words", "{mode:?}");
            assert!(bufs.next().await.is_none(), "{mode:?}: stays ended");
            drop(bufs);
            all_back(&ring).await;
        });
    }
}

/// 64 MiB through a ring of 4 buffers of 4 KiB with a consumer slow at first: the kernel runs
/// out of buffers (`ENOBUFS`) again and again; the stream re-arms without a busy loop, and
/// everything is echoed back intact.
#[test]
fn echo_64_mib_through_a_ring_smaller_than_the_data_in_flight() {
    for mode in MODES {
        run_watched(LIMIT, move || async move {
            let total = scaled(64 << 20);
            let ring = ring(mode, 4, 4096);
            let (s, peer) = tcp_pair().await;
            let (peer_reader, peer_writer) = peer.into_split();
            let sender = send_on_task(peer_writer, total);
            // The checker's reads are RECVs too: counted, to leave them out of the stream's.
            let checker_recvs = Rc::new(Cell::new(0u64));
            let checker = uring::spawn({
                let checker_recvs = checker_recvs.clone();
                async move {
                    let mut at = 0;
                    let mut buf = zeroed_buf(1 << 16);
                    while at < total {
                        checker_recvs.set(checker_recvs.get() + 1);
                        let (res, b) = peer_reader.read(buf).await;
                        let n = res.unwrap();
                        assert!(n > 0, "echo ended at {at} of {total}");
                        check(&b[..n], &mut at);
                        buf = b;
                    }
                }
            });
            let stream_recvs =
                || uring::metrics().submitted(io_uring::opcode::Recv::CODE) - checker_recvs.get();
            // Slow at first: the socket's buffers fill and the ring runs dry.
            let mut bufs = recv(&s, &ring, mode);
            let first = bufs.next().await.unwrap().unwrap();
            sleep(Duration::from_millis(100)).await;
            let recvs_before = stream_recvs();
            let mut received = first.len();
            let mut chunks = 1u64;
            let mut at = 0;
            check(&first, &mut at);
            s.write_all(first).await.0.unwrap();
            while received < total {
                let buf = bufs.next().await.expect("no early end").unwrap();
                assert!(buf.len() <= 4096);
                check(&buf, &mut at);
                received += buf.len();
                chunks += 1;
                // Echoed from the ring's memory; the buffer goes back once written.
                s.write_all(buf).await.0.unwrap();
            }
            let recvs = stream_recvs() - recvs_before;
            sender.await.unwrap();
            checker.await.unwrap();
            assert!(
                bufs.next().await.is_none(),
                "{mode:?}: end of stream after {total}"
            );
            // No busy loop: every re-arm follows a buffer taken or given back.
            assert!(
                recvs <= chunks + 2,
                "{mode:?}: {recvs} receives for {chunks} chunks"
            );
            if mode == Mode::Multishot && !under_valgrind() {
                assert!(recvs > 1, "the ring of 4 ran dry and was re-armed");
            }
            drop(bufs);
            all_back(&ring).await;
        });
    }
}

/// Several streams share one small ring; each gets its bytes intact.
#[test]
fn streams_share_a_ring() {
    for mode in MODES {
        run_watched(LIMIT, move || async move {
            let total = scaled(8 << 20);
            let ring = ring(mode, 8, 2048);
            let mut tasks = Vec::new();
            let mut senders = Vec::new();
            for _ in 0..3 {
                let (s, peer) = tcp_pair().await;
                senders.push(send_on_task(peer, total));
                let ring = ring.clone();
                tasks.push(uring::spawn(async move {
                    let mut bufs = recv(&s, &ring, mode);
                    let mut at = 0;
                    while let Some(buf) = bufs.next().await {
                        let buf = buf.unwrap();
                        check(&buf, &mut at);
                        if at.is_multiple_of(7) {
                            uring::yield_now().await;
                        }
                    }
                    at
                }));
            }
            for t in tasks {
                assert_eq!(t.await.unwrap(), total, "{mode:?}");
            }
            for s in senders {
                s.await.unwrap();
            }
            all_back(&ring).await;
        });
    }
}

/// Drops the stream while data arrives, at several points, then reads the rest with plain
/// reads: nothing lost, nothing reordered, and every buffer back in the ring.
fn drop_mid_transfer<S: Receiver + 'static, P: AsyncWriteOwned + 'static>(
    mode: Mode,
    pair: impl FnOnce() -> (S, P) + Send + 'static,
) {
    run_watched(LIMIT, move || async move {
        let total = scaled(16 << 20);
        let ring = ring(mode, 8, 4096);
        let (s, peer) = pair();
        let sender = send_on_task(peer, total);
        let mut at = 0;
        let mut held: Vec<RingBuf> = Vec::new();
        let mut round = 0usize;
        // Alternate multishot streams (dropped at various points) and plain reads.
        while at < total {
            let mut bufs = recv(&s, &ring, mode);
            for _ in 0..(round % 5) + 1 {
                match bufs.next().await {
                    Some(buf) => {
                        let buf = buf.unwrap();
                        check(&buf, &mut at);
                        held.push(buf);
                    }
                    None => break,
                }
            }
            match round % 3 {
                // Completions queue for the stream, then it goes.
                0 => sleep(Duration::from_millis(3)).await,
                1 => uring::yield_now().await,
                _ => {}
            }
            drop(bufs);
            // Some buffers stay held into the next round, never so many that the ring could run
            // dry for good (a consumer holding every buffer waits for one forever).
            if round.is_multiple_of(2) {
                held.clear();
            } else {
                held.truncate(2);
            }
            if at < total {
                let chunk = s.read_some(3000).await.unwrap();
                assert!(!chunk.is_empty(), "early end at {at}");
                check(&chunk, &mut at);
            }
            round += 1;
        }
        assert!(s.read_some(10).await.unwrap().is_empty(), "end of stream");
        sender.await.unwrap();
        drop(held);
        all_back(&ring).await;
        // Every buffer can be had at once by a new stream.
        assert_eq!(ring.available(), ring.count());
    });
}

#[test]
fn dropping_the_stream_mid_transfer_loses_nothing_tcp() {
    for mode in MODES {
        drop_mid_transfer(mode, || {
            let (s, peer) = tcp_pair_with_std();
            (s, TcpStream::from_std(peer).unwrap())
        });
    }
}

#[test]
fn dropping_the_stream_mid_transfer_loses_nothing_unix() {
    for mode in MODES {
        drop_mid_transfer(mode, || UnixStream::pair().unwrap());
    }
}

/// A dropped stream gives every buffer back; a new stream can then hold all of them at once.
#[test]
fn a_dropped_stream_returns_every_buffer() {
    for mode in MODES {
        run_watched(LIMIT, move || async move {
            let count = 8u16;
            let size = 1024;
            let ring = ring(mode, count, size);
            let (s, peer) = UnixStream::pair().unwrap();
            let total = 64 * size;
            let sender = send_on_task(peer, total);
            let mut at = 0;
            {
                let mut bufs = recv(&s, &ring, mode);
                let one = bufs.next().await.unwrap().unwrap();
                check(&one, &mut at);
                assert!(ring.available() < ring.count());
                // Let the kernel fill the rest of the ring for the stream, then drop it.
                sleep(Duration::from_millis(20)).await;
                drop(bufs);
                drop(one);
            }
            all_back(&ring).await;
            let mut bufs = recv(&s, &ring, mode);
            let mut held = Vec::new();
            while held.len() < usize::from(count) {
                let buf = bufs.next().await.unwrap().unwrap();
                check(&buf, &mut at);
                held.push(buf);
            }
            // Holding them all (bytes the first stream's late completions left in the stash
            // come first, as heap buffers), at least one is the ring's.
            assert!(ring.available() < ring.count());
            drop(held);
            while let Some(buf) = bufs.next().await {
                check(&buf.unwrap(), &mut at);
            }
            assert_eq!(at, total);
            sender.await.unwrap();
            drop(bufs);
            all_back(&ring).await;
        });
    }
}
