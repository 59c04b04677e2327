//! The state of one in-flight operation, with no syscalls and no unsafe code.
//!
//! ```text
//!            submit                 CQE (no F_MORE)
//!   (none) ---------> Waiting -------------------------> Completed --take--> (freed)
//!                       |  \  CQE with F_MORE (multishot)
//!                       |   `------> Streaming (queue) --last CQE, queue drained--> (freed)
//!                       | future dropped                      | future dropped
//!                       v                                     v
//!                   Abandoned(data) --final CQE (no F_MORE)--> (freed, data dropped)
//! ```
//!
//! INV-slot: a slot is freed only after the kernel posted the op's final CQE (one without
//! `IORING_CQE_F_MORE`), so the data an abandoned slot keeps is alive as long as the kernel may
//! touch it. Every completion of an abandoned op, and every completion that was queued for its
//! future but never taken, is handed to the data's [`Orphaned::completion`] exactly once: that
//! is how an accept closes a connection nobody took and a read keeps the bytes it took.

use std::collections::VecDeque;
use std::task::Waker;

/// `IORING_CQE_F_MORE`: the op will post more completions.
pub(crate) const CQE_F_MORE: u32 = 1 << 1;

/// What the kernel reported for one completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completion {
    /// The `res` field: a non-negative result or a negated errno.
    pub result: i32,
    /// The `flags` field (`IORING_CQE_F_*`).
    pub flags: u32,
}

impl Completion {
    /// Whether the kernel will post more completions for this op.
    pub fn has_more(&self) -> bool {
        self.flags & CQE_F_MORE != 0
    }
}

/// The data of an op whose future is gone, kept until the op's final completion.
pub(crate) trait Orphaned: 'static {
    /// A completion that nobody will claim. Called once per such completion, in order, and
    /// possibly while the driver is borrowed: it must not touch the runtime (closing an fd,
    /// filling a buffer or waking a waker is fine).
    fn completion(&mut self, c: Completion);
}

/// What a dropped op leaves behind: buffers, addresses and fd handles the kernel may still use.
pub(crate) struct Orphan {
    pub data: Box<dyn Orphaned>,
}

pub(crate) enum State {
    /// Submitted; no completion yet. Holds the owner's waker.
    Waiting(Option<Waker>),
    /// A single-shot op's final completion, not yet taken by its future.
    Completed(Completion),
    /// A multishot op's completions. Boxed: only multishot ops get here, and every single-shot
    /// op's slot is smaller for it (the slab moves a slot in and out once per op).
    Streaming(Box<Stream>),
    /// The future was dropped while the kernel still holds the op.
    Abandoned(Orphan),
}

/// A multishot op's completions, in order; `ended` once the final one arrived, `stopping` once
/// the queue reached its limit and the driver was told to cancel the op.
pub(crate) struct Stream {
    pub waker: Option<Waker>,
    pub queue: VecDeque<Completion>,
    pub ended: bool,
    pub stopping: bool,
}

/// What the driver must do after a completion was recorded.
pub(crate) enum Event {
    /// Wake the op's owner.
    Wake(Option<Waker>),
    /// Wake the owner, and cancel the op: its queue of unclaimed completions is full. The op
    /// ends with a final completion (`-ECANCELED`, or whatever it was doing) after the queued
    /// ones, and its owner submits it again once it has taken them.
    WakeAndStop(Option<Waker>),
    /// The slot is done: free it, and drop this data outside any borrow of the driver.
    Free(Orphan),
    /// Nothing to do.
    Nothing,
}

/// The outcome of dropping an op's future.
pub(crate) enum Abandon {
    /// The kernel still holds the op: keep the slot and submit a cancel.
    Cancel,
    /// The kernel is done with the op: free the slot and drop this data.
    Free(Orphan),
}

