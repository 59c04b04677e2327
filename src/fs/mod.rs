//! Files over io_uring: positional reads and writes, metadata and directory operations on the
//! ring, never on a helper thread.
//!
//! | function | io_uring op | fallback on older kernels (the runtime needs 5.11) |
//! |---|---|---|
//! | [`File::open`], [`File::create`], [`OpenOptions::open`] | `OPENAT` | none needed |
//! | [`File::read_at`], [`File::write_at`], `*_exact_at`, `*_all_at` | `READ`, `WRITE` | none needed |
//! | [`File::readv_at`], [`File::writev_at`] | `READV`, `WRITEV` | none needed |
//! | [`File::sync_all`], [`File::sync_data`] | `FSYNC` | none needed |
//! | [`File::metadata`], [`metadata`], [`symlink_metadata`] | `STATX` | none needed |
//! | [`File::set_len`] | `FTRUNCATE` | `ftruncate(2)` before 6.9 |
//! | [`File::fallocate`] | `FALLOCATE` | none needed |
//! | [`File::close`] | `CLOSE` | none needed (dropping a `File` is a plain `close(2)`) |
//! | [`remove_file`], [`remove_dir`] | `UNLINKAT` | none needed |
//! | [`rename`] | `RENAMEAT` | none needed |
//! | [`create_dir`], [`create_dir_all`] | `MKDIRAT` | `mkdirat(2)` before 5.15 |
//! | [`hard_link`], [`symlink`] | `LINKAT`, `SYMLINKAT` | `linkat(2)`, `symlinkat(2)` before 5.15 |
//! | [`read`], [`write()`], [`copy`] | the above | |
//!
//! Whether the kernel offers the newer opcodes is probed once per process
//! (`IORING_REGISTER_PROBE`). Two
//! things have no io_uring op at all and use the plain syscall: [`copy`] sets the destination's
//! permissions with `fchmod(2)`, and listing a directory (there is no `getdents` op) is left to
//! `std::fs::read_dir`, which reads names and metadata only, never file data.
//!
//! Errors are the kernel's, typed: a missing path is `NotFound`, `EACCES` is
//! `PermissionDenied`, a directory opened for writing is `IsADirectory`, a full disk is
//! `StorageFull`. Reading at or past the end of a file returns `Ok(0)`.
//!
//! For `O_DIRECT` ([`OpenOptions::custom_flags`]), use an [`AlignedBuf`] with offsets and
//! lengths that are multiples of the device's logical block size.

mod aligned;
mod file;
mod metadata;
mod open_options;

pub use aligned::{AlignedBuf, DEFAULT_ALIGN};
pub use file::File;
pub use metadata::{FileType, Metadata};
pub use open_options::OpenOptions;

use crate::buf::IoBuf;
use crate::op::fs as op;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Grows `buf` by `more` bytes of capacity, or fails with `OutOfMemory`.
fn reserve(buf: &mut Vec<u8>, more: usize) -> io::Result<()> {
    buf.try_reserve_exact(more).map_err(|e| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("cannot hold the file in memory: {e}"),
        )
    })
}

/// The chunk size [`read`] and [`copy`] move per operation.
const CHUNK: usize = 1 << 20;

/// Reads a whole file: opens it, asks `statx` for its size, and reads until end of file (files
/// that report size 0, as in `/proc`, are read until a read returns 0 too).
///
/// ```
/// uring::run(async {
///     let path = std::env::temp_dir().join(format!("uring-doc-read-{}", std::process::id()));
///     uring::fs::write(&path, "some text").await?;
///     assert_eq!(uring::fs::read(&path).await?, b"some text");
///     uring::fs::remove_file(&path).await
/// })
/// .unwrap();
/// ```
///
/// # Errors
///
/// As [`File::open`] and [`File::read_at`].
pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let file = File::open(path).await?;
    let size = file.metadata().await?.len() as usize;
    // One more byte than the size, so a file that did not grow ends with one read returning 0.
    // Fallible: a huge (or sparse) file is an OutOfMemory error, not an abort.
    let mut buf = Vec::new();
    reserve(&mut buf, size.saturating_add(1).max(64))?;
    loop {
        if buf.len() == buf.capacity() {
            let more = buf.capacity().min(CHUNK * 16);
            reserve(&mut buf, more)?;
        }
        let start = buf.len();
        let (res, slice) = file.read_at(buf.slice(start..), start as u64).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    file.close().await?;
    Ok(buf)
}

/// Writes `contents` as the whole content of the file at `path`, creating or truncating it.
/// `contents` is any owned buffer: `Vec<u8>`, `String`, `&'static str`, ...
///
/// # Errors
///
/// As [`File::create`] and [`File::write_all_at`].
pub async fn write<B: IoBuf>(path: impl AsRef<Path>, contents: B) -> io::Result<()> {
    let file = File::create(path).await?;
    file.write_all_at(contents, 0).await.0?;
    file.close().await
}

/// The metadata of the file at `path`, following symlinks (`IORING_OP_STATX`).
///
/// # Errors
///
/// `NotFound` if nothing is there; `PermissionDenied` if a directory on the way is not searchable.
pub async fn metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    let path = op::cstring(path.as_ref())?;
    op::statx_path(path, true).await.map(Metadata::from_statx)
}

