//! `uring::io::splice` on its own (socket to socket, file to socket, pipe ends), byte for byte;
//! end of stream, errors, and dropped splices (no pipe leaks, no hang at shutdown); and the
//! splice path of `copy`/`copy_bidirectional` (bulk transfers spliced, half-close passed on).
//!
//! valgrind: every buffer a read fills is zeroed first (valgrind cannot see the kernel's
//! writes); `.ci/run` runs it under memcheck with `URING_VALGRIND=1`, which skips what
//! valgrind cannot do (see `child_pipes_splice`, `copy_to_a_foreign_writer_uses_buffers`).

use io_uring::opcode;
use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};
use uring::fs::File;
use uring::io::{AsyncReadOwned, AsyncWriteOwned};
use uring::net::{TcpListener, TcpStream, UnixStream};
use uring_tests::net::{pattern, serial, tcp_pair, LIMIT};
use uring_tests::{open_fds, under_valgrind, zeroed_buf, zeroed_empty, TempDir};

/// Runs a test on a fresh runtime, one at a time: some tests compare the process's open fds or
/// its copy statistics with a baseline, which another test running meanwhile would disturb.
fn serial_run<F: std::future::Future<Output = ()>>(make: impl FnOnce() -> F + Send + 'static) {
    serial(LIMIT, move || uring::run(make()))
}

/// Splices everything from `from` to `to` until end of stream, `chunk` at most per call.
async fn splice_to_end<R, W>(from: &R, to: &W, chunk: usize) -> io::Result<u64>
where
    R: uring::io::SpliceSource + ?Sized,
    W: uring::io::SpliceSink + ?Sized,
{
    let mut total = 0u64;
    loop {
        let n = uring::io::splice(from, to, chunk).await?;
        if n == 0 {
            return Ok(total);
        }
        assert!(n <= chunk, "a splice moved {n} bytes for a len of {chunk}");
        total += n as u64;
    }
}

/// Reads `s` to its end, into a zeroed buffer (not through `copy`, whose buffer valgrind sees
/// as never written: the kernel fills it).
async fn read_all<R: AsyncReadOwned>(s: &R) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = zeroed_buf(64 << 10);
    loop {
        let (res, b) = s.read(buf).await;
        let n = res.unwrap();
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&b[..n]);
        buf = b;
    }
}

fn spliced_ops() -> u64 {
    uring::metrics().submitted(opcode::Splice::CODE)
}

#[test]
fn socket_to_socket_is_byte_exact_and_ends_with_0() {
    serial_run(|| async {
        let (a, b) = tcp_pair().await;
        let (c, d) = tcp_pair().await;
        let data = pattern(8 << 20, 3);
        let sender = uring::spawn({
            let data = data.clone();
            async move {
                a.write_all(data).await.0.unwrap();
                a.shutdown_write().await.unwrap();
                a
            }
        });
        let reader = uring::spawn(async move { read_all(&d).await });
        let ops = spliced_ops();
        // Odd chunk sizes: short splices and chunks that do not line up with the pipe.
        let moved = splice_to_end(&b, &c, 100_003).await.unwrap();
        assert_eq!(moved, data.len() as u64);
        assert!(spliced_ops() > ops, "IORING_OP_SPLICE ran");
        // At end of stream: 0 again, not an error.
        assert_eq!(uring::io::splice(&b, &c, 4096).await.unwrap(), 0);
        c.shutdown_write().await.unwrap();
        let got = reader.await.unwrap();
        assert!(got == data, "socket to socket: every byte, in order");
        drop(sender.await.unwrap());
        // len 0 moves nothing and submits nothing.
        let ops = spliced_ops();
        assert_eq!(uring::io::splice(&b, &c, 0).await.unwrap(), 0);
        assert_eq!(spliced_ops(), ops);
    });
}

#[test]
fn unix_stream_halves_splice() {
    serial_run(|| async {
        let (a, b) = UnixStream::pair().unwrap();
        let (c, d) = UnixStream::pair().unwrap();
        let (b_read, _b_write) = b.into_split();
        let (_c_read, c_write) = c.into_split();
        let data = pattern(1 << 20, 9);
        let sender = uring::spawn({
            let data = data.clone();
            async move {
                a.write_all(data).await.0.unwrap();
                a.shutdown_write().await.unwrap();
                a
            }
        });
        let reader = uring::spawn(async move { read_all(&d).await });
        assert_eq!(
            splice_to_end(&b_read, &c_write, 1 << 20).await.unwrap(),
            data.len() as u64
        );
        c_write.shutdown_write().await.unwrap();
        assert!(reader.await.unwrap() == data);
        drop(sender.await.unwrap());
    });
}

