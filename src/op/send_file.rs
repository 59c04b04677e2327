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
use crate::op::splice::{splice_with, Pipe};
use std::io;

/// The default capacity of a pipe: 16 pages.
const DEFAULT_PIPE: u64 = 64 * 1024;

/// The capacity asked for a long transfer: `/proc/sys/fs/pipe-max-size`'s default, which an
/// unprivileged process may ask for.
const LARGE_PIPE: u64 = 1024 * 1024;

/// One splice of at most `len` bytes between a pipe end and a file or socket, holding the
/// pipe's `other_end` too (INV-pipe: a splice into a socket waits for room with the pipe's lock
/// held, and closing either end takes that lock); `Interrupted` is retried.
async fn splice(
    fd_in: &SharedFd,
    off_in: i64,
    fd_out: &SharedFd,
    other_end: &SharedFd,
    len: u32,
    flags: u32,
) -> io::Result<u32> {
    loop {
        match splice_with(fd_in, off_in, fd_out, Some(other_end), len as usize, flags).await {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            res => return res.map(|n| n as u32),
        }
    }
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
    let pipe = Pipe::new(if len > DEFAULT_PIPE {
        LARGE_PIPE as usize
    } else {
        DEFAULT_PIPE as usize
    })?;
    let (pipe_r, pipe_w, capacity) = (pipe.read, pipe.write, pipe.capacity as u64);
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
