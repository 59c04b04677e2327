//! Registered buffers: `FixedBufPool` and `FixedBuf` with files (`READ_FIXED`/`WRITE_FIXED`),
//! pipes and sockets, compared byte for byte; a pool exhausted and waited on; buffers held by
//! ops whose futures were dropped stay out of the pool until their CQE (run under valgrind by
//! `.ci/run`); bad input; pools coming and going.

use std::future::Future;
use std::io::Read;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;
use uring::buf::{FixedBuf, FixedBufPool, IoBuf};
use uring::fs::File;
use uring::net::{TcpListener, TcpStream};
use uring_tests::{pipe, run_watched, scaled, Rng, TempDir};

const LIMIT: Duration = Duration::from_secs(120);

fn run<T: Send + 'static, F: Future<Output = T> + 'static>(
    make: impl FnOnce() -> F + Send + 'static,
) -> T {
    run_watched(LIMIT, make)
}

/// Polls `fut` once: whether it finished.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *fut).poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

#[test]
fn file_reads_and_writes_through_registered_buffers_match_byte_for_byte() {
    run(|| async {
        let dir = TempDir::new("fixed-file");
        let path = dir.path("data");
        let size = 64 * 1024;
        let count = 8;
        let pool = FixedBufPool::new(count, size).unwrap();
        assert!(
            pool.is_registered(),
            "this kernel has a sparse buffer table"
        );
        assert_eq!((pool.count(), pool.buf_capacity()), (count, size));
        let data = Rng(11).bytes(scaled(4 << 20));
        let file = uring::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .unwrap();
        // Written in pieces, each through a registered buffer, all in flight at once.
        let file = Rc::new(file);
        let mut writes = Vec::new();
        for (i, piece) in data.chunks(size).enumerate() {
            let mut buf = pool.next().await;
            assert!(buf.fixed_index().is_some(), "a slot on this runtime's ring");
            buf.extend_from_slice(piece);
            let file = file.clone();
            writes.push(uring::spawn(async move {
                let (res, buf) = file.write_all_at(buf, (i * size) as u64).await;
                res.unwrap();
                drop(buf);
            }));
        }
        for w in writes {
            w.await.unwrap();
        }
        assert_eq!(pool.available(), count, "every buffer back");
        file.sync_all().await.unwrap();
        assert!(std::fs::read(&path).unwrap() == data, "the file as written");

        // Read back whole, and through slices at odd offsets.
        let mut back = Vec::with_capacity(data.len());
        let mut pos = 0;
        while pos < data.len() {
            let buf = pool.get().unwrap();
            let (res, buf) = file.read_at(buf, pos as u64).await;
            let n = res.unwrap();
            assert_eq!(n, buf.len());
            back.extend_from_slice(&buf);
            pos += n;
        }
        assert!(back == data, "read back intact");
        let mut buf = pool.get().unwrap();
        // A read into a view fills it only if it starts within the filled bytes (as for a Vec).
        buf.set_len(100);
        let (res, slice) = file.read_at(buf.slice(100..5100), 12345).await;
        assert_eq!(res.unwrap(), 5000);
        let buf = slice.into_inner();
        assert_eq!(&buf[100..5100], &data[12345..17345]);
        std::fs::remove_file(&path).unwrap();
    });
}

