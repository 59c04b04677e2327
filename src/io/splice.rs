//! [`splice`]: moving bytes from one fd to another inside the kernel (`IORING_OP_SPLICE`),
//! through a pipe when neither end is one; and the splice path of [`copy`](super::copy).

use crate::fd::SharedFd;
use crate::op::rw;
use crate::op::splice::{self as op, Pipe};
use std::cell::RefCell;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// The size asked for (`F_SETPIPE_SZ`) for the pipe that joins two ends that are not pipes:
/// the most one splice pair moves. See the guide's "Splice" section for the measurement.
pub(crate) const PIPE_SIZE: usize = 256 * 1024;

/// Buffer size of a splice that falls back to a read and a write (no `IORING_OP_SPLICE`).
const FALLBACK_BUF: usize = 64 * 1024;

/// How many idle, empty pipes a thread keeps for the next splice (2 fds each).
const CACHED_PIPES: usize = 4;

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// One end of a splice: an fd the crate holds open for as long as any splice names it, so
/// dropping the stream or file it came from mid-splice is safe. Made by
/// [`SpliceSource::splice_source`], [`SpliceSink::splice_sink`], and the `as_splice_*` methods
/// of [`AsyncReadOwned`](super::AsyncReadOwned) and [`AsyncWriteOwned`](super::AsyncWriteOwned);
/// it has no public constructor.
#[derive(Clone)]
pub struct SpliceEnd {
    fd: SharedFd,
    /// Whether the fd is a pipe (then it is spliced directly, with no pipe in between).
    pipe: bool,
    /// For a source with a stash (a socket or a child's pipe): the bytes a dropped read took,
    /// which come before anything a splice would read.
    leftovers: Option<Rc<dyn Leftovers>>,
}

impl SpliceEnd {
    /// An end for `fd`; `pipe` says whether it is a pipe, `leftovers` where a source's dropped
    /// reads left bytes.
    pub(crate) fn new(fd: SharedFd, pipe: bool, leftovers: Option<Rc<dyn Leftovers>>) -> Self {
        SpliceEnd {
            fd,
            pipe,
            leftovers,
        }
    }
}

impl fmt::Debug for SpliceEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpliceEnd")
            .field("fd", &self.fd)
            .field("pipe", &self.pipe)
            .finish()
    }
}

/// What a source's stash hands a splice before the splice may read the fd itself.
pub(crate) enum Leftover {
    /// Bytes a dropped read took: they go first.
    Bytes(Vec<u8>),
    /// The end of stream (`Ok(0)`) or the error a dropped read got, after its bytes.
    End(io::Result<usize>),
}

/// A source's stash (`net/stash.rs`), as a splice sees it.
pub(crate) trait Leftovers {
    /// For a splice of up to `room` bytes: what the stash holds for it (`Ready(Some)`), nothing
    /// so it may splice from the fd (`Ready(None)`), or `Pending` while a dropped read is still
    /// in flight (a splice now could overtake its bytes).
    fn poll_leftover(&self, cx: &Context<'_>, room: usize) -> Poll<Option<Leftover>>;
}

/// Something [`splice`] can read from: the crate's streams and their read halves, a child's
/// stdout and stderr, and `uring::fs::File` (at its current position, which the splice
/// advances, as `read(2)` does; the positional methods neither use nor move it).
pub trait SpliceSource {
    /// The fd to splice from.
    ///
    /// # Errors
    ///
    /// If the source cannot be read any more.
    fn splice_source(&self) -> io::Result<SpliceEnd>;
}

/// Something [`splice`] can write to: the crate's streams and their write halves, a child's
/// stdin, and `uring::fs::File` (at its current position, advanced as by `write(2)`).
pub trait SpliceSink {
    /// The fd to splice to.
    ///
    /// # Errors
    ///
    /// If the sink cannot be written any more (a child's stdin after `shutdown_write`).
    fn splice_sink(&self) -> io::Result<SpliceEnd>;
}

impl<T: SpliceSource + ?Sized> SpliceSource for &T {
    fn splice_source(&self) -> io::Result<SpliceEnd> {
        (**self).splice_source()
    }
}

impl<T: SpliceSink + ?Sized> SpliceSink for &T {
    fn splice_sink(&self) -> io::Result<SpliceEnd> {
        (**self).splice_sink()
    }
}

/// Bytes moved by [`copy`](super::copy), [`copy_bidirectional`](super::copy_bidirectional)
/// and [`splice`] in this process since it started, by how they moved: read into a buffer and
/// written out, or spliced inside the kernel. See [`copy_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes read into a userspace buffer and written from it.
    pub buffered: u64,
    /// Bytes spliced (`IORING_OP_SPLICE`), never copied to userspace.
    pub spliced: u64,
}

