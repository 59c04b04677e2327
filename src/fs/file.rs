//! `File`: an open file whose reads, writes, syncs and metadata go through the ring.

use crate::buf::{IoBuf, IoBufMut};
use crate::fd::SharedFd;
use crate::fs::{Metadata, OpenOptions};
use crate::io::{until_done, Short, SpliceEnd, SpliceSink, SpliceSource};
use crate::op::{fs as op, rw};
use crate::BufResult;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, RawFd};
use std::path::Path;

/// An open file. Every method takes `&self`: positional I/O needs no cursor, so one `File`
/// (shared with `Rc`) serves many concurrent operations.
///
/// Dropping a `File` closes it at once with `close(2)` (or, if an operation whose future was
/// dropped still holds it, as soon as the kernel is done with that operation);
/// [`close`](File::close) closes it through the ring instead, without blocking the loop on a
/// filesystem whose close flushes (NFS, FUSE), and reports the kernel's verdict.
///
/// ```
/// use uring::fs::File;
/// uring::run(async {
///     let path = std::env::temp_dir().join(format!("uring-doc-file-{}", std::process::id()));
///     let f = File::create(&path).await?;
///     let (res, _) = f.write_all_at(b"hello".to_vec(), 0).await;
///     res?;
///     f.close().await?;
///     let f = File::open(&path).await?;
///     let (res, buf) = f.read_at(Vec::with_capacity(16), 0).await;
///     assert_eq!(res?, 5);
///     assert_eq!(buf, b"hello");
///     assert_eq!(f.metadata().await?.len(), 5);
///     f.close().await?;
///     uring::fs::remove_file(&path).await
/// })
/// .unwrap();
/// ```
#[derive(Debug)]
pub struct File {
    fd: SharedFd,
}

impl File {
    /// Opens a file read-only (`IORING_OP_OPENAT`).
    ///
    /// # Errors
    ///
    /// As [`OpenOptions::open`]: `NotFound` for a missing path, `PermissionDenied`, ...
    pub async fn open(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new().read(true).open(path).await
    }

    /// Opens a file write-only, creating it (mode `0o666` before the umask) or truncating it.
    ///
    /// # Errors
    ///
    /// As [`OpenOptions::open`]; `IsADirectory` if `path` is a directory.
    pub async fn create(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .await
    }

    pub(crate) fn from_shared(fd: SharedFd) -> File {
        File { fd }
    }

    /// The file's fd, for ops of other modules that name it (a socket's `send_file`).
    pub(crate) fn shared_fd(&self) -> &SharedFd {
        &self.fd
    }

    /// Wraps an open `std::fs::File` (or any fd turned into one, such as a pipe end), putting
    /// it back into blocking mode if it was not: io_uring answers an `O_NONBLOCK` fd that is
    /// not ready with `EAGAIN` instead of waiting for it. The same shape as the sockets'
    /// `from_std`.
    ///
    /// # Errors
    ///
    /// If the mode cannot be read or changed (`fcntl(2)`).
    pub fn from_std(file: std::fs::File) -> io::Result<File> {
        let flags = set_blocking(&file)?;
        Ok(File {
            fd: SharedFd::new_file(file.into_raw_fd(), flags),
        })
    }

    /// Gives the file back as a `std::fs::File`. If an operation whose future was dropped still
    /// holds the fd (the kernel has not completed it yet), the result is a duplicate of the fd,
    /// and this one is closed when that operation is done. The same shape as the sockets'
    /// `into_std`.
    ///
    /// # Errors
    ///
    /// If the fd had to be duplicated and that failed (`EMFILE`).
    pub fn into_std(self) -> io::Result<std::fs::File> {
        match self.fd.try_unwrap() {
            // SAFETY: INV-fd: `try_unwrap` handed us sole ownership of the open fd.
            Ok(fd) => Ok(unsafe { std::fs::File::from_raw_fd(fd) }),
            Err(shared) => {
                // SAFETY: INV-fd: `shared` keeps the fd open for the borrow.
                let borrowed = unsafe { BorrowedFd::borrow_raw(shared.as_raw_fd()) };
                Ok(std::fs::File::from(borrowed.try_clone_to_owned()?))
            }
        }
    }

