//! The reference echo server: a hand-written io_uring loop with no runtime, no tasks and no
//! futures, using the best setup this kernel offers, so the benchmark shows what a runtime's
//! abstraction costs on top of what the kernel allows.
//!
//! - The ring: `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`: completion work runs only when
//!   the loop enters the kernel, in one batch per turn.
//! - One `io_uring_enter` per loop turn: submit everything queued and wait for at least one CQE.
//! - One multishot accept for all connections.
//! - Per connection one multishot recv selecting buffers from a provided buffer ring: no recv
//!   SQE per message, and no buffer tied up per idle connection.
//! - The echo is a send from the very buffer the data arrived in; the buffer goes back to the
//!   buffer ring after the send's CQE. One send per connection at a time keeps the byte order.

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};

/// The buffer group the recvs select from.
const BUF_GROUP: u16 = 0;
/// Buffers in the ring (a power of two, at most 32768): far more than connections times the
/// messages one connection has in flight.
const BUF_COUNT: u16 = 1024;

/// Whether connections are direct descriptors (the ring's fixed-file table: no fd lookup and
/// reference count per op) rather than ordinary fds. Measured here (kernel 6.18, paired runs at
/// 50 x 64 B and 500 x 4 KiB): no gain, if anything 2-5% more CPU per request, so the loop uses
/// ordinary fds, as the runtimes do.
const DIRECT: bool = false;
/// Slots in the fixed-file table.
const MAX_CONNS: u32 = 16384;

/// The kind of op a bare loop's `user_data` names (its top byte; the connection below it).
pub const KIND_ACCEPT: u64 = 1;
/// A receive.
pub const KIND_RECV: u64 = 2;
/// A send.
pub const KIND_SEND: u64 = 3;
/// A close.
pub const KIND_CLOSE: u64 = 4;
const KIND_SHIFT: u32 = 56;

/// The `user_data` of an op of kind `kind` for connection `conn`.
pub fn tag(kind: u64, conn: usize) -> u64 {
    kind << KIND_SHIFT | conn as u64
}

/// The (kind, connection) a `user_data` made by [`tag`] names.
pub fn untag(user_data: u64) -> (u64, usize) {
    (
        user_data >> KIND_SHIFT,
        (user_data & ((1 << KIND_SHIFT) - 1)) as usize,
    )
}

/// The ring every bare loop uses: this crate's setup (`SINGLE_ISSUER | DEFER_TASKRUN`, the
/// taskrun flag, `SUBMIT_ALL`), 4096 SQEs and 16384 CQEs.
///
/// # Errors
///
/// When the kernel refuses the ring.
pub fn bare_ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_submit_all()
        .setup_cqsize(16384)
        .build(4096)
}

/// One turn of a bare loop's kernel side: queues what fits of `backlog` (the rest waits for the
/// next turn), submits, and waits for a completion (`EINTR`/`EBUSY` only mean "look again").
///
/// # Safety
///
/// Every queued SQE's buffers and fds stay valid until its final completion is reaped.
pub unsafe fn submit_and_wait(
    submitter: &io_uring::Submitter<'_>,
    sq: &mut io_uring::SubmissionQueue<'_>,
    backlog: &mut VecDeque<squeue::Entry>,
) -> io::Result<()> {
    while let Some(e) = backlog.front() {
        // SAFETY: the caller's promise.
        if unsafe { sq.push(e) }.is_err() {
            break;
        }
        backlog.pop_front();
    }
    sq.sync();
    match submitter.submit_and_wait(1) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => Ok(()),
        Err(e) => Err(e),
    }
}

struct Conn {
    fd: RawFd,
    /// Received buffers waiting to be echoed, in arrival order: (buffer id, length).
    queued: VecDeque<(u16, u32)>,
    /// The send in flight: (buffer id, bytes sent so far, length).
    sending: Option<(u16, u32, u32)>,
    /// The multishot recv is armed (its last CQE has not arrived yet).
    receiving: bool,
    /// End of stream or an error: close once no op is in flight on the fd.
    closing: bool,
}

