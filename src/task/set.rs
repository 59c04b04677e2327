//! [`JoinSet`]: a collection of tasks joined in the order they finish.
//!
//! Each member has a waker of its own, which its join handle gives the task. When the task
//! finishes, that waker pushes the member's key onto the set's ready queue and wakes whoever
//! awaits `join_next`, so joining polls only members that were woken: a completion costs O(1),
//! whatever the set's size. A key is queued at most once at a time (the member's `queued` flag);
//! a key that outlived its member (rare: only a member removed while its key was queued, then
//! reused) makes one spurious poll of the new member, which returns `Pending` and costs nothing
//! else. The spawning half (`JoinSet::spawn`) lives with the runtime, which the task core knows
//! nothing of.

use crate::task::join::{AbortHandle, JoinError, JoinHandle};
use slab::Slab;
use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

/// A set of tasks spawned on the current runtime, awaited in the order they finish: asyncio's
/// `TaskGroup` and `gather`, tokio's `JoinSet`.
///
/// [`spawn`](JoinSet::spawn) starts a task (its future need not be `Send`) and
/// [`join_next`](JoinSet::join_next) gives the output of the next one to finish, or a
/// [`JoinError`] if it panicked or was aborted; `None` once the set is empty. Dropping the set
/// aborts every task still in it: their futures are dropped (destructors run) at the runtime's
/// next turn and never polled again.
///
/// ```
/// use std::time::Duration;
/// use uring::task::JoinSet;
///
/// uring::run(async {
///     let mut set = JoinSet::new();
///     for ms in [30u64, 10, 20] {
///         set.spawn(async move {
///             uring::time::sleep(Duration::from_millis(ms)).await;
///             ms
///         });
///     }
///     let mut done = Vec::new();
///     while let Some(res) = set.join_next().await {
///         done.push(res.unwrap());
///     }
///     assert_eq!(done, [10, 20, 30]); // the order they finished in
/// });
/// ```
pub struct JoinSet<T> {
    members: Slab<Member<T>>,
    ready: Arc<Ready>,
}

struct Member<T> {
    handle: JoinHandle<T>,
    notify: Arc<Notify>,
    /// `notify` as a waker, made once: polling the handle lends it, no clone per poll.
    waker: Waker,
}

/// The keys of members whose task woke them, and who to tell.
#[derive(Default)]
struct Ready {
    inner: Mutex<ReadyInner>,
}

#[derive(Default)]
struct ReadyInner {
    keys: VecDeque<usize>,
    /// The task awaiting `join_next`.
    waker: Option<Waker>,
}

