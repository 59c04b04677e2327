//! Poll-based I/O traits over the ring: [`Compat`] runs code written for tokio's or the futures
//! crate's `AsyncRead`/`AsyncWrite`, or for hyper, on `uring` streams.
//!
//! Those traits lend the adapter a `&mut [u8]` for the length of one `poll_*` call; io_uring
//! needs a buffer that stays put until the kernel completes, which may be long after that call
//! returned `Pending`. So `Compat` owns its buffers and keeps its ops in flight inside itself,
//! across polls:
//!
//! - Reads go into a 16 KiB buffer of its own and are copied out. A `poll_read` that returns
//!   `Pending` and is never polled again loses nothing: the bytes land in the adapter and the
//!   next read gets them; a caller that passes another buffer next time still gets them in
//!   order. `AsyncBufRead` lends that buffer directly (no copy).
//! - Writes are written behind: `poll_write` copies into an owned buffer (up to 64 KiB waiting)
//!   and returns `Ready` while the ring sends it; `poll_flush` and `poll_shutdown` wait until
//!   every accepted byte is on the wire, and a failed send's error comes back from the next
//!   write, flush or shutdown. `poll_write_vectored` gathers into the same buffer, and
//!   `is_write_vectored` says so (hyper picks its queueing from it).
//! - An end of stream is held back while accepted writes are still being sent, so a server
//!   that answers a client which then hangs up sees its answer out before it sees the end
//!   (hyper's HTTP/1 server reads for EOF before it learns that its last flush finished).
//!
//! The cost against the native owned-buffer API: one copy each way, and two buffers per
//! adapter (allocated once, then reused: nothing is allocated per operation). Use the native
//! API (`read`/`write_all` with owned buffers) where you write the protocol yourself.
//!
//! Dropping a `Compat` (or [`Compat::into_inner`]) gives bytes it read and nobody consumed back
//! to the stream, and a read it has in flight goes the way of any dropped read: its bytes are
//! kept for the stream's next read. Bytes accepted by `poll_write` and not flushed are not sent:
//! flush first, as with any buffered writer.

#[cfg(feature = "futures-io")]
mod futures;
#[cfg(feature = "hyper")]
mod hyper;
#[cfg(feature = "tokio-io")]
mod tokio;

#[cfg(feature = "hyper")]
pub use self::hyper::{HyperExecutor, HyperSleep, HyperTimer};

use crate::buf::{IoBuf, Slice};
use crate::net::conn::{Conn, Read};
use crate::net::side::{Reads, Side, Writes};
use crate::net::Family;
use crate::net::Stream;
use crate::op::net::{SendOp, ShutdownOp};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::task::{Context, Poll};

/// How much one read asks the kernel for.
const READ_BUF: usize = 16 * 1024;
/// How many accepted bytes may wait to be sent before `poll_write` returns `Pending`.
const WRITE_BUF: usize = 64 * 1024;

/// A `uring` stream (or one of its halves) with the poll-based I/O traits: tokio's
/// `AsyncRead`/`AsyncWrite`/`AsyncBufRead` (feature `tokio-io`), the futures crate's (feature
/// `futures-io`) and hyper's `rt::Read`/`rt::Write` (feature `hyper`). A read half gets the read
/// traits only, a write half the write traits only. See the [module docs](self) for what it
/// guarantees and costs.
///
/// ```
/// # #[cfg(feature = "tokio-io")]
/// # {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use uring::compat::Compat;
/// use uring::net::UnixStream;
///
/// uring::run(async {
///     let (a, b) = UnixStream::pair().unwrap();
///     let (mut a, mut b) = (Compat::new(a), Compat::new(b));
///     a.write_all(b"over the ring").await.unwrap();
///     a.flush().await.unwrap();
///     let mut got = [0u8; 13];
///     b.read_exact(&mut got).await.unwrap();
///     assert_eq!(&got, b"over the ring");
/// });
/// # }
/// ```
pub struct Compat<S> {
    io: Option<S>,
    /// The stream's socket and stash (a counted handle of the same connection).
    conn: Conn,
    reader: Reader,
    writer: Writer,
}

