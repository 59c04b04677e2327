//! One future type for every ring operation.
//!
//! An op is built from its data (an [`OpCode`]), submitted on its first poll (so a future built
//! and dropped unpolled costs nothing and needs no cancel), and completed by the driver. If its
//! future is dropped while the kernel holds it, the data moves into the driver's slot and stays
//! alive until the final completion (INV-slot); the driver submits a cancel, and the completions
//! nobody claims go to the data's [`OpCode::unclaimed`] (an accept closes the connection it
//! took, a read hands its bytes to the next read).

use crate::driver::slot::{Completion, Orphan, Orphaned};
use crate::driver::UserData;
use crate::runtime::{context, RuntimeState};
use io_uring::squeue;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

pub(crate) mod fs;
pub(crate) mod net;
pub(crate) mod rw;
pub(crate) mod send_file;
pub(crate) mod send_zc;
pub(crate) mod splice;
pub(crate) mod wait;

/// The data of one kind of ring operation: what it puts in the SQE and what becomes of
/// completions nobody claims.
///
/// # Safety
///
/// INV-heap: every pointer `create_entry` places in the SQE (buffers, iovecs, addresses, paths,
/// timespecs, msghdrs) points to memory owned by `self` on the heap, or `'static`, that stays
/// valid and at the same address while `self` is alive, even when `self` is moved. Every fd in
/// the SQE is kept open by `self` (INV-fd).
pub(crate) unsafe trait OpCode: 'static {
    /// Whether dropping the op in flight should cancel it. Not for a close: a close the kernel
    /// handed to a worker (files with a flush hook) and a cancel then removed would leave the fd
    /// open with nobody to close it.
    const CANCELLABLE: bool = true;

    /// For a multishot op: how many completions may wait for the owner to take them before the
    /// op is stopped (cancelled; the owner submits it again once it has taken them). 0: no
    /// limit.
    const QUEUE_LIMIT: usize = 0;

    /// Builds the SQE. Called once, when the op is first polled and `self` no longer moves
    /// before submission.
    fn create_entry(&mut self) -> squeue::Entry;

    /// Whether the SQE should reach the kernel as soon as it is queued instead of with the rest
    /// of the loop turn's: for ops that wait on a device (`O_DIRECT` file I/O), which then
    /// starts on each as it comes (docs/architecture.md, "When SQEs reach the kernel").
    fn submits_at_once(&self) -> bool {
        false
    }

    /// The op's future was dropped while the kernel of `runtime` holds the op: from now on its
    /// completions go to [`OpCode::unclaimed`].
    fn abandoned(&mut self, _runtime: &Rc<RuntimeState>) {}

    /// A completion nobody will claim: it arrived after the future was dropped, or before and
    /// was never taken. Called once per such completion, in order; the op's data is dropped
    /// after the final one. It may run while the driver is borrowed, so it must not touch the
    /// runtime (closing an fd, keeping bytes or waking a waker is fine).
    fn unclaimed(&mut self, _c: Completion) {}
}

impl<T: OpCode> Orphaned for T {
    fn completion(&mut self, c: Completion) {
        self.unclaimed(c);
    }
}

/// Converts a completion result.
pub(crate) fn cqe_result(c: Completion) -> io::Result<u32> {
    if c.result < 0 {
        Err(io::Error::from_raw_os_error(-c.result))
    } else {
        Ok(c.result as u32)
    }
}

enum Stage {
    Unsubmitted,
    Submitted {
        state: Rc<RuntimeState>,
        user_data: UserData,
    },
    Done,
}

/// The completion an op gets when its runtime shut down before it could be submitted.
const CANCELLED: Completion = Completion {
    result: -libc::ECANCELED,
    flags: 0,
};

/// Queues the op's SQE on the current runtime; `None` if that runtime has shut down.
fn submit<T: OpCode>(data: &mut T, cx: &Context<'_>) -> Option<Stage> {
    let state = context::current();
    let entry = data.create_entry();
    let at_once = data.submits_at_once();
    let submitted = {
        let mut driver = state.driver.borrow_mut();
        let submitted = driver.submit(entry, cx.waker().clone(), T::CANCELLABLE, T::QUEUE_LIMIT);
        if at_once && submitted.is_ok() {
            driver.submit_queued();
        }
        submitted
    };
    submitted
        .ok()
        .map(|user_data| Stage::Submitted { state, user_data })
}

