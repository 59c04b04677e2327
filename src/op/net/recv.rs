//! Receives: `IORING_OP_RECV` and `RECVMSG` (one buffer with the sender's address, or several
//! buffers), and `IORING_OP_READ` for a pipe's stream of bytes ([`RecvOp::read`]). Each hands what it took to its socket's [`RecvSink`] (the stash in `net/stash.rs`)
//! when its future was dropped before it saw the completion, so a dropped read loses no byte.

use super::{AddrOut, MsgMany, MsgOne, MAX_LEN};
use crate::buf::{BufRing, IoBufMut};
use crate::driver::slot::Completion;
use crate::fd::SharedFd;
use crate::op::rw::{filled, iovecs_to_fill, set_init_vectored};
use crate::op::{cqe_result, MultiOp, Op, OpCode};
use crate::runtime::RuntimeState;
use crate::BufResult;
use io_uring::{opcode, squeue, types};
use socket2::{SockAddr, SockAddrStorage};
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};

/// Where the completions of an abandoned receive go: the socket's stash (`net/stash.rs`), which
/// hands what the receive took to the socket's next read, in order.
pub(crate) trait RecvSink {
    /// A receive submitted on `runtime` was abandoned while the kernel holds it: its final
    /// completion will come to [`RecvSink::unclaimed`].
    fn abandoned(&self, runtime: &Weak<RuntimeState>);

    /// The completion of an abandoned receive. Runs while the driver is borrowed: it must not
    /// touch the runtime (keeping bytes and waking wakers is fine).
    fn unclaimed(&self, received: Received<'_>);
}

/// An abandoned receive's completion, for [`RecvSink::unclaimed`].
pub(crate) struct Received<'a> {
    /// Bytes received, or a negated errno.
    pub(crate) result: i32,
    /// The capacity of the receive's buffers.
    pub(crate) room: usize,
    /// The sender, for a receive that asked for it.
    pub(crate) from: Option<SockAddr>,
    /// Appends the bytes received to the vector it is given.
    pub(crate) fill: &'a mut dyn FnMut(&mut Vec<u8>),
    /// The runtime the receive was submitted on (as given to [`RecvSink::abandoned`]).
    pub(crate) runtime: &'a Weak<RuntimeState>,
    /// A multishot receive's completion with `IORING_CQE_F_MORE`: the receive is still in
    /// flight (only its final completion ends it).
    pub(crate) more: bool,
}

/// A receive's link to its socket's [`RecvSink`], and the runtime it was submitted on (only that
/// runtime's loop can complete it; a read waiting for it elsewhere would wait forever).
struct Leftovers {
    sink: Rc<dyn RecvSink>,
    runtime: Weak<RuntimeState>,
}

impl Leftovers {
    fn new(sink: Rc<dyn RecvSink>) -> Leftovers {
        Leftovers {
            sink,
            runtime: Weak::new(),
        }
    }

    /// The op's future was dropped while the kernel of `runtime` holds it. (Only then is the
    /// runtime recorded: the steady path of a read pays nothing for it.)
    fn abandoned(&mut self, runtime: &Rc<RuntimeState>) {
        self.runtime = Rc::downgrade(runtime);
        self.sink.abandoned(&self.runtime);
    }

    /// Hands completion `c` of the abandoned receive into `bufs` (and its sender) to the sink.
    ///
    /// # Safety
    ///
    /// `c` must be a completion of a receive into `bufs`, filled in order, each from its
    /// `stable_mut_ptr()` to its capacity before the next: a non-negative result counts bytes
    /// the kernel wrote there.
    unsafe fn unclaimed<B: IoBufMut>(&self, c: Completion, from: Option<SockAddr>, bufs: &mut [B]) {
        let room = bufs.iter().map(|b| b.bytes_total()).sum();
        let mut fill = |out: &mut Vec<u8>| {
            let mut left = c.result.max(0) as usize;
            for b in bufs.iter_mut() {
                let here = left.min(b.bytes_total());
                // SAFETY: INV-init: the caller guarantees the kernel wrote these `here` bytes at
                // the start of this buffer, which the op still owns (INV-slot: its data lives until
                // after the final CQE) at a stable address (INV-heap).
                out.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(b.stable_mut_ptr(), here)
                });
                left -= here;
            }
        };
        self.sink.unclaimed(Received {
            result: c.result,
            room,
            from,
            fill: &mut fill,
            runtime: &self.runtime,
            more: false,
        });
    }
}

