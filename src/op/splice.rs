//! Moving bytes between two fds inside the kernel: `IORING_OP_SPLICE` (one end must be a pipe),
//! and the pipe that joins two ends that are not.
//!
//! The kernel runs every splice on an io-wq worker (`io_uring/splice.c` marks it
//! `REQ_F_FORCE_ASYNC`), which performs a blocking `splice(2)`: so the fds stay in blocking mode,
//! there is never an `EAGAIN`, and a splice from a socket with nothing to read holds that worker
//! until bytes arrive (or the op is cancelled).

use crate::driver::opcode_supported;
use crate::fd::SharedFd;
use crate::op::{cqe_result, Op, OpCode};
use io_uring::{opcode, squeue, types};
use std::io;
use std::os::fd::AsRawFd;

/// Largest length one splice SQE can ask for.
const MAX_LEN: usize = u32::MAX as usize;

/// `splice(fd_in, off_in, fd_out, NULL, len, flags)`: from `off_in` of a file (-1: at the
/// current position, which a pipe or socket does not have and a file's is used and advanced, as
/// by read(2)), into `fd_out` at its current position.
struct Splice {
    fd_in: SharedFd,
    off_in: i64,
    fd_out: SharedFd,
    /// The other end of the in-between pipe, when one of the fds is an end of it: held too, so
    /// the pipe is never closed while this splice may hold its lock (INV-pipe).
    _other_end: Option<SharedFd>,
    len: u32,
    flags: u32,
}

// SAFETY: INV-heap: the SQE carries no pointer. Both fds it names are held by `self` until the
// final CQE (INV-fd), by number (never a registered slot), and so is the other end of an
// in-between pipe it names (INV-pipe).
unsafe impl OpCode for Splice {
    fn create_entry(&mut self) -> squeue::Entry {
        opcode::Splice::new(
            types::Fd(self.fd_in.as_raw_fd()),
            self.off_in,
            types::Fd(self.fd_out.as_raw_fd()),
            -1,
            self.len,
        )
        .flags(self.flags)
        .build()
    }
}

/// Whether the running kernel's io_uring has `IORING_OP_SPLICE` (Linux 5.7 and newer, so every
/// kernel the runtime accepts; probed all the same, as a kernel may filter opcodes).
pub(crate) fn supported() -> bool {
    opcode_supported(opcode::Splice::CODE)
}

/// Moves up to `len` bytes from `fd_in` to `fd_out`, one of which must be a pipe, at their
/// current positions with `SPLICE_F_MOVE`; returns how many moved (0: `fd_in` is at end of
/// file, or `len` was 0). `other_end`: the other end of the in-between pipe when one of the fds
/// is an end of it, held with the op (INV-pipe).
pub(crate) async fn splice(
    fd_in: &SharedFd,
    fd_out: &SharedFd,
    other_end: Option<&SharedFd>,
    len: usize,
) -> io::Result<usize> {
    splice_with(fd_in, -1, fd_out, other_end, len, libc::SPLICE_F_MOVE).await
}

/// As [`splice`], reading `fd_in` from `off_in` (-1: its current position) with `flags`
/// (`SPLICE_F_MORE`: more follows, as `sendfile(2)` tells TCP).
pub(crate) async fn splice_with(
    fd_in: &SharedFd,
    off_in: i64,
    fd_out: &SharedFd,
    other_end: Option<&SharedFd>,
    len: usize,
    flags: u32,
) -> io::Result<usize> {
    let (c, _op) = Op::new(Splice {
        fd_in: fd_in.clone(),
        off_in,
        fd_out: fd_out.clone(),
        _other_end: other_end.cloned(),
        len: len.min(MAX_LEN) as u32,
        flags,
    })
    .await;
    cqe_result(c).map(|n| n as usize)
}

/// A pipe made to join two fds that are not pipes: splice into `write`, then out of `read`.
/// Both ends are blocking and close-on-exec. A splice op holds clones of *both* ends, so a pipe
/// dropped with a splice in flight closes once that splice is done (INV-fd, INV-pipe): the
/// kernel's splice from a socket into a pipe holds the pipe's lock while it waits for data, and
/// a `close(2)` of either end waits for that lock, which on the loop's thread would block the
/// loop until the socket got data.
#[derive(Debug)]
pub(crate) struct Pipe {
    pub(crate) read: SharedFd,
    pub(crate) write: SharedFd,
    /// Its capacity in bytes (what `F_GETPIPE_SZ` says): the most one splice into it can move.
    pub(crate) capacity: usize,
}

impl Pipe {
    /// A new pipe of about `size` bytes (`F_SETPIPE_SZ`; the kernel rounds it up to a power of
    /// two pages). If the kernel refuses that size (above `/proc/sys/fs/pipe-max-size`, or the
    /// user is past `pipe-user-pages-soft`), the pipe keeps the size it was made with.
    ///
    /// # Errors
    ///
    /// `EMFILE`/`ENFILE` when out of fds.
    pub(crate) fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: INV-ffi: pipe2 writes two fds into our local array, its result checked.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let (read, write) = (SharedFd::new(fds[0]), SharedFd::new(fds[1]));
        let wanted = size.min(i32::MAX as usize) as libc::c_int;
        // SAFETY: INV-ffi: fcntl on the pipe we own (`write`), its result checked.
        let set = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, wanted) };
        let capacity = if set > 0 {
            set as usize
        } else {
            // SAFETY: INV-ffi: as above.
            let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
            if got > 0 {
                got as usize
            } else {
                4096
            }
        };
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}
