//! The kernel's floor for the HTTP/1.1 rows: two hand-written servers with no runtime and no
//! HTTP library, answering every request (a header block ending in `\r\n\r\n`) with the same
//! bytes hyper's answer has ([`RESPONSE`]: status line, `content-length`, `date`, body):
//!
//! - `raw-ring`: a bare io_uring loop with this crate's ring setup (`SINGLE_ISSUER |
//!   DEFER_TASKRUN`, one `io_uring_enter` per turn): a single-shot recv into the connection's
//!   buffer, a send of the answers, the next recv: the ops uring's `Compat` issues.
//! - `raw-epoll`: a bare edge-triggered epoll loop doing what tokio's reactor and hyper do on
//!   it: recv until `EAGAIN`, a send per batch of answers, `epoll_wait` when nothing is ready.
//!
//! Their CPU per request shows what the two kernel interfaces cost for this work with nothing
//! on top: the ratio raw-ring/raw-epoll bounds what any io_uring runtime can save against tokio
//! here, since hyper's own work is the same on both.

use crate::bench::echo::raw::{bare_ring, submit_and_wait, tag, untag};
use crate::bench::echo::raw::{KIND_ACCEPT, KIND_CLOSE, KIND_RECV, KIND_SEND};
use io_uring::{opcode, squeue, types};
use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};

/// What both bare servers answer: hyper's response to `GET /` byte for byte in length (a fixed
/// date of the same width as the one hyper writes).
pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 17\r\ndate: Tue, 01 Dec 2026 \
    12:00:00 GMT\r\n\r\nhello from uring\n";

/// The end of a request's header block (the benchmark's requests have no body).
const END: &[u8] = b"\r\n\r\n";

/// Bytes one recv asks for.
const RECV_BUF: usize = 16 * 1024;

/// Counts the requests whose header block `data` completes; `matched` is how many bytes of
/// [`END`] the stream's bytes before `data` ended with (updated).
fn count_requests(matched: &mut usize, data: &[u8]) -> usize {
    let mut n = 0;
    for &b in data {
        if b == END[*matched] {
            *matched += 1;
            if *matched == END.len() {
                n += 1;
                *matched = 0;
            }
        } else {
            // The longest end of what was matched that starts END again: a lone `\r`.
            *matched = usize::from(b == b'\r');
        }
    }
    n
}

/// One connection's state, shared by both servers.
struct Conn {
    fd: RawFd,
    /// Where recvs land; stays put (boxed) while a recv is in flight.
    recv: Box<[u8]>,
    /// The answers not yet sent, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// Bytes of [`END`] the stream's last bytes matched.
    matched: usize,
}

impl Conn {
    fn new(fd: RawFd) -> Conn {
        crate::bench::echo::raw::set_nodelay(fd);
        Conn {
            fd,
            recv: vec![0u8; RECV_BUF].into_boxed_slice(),
            out: Vec::with_capacity(RESPONSE.len() * 4),
            sent: 0,
            matched: 0,
        }
    }

    /// Queues an answer for every request the first `n` received bytes complete.
    fn received(&mut self, n: usize) {
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        let requests = count_requests(&mut self.matched, &self.recv[..n]);
        for _ in 0..requests {
            self.out.extend_from_slice(RESPONSE);
        }
    }

    fn unsent(&self) -> &[u8] {
        &self.out[self.sent..]
    }
}

