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
//! touch it.

use std::any::Any;
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

/// The data a dropped op leaves behind, kept until its final completion.
pub(crate) struct Orphan {
    /// Buffers, addresses and fd handles the kernel may still use.
    pub data: Option<Box<dyn Any>>,
    /// The op's successful results are new file descriptors that nobody will claim.
    pub returns_fd: bool,
    /// Whether to cancel the op (see `OpCode::CANCELLABLE`).
    pub cancellable: bool,
}

pub(crate) enum State {
    /// Submitted; no completion yet. Holds the owner's waker.
    Waiting(Option<Waker>),
    /// A single-shot op's final completion, not yet taken by its future.
    Completed(Completion),
    /// A multishot op's completions, in order; `ended` once the final one arrived.
    Streaming {
        waker: Option<Waker>,
        queue: VecDeque<Completion>,
        ended: bool,
    },
    /// The future was dropped while the kernel still holds the op.
    Abandoned(Orphan),
}

/// What the driver must do after a completion was recorded.
pub(crate) enum Event {
    /// Wake the op's owner.
    Wake(Option<Waker>),
    /// The slot is done: free it, and drop the orphan (outside any borrow of the driver).
    Free(Orphan, Completion),
    /// Nothing to do (more completions of an abandoned multishot op will come).
    Nothing(Orphan, Completion),
}

/// The outcome of dropping an op's future.
pub(crate) enum Abandon {
    /// The kernel still holds the op: keep the slot, submit a cancel, and discard these
    /// completions that arrived but were never claimed.
    Cancel(Vec<Completion>),
    /// The kernel is done with the op: free the slot, drop the orphan and discard these
    /// unclaimed completions.
    Free(Orphan, Vec<Completion>),
}

impl State {
    /// Records one completion.
    pub fn complete(&mut self, c: Completion) -> Event {
        match self {
            State::Waiting(waker) => {
                let waker = waker.take();
                if c.has_more() {
                    let mut queue = VecDeque::with_capacity(4);
                    queue.push_back(c);
                    *self = State::Streaming {
                        waker: None,
                        queue,
                        ended: false,
                    };
                } else {
                    *self = State::Completed(c);
                }
                Event::Wake(waker)
            }
            State::Streaming {
                waker,
                queue,
                ended,
            } => {
                queue.push_back(c);
                *ended = !c.has_more();
                Event::Wake(waker.take())
            }
            State::Abandoned(orphan) => {
                let orphan = Orphan {
                    data: if c.has_more() {
                        None
                    } else {
                        orphan.data.take()
                    },
                    returns_fd: orphan.returns_fd,
                    cancellable: orphan.cancellable,
                };
                if c.has_more() {
                    Event::Nothing(orphan, c)
                } else {
                    Event::Free(orphan, c)
                }
            }
            // A completion after the final one would be a kernel or driver bug; keep the first.
            State::Completed(_) => Event::Wake(None),
        }
    }

    /// Called when the owning future is dropped.
    pub fn abandon(&mut self, orphan: Orphan) -> Abandon {
        match std::mem::replace(self, State::Abandoned(orphan)) {
            State::Waiting(_) => Abandon::Cancel(Vec::new()),
            State::Streaming {
                queue,
                ended: false,
                ..
            } => Abandon::Cancel(queue.into()),
            State::Abandoned(_) => Abandon::Cancel(Vec::new()),
            State::Completed(c) => Abandon::Free(self.take_orphan(), vec![c]),
            State::Streaming {
                queue, ended: true, ..
            } => Abandon::Free(self.take_orphan(), queue.into()),
        }
    }

    fn take_orphan(&mut self) -> Orphan {
        match std::mem::replace(self, State::Waiting(None)) {
            State::Abandoned(o) => o,
            _ => unreachable!("take_orphan on a slot that is not abandoned"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orphan() -> Orphan {
        Orphan {
            data: Some(Box::new(vec![1u8, 2, 3])),
            returns_fd: false,
            cancellable: true,
        }
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
        assert!(matches!(s.complete(DONE), Event::Wake(None)));
        assert!(matches!(s, State::Completed(DONE)));
    }

    #[test]
    fn abandoned_in_flight_keeps_data_until_final_cqe() {
        let mut s = State::Waiting(None);
        assert!(matches!(s.abandon(orphan()), Abandon::Cancel(v) if v.is_empty()));
        match s.complete(DONE) {
            Event::Free(o, c) => {
                assert!(o.data.is_some());
                assert_eq!(c, DONE);
            }
            _ => panic!("final CQE must free an abandoned slot"),
        }
    }

    #[test]
    fn abandoned_after_completion_frees_at_once_and_reports_result() {
        let mut s = State::Waiting(None);
        s.complete(DONE);
        match s.abandon(orphan()) {
            Abandon::Free(o, v) => {
                assert!(o.data.is_some());
                assert_eq!(v, vec![DONE]);
            }
            Abandon::Cancel(_) => panic!("nothing to cancel"),
        }
    }

    #[test]
    fn multishot_streams_until_a_cqe_without_more() {
        let mut s = State::Waiting(None);
        s.complete(MORE);
        s.complete(MORE);
        s.complete(DONE);
        match &s {
            State::Streaming { queue, ended, .. } => {
                assert!(*ended);
                assert_eq!(queue.len(), 3);
            }
            _ => panic!("expected streaming"),
        }
    }

    #[test]
    fn abandoned_multishot_discards_queued_and_waits_for_final() {
        let mut s = State::Waiting(None);
        s.complete(MORE);
        match s.abandon(orphan()) {
            Abandon::Cancel(v) => assert_eq!(v, vec![MORE]),
            Abandon::Free(..) => panic!("kernel still holds it"),
        }
        match s.complete(MORE) {
            Event::Nothing(o, c) => {
                assert!(o.data.is_none());
                assert_eq!(c, MORE);
            }
            _ => panic!("more to come"),
        }
        assert!(matches!(s.complete(DONE), Event::Free(o, _) if o.data.is_some()));
    }

    #[test]
    fn abandoned_ended_multishot_frees() {
        let mut s = State::Waiting(None);
        s.complete(MORE);
        s.complete(DONE);
        assert!(matches!(s.abandon(orphan()), Abandon::Free(_, v) if v.len() == 2));
    }
}