impl State {
    /// Records one completion. A multishot op's queue of completions holds at most
    /// `queue_limit` before the driver is asked to stop the op (0: no limit).
    pub fn complete(&mut self, c: Completion, queue_limit: usize) -> Event {
        // The common case, a single-shot op's one completion: the waker moves out of the old
        // state, so there is nothing left to drop.
        if !c.has_more() && matches!(self, State::Waiting(_)) {
            let State::Waiting(waker) = std::mem::replace(self, State::Completed(c)) else {
                unreachable!("the state was just matched as waiting")
            };
            return Event::Wake(waker);
        }
        match self {
            State::Waiting(waker) => {
                let waker = waker.take();
                let mut queue = VecDeque::with_capacity(4);
                queue.push_back(c);
                *self = State::Streaming(Box::new(Stream {
                    waker: None,
                    queue,
                    ended: false,
                    stopping: false,
                }));
                Self::after_push(self, waker, queue_limit)
            }
            State::Streaming(stream) => {
                stream.queue.push_back(c);
                stream.ended = !c.has_more();
                let waker = stream.waker.take();
                Self::after_push(self, waker, queue_limit)
            }
            State::Abandoned(orphan) => {
                orphan.data.completion(c);
                if c.has_more() {
                    return Event::Nothing;
                }
                match std::mem::replace(self, State::Waiting(None)) {
                    State::Abandoned(orphan) => Event::Free(orphan),
                    _ => unreachable!("the state was just matched as abandoned"),
                }
            }
            // A completion after the final one would be a kernel or driver bug; keep the first.
            State::Completed(_) => Event::Nothing,
        }
    }

    /// After a multishot completion was queued: whether the queue is now full.
    fn after_push(&mut self, waker: Option<Waker>, queue_limit: usize) -> Event {
        if let State::Streaming(stream) = self {
            if !stream.ended
                && queue_limit > 0
                && stream.queue.len() >= queue_limit
                && !stream.stopping
            {
                stream.stopping = true;
                return Event::WakeAndStop(waker);
            }
        }
        Event::Wake(waker)
    }

    /// Called when the owning future is dropped. Completions queued for it and never taken go
    /// to the data's [`Orphaned::completion`] first.
    pub fn abandon(&mut self, mut orphan: Orphan) -> Abandon {
        match std::mem::replace(self, State::Waiting(None)) {
            State::Waiting(_) => {
                *self = State::Abandoned(orphan);
                Abandon::Cancel
            }
            State::Streaming(stream) => {
                for c in stream.queue {
                    orphan.data.completion(c);
                }
                if stream.ended {
                    Abandon::Free(orphan)
                } else {
                    *self = State::Abandoned(orphan);
                    Abandon::Cancel
                }
            }
            State::Completed(c) => {
                orphan.data.completion(c);
                Abandon::Free(orphan)
            }
            State::Abandoned(_) => unreachable!("an op's future was dropped twice"),
        }
    }

