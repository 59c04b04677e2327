//! [`Stream`]: a connected stream socket of any family, and its halves.

use crate::buf::{BufRing, IoBuf, IoBufMut};
use crate::io::{AsyncReadOwned, AsyncWriteOwned, SpliceEnd, SpliceSink, SpliceSource};
use crate::net::conn::Conn;
use crate::net::family::Family;
use crate::net::multishot::RecvMultishot;
use crate::net::side::{self, Reads, Side, Writes};
use crate::net::socket::Socket;
use crate::net::stash::Framing;
use crate::BufResult;
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// A connected stream socket: [`TcpStream`](crate::net::TcpStream) (`Stream<Inet>`) or
/// [`UnixStream`](crate::net::UnixStream) (`Stream<Unix>`), or one of the halves
/// [`into_split`](Stream::into_split) makes ([`OwnedReadHalf`], [`OwnedWriteHalf`]), whose side
/// marker `S` says what it may do (see [`side`]).
///
/// Every I/O method takes `&self` and an owned buffer, and goes through the ring
/// (`IORING_OP_RECV`, `SEND`, `RECVMSG`, `SENDMSG`, `SHUTDOWN`). Vectored I/O is
/// [`readv`](Stream::readv)/[`writev`](Stream::writev); the write side shuts down with
/// [`shutdown_write`](Stream::shutdown_write) on every handle that writes.
///
/// Cancel-safe reads: dropping a read future never loses or reorders a byte. If the read had
/// taken bytes when it was dropped (its cancel lost the race), they are kept for the stream and
/// its halves, and the next read returns them first, without a syscall; an end of stream or an
/// error that read got follows them. A read started while a dropped one is still in flight
/// waits for it to finish first. So a read inside [`timeout`](crate::time::timeout) or a
/// `select` can be dropped at any point. Dropping a write future cancels the write: the bytes it
/// had sent are sent, and how many is unknown, so a stream whose write was dropped should be
/// given up. Dropping the stream closes the socket once no operation holds it.
///
/// ```
/// use uring::net::{TcpListener, TcpStream};
/// use std::time::Duration;
///
/// uring::run(async {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     let client = uring::spawn(async move { TcpStream::connect(addr).await.unwrap() });
///     let (server, _) = listener.accept().await.unwrap();
///     let client = client.await.unwrap();
///     // Nothing was sent yet: the timeout drops the read...
///     let early = uring::time::timeout(Duration::from_millis(1), server.read(vec![0; 8])).await;
///     assert!(early.is_err());
///     // ...and the next one gets every byte.
///     client.write_all(b"late".to_vec()).await.0.unwrap();
///     let (res, buf) = server.read_exact(Vec::with_capacity(4)).await;
///     res.unwrap();
///     assert_eq!(buf, b"late");
/// });
/// ```
pub struct Stream<F: Family, S: Side = side::Both> {
    conn: Conn,
    _kind: PhantomData<fn() -> (F, S)>,
}

/// The read half of a stream, made by [`Stream::into_split`]: reads, addresses and
/// [`reunite`](Stream::reunite).
pub type OwnedReadHalf<F> = Stream<F, side::Read>;

/// The write half of a stream, made by [`Stream::into_split`]: writes, write shutdown and
/// addresses.
pub type OwnedWriteHalf<F> = Stream<F, side::Write>;

impl<F: Family, S: Side> Stream<F, S> {
    /// The socket and its stash, for adapters that keep their own ops in flight.
    #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }

    fn from_conn(conn: Conn) -> Stream<F, S> {
        Stream {
            conn,
            _kind: PhantomData,
        }
    }

    /// The remote address.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the connection is gone.
    pub fn peer_addr(&self) -> io::Result<F::Addr> {
        F::decode(&self.conn.socket().peer_addr()?)
    }

    /// The local address.
    ///
    /// # Errors
    ///
    /// If `getsockname` fails.
    pub fn local_addr(&self) -> io::Result<F::Addr> {
        F::decode(&self.conn.socket().local_addr()?)
    }

    pub(crate) fn socket(&self) -> &Socket {
        self.conn.socket()
    }
}

impl<F: Family> Stream<F> {
    pub(crate) fn from_socket(socket: Socket) -> Stream<F> {
        Stream::from_conn(Conn::new(socket, Framing::Stream))
    }

    /// Takes a connected std stream ([`std::net::TcpStream`], [`std::os::unix::net::UnixStream`]),
    /// put back into blocking mode if it was not: io_uring waits for blocking sockets without
    /// blocking the loop.
    ///
    /// # Errors
    ///
    /// If the mode cannot be changed.
    pub fn from_std(stream: F::StdStream) -> io::Result<Stream<F>> {
        Ok(Stream::from_socket(Socket::from_owned(stream.into())?))
    }