impl<F: Family, S: Side> Compat<Stream<F, S>> {
    /// Wraps a stream or one of its halves.
    pub fn new(io: Stream<F, S>) -> Compat<Stream<F, S>> {
        Compat {
            conn: io.conn().clone(),
            io: Some(io),
            reader: Reader::default(),
            writer: Writer::default(),
        }
    }

    /// Gives the stream back. Bytes read and not consumed go back to the stream (its next read
    /// gets them first), as do those of a read in flight; bytes written and not flushed are not
    /// sent.
    pub fn into_inner(mut self) -> Stream<F, S> {
        self.reader.give_back(&self.conn);
        self.io
            .take()
            .expect("a Compat holds its stream until into_inner")
    }
}

impl<S> Compat<S> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        self.io
            .as_ref()
            .expect("a Compat holds its stream until into_inner")
    }

    /// Splits the borrow: the connection, and the two sides' state.
    fn parts(&mut self) -> (&Conn, &mut Reader, &mut Writer) {
        (&self.conn, &mut self.reader, &mut self.writer)
    }
}

impl<S> Drop for Compat<S> {
    fn drop(&mut self) {
        self.reader.give_back(&self.conn);
    }
}

impl<S> fmt::Debug for Compat<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compat")
            .field("buffered_read", &self.reader.buffered())
            .field("unsent_write", &self.writer.unsent())
            .finish_non_exhaustive()
    }
}

/// The read side: an owned buffer, what of it is consumed, and the read in flight.
#[derive(Default)]
struct Reader {
    /// Read bytes are `buf[pos..]`; `None` while the read in flight holds the buffer.
    buf: Option<Vec<u8>>,
    pos: usize,
    op: Option<Read<Vec<u8>>>,
    /// A read returned 0: the end of stream (reported once pending writes are done).
    eof: bool,
}

impl Reader {
    fn buffered(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len() - self.pos)
    }

    /// Read bytes not consumed yet, reading more if there are none: `Ready(&[])` at the end of
    /// stream, which is held back while `writer` still has bytes to send.
    fn poll_fill<'a>(
        &'a mut self,
        conn: &Conn,
        writer: &mut Writer,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&'a [u8]>> {
        loop {
            if self.buffered() > 0 {
                let buf = self.buf.as_ref().expect("buffered bytes are in the buffer");
                return Poll::Ready(Ok(&buf[self.pos..]));
            }
            if self.eof {
                // Hold the end back until what was accepted for writing is out (or failed).
                if writer.poll_drain(conn, cx).is_pending() {
                    return Poll::Pending;
                }
                return Poll::Ready(Ok(&[]));
            }
            let op = match &mut self.op {
                Some(op) => op,
                None => {
                    let mut buf = self
                        .buf
                        .take()
                        // Zeroed once per adapter (calloc): memory checkers such as
                        // valgrind cannot see the kernel's writes, and would flag every byte
                        // read into a fresh allocation as uninitialised.
                        .unwrap_or_else(|| vec![0; READ_BUF]);
                    buf.clear();
                    self.pos = 0;
                    self.op.insert(conn.read(buf))
                }
            };
            let (res, buf) = std::task::ready!(std::pin::Pin::new(op).poll(cx));
            self.op = None;
            self.buf = Some(buf);
            match res {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.as_ref().map_or(0, Vec::len));
    }

    /// Gives unconsumed bytes back to the stream, ahead of those of a read in flight (which, as
    /// a dropped read, goes to the stream's stash when it completes).
    fn give_back(&mut self, conn: &Conn) {
        if let Some(buf) = &self.buf {
            conn.unread(&buf[self.pos..]);
        }
        self.buf = None;
        self.pos = 0;
        self.op = None;
    }
}

/// The write side: bytes accepted and waiting, the send in flight, and the error it got.
#[derive(Default)]
struct Writer {
    /// Accepted bytes not handed to a send yet.
    pending: Vec<u8>,
    /// The buffer of the send in flight, once it gives it back: reused for the next batch.
    spare: Option<Vec<u8>>,
    /// The send in flight: `sent` bytes of its buffer are on the wire already.
    op: Option<SendOp<Slice<Vec<u8>>>>,
    sent: usize,
    /// A send failed: returned by the next write, flush or shutdown.
    error: Option<io::Error>,
    shutdown: Option<ShutdownOp>,
}

