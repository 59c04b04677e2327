//! Socket operations: `IORING_OP_ACCEPT` (single-shot and multishot), `CONNECT`, `SEND`, `RECV`,
//! `SENDMSG`, `RECVMSG` and `SHUTDOWN`.
//!
//! Every address, `msghdr` and `iovec` the kernel reads or writes lives in one `Box` inside the op
//! (INV-heap), so it stays put when the op's future moves and outlives a dropped future until the
//! final CQE (the driver keeps the op's data in its slot). Sends pass `MSG_NOSIGNAL`: a peer that
//! went away gives `EPIPE`, never a `SIGPIPE` that kills the process.
//!
//! Receives are in `net/recv.rs`: they hand what they took to a [`RecvSink`] (the socket's stash)
//! when their future was dropped before it saw the completion, so a dropped read loses no byte.

use crate::buf::IoBuf;
use crate::driver::slot::Completion;
use crate::fd::SharedFd;
use crate::op::rw::iovecs_to_send;
use crate::op::{cqe_result, MultiOp, Op, OpCode};
use crate::BufResult;
use io_uring::{opcode, squeue, types};
use socket2::{SockAddr, SockAddrStorage};
use std::io;
use std::os::fd::AsRawFd;

mod recv;
pub(crate) use recv::{recv_from, recv_ring, recv_vectored, Received, RecvOp, RecvRing, RecvSink};

/// Largest transfer one SQE can describe.
const MAX_LEN: usize = u32::MAX as usize;

/// Room for the peer address the kernel writes on accept or recvmsg.
struct AddrOut {
    storage: SockAddrStorage,
    len: libc::socklen_t,
}

impl AddrOut {
    fn new() -> Box<AddrOut> {
        // Zeroed, so the bytes the kernel does not write (and valgrind cannot see it write) are
        // defined.
        let storage = SockAddrStorage::zeroed();
        let len = storage.size_of();
        Box::new(AddrOut { storage, len })
    }

    fn storage_ptr(&mut self) -> *mut libc::sockaddr {
        // `SockAddrStorage` is `repr(transparent)` over `sockaddr_storage`.
        &mut self.storage as *mut SockAddrStorage as *mut libc::sockaddr
    }

    /// The address the kernel wrote: `len` bytes of `storage`.
    fn into_addr(self) -> SockAddr {
        let len = self.len.min(self.storage.size_of());
        // SAFETY: INV-init: the kernel wrote a socket address of family `ss_family` and length
        // `len` into the zeroed storage (accept4/recvmsg contract); `len` is clamped to the
        // storage's size.
        unsafe { SockAddr::new(self.storage, len) }
    }
}

struct Accept {
    fd: SharedFd,
    /// Where the kernel writes the peer's address; `None`: not asked for.
    addr: Option<Box<AddrOut>>,
}

// SAFETY: the address and its length live in `addr`'s box (INV-heap), or the SQE carries no
// pointer; `fd` is held by `self` (INV-fd).
unsafe impl OpCode for Accept {
    fn create_entry(&mut self) -> squeue::Entry {
        let (addr, len) = match self.addr.as_deref_mut() {
            Some(out) => (out.storage_ptr(), &mut out.len as *mut libc::socklen_t),
            None => (std::ptr::null_mut(), std::ptr::null_mut()),
        };
        opcode::Accept::new(types::Fd(self.fd.as_raw_fd()), addr, len)
            .flags(libc::SOCK_CLOEXEC)
            .build()
    }

    fn unclaimed(&mut self, c: Completion) {
        close_unclaimed_fd(c);
    }
}

/// Closes the connection in an accept's completion that nobody will take.
pub(crate) fn close_unclaimed_fd(c: Completion) {
    if c.result >= 0 {
        // SAFETY: INV-fd: the kernel created this fd for an op whose owner is gone; nothing else
        // knows its number, so closing it cannot affect anyone else's fd (INV-fd).
        unsafe { libc::close(c.result) };
    }
}

/// Accepts one connection on the listening socket `fd`: the new socket (blocking mode,
/// close-on-exec) and the peer's address.
pub(crate) async fn accept(fd: &SharedFd) -> io::Result<(SharedFd, SockAddr)> {
    let (c, op) = Op::new(Accept {
        fd: fd.clone(),
        addr: Some(AddrOut::new()),
    })
    .await;
    let new_fd = cqe_result(c)?;
    let new_fd = SharedFd::new(new_fd as i32);
    let addr = op.addr.expect("the accept was given an address buffer");
    Ok((new_fd, addr.into_addr()))
}

/// How many connections an `incoming()` stream lets the kernel take before the listener's owner
/// asks for them: at most this many single-shot accepts are in flight (each takes at most one
/// connection), and a multishot accept is stopped once this many wait unclaimed. Beyond that
/// the kernel's listen backlog holds further connections.
pub(crate) const ACCEPT_QUEUE: usize = 64;