static BUFFERED: AtomicU64 = AtomicU64::new(0);
static SPLICED: AtomicU64 = AtomicU64::new(0);

/// How many bytes [`copy`](super::copy), [`copy_bidirectional`](super::copy_bidirectional) and
/// [`splice`] moved so far in this process (every thread), and how (`examples/proxy.rs
/// --stats` prints them).
///
/// ```
/// let before = uring::io::copy_stats();
/// // ... copies ...
/// let after = uring::io::copy_stats();
/// assert!(after.buffered >= before.buffered && after.spliced >= before.spliced);
/// ```
pub fn copy_stats() -> CopyStats {
    CopyStats {
        buffered: BUFFERED.load(Ordering::Relaxed),
        spliced: SPLICED.load(Ordering::Relaxed),
    }
}

/// Counts `n` bytes copied through a buffer.
pub(crate) fn count_buffered(n: usize) {
    BUFFERED.fetch_add(n as u64, Ordering::Relaxed);
}

fn count_spliced(n: usize) {
    SPLICED.fetch_add(n as u64, Ordering::Relaxed);
}

/// Moves up to `len` bytes from `from` to `to` inside the kernel (`IORING_OP_SPLICE`), without
/// copying them to userspace; returns how many moved, 0 when `from` is at end of stream (or
/// `len` is 0). Like a `read` followed by a `write_all`: it returns once the first bytes that
/// arrived (at most `len`) have all been written to `to`, looping over short splices on the way
/// out. To move everything until end of stream, call it in a loop or use
/// [`copy`](super::copy).
///
/// When neither end is a pipe, the bytes go through one: spliced into it, then out of it, two
/// ops per call, up to the pipe's size (256 KiB asked for) per call. The thread keeps up to
/// four idle pipes for the next calls, so a loop of splices creates no pipe per call. Each
/// splice runs on one of the ring's io-wq worker threads (the kernel punts every splice there),
/// which a splice from a socket holds until bytes arrive: see the guide's "Splice" section for
/// when this pays. Bytes a dropped read on `from` left for the next read come first (written
/// with a plain write). Without `IORING_OP_SPLICE` it reads into a buffer and writes that,
/// with the same result.
///
/// A `uring::fs::File` made from a pipe end is spliced directly. Do not close the
/// other end of such a pipe while a splice on it waits for a socket: the kernel holds the
/// pipe's lock while it waits, and the `close(2)` blocks until then (the pipe this function
/// makes itself is never closed while a splice holds it).
///
/// Dropping the future midway may lose bytes: those spliced into the pipe and not yet out of it
/// are thrown away with the pipe (which is closed, never reused), so give up both streams after
/// a dropped splice, as after a dropped write.
///
/// ```
/// use uring::net::UnixStream;
///
/// uring::run(async {
///     let (a, b) = UnixStream::pair().unwrap();
///     let (c, d) = UnixStream::pair().unwrap();
///     a.write_all(b"through the kernel".to_vec()).await.0.unwrap();
///     a.shutdown_write().await.unwrap();
///     // b -> c, inside the kernel.
///     let mut moved = 0;
///     loop {
///         let n = uring::io::splice(&b, &c, 1 << 20).await.unwrap();
///         if n == 0 {
///             break;
///         }
///         moved += n;
///     }
///     assert_eq!(moved, 18);
///     let (res, got) = d.read_exact(Vec::with_capacity(18)).await;
///     res.unwrap();
///     assert_eq!(got, b"through the kernel");
/// });
/// ```
///
/// # Errors
///
/// An error from either end (`EPIPE`/`ECONNRESET` when `to`'s peer is gone, `EINVAL` for an fd
/// the kernel cannot splice, such as a file opened with `O_APPEND` as the sink), or
/// [`io::ErrorKind::WriteZero`] if `to` took nothing; `EMFILE` if a pipe was needed and no fd
/// was free.
pub async fn splice<R, W>(from: &R, to: &W, len: usize) -> io::Result<usize>
where
    R: SpliceSource + ?Sized,
    W: SpliceSink + ?Sized,
{
    let (src, dst) = (from.splice_source()?, to.splice_sink()?);
    let mut pipe = CachedPipe(None);
    let n = splice_chunk(&src, &dst, &mut pipe, len).await?;
    Ok(n)
}

/// The pipe of one direction of a copy (or of one [`splice`] call), taken from the thread's
/// cache when first needed and given back to it when dropped empty. A pipe that may hold bytes
/// (a splice into it was dropped, or its drain failed) is closed instead: `self.0` is `None`d
/// before its first splice completes and set again only once it is empty.
pub(crate) struct CachedPipe(Option<Pipe>);

