//! File and path operations: `IORING_OP_OPENAT`, `STATX`, `FSYNC`, `FALLOCATE`, `FTRUNCATE`,
//! `CLOSE`, `UNLINKAT`, `MKDIRAT`, `RENAMEAT`, `LINKAT`, `SYMLINKAT`.
//!
//! Paths are `CString`s owned by the op (their heap bytes do not move), the statx buffer is boxed
//! in the op (INV-heap), and every fd an SQE names is a `SharedFd` clone held by the op (INV-fd).
//! The runtime requires Linux 5.11, which has every opcode here except `MKDIRAT`, `LINKAT`,
//! `SYMLINKAT` (5.15) and `FTRUNCATE` (6.9): those fall back to the plain syscall when the
//! running kernel lacks them (see [`opcode_supported`]); on Linux 6.9 or newer every op here goes
//! through the ring.

use crate::driver::opcode_supported;
use crate::driver::slot::Completion;
use crate::fd::SharedFd;
use crate::op::net::close_unclaimed_fd;
use crate::op::{cqe_result, Op, OpCode};
use io_uring::{opcode, squeue, types};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path as the kernel wants it: NUL-terminated, on the heap.
pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "path contains an interior NUL byte",
        )
    })
}

/// The result of a plain syscall returning -1 and `errno` on failure.
fn cvt(res: libc::c_int) -> io::Result<u32> {
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res as u32)
    }
}

struct OpenAt {
    path: CString,
    flags: i32,
    mode: libc::mode_t,
}

// SAFETY: the path pointer refers to the CString's heap bytes, owned by `self` (INV-heap); the
// dirfd is AT_FDCWD, not an fd the op must hold.
unsafe impl OpCode for OpenAt {
    fn create_entry(&mut self) -> squeue::Entry {
        opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
            .flags(self.flags | libc::O_CLOEXEC)
            .mode(self.mode)
            .build()
    }

    fn unclaimed(&mut self, c: Completion) {
        // A file opened for a future that is gone: nobody else knows its fd.
        close_unclaimed_fd(c);
    }
}

/// Opens `path` (relative to the working directory) and returns the new fd, owned.
pub(crate) async fn open(path: CString, flags: i32, mode: libc::mode_t) -> io::Result<SharedFd> {
    let (c, _) = Op::new(OpenAt { path, flags, mode }).await;
    cqe_result(c).map(|fd| SharedFd::new_file(fd as RawFd, flags))
}

struct Statx {
    /// Held so the fd stays open while the kernel looks at it; `None` for a path lookup.
    _fd: Option<SharedFd>,
    dirfd: RawFd,
    path: CString,
    flags: i32,
    buf: Box<libc::statx>,
}

// SAFETY: the path and the statx buffer are heap memory owned by `self` (INV-heap); the dirfd is
// AT_FDCWD or the fd of `_fd`, held by `self` (INV-fd).
unsafe impl OpCode for Statx {
    fn create_entry(&mut self) -> squeue::Entry {
        opcode::Statx::new(
            types::Fd(self.dirfd),
            self.path.as_ptr(),
            (&mut *self.buf as *mut libc::statx).cast::<types::statx>(),
        )
        .flags(self.flags)
        .mask(STATX_MASK)
        .build()
    }
}

/// What `statx` is asked for: the basic fields, the birth time and the O_DIRECT alignment.
const STATX_MASK: u32 = libc::STATX_BASIC_STATS | libc::STATX_BTIME | libc::STATX_DIOALIGN;

fn zeroed_statx() -> Box<libc::statx> {
    // SAFETY: INV-ffi: `statx` is plain old data (integers only), for which all zero bytes are
    // valid.
    Box::new(unsafe { std::mem::zeroed() })
}

async fn statx_raw(
    fd: Option<SharedFd>,
    path: CString,
    flags: i32,
) -> io::Result<Box<libc::statx>> {
    let dirfd = fd.as_ref().map_or(libc::AT_FDCWD, |f| f.as_raw_fd());
    let (c, op) = Op::new(Statx {
        _fd: fd,
        dirfd,
        path,
        flags,
        buf: zeroed_statx(),
    })
    .await;
    cqe_result(c).map(|_| op.buf)
}

/// `statx` of an open file.
pub(crate) async fn statx_fd(fd: &SharedFd) -> io::Result<Box<libc::statx>> {
    statx_raw(Some(fd.clone()), CString::default(), libc::AT_EMPTY_PATH).await
}

/// `statx` of a path, following symlinks unless `follow` is false.
pub(crate) async fn statx_path(path: CString, follow: bool) -> io::Result<Box<libc::statx>> {
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    statx_raw(None, path, flags).await
}