/// A multishot accept (Linux 5.19+): one SQE, one CQE per accepted connection, each carrying
/// the new fd. It ends (a CQE without `IORING_CQE_F_MORE`) on an error such as `EMFILE`, or when
/// [`ACCEPT_QUEUE`] connections wait unclaimed, and must then be resubmitted. No peer address:
/// the kernel takes none with the multishot flag.
pub(crate) struct AcceptMulti {
    fd: SharedFd,
}

// SAFETY: the SQE holds no pointer; `fd` is held by `self` (INV-fd).
unsafe impl OpCode for AcceptMulti {
    const QUEUE_LIMIT: usize = ACCEPT_QUEUE;

    fn create_entry(&mut self) -> squeue::Entry {
        opcode::AcceptMulti::new(types::Fd(self.fd.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
    }

    fn unclaimed(&mut self, c: Completion) {
        close_unclaimed_fd(c);
    }
}

/// A multishot accept on the listening socket `fd`, submitted when first polled.
pub(crate) fn accept_multi(fd: &SharedFd) -> MultiOp<AcceptMulti> {
    MultiOp::new(AcceptMulti { fd: fd.clone() })
}

/// A single-shot accept as a pollable op, for loops that keep it across polls. It takes no peer
/// address (the caller asks the stream if it wants one).
pub(crate) struct AcceptOne(Op<Accept>);

impl AcceptOne {
    pub(crate) fn new(fd: &SharedFd) -> AcceptOne {
        AcceptOne(Op::new(Accept {
            fd: fd.clone(),
            addr: None,
        }))
    }

    /// Polls for the accepted socket (its peer address is dropped).
    pub(crate) fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<SharedFd>> {
        use std::future::Future;
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|(c, _)| cqe_result(c).map(|fd| SharedFd::new(fd as i32)))
    }
}

struct Connect {
    fd: SharedFd,
    addr: Box<SockAddr>,
}

// SAFETY: the address lives in a box owned by `self` (INV-heap); `fd` is held by `self` (INV-fd).
unsafe impl OpCode for Connect {
    fn create_entry(&mut self) -> squeue::Entry {
        opcode::Connect::new(
            types::Fd(self.fd.as_raw_fd()),
            self.addr.as_ptr() as *const libc::sockaddr,
            self.addr.len(),
        )
        .build()
    }
}

/// Connects socket `fd` to `addr`.
pub(crate) async fn connect(fd: &SharedFd, addr: SockAddr) -> io::Result<()> {
    let (c, _) = Op::new(Connect {
        fd: fd.clone(),
        addr: Box::new(addr),
    })
    .await;
    cqe_result(c).map(|_| ())
}

struct Send<B> {
    fd: SharedFd,
    buf: B,
}

// SAFETY: the SQE points into `buf`'s stable, initialized memory (IoBuf contract, INV-heap) and
// names `fd`, held by `self` (INV-fd).
unsafe impl<B: IoBuf> OpCode for Send<B> {
    fn create_entry(&mut self) -> squeue::Entry {
        let len = self.buf.bytes_init().min(MAX_LEN) as u32;
        opcode::Send::new(types::Fd(self.fd.as_raw_fd()), self.buf.stable_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
    }
}

/// Sends the buffer's initialized bytes on a connected socket; returns how many it took.
pub(crate) async fn send<B: IoBuf>(fd: &SharedFd, buf: B) -> BufResult<usize, B> {
    SendOp::new(fd.clone(), buf).await
}

/// A send as a named future that owns all it needs (see [`RecvOp`]).
pub(crate) struct SendOp<B: IoBuf>(Op<Send<B>>);

impl<B: IoBuf> SendOp<B> {
    /// A send of `buf`'s initialized bytes on `fd`.
    pub(crate) fn new(fd: SharedFd, buf: B) -> SendOp<B> {
        SendOp(Op::new(Send { fd, buf }))
    }
}

impl<B: IoBuf> std::future::Future for SendOp<B> {
    type Output = BufResult<usize, B>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let (c, op) = std::task::ready!(std::pin::Pin::new(&mut self.0).poll(cx));
        std::task::Poll::Ready((cqe_result(c).map(|n| n as usize), op.buf))
    }
}

/// The kernel-visible part of a one-buffer sendmsg/recvmsg: header, address and iovec together
/// in one heap allocation, pointing at each other.
struct MsgOne {
    hdr: libc::msghdr,
    addr: SockAddrStorage,
    iov: libc::iovec,
}

impl MsgOne {
    fn new() -> Box<MsgOne> {
        // SAFETY: INV-ffi: msghdr and iovec are plain C structs for which all zeroes (null
        // pointers, zero lengths) is a valid value.
        let (hdr, iov) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        Box::new(MsgOne {
            hdr,
            addr: SockAddrStorage::zeroed(),
            iov,
        })
    }