struct Recv<B> {
    fd: SharedFd,
    buf: B,
    leftovers: Leftovers,
    /// `IORING_OP_READ` rather than `RECV`: the fd is a pipe, not a socket.
    plain_read: bool,
}

// SAFETY: INV-heap: the SQE points into `buf`'s stable memory, `bytes_total()` long (IoBufMut
// contract, INV-heap), and names `fd`, held by `self` (INV-fd).
unsafe impl<B: IoBufMut> OpCode for Recv<B> {
    fn create_entry(&mut self) -> squeue::Entry {
        let len = self.buf.bytes_total().min(MAX_LEN) as u32;
        let fd = types::Fd(self.fd.as_raw_fd());
        if self.plain_read {
            // A pipe has no file position: -1 ("the current one") is ignored.
            return opcode::Read::new(fd, self.buf.stable_mut_ptr(), len)
                .offset(u64::MAX)
                .build();
        }
        opcode::Recv::new(fd, self.buf.stable_mut_ptr(), len).build()
    }

    fn abandoned(&mut self, runtime: &Rc<RuntimeState>) {
        self.leftovers.abandoned(runtime);
    }

    fn unclaimed(&mut self, c: Completion) {
        let buf = std::slice::from_mut(&mut self.buf);
        // SAFETY: `c` completes this receive into `buf` (INV-slot keeps `buf` until then).
        unsafe { self.leftovers.unclaimed(c, None, buf) };
    }
}

/// A receive into a buffer from its start up to its capacity (0 means end of stream, or an empty
/// datagram), as a named future that owns all it needs, so it can be kept in a struct across
/// polls. If it is dropped while the kernel holds the receive, what it took goes to its sink.
pub(crate) struct RecvOp<B: IoBufMut>(Op<Recv<B>>);

impl<B: IoBufMut> RecvOp<B> {
    /// A receive on `fd` into `buf`.
    pub(crate) fn new(fd: SharedFd, buf: B, sink: Rc<dyn RecvSink>) -> RecvOp<B> {
        RecvOp(Op::new(Recv {
            fd,
            buf,
            leftovers: Leftovers::new(sink),
            plain_read: false,
        }))
    }

    /// The same with `IORING_OP_READ`, for the read end of a pipe (a byte stream that is no
    /// socket): what a dropped read took goes to `sink` just the same.
    pub(crate) fn read(fd: SharedFd, buf: B, sink: Rc<dyn RecvSink>) -> RecvOp<B> {
        RecvOp(Op::new(Recv {
            fd,
            buf,
            leftovers: Leftovers::new(sink),
            plain_read: true,
        }))
    }
}

impl<B: IoBufMut> std::future::Future for RecvOp<B> {
    type Output = BufResult<usize, B>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let (c, op) = std::task::ready!(std::pin::Pin::new(&mut self.0).poll(cx));
        // SAFETY: INV-init: `c` is the completion of this receive into `op.buf`, from its start.
        std::task::Poll::Ready(unsafe { filled(c, op.buf) })
    }
}

struct RecvMsg<B> {
    fd: SharedFd,
    buf: B,
    msg: Box<MsgOne>,
    leftovers: Leftovers,
}

