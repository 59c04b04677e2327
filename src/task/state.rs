//! A task's state: two atomics in its header, readable from any thread.
//!
//! `scheduled` is its own byte so a wake is one swap on it; the other flags share `flags`. Each
//! constant says what the flag means, who sets it and what it rules out.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The future is gone: it returned, panicked, was cancelled or was dropped at shutdown. The
/// stage now holds the output (until the join handle takes it) or nothing.
///
/// Set by the owner thread only, once, with release ordering after the output was stored, and
/// never cleared. Rules out polling the future again (a run of a complete task returns at once,
/// and a late wake only costs a queue entry), and hands the stage to the join handle, which may
/// be on another thread: from then on only the join handle touches the stage.
pub(crate) const COMPLETE: u8 = 1;

/// `abort()` was called: the next run drops the future in place instead of polling it.
///
/// Set by a join handle, never cleared. Has no effect once `COMPLETE` is set.
pub(crate) const CANCELLED: u8 = 2;

/// The join handle is gone, so nobody will take the output. Set by the join handle's drop (on
/// any thread), never cleared. Whoever of the owner (setting `COMPLETE`) and the join handle
/// (setting `JOIN_DROPPED`) comes second in the flags' order sees the other's bit, and drops
/// the output: exactly one of them does.
pub(crate) const JOIN_DROPPED: u8 = 4;

/// The task is in its owner's table of live tasks (`OwnedTasks`), under the key in the header,
/// which holds one reference to it there.
///
/// Set and cleared by the owner thread only. A task that finishes on its first poll is never
/// `OWNED`; a task that is `COMPLETE` is not `OWNED` any more.
pub(crate) const OWNED: u8 = 8;

/// The join waker cell holds the join handle's waker, and the owner will take and wake it when
/// it sets `COMPLETE`. While this flag is clear the cell belongs to the join handle, which may
/// write it; once set, only the owner touches it. The join handle sets it with a CAS that fails
/// if `COMPLETE` came first, and clears it (to replace the waker) with a CAS that fails the same
/// way. Rules out the owner and a join handle on another thread touching the cell at once.
pub(crate) const JOIN_WAKER: u8 = 16;

/// The flags of one task.
pub(crate) struct TaskState {
    /// In a run queue, or on its way there: a wake that finds it set does nothing. Set by
    /// wakers (and `abort`) from any thread with a swap, so exactly one of several concurrent
    /// wakes queues the task; cleared by the owner right before it polls the future, so a wake
    /// during the poll queues the task again.
    scheduled: AtomicBool,
    flags: AtomicU8,
}

impl TaskState {
    /// A new task: queued once (the spawn), nothing else set.
    pub(crate) const fn new() -> TaskState {
        TaskState {
            scheduled: AtomicBool::new(true),
            flags: AtomicU8::new(0),
        }
    }

    /// Marks the task scheduled; `true` if it was not, so the caller must queue it.
    #[inline]
    pub(crate) fn schedule(&self) -> bool {
        !self.scheduled.swap(true, Ordering::AcqRel)
    }

    /// The task is about to be polled: wakes from now on queue it again. A swap, not a store:
    /// it acquires what a waker released with its own swap that found the task still scheduled
    /// (that waker queued nothing, and relies on this poll to see what it wrote before waking).
    #[inline]
    pub(crate) fn unschedule(&self) {
        self.scheduled.swap(false, Ordering::AcqRel);
    }

    #[inline]
    pub(crate) fn is(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Acquire) & flag != 0
    }

    #[inline]
    pub(crate) fn load(&self) -> u8 {
        self.flags.load(Ordering::Acquire)
    }

    /// Sets `flag`; returns the flags as they were.
    #[inline]
    pub(crate) fn set(&self, flag: u8) -> u8 {
        self.flags.fetch_or(flag, Ordering::AcqRel)
    }

    /// Sets `flag` unless `COMPLETE` is set; `false` if it was.
    pub(crate) fn set_unless_complete(&self, flag: u8) -> bool {
        self.flags
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
                (f & COMPLETE == 0).then_some(f | flag)
            })
            .is_ok()
    }

    /// Clears `flag` unless `COMPLETE` is set; `false` if it was.
    pub(crate) fn clear_unless_complete(&self, flag: u8) -> bool {
        self.flags
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
                (f & COMPLETE == 0).then_some(f & !flag)
            })
            .is_ok()
    }

    #[inline]
    pub(crate) fn clear(&self, flag: u8) {
        self.flags.fetch_and(!flag, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_of_two_wakes_queues_the_task() {
        let s = TaskState::new();
        s.unschedule();
        assert!(s.schedule());
        assert!(!s.schedule());
        s.unschedule();
        assert!(s.schedule());
    }

    #[test]
    fn the_join_waker_flag_cannot_change_after_complete() {
        let s = TaskState::new();
        assert!(s.set_unless_complete(JOIN_WAKER));
        assert!(s.clear_unless_complete(JOIN_WAKER));
        assert!(s.set_unless_complete(JOIN_WAKER));
        let before = s.set(COMPLETE);
        assert_eq!(before & JOIN_WAKER, JOIN_WAKER, "the owner sees the waker");
        assert!(!s.clear_unless_complete(JOIN_WAKER));
        assert!(!s.set_unless_complete(JOIN_WAKER));
    }

    #[test]
    fn flags_are_independent() {
        let s = TaskState::new();
        s.set(OWNED);
        s.set(CANCELLED);
        s.clear(OWNED);
        assert!(s.is(CANCELLED) && !s.is(OWNED) && !s.is(COMPLETE));
        assert_eq!(s.load(), CANCELLED);
    }
}
