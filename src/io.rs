//! Moving bytes between owned-buffer streams.
//!
//! [`AsyncReadOwned`] and [`AsyncWriteOwned`] describe a byte stream whose reads and writes take
//! owned buffers (the kernel holds a buffer while an operation is in flight, see [`crate::buf`]).
//! TCP and Unix streams and their owned halves implement them. [`copy`] and
//! [`copy_bidirectional`] build on them: the heart of a proxy.
//!
//! ```
//! use uring::net::{TcpListener, TcpStream};
//!
//! uring::run(async {
//!     let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let front = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let (up_addr, front_addr) = (upstream.local_addr().unwrap(), front.local_addr().unwrap());
//!
//!     // A one-connection proxy: front -> upstream.
//!     let proxy = uring::spawn(async move {
//!         let (client, _) = front.accept().await.unwrap();
//!         let server = TcpStream::connect(up_addr).await.unwrap();
//!         uring::io::copy_bidirectional(&client, &server).await.unwrap()
//!     });
//!     // The upstream answers whatever it got once the client finished sending.
//!     let origin = uring::spawn(async move {
//!         let (s, _) = upstream.accept().await.unwrap();
//!         let (res, got) = s.read(Vec::with_capacity(64)).await;
//!         res.unwrap();
//!         let (res, eof) = s.read(Vec::with_capacity(1)).await;
//!         assert_eq!(res.unwrap(), 0, "the client's half-close reached the upstream");
//!         drop(eof);
//!         s.write_all(got).await.0.unwrap();
//!     });
//!
//!     let client = TcpStream::connect(front_addr).await.unwrap();
//!     client.write_all(b"ping".to_vec()).await.0.unwrap();
//!     client.shutdown(std::net::Shutdown::Write).await.unwrap();
//!     let (res, reply) = client.read_exact(Vec::with_capacity(4)).await;
//!     res.unwrap();
//!     assert_eq!(reply, b"ping");
//!     origin.await.unwrap();
//!     assert_eq!(proxy.await.unwrap(), (4, 4));
//! });
//! ```

use crate::buf::{IoBuf, IoBufMut, Slice};
use crate::BufResult;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::Poll;

mod splice;

pub use splice::{copy_stats, splice, CopyStats, SpliceEnd, SpliceSink, SpliceSource};
pub(crate) use splice::{Leftover, Leftovers};

/// Size of the buffer each direction of a copy reads into.
const COPY_BUF: usize = 64 * 1024;

/// A byte stream read with owned buffers.
pub trait AsyncReadOwned {
    /// Reads into `buf` from its start up to its capacity (`bytes_total()`); returns how many
    /// bytes were read, 0 at end of stream, and gives the buffer back.
    fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>>;

    /// Reads until `buf` is full (`bytes_total()` bytes). An end of stream before that is an
    /// [`io::ErrorKind::UnexpectedEof`] error; the buffer then holds what did arrive.
    fn read_exact<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<(), B>> {
        read_exact(self, buf)
    }

    /// This reader as the source of a [`splice()`], for [`copy`] and [`copy_bidirectional`] to
    /// move bulk transfers inside the kernel; `None` (the default) makes them use buffers. The
    /// crate's streams, their read halves and a child's stdout and stderr return `Some`; a
    /// wrapper may pass on its inner stream's.
    fn as_splice_source(&self) -> Option<SpliceEnd> {
        None
    }
}

/// A byte stream written with owned buffers.
pub trait AsyncWriteOwned {
    /// Writes the buffer's initialized bytes; returns how many the stream took (maybe fewer)
    /// and gives the buffer back.
    fn write<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>>;

    /// Shuts down the write side: the peer reads end of stream once it has read everything
    /// written before. Reading goes on.
    fn shutdown_write(&self) -> impl Future<Output = io::Result<()>>;

    /// Writes all of the buffer's initialized bytes, looping over short writes. A write that
    /// takes nothing is an [`io::ErrorKind::WriteZero`] error.
    fn write_all<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<(), B>> {
        write_all(self, buf)
    }

    /// This writer as the sink of a [`splice()`], for [`copy`] and [`copy_bidirectional`];
    /// `None` (the default) makes them use buffers. The crate's streams, their write halves and
    /// a child's stdin return `Some`; a wrapper may pass on its inner stream's.
    fn as_splice_sink(&self) -> Option<SpliceEnd> {
        None
    }
}

/// Reads until `buf` is full; see [`AsyncReadOwned::read_exact`].
pub(crate) async fn read_exact<R: AsyncReadOwned + ?Sized, B: IoBufMut>(
    reader: &R,
    buf: B,
) -> BufResult<(), B> {
    let total = buf.bytes_total();
    until_done(buf, total, Short::Read, |slice, _| reader.read(slice)).await
}

/// Writes all initialized bytes of `buf`; see [`AsyncWriteOwned::write_all`].
pub(crate) async fn write_all<W: AsyncWriteOwned + ?Sized, B: IoBuf>(
    writer: &W,
    buf: B,
) -> BufResult<(), B> {
    let total = buf.bytes_init();
    until_done(buf, total, Short::Write, |slice, _| writer.write(slice)).await
}

/// Which transfer [`until_done`] loops over: what a transfer of 0 bytes means.
#[derive(Clone, Copy)]
pub(crate) enum Short {
    /// 0 bytes read: the stream or file ended before the buffer was full.
    Read,
    /// 0 bytes written: the stream or file took nothing.
    Write,
}