impl<B> RecvMsg<B> {
    /// The sender's address the kernel wrote (once the op is done with the header).
    fn take_sender(&mut self) -> SockAddr {
        let out = AddrOut {
            storage: std::mem::replace(&mut self.msg.addr, SockAddrStorage::zeroed()),
            len: self.msg.hdr.msg_namelen,
        };
        out.into_addr()
    }
}

// SAFETY: the msghdr, address and iovec live in `msg`'s box (INV-heap); the iovec points into
// `buf`'s stable memory, `bytes_total()` long; `fd` is held by `self` (INV-fd).
unsafe impl<B: IoBufMut> OpCode for RecvMsg<B> {
    fn create_entry(&mut self) -> squeue::Entry {
        let msg = &mut *self.msg;
        msg.iov = libc::iovec {
            iov_base: self.buf.stable_mut_ptr() as *mut libc::c_void,
            iov_len: self.buf.bytes_total(),
        };
        opcode::RecvMsg::new(types::Fd(self.fd.as_raw_fd()), &mut msg.hdr).build()
    }

    fn abandoned(&mut self, runtime: &Rc<RuntimeState>) {
        self.leftovers.abandoned(runtime);
    }

    fn unclaimed(&mut self, c: Completion) {
        let from = (c.result >= 0).then(|| self.take_sender());
        let buf = std::slice::from_mut(&mut self.buf);
        // SAFETY: `c` completes this receive into `buf` (INV-slot keeps `buf` until then).
        unsafe { self.leftovers.unclaimed(c, from, buf) };
    }
}

/// Receives one message into `buf` (from its start up to its capacity) and the sender's address
/// (recvmsg). A message longer than the buffer is truncated, as with recvfrom. If the future is
/// dropped while the kernel holds the receive, the message goes to `sink`.
pub(crate) async fn recv_from<B: IoBufMut>(
    fd: &SharedFd,
    buf: B,
    sink: Rc<dyn RecvSink>,
) -> BufResult<(usize, SockAddr), B> {
    let mut msg = MsgOne::new();
    let room = msg.addr.size_of();
    msg.link(room);
    let (c, mut op) = Op::new(RecvMsg {
        fd: fd.clone(),
        buf,
        msg,
        leftovers: Leftovers::new(sink),
    })
    .await;
    let res = cqe_result(c).map(|n| {
        // SAFETY: INV-init: the kernel wrote `n` bytes from the start of the buffer.
        unsafe { op.buf.set_init(n as usize) };
        (n as usize, op.take_sender())
    });
    (res, op.buf)
}

struct RecvMsgVectored<B> {
    fd: SharedFd,
    bufs: Vec<B>,
    msg: Box<MsgMany>,
    leftovers: Leftovers,
}

// SAFETY: the msghdr lives in `msg`'s box and its iovec array in the box's Vec (INV-heap); the
// iovecs point into the buffers' stable memory, each `bytes_total()` long; `fd` is held by `self`
// (INV-fd).
unsafe impl<B: IoBufMut> OpCode for RecvMsgVectored<B> {
    fn create_entry(&mut self) -> squeue::Entry {
        opcode::RecvMsg::new(types::Fd(self.fd.as_raw_fd()), &mut self.msg.hdr).build()
    }

    fn abandoned(&mut self, runtime: &Rc<RuntimeState>) {
        self.leftovers.abandoned(runtime);
    }

    fn unclaimed(&mut self, c: Completion) {
        // SAFETY: `c` completes this receive into `bufs`, filled in order (INV-slot keeps them
        // until then).
        unsafe { self.leftovers.unclaimed(c, None, &mut self.bufs) };
    }
}