#[test]
fn file_to_socket_from_the_files_position() {
    let dir = TempDir::new("splice-file");
    let path = dir.path("data");
    let data = pattern(3 << 20, 5);
    std::fs::write(&path, &data).unwrap();
    serial_run(move || async move {
        let file = File::open(&path).await.unwrap();
        let (a, b) = tcp_pair().await;
        let reader = uring::spawn(async move { read_all(&b).await });
        let moved = splice_to_end(&file, &a, 1 << 20).await.unwrap();
        assert_eq!(moved, data.len() as u64);
        // The file's position moved to its end: nothing more.
        assert_eq!(uring::io::splice(&file, &a, 4096).await.unwrap(), 0);
        // The positional reads neither use nor moved it.
        let (res, head) = file.read_at(zeroed_empty(4), 0).await;
        assert_eq!(res.unwrap(), 4);
        assert_eq!(head, data[..4]);
        a.shutdown_write().await.unwrap();
        assert!(reader.await.unwrap() == data, "file to socket: byte exact");

        // Socket to file, at the file's position.
        let out_path = path.with_extension("out");
        let out = File::create(&out_path).await.unwrap();
        let (c, d) = tcp_pair().await;
        let sender = uring::spawn({
            let data = data.clone();
            async move {
                c.write_all(data).await.0.unwrap();
                c.shutdown_write().await.unwrap();
                c
            }
        });
        assert_eq!(
            splice_to_end(&d, &out, 1 << 20).await.unwrap(),
            data.len() as u64
        );
        drop(sender.await.unwrap());
        out.sync_all().await.unwrap();
        assert!(std::fs::read(&out_path).unwrap() == data, "socket to file");
    });
}

#[test]
fn pipe_ends_splice_directly() {
    serial_run(|| async {
        // socket -> pipe (a File made from its write end): one op per call, no pipe between.
        let (r, w) = std::io::pipe().unwrap();
        let pipe_r = File::from_std(std::fs::File::from(OwnedFd::from(r))).unwrap();
        let pipe_w = File::from_std(std::fs::File::from(OwnedFd::from(w))).unwrap();
        let (a, b) = tcp_pair().await;
        let (c, d) = tcp_pair().await;
        let data = pattern(2 << 20, 7);
        let sender = uring::spawn({
            let data = data.clone();
            async move {
                a.write_all(data).await.0.unwrap();
                a.shutdown_write().await.unwrap();
                a
            }
        });
        let reader = uring::spawn(async move { read_all(&d).await });
        // pipe -> socket, concurrently.
        let out = uring::spawn(async move {
            let n = splice_to_end(&pipe_r, &c, 65_536).await.unwrap();
            c.shutdown_write().await.unwrap();
            n
        });
        let fds = open_fds();
        let moved = splice_to_end(&b, &pipe_w, 65_536).await.unwrap();
        assert_eq!(moved, data.len() as u64);
        assert_eq!(open_fds(), fds, "no pipe was made: one end is a pipe");
        drop(pipe_w);
        assert_eq!(out.await.unwrap(), data.len() as u64);
        assert!(
            reader.await.unwrap() == data,
            "through a pipe's ends: byte exact"
        );
        drop(sender.await.unwrap());
    });
}

