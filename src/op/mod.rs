//! One future type for every ring operation.
//!
//! An op is built from its data (an [`OpCode`]), submitted on its first poll (so a future built
//! and dropped unpolled costs nothing and needs no cancel), and completed by the driver. If its
//! future is dropped while the kernel holds it, the data moves into the driver's slot and stays
//! alive until the final completion (INV-slot); the driver submits a cancel.

use crate::driver::slot::{Completion, Orphan};
use crate::runtime::Handle;
use io_uring::squeue;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// The data of one kind of ring operation: what it puts in the SQE and how it turns the
/// completion into a result.
///
/// # Safety
///
/// INV-heap: every pointer `create_entry` places in the SQE (buffers, iovecs, addresses, paths,
/// timespecs, msghdrs) points to memory owned by `self` on the heap, or `'static`, that stays
/// valid and at the same address while `self` is alive, even when `self` is moved. Every fd in
/// the SQE is kept open by `self` (INV-fd).
pub(crate) unsafe trait OpCode: 'static {
    /// Whether a successful result is a new fd (accept, open): an unclaimed one is closed.
    const RETURNS_FD: bool = false;

    /// Whether dropping the op in flight should cancel it. Not for a close: a close the kernel
    /// handed to a worker (files with a flush hook) and a cancel then removed would leave the fd
    /// open with nobody to close it.
    const CANCELLABLE: bool = true;

    /// Builds the SQE. Called once, when the op is first polled and `self` no longer moves
    /// before submission.
    fn create_entry(&mut self) -> squeue::Entry;
}

/// Converts a completion's result into an `io::Result`.
pub(crate) mod fs;
pub(crate) mod net;
pub(crate) mod rw;

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
    Submitted { handle: Rc<Handle>, user_data: u64 },
    Done,
}

/// The completion an op gets when its runtime shut down before it could be submitted.
const CANCELLED: Completion = Completion {
    result: -libc::ECANCELED,
    flags: 0,
};

/// Queues the op's SQE on the current runtime; `None` if that runtime has shut down.
fn submit<T: OpCode>(data: &mut T, cx: &Context<'_>) -> Option<Stage> {
    let handle = Handle::current();
    let entry = data.create_entry();
    let submitted = handle.driver.borrow_mut().submit(entry, cx.waker().clone());
    submitted
        .ok()
        .map(|user_data| Stage::Submitted { handle, user_data })
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
            Stage::Submitted { handle, user_data } => {
                let polled = handle.driver.borrow_mut().poll_op(*user_data, cx);
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
        abandon(&self.stage, self.data.take());
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

    /// The op's data, for reading what completions refer to (such as a buffer ring).
    #[allow(dead_code)]
    pub(crate) fn data(&self) -> &T {
        self.data
            .as_ref()
            .expect("multishot op data present until drop")
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
            Stage::Submitted { handle, user_data } => {
                let polled = handle.driver.borrow_mut().poll_multi(*user_data, cx);
                if let Poll::Ready(Some(c)) = polled {
                    if !c.has_more() {
                        // The slot was freed with its final completion.
                        self.stage = Stage::Done;
                    }
                }
                if let Poll::Ready(None) = polled {
                    self.stage = Stage::Done;
                }
                polled
            }
            Stage::Done => Poll::Ready(None),
        }
    }

    /// Whether the op ended (its final completion was returned) and may be resubmitted.
    #[allow(dead_code)]
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done)
    }
}

impl<T: OpCode> Drop for MultiOp<T> {
    fn drop(&mut self) {
        abandon(&self.stage, self.data.take());
    }
}

/// Hands a dropped op's data to the driver if the kernel may still hold the op (INV-slot).
fn abandon<T: OpCode>(stage: &Stage, data: Option<T>) {
    if let Stage::Submitted { handle, user_data } = stage {
        let orphan = Orphan {
            data: data.map(|d| Box::new(d) as Box<dyn std::any::Any>),
            returns_fd: T::RETURNS_FD,
            cancellable: T::CANCELLABLE,
        };
        let leftover = handle.driver.borrow_mut().abandon(*user_data, orphan);
        // Dropped after the borrow ends: the data may hold an fd whose drop submits a close.
        drop(leftover);
    }
}