/// Receives into several buffers in order, filling each to its capacity before the next. If the
/// future is dropped while the kernel holds the receive, what it took goes to `sink`.
pub(crate) async fn recv_vectored<B: IoBufMut>(
    fd: &SharedFd,
    mut bufs: Vec<B>,
    sink: Rc<dyn RecvSink>,
) -> BufResult<usize, Vec<B>> {
    let iovecs = iovecs_to_fill(&mut bufs);
    let (c, mut op) = Op::new(RecvMsgVectored {
        fd: fd.clone(),
        bufs,
        msg: MsgMany::new(iovecs),
        leftovers: Leftovers::new(sink),
    })
    .await;
    let res = cqe_result(c).map(|n| {
        // SAFETY: INV-init: the kernel reported `n` bytes read into these buffers, in order.
        unsafe { set_init_vectored(&mut op.bufs, n as usize) };
        n as usize
    });
    (res, op.bufs)
}

/// A receive into a buffer the kernel picks from a [`BufRing`] (`IOSQE_BUFFER_SELECT` on the
/// ring's buffer group): multishot (`IORING_RECV_MULTISHOT`, Linux 6.0: one completion per
/// chunk received, until one without `IORING_CQE_F_MORE`) or single-shot (5.19). Each
/// completion with data carries its buffer's id (`IORING_CQE_F_BUFFER`). Completions nobody
/// claims have their bytes copied to the socket's sink and their buffer provided again.
pub(crate) struct RecvRing {
    fd: SharedFd,
    ring: BufRing,
    bgid: u16,
    multishot: bool,
    leftovers: Leftovers,
}

// SAFETY: INV-heap: the SQE holds no pointer (the kernel picks a buffer of the ring, whose
// memory `ring` keeps allocated and registered: INV-bufring); `fd` is held by `self` (INV-fd).
unsafe impl OpCode for RecvRing {
    fn create_entry(&mut self) -> squeue::Entry {
        let fd = types::Fd(self.fd.as_raw_fd());
        if self.multishot {
            return opcode::RecvMulti::new(fd, self.bgid).build();
        }
        // Length 0: the whole of the buffer the kernel picks.
        opcode::Recv::new(fd, std::ptr::null_mut(), 0)
            .buf_group(self.bgid)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
    }

    fn abandoned(&mut self, runtime: &Rc<RuntimeState>) {
        self.leftovers.abandoned(runtime);
    }

    fn unclaimed(&mut self, c: Completion) {
        let ring = &self.ring;
        let bid = std::cell::Cell::new(io_uring::cqueue::buffer_select(c.flags));
        let len = c.result.max(0) as usize;
        let mut fill = |out: &mut Vec<u8>| {
            if let Some(b) = bid.take() {
                // SAFETY: INV-bufring: this completion of a receive on the ring's group named
                // buffer `b`, with `len` bytes, and is handed over once (taken from the cell).
                unsafe { ring.drain_into(b, len, out) };
            }
        };
        // Running out of buffers is no result of the socket's: like the cancel's own result,
        // the stash keeps nothing for it.
        let result = if c.result == -libc::ENOBUFS {
            -libc::ECANCELED
        } else {
            c.result
        };
        self.leftovers.sink.unclaimed(Received {
            result,
            room: ring.buf_capacity(),
            from: None,
            fill: &mut fill,
            runtime: &self.leftovers.runtime,
            more: c.has_more(),
        });
        if let Some(b) = bid.take() {
            // The stash took no bytes (an end, an error): the buffer goes back all the same.
            // SAFETY: INV-bufring: as above; nothing is copied.
            unsafe { ring.drain_into(b, 0, &mut Vec::new()) };
        }
    }
}

/// A receive on `fd` into buffers of `ring` (registered here as group `bgid`), multishot or
/// single-shot, submitted when first polled.
pub(crate) fn recv_ring(
    fd: &SharedFd,
    ring: &BufRing,
    bgid: u16,
    multishot: bool,
    sink: Rc<dyn RecvSink>,
) -> MultiOp<RecvRing> {
    MultiOp::new(RecvRing {
        fd: fd.clone(),
        ring: ring.clone(),
        bgid,
        multishot,
        leftovers: Leftovers::new(sink),
    })
}