/// A provided buffer ring: the kernel picks a buffer for each recv; the loop hands buffers back
/// after their data was echoed.
struct BufRing {
    /// The ring of `BUF_COUNT` entries the kernel reads, page-aligned (from mmap).
    ring: *mut types::BufRingEntry,
    /// The buffers' memory: `BUF_COUNT * buf_size` bytes.
    memory: Vec<u8>,
    buf_size: usize,
    /// Our copy of the tail; published to the kernel by `publish`.
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring, buf_size: usize) -> io::Result<BufRing> {
        let ring_bytes = BUF_COUNT as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            ring: addr as *mut types::BufRingEntry,
            memory: vec![0u8; BUF_COUNT as usize * buf_size],
            buf_size,
            tail: 0,
        };
        // SAFETY: the mapping holds `BUF_COUNT` entries and lives as long as the process: the
        // server never unregisters it and never unmaps it (it serves until killed).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(addr as u64, BUF_COUNT, BUF_GROUP, 0)?
        };
        for bid in 0..BUF_COUNT {
            br.give_back(bid);
        }
        br.publish();
        Ok(br)
    }

    fn buf_ptr(&self, bid: u16) -> *const u8 {
        self.memory[bid as usize * self.buf_size..].as_ptr()
    }

    /// Puts a buffer back in the ring (visible to the kernel after `publish`).
    fn give_back(&mut self, bid: u16) {
        let idx = (self.tail & (BUF_COUNT - 1)) as usize;
        let addr = self.memory[bid as usize * self.buf_size..].as_mut_ptr() as u64;
        // SAFETY: `idx < BUF_COUNT`, inside the mapping; the kernel does not read entries
        // between the published tail and ours.
        let entry = unsafe { &mut *self.ring.add(idx) };
        entry.set_addr(addr);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given back so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the ring's first entry is mapped; the tail field overlays its `resv` field.
        let tail =
            unsafe { types::BufRingEntry::tail(self.ring) } as *const std::sync::atomic::AtomicU16;
        // SAFETY: the tail is a naturally aligned u16 the kernel reads with acquire semantics.
        unsafe { &*tail }.store(self.tail, std::sync::atomic::Ordering::Release);
    }
}

