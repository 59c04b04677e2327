//! File and path operations: `IORING_OP_OPENAT`, `STATX`, `FSYNC`, `FALLOCATE`, `FTRUNCATE`,
//! `CLOSE`, `UNLINKAT`, `MKDIRAT`, `RENAMEAT`, `LINKAT`, `SYMLINKAT`.
//!
//! Paths are `CString`s owned by the op (their heap bytes do not move), the statx buffer is boxed
//! in the op (INV-heap), and every fd an SQE names is a `SharedFd` clone held by the op (INV-fd).
//! Each function falls back to the plain syscall when the running kernel does not offer the
//! opcode (see [`supported`]); on Linux 6.9 or newer every one of them goes through the ring.

use crate::fd::SharedFd;
use crate::op::{cqe_result, Op, OpCode};
use io_uring::{opcode, squeue, types};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

/// Whether the running kernel's io_uring offers `opcode`, probed once per process with
/// `IORING_REGISTER_PROBE` on a small throwaway ring. If even that fails, every opcode counts as
/// unsupported and the callers use plain syscalls.
pub(crate) fn supported(opcode: u8) -> bool {
    static OPS: OnceLock<[bool; 256]> = OnceLock::new();
    OPS.get_or_init(|| {
        let mut table = [false; 256];
        let Ok(ring) = io_uring::IoUring::new(2) else {
            return table;
        };
        let mut probe = io_uring::Probe::new();
        if ring.submitter().register_probe(&mut probe).is_ok() {
            for (code, slot) in table.iter_mut().enumerate() {
                *slot = probe.is_supported(code as u8);
            }
        }
        table
    })[opcode as usize]
}

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
    const RETURNS_FD: bool = true;

    fn create_entry(&mut self) -> squeue::Entry {
        opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
            .flags(self.flags | libc::O_CLOEXEC)
            .mode(self.mode)
            .build()
    }
}