    /// Gives the connection back as a blocking std stream. If a dropped operation's cancel is
    /// still in flight, the result is a duplicate of the fd.
    ///
    /// # Errors
    ///
    /// If a dropped read took bytes that no read has taken yet (read them first: the std stream
    /// would miss them), or if the fd had to be duplicated and that failed (`EMFILE`).
    pub fn into_std(self) -> io::Result<F::StdStream> {
        Ok(F::StdStream::from(self.conn.into_owned_fd()?))
    }

    /// Shuts down the read side, the write side (the peer reads end of stream) or both. For the
    /// write side alone, [`shutdown_write`](Stream::shutdown_write) is the spelling every
    /// writing handle has.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the connection is gone.
    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.conn.shutdown(how).await
    }

    /// Splits the stream into a read half and a write half that can move to two tasks. Both
    /// hold the socket: it is closed when both halves (and their operations) are gone. Dropping
    /// the write half does not shut the write side down; call
    /// [`shutdown_write`](Stream::shutdown_write). What a dropped read took stays with the read
    /// half.
    ///
    /// ```
    /// use uring::net::{TcpListener, TcpStream};
    ///
    /// uring::run(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ///     let addr = listener.local_addr().unwrap();
    ///     let client = uring::spawn(async move { TcpStream::connect(addr).await.unwrap() });
    ///     let (server, _) = listener.accept().await.unwrap();
    ///     let client = client.await.unwrap();
    ///     let (reader, writer) = server.into_split();
    ///     let echo = uring::spawn(async move {
    ///         let (res, buf) = reader.read_exact(Vec::with_capacity(3)).await;
    ///         res.unwrap();
    ///         buf
    ///     });
    ///     client.write_all(b"abc".to_vec()).await.0.unwrap();
    ///     let buf = echo.await.unwrap();
    ///     writer.write_all(buf).await.0.unwrap();
    ///     let (res, buf) = client.read_exact(Vec::with_capacity(3)).await;
    ///     res.unwrap();
    ///     assert_eq!(buf, b"abc");
    /// });
    /// ```
    pub fn into_split(self) -> (OwnedReadHalf<F>, OwnedWriteHalf<F>) {
        (
            Stream::from_conn(self.conn.clone()),
            Stream::from_conn(self.conn),
        )
    }
}

impl<F: Family> OwnedReadHalf<F> {
    /// Puts the halves back together.
    ///
    /// # Errors
    ///
    /// If the halves come from different streams; they are given back.
    pub fn reunite(
        self,
        write: OwnedWriteHalf<F>,
    ) -> Result<Stream<F>, (OwnedReadHalf<F>, OwnedWriteHalf<F>)> {
        if self.conn.same_as(&write.conn) {
            drop(write);
            Ok(Stream::from_conn(self.conn))
        } else {
            Err((self, write))
        }
    }
}

impl<F: Family> OwnedWriteHalf<F> {
    /// Shuts down the write side: the peer reads end of stream; the read half keeps reading.
    /// The same as [`shutdown_write`](Stream::shutdown_write), the spelling every writing
    /// handle has.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the connection is gone.
    pub async fn shutdown(&self) -> io::Result<()> {
        self.conn.shutdown(Shutdown::Write).await
    }
}

