//! `tracing` events for ops (feature `tracing`): one event per completion, target `uring::op`,
//! level TRACE, with the opcode's name, the fd the SQE named (and whether it is a registered
//! slot), the result, whether more completions follow (multishot ops, zero-copy sends), and the
//! time since submission in microseconds.
//!
//! Nothing is recorded when no subscriber wants the target at TRACE (`tracing::enabled!`, a
//! relaxed load once the callsite's interest is cached): with the feature on but nothing
//! listening, an op costs one check at submission.

use super::opcodes;
use super::slot::Completion;
use io_uring::squeue;
use std::time::Instant;

/// What the completion's event needs from the submission.
pub(super) struct Traced {
    opcode: u8,
    fd: i32,
    fixed_file: bool,
    submitted: Instant,
}

impl Traced {
    /// `Some` when a subscriber listens to `uring::op` at TRACE.
    pub(super) fn on_submit(entry: &squeue::Entry) -> Option<Traced> {
        if !tracing::enabled!(target: "uring::op", tracing::Level::TRACE) {
            return None;
        }
        let raw = entry as *const squeue::Entry as *const u8;
        // SAFETY: INV-sqe: an `squeue::Entry` is io-uring's `repr(C)` wrapper of the kernel's
        // 64-byte `io_uring_sqe`, whose `flags` byte is at offset 1 and `fd` (an i32) at
        // offset 4 (the kernel ABI); both are plain integers, read unaligned.
        let (flags, fd) = unsafe { (raw.add(1).read(), raw.add(4).cast::<i32>().read_unaligned()) };
        Some(Traced {
            opcode: (entry.get_opcode() & 0xff) as u8,
            fd,
            fixed_file: flags & squeue::Flags::FIXED_FILE.bits() != 0,
            submitted: Instant::now(),
        })
    }

    /// The event for one completion of the op.
    pub(super) fn on_completion(&self, c: Completion) {
        tracing::trace!(
            target: "uring::op",
            opcode = opcodes::name(self.opcode).unwrap_or("UNKNOWN"),
            fd = self.fd,
            fixed_file = self.fixed_file,
            result = c.result,
            more = io_uring::cqueue::more(c.flags),
            latency_us = self.submitted.elapsed().as_micros() as u64,
            "op completed"
        );
    }
}
