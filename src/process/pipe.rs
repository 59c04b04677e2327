//! A child's piped stdin, stdout and stderr: owned-buffer reads and writes on the ring.

use crate::buf::{IoBuf, IoBufMut};
use crate::fd::SharedFd;
use crate::io::{AsyncReadOwned, AsyncWriteOwned, SpliceEnd, SpliceSink, SpliceSource};
use crate::net::conn::PipeReader;
use crate::BufResult;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Takes a pipe end from std, in blocking mode: io_uring waits for a blocking pipe without
/// blocking the loop (and a non-blocking one would make the ring's reads fail with `EAGAIN`).
pub(crate) fn shared_pipe(fd: OwnedFd) -> io::Result<SharedFd> {
    let raw = fd.as_raw_fd();
    // SAFETY: INV-ffi: fcntl on an fd we own (`fd`), its result checked.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: INV-ffi: as above.
        if unsafe { libc::fcntl(raw, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(SharedFd::new(std::os::fd::IntoRawFd::into_raw_fd(fd)))
}

/// The fd as the caller's own: the fd itself when no op holds it any more, else a duplicate
/// (the original closes when the op is done).
fn into_owned(fd: SharedFd) -> io::Result<OwnedFd> {
    match fd.try_unwrap() {
        // SAFETY: INV-fd: `try_unwrap` gave us the only handle to this open fd.
        Ok(raw) => Ok(unsafe { OwnedFd::from_raw_fd(raw) }),
        Err(shared) => {
            // SAFETY: INV-ffi: dup of an fd `shared` holds open, its result checked.
            let dup = unsafe { libc::fcntl(shared.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
            if dup < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: INV-fd: `dup` is a new fd nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(dup) })
        }
    }
}

/// The write end of a pipe to a child's stdin: [`Child::stdin`](crate::process::Child::stdin)
/// when spawned with [`Stdio::piped`](crate::process::Stdio::piped).
///
/// Writes take owned buffers and go through the ring (`IORING_OP_WRITE`). The child reads end of
/// file once this is dropped or [`shutdown_write`](ChildStdin::shutdown_write) is called (and no
/// write is in flight). Dropping a write future cancels the write: the bytes it had written are
/// written, how many is unknown.
pub struct ChildStdin {
    /// `None` once shut down.
    fd: RefCell<Option<SharedFd>>,
}

impl ChildStdin {
    pub(crate) fn new(fd: SharedFd) -> ChildStdin {
        ChildStdin {
            fd: RefCell::new(Some(fd)),
        }
    }

    fn fd(&self) -> io::Result<SharedFd> {
        self.fd.borrow().clone().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the child's stdin was shut down (closed)",
            )
        })
    }

    /// Writes the buffer's initialized bytes; returns how many the pipe took (maybe fewer).
    /// `BrokenPipe` once the child closed its end (std ignores `SIGPIPE` in Rust programs).
    pub async fn write<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        match self.fd() {
            Ok(fd) => crate::op::rw::write(&fd, buf, u64::MAX).await,
            Err(e) => (Err(e), buf),
        }
    }

    /// Writes all of the buffer's initialized bytes, looping over short writes.
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
        crate::io::write_all(self, buf).await
    }

    /// Closes this end of the pipe, so the child reads end of file: at once, or when the write
    /// in flight (if any) is done. Later writes fail with `BrokenPipe`. Dropping the handle does
    /// the same.
    ///
    /// # Errors
    ///
    /// None today; the `Result` is that of [`AsyncWriteOwned::shutdown_write`].
    pub async fn shutdown_write(&self) -> io::Result<()> {
        drop(self.fd.borrow_mut().take());
        Ok(())
    }

    /// The pipe's fd as the caller's own (to hand to another process as its stdin through
    /// [`Stdio::from`](crate::process::Stdio)).
    ///
    /// # Errors
    ///
    /// `BrokenPipe` after a shutdown; `EMFILE` if a write's cancel is still in flight and the
    /// fd had to be duplicated (otherwise the fd itself is handed over).
    pub fn into_owned_fd(self) -> io::Result<OwnedFd> {
        // Moved out, not cloned: with no write in flight this handle is the fd's only one and
        // no duplicate is made.
        let fd = self.fd.into_inner().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the child's stdin was shut down (closed)",
            )
        })?;
        into_owned(fd)
    }
}

impl AsyncWriteOwned for ChildStdin {
    fn write<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        ChildStdin::write(self, buf)
    }

    fn shutdown_write(&self) -> impl Future<Output = io::Result<()>> {
        ChildStdin::shutdown_write(self)
    }

    fn as_splice_sink(&self) -> Option<SpliceEnd> {
        self.splice_sink().ok()
    }
}