/// The loop behind every `read_exact` and `write_all`: runs `step` on the part of `buf` from
/// `done` to `total` (and the offset `done`, for positional I/O) until all of it is transferred.
/// `Interrupted` is retried; 0 bytes is an `UnexpectedEof` (reads) or `WriteZero` (writes)
/// error; any other error ends the loop. The buffer comes back in every case.
pub(crate) async fn until_done<B, F, Fut>(
    mut buf: B,
    total: usize,
    short: Short,
    mut step: F,
) -> BufResult<(), B>
where
    B: IoBuf,
    F: FnMut(Slice<B>, usize) -> Fut,
    Fut: Future<Output = BufResult<usize, Slice<B>>>,
{
    let mut done = 0;
    while done < total {
        let (res, slice) = step(buf.slice(done..total), done).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                let e = match short {
                    Short::Read => io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("end of stream after {done} of {total} bytes"),
                    ),
                    Short::Write => io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("0 bytes taken after {done} of {total}"),
                    ),
                };
                return (Err(e), buf);
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

/// Copies everything `reader` yields to `writer` until `reader` reaches end of stream; returns
/// the number of bytes copied. It does not shut `writer` down.
///
/// Between two of the crate's streams (both give a [`SpliceEnd`]) a bulk transfer moves inside
/// the kernel: reads go through a 64 KiB buffer until the direction has moved 256 KiB and a
/// read filled the whole buffer (more is waiting); then [`splice()`] takes over, through a pipe
/// kept for this copy, for as long as each splice fills the pipe; a splice that moves less (the
/// sender paused) goes back to buffered reads, which wait on the ring without holding a kernel
/// worker. So request/response traffic never splices and pays nothing for it.
/// [`copy_stats`] counts the bytes each way moved.
///
/// The rule comes from measurement (the guide's "Splice" section): through a proxy, splicing
/// took 0.45x the CPU per GiB of buffers in bulk and 0.8x at 256 KiB responses, but 1.2-1.3x
/// per request for 1-64 KiB messages.
///
/// # Errors
///
/// The first error of a read, a write or a splice.
pub async fn copy<R, W>(reader: &R, writer: &W) -> io::Result<u64>
where
    R: AsyncReadOwned + ?Sized,
    W: AsyncWriteOwned + ?Sized,
{
    let ends = match (reader.as_splice_source(), writer.as_splice_sink()) {
        (Some(s), Some(d)) if splice::supported() => Some((s, d)),
        _ => None,
    };
    let mut pipe = splice::CachedPipe::new();
    let mut buf = Vec::with_capacity(COPY_BUF);
    let mut total = 0u64;
    let mut splicing = false;
    loop {
        if let (true, Some((src, dst))) = (splicing, &ends) {
            let n = splice::splice_chunk(src, dst, &mut pipe, splice::PIPE_SIZE).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
            // A full pipe: more is likely waiting. Anything less: the sender paused, so wait
            // for it with a buffered read, which holds no kernel worker.
            splicing = pipe.capacity().map_or(n >= SPLICE_KEEP, |cap| n >= cap);
            continue;
        }
        buf.clear();
        let (res, b) = reader.read(buf).await;
        let n = match res {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                buf = b;
                continue;
            }
            Err(e) => return Err(e),
        };
        let (res, b) = writer.write_all(b).await;
        res?;
        splice::count_buffered(n);
        total += n as u64;
        buf = b;
        splicing = ends.is_some() && n == COPY_BUF && total >= SPLICE_AFTER;
    }
}

/// Bytes one direction of a [`copy`] moves with buffers before it may splice.
const SPLICE_AFTER: u64 = 256 * 1024;

/// A splice that moves fewer bytes than this ends the splicing, until a full read again.
const SPLICE_KEEP: usize = COPY_BUF;

/// Copies one direction, then passes the end of stream on with a write shutdown.
async fn copy_then_shutdown<R, W>(reader: &R, writer: &W) -> io::Result<u64>
where
    R: AsyncReadOwned + ?Sized,
    W: AsyncWriteOwned + ?Sized,
{
    let n = copy(reader, writer).await?;
    match writer.shutdown_write().await {
        // The peer is already gone in that direction: there is nobody left to tell.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(n),
        Err(e) => Err(e),
        Ok(()) => Ok(n),
    }
}

/// Copies in both directions at once, `a` to `b` and `b` to `a`, until both reach end of stream;
/// returns the bytes copied `(a to b, b to a)`.
///
/// Half-close is passed on: when one side reaches end of stream, the other side's write half is
/// shut down (so its peer sees end of stream too), and the opposite direction keeps copying.
///
/// # Errors
///
/// The first error in either direction; the other direction is then dropped (its in-flight
/// operations are cancelled).
pub async fn copy_bidirectional<A, B>(a: &A, b: &B) -> io::Result<(u64, u64)>
where
    A: AsyncReadOwned + AsyncWriteOwned + ?Sized,
    B: AsyncReadOwned + AsyncWriteOwned + ?Sized,
{
    let mut a_to_b = pin!(copy_then_shutdown(a, b));
    let mut b_to_a = pin!(copy_then_shutdown(b, a));
    let (mut forward, mut backward) = (None, None);
    std::future::poll_fn(|cx| {
        if forward.is_none() {
            if let Poll::Ready(r) = a_to_b.as_mut().poll(cx) {
                forward = Some(r?);
            }
        }
        if backward.is_none() {
            if let Poll::Ready(r) = b_to_a.as_mut().poll(cx) {
                backward = Some(r?);
            }
        }
        match (forward, backward) {
            (Some(f), Some(b)) => Poll::Ready(Ok((f, b))),
            _ => Poll::Pending,
        }
    })
    .await
}
