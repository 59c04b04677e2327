//! Reads and writes on any fd: `IORING_OP_READ`, `WRITE`, `READV`, `WRITEV`, and `READ_FIXED`,
//! `WRITE_FIXED` when the buffer is a registered [`FixedBuf`](crate::buf::FixedBuf).
//!
//! `offset` is a file position; streams (sockets, pipes) ignore it, and `u64::MAX` (-1) means a
//! file's current position.

use crate::buf::{IoBuf, IoBufMut};
use crate::driver::slot::Completion;
use crate::fd::SharedFd;
use crate::op::{cqe_result, Op, OpCode};
use crate::BufResult;
use io_uring::{opcode, squeue};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// Largest transfer one SQE can describe.
const MAX_LEN: usize = u32::MAX as usize;

struct Read<B> {
    fd: SharedFd,
    buf: B,
    offset: u64,
}

// SAFETY: the SQE points into `buf`'s stable memory (IoBufMut contract, INV-heap) and names
// `fd` (by number or registered slot), held by `self` (INV-fd); a registered buffer's slot is
// named only while `self` owns the buffer, on the ring that holds it (INV-fixedbuf).
unsafe impl<B: IoBufMut> OpCode for Read<B> {
    fn submits_at_once(&self) -> bool {
        self.fd.submits_at_once()
    }

    fn create_entry(&mut self) -> squeue::Entry {
        let len = self.buf.bytes_total().min(MAX_LEN) as u32;
        let target = self.fd.target();
        let ptr = self.buf.stable_mut_ptr();
        match self.buf.fixed_index() {
            Some(index) => opcode::ReadFixed::new(target.fd, ptr, len, index)
                .offset(self.offset)
                .build(),
            None => opcode::Read::new(target.fd, ptr, len)
                .offset(self.offset)
                .build(),
        }
        .flags(target.flags)
    }
}

/// Reads into `buf` from its start up to its capacity; the buffer's initialized length then
/// covers the bytes read.
pub(crate) fn read<B: IoBufMut>(fd: &SharedFd, buf: B, offset: u64) -> ReadFuture<B> {
    ReadFuture(Step::Op(Op::new(Read {
        fd: fd.clone(),
        buf,
        offset,
    })))
}

/// A read or a write as one future over its op, rather than an `async fn` around it: the
/// hottest path of the file API, where every layer of state machine costs instructions on each
/// poll and moves the buffer once more on the way out.
enum Step<T: OpCode, B> {
    Op(Op<T>),
    /// Refused before submission (a bad position): the error and the buffer, once.
    Refused(Option<(io::Error, B)>),
}

/// The future of [`read`] (or of a read refused before submission): the result and the buffer.
pub(crate) struct ReadFuture<B: IoBufMut>(Step<Read<B>, B>);

impl<B: IoBufMut> ReadFuture<B> {
    /// A read that fails with `e` without reaching the kernel.
    pub(crate) fn refused(e: io::Error, buf: B) -> ReadFuture<B> {
        ReadFuture(Step::Refused(Some((e, buf))))
    }
}

impl<B: IoBufMut> Future for ReadFuture<B> {
    type Output = BufResult<usize, B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Step::Op(op) => {
                let (c, op) = ready!(Pin::new(op).poll(cx));
                // SAFETY: INV-init: `c` is the completion of this read into `op.buf`, from its
                // start.
                Poll::Ready(unsafe { filled(c, op.buf) })
            }
            Step::Refused(r) => {
                let (e, buf) = r.take().expect("read polled after completion");
                Poll::Ready((Err(e), buf))
            }
        }
    }
}

/// A read's completion as its result: `n` bytes read make the buffer's first `n` bytes
/// initialized.
///
/// # Safety
///
/// `c` is the completion of a read (or receive) into `buf`, from its start (INV-init).
pub(crate) unsafe fn filled<B: IoBufMut>(c: Completion, mut buf: B) -> BufResult<usize, B> {
    let res = cqe_result(c).map(|n| {
        // SAFETY: INV-init: the caller's promise: the kernel wrote `n` bytes from the start.
        unsafe { buf.set_init(n as usize) };
        n as usize
    });
    (res, buf)
}

struct Write<B> {
    fd: SharedFd,
    buf: B,
    offset: u64,
}

// SAFETY: the SQE points into `buf`'s stable, initialized memory (IoBuf contract, INV-heap) and
// names `fd` (by number or registered slot), held by `self` (INV-fd); a registered buffer's
// slot is named only while `self` owns the buffer, on the ring that holds it (INV-fixedbuf).
unsafe impl<B: IoBuf> OpCode for Write<B> {
    fn submits_at_once(&self) -> bool {
        self.fd.submits_at_once()
    }

    fn create_entry(&mut self) -> squeue::Entry {
        let len = self.buf.bytes_init().min(MAX_LEN) as u32;
        let target = self.fd.target();
        let ptr = self.buf.stable_ptr();
        match self.buf.fixed_index() {
            Some(index) => opcode::WriteFixed::new(target.fd, ptr, len, index)
                .offset(self.offset)
                .build(),
            None => opcode::Write::new(target.fd, ptr, len)
                .offset(self.offset)
                .build(),
        }
        .flags(target.flags)
    }
}

/// Writes the buffer's initialized bytes; returns how many the kernel took (maybe fewer).
pub(crate) fn write<B: IoBuf>(fd: &SharedFd, buf: B, offset: u64) -> WriteFuture<B> {
    WriteFuture(Step::Op(Op::new(Write {
        fd: fd.clone(),
        buf,
        offset,
    })))
}