/// `BrokenPipe` after [`shutdown_write`](ChildStdin::shutdown_write).
impl SpliceSink for ChildStdin {
    fn splice_sink(&self) -> io::Result<SpliceEnd> {
        Ok(SpliceEnd::new(self.fd()?, true, None))
    }
}

impl AsRawFd for ChildStdin {
    /// The pipe's fd, or -1 after [`shutdown_write`](ChildStdin::shutdown_write).
    fn as_raw_fd(&self) -> RawFd {
        self.fd.borrow().as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }
}

impl fmt::Debug for ChildStdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildStdin")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

macro_rules! reader {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            pipe: PipeReader,
        }

        impl $name {
            pub(crate) fn new(fd: SharedFd) -> $name {
                $name {
                    pipe: PipeReader::new(fd),
                }
            }

            /// Reads into `buf` from its start up to its capacity; returns how many bytes
            /// arrived, 0 at end of file (the child closed its end, usually by exiting).
            /// Cancel-safe: a dropped read loses no byte (see the type's docs).
            pub async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
                self.pipe.read(buf).await
            }

            /// Reads until `buf` is full (its capacity); `UnexpectedEof` if the pipe ends first.
            /// Not cancel-safe as a whole (the bytes of its earlier reads go with the buffer).
            pub async fn read_exact<B: IoBufMut>(&self, buf: B) -> BufResult<(), B> {
                crate::io::read_exact(self, buf).await
            }

            /// Reads to end of file, appending to `out`; returns how many bytes were read.
            ///
            /// # Errors
            ///
            /// The first read error (`out` keeps the bytes read before it).
            pub async fn read_to_end(&self, out: &mut Vec<u8>) -> io::Result<usize> {
                read_to_end(&self.pipe, out).await
            }

            /// The pipe's fd as the caller's own (to hand to another process as its stdin
            /// through [`Stdio::from`](crate::process::Stdio)).
            ///
            /// # Errors
            ///
            /// If a dropped read took bytes no read has taken yet, or may still take some
            /// (read them first: they would be lost); `EMFILE` if the fd had to be duplicated.
            pub fn into_owned_fd(self) -> io::Result<OwnedFd> {
                if self.pipe.holds_data() {
                    return Err(io::Error::other(
                        "a dropped read took data that no read has taken yet, or is still in \
                         flight: read from the pipe first, or that data would be lost",
                    ));
                }
                // Moved out, not cloned: with no read in flight this is the fd's only handle
                // and no duplicate is made.
                into_owned(self.pipe.into_fd())
            }
        }

        impl AsyncReadOwned for $name {
            fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
                self.pipe.read(buf)
            }

            fn as_splice_source(&self) -> Option<SpliceEnd> {
                Some(self.pipe.splice_end())
            }
        }

        /// Splices read the pipe after the bytes a dropped read left.
        impl SpliceSource for $name {
            fn splice_source(&self) -> io::Result<SpliceEnd> {
                Ok(self.pipe.splice_end())
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.pipe.fd().as_raw_fd()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("fd", &self.as_raw_fd())
                    .finish()
            }
        }
    };
}

reader!(
    /// The read end of a pipe from a child's stdout: [`Child::stdout`](crate::process::Child::stdout)
    /// when spawned with [`Stdio::piped`](crate::process::Stdio::piped).
    ///
    /// Reads take owned buffers and go through the ring (`IORING_OP_READ`). They are cancel-safe
    /// the way a [`TcpStream`](crate::net::TcpStream)'s are: a read dropped after its read took
    /// bytes (its cancel lost the race) hands them to the next read, in order, so a read inside
    /// [`timeout`](crate::time::timeout) or a `select` may be dropped at any point.
    ChildStdout
);

reader!(
    /// The read end of a pipe from a child's stderr: [`Child::stderr`](crate::process::Child::stderr)
    /// when spawned with [`Stdio::piped`](crate::process::Stdio::piped). Reads as
    /// [`ChildStdout`]'s.
    ChildStderr
);

/// How much one read of [`read_to_end`] asks for: a pipe holds 64 KiB by default.
const READ_CHUNK: usize = 64 * 1024;

/// Reads `pipe` to its end, appending to `out`.
pub(crate) async fn read_to_end(pipe: &PipeReader, out: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = Vec::with_capacity(READ_CHUNK);
    let mut total = 0;
    loop {
        chunk.clear();
        let (res, buf) = pipe.read(chunk).await;
        chunk = buf;
        match res {
            Ok(0) => return Ok(total),
            Ok(n) => {
                out.extend_from_slice(&chunk[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl ChildStdout {
    pub(crate) fn pipe(&self) -> &PipeReader {
        &self.pipe
    }
}

impl ChildStderr {
    pub(crate) fn pipe(&self) -> &PipeReader {
        &self.pipe
    }
}