    /// Reads into `buf` from file offset `pos`, filling from the buffer's start up to its
    /// capacity (`IORING_OP_READ`); returns how many bytes were read: 0 at or past the end of
    /// the file, which is not an error.
    ///
    /// A `pos` beyond `i64::MAX` is `InvalidInput` (the kernel reads `-1` as "the cursor").
    pub fn read_at<B: IoBufMut>(
        &self,
        buf: B,
        pos: u64,
    ) -> impl Future<Output = BufResult<usize, B>> + '_ {
        match check_pos(pos) {
            Ok(()) => rw::read(&self.fd, buf, pos),
            Err(e) => rw::ReadFuture::refused(e, buf),
        }
    }

    /// Writes the buffer's initialized bytes at file offset `pos` (`IORING_OP_WRITE`); returns
    /// how many were written, possibly fewer.
    ///
    /// A `pos` beyond `i64::MAX` is `InvalidInput`.
    pub fn write_at<B: IoBuf>(
        &self,
        buf: B,
        pos: u64,
    ) -> impl Future<Output = BufResult<usize, B>> + '_ {
        match check_pos(pos) {
            Ok(()) => rw::write(&self.fd, buf, pos),
            Err(e) => rw::WriteFuture::refused(e, buf),
        }
    }

    /// Reads into the buffers in order from offset `pos` (`IORING_OP_READV`), each filled up to
    /// its capacity before the next; returns the total read.
    pub async fn readv_at<B: IoBufMut>(&self, bufs: Vec<B>, pos: u64) -> BufResult<usize, Vec<B>> {
        if let Err(e) = check_pos(pos) {
            return (Err(e), bufs);
        }
        rw::readv(&self.fd, bufs, pos).await
    }

    /// Writes the buffers' initialized bytes in order at offset `pos` (`IORING_OP_WRITEV`);
    /// returns the total written, possibly fewer.
    pub async fn writev_at<B: IoBuf>(&self, bufs: Vec<B>, pos: u64) -> BufResult<usize, Vec<B>> {
        if let Err(e) = check_pos(pos) {
            return (Err(e), bufs);
        }
        rw::writev(&self.fd, bufs, pos).await
    }

    /// Fills `buf` to its whole capacity from offset `pos`, reading again after short reads.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` if the file ends first (the bytes read so far are in the buffer, its
    /// initialized length says how many); any read error.
    pub async fn read_exact_at<B: IoBufMut>(&self, buf: B, pos: u64) -> BufResult<(), B> {
        let total = buf.bytes_total();
        until_done(buf, total, Short::Read, |slice, done| {
            self.read_at(slice, pos.saturating_add(done as u64))
        })
        .await
    }

    /// Writes all of the buffer's initialized bytes at offset `pos`, writing again after short
    /// writes.
    ///
    /// # Errors
    ///
    /// `WriteZero` if the kernel accepts 0 bytes; any write error, such as `StorageFull`
    /// (`ENOSPC`) or `FileTooLarge` (`EFBIG`). The bytes written before the error stay written.
    pub async fn write_all_at<B: IoBuf>(&self, buf: B, pos: u64) -> BufResult<(), B> {
        let total = buf.bytes_init();
        until_done(buf, total, Short::Write, |slice, done| {
            self.write_at(slice, pos.saturating_add(done as u64))
        })
        .await
    }

    /// Flushes data and metadata to the device (`IORING_OP_FSYNC`).
    pub async fn sync_all(&self) -> io::Result<()> {
        op::fsync(&self.fd, false).await
    }

    /// Flushes data, and only the metadata needed to read it back (`IORING_OP_FSYNC` with
    /// `IORING_FSYNC_DATASYNC`).
    pub async fn sync_data(&self) -> io::Result<()> {
        op::fsync(&self.fd, true).await
    }

    /// The file's metadata (`IORING_OP_STATX` on the fd).
    pub async fn metadata(&self) -> io::Result<Metadata> {
        op::statx_fd(&self.fd).await.map(Metadata::from_statx)
    }

    /// Truncates or extends the file to `size` bytes (extension reads as zeros).
    ///
    /// Uses `IORING_OP_FTRUNCATE` where the kernel has it (Linux 6.9+, probed once per process);
    /// older kernels get a plain `ftruncate(2)` on the loop's thread.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the file is not open for writing or `size` exceeds `i64::MAX`.
    pub async fn set_len(&self, size: u64) -> io::Result<()> {
        op::ftruncate(&self.fd, size).await
    }

    /// Allocates (or, with `mode` flags such as `FALLOC_FL_PUNCH_HOLE`, deallocates) disk space
    /// for `len` bytes at `offset` (`IORING_OP_FALLOCATE`).
    /// `mode` 0 allocates and extends the file size if needed.
    pub async fn fallocate(&self, offset: u64, len: u64, mode: i32) -> io::Result<()> {
        op::fallocate(&self.fd, offset, len, mode).await
    }

    /// Closes the file (`IORING_OP_CLOSE`) and reports any error the close gives.
    ///
    /// If an operation whose future was dropped still holds the file, the fd is closed when that
    /// operation completes instead, and this returns `Ok(())` at once.
    pub async fn close(self) -> io::Result<()> {
        match self.fd.try_unwrap() {
            Ok(fd) => op::close(fd).await,
            Err(shared) => {
                drop(shared);
                Ok(())
            }
        }
    }
}

