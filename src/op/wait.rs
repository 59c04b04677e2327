//! Waiting for a child process to exit: `IORING_OP_WAITID` (Linux 6.7), on the child's pidfd.

use crate::driver::opcode_supported;
use crate::fd::SharedFd;
use crate::op::{Op, OpCode};
use io_uring::{opcode, squeue};
use std::os::fd::AsRawFd;

/// `waitid(P_PIDFD, pidfd, &info, WEXITED)` on the ring: completes (with 0, and `info` filled)
/// when the child exits, and reaps it.
pub(crate) struct WaitId {
    /// The child's pidfd. The kernel resolves it at submission; held anyway (INV-fd).
    pidfd: SharedFd,
    /// Where the kernel writes the child's status: boxed, so it stays put while the op moves
    /// (INV-heap), and kept (with the op's data) until the final CQE even when the op's owner is
    /// gone (INV-slot).
    pub(crate) info: Box<libc::siginfo_t>,
}

// SAFETY: INV-heap: the SQE's only pointer is `info`, boxed inside `self`; the pidfd it names is
// held by `self` (INV-fd).
unsafe impl OpCode for WaitId {
    fn create_entry(&mut self) -> squeue::Entry {
        opcode::WaitId::new(
            libc::P_PIDFD,
            self.pidfd.as_raw_fd() as libc::id_t,
            libc::WEXITED,
        )
        .infop(&*self.info as *const libc::siginfo_t)
        .build()
    }
}

/// Whether the running kernel's io_uring has `IORING_OP_WAITID` (Linux 6.7 and newer).
pub(crate) fn supported() -> bool {
    opcode_supported(opcode::WaitId::CODE)
}

/// The ring op that waits for (and reaps) the child behind `pidfd`. Resolves to the completion
/// (0 when the child was reaped, else a negated errno) and the op's data, whose `info` then holds
/// the child's status.
pub(crate) fn wait_id(pidfd: &SharedFd) -> Op<WaitId> {
    Op::new(WaitId {
        pidfd: pidfd.clone(),
        info: Box::new(zeroed_siginfo()),
    })
}

/// An all-zero `siginfo_t`: a `waitid` that finds no exited child leaves `si_pid` at 0.
pub(crate) fn zeroed_siginfo() -> libc::siginfo_t {
    // SAFETY: INV-siginfo: siginfo_t is plain integers (and padding); all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}