/// Serves echo on `addr` until killed. Calls `ready` with the bound address once it listens.
///
/// # Errors
///
/// When the ring, the buffer ring or the listener cannot be set up, or `io_uring_enter` fails.
pub fn serve(addr: SocketAddr, buf_size: usize, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let mut ring = bare_ring()?;
    let mut bufs = BufRing::new(&ring, buf_size)?;
    let listener = bind(addr)?;
    ready(listener.local_addr()?);
    let lfd = listener.as_raw_fd();

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut backlog: VecDeque<squeue::Entry> = VecDeque::new();
    if DIRECT {
        ring.submitter().register_files_sparse(MAX_CONNS)?;
        // Accepted sockets inherit TCP_NODELAY from the listener (there is no fd to set it on).
        set_nodelay(lfd);
    }
    let accept = || {
        opcode::AcceptMulti::new(types::Fd(lfd))
            .allocate_file_index(DIRECT)
            // Direct descriptors are not in the fd table, so CLOEXEC does not apply (EINVAL).
            .flags(if DIRECT { 0 } else { libc::SOCK_CLOEXEC })
            .build()
            .user_data(tag(KIND_ACCEPT, 0))
    };
    backlog.push_back(accept());

    let (submitter, mut sq, mut cq) = ring.split();
    loop {
        // SAFETY: every SQE's buffers live in `bufs.memory` (never freed) and its fd stays
        // open until its final CQE (a connection is closed only with nothing in flight).
        unsafe { submit_and_wait(&submitter, &mut sq, &mut backlog) }?;
        cq.sync();
        for cqe in &mut cq {
            let ud = cqe.user_data();
            let (kind, idx) = untag(ud);
            let res = cqe.result();
            let flags = cqe.flags();
            match kind {
                KIND_ACCEPT => {
                    if res >= 0 {
                        let fd = res;
                        if !DIRECT {
                            set_nodelay(fd);
                        }
                        let conn = Conn {
                            fd,
                            queued: VecDeque::new(),
                            sending: None,
                            receiving: true,
                            closing: false,
                        };
                        let idx = match free.pop() {
                            Some(i) => {
                                conns[i] = Some(conn);
                                i
                            }
                            None => {
                                conns.push(Some(conn));
                                conns.len() - 1
                            }
                        };
                        backlog.push_back(recv(fd, idx));
                    } else {
                        eprintln!(
                            "raw echo server: accept: {}",
                            io::Error::from_raw_os_error(-res)
                        );
                    }
                    if !cqueue::more(flags) {
                        backlog.push_back(accept());
                    }
                }
                KIND_RECV => {
                    let Some(c) = conns[idx].as_mut() else {
                        continue;
                    };
                    let more = cqueue::more(flags);
                    if !more {
                        c.receiving = false;
                    }
                    if res > 0 {
                        let bid = cqueue::buffer_select(flags).expect("recv without a buffer");
                        c.queued.push_back((bid, res as u32));
                        if c.sending.is_none() {
                            start_send(c, idx, &bufs, &mut backlog);
                        }
                        if !more {
                            c.receiving = true;
                            backlog.push_back(recv(c.fd, idx));
                        }
                    } else if res == -libc::ENOBUFS && !c.closing {
                        // The buffer ring ran dry: the multishot recv ended; arm it again (the
                        // buffers come back as sends complete).
                        if !more {
                            c.receiving = true;
                            backlog.push_back(recv(c.fd, idx));
                        }
                    } else {
                        c.closing = true;
                    }
                }
                KIND_SEND => {
                    let Some(c) = conns[idx].as_mut() else {
                        continue;
                    };
                    let (bid, sent, len) = c.sending.take().expect("send CQE without a send");
                    if res > 0 && sent + (res as u32) < len {
                        c.sending = Some((bid, sent + res as u32, len));
                        backlog.push_back(send(c.fd, idx, &bufs, bid, sent + res as u32, len));
                        continue;
                    }
                    bufs.give_back(bid);
                    if res <= 0 {
                        c.closing = true;
                        while let Some((bid, _)) = c.queued.pop_front() {
                            bufs.give_back(bid);
                        }
                    } else {
                        start_send(c, idx, &bufs, &mut backlog);
                    }
                }
                KIND_CLOSE => {
                    conns[idx] = None;
                    free.push(idx);
                    continue;
                }
                _ => unreachable!("unknown user_data {ud:#x}"),
            }
            if kind == KIND_ACCEPT {
                continue;
            }
            if let Some(c) = conns[idx].as_mut() {
                if c.closing && !c.receiving && c.sending.is_none() {
                    while let Some((bid, _)) = c.queued.pop_front() {
                        bufs.give_back(bid);
                    }
                    let close = if DIRECT {
                        opcode::Close::new(types::Fixed(c.fd as u32))
                    } else {
                        opcode::Close::new(types::Fd(c.fd))
                    };
                    backlog.push_back(close.build().user_data(tag(KIND_CLOSE, idx)));
                    // Nothing else may target this slot until the close completes.
                    c.closing = false;
                    c.receiving = true;
                }
            }
        }
        bufs.publish();
    }
}

fn recv(fd: RawFd, idx: usize) -> squeue::Entry {
    if DIRECT {
        opcode::RecvMulti::new(types::Fixed(fd as u32), BUF_GROUP)
            .build()
            .user_data(tag(KIND_RECV, idx))
    } else {
        opcode::RecvMulti::new(types::Fd(fd), BUF_GROUP)
            .build()
            .user_data(tag(KIND_RECV, idx))
    }
}

fn send(fd: RawFd, idx: usize, bufs: &BufRing, bid: u16, from: u32, len: u32) -> squeue::Entry {
    // SAFETY: `from < len <= buf_size`, inside buffer `bid`.
    let ptr = unsafe { bufs.buf_ptr(bid).add(from as usize) };
    if DIRECT {
        opcode::Send::new(types::Fixed(fd as u32), ptr, len - from)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(tag(KIND_SEND, idx))
    } else {
        opcode::Send::new(types::Fd(fd), ptr, len - from)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(tag(KIND_SEND, idx))
    }
}

fn start_send(c: &mut Conn, idx: usize, bufs: &BufRing, backlog: &mut VecDeque<squeue::Entry>) {
    if let Some((bid, len)) = c.queued.pop_front() {
        c.sending = Some((bid, 0, len));
        backlog.push_back(send(c.fd, idx, bufs, bid, 0, len));
    }
}

/// Sets TCP_NODELAY on a socket (errors ignored: a benchmark server).
pub fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is a socket we own; the option value is a live c_int.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// A listening socket with a backlog large enough for 500 connections arriving at once.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}