/// A single-shot ring operation. Resolves to its data and the kernel's completion.
pub(crate) struct Op<T: OpCode> {
    data: Option<T>,
    stage: Stage,
}

impl<T: OpCode> Op<T> {
    pub(crate) fn new(data: T) -> Op<T> {
        Op {
            data: Some(data),
            stage: Stage::Unsubmitted,
        }
    }
}

impl<T: OpCode> Unpin for Op<T> {}

impl<T: OpCode> Future for Op<T> {
    type Output = (Completion, T);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &this.stage {
            Stage::Unsubmitted => {
                let data = this.data.as_mut().expect("op polled after completion");
                match submit(data, cx) {
                    Some(stage) => {
                        this.stage = stage;
                        Poll::Pending
                    }
                    None => {
                        this.stage = Stage::Done;
                        let data = this.data.take().expect("op data present");
                        Poll::Ready((CANCELLED, data))
                    }
                }
            }
            Stage::Submitted { state, user_data } => {
                let polled = state.driver.borrow_mut().poll_op(*user_data, cx);
                match polled {
                    Poll::Ready(c) => {
                        this.stage = Stage::Done;
                        Poll::Ready((c, this.data.take().expect("op data present")))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            Stage::Done => panic!("op polled after completion"),
        }
    }
}

impl<T: OpCode> Drop for Op<T> {
    fn drop(&mut self) {
        // Checked here, not only in `abandon`: most ops drop after they completed, and then
        // there is nothing to move out of `data`.
        if matches!(self.stage, Stage::Submitted { .. }) {
            abandon(&self.stage, self.data.take());
        }
    }
}

/// A multishot ring operation (multishot accept or recv): a stream of completions that ends
/// with the first one lacking `IORING_CQE_F_MORE`.
pub(crate) struct MultiOp<T: OpCode> {
    data: Option<T>,
    stage: Stage,
}

impl<T: OpCode> MultiOp<T> {
    pub(crate) fn new(data: T) -> MultiOp<T> {
        MultiOp {
            data: Some(data),
            stage: Stage::Unsubmitted,
        }
    }

    /// The next completion, or `None` after the final one was returned.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        match &self.stage {
            Stage::Unsubmitted => {
                let data = self.data.as_mut().expect("multishot op data present");
                match submit(data, cx) {
                    Some(stage) => {
                        self.stage = stage;
                        Poll::Pending
                    }
                    None => {
                        self.stage = Stage::Done;
                        Poll::Ready(Some(CANCELLED))
                    }
                }
            }
            Stage::Submitted { state, user_data } => {
                let polled = state.driver.borrow_mut().poll_multi(*user_data, cx);
                match polled {
                    // The slot was freed with its final completion.
                    Poll::Ready(Some(c)) if !c.has_more() => self.stage = Stage::Done,
                    Poll::Ready(None) => self.stage = Stage::Done,
                    _ => {}
                }
                polled
            }
            Stage::Done => Poll::Ready(None),
        }
    }

    /// Whether the op ended (its final completion was returned) and may be resubmitted.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }

    /// The op's data, once the op ended: the kernel is done with it. `None` while the kernel
    /// may still use it (INV-slot), or once taken.
    pub(crate) fn take_data(&mut self) -> Option<T> {
        if self.is_done() {
            self.data.take()
        } else {
            None
        }
    }
}

impl<T: OpCode> Drop for MultiOp<T> {
    fn drop(&mut self) {
        if matches!(self.stage, Stage::Submitted { .. }) {
            abandon(&self.stage, self.data.take());
        }
    }
}

/// Hands a dropped op's data to the driver if the kernel may still hold the op (INV-slot).
fn abandon<T: OpCode>(stage: &Stage, data: Option<T>) {
    let (Stage::Submitted { state, user_data }, Some(mut data)) = (stage, data) else {
        return;
    };
    data.abandoned(state);
    let orphan = Orphan {
        data: Box::new(data),
    };
    let leftover = state.driver.borrow_mut().abandon(*user_data, orphan);
    // Dropped after the borrow ends: the data may hold a registered file whose release needs the
    // driver.
    drop(leftover);
}
