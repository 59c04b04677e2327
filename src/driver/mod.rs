//! The ring and the table of in-flight operations.
//!
//! Every op lives in a slot of a slab from the moment its SQE is queued until its final CQE; the
//! SQE's `user_data` is the slot key plus a generation. A few `user_data` values at the top of the
//! range are reserved for the driver's own fire-and-forget SQEs (cancels, closes, the wake read).

mod setup;
pub(crate) mod slot;

pub use setup::RingSetup;

use io_uring::{opcode, squeue, types, IoUring};
use slab::Slab;
use slot::{Abandon, Completion, Event, Orphan, State};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The read on the runtime's eventfd that wakes a loop blocked in `io_uring_enter`.
const WAKE_TAG: u64 = u64::MAX;
/// An `IORING_OP_ASYNC_CANCEL` for an abandoned op.
const CANCEL_TAG: u64 = u64::MAX - 1;
/// An `IORING_OP_CLOSE` for an fd nobody holds any more.
const CLOSE_TAG: u64 = u64::MAX - 2;

/// What an op whose slot was leaked by a failed shutdown drain completes with.
const LOST: Completion = Completion {
    result: -libc::ECANCELED,
    flags: 0,
};

struct Entry {
    generation: u32,
    state: State,
}

/// Counters a benchmark or a test can read to see what the driver did.
#[derive(Debug, Default, Clone, Copy)]
pub struct DriverStats {
    /// `io_uring_enter` calls made.
    pub enters: u64,
    /// SQEs that found the submission queue full and waited in the userspace backlog.
    pub backlogged: u64,
    /// Completions reaped.
    pub completions: u64,
    /// Files put in the ring's registered-file table (so their reads and writes skip the
    /// kernel's per-op fd lookup).
    pub fixed_files_registered: u64,
    /// Files in the registered-file table now: registered and not yet released.
    pub fixed_files_in_use: u64,
}

/// What became of a request for a slot in the registered-file table.
pub(crate) enum Registration {
    /// The fd is in this slot now.
    Slot(u32),
    /// Every slot is taken; one may be free later.
    Full,
    /// No table (the kernel refused to set one up, or the runtime shut down), or the kernel
    /// refused this fd: asking again would not help.
    Refused,
}

/// The size of the registered-file table (capped by `RLIMIT_NOFILE`, which the kernel enforces).
const FIXED_FILE_SLOTS: u32 = 4096;

pub(crate) struct Driver {
    ring: IoUring,
    setup: RingSetup,
    slots: Slab<Entry>,
    /// SQEs that did not fit in the submission queue, in order. They count as in flight already.
    backlog: VecDeque<squeue::Entry>,
    generation: u32,
    /// Cancels and closes the kernel has not completed yet.
    reserved_in_flight: usize,
    wake_fd: RawFd,
    /// Where the eventfd read lands. Boxed: the kernel writes here while the read is armed.
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Set when the eventfd read completed: the runtime then drains its remote queue.
    pub(crate) woken_remotely: bool,
    shut_down: bool,
    /// The shutdown drain failed and every slot's data was leaked.
    drain_failed: bool,
    stats: DriverStats,
    /// Whether the ring has a registered-file table (the kernel may refuse to set one up).
    has_fixed_files: bool,
    /// Free slots of the ring's registered-file table.
    free_fixed_files: Vec<u32>,
}

impl Driver {
    pub(crate) fn new(entries: u32, wake_fd: RawFd) -> io::Result<Driver> {
        let (ring, setup) = setup::build_ring(entries)?;
        let mut driver = Driver {
            ring,
            setup,
            slots: Slab::with_capacity(256),
            backlog: VecDeque::new(),
            generation: 0,
            reserved_in_flight: 0,
            wake_fd,
            wake_buf: Box::new(0),
            wake_armed: false,
            woken_remotely: false,
            shut_down: false,
            drain_failed: false,
            stats: DriverStats::default(),
            has_fixed_files: false,
            free_fixed_files: Vec::new(),
        };
        driver.set_up_fixed_files();
        driver.arm_wake();
        Ok(driver)
    }

    pub(crate) fn setup(&self) -> RingSetup {
        self.setup
    }

    pub(crate) fn stats(&self) -> DriverStats {
        self.stats
    }