#[test]
fn pipes_and_sockets_take_registered_buffers_too() {
    run(|| async {
        let pool = FixedBufPool::new(4, 16 * 1024).unwrap();
        // A pipe: reads and writes on any fd go through READ_FIXED/WRITE_FIXED.
        let (r, w) = pipe();
        let (r, w) = (File::from_std(r).unwrap(), File::from_std(w).unwrap());
        let mut buf = pool.get().unwrap();
        buf.extend_from_slice(b"through a pipe");
        let (res, buf) = w.write_at(buf, 0).await;
        assert_eq!(res.unwrap(), 14);
        drop(buf);
        let (res, buf) = r.read_at(pool.get().unwrap(), 0).await;
        assert_eq!(&buf[..res.unwrap()], b"through a pipe");
        drop(buf);

        // A socket: receives and sends take a FixedBuf like any buffer.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let data = Rng(3).bytes(scaled(1 << 20));
        let sent = data.clone();
        let pool2 = pool.clone();
        let sender = uring::spawn(async move {
            let s = TcpStream::connect(addr).await.unwrap();
            for piece in sent.chunks(16 * 1024) {
                let mut buf = pool2.next().await;
                buf.extend_from_slice(piece);
                let (res, _buf) = s.write_all(buf).await;
                res.unwrap();
            }
        });
        let (s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        loop {
            let (res, buf) = s.read(pool.next().await).await;
            if res.unwrap() == 0 {
                break;
            }
            got.extend_from_slice(&buf);
        }
        sender.await.unwrap();
        assert!(got == data, "the socket's bytes intact");
    });
}

#[test]
fn an_exhausted_pool_gives_none_and_next_waits_for_a_returned_buffer() {
    run(|| async {
        let pool = FixedBufPool::new(2, 512).unwrap();
        let a = pool.get().unwrap();
        let b = pool.get().unwrap();
        assert!(pool.get().is_none());
        assert_eq!(pool.available(), 0);

        // Two waiters, served in order.
        let (p1, p2) = (pool.clone(), pool.clone());
        let order = Rc::new(std::cell::RefCell::new(Vec::new()));
        let (o1, o2) = (order.clone(), order.clone());
        let first = uring::spawn(async move {
            let buf = p1.next().await;
            o1.borrow_mut().push(1);
            buf
        });
        uring::yield_now().await;
        let second = uring::spawn(async move {
            let buf = p2.next().await;
            o2.borrow_mut().push(2);
            buf
        });
        uring::time::sleep(Duration::from_millis(20)).await;
        assert!(order.borrow().is_empty(), "nobody got a buffer yet");
        drop(a);
        let got1 = first.await.unwrap();
        assert_eq!(*order.borrow(), [1]);
        drop(b);
        let got2 = second.await.unwrap();
        assert_eq!(*order.borrow(), [1, 2]);
        assert!(pool.get().is_none());
        drop((got1, got2));
        assert_eq!(pool.available(), 2);

        // A waiter chosen for a buffer but dropped before it took it passes the turn on.
        let held = (pool.get().unwrap(), pool.get().unwrap());
        let mut chosen = Box::pin(pool.next());
        assert!(poll_once(&mut chosen).await.is_none());
        let later = pool.clone();
        let next_in_line = uring::spawn(async move { later.next().await.capacity() });
        uring::yield_now().await;
        drop(held.0); // chooses `chosen`, which is never polled again
        drop(chosen); // the future itself goes (a pinned box)
        assert_eq!(next_in_line.await.unwrap(), 512);
        drop(held.1);
    });
}

#[test]
fn a_buffer_held_by_a_dropped_read_stays_out_of_the_pool_until_its_completion() {
    run(|| async {
        let pool = FixedBufPool::new(1, 4096).unwrap();
        let (r, _w) = pipe();
        let r = File::from_std(r).unwrap();
        {
            let mut read = pin!(r.read_at(pool.get().unwrap(), 0));
            assert!(poll_once(&mut read).await.is_none(), "nothing to read yet");
            // Dropped here, with the read in flight: the op keeps the buffer, and the runtime
            // asks the kernel to cancel it.
        }
        assert!(
            pool.get().is_none(),
            "until the read's completion is reaped the kernel owns the only buffer"
        );
        // A waiter gets it once the (cancelled) read's completion came back.
        let buf = pool.next().await;
        assert_eq!(buf.len(), 0, "a buffer comes back empty");
        assert_eq!(pool.available(), 0);
        drop(buf);
        assert_eq!(pool.available(), 1);
    });
}

#[test]
fn a_pool_dropped_while_buffers_are_out_lives_until_the_last_one() {
    run(|| async {
        let dir = TempDir::new("fixed-outlive");
        let path = dir.path("f");
        std::fs::write(&path, b"still registered").unwrap();
        let pool = FixedBufPool::new(3, 64).unwrap();
        let buf = pool.get().unwrap();
        drop(pool);
        let file = File::open(&path).await.unwrap();
        let (res, buf) = file.read_at(buf, 0).await;
        assert_eq!(&buf[..res.unwrap()], b"still registered");
        drop(buf); // frees the pool: its slots are emptied, then its memory
                   // Room for a pool as large as the whole table again.
        let big = FixedBufPool::new(16384, 1).unwrap();
        assert_eq!(big.count(), 16384);
    });
}

#[test]
fn pools_that_come_and_go_give_their_slots_back() {
    run(|| async {
        for round in 0..50 {
            let pools: Vec<FixedBufPool> = (0..4)
                .map(|_| FixedBufPool::new(4000, 64).unwrap())
                .collect();
            assert!(
                FixedBufPool::new(1000, 64).is_err(),
                "round {round}: the table is full"
            );
            drop(pools);
        }
        let err = FixedBufPool::new(16385, 1).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    });
}

#[test]
fn bad_input_is_a_clear_error() {
    run(|| async {
        for (count, size) in [(0, 4096), (4, 0), (1, (1 << 30) + 1), (70_000, 1)] {
            let err = FixedBufPool::new(count, size).unwrap_err();
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::InvalidInput,
                "{count} x {size}"
            );
        }
        let mut buf = FixedBufPool::new(1, 8).unwrap().get().unwrap();
        buf.extend_from_slice(b"12345678");
        let overflow = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            buf.extend_from_slice(b"9");
        }));
        assert!(overflow.is_err(), "no write past the capacity");
        assert_eq!(&buf[..], b"12345678");
    });
    let outside = FixedBufPool::new(1, 8).unwrap_err();
    assert!(
        outside.to_string().contains("within a uring runtime"),
        "{outside}"
    );
}

