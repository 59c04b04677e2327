//! File-to-socket transfers, a static file server's `sendfile(2)`: `IORING_OP_SPLICE` from the
//! file into a pipe, then from the pipe into the socket, so the file's page-cache pages reach
//! the socket without passing through user memory.
//!
//! Each call makes its own pipe (`pipe2`, and a larger capacity with `F_SETPIPE_SZ` for
//! transfers longer than the default 64 KiB), closed when the call ends. A cached pipe would
//! save those syscalls (a few microseconds) per call, but a call dropped or failed midway can
//! leave bytes in its pipe that belong to no one, so a cache would have to tell clean pipes
//! from dirty ones; a pipe per call is always clean, holds no state in the stream, and its cost
//! is small next to any transfer worth a `send_file`.
//!
//! Splices run in the kernel's io-wq workers (the kernel forces them async), never on the
//! loop's thread. Those workers block every signal, so the `SIGPIPE` a splice into a closed
//! socket raises (splice has no `MSG_NOSIGNAL`) is never delivered; the op fails with `EPIPE`.

use crate::fd::SharedFd;
use crate::op::{cqe_result, Op, OpCode};
use io_uring::{opcode, squeue, types};
use std::io;
use std::os::fd::AsRawFd;

/// The default capacity of a pipe: 16 pages.
const DEFAULT_PIPE: u64 = 64 * 1024;

/// The capacity asked for a long transfer: `/proc/sys/fs/pipe-max-size`'s default, which an
/// unprivileged process may ask for.
const LARGE_PIPE: u64 = 1024 * 1024;

struct Splice {
    fd_in: SharedFd,
    /// The file position to read from, or -1 for a pipe.
    off_in: i64,
    fd_out: SharedFd,
    /// The pipe's other end, which the SQE does not name. Held so that no end of the pipe is
    /// closed while a splice on it is in flight: a splice into a socket waits for room with
    /// the pipe's lock held, and closing either end takes that lock, so closing the write end
    /// while the kernel splices out of the read end would block the loop's thread until the
    /// socket drains (and the peer that would drain it may be a task of this very loop).
    _other_end: SharedFd,
    len: u32,
    flags: u32,
}

// SAFETY: the SQE holds no pointer; both fds are held by `self` (INV-fd).
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

/// One splice of at most `len` bytes between a pipe end and a file or socket, holding the
/// pipe's `other_end` too; `Interrupted` is retried.
async fn splice(
    fd_in: &SharedFd,
    off_in: i64,
    fd_out: &SharedFd,
    other_end: &SharedFd,
    len: u32,
    flags: u32,
) -> io::Result<u32> {
    loop {
        let (c, _) = Op::new(Splice {
            fd_in: fd_in.clone(),
            off_in,
            fd_out: fd_out.clone(),
            _other_end: other_end.clone(),
            len,
            flags,
        })
        .await;
        match cqe_result(c) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            res => return res,
        }
    }
}

/// A new pipe, its read and write ends (blocking: the ring waits for them), with room for at
/// least `want` bytes where the kernel allows it; and its capacity.
fn pipe_for(want: u64) -> io::Result<(SharedFd, SharedFd, u64)> {
    let mut fds = [0; 2];
    // SAFETY: INV-ffi: pipe2 writes two fds into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (r, w) = (SharedFd::new(fds[0]), SharedFd::new(fds[1]));
    let mut capacity = DEFAULT_PIPE;
    if want > DEFAULT_PIPE {
        // SAFETY: INV-ffi: F_SETPIPE_SZ on a pipe we own; it returns the new capacity or fails
        // (over the user's pipe limits), which leaves the default.
        let got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, LARGE_PIPE as i32) };
        if got > 0 {
            capacity = got as u64;
        }
    }
    Ok((r, w, capacity))
}

/// Sends `len` bytes of `file` from `offset` on the connected socket `socket`, or fewer if the
/// file ends first; returns how many were sent.
pub(crate) async fn send_file(
    file: &SharedFd,
    socket: &SharedFd,
    offset: u64,
    len: u64,
) -> io::Result<u64> {
    if offset > i64::MAX as u64 || len > i64::MAX as u64 - offset {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("send_file: offset {offset} + len {len} is beyond a file's largest offset"),
        ));
    }
    if len == 0 {
        return Ok(0);
    }
    let (pipe_r, pipe_w, capacity) = pipe_for(len)?;
    let mut sent = 0u64;
    while sent < len {
        let chunk = (len - sent).min(capacity) as u32;
        let got = splice(file, (offset + sent) as i64, &pipe_w, &pipe_r, chunk, 0).await?;
        if got == 0 {
            break; // end of file
        }
        let mut in_pipe = got;
        while in_pipe > 0 {
            // More of the file follows: let TCP fill its segments (as sendfile does).
            let more = sent + u64::from(got) < len;
            let flags = if more { libc::SPLICE_F_MORE } else { 0 };
            let n = splice(&pipe_r, -1, socket, &pipe_w, in_pipe, flags).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("the socket took nothing after {sent} bytes of the file"),
                ));
            }
            in_pipe -= n;
        }
        sent += u64::from(got);
    }
    Ok(sent)
}