impl Writer {
    fn unsent(&self) -> usize {
        self.pending.len() + self.op.as_ref().map_or(0, |_| 1)
    }

    /// Moves the sends along: polls the one in flight, resubmits its rest after a short send,
    /// starts the next batch when idle. `Ready` once nothing is waiting or in flight (or a send
    /// failed: the error is kept for the next call).
    fn poll_drain(&mut self, conn: &Conn, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some(op) = &mut self.op {
                let (res, slice) = std::task::ready!(std::pin::Pin::new(op).poll(cx));
                self.op = None;
                let mut buf = slice.into_inner();
                match res {
                    Ok(0) => {
                        self.error = Some(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "the socket took no bytes",
                        ));
                    }
                    Ok(n) => {
                        self.sent += n;
                        if self.sent < buf.len() {
                            let rest = buf.slice(self.sent..);
                            self.op = Some(SendOp::new(conn.socket().fd().clone(), rest));
                            continue;
                        }
                    }
                    Err(e) => self.error = Some(e),
                }
                buf.clear();
                self.spare = Some(buf);
                if self.error.is_some() {
                    self.pending.clear();
                }
            }
            if self.error.is_some() || self.pending.is_empty() {
                return Poll::Ready(());
            }
            // Start the next batch: the accepted bytes go out in the spare buffer, and the
            // spare becomes the buffer that accepts the next ones.
            let next = self.spare.take().unwrap_or_default();
            let batch = std::mem::replace(&mut self.pending, next);
            self.sent = 0;
            let len = batch.len();
            self.op = Some(SendOp::new(conn.socket().fd().clone(), batch.slice(0..len)));
        }
    }

    fn take_error(&mut self) -> io::Result<()> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Accepts bytes from `bufs` (gathered in order) for sending: as many as fit in the write
    /// buffer; `Pending` only while it is full and a send is in flight.
    fn poll_write(
        &mut self,
        conn: &Conn,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let _ = self.poll_drain(conn, cx);
        self.take_error()?;
        if self.shutdown.is_some() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the write side was shut down",
            )));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let room = WRITE_BUF.saturating_sub(self.pending.len());
        if room == 0 {
            // Full, and the send in flight will wake us (poll_drain registered the waker).
            return Poll::Pending;
        }
        let mut taken = 0;
        for b in bufs {
            let here = b.len().min(room - taken);
            self.pending.extend_from_slice(&b[..here]);
            taken += here;
            if taken == room {
                break;
            }
        }
        // Submit the batch now (an op is submitted when first polled).
        let _ = self.poll_drain(conn, cx);
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(&mut self, conn: &Conn, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(conn, cx));
        Poll::Ready(self.take_error())
    }

    fn poll_shutdown(&mut self, conn: &Conn, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_flush(conn, cx))?;
        let op = self
            .shutdown
            .get_or_insert_with(|| ShutdownOp::new(conn.socket().fd().clone(), Shutdown::Write));
        let res = std::task::ready!(std::pin::Pin::new(op).poll(cx));
        Poll::Ready(match res {
            // Already shut down, or the peer is gone: nothing left to tell.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        })
    }
}

/// The read half of the engine, for the trait impls (`S` reads).
impl<F: Family, S: Reads> Compat<Stream<F, S>> {
    pub(crate) fn poll_fill_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let (conn, reader, writer) = self.parts();
        reader.poll_fill(conn, writer, cx)
    }

    pub(crate) fn consume_read(&mut self, n: usize) {
        self.reader.consume(n);
    }
}

/// The write half of the engine, for the trait impls (`S` writes).
impl<F: Family, S: Writes> Compat<Stream<F, S>> {
    pub(crate) fn poll_write_from(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let (conn, _, writer) = self.parts();
        writer.poll_write(conn, cx, bufs)
    }

    pub(crate) fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (conn, _, writer) = self.parts();
        writer.poll_flush(conn, cx)
    }

    pub(crate) fn poll_shutdown_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (conn, _, writer) = self.parts();
        writer.poll_shutdown(conn, cx)
    }
}