/// An op on one fd with no memory in the SQE: fsync, fallocate, ftruncate.
struct FdOp {
    fd: SharedFd,
    entry: fn(types::Fd, u64, u64, i32) -> squeue::Entry,
    a: u64,
    b: u64,
    c: i32,
}

// SAFETY: the SQE holds no pointers; its fd is `self.fd`, held by `self` (INV-fd).
unsafe impl OpCode for FdOp {
    fn create_entry(&mut self) -> squeue::Entry {
        (self.entry)(types::Fd(self.fd.as_raw_fd()), self.a, self.b, self.c)
    }
}

async fn fd_op(
    fd: &SharedFd,
    entry: fn(types::Fd, u64, u64, i32) -> squeue::Entry,
    a: u64,
    b: u64,
    c: i32,
) -> io::Result<u32> {
    let (c, _) = Op::new(FdOp {
        fd: fd.clone(),
        entry,
        a,
        b,
        c,
    })
    .await;
    cqe_result(c)
}

/// `fsync`, or `fdatasync` when `data_only`.
pub(crate) async fn fsync(fd: &SharedFd, data_only: bool) -> io::Result<()> {
    let flags = if data_only { 1 } else { 0 };
    fd_op(
        fd,
        |fd, _, _, flags| {
            let flags = if flags != 0 {
                types::FsyncFlags::DATASYNC
            } else {
                types::FsyncFlags::empty()
            };
            opcode::Fsync::new(fd).flags(flags).build()
        },
        0,
        0,
        flags,
    )
    .await
    .map(|_| ())
}

/// `fallocate(fd, mode, offset, len)`.
pub(crate) async fn fallocate(fd: &SharedFd, offset: u64, len: u64, mode: i32) -> io::Result<()> {
    fd_op(
        fd,
        |fd, offset, len, mode| {
            opcode::Fallocate::new(fd, len)
                .offset(offset)
                .mode(mode)
                .build()
        },
        offset,
        len,
        mode,
    )
    .await
    .map(|_| ())
}

/// Truncates or extends the file to `len`. `IORING_OP_FTRUNCATE` exists since Linux 6.9; before
/// that this is a plain `ftruncate(2)`, which does not wait on I/O for the common cases
/// (extending, or shrinking a file with no dirty pages past `len`).
pub(crate) async fn ftruncate(fd: &SharedFd, len: u64) -> io::Result<()> {
    if len > i64::MAX as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "file length beyond i64::MAX",
        ));
    }
    if !opcode_supported(opcode::Ftruncate::CODE) {
        return ftruncate_syscall(fd.as_raw_fd(), len);
    }
    fd_op(
        fd,
        |fd, len, _, _| opcode::Ftruncate::new(fd, len).build(),
        len,
        0,
        0,
    )
    .await
    .map(|_| ())
}

/// The fallback of [`ftruncate`] (public within the crate so tests exercise it).
pub(crate) fn ftruncate_syscall(fd: RawFd, len: u64) -> io::Result<()> {
    // SAFETY: INV-ffi: plain syscall on an fd the caller holds open.
    cvt(unsafe { libc::ftruncate(fd, len as i64) }).map(|_| ())
}

struct Close {
    fd: RawFd,
    /// Set once the SQE exists: from then on the kernel closes the fd, not our drop.
    handed_over: bool,
}

// SAFETY: INV-fd: the SQE holds no pointers; it names `fd`, which `self` owns until the kernel
// closes it.
unsafe impl OpCode for Close {
    const CANCELLABLE: bool = false;

    fn create_entry(&mut self) -> squeue::Entry {
        self.handed_over = true;
        opcode::Close::new(types::Fd(self.fd)).build()
    }

    fn unclaimed(&mut self, c: Completion) {
        // The kernel did not run the close (a shutdown's cancel removed it, or it never reached
        // the kernel): the fd is still ours, and its future is gone, so close it here.
        if c.result == -libc::ECANCELED {
            self.handed_over = false;
        }
    }
}

impl Drop for Close {
    fn drop(&mut self) {
        if !self.handed_over {
            // SAFETY: INV-fd: the fd is ours and the kernel was never given it to close, or did
            // not.
            unsafe { libc::close(self.fd) };
        }
    }
}

/// Closes an fd we own and reports the kernel's verdict.
pub(crate) async fn close(fd: RawFd) -> io::Result<()> {
    let (c, mut op) = Op::new(Close {
        fd,
        handed_over: false,
    })
    .await;
    if c.result == -libc::ECANCELED {
        // Only a runtime shutting down answers a close this way: the SQE never reached the
        // kernel, or the shutdown's cancel removed it before it ran. The drop closes the fd.
        op.handed_over = false;
        drop(op);
        return Ok(());
    }
    cqe_result(c).map(|_| ())
}