/// Opens `path` (relative to the working directory) and returns the new fd, owned.
/// Falls back to `openat(2)` on kernels before 5.6.
pub(crate) async fn open(path: CString, flags: i32, mode: libc::mode_t) -> io::Result<SharedFd> {
    if !supported(opcode::OpenAt::CODE) {
        // SAFETY: plain syscall on a NUL-terminated path we own; the result is checked.
        let fd = cvt(unsafe {
            libc::openat(
                libc::AT_FDCWD,
                path.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })?;
        return Ok(SharedFd::new_file(fd as RawFd));
    }
    let (c, _) = Op::new(OpenAt { path, flags, mode }).await;
    cqe_result(c).map(|fd| SharedFd::new_file(fd as RawFd))
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
    // SAFETY: `statx` is plain old data (integers only), for which all zero bytes are valid.
    Box::new(unsafe { std::mem::zeroed() })
}

async fn statx_raw(
    fd: Option<SharedFd>,
    path: CString,
    flags: i32,
) -> io::Result<Box<libc::statx>> {
    let dirfd = fd.as_ref().map_or(libc::AT_FDCWD, |f| f.as_raw_fd());
    if !supported(opcode::Statx::CODE) {
        let mut buf = zeroed_statx();
        // SAFETY: plain syscall writing into the boxed statx we own; the path is NUL-terminated.
        cvt(unsafe { libc::statx(dirfd, path.as_ptr(), flags, STATX_MASK, &mut *buf) })?;
        return Ok(buf);
    }
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

/// `statx` of an open file. Falls back to `statx(2)` on kernels before 5.6.
pub(crate) async fn statx_fd(fd: &SharedFd) -> io::Result<Box<libc::statx>> {
    statx_raw(Some(fd.clone()), CString::default(), libc::AT_EMPTY_PATH).await
}

/// `statx` of a path, following symlinks unless `follow` is false. Falls back to `statx(2)` on
/// kernels before 5.6.
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

/// `fsync`, or `fdatasync` when `data_only`. Falls back to the syscall before Linux 5.1.
pub(crate) async fn fsync(fd: &SharedFd, data_only: bool) -> io::Result<()> {
    if !supported(opcode::Fsync::CODE) {
        // SAFETY: plain syscalls on an fd we hold open.
        let res = unsafe {
            if data_only {
                libc::fdatasync(fd.as_raw_fd())
            } else {
                libc::fsync(fd.as_raw_fd())
            }
        };
        return cvt(res).map(|_| ());
    }
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

/// `fallocate(fd, mode, offset, len)`. Falls back to the syscall before Linux 5.6.
pub(crate) async fn fallocate(fd: &SharedFd, offset: u64, len: u64, mode: i32) -> io::Result<()> {
    if !supported(opcode::Fallocate::CODE) {
        // SAFETY: plain syscall on an fd we hold open.
        let res = unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset as i64, len as i64) };
        return cvt(res).map(|_| ());
    }
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
    if !supported(opcode::Ftruncate::CODE) {
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
    // SAFETY: plain syscall on an fd the caller holds open.
    cvt(unsafe { libc::ftruncate(fd, len as i64) }).map(|_| ())
}

struct Close {
    fd: RawFd,
    /// Set once the SQE exists: from then on the kernel closes the fd, not our drop.
    handed_over: bool,
}

// SAFETY: the SQE holds no pointers; it names `fd`, which `self` owns until the kernel closes it.
unsafe impl OpCode for Close {
    const CANCELLABLE: bool = false;

    fn create_entry(&mut self) -> squeue::Entry {
        self.handed_over = true;
        opcode::Close::new(types::Fd(self.fd)).build()
    }
}

impl Drop for Close {
    fn drop(&mut self) {
        if !self.handed_over {
            // SAFETY: the fd is ours and was never given to the kernel to close.
            unsafe { libc::close(self.fd) };
        }
    }
}

/// Closes an fd we own and reports the kernel's verdict. Falls back to `close(2)` before 5.6.
pub(crate) async fn close(fd: RawFd) -> io::Result<()> {
    if !supported(opcode::Close::CODE) {
        // SAFETY: the caller gives up `fd`, which it owned.
        return cvt(unsafe { libc::close(fd) }).map(|_| ());
    }
    let (c, _) = Op::new(Close {
        fd,
        handed_over: false,
    })
    .await;
    match cqe_result(c) {
        // Only a runtime shutting down answers a close this way: the SQE never reached the
        // kernel, or the shutdown's cancel removed it before it ran; close the fd here.
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {
            // SAFETY: the kernel did not run the close; the fd is still ours.
            cvt(unsafe { libc::close(fd) }).map(|_| ())
        }
        other => other.map(|_| ()),
    }
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
    fn code(&self) -> u8 {
        match self.kind {
            PathOpKind::Unlink { .. } => opcode::UnlinkAt::CODE,
            PathOpKind::MkDir { .. } => opcode::MkDirAt::CODE,
            PathOpKind::Rename => opcode::RenameAt::CODE,
            PathOpKind::Link => opcode::LinkAt::CODE,
            PathOpKind::Symlink => opcode::SymlinkAt::CODE,
        }
    }

    fn syscall(&self) -> io::Result<()> {
        let cwd = libc::AT_FDCWD;
        let (a, b) = (self.first.as_ptr(), self.second.as_ptr());
        // SAFETY: plain syscalls on NUL-terminated paths owned by `self`.
        let res = unsafe {
            match self.kind {
                PathOpKind::Unlink { flags } => libc::unlinkat(cwd, a, flags),
                PathOpKind::MkDir { mode } => libc::mkdirat(cwd, a, mode),
                PathOpKind::Rename => libc::renameat(cwd, a, cwd, b),
                PathOpKind::Link => libc::linkat(cwd, a, cwd, b, 0),
                PathOpKind::Symlink => libc::symlinkat(a, cwd, b),
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
    if !supported(op.code()) {
        return op.syscall();
    }
    let (c, _) = Op::new(op).await;
    cqe_result(c).map(|_| ())
}

/// `unlinkat(path, flags)` (`AT_REMOVEDIR` removes a directory). Syscall before Linux 5.11.
pub(crate) async fn unlink(path: CString, flags: i32) -> io::Result<()> {
    path_op(PathOpKind::Unlink { flags }, path, CString::default()).await
}

/// `mkdirat(path, mode)`. Syscall before Linux 5.15.
pub(crate) async fn mkdir(path: CString, mode: libc::mode_t) -> io::Result<()> {
    path_op(PathOpKind::MkDir { mode }, path, CString::default()).await
}

/// `renameat(from, to)`. Syscall before Linux 5.11.
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
    fn probe_reports_basic_ops() {
        // Every kernel the runtime accepts (5.11+) has these.
        assert!(supported(opcode::Read::CODE));
        assert!(supported(opcode::OpenAt::CODE));
        assert!(supported(opcode::Statx::CODE));
    }

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