/// A splice reads the file from its current position and advances it, as `read(2)` does (the
/// positional methods neither use nor move it). A `File` made from a pipe end is spliced as a
/// pipe.
impl SpliceSource for File {
    fn splice_source(&self) -> io::Result<SpliceEnd> {
        Ok(SpliceEnd::new(self.fd.clone(), self.is_pipe(), None))
    }
}

/// A splice writes the file at its current position and advances it, as `write(2)` does.
impl SpliceSink for File {
    fn splice_sink(&self) -> io::Result<SpliceEnd> {
        Ok(SpliceEnd::new(self.fd.clone(), self.is_pipe(), None))
    }
}

impl File {
    /// Whether the fd is a pipe or FIFO (one `fstat(2)`); a failed `fstat` counts as no.
    fn is_pipe(&self) -> bool {
        // SAFETY: INV-ffi: an all-zero `stat` is a valid value of that plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: INV-ffi: fstat on the fd `self` holds open, into our local `st`; checked.
        let ok = unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) } == 0;
        ok && st.st_mode & libc::S_IFMT == libc::S_IFIFO
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for File {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: INV-fd: `self` keeps the fd open for as long as the borrow lasts.
        unsafe { BorrowedFd::borrow_raw(self.fd.as_raw_fd()) }
    }
}

impl From<std::fs::File> for File {
    /// As [`File::from_std`], for a file known to be in blocking mode (a failure to check the
    /// mode is ignored).
    fn from(file: std::fs::File) -> File {
        let flags = set_blocking(&file).unwrap_or(0);
        File {
            fd: SharedFd::new_file(file.into_raw_fd(), flags),
        }
    }
}

/// Clears `O_NONBLOCK` on `file` if it is set; returns the file's status flags (`F_GETFL`).
fn set_blocking(file: &std::fs::File) -> io::Result<i32> {
    let fd = file.as_raw_fd();
    // SAFETY: INV-ffi: F_GETFL on an fd `file` keeps open; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: INV-ffi: F_SETFL on an fd `file` keeps open; no memory is passed.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(flags & !libc::O_NONBLOCK)
}

/// Positions are `i64` (`loff_t`) for the kernel, and `-1` means "the file's cursor": a
/// positional method must never pass one beyond `i64::MAX`.
#[inline]
fn check_pos(pos: u64) -> io::Result<()> {
    if pos > i64::MAX as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("file position {pos} is beyond the largest file offset (i64::MAX)"),
        ));
    }
    Ok(())
}
