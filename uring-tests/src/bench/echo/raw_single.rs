//! A second hand-written io_uring echo loop, doing exactly the ops the uring server's tasks do:
//! one single-shot recv into the connection's own buffer, then a send of what arrived, then the
//! next recv. Same ring setup as `raw.rs` (`SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`, one
//! `io_uring_enter` per turn, multishot accept). Comparing uring against it isolates what the
//! runtime's tasks, futures and op table cost; comparing it against `raw.rs` shows what
//! multishot recv with a provided buffer ring saves.

use io_uring::{cqueue, opcode, squeue, types};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use super::raw::{bare_ring, submit_and_wait, tag, untag};
use super::raw::{KIND_ACCEPT, KIND_CLOSE, KIND_RECV, KIND_SEND};

struct Conn {
    fd: RawFd,
    /// The connection's buffer; heap memory that stays put while the op using it is in flight.
    buf: Box<[u8]>,
    /// Bytes received and not yet sent: (sent so far, received).
    pending: (u32, u32),
}

/// Serves echo on `addr` until killed. Calls `ready` with the bound address once it listens.
///
/// # Errors
///
/// When the ring or the listener cannot be set up, or `io_uring_enter` fails.
pub fn serve(addr: SocketAddr, buf_size: usize, ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let ring = bare_ring()?;
    let listener = super::raw::bind(addr)?;
    ready(listener.local_addr()?);
    let lfd = listener.as_raw_fd();
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut backlog: VecDeque<squeue::Entry> = VecDeque::new();
    let accept = || {
        opcode::AcceptMulti::new(types::Fd(lfd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(tag(KIND_ACCEPT, 0))
    };
    backlog.push_back(accept());
    let mut ring = ring;
    let (submitter, mut sq, mut cq) = ring.split();
    loop {
        // SAFETY: every SQE's buffer is its connection's boxed buffer, which is dropped only
        // after the connection's close completes, when no op of it is in flight; its fd stays
        // open until then too.
        unsafe { submit_and_wait(&submitter, &mut sq, &mut backlog) }?;
        cq.sync();
        for cqe in &mut cq {
            let ud = cqe.user_data();
            let (kind, idx) = untag(ud);
            let res = cqe.result();
            match kind {
                KIND_ACCEPT => {
                    if res >= 0 {
                        super::raw::set_nodelay(res);
                        let mut conn = Conn {
                            fd: res,
                            buf: vec![0u8; buf_size].into_boxed_slice(),
                            pending: (0, 0),
                        };
                        let idx = match free.pop() {
                            Some(i) => i,
                            None => {
                                conns.push(None);
                                conns.len() - 1
                            }
                        };
                        backlog.push_back(recv(&mut conn, idx));
                        conns[idx] = Some(conn);
                    } else {
                        eprintln!(
                            "raw-single echo server: accept: {}",
                            io::Error::from_raw_os_error(-res)
                        );
                    }
                    if !cqueue::more(cqe.flags()) {
                        backlog.push_back(accept());
                    }
                }
                KIND_RECV | KIND_SEND => {
                    let Some(c) = conns[idx].as_mut() else {
                        continue;
                    };
                    if res <= 0 {
                        // End of stream or an error; nothing else is in flight on this fd.
                        backlog.push_back(
                            opcode::Close::new(types::Fd(c.fd))
                                .build()
                                .user_data(tag(KIND_CLOSE, idx)),
                        );
                        continue;
                    }
                    if kind == KIND_RECV {
                        c.pending = (0, res as u32);
                    } else {
                        c.pending.0 += res as u32;
                    }
                    if c.pending.0 < c.pending.1 {
                        backlog.push_back(send(c, idx));
                    } else {
                        backlog.push_back(recv(c, idx));
                    }
                }
                KIND_CLOSE => {
                    conns[idx] = None;
                    free.push(idx);
                }
                _ => unreachable!("unknown user_data {ud:#x}"),
            }
        }
    }
}

fn recv(c: &mut Conn, idx: usize) -> squeue::Entry {
    opcode::Recv::new(types::Fd(c.fd), c.buf.as_mut_ptr(), c.buf.len() as u32)
        .build()
        .user_data(tag(KIND_RECV, idx))
}

fn send(c: &Conn, idx: usize) -> squeue::Entry {
    let (sent, len) = c.pending;
    let rest = &c.buf[sent as usize..len as usize];
    opcode::Send::new(types::Fd(c.fd), rest.as_ptr(), rest.len() as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(tag(KIND_SEND, idx))
}