    /// Sets up an empty registered-file table. Without one (an old kernel, a tiny
    /// `RLIMIT_NOFILE`), files are simply always named by their fds.
    fn set_up_fixed_files(&mut self) {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass, nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return;
        }
        let slots = limit.rlim_cur.min(FIXED_FILE_SLOTS as libc::rlim_t) as u32;
        if slots == 0 || self.ring.submitter().register_files_sparse(slots).is_err() {
            return;
        }
        // Popped from the end: slot 0 first.
        self.free_fixed_files = (0..slots).rev().collect();
        self.has_fixed_files = true;
    }

    /// Puts `fd` (an open file) in a free slot of the registered-file table.
    pub(crate) fn register_fixed_file(&mut self, fd: RawFd) -> Registration {
        if self.shut_down || !self.has_fixed_files {
            return Registration::Refused;
        }
        let Some(slot) = self.free_fixed_files.pop() else {
            return Registration::Full;
        };
        match self.ring.submitter().register_files_update(slot, &[fd]) {
            Ok(1) => {
                self.stats.fixed_files_registered += 1;
                self.stats.fixed_files_in_use += 1;
                Registration::Slot(slot)
            }
            _ => {
                self.free_fixed_files.push(slot);
                Registration::Refused
            }
        }
    }

    /// Empties a slot of the registered-file table and makes it free for the next file. The
    /// caller guarantees no op in flight names the slot (INV-fd: the slot's `SharedFd` is gone).
    pub(crate) fn release_fixed_file(&mut self, slot: u32) {
        self.stats.fixed_files_in_use -= 1;
        // Dropping the table's reference to the file needs no wait for anything: the kernel
        // keeps the file alive for any request still using it.
        if self
            .ring
            .submitter()
            .register_files_update(slot, &[-1])
            .is_ok()
        {
            self.free_fixed_files.push(slot);
        }
        // If the kernel refused, the slot is never handed out again.
    }

    /// Re-arms the eventfd read that lets another thread wake this loop.
    pub(crate) fn arm_wake(&mut self) {
        if self.wake_armed || self.shut_down {
            return;
        }
        let entry = opcode::Read::new(
            types::Fd(self.wake_fd),
            &mut *self.wake_buf as *mut u64 as *mut u8,
            8,
        )
        .build()
        .user_data(WAKE_TAG);
        self.wake_armed = true;
        self.push(entry);
    }

    /// Queues an op's SQE and records its waker. Returns the op's `user_data`.
    ///
    /// # Errors
    ///
    /// After the runtime shut down, no op is accepted.
    pub(crate) fn submit(&mut self, entry: squeue::Entry, waker: Waker) -> io::Result<u64> {
        if self.shut_down {
            return Err(io::Error::other(
                "the uring runtime this op belongs to has shut down",
            ));
        }
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let key = self.slots.insert(Entry {
            generation,
            state: State::Waiting(Some(waker)),
        });
        let user_data = key as u64 | (generation as u64) << 32;
        debug_assert!(user_data < CLOSE_TAG);
        self.push(entry.user_data(user_data));
        Ok(user_data)
    }

    /// Queues an SQE: in the submission queue, or in the backlog when it is full. Never enters the
    /// kernel and never reaps, so it is safe to call from inside an op's poll or drop.
    fn push(&mut self, entry: squeue::Entry) {
        if self.backlog.is_empty() {
            let mut sq = self.ring.submission();
            // SAFETY: every SQE pushed here comes from an op whose data satisfies INV-heap (it
            // stays valid until the final CQE, kept by the op or by its abandoned slot), or from
            // the driver's own cancels, closes and wake read, whose buffer lives in `wake_buf`
            // until the driver is drained.
            if unsafe { sq.push(&entry) }.is_ok() {
                return;
            }
        }
        self.stats.backlogged += 1;
        self.backlog.push_back(entry);
    }

    /// The op's slot. `None` only after a shutdown whose drain failed and leaked every slot.
    fn entry_mut(&mut self, user_data: u64) -> Option<&mut Entry> {
        let key = user_data as u32 as usize;
        let leaked = self.drain_failed;
        match self.slots.get_mut(key) {
            Some(e) if e.generation == (user_data >> 32) as u32 => Some(e),
            _ if leaked => None,
            _ => unreachable!("op {user_data:#x} has no live slot"),
        }
    }

    /// Polls a single-shot op for its completion.
    pub(crate) fn poll_op(&mut self, user_data: u64, cx: &mut Context<'_>) -> Poll<Completion> {
        let Some(entry) = self.entry_mut(user_data) else {
            return Poll::Ready(LOST);
        };
        match &mut entry.state {
            State::Completed(c) => {
                let c = *c;
                self.slots.remove(user_data as u32 as usize);
                Poll::Ready(c)
            }
            State::Waiting(waker) => {
                set_waker(waker, cx);
                Poll::Pending
            }
            _ => unreachable!("poll_op on a multishot or abandoned slot"),
        }
    }

    /// Polls a multishot op for its next completion; `None` once the final one was taken, after
    /// which the slot is gone.
    pub(crate) fn poll_multi(
        &mut self,
        user_data: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Completion>> {
        let Some(entry) = self.entry_mut(user_data) else {
            return Poll::Ready(None);
        };
        match &mut entry.state {
            // The first completion was also the last one (the op ended at once).
            State::Completed(c) => {
                let c = *c;
                self.slots.remove(user_data as u32 as usize);
                Poll::Ready(Some(c))
            }
            State::Waiting(waker) => {
                set_waker(waker, cx);
                Poll::Pending
            }
            State::Streaming {
                waker,
                queue,
                ended,
            } => {
                if let Some(c) = queue.pop_front() {
                    if *ended && queue.is_empty() {
                        self.slots.remove(user_data as u32 as usize);
                    }
                    Poll::Ready(Some(c))
                } else if *ended {
                    self.slots.remove(user_data as u32 as usize);
                    Poll::Ready(None)
                } else {
                    set_waker(waker, cx);
                    Poll::Pending
                }
            }
            State::Abandoned(_) => unreachable!("poll_multi on an abandoned slot"),
        }
    }

    /// The op's future was dropped. The data the kernel may still use moves into the slot and is
    /// released only after the final CQE (INV-slot); a cancel is submitted for it. Returns data to
    /// drop once the driver is no longer borrowed (its drop may submit a close).
    pub(crate) fn abandon(&mut self, user_data: u64, orphan: Orphan) -> Option<Orphan> {
        let returns_fd = orphan.returns_fd;
        let cancellable = orphan.cancellable;
        let Some(entry) = self.entry_mut(user_data) else {
            // The kernel may still write into this data: leak it rather than free it (INV-ring).
            std::mem::forget(orphan);
            return None;
        };
        match entry.state.abandon(orphan) {
            Abandon::Cancel(unclaimed) => {
                discard(returns_fd, &unclaimed);
                if !self.shut_down && cancellable {
                    self.cancel(user_data);
                }
                None
            }
            Abandon::Free(orphan, unclaimed) => {
                discard(returns_fd, &unclaimed);
                self.slots.remove(user_data as u32 as usize);
                Some(orphan)
            }
        }
    }

    fn cancel(&mut self, user_data: u64) {
        self.reserved_in_flight += 1;
        let entry = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(CANCEL_TAG);
        self.push(entry);
    }

    /// Closes `fd` through the ring, without blocking the loop.
    pub(crate) fn close(&mut self, fd: RawFd) {
        if self.shut_down {
            // SAFETY: the caller owned `fd` and gives it up; no op uses it (INV-fd).
            unsafe { libc::close(fd) };
            return;
        }
        self.reserved_in_flight += 1;
        self.push(
            opcode::Close::new(types::Fd(fd))
                .build()
                .user_data(CLOSE_TAG),
        );
    }

    /// One turn of the kernel side of the loop: submits every queued SQE and reaps every CQE,
    /// collecting the wakers to call and the orphans to drop once the driver is released.
    /// With `wait`, blocks until at least one CQE arrives or `timeout` passes.
    pub(crate) fn turn(
        &mut self,
        wait: bool,
        timeout: Option<Duration>,
        wakers: &mut Vec<Waker>,
        orphans: &mut Vec<Orphan>,
    ) -> io::Result<()> {
        loop {
            self.flush_backlog();
            let more_backlog = !self.backlog.is_empty();
            let wait_now = wait && !more_backlog;
            let sq_len = self.ring.submission().len();
            let (overflow, taskrun) = {
                let sq = self.ring.submission();
                (sq.cq_overflow(), sq.taskrun())
            };
            // Without anything to submit, nothing to wait for and no deferred completion work,
            // the CQ ring can be read without a syscall.
            if sq_len > 0 || wait_now || overflow || taskrun {
                self.stats.enters += 1;
                let res = if wait_now {
                    match timeout {
                        Some(t) => {
                            let ts = types::Timespec::new()
                                .sec(t.as_secs())
                                .nsec(t.subsec_nanos());
                            let args = types::SubmitArgs::new().timespec(&ts);
                            self.ring.submitter().submit_with_args(1, &args)
                        }
                        None => self.ring.submitter().submit_and_wait(1),
                    }
                } else {
                    // SAFETY: plain io_uring_enter with no extra argument; GETEVENTS makes a
                    // DEFER_TASKRUN ring post the completions it has ready, without waiting.
                    unsafe {
                        self.ring.submitter().enter::<libc::sigset_t>(
                            sq_len as u32,
                            0,
                            io_uring::EnterFlags::GETEVENTS.bits(),
                            None,
                        )
                    }
                };
                match res {
                    Ok(_) => {}
                    Err(e) => match e.raw_os_error() {
                        // The wait timed out, or a signal interrupted it: the loop re-checks.
                        Some(libc::ETIME) | Some(libc::EINTR) => {}
                        // The CQ is backed up and the kernel wants us to reap before it takes more.
                        Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                        _ => {
                            return Err(io::Error::new(
                                e.kind(),
                                format!("io_uring_enter failed in the runtime loop: {e}"),
                            ))
                        }
                    },
                }
            }
            self.reap(wakers, orphans);
            if !more_backlog && self.backlog.is_empty() {
                return Ok(());
            }
        }
    }

    fn flush_backlog(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        let mut sq = self.ring.submission();
        while let Some(entry) = self.backlog.front() {
            // SAFETY: as in `push`: backlogged SQEs come from ops whose data is kept alive by
            // their slot until the final CQE.
            if unsafe { sq.push(entry) }.is_err() {
                break;
            }
            self.backlog.pop_front();
        }
    }

    fn reap(&mut self, wakers: &mut Vec<Waker>, orphans: &mut Vec<Orphan>) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            self.stats.completions += 1;
            let c = Completion {
                result: cqe.result(),
                flags: cqe.flags(),
            };
            match cqe.user_data() {
                WAKE_TAG => {
                    self.wake_armed = false;
                    self.woken_remotely = true;
                }
                CANCEL_TAG | CLOSE_TAG => self.reserved_in_flight -= 1,
                user_data => {
                    let key = user_data as u32 as usize;
                    let Some(entry) = self.slots.get_mut(key) else {
                        continue;
                    };
                    if entry.generation != (user_data >> 32) as u32 {
                        continue;
                    }
                    match entry.state.complete(c) {
                        Event::Wake(Some(w)) => wakers.push(w),
                        Event::Wake(None) => {}
                        Event::Nothing(orphan, c) => discard(orphan.returns_fd, &[c]),
                        Event::Free(orphan, c) => {
                            discard(orphan.returns_fd, &[c]);
                            self.slots.remove(key);
                            orphans.push(orphan);
                        }
                    }
                }
            }
        }
    }

    /// Whether the kernel still holds any op, cancel, close or the wake read.
    fn kernel_busy(&self) -> bool {
        self.wake_armed
            || self.reserved_in_flight > 0
            || self.slots.iter().any(|(_, e)| {
                matches!(
                    e.state,
                    State::Waiting(_) | State::Abandoned(_) | State::Streaming { ended: false, .. }
                )
            })
    }

    /// Cancels everything the kernel holds and reaps until it holds nothing, so no buffer is freed
    /// while the kernel may write it. Wakers and orphans are returned for dropping outside.
    pub(crate) fn shut_down(&mut self, orphans: &mut Vec<Orphan>) {
        if self.shut_down {
            return;
        }
        let live: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, e)| match &e.state {
                State::Waiting(_) | State::Streaming { ended: false, .. } => true,
                // An abandoned close is left to finish (see `OpCode::CANCELLABLE`).
                State::Abandoned(orphan) => orphan.cancellable,
                _ => false,
            })
            .map(|(k, e)| k as u64 | (e.generation as u64) << 32)
            .collect();
        for user_data in live {
            self.cancel(user_data);
        }
        if self.wake_armed {
            self.cancel(WAKE_TAG);
        }
        self.shut_down = true;
        let mut wakers = Vec::new();
        let mut waited = Duration::ZERO;
        while self.kernel_busy() {
            let step = Duration::from_millis(100);
            if let Err(e) = self.turn(true, Some(step), &mut wakers, orphans) {
                // The ring is unusable: leak every slot's data rather than free memory the kernel
                // may still write.
                eprintln!(
                    "uring: cannot drain the ring at shutdown ({e}); leaking in-flight buffers"
                );
                std::mem::forget(std::mem::take(&mut self.slots));
                self.drain_failed = true;
                break;
            }
            waited += step;
            if waited.as_secs() >= 5 && waited.as_millis() % 5000 < 100 {
                eprintln!(
                    "uring: still waiting for the kernel to finish in-flight ops at shutdown"
                );
            }
        }
        // Wakers of ops completed during the drain belong to futures that will be dropped or
        // polled later; there is nobody to wake now.
        drop(wakers);
    }
}

fn set_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Closes the new fds in completions nobody will claim (a cancelled accept or open).
fn discard(returns_fd: bool, completions: &[Completion]) {
    if !returns_fd {
        return;
    }
    for c in completions {
        if c.result >= 0 {
            // SAFETY: the kernel created this fd for an op whose owner is gone; nothing else
            // knows its number, so closing it cannot affect anyone else's fd.
            unsafe { libc::close(c.result) };
        }
    }
}