#[test]
fn child_pipes_splice() {
    serial_run(|| async {
        // socket -> cat's stdin, cat's stdout -> socket.
        let spawned = uring::process::Command::new("cat")
            .stdin(uring::process::Stdio::piped())
            .stdout(uring::process::Stdio::piped())
            .spawn();
        let mut child = match spawned {
            // valgrind before 3.21 has no pidfd_open: no child can be spawned under it.
            Err(e) if under_valgrind() && e.raw_os_error() == Some(libc::ENOSYS) => return,
            spawned => spawned.unwrap(),
        };
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (a, b) = tcp_pair().await;
        let (c, d) = tcp_pair().await;
        let data = pattern(1 << 20, 11);
        let sender = uring::spawn({
            let data = data.clone();
            async move {
                a.write_all(data).await.0.unwrap();
                a.shutdown_write().await.unwrap();
                a
            }
        });
        let reader = uring::spawn(async move { read_all(&d).await });
        let out = uring::spawn(async move {
            let n = splice_to_end(&stdout, &c, 1 << 20).await.unwrap();
            c.shutdown_write().await.unwrap();
            n
        });
        assert_eq!(
            splice_to_end(&b, &stdin, 1 << 20).await.unwrap(),
            data.len() as u64
        );
        stdin.shutdown_write().await.unwrap();
        // A shut-down stdin is a typed error, not a panic.
        let e = uring::io::splice(&b, &stdin, 1).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(out.await.unwrap(), data.len() as u64);
        assert!(reader.await.unwrap() == data, "through cat: byte exact");
        assert!(child.wait().await.unwrap().success());
        drop(sender.await.unwrap());
    });
}

#[test]
fn errors_are_typed() {
    let dir = TempDir::new("splice-errors");
    let path = dir.path("ro");
    std::fs::write(&path, b"read only").unwrap();
    serial_run(move || async move {
        let (a, b) = tcp_pair().await;
        // A file opened read-only is no sink.
        let ro = File::open(&path).await.unwrap();
        a.write_all(b"x".to_vec()).await.0.unwrap();
        let e = uring::io::splice(&b, &ro, 16).await.unwrap_err();
        assert!(e.raw_os_error().is_some(), "an OS error: {e:?}");
        // The sink's peer is gone: EPIPE or ECONNRESET, not a hang.
        let (c, d) = tcp_pair().await;
        drop(d);
        let data = pattern(4 << 20, 1);
        let feeder = uring::spawn(async move {
            let _ = a.write_all(data).await;
            a
        });
        let mut err = None;
        for _ in 0..64 {
            match uring::io::splice(&b, &c, 1 << 20).await {
                Ok(_) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let e = err.expect("splicing into a closed peer fails");
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{e:?}"
        );
        drop(b);
        drop(feeder.await.unwrap());
    });
}

#[test]
fn a_dropped_splice_leaks_no_pipe_and_loses_no_fd() {
    serial(LIMIT, || {
        uring::run(async {
            let (a, b) = tcp_pair().await;
            let (c, d) = tcp_pair().await;
            // Warm up: a splice that completes leaves its pipe in the thread's cache.
            a.write_all(b"warm".to_vec()).await.0.unwrap();
            assert_eq!(uring::io::splice(&b, &c, 64).await.unwrap(), 4);
            let before = open_fds();
            for _ in 0..20 {
                // Nothing to read: the splice into the pipe waits in the kernel (an io-wq
                // worker) until its future is dropped.
                let r =
                    uring::time::timeout(Duration::from_millis(20), uring::io::splice(&b, &c, 64))
                        .await;
                assert!(r.is_err(), "nothing was sent: the splice is still waiting");
            }
            // The dropped splices' pipes close once their cancels complete.
            let deadline = Instant::now() + Duration::from_secs(20);
            while open_fds() > before {
                assert!(
                    Instant::now() < deadline,
                    "pipe fds leaked by dropped splices"
                );
                uring::time::sleep(Duration::from_millis(10)).await;
            }
            // The streams still work (the cancelled splices took nothing).
            a.write_all(b"after".to_vec()).await.0.unwrap();
            assert_eq!(uring::io::splice(&b, &c, 64).await.unwrap(), 5);
            let (res, got) = d.read_exact(zeroed_empty(9)).await;
            res.unwrap();
            assert_eq!(got, b"warmafter");
        });
        // A splice in flight when the runtime is dropped: shutdown cancels it, no hang.
        let before = open_fds();
        let start = Instant::now();
        uring::run(async {
            let (_a, b) = tcp_pair().await;
            let (c, _d) = tcp_pair().await;
            uring::spawn(async move {
                let _ = uring::io::splice(&b, &c, 64).await;
            });
            uring::time::sleep(Duration::from_millis(20)).await;
        });
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "shutdown waited for a splice: {:?}",
            start.elapsed()
        );
        assert!(open_fds() <= before, "fds left after the runtime shut down");
    });
}