/// The metadata of `path` itself: a symlink is described, not followed.
///
/// # Errors
///
/// As [`metadata`].
pub async fn symlink_metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    let path = op::cstring(path.as_ref())?;
    op::statx_path(path, false).await.map(Metadata::from_statx)
}

/// Removes a file or symlink (`IORING_OP_UNLINKAT`).
///
/// # Errors
///
/// `NotFound`; `IsADirectory` for a directory; `PermissionDenied`.
pub async fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    op::unlink(op::cstring(path.as_ref())?, 0).await
}

/// Removes an empty directory (`IORING_OP_UNLINKAT` with `AT_REMOVEDIR`).
///
/// # Errors
///
/// `NotFound`; `DirectoryNotEmpty`; `NotADirectory`.
pub async fn remove_dir(path: impl AsRef<Path>) -> io::Result<()> {
    op::unlink(op::cstring(path.as_ref())?, libc::AT_REMOVEDIR).await
}

/// Creates a directory (mode `0o777` before the umask) (`IORING_OP_MKDIRAT`).
///
/// # Errors
///
/// `AlreadyExists`; `NotFound` if the parent is missing.
pub async fn create_dir(path: impl AsRef<Path>) -> io::Result<()> {
    op::mkdir(op::cstring(path.as_ref())?, 0o777).await
}

/// Creates a directory and any missing parents; succeeds if it already exists as a directory.
///
/// ```
/// uring::run(async {
///     let base = std::env::temp_dir().join(format!("uring-doc-dirs-{}", std::process::id()));
///     uring::fs::create_dir_all(base.join("a/b/c")).await?;
///     assert!(uring::fs::metadata(base.join("a/b/c")).await?.is_dir());
///     std::fs::remove_dir_all(&base)
/// })
/// .unwrap();
/// ```
///
/// # Errors
///
/// `AlreadyExists` if a non-directory is in the way (`NotADirectory` for one on the way).
pub async fn create_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    // Walk up to the deepest existing ancestor, then create downwards (no recursion in async).
    let mut missing = Vec::new();
    let mut cur = path;
    loop {
        if cur.as_os_str().is_empty() {
            break;
        }
        match create_dir(cur).await {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur);
                match cur.parent() {
                    Some(p) => cur = p,
                    None => return Err(e),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if metadata(cur).await?.is_dir() {
                    break;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    for dir in missing.into_iter().rev() {
        match create_dir(dir).await {
            Ok(()) => {}
            // Someone else made it meanwhile.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && metadata(dir).await?.is_dir() => {
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Renames `from` to `to`, replacing `to` if it exists (`IORING_OP_RENAMEAT`).
///
/// # Errors
///
/// `NotFound`; `CrossesDevices` across filesystems; `IsADirectory`/`NotADirectory` on a type
/// mismatch.
pub async fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    op::rename(op::cstring(from.as_ref())?, op::cstring(to.as_ref())?).await
}

/// Makes `link` a new hard link to `original` (`IORING_OP_LINKAT`).
///
/// # Errors
///
/// `NotFound`; `AlreadyExists` if `link` exists.
pub async fn hard_link(original: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
    op::link(op::cstring(original.as_ref())?, op::cstring(link.as_ref())?).await
}

/// Makes `link` a symbolic link pointing to `original` (`IORING_OP_SYMLINKAT`).
///
/// # Errors
///
/// `AlreadyExists` if `link` exists.
pub async fn symlink(original: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
    op::symlink(op::cstring(original.as_ref())?, op::cstring(link.as_ref())?).await
}

/// Copies the contents of `from` to `to` (created or truncated), and its permission bits, as
/// `std::fs::copy` does; returns the number of bytes copied. The data moves through the ring in
/// 1 MiB reads and writes, with the next read in flight while the previous chunk is written.
/// The permissions are set with `fchmod(2)`, for which io_uring has no op.
///
/// # Errors
///
/// `InvalidInput` if `from` is not a regular file; the errors of opening, reading and writing.
pub async fn copy(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<u64> {
    let src = File::open(from).await?;
    let meta = src.metadata().await?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "copy: the source is not a regular file",
        ));
    }
    let dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(meta.permissions().mode())
        .open(to)
        .await?;
    let mut pos = 0u64;
    let mut spare = Vec::with_capacity(CHUNK);
    let (res, mut chunk) = src.read_at(Vec::with_capacity(CHUNK), 0).await;
    let mut n = res?;
    while n > 0 {
        // Read the next chunk while this one is written.
        spare.clear();
        let ((read_res, next), (write_res, written)) = join(
            src.read_at(spare, pos + n as u64),
            dst.write_all_at(chunk, pos),
        )
        .await;
        write_res?;
        pos += n as u64;
        n = read_res?;
        spare = written;
        chunk = next;
    }
    // SAFETY: INV-ffi: plain syscall on an fd `dst` keeps open.
    if unsafe { libc::fchmod(dst.as_raw_fd(), meta.permissions().mode()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    dst.close().await?;
    Ok(pos)
}

/// Runs two futures concurrently on this task, returning both outputs.
async fn join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    use std::pin::pin;
    use std::task::Poll;
    let mut a = pin!(a);
    let mut b = pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(move |cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready((ra.take().expect("set"), rb.take().expect("set")))
        } else {
            Poll::Pending
        }
    })
    .await
}