    /// Whether the kernel may still post completions for this op.
    pub fn in_kernel(&self) -> bool {
        matches!(self, State::Waiting(_) | State::Abandoned(_))
            || matches!(self, State::Streaming(stream) if !stream.ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Records the completions it is handed.
    struct Recorder(Rc<RefCell<Vec<Completion>>>);

    impl Orphaned for Recorder {
        fn completion(&mut self, c: Completion) {
            self.0.borrow_mut().push(c);
        }
    }

    fn orphan() -> (Orphan, Rc<RefCell<Vec<Completion>>>) {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let o = Orphan {
            data: Box::new(Recorder(seen.clone())),
        };
        (o, seen)
    }

    const DONE: Completion = Completion {
        result: 5,
        flags: 0,
    };
    const MORE: Completion = Completion {
        result: 7,
        flags: CQE_F_MORE,
    };

    #[test]
    fn single_shot_completes_then_final() {
        let mut s = State::Waiting(None);
        assert!(matches!(s.complete(DONE, 0), Event::Wake(None)));
        assert!(matches!(s, State::Completed(DONE)));
        assert!(!s.in_kernel());
    }

    #[test]
    fn abandoned_in_flight_keeps_data_until_final_cqe() {
        let (o, seen) = orphan();
        let mut s = State::Waiting(None);
        assert!(matches!(s.abandon(o), Abandon::Cancel));
        assert!(s.in_kernel());
        assert!(matches!(s.complete(DONE, 0), Event::Free(_)));
        assert_eq!(
            *seen.borrow(),
            vec![DONE],
            "the late result reaches the data"
        );
    }

    #[test]
    fn abandoned_after_completion_frees_at_once_and_hands_over_the_result() {
        let (o, seen) = orphan();
        let mut s = State::Waiting(None);
        s.complete(DONE, 0);
        assert!(matches!(s.abandon(o), Abandon::Free(_)));
        assert_eq!(*seen.borrow(), vec![DONE]);
    }

    #[test]
    fn multishot_streams_until_a_cqe_without_more() {
        let mut s = State::Waiting(None);
        s.complete(MORE, 0);
        s.complete(MORE, 0);
        s.complete(DONE, 0);
        match &s {
            State::Streaming(stream) => {
                assert!(stream.ended);
                assert_eq!(stream.queue.len(), 3);
            }
            _ => panic!("expected streaming"),
        }
        assert!(!s.in_kernel());
    }

    #[test]
    fn abandoned_multishot_hands_over_queued_and_later_completions() {
        let (o, seen) = orphan();
        let mut s = State::Waiting(None);
        s.complete(MORE, 0);
        assert!(matches!(s.abandon(o), Abandon::Cancel));
        assert!(matches!(s.complete(MORE, 0), Event::Nothing));
        assert!(matches!(s.complete(DONE, 0), Event::Free(_)));
        assert_eq!(*seen.borrow(), vec![MORE, MORE, DONE]);
    }

    #[test]
    fn abandoned_ended_multishot_frees() {
        let (o, seen) = orphan();
        let mut s = State::Waiting(None);
        s.complete(MORE, 0);
        s.complete(DONE, 0);
        assert!(matches!(s.abandon(o), Abandon::Free(_)));
        assert_eq!(seen.borrow().len(), 2);
    }

    #[test]
    fn a_zero_copy_send_dropped_between_result_and_notification_keeps_its_data() {
        // SEND_ZC: the result with F_MORE, then the notification (F_NOTIF, no F_MORE).
        let result = Completion {
            result: 4096,
            flags: CQE_F_MORE,
        };
        let notif = Completion {
            result: 0,
            flags: 1 << 3,
        };
        let (o, seen) = orphan();
        let mut s = State::Waiting(None);
        assert!(matches!(s.complete(result, 0), Event::Wake(_)));
        // The future saw nothing yet, or took the result and is dropped before the notification.
        assert!(matches!(s.abandon(o), Abandon::Cancel));
        assert!(s.in_kernel(), "the data stays until the notification");
        assert!(matches!(s.complete(notif, 0), Event::Free(_)));
        assert_eq!(*seen.borrow(), vec![result, notif]);
    }

    #[test]
    fn a_full_queue_asks_once_to_stop_and_keeps_every_completion() {
        let mut s = State::Waiting(None);
        assert!(matches!(s.complete(MORE, 3), Event::Wake(_)));
        assert!(matches!(s.complete(MORE, 3), Event::Wake(_)));
        assert!(matches!(s.complete(MORE, 3), Event::WakeAndStop(_)));
        // Completions the kernel posts before the cancel lands are still queued.
        assert!(matches!(s.complete(MORE, 3), Event::Wake(_)));
        let cancelled = Completion {
            result: -125,
            flags: 0,
        };
        assert!(matches!(s.complete(cancelled, 3), Event::Wake(_)));
        match &s {
            State::Streaming(stream) => {
                assert_eq!(stream.queue.len(), 5);
                assert!(stream.ended);
            }
            _ => panic!("expected streaming"),
        }
    }
}
