//! Zero-copy sends: `IORING_OP_SEND_ZC` (Linux 6.0), with `SEND` where the kernel or the
//! socket has no zero-copy.
//!
//! A zero-copy send posts two completions: the result (bytes taken, or an error) with
//! `IORING_CQE_F_MORE`, and later a notification (`IORING_CQE_F_NOTIF`, without `F_MORE`) once
//! the network stack has released the pages it pinned, which for TCP is when the peer
//! acknowledged the data. Until the notification the kernel may still read the buffer, so the
//! op counts as ended only then: it is a [`MultiOp`] whose final completion is the
//! notification, and a future dropped between the two leaves the buffer in the driver's slot
//! until it arrives (INV-slot), like any other op. A send that fails before the kernel set up
//! the notification posts one completion without `F_MORE`, which then ends the op.

use crate::buf::IoBuf;
use crate::driver::opcode_supported;
use crate::fd::SharedFd;
use crate::op::net::send;
use crate::op::{cqe_result, MultiOp, OpCode};
use crate::BufResult;
use io_uring::{opcode, squeue, types};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// `IORING_CQE_F_NOTIF`: a zero-copy send's notification that the buffer is released.
const CQE_F_NOTIF: u32 = 1 << 3;

/// Largest transfer one SQE can describe.
const MAX_LEN: usize = u32::MAX as usize;

struct SendZc<B> {
    fd: SharedFd,
    buf: B,
    /// `MSG_WAITALL`: the kernel retries a short send itself (stream sockets) until every byte
    /// is taken or an error, under one notification.
    wait_all: bool,
}

// SAFETY: the SQE points into `buf`'s stable, initialized memory (IoBuf contract, INV-heap),
// which `self` owns until the op's final completion, the notification (INV-slot); a registered
// buffer's index is named only while `self` owns the buffer, on the ring that holds it
// (INV-fixedbuf); `fd` is held by `self` (INV-fd).
unsafe impl<B: IoBuf> OpCode for SendZc<B> {
    fn create_entry(&mut self) -> squeue::Entry {
        let len = self.buf.bytes_init().min(MAX_LEN) as u32;
        let mut flags = libc::MSG_NOSIGNAL;
        if self.wait_all {
            flags |= libc::MSG_WAITALL;
        }
        opcode::SendZc::new(types::Fd(self.fd.as_raw_fd()), self.buf.stable_ptr(), len)
            .buf_index(self.buf.fixed_index())
            .flags(flags)
            .build()
    }
}

/// A zero-copy send in flight: resolves, with the buffer, once the kernel is done with it (the
/// notification), carrying the first completion's result.
struct SendZcOp<B: IoBuf> {
    op: MultiOp<SendZc<B>>,
    result: Option<io::Result<usize>>,
}

impl<B: IoBuf> Future for SendZcOp<B> {
    type Output = BufResult<usize, B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some(c) = ready!(this.op.poll_next(cx)) {
                if c.flags & CQE_F_NOTIF == 0 && this.result.is_none() {
                    this.result = Some(cqe_result(c).map(|n| n as usize));
                }
            }
            if this.op.is_done() {
                let data = this.op.take_data().expect("a send's data outlives it");
                let res = this
                    .result
                    .take()
                    .unwrap_or_else(|| Err(io::Error::from_raw_os_error(libc::ECANCELED)));
                return Poll::Ready((res, data.buf));
            }
        }
    }
}

/// Whether this kernel has `IORING_OP_SEND_ZC` (Linux 6.0).
pub(crate) fn supported() -> bool {
    opcode_supported(opcode::SendZc::CODE)
}

/// Sends `buf`'s initialized bytes on the connected socket `fd` without copying them where the
/// kernel can, and gives the buffer back once the kernel no longer reads it. `wait_all`: the
/// kernel takes every byte before completing (short only on an error). Without `SEND_ZC`, or on
/// a socket the kernel cannot send from user pages (`EOPNOTSUPP`: not TCP or UDP), a plain
/// `SEND` with the same result. `zero_copy: false` skips straight to the plain send.
pub(crate) async fn send_zc<B: IoBuf>(
    fd: &SharedFd,
    buf: B,
    wait_all: bool,
    zero_copy: bool,
) -> BufResult<usize, B> {
    if !zero_copy || !supported() {
        return send(fd, buf).await;
    }
    let (res, buf) = SendZcOp {
        op: MultiOp::new(SendZc {
            fd: fd.clone(),
            buf,
            wait_all,
        }),
        result: None,
    }
    .await;
    match res {
        // Nothing was sent: the socket has no zero-copy path.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => send(fd, buf).await,
        res => (res, buf),
    }
}