impl CachedPipe {
    pub(crate) fn new() -> CachedPipe {
        CachedPipe(None)
    }

    /// The pipe's capacity, once it has one (and holds no bytes).
    pub(crate) fn capacity(&self) -> Option<usize> {
        self.0.as_ref().map(|p| p.capacity)
    }
}

impl Drop for CachedPipe {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // A thread being torn down has no cache any more: the pipe is simply closed.
            let _ = PIPES.try_with(|c| {
                let mut c = c.borrow_mut();
                if c.len() < CACHED_PIPES {
                    c.push(p);
                }
            });
        }
    }
}

/// Whether splices run on the ring (else [`splice`] reads and writes, and `copy` keeps to its
/// buffers).
pub(crate) fn supported() -> bool {
    op::supported()
}

fn take_pipe() -> io::Result<Pipe> {
    let cached = PIPES.try_with(|c| c.borrow_mut().pop()).ok().flatten();
    match cached {
        Some(p) => Ok(p),
        None => Pipe::new(PIPE_SIZE),
    }
}

/// One splice step from `src` to `dst`: the source's leftovers if it has any, else up to `len`
/// bytes spliced (through `pipe` when neither end is a pipe; `pipe` is made on first use) and
/// all of them written out. Returns how many bytes moved; 0 at end of stream.
pub(crate) async fn splice_chunk(
    src: &SpliceEnd,
    dst: &SpliceEnd,
    pipe: &mut CachedPipe,
    len: usize,
) -> io::Result<usize> {
    if len == 0 {
        return Ok(0);
    }
    if let Some(l) = &src.leftovers {
        match poll_fn(|cx| l.poll_leftover(cx, len)).await {
            Some(Leftover::Bytes(bytes)) => {
                let n = bytes.len();
                write_all_fd(&dst.fd, bytes).await?;
                count_buffered(n);
                return Ok(n);
            }
            Some(Leftover::End(res)) => return res,
            None => {}
        }
    }
    if !op::supported() {
        return buffered_chunk(src, dst, len).await;
    }
    if src.pipe || dst.pipe {
        let n = retry(|| op::splice(&src.fd, &dst.fd, None, len)).await?;
        count_spliced(n);
        return Ok(n);
    }
    // Taken out for the splice: if this future is dropped while bytes may be in the pipe, the
    // pipe goes with it (closed), never back to the cache.
    let p = match pipe.0.take() {
        Some(p) => p,
        None => take_pipe()?,
    };
    let fill = || op::splice(&src.fd, &p.write, Some(&p.read), len.min(p.capacity));
    let n = match retry(fill).await {
        Ok(n) => n,
        Err(e) => {
            // Nothing went into the pipe: it can be used again.
            pipe.0 = Some(p);
            return Err(e);
        }
    };
    let mut left = n;
    while left > 0 {
        match op::splice(&p.read, &dst.fd, Some(&p.write), left).await {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("the sink took 0 bytes with {left} of {n} spliced still to write"),
                ))
            }
            Ok(m) => left -= m,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The pipe may hold bytes: it is dropped (closed) with `p`.
            Err(e) => return Err(e),
        }
    }
    pipe.0 = Some(p);
    count_spliced(n);
    Ok(n)
}

/// Runs `step` again while it fails with `EINTR`.
async fn retry<F, Fut>(mut step: F) -> io::Result<usize>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = io::Result<usize>>,
{
    loop {
        match step().await {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            res => return res,
        }
    }
}

/// A splice step without `IORING_OP_SPLICE`: a read into a buffer and a write of it.
async fn buffered_chunk(src: &SpliceEnd, dst: &SpliceEnd, len: usize) -> io::Result<usize> {
    let cap = len.min(FALLBACK_BUF);
    let (res, buf) = loop {
        let (res, buf) = rw::read(&src.fd, Vec::with_capacity(cap), u64::MAX).await;
        match res {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            res => break (res, buf),
        }
    };
    let n = res?;
    if n > 0 {
        write_all_fd(&dst.fd, buf).await?;
        count_buffered(n);
    }
    Ok(n)
}

/// Writes all of `bytes` to `fd` at its current position (a file's, advanced; streams have
/// none).
async fn write_all_fd(fd: &SharedFd, bytes: Vec<u8>) -> io::Result<()> {
    let total = bytes.len();
    let (res, _) = super::until_done(bytes, total, super::Short::Write, |slice, _| {
        rw::write(fd, slice, u64::MAX)
    })
    .await;
    res
}