impl<F: Family, S: Reads> Stream<F, S> {
    /// Reads into `buf` from its start up to its capacity; returns how many bytes arrived, 0 at
    /// end of stream. Cancel-safe: see [`Stream`].
    pub fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> + '_ {
        self.conn.read(buf)
    }

    /// Reads until `buf` is full (its capacity); [`io::ErrorKind::UnexpectedEof`] if the stream
    /// ends first (the buffer then holds what did arrive).
    ///
    /// Not cancel-safe as a whole: dropped midway, the bytes its earlier reads put in `buf` go
    /// with the buffer (its read in flight loses nothing). Where it may be dropped, loop over
    /// [`read`](Stream::read).
    pub async fn read_exact<B: IoBufMut>(&self, buf: B) -> BufResult<(), B> {
        crate::io::read_exact(self, buf).await
    }

    /// Reads into several buffers in order, each filled to its capacity before the next
    /// (`IORING_OP_RECVMSG`). Cancel-safe like [`read`](Stream::read).
    pub async fn readv<B: IoBufMut>(&self, bufs: Vec<B>) -> BufResult<usize, Vec<B>> {
        self.conn.readv(bufs).await
    }

    /// Receives into buffers the kernel picks from `ring` as data arrives: a stream of
    /// [`RingBuf`](crate::buf::RingBuf)s, each going back to the ring when dropped. One multishot receive
    /// (`IORING_RECV_MULTISHOT`, Linux 6.0) serves the whole stream, re-armed when the ring ran
    /// out of buffers (once one came back) or the kernel ended it; older kernels get
    /// single-shot receives with the same behaviour. Cancel-safe like [`read`](Stream::read):
    /// dropping the stream loses no byte (see [`RecvMultishot`]). The ring must have been made
    /// on the runtime the stream is polled on.
    ///
    /// ```
    /// use uring::buf::BufRing;
    /// use uring::net::UnixStream;
    ///
    /// uring::run(async {
    ///     let (a, b) = UnixStream::pair().unwrap();
    ///     let ring = BufRing::new(4, 1024).unwrap();
    ///     a.write_all(b"ping".to_vec()).await.0.unwrap();
    ///     let mut bufs = b.recv_multishot(&ring);
    ///     let buf = bufs.next().await.unwrap().unwrap();
    ///     assert_eq!(&buf[..], b"ping");
    ///     // Echo it straight from the ring's memory; the buffer goes back once written.
    ///     b.write_all(buf).await.0.unwrap();
    ///     drop(bufs);
    ///     let (res, echoed) = a.read_exact(Vec::with_capacity(4)).await;
    ///     res.unwrap();
    ///     assert_eq!(echoed, b"ping");
    /// });
    /// ```
    pub fn recv_multishot(&self, ring: &BufRing) -> RecvMultishot {
        RecvMultishot::new(self.conn.clone(), ring)
    }
}