/// A proxy of one connection pair: `copy_bidirectional(client side, upstream side)`.
#[test]
fn copy_bidirectional_splices_bulk_and_passes_half_close_on() {
    serial_run(|| async {
        let origin = TcpListener::bind("127.0.0.1:0").unwrap();
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let (up_addr, front_addr) = (origin.local_addr().unwrap(), front.local_addr().unwrap());
        let proxy = uring::spawn(async move {
            let (client, _) = front.accept().await.unwrap();
            let server = TcpStream::connect(up_addr).await.unwrap();
            uring::io::copy_bidirectional(&client, &server).await
        });
        let client = TcpStream::connect(front_addr).await.unwrap();
        let (up, _) = origin.accept().await.unwrap();
        let stats = uring::io::copy_stats();
        let ops = spliced_ops();
        // 1. The client uploads 24 MiB and half-closes; the origin reads it all, then EOF.
        let upload = pattern(24 << 20, 2);
        let sent = uring::spawn({
            let upload = upload.clone();
            async move {
                client.write_all(upload).await.0.unwrap();
                client.shutdown_write().await.unwrap();
                client
            }
        });
        let got = read_all(&up).await;
        assert!(
            got == upload,
            "upload through the splice path: byte exact, then EOF"
        );
        let client = sent.await.unwrap();
        // 2. After the client's EOF, the origin answers 16 MiB and closes.
        let answer = pattern(16 << 20, 4);
        let answering = uring::spawn({
            let answer = answer.clone();
            async move {
                up.write_all(answer).await.0.unwrap();
                up.shutdown_write().await.unwrap();
                up
            }
        });
        let reply = read_all(&client).await;
        drop(answering.await.unwrap());
        assert!(reply == answer, "answer after the half-close: byte exact");
        let (to_up, to_client) = proxy.await.unwrap().unwrap();
        assert_eq!((to_up, to_client), (24 << 20, 16 << 20));
        let after = uring::io::copy_stats();
        let spliced = after.spliced - stats.spliced;
        assert!(
            spliced > 0 && spliced <= 40 << 20,
            "bulk was spliced: {spliced}"
        );
        assert!(spliced_ops() > ops);
    });
}

#[test]
fn copy_of_small_messages_does_not_splice() {
    serial_run(|| async {
        let (a, b) = tcp_pair().await;
        let (c, d) = tcp_pair().await;
        let ops = spliced_ops();
        let copier = uring::spawn(async move { uring::io::copy(&b, &c).await.unwrap() });
        for i in 0..200u32 {
            a.write_all(vec![i as u8; 1024]).await.0.unwrap();
            let (res, got) = d.read_exact(zeroed_empty(1024)).await;
            res.unwrap();
            assert_eq!(got, vec![i as u8; 1024]);
        }
        a.shutdown_write().await.unwrap();
        assert_eq!(copier.await.unwrap(), 200 * 1024);
        assert_eq!(spliced_ops(), ops, "request/response traffic never splices");
    });
}

/// A writer that is not one of the crate's streams: copy falls back to buffers for it.
struct Collect(RefCell<Vec<u8>>);

impl AsyncWriteOwned for Collect {
    async fn write<B: uring::buf::IoBuf>(&self, buf: B) -> uring::BufResult<usize, B> {
        // SAFETY: the IoBuf contract: `bytes_init()` bytes at `stable_ptr()` are initialized.
        let bytes = unsafe { std::slice::from_raw_parts(buf.stable_ptr(), buf.bytes_init()) };
        self.0.borrow_mut().extend_from_slice(bytes);
        (Ok(bytes.len()), buf)
    }

    async fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn copy_to_a_foreign_writer_uses_buffers() {
    serial_run(|| async {
        let (a, b) = tcp_pair().await;
        let data = pattern(4 << 20, 8);
        let sender = uring::spawn({
            let data = data.clone();
            async move {
                a.write_all(data).await.0.unwrap();
                a.shutdown_write().await.unwrap();
                a
            }
        });
        let ops = spliced_ops();
        let sink = Collect(RefCell::new(Vec::new()));
        assert_eq!(uring::io::copy(&b, &sink).await.unwrap(), data.len() as u64);
        assert_eq!(spliced_ops(), ops);
        let got = sink.0.into_inner();
        assert_eq!(got.len(), data.len());
        // Bytes the kernel wrote into copy's own buffer, which valgrind sees as never written:
        // compared without valgrind only.
        if !under_valgrind() {
            assert!(got == data);
        }
        drop(sender.await.unwrap());
    });
}
