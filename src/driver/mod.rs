//! The ring and the table of in-flight operations.
//!
//! Every op lives in a slot of a slab from the moment its SQE is queued until its final CQE; the
//! SQE's `user_data` names the slot and the op in it ([`UserData`]). A few `user_data` values at
//! the top of the range are reserved for the driver's own SQEs (cancels, the wake read).

mod buf_rings;
mod fixed;
mod fixed_buffers;
pub(crate) mod opcodes;
mod probe;
mod setup;
pub(crate) mod slot;
#[cfg(feature = "tracing")]
mod trace;
mod user_data;

pub(crate) use fixed::Registration;
pub use probe::{probe, IoUringDisabled, Probe, ProbedOp};
pub(crate) use setup::opcode_supported;
pub use setup::RingSetup;
pub(crate) use user_data::UserData;

use buf_rings::BufGroups;
use fixed::FixedFiles;
use fixed_buffers::FixedBuffers;
pub(crate) use fixed_buffers::{MAX_BUFFER as MAX_FIXED_BUFFER, SLOTS as FIXED_BUFFER_SLOTS};
use io_uring::{opcode, squeue, types, IoUring};
use slab::Slab;
use slot::{Abandon, Completion, Event, Orphan, State};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The submission queue size `Runtime::new` asks for (`Builder::entries`' default).
pub(crate) const DEFAULT_ENTRIES: u32 = 1024;

/// How long the shutdown drain's first turn may wait for the kernel, whatever the shutdown
/// timeout: time for the cancels to be answered, which for most ops is at once.
const FIRST_DRAIN_WAIT: Duration = Duration::from_millis(20);

struct Entry {
    generation: u32,
    /// Whether shutdown (and a dropped future) may cancel the op: not a close (see
    /// `OpCode::CANCELLABLE`).
    cancellable: bool,
    /// For a multishot op, how many unclaimed completions may queue before the op is stopped
    /// (0: no limit).
    queue_limit: usize,
    state: State,
    /// What a completion's `tracing` event reports, when something listens (feature `tracing`).
    #[cfg(feature = "tracing")]
    traced: Option<trace::Traced>,
}

/// Counters a benchmark or a test can read to see what the driver did. Plain counters bumped on
/// the paths that exist anyway; `uring::Metrics` has these and more (tasks, timers,
/// submissions per opcode).
#[derive(Debug, Default, Clone, Copy)]
pub struct DriverStats {
    /// `io_uring_enter` calls made.
    pub enters: u64,
    /// SQEs that found the submission queue full and waited in the userspace backlog.
    pub backlogged: u64,
    /// Completions reaped: those of ops, and those of the driver's own SQEs (cancels, the
    /// cross-thread wake's eventfd read).
    pub completions: u64,
    /// Ops submitted (queued for the kernel, in the submission queue or the backlog), not
    /// counting the driver's own SQEs.
    pub ops_submitted: u64,
    /// Ops in flight now: submitted, and their final completion not yet taken by their future
    /// (an op whose future was dropped counts until its final completion arrives).
    pub ops_in_flight: u64,
    /// Cancels the driver submitted (for dropped ops, stopped multishot ops and shutdown).
    pub cancels: u64,
    /// Loop turns that found `IORING_SQ_CQ_OVERFLOW` set: completions waited in the kernel's
    /// overflow list because the completion ring was full (none is lost: the runtime requires
    /// `IORING_FEAT_NODROP`, and the next `io_uring_enter` flushes them).
    pub cq_overflows: u64,
    /// Files put in the ring's registered-file table (so their reads and writes skip the
    /// kernel's per-op fd lookup).
    pub fixed_files_registered: u64,
    /// Files in the registered-file table now: registered and not yet released.
    pub fixed_files_in_use: u64,
}

pub(crate) struct Driver {
    ring: IoUring,
    setup: RingSetup,
    slots: Slab<Entry>,
    /// SQEs that did not fit in the submission queue, in order. They count as in flight already.
    backlog: VecDeque<squeue::Entry>,
    generation: u32,
    /// Cancels the kernel has not completed yet.
    cancels_in_flight: usize,
    wake_fd: RawFd,
    /// Where the eventfd read lands. Boxed: the kernel writes here while the read is armed.
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Set when the eventfd read completed: the runtime then drains its remote queue.
    pub(crate) woken_remotely: bool,
    shut_down: bool,
    stats: DriverStats,
    /// Ops submitted per opcode (the kernel's `IORING_OP_*` number): a fixed table, one add per
    /// submission.
    op_counts: Box<[u64; 256]>,
    fixed: FixedFiles,
    fixed_buffers: FixedBuffers,
    buf_groups: BufGroups,
}

impl Driver {
    pub(crate) fn new(entries: u32, wake_fd: RawFd) -> io::Result<Driver> {
        let (ring, setup) = setup::build_ring(entries)?;
        let fixed = FixedFiles::new(&ring);
        let mut driver = Driver {
            ring,
            setup,
            slots: Slab::with_capacity(256),
            backlog: VecDeque::new(),
            generation: 0,
            cancels_in_flight: 0,
            wake_fd,
            wake_buf: Box::new(0),
            wake_armed: false,
            woken_remotely: false,
            shut_down: false,
            stats: DriverStats::default(),
            op_counts: Box::new([0; 256]),
            fixed,
            fixed_buffers: FixedBuffers::new(),
            buf_groups: BufGroups::new(),
        };
        driver.arm_wake();
        Ok(driver)
    }

    /// Caps the io-wq worker threads the kernel may start for this thread's rings:
    /// `[bounded, unbounded]` (bounded: regular files and block devices; unbounded: sockets,
    /// pipes and other waits of unknown length); 0 leaves a cap as it is.
    pub(crate) fn cap_iowq_workers(&mut self, caps: [u32; 2]) -> io::Result<()> {
        let mut caps = caps;
        self.ring
            .submitter()
            .register_iowq_max_workers(&mut caps)
            .map(|_| ())
    }

    /// Whether the runtime shut down: no op is accepted any more.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    pub(crate) fn setup(&self) -> RingSetup {
        self.setup
    }

    pub(crate) fn stats(&self) -> DriverStats {
        DriverStats {
            fixed_files_registered: self.fixed.registered,
            fixed_files_in_use: self.fixed.in_use,
            ops_in_flight: self.slots.len() as u64,
            ..self.stats
        }
    }

    /// Ops submitted so far, per opcode.
    pub(crate) fn op_counts(&self) -> &[u64; 256] {
        &self.op_counts
    }

    /// Puts `fd` (an open file) in a free slot of the registered-file table.
    pub(crate) fn register_fixed_file(&mut self, fd: RawFd) -> Registration {
        self.fixed.register(&self.ring, fd)
    }

    /// Empties a slot of the registered-file table (INV-fd: no op in flight names it).
    pub(crate) fn release_fixed_file(&mut self, slot: u32) {
        self.fixed.release(&self.ring, slot);
    }

    /// Registers `bufs` in a contiguous range of the registered-buffer table: its first index,
    /// `Ok(None)` when the kernel has no sparse buffer table, or the kernel's error.
    pub(crate) fn register_buffers(&mut self, bufs: &[libc::iovec]) -> io::Result<Option<u32>> {
        if self.shut_down {
            return Err(io::Error::other("the runtime is shutting down"));
        }
        self.fixed_buffers.register(&self.ring, bufs)
    }

    /// Empties `n` slots of the registered-buffer table from `first` (INV-fixedbuf: no op in
    /// flight names them).
    pub(crate) fn release_buffers(&mut self, first: u32, n: u32) {
        self.fixed_buffers.release(&self.ring, first, n);
    }

    /// Registers a provided buffer ring of `entries` entries at `addr`: its buffer group id,
    /// `Ok(None)` when the kernel has no provided buffer rings (before 5.19), or the kernel's
    /// error.
    ///
    /// # Safety
    ///
    /// INV-bufring: `addr` is page-aligned, holds `entries` (a power of two, at most 32768)
    /// entries, and stays allocated until [`Driver::unregister_buf_ring`] or the ring is gone.
    pub(crate) unsafe fn register_buf_ring(
        &mut self,
        addr: u64,
        entries: u16,
    ) -> io::Result<Option<u16>> {
        if self.shut_down {
            return Err(io::Error::other("the runtime is shutting down"));
        }
        // SAFETY: INV-bufring: as the caller guarantees.
        unsafe { self.buf_groups.register(&self.ring, addr, entries) }
    }

    /// Unregisters buffer group `bgid` (INV-bufring: no op in flight names it).
    pub(crate) fn unregister_buf_ring(&mut self, bgid: u16) {
        self.buf_groups.unregister(&self.ring, bgid);
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
        .user_data(UserData::WAKE.to_raw());
        self.wake_armed = true;
        self.push(entry);
    }

    /// Queues an op's SQE and records its waker. A multishot op's unclaimed completions queue up
    /// to `queue_limit` (0: no limit) before the op is cancelled (see [`Event::WakeAndStop`]);
    /// an op that is not `cancellable` is never cancelled, not even at shutdown.
    ///
    /// # Errors
    ///
    /// After the runtime shut down, no op is accepted.
    pub(crate) fn submit(
        &mut self,
        entry: squeue::Entry,
        waker: Waker,
        cancellable: bool,
        queue_limit: usize,
    ) -> io::Result<UserData> {
        if self.shut_down {
            return Err(io::Error::other(
                "the uring runtime this op belongs to has shut down",
            ));
        }
        self.generation = if self.generation >= UserData::MAX_GENERATION {
            0
        } else {
            self.generation + 1
        };
        let generation = self.generation;
        let key = self.slots.insert(Entry {
            generation,
            cancellable,
            queue_limit,
            state: State::Waiting(Some(waker)),
            #[cfg(feature = "tracing")]
            traced: trace::Traced::on_submit(&entry),
        });
        let user_data = UserData::new(key, generation);
        self.stats.ops_submitted += 1;
        self.op_counts[(entry.get_opcode() & 0xff) as usize] += 1;
        self.push(entry.user_data(user_data.to_raw()));
        Ok(user_data)
    }

    /// Hands the queued SQEs to the kernel now, without reaping or waiting (one
    /// `io_uring_enter`), for an op that should not wait for the end of the loop turn
    /// (`OpCode::submits_at_once`). A failure is left to the loop: the SQEs stay
    /// queued and the next turn submits them and reports what it must.
    pub(crate) fn submit_queued(&mut self) {
        // Twice at most: an SQE that waited in the backlog gets the room the first enter made.
        for _ in 0..2 {
            self.flush_backlog();
            if self.ring.submission().is_empty() {
                return;
            }
            self.stats.enters += 1;
            // EBUSY, EAGAIN or EINTR: the SQEs stay in the queue for the turn.
            let _ = self.ring.submit();
            if self.backlog.is_empty() {
                return;
            }
        }
    }

    /// Queues an SQE: in the submission queue, or in the backlog when it is full. Never enters the
    /// kernel and never reaps, so it is safe to call from inside an op's poll or drop.
    fn push(&mut self, entry: squeue::Entry) {
        if self.backlog.is_empty() {
            let mut sq = self.ring.submission();
            // SAFETY: INV-heap and INV-slot: every SQE pushed here comes from an op whose data
            // stays valid until the final CQE (kept by the op or by its abandoned slot), or is
            // the driver's own cancel (no pointers) or wake read, whose buffer lives in
            // `wake_buf` until the ring is drained (INV-ring).
            if unsafe { sq.push(&entry) }.is_ok() {
                return;
            }
        }
        self.stats.backlogged += 1;
        self.backlog.push_back(entry);
    }

    /// The op's slot. Every op in flight has one until it takes its final completion, even
    /// after a shutdown that gave up on the kernel (INV-ring keeps those slots).
    fn entry_mut(&mut self, user_data: UserData) -> &mut Entry {
        match self.slots.get_mut(user_data.key()) {
            Some(e) if e.generation == user_data.generation() => e,
            _ => unreachable!("op {user_data:?} has no live slot"),
        }
    }

    /// Polls a single-shot op for its completion.
    ///
    /// An op the kernel still held when a shutdown gave up on it stays pending: it has not
    /// completed, and its data must stay where the kernel writes it (INV-ring).
    pub(crate) fn poll_op(
        &mut self,
        user_data: UserData,
        cx: &mut Context<'_>,
    ) -> Poll<Completion> {
        let entry = self.entry_mut(user_data);
        match &mut entry.state {
            State::Completed(c) => {
                let c = *c;
                self.slots.remove(user_data.key());
                Poll::Ready(c)
            }
            State::Waiting(waker) => {
                crate::waker::store(waker, cx);
                Poll::Pending
            }
            _ => unreachable!("poll_op on a multishot or abandoned slot"),
        }
    }

    /// Polls a multishot op for its next completion; `None` once the final one was taken, after
    /// which the slot is gone.
    pub(crate) fn poll_multi(
        &mut self,
        user_data: UserData,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Completion>> {
        let entry = self.entry_mut(user_data);
        match &mut entry.state {
            // The first completion was also the last one (the op ended at once).
            State::Completed(c) => {
                let c = *c;
                self.slots.remove(user_data.key());
                Poll::Ready(Some(c))
            }
            State::Waiting(waker) => {
                crate::waker::store(waker, cx);
                Poll::Pending
            }
            State::Streaming(stream) => {
                if let Some(c) = stream.queue.pop_front() {
                    if stream.ended && stream.queue.is_empty() {
                        self.slots.remove(user_data.key());
                    }
                    Poll::Ready(Some(c))
                } else if stream.ended {
                    self.slots.remove(user_data.key());
                    Poll::Ready(None)
                } else {
                    crate::waker::store(&mut stream.waker, cx);
                    Poll::Pending
                }
            }
            State::Abandoned(_) => unreachable!("poll_multi on an abandoned slot"),
        }
    }

    /// The op's future was dropped. The data the kernel may still use moves into the slot and is
    /// released only after the final CQE (INV-slot); a cancel is submitted for it. Returns data to
    /// drop once the driver is no longer borrowed (its drop may release a registered file).
    pub(crate) fn abandon(&mut self, user_data: UserData, orphan: Orphan) -> Option<Orphan> {
        let shut_down = self.shut_down;
        let entry = self.entry_mut(user_data);
        let cancellable = entry.cancellable;
        match entry.state.abandon(orphan) {
            Abandon::Cancel => {
                if !shut_down && cancellable {
                    self.cancel(user_data);
                }
                None
            }
            Abandon::Free(orphan) => {
                self.slots.remove(user_data.key());
                Some(orphan)
            }
        }
    }

    fn cancel(&mut self, user_data: UserData) {
        self.cancels_in_flight += 1;
        self.stats.cancels += 1;
        let entry = opcode::AsyncCancel::new(user_data.to_raw())
            .build()
            .user_data(UserData::CANCEL.to_raw());
        self.push(entry);
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
            if overflow {
                self.stats.cq_overflows += 1;
            }
            // Without anything to submit, nothing to wait for and no deferred completion work,
            // the CQ ring can be read without a syscall.
            if sq_len > 0 || wait_now || overflow || taskrun {
                self.enter(sq_len, wait_now, timeout)?;
            }
            self.reap(wakers, orphans);
            if !more_backlog && self.backlog.is_empty() {
                return Ok(());
            }
        }
    }

    /// One `io_uring_enter`: submits `sq_len` SQEs and, with `wait`, waits for a CQE or
    /// `timeout`. Errors that only mean "look again" (`ETIME`, `EINTR`, `EBUSY`, `EAGAIN`) are
    /// not errors here: the caller reaps and comes back.
    fn enter(&mut self, sq_len: usize, wait: bool, timeout: Option<Duration>) -> io::Result<()> {
        self.stats.enters += 1;
        let res = if wait {
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
            // SAFETY: INV-ffi: plain io_uring_enter with no extra argument; GETEVENTS makes a
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
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // The wait timed out, or a signal interrupted it: the loop re-checks.
                Some(libc::ETIME) | Some(libc::EINTR) => Ok(()),
                // The CQ is backed up and the kernel wants us to reap before it takes more.
                Some(libc::EBUSY) | Some(libc::EAGAIN) => Ok(()),
                _ => Err(io::Error::new(
                    e.kind(),
                    format!("io_uring_enter failed in the runtime loop: {e}"),
                )),
            },
        }
    }

    fn flush_backlog(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        let mut sq = self.ring.submission();
        while let Some(entry) = self.backlog.front() {
            // SAFETY: as in `push` (INV-heap, INV-slot): backlogged SQEs come from ops whose data
            // is kept alive by their slot until the final CQE.
            if unsafe { sq.push(entry) }.is_err() {
                break;
            }
            self.backlog.pop_front();
        }
    }

    fn reap(&mut self, wakers: &mut Vec<Waker>, orphans: &mut Vec<Orphan>) {
        let mut cancels = Vec::new();
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            self.stats.completions += 1;
            let c = Completion {
                result: cqe.result(),
                flags: cqe.flags(),
            };
            let user_data = UserData::from_raw(cqe.user_data());
            if user_data == UserData::WAKE {
                self.wake_armed = false;
                self.woken_remotely = true;
                continue;
            }
            if user_data == UserData::CANCEL {
                self.cancels_in_flight -= 1;
                continue;
            }
            let key = user_data.key();
            let Some(entry) = self.slots.get_mut(key) else {
                continue;
            };
            if entry.generation != user_data.generation() {
                continue;
            }
            #[cfg(feature = "tracing")]
            if let Some(t) = &entry.traced {
                t.on_completion(c);
            }
            match entry.state.complete(c, entry.queue_limit) {
                Event::Wake(w) => wakers.extend(w),
                Event::WakeAndStop(w) => {
                    wakers.extend(w);
                    cancels.push(user_data);
                }
                Event::Nothing => {}
                Event::Free(orphan) => {
                    self.slots.remove(key);
                    orphans.push(orphan);
                }
            }
        }
        drop(cq);
        for user_data in cancels {
            self.cancel(user_data);
        }
    }

    /// Whether the kernel still holds any op, cancel or the wake read.
    fn kernel_busy(&self) -> bool {
        self.wake_armed
            || self.cancels_in_flight > 0
            || self.slots.iter().any(|(_, e)| e.state.in_kernel())
    }

    /// Cancels everything the kernel holds and reaps until it holds nothing, so no buffer is freed
    /// while the kernel may write it (INV-ring). If the kernel still holds ops after `limit`
    /// (an op it cannot cancel, such as a read on a hung network filesystem), their data is
    /// leaked, never freed, with a warning. Orphans are returned for dropping outside.
    pub(crate) fn shut_down(&mut self, limit: Duration, orphans: &mut Vec<Orphan>) {
        if self.shut_down {
            return;
        }
        self.fixed.close();
        self.fixed_buffers.close();
        self.buf_groups.close();
        let live: Vec<UserData> = self
            .slots
            .iter()
            // A close is left to finish (see `OpCode::CANCELLABLE`).
            .filter(|(_, e)| e.cancellable && e.state.in_kernel())
            .map(|(k, e)| UserData::new(k, e.generation))
            .collect();
        for user_data in live {
            self.cancel(user_data);
        }
        if self.wake_armed {
            self.cancel(UserData::WAKE);
        }
        self.shut_down = true;
        let mut wakers = Vec::new();
        let deadline = Instant::now() + limit;
        // At least one turn that may wait a little, even with no time left: it submits the
        // cancels, and most ops answer a cancel at once; only then can the drain give up.
        let mut first = true;
        loop {
            let mut left = deadline.saturating_duration_since(Instant::now());
            if std::mem::take(&mut first) {
                left = left.max(FIRST_DRAIN_WAIT);
            }
            if let Err(e) = self.turn(true, Some(left), &mut wakers, orphans) {
                self.give_up_drain(format_args!("cannot drain the ring ({e})"));
                break;
            }
            if !self.kernel_busy() {
                break;
            }
            if left.is_zero() {
                let held = self
                    .slots
                    .iter()
                    .filter(|(_, e)| e.state.in_kernel())
                    .count();
                self.give_up_drain(format_args!(
                    "the kernel did not finish {held} in-flight op(s) within the shutdown \
                     timeout of {limit:?} (an op it cannot cancel, such as a read on a hung \
                     network filesystem)"
                ));
                break;
            }
        }
        // Wakers of ops completed during the drain belong to futures that will be dropped or
        // polled later; there is nobody to wake now.
        drop(wakers);
    }

    /// Says on stderr that the drain gave up. Nothing is freed: the slots the kernel still
    /// holds stay as they are (their ops stay pending) and are leaked when the driver drops
    /// (INV-ring, see `Drop for Driver`). The warning cannot panic (stderr may be a closed pipe).
    fn give_up_drain(&mut self, why: std::fmt::Arguments<'_>) {
        use std::io::Write;
        let _ = writeln!(
            io::stderr(),
            "uring: at runtime shutdown, {why}; leaking their buffers rather than freeing memory \
             the kernel may still write"
        );
    }
}

impl Drop for Driver {
    /// INV-ring: memory the kernel may still write is never freed. A driver dropped with ops
    /// still in the kernel (a shutdown drain that gave up, or a panic that unwound through the
    /// runtime's drop before the drain) leaks their slots and the wake read's buffer; the ring
    /// itself may close: the kernel keeps what its requests still use.
    fn drop(&mut self) {
        if self.slots.iter().any(|(_, e)| e.state.in_kernel()) {
            std::mem::forget(std::mem::take(&mut self.slots));
        }
        if self.wake_armed {
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
        }
    }
}