/// The path ops: one or two paths, relative to the working directory.
enum PathOpKind {
    Unlink { flags: i32 },
    MkDir { mode: libc::mode_t },
    Rename,
    Link,
    Symlink,
}

struct PathOp {
    kind: PathOpKind,
    first: CString,
    second: CString,
}

// SAFETY: both path pointers refer to CString heap bytes owned by `self` (INV-heap); the dirfds
// are AT_FDCWD.
unsafe impl OpCode for PathOp {
    fn create_entry(&mut self) -> squeue::Entry {
        let cwd = types::Fd(libc::AT_FDCWD);
        let (a, b) = (self.first.as_ptr(), self.second.as_ptr());
        match self.kind {
            PathOpKind::Unlink { flags } => opcode::UnlinkAt::new(cwd, a).flags(flags).build(),
            PathOpKind::MkDir { mode } => opcode::MkDirAt::new(cwd, a).mode(mode).build(),
            PathOpKind::Rename => opcode::RenameAt::new(cwd, a, cwd, b).build(),
            PathOpKind::Link => opcode::LinkAt::new(cwd, a, cwd, b).build(),
            PathOpKind::Symlink => opcode::SymlinkAt::new(cwd, a, b).build(),
        }
    }
}

impl PathOp {
    /// Whether the running kernel lacks this op's opcode (Linux 5.11 has unlinkat and
    /// renameat; mkdirat, linkat and symlinkat came in 5.15).
    fn needs_syscall(&self) -> bool {
        let code = match self.kind {
            PathOpKind::Unlink { .. } | PathOpKind::Rename => return false,
            PathOpKind::MkDir { .. } => opcode::MkDirAt::CODE,
            PathOpKind::Link => opcode::LinkAt::CODE,
            PathOpKind::Symlink => opcode::SymlinkAt::CODE,
        };
        !opcode_supported(code)
    }

    /// The plain syscall, on kernels without the opcode.
    fn syscall(&self) -> io::Result<()> {
        let cwd = libc::AT_FDCWD;
        let (a, b) = (self.first.as_ptr(), self.second.as_ptr());
        // SAFETY: INV-ffi: plain syscalls on NUL-terminated paths owned by `self`.
        let res = unsafe {
            match self.kind {
                PathOpKind::MkDir { mode } => libc::mkdirat(cwd, a, mode),
                PathOpKind::Link => libc::linkat(cwd, a, cwd, b, 0),
                PathOpKind::Symlink => libc::symlinkat(a, cwd, b),
                PathOpKind::Unlink { .. } | PathOpKind::Rename => {
                    unreachable!("unlinkat and renameat are always on the ring")
                }
            }
        };
        cvt(res).map(|_| ())
    }
}

async fn path_op(kind: PathOpKind, first: CString, second: CString) -> io::Result<()> {
    let op = PathOp {
        kind,
        first,
        second,
    };
    if op.needs_syscall() {
        return op.syscall();
    }
    let (c, _) = Op::new(op).await;
    cqe_result(c).map(|_| ())
}

/// `unlinkat(path, flags)` (`AT_REMOVEDIR` removes a directory).
pub(crate) async fn unlink(path: CString, flags: i32) -> io::Result<()> {
    path_op(PathOpKind::Unlink { flags }, path, CString::default()).await
}

/// `mkdirat(path, mode)`. Syscall before Linux 5.15.
pub(crate) async fn mkdir(path: CString, mode: libc::mode_t) -> io::Result<()> {
    path_op(PathOpKind::MkDir { mode }, path, CString::default()).await
}

/// `renameat(from, to)`.
pub(crate) async fn rename(from: CString, to: CString) -> io::Result<()> {
    path_op(PathOpKind::Rename, from, to).await
}

/// `linkat(original, link)`, not following symlinks. Syscall before Linux 5.15.
pub(crate) async fn link(original: CString, link: CString) -> io::Result<()> {
    path_op(PathOpKind::Link, original, link).await
}

/// `symlinkat(target, link)`. Syscall before Linux 5.15.
pub(crate) async fn symlink(target: CString, link: CString) -> io::Result<()> {
    path_op(PathOpKind::Symlink, target, link).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftruncate_fallback_works() {
        let path = std::env::temp_dir().join(format!("uring-ftr-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        ftruncate_syscall(f.as_raw_fd(), 12345).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 12345);
    }

    #[test]
    fn nul_in_path_is_invalid_input() {
        let err = cstring(Path::new("a\0b")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