impl<F: Family, S: Writes> Stream<F, S> {
    /// Writes the buffer's initialized bytes; returns how many were taken (maybe fewer).
    pub fn write<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> + '_ {
        self.conn.write(buf)
    }

    /// Writes all of the buffer's initialized bytes, looping over short writes;
    /// [`io::ErrorKind::WriteZero`] if a write takes nothing.
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        crate::io::write_all(self, buf).await
    }

    /// Writes the buffers' initialized bytes in order (`IORING_OP_SENDMSG`); returns how many
    /// were taken.
    pub async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> BufResult<usize, Vec<B>> {
        self.conn.writev(bufs).await
    }

    /// Writes the buffer's initialized bytes without copying them into the kernel
    /// (`IORING_OP_SEND_ZC`); returns how many were taken (maybe fewer), like
    /// [`write`](Stream::write).
    ///
    /// The network stack sends from the buffer's own pages, so the kernel reads the buffer
    /// until the data has left (for TCP, until the peer acknowledged it): the future resolves,
    /// and gives the buffer back, only once the kernel's notification says so, which is later
    /// than a `write`. Dropped before that, the buffer stays with the runtime until the
    /// notification and is dropped then (a [`FixedBuf`](crate::buf::FixedBuf) goes back to its
    /// pool only then), never reused while the kernel may still read it. A `FixedBuf` of a
    /// pool registered with this runtime is sent with the fixed-buffer flag, so the kernel
    /// skips pinning its pages.
    ///
    /// It pays for large writes only: see the guide's "Zero-copy sends and sendfile" for
    /// figures. On kernels without `SEND_ZC` (before 6.0) and on Unix-domain sockets (which have
    /// no zero-copy path) it is a plain `write`, with the same result.
    ///
    /// ```
    /// use uring::net::{TcpListener, TcpStream};
    ///
    /// uring::run(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ///     let addr = listener.local_addr().unwrap();
    ///     let reader = uring::spawn(async move {
    ///         let (s, _) = listener.accept().await.unwrap();
    ///         let (res, buf) = s.read_exact(Vec::with_capacity(1 << 20)).await;
    ///         res.unwrap();
    ///         buf
    ///     });
    ///     let s = TcpStream::connect(addr).await.unwrap();
    ///     let data = vec![7u8; 1 << 20];
    ///     let (res, data) = s.write_all_zc(data).await; // the buffer comes back when sent
    ///     res.unwrap();
    ///     assert_eq!(reader.await.unwrap(), data);
    /// });
    /// ```
    ///
    /// # Errors
    ///
    /// As [`write`](Stream::write): [`io::ErrorKind::BrokenPipe`] or
    /// [`io::ErrorKind::ConnectionReset`] when the peer is gone.
    pub async fn write_zc<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        crate::op::send_zc::send_zc(self.socket().fd(), buf, false, F::ZERO_COPY).await
    }

    /// Writes all of the buffer's initialized bytes without copying them (see
    /// [`write_zc`](Stream::write_zc)). One zero-copy send takes the whole buffer
    /// (`MSG_WAITALL`: the kernel retries short sends itself, under one notification); a
    /// send cut short by an error or a signal is continued.
    ///
    /// # Errors
    ///
    /// As [`write_all`](Stream::write_all).
    pub async fn write_all_zc<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        let total = buf.bytes_init();
        let fd = self.socket().fd();
        crate::io::until_done(buf, total, crate::io::Short::Write, |slice, _| {
            crate::op::send_zc::send_zc(fd, slice, true, F::ZERO_COPY)
        })
        .await
    }

    /// Sends `len` bytes of `file` from `offset` (the file's position is neither used nor
    /// moved), or fewer if the file ends first; returns how many were sent: a static file
    /// server's `sendfile(2)`. The bytes go from the page cache into the socket through a pipe
    /// (`IORING_OP_SPLICE` twice per pipe-full, up to 1 MiB), never through user memory, and
    /// every wait is a ring completion.
    ///
    /// ```
    /// use uring::net::{TcpListener, TcpStream};
    ///
    /// uring::run(async {
    ///     let path = std::env::temp_dir().join(format!("send-file-doc-{}", std::process::id()));
    ///     std::fs::write(&path, b"HTTP/1.1 200 OK\r\n\r\nhello").unwrap();
    ///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ///     let addr = listener.local_addr().unwrap();
    ///     let client = uring::spawn(async move {
    ///         let s = TcpStream::connect(addr).await.unwrap();
    ///         let (res, buf) = s.read_exact(Vec::with_capacity(5)).await;
    ///         res.unwrap();
    ///         buf
    ///     });
    ///     let (s, _) = listener.accept().await.unwrap();
    ///     let file = uring::fs::File::open(&path).await.unwrap();
    ///     // The body only: 5 bytes from offset 19; asking for more stops at the end of file.
    ///     assert_eq!(s.send_file(&file, 19, 100).await.unwrap(), 5);
    ///     assert_eq!(client.await.unwrap(), b"hello");
    ///     std::fs::remove_file(&path).unwrap();
    /// });
    /// ```
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::BrokenPipe`] or [`io::ErrorKind::ConnectionReset`] when the peer is
    /// gone (how much was sent is then unknown); [`io::ErrorKind::InvalidInput`] when
    /// `offset + len` overflows a file offset, or (`EINVAL`) for a file that cannot be spliced;
    /// `EMFILE` when no pipe can be made.
    pub async fn send_file(
        &self,
        file: &crate::fs::File,
        offset: u64,
        len: u64,
    ) -> io::Result<u64> {
        crate::op::send_file::send_file(file.shared_fd(), self.socket().fd(), offset, len).await
    }

    /// Shuts down the write side: the peer reads end of stream once it has read everything
    /// written before; reading goes on. The canonical spelling (also
    /// [`AsyncWriteOwned::shutdown_write`]); `shutdown(Shutdown::Write)` on a stream and
    /// `shutdown()` on a write half do the same.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if the connection is gone.
    pub async fn shutdown_write(&self) -> io::Result<()> {
        self.conn.shutdown(Shutdown::Write).await
    }
}

impl<F: Family, S: Side> AsRawFd for Stream<F, S> {
    fn as_raw_fd(&self) -> RawFd {
        self.conn.socket().as_raw_fd()
    }
}

impl<F: Family, S: Side> AsFd for Stream<F, S> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.conn.socket().as_fd()
    }
}

impl<F: Family, S: Side> fmt::Debug for Stream<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("family", &F::NAME)
            .field("side", &<S as side::sealed::Sealed>::NAME)
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl<F: Family, S: Reads> AsyncReadOwned for Stream<F, S> {
    fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        self.conn.read(buf)
    }

    fn as_splice_source(&self) -> Option<SpliceEnd> {
        Some(self.conn.splice_end(true))
    }
}

impl<F: Family, S: Writes> AsyncWriteOwned for Stream<F, S> {
    fn write<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        self.conn.write(buf)
    }

    fn shutdown_write(&self) -> impl Future<Output = io::Result<()>> {
        self.conn.shutdown(Shutdown::Write)
    }

    fn as_splice_sink(&self) -> Option<SpliceEnd> {
        Some(self.conn.splice_end(false))
    }
}

/// Splices read the socket after the bytes a dropped read left (see [`Stream`]).
impl<F: Family, S: Reads> SpliceSource for Stream<F, S> {
    fn splice_source(&self) -> io::Result<SpliceEnd> {
        Ok(self.conn.splice_end(true))
    }
}

impl<F: Family, S: Writes> SpliceSink for Stream<F, S> {
    fn splice_sink(&self) -> io::Result<SpliceEnd> {
        Ok(self.conn.splice_end(false))
    }
}