    /// Points the header at this box's own address and iovec.
    fn link(&mut self, addr_len: libc::socklen_t) {
        self.hdr.msg_name = &mut self.addr as *mut SockAddrStorage as *mut libc::c_void;
        self.hdr.msg_namelen = addr_len;
        self.hdr.msg_iov = &mut self.iov;
        self.hdr.msg_iovlen = 1;
    }
}

struct SendMsg<B> {
    fd: SharedFd,
    buf: B,
    msg: Box<MsgOne>,
}

// SAFETY: the msghdr, address and iovec live in `msg`'s box (INV-heap); the iovec points into
// `buf`'s stable, initialized memory; `fd` is held by `self` (INV-fd).
unsafe impl<B: IoBuf> OpCode for SendMsg<B> {
    fn create_entry(&mut self) -> squeue::Entry {
        let msg = &mut *self.msg;
        msg.iov = libc::iovec {
            iov_base: self.buf.stable_ptr() as *mut libc::c_void,
            iov_len: self.buf.bytes_init(),
        };
        opcode::SendMsg::new(types::Fd(self.fd.as_raw_fd()), &msg.hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
    }
}

/// Sends the buffer's initialized bytes as one message to `addr` (sendmsg).
pub(crate) async fn send_to<B: IoBuf>(
    fd: &SharedFd,
    buf: B,
    addr: &SockAddr,
) -> BufResult<usize, B> {
    let mut msg = MsgOne::new();
    msg.addr = addr.clone().as_storage();
    msg.link(addr.len());
    let (c, op) = Op::new(SendMsg {
        fd: fd.clone(),
        buf,
        msg,
    })
    .await;
    (cqe_result(c).map(|n| n as usize), op.buf)
}

/// The kernel-visible part of a vectored sendmsg/recvmsg on a connected socket.
struct MsgMany {
    hdr: libc::msghdr,
    iovecs: Vec<libc::iovec>,
}

impl MsgMany {
    fn new(iovecs: Vec<libc::iovec>) -> Box<MsgMany> {
        // SAFETY: INV-ffi: msghdr is a plain C struct for which all zeroes is a valid value.
        let hdr = unsafe { std::mem::zeroed() };
        let mut msg = Box::new(MsgMany { hdr, iovecs });
        msg.hdr.msg_iov = msg.iovecs.as_mut_ptr();
        msg.hdr.msg_iovlen = msg.iovecs.len().min(libc::UIO_MAXIOV as usize);
        msg
    }
}

struct SendMsgVectored<B> {
    fd: SharedFd,
    bufs: Vec<B>,
    msg: Box<MsgMany>,
}

// SAFETY: the msghdr lives in `msg`'s box and its iovec array in the box's Vec (INV-heap); the
// iovecs point into the buffers' stable, initialized memory; `fd` is held by `self` (INV-fd).
unsafe impl<B: IoBuf> OpCode for SendMsgVectored<B> {
    fn create_entry(&mut self) -> squeue::Entry {
        opcode::SendMsg::new(types::Fd(self.fd.as_raw_fd()), &self.msg.hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
    }
}

/// Sends the buffers' initialized bytes in order (sendmsg); returns how many the kernel took.
pub(crate) async fn send_vectored<B: IoBuf>(
    fd: &SharedFd,
    bufs: Vec<B>,
) -> BufResult<usize, Vec<B>> {
    let iovecs = iovecs_to_send(&bufs);
    let (c, op) = Op::new(SendMsgVectored {
        fd: fd.clone(),
        bufs,
        msg: MsgMany::new(iovecs),
    })
    .await;
    (cqe_result(c).map(|n| n as usize), op.bufs)
}

struct Shutdown {
    fd: SharedFd,
    how: i32,
}

// SAFETY: the SQE holds no pointer; `fd` is held by `self` (INV-fd).
unsafe impl OpCode for Shutdown {
    fn create_entry(&mut self) -> squeue::Entry {
        opcode::Shutdown::new(types::Fd(self.fd.as_raw_fd()), self.how).build()
    }
}

/// Shuts down the read side, the write side or both of a connected socket.
pub(crate) async fn shutdown(fd: &SharedFd, how: std::net::Shutdown) -> io::Result<()> {
    ShutdownOp::new(fd.clone(), how).await
}

/// A shutdown as a named future that owns all it needs (see [`RecvOp`]).
pub(crate) struct ShutdownOp(Op<Shutdown>);

impl ShutdownOp {
    /// Shuts down `how` of the connected socket `fd`.
    pub(crate) fn new(fd: SharedFd, how: std::net::Shutdown) -> ShutdownOp {
        let how = match how {
            std::net::Shutdown::Read => libc::SHUT_RD,
            std::net::Shutdown::Write => libc::SHUT_WR,
            std::net::Shutdown::Both => libc::SHUT_RDWR,
        };
        ShutdownOp(Op::new(Shutdown { fd, how }))
    }
}

impl std::future::Future for ShutdownOp {
    type Output = io::Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let (c, _) = std::task::ready!(std::pin::Pin::new(&mut self.0).poll(cx));
        std::task::Poll::Ready(cqe_result(c).map(|_| ()))
    }
}