/// The future of [`write`] (or of a write refused before submission): the result and the
/// buffer.
pub(crate) struct WriteFuture<B: IoBuf>(Step<Write<B>, B>);

impl<B: IoBuf> WriteFuture<B> {
    /// A write that fails with `e` without reaching the kernel.
    pub(crate) fn refused(e: io::Error, buf: B) -> WriteFuture<B> {
        WriteFuture(Step::Refused(Some((e, buf))))
    }
}

impl<B: IoBuf> Future for WriteFuture<B> {
    type Output = BufResult<usize, B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Step::Op(op) => {
                let (c, op) = ready!(Pin::new(op).poll(cx));
                Poll::Ready((cqe_result(c).map(|n| n as usize), op.buf))
            }
            Step::Refused(r) => {
                let (e, buf) = r.take().expect("write polled after completion");
                Poll::Ready((Err(e), buf))
            }
        }
    }
}

struct Readv<B> {
    fd: SharedFd,
    bufs: Vec<B>,
    iovecs: Vec<libc::iovec>,
    offset: u64,
}

// SAFETY: the iovecs live in a heap Vec owned by `self` and point into the buffers' stable
// memory (INV-heap); `fd` (named by number or registered slot) is held by `self` (INV-fd).
unsafe impl<B: IoBufMut> OpCode for Readv<B> {
    fn submits_at_once(&self) -> bool {
        self.fd.submits_at_once()
    }

    fn create_entry(&mut self) -> squeue::Entry {
        self.iovecs = iovecs_to_fill(&mut self.bufs);
        let target = self.fd.target();
        opcode::Readv::new(
            target.fd,
            self.iovecs.as_ptr(),
            self.iovecs.len().min(libc::UIO_MAXIOV as usize) as u32,
        )
        .offset(self.offset)
        .build()
        .flags(target.flags)
    }
}

/// Reads into several buffers in order, filling each to its capacity before the next.
pub(crate) async fn readv<B: IoBufMut>(
    fd: &SharedFd,
    bufs: Vec<B>,
    offset: u64,
) -> BufResult<usize, Vec<B>> {
    let (c, mut op) = Op::new(Readv {
        fd: fd.clone(),
        bufs,
        iovecs: Vec::new(),
        offset,
    })
    .await;
    let res = cqe_result(c).map(|n| {
        // SAFETY: INV-init: the kernel reported `n` bytes read into these buffers, in order.
        unsafe { set_init_vectored(&mut op.bufs, n as usize) };
        n as usize
    });
    (res, op.bufs)
}

struct Writev<B> {
    fd: SharedFd,
    bufs: Vec<B>,
    iovecs: Vec<libc::iovec>,
    offset: u64,
}

// SAFETY: the iovecs live in a heap Vec owned by `self` and point into the buffers' stable,
// initialized memory (INV-heap); `fd` (named by number or registered slot) is held by `self`
// (INV-fd).
unsafe impl<B: IoBuf> OpCode for Writev<B> {
    fn submits_at_once(&self) -> bool {
        self.fd.submits_at_once()
    }

    fn create_entry(&mut self) -> squeue::Entry {
        self.iovecs = iovecs_to_send(&self.bufs);
        let target = self.fd.target();
        opcode::Writev::new(
            target.fd,
            self.iovecs.as_ptr(),
            self.iovecs.len().min(libc::UIO_MAXIOV as usize) as u32,
        )
        .offset(self.offset)
        .build()
        .flags(target.flags)
    }
}

/// Writes the buffers' initialized bytes in order; returns how many the kernel took.
pub(crate) async fn writev<B: IoBuf>(
    fd: &SharedFd,
    bufs: Vec<B>,
    offset: u64,
) -> BufResult<usize, Vec<B>> {
    let (c, op) = Op::new(Writev {
        fd: fd.clone(),
        bufs,
        iovecs: Vec::new(),
        offset,
    })
    .await;
    (cqe_result(c).map(|n| n as usize), op.bufs)
}

/// Marks the first `n` bytes of a vectored read as initialized: each buffer is filled to its
/// capacity before the next.
///
/// # Safety
///
/// The kernel must have written `n` bytes into `bufs`, in order (a `READV` or `RECVMSG` result).
pub(crate) unsafe fn set_init_vectored<B: IoBufMut>(bufs: &mut [B], n: usize) {
    let mut left = n;
    for b in bufs {
        let here = left.min(b.bytes_total());
        // SAFETY: INV-init: the caller guarantees the buffers were filled in order; `here` bytes of
        // this one.
        unsafe { b.set_init(here) };
        left -= here;
    }
}

/// The iovecs of a vectored read: each buffer's whole capacity, from its start. They point into
/// the buffers' stable memory (INV-heap), valid while the buffers are.
pub(crate) fn iovecs_to_fill<B: IoBufMut>(bufs: &mut [B]) -> Vec<libc::iovec> {
    bufs.iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.stable_mut_ptr().cast(),
            iov_len: b.bytes_total(),
        })
        .collect()
}

/// The iovecs of a vectored write: each buffer's initialized bytes. They point into the
/// buffers' stable memory (INV-heap), valid while the buffers are.
pub(crate) fn iovecs_to_send<B: IoBuf>(bufs: &[B]) -> Vec<libc::iovec> {
    bufs.iter()
        .map(|b| libc::iovec {
            iov_base: b.stable_ptr() as *mut libc::c_void,
            iov_len: b.bytes_init(),
        })
        .collect()
}