/// Serves on `listener` with a bare io_uring loop until killed.
///
/// # Errors
///
/// When the ring cannot be set up or `io_uring_enter` fails.
pub fn serve_ring(listener: TcpListener) -> io::Result<()> {
    let mut ring = bare_ring()?;
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
    let recv = |c: &mut Conn, i: usize| {
        opcode::Recv::new(types::Fd(c.fd), c.recv.as_mut_ptr(), c.recv.len() as u32)
            .build()
            .user_data(tag(KIND_RECV, i))
    };
    let send = |c: &Conn, i: usize| {
        let rest = c.unsent();
        opcode::Send::new(types::Fd(c.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(tag(KIND_SEND, i))
    };
    backlog.push_back(accept());
    let (submitter, mut sq, mut cq) = ring.split();
    loop {
        // SAFETY: (a benchmark peer, outside the crate's invariants) every SQE's buffer is
        // its connection's boxed recv buffer or its `out` vector, neither touched while the op
        // using it is in flight (one op per connection at a time), and a connection is dropped
        // only after its close completes; its fd stays open until then.
        unsafe { submit_and_wait(&submitter, &mut sq, &mut backlog) }?;
        cq.sync();
        for cqe in &mut cq {
            let ud = cqe.user_data();
            let (kind, i) = untag(ud);
            let res = cqe.result();
            match kind {
                KIND_ACCEPT => {
                    if res >= 0 {
                        let i = free.pop().unwrap_or_else(|| {
                            conns.push(None);
                            conns.len() - 1
                        });
                        let mut c = Conn::new(res);
                        backlog.push_back(recv(&mut c, i));
                        conns[i] = Some(c);
                    }
                    if !io_uring::cqueue::more(cqe.flags()) {
                        backlog.push_back(accept());
                    }
                }
                KIND_RECV | KIND_SEND => {
                    let Some(c) = conns[i].as_mut() else { continue };
                    if res <= 0 {
                        backlog.push_back(
                            opcode::Close::new(types::Fd(c.fd))
                                .build()
                                .user_data(tag(KIND_CLOSE, i)),
                        );
                        continue;
                    }
                    if kind == KIND_RECV {
                        c.received(res as usize);
                    } else {
                        c.sent += res as usize;
                    }
                    if c.unsent().is_empty() {
                        backlog.push_back(recv(c, i));
                    } else {
                        backlog.push_back(send(c, i));
                    }
                }
                KIND_CLOSE => {
                    conns[i] = None;
                    free.push(i);
                }
                _ => unreachable!("unknown user_data {ud:#x}"),
            }
        }
    }
}

/// The last OS error, as the bare epoll loop's syscalls leave it.
fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Serves on `listener` with a bare edge-triggered epoll loop until killed.
///
/// # Errors
///
/// When epoll cannot be set up or `epoll_wait` fails.
pub fn serve_epoll(listener: TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let lfd = listener.as_raw_fd();
    // SAFETY: (a benchmark peer) plain syscalls on fds this function owns; the event array is
    // a live local buffer of the length passed.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    let add = |fd: RawFd, events: u32| {
        let mut ev = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: as above.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }
    };
    if add(lfd, libc::EPOLLIN as u32) < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut conns: std::collections::HashMap<RawFd, Conn> = std::collections::HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        // SAFETY: as above.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(io::Error::last_os_error());
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as RawFd;
            if fd == lfd {
                loop {
                    // SAFETY: as above.
                    let c = unsafe {
                        libc::accept4(
                            lfd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        )
                    };
                    if c < 0 {
                        break;
                    }
                    let events =
                        (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
                    if add(c, events) < 0 {
                        // SAFETY: as above.
                        unsafe { libc::close(c) };
                        continue;
                    }
                    conns.insert(c, Conn::new(c));
                }
                continue;
            }
            let Some(c) = conns.get_mut(&fd) else {
                continue;
            };
            if !drive_epoll_conn(c) {
                conns.remove(&fd);
                // SAFETY: as above (closing also removes it from the epoll set).
                unsafe { libc::close(fd) };
            }
        }
    }
}

/// Reads until `EAGAIN`, answering what arrives; false when the connection is over.
fn drive_epoll_conn(c: &mut Conn) -> bool {
    loop {
        // Out first: what an earlier turn could not send (the socket's buffer was full).
        while !c.unsent().is_empty() {
            let rest = c.unsent();
            // SAFETY: (a benchmark peer) `rest` is a live slice of the connection's buffer.
            let n =
                unsafe { libc::send(c.fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
            if n < 0 {
                return errno() == libc::EAGAIN;
            }
            c.sent += n as usize;
        }
        // SAFETY: as above; the buffer is the connection's own, of the length passed.
        let n = unsafe { libc::recv(c.fd, c.recv.as_mut_ptr().cast(), c.recv.len(), 0) };
        match n {
            0 => return false,
            n if n < 0 => return errno() == libc::EAGAIN,
            n => c.received(n as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::count_requests;

    #[test]
    fn requests_are_counted_across_split_terminators() {
        let mut m = 0;
        assert_eq!(
            count_requests(&mut m, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            1
        );
        assert_eq!(m, 0);
        assert_eq!(count_requests(&mut m, b"GET / HTTP/1.1\r\n\r"), 0);
        assert_eq!(m, 3);
        assert_eq!(count_requests(&mut m, b"\nGET / HTTP/1.1\r\n\r\nGET"), 2);
        assert_eq!(count_requests(&mut m, b" / HTTP/1.1\r\r\n\r\n"), 1);
        assert_eq!(count_requests(&mut m, b"\r\n\r\n\r\n\r\n"), 2);
    }
}