#[test]
fn on_another_runtime_a_fixed_buffer_is_a_plain_one() {
    let dir = TempDir::new("fixed-other");
    let path = dir.path("f");
    std::fs::write(&path, b"any ring").unwrap();
    let rt1 = uring::Runtime::new().unwrap();
    let buf: FixedBuf = rt1.block_on(async { FixedBufPool::new(1, 64).unwrap().get().unwrap() });
    let rt2 = uring::Runtime::new().unwrap();
    let buf = rt2.block_on(async {
        assert_eq!(buf.fixed_index(), None, "the slot is rt1's");
        let file = File::open(&path).await.unwrap();
        let (res, buf) = file.read_at(buf, 0).await;
        assert_eq!(&buf[..res.unwrap()], b"any ring");
        buf
    });
    rt1.block_on(async { assert!(buf.fixed_index().is_some()) });
    drop(rt1);
    // The pool's runtime is gone: a runtime made later (maybe at the same address) does not
    // name its slot.
    let rt3 = uring::Runtime::new().unwrap();
    rt3.block_on(async { assert_eq!(buf.fixed_index(), None) });
    drop(buf);
    let mut std_file = std::fs::File::open(&path).unwrap();
    let mut s = String::new();
    std_file.read_to_string(&mut s).unwrap();
    assert_eq!(s, "any ring");
}

/// As an unprivileged user with an 8 MiB locked-memory limit (the usual default), a pool larger
/// than the limit is refused with the kernel's error and nothing stays registered (the kernel
/// registers buffers one by one and reports a partial count), and a pool within it works.
#[test]
fn a_pool_over_the_memlock_limit_is_refused_whole() {
    const ROLE: &str = "memlock";
    if uring_tests::is_child(ROLE) {
        let limit = libc::rlimit {
            rlim_cur: 8 << 20,
            rlim_max: 8 << 20,
        };
        // SAFETY: plain syscalls in a child process made for them: lower the limit, then drop
        // root (CAP_IPC_LOCK would skip the accounting) to the usual unprivileged uid.
        unsafe {
            assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit), 0);
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
        uring::run(async {
            let err = FixedBufPool::new(32, 1 << 20).unwrap_err();
            assert_eq!(err.raw_os_error(), None, "wrapped with a message: {err}");
            assert!(err.to_string().contains("RLIMIT_MEMLOCK"), "{err}");
            assert_eq!(err.kind(), std::io::ErrorKind::OutOfMemory, "{err}");
            // Nothing of the refused pool stays registered: a pool within the limit gets the
            // memory, and every one of its buffers reads.
            let pool = FixedBufPool::new(4, 1 << 20).unwrap();
            let dir = TempDir::new("fixed-memlock");
            let path = dir.path("data");
            let data = Rng(5).bytes(1 << 20);
            std::fs::write(&path, &data).unwrap();
            let file = File::open(&path).await.unwrap();
            let bufs: Vec<FixedBuf> = (0..4).map(|_| pool.get().unwrap()).collect();
            for buf in bufs {
                assert!(buf.fixed_index().is_some());
                let (res, buf) = file.read_at(buf, 0).await;
                assert_eq!(res.unwrap(), 1 << 20, "a registered buffer reads");
                assert!(buf[..] == data[..]);
            }
        });
        println!("child ok");
        return;
    }
    let out = uring_tests::run_child("a_pool_over_the_memlock_limit_is_refused_whole", ROLE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child ok"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
