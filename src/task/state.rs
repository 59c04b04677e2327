//! A task's state: two atomics in its header, readable from any thread.
//!
//! `scheduled` is its own byte so a wake is one swap on it; the other flags share `flags`. Each
//! constant says what the flag means, who sets it and what it rules out.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The future is gone: it returned, panicked, was cancelled or was dropped at shutdown. The
/// stage now holds the output (until the join handle takes it) or nothing.
///
/// Set by the owner thread only, once, and never cleared. Rules out polling the future again:
/// a run of a complete task returns at once, and a late wake only costs a queue entry.
pub(crate) const COMPLETE: u8 = 1;

/// `abort()` was called: the next run drops the future in place instead of polling it.
///
/// Set by a join handle, never cleared. Has no effect once `COMPLETE` is set.
pub(crate) const CANCELLED: u8 = 2;

/// The join handle is gone, so nobody will take the output: it is dropped as soon as it exists.
///
/// Set by the join handle's drop, never cleared.
pub(crate) const JOIN_DROPPED: u8 = 4;

/// The task is in its owner's table of live tasks (`OwnedTasks`), under the key in the header,
/// which holds one reference to it there.
///
/// Set and cleared by the owner thread only. A task that finishes on its first poll is never
/// `OWNED`; a task that is `COMPLETE` is not `OWNED` any more.
pub(crate) const OWNED: u8 = 8;

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

    #[inline]
    pub(crate) fn set(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::AcqRel);
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
    fn flags_are_independent() {
        let s = TaskState::new();
        s.set(OWNED);
        s.set(CANCELLED);
        s.clear(OWNED);
        assert!(s.is(CANCELLED) && !s.is(OWNED) && !s.is(COMPLETE));
        assert_eq!(s.load(), CANCELLED);
    }
}