impl Ready {
    fn lock(&self) -> MutexGuard<'_, ReadyInner> {
        // A panic while holding the lock leaves nothing half-done: a queue push or pop.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One member's waker. An `Arc` with a mutex behind it, not an `Rc`: a waker must be callable
/// from any thread, and a join handle may be polled with it anywhere.
struct Notify {
    key: usize,
    /// The key is in the ready queue (or about to be): a wake then adds nothing.
    queued: AtomicBool,
    ready: Arc<Ready>,
}

impl Wake for Notify {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let waker = {
            let mut r = self.ready.lock();
            r.keys.push_back(self.key);
            r.waker.take()
        };
        // Woken outside the lock: a waker may do anything, even touch this set again.
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> JoinSet<T> {
    /// An empty set.
    pub fn new() -> JoinSet<T> {
        JoinSet {
            members: Slab::new(),
            ready: Arc::new(Ready::default()),
        }
    }

    /// How many tasks are in the set: spawned and not yet joined (finished tasks count until
    /// `join_next` returns them).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Adds a spawned task's handle; its first poll happens in the next `join_next`.
    pub(crate) fn insert(&mut self, handle: JoinHandle<T>) -> AbortHandle {
        let abort = handle.abort_handle();
        let key = self.members.vacant_key();
        let notify = Arc::new(Notify {
            key,
            queued: AtomicBool::new(true),
            ready: self.ready.clone(),
        });
        let waker = Waker::from(notify.clone());
        self.members.insert(Member {
            handle,
            notify,
            waker,
        });
        // Queued so the first `join_next` polls it and hands the task its waker.
        self.ready.lock().keys.push_back(key);
        abort
    }

    /// Waits for the next task to finish and gives its output, or the [`JoinError`] of a task
    /// that panicked or was aborted; `None` if the set is empty. Tasks come out in the order they
    /// finished, not the order they were spawned.
    ///
    /// Cancel-safe: if the future is dropped before it completes, no output is lost (the task
    /// stays in the set).
    pub async fn join_next(&mut self) -> Option<Result<T, JoinError>> {
        poll_fn(|cx| self.poll_join_next(cx)).await
    }

    /// Polls for the next finished task, as [`join_next`](JoinSet::join_next) does: `Ready(None)`
    /// when the set is empty, `Pending` (with `cx`'s waker kept) when no task has finished yet.
    pub fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, JoinError>>> {
        loop {
            let key = {
                let mut r = self.ready.lock();
                match r.keys.pop_front() {
                    Some(k) => k,
                    None => {
                        if self.members.is_empty() {
                            return Poll::Ready(None);
                        }
                        crate::waker::store(&mut r.waker, cx);
                        return Poll::Pending;
                    }
                }
            };
            if let Some(out) = self.poll_member(key) {
                return Poll::Ready(Some(out));
            }
        }
    }

    /// The output of a task that has finished already, if any, without waiting: `None` when no
    /// task finished yet (or the set is empty).
    pub fn try_join_next(&mut self) -> Option<Result<T, JoinError>> {
        loop {
            let key = self.ready.lock().keys.pop_front()?;
            if let Some(out) = self.poll_member(key) {
                return Some(out);
            }
        }
    }

    /// Polls the member under `key` (popped from the ready queue) with its own waker; removes it
    /// and returns its result if its task finished.
    fn poll_member(&mut self, key: usize) -> Option<Result<T, JoinError>> {
        let member = self.members.get_mut(key)?;
        // Cleared before the poll, so a wake from here on queues the key again.
        member.notify.queued.store(false, Ordering::Release);
        let mut cx = Context::from_waker(&member.waker);
        match Pin::new(&mut member.handle).poll(&mut cx) {
            Poll::Ready(out) => {
                self.members.remove(key);
                Some(out)
            }
            Poll::Pending => None,
        }
    }

    /// Aborts every task in the set. They stay in it: `join_next` gives a cancelled
    /// [`JoinError`] for each (or the output of one that finished before the abort reached it).
    pub fn abort_all(&mut self) {
        for (_, m) in &self.members {
            m.handle.abort();
        }
    }

    /// Removes every task from the set without aborting it: they keep running, detached.
    pub fn detach_all(&mut self) {
        self.members.clear();
        self.ready.lock().keys.clear();
    }

    /// Aborts every task and waits until all have stopped, dropping their results.
    pub async fn shutdown(&mut self) {
        self.abort_all();
        while self.join_next().await.is_some() {}
    }

    /// Waits for every task and returns their outputs, in the order they finished (tokio's
    /// `JoinSet::join_all`). For outputs in spawn order, as asyncio's `gather` gives them, have
    /// each task return its index with its output and sort, or keep the [`JoinHandle`]s in a
    /// `Vec` and await them in turn.
    ///
    /// # Panics
    ///
    /// If a task panicked, with its panic (resumed); if a task was aborted. The tasks still in
    /// the set are then aborted, as the set is dropped.
    pub async fn join_all(mut self) -> Vec<T> {
        let mut outs = Vec::with_capacity(self.len());
        while let Some(res) = self.join_next().await {
            match res {
                Ok(v) => outs.push(v),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("JoinSet::join_all: {e}"),
            }
        }
        outs
    }
}

impl<T> Drop for JoinSet<T> {
    /// Aborts every task still in the set (their handles then detach).
    fn drop(&mut self) {
        self.abort_all();
    }
}

impl<T> Default for JoinSet<T> {
    fn default() -> JoinSet<T> {
        JoinSet::new()
    }
}

impl<T> fmt::Debug for JoinSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinSet").field("len", &self.len()).finish()
    }
}
