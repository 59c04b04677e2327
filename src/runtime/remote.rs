//! The cross-thread wake path: how a waker on another thread reaches a runtime.
//!
//! Each runtime has a [`Remote`]: a mutex-protected queue of woken tasks and an eventfd whose
//! read the loop keeps armed on its ring. A wake from another thread queues the task and writes
//! the eventfd; the read completes, which ends the loop's wait in `io_uring_enter`: the wake is a
//! completion like any other, with no readiness polling. Runtimes are found by id in
//! [`REMOTES`], so a task carries a 16-bit id instead of an `Arc` (which would cost every spawn
//! an atomic increment and 8 bytes).

use crate::runtime::context;
use crate::task::TaskRef;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Wake;

/// The part of a runtime that other threads reach through wakers.
pub(crate) struct Remote {
    queue: Mutex<Vec<TaskRef>>,
    /// Something is in `queue`, or the main future was woken from another thread.
    pending: AtomicBool,
    /// An eventfd write is on its way and not yet consumed by the loop.
    notified: AtomicBool,
    /// The runtime is gone: tasks woken now are dropped, not queued.
    closed: AtomicBool,
    /// Tasks other threads spawned on this runtime (bumped under the queue's lock).
    spawned: AtomicU64,
    eventfd: OwnedFd,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves nothing half-done: the data is a plain list.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Remote {
    /// A remote part with a new eventfd.
    pub(crate) fn new() -> io::Result<Remote> {
        // SAFETY: INV-ffi: plain syscall creating a new fd; the result is checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Remote {
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            notified: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            spawned: AtomicU64::new(0),
            // SAFETY: INV-fd: `efd` is a fresh fd that nothing else owns.
            eventfd: unsafe { OwnedFd::from_raw_fd(efd) },
        })
    }

    /// The eventfd the loop keeps a read armed on.
    pub(crate) fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Queues a task woken on another thread and wakes the loop.
    pub(crate) fn push(&self, task: TaskRef) {
        {
            let mut q = lock(&self.queue);
            if self.closed.load(Ordering::Acquire) {
                drop(q);
                drop(task);
                return;
            }
            q.push(task);
        }
        self.pending.store(true, Ordering::Release);
        self.notify();
    }

    /// Queues a task spawned on this runtime from another thread and wakes the loop; gives the
    /// task back if the runtime is gone (it never ran: the caller cancels it).
    pub(crate) fn push_new(&self, task: TaskRef) -> Result<(), TaskRef> {
        {
            let mut q = lock(&self.queue);
            if self.closed.load(Ordering::Acquire) {
                return Err(task);
            }
            q.push(task);
            self.spawned.fetch_add(1, Ordering::Relaxed);
        }
        self.pending.store(true, Ordering::Release);
        self.notify();
        Ok(())
    }

    /// Wakes the loop if it is (or is about to be) blocked in `io_uring_enter`: the eventfd write
    /// completes the read the loop keeps armed on its ring.
    pub(crate) fn notify(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: INV-ffi: writes 8 bytes from a live u64 to the eventfd this struct owns.
            let _ = unsafe {
                libc::write(
                    self.eventfd.as_raw_fd(),
                    &one as *const u64 as *const libc::c_void,
                    8,
                )
            };
        }
    }

    /// How many tasks other threads spawned on this runtime.
    pub(crate) fn spawned(&self) -> u64 {
        self.spawned.load(Ordering::Relaxed)
    }

    /// Whether a remote wake is waiting for the loop.
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Takes the tasks woken from other threads, if any.
    pub(crate) fn take_pending(&self) -> Option<Vec<TaskRef>> {
        if !self.is_pending() {
            return None;
        }
        self.pending.store(false, Ordering::Release);
        Some(std::mem::take(&mut *lock(&self.queue)))
    }

    /// The loop consumed the eventfd read: later wakes must write it again.
    pub(crate) fn rearm(&self) {
        // A swap, not a store: it synchronizes with the waker's swap that saw `true`, so the
        // `pending` flag that waker set before is visible to the next drain.
        self.notified.swap(false, Ordering::AcqRel);
    }

    /// The runtime is gone: from now on woken tasks are dropped. Returns those queued already.
    pub(crate) fn close(&self) -> Vec<TaskRef> {
        let mut q = lock(&self.queue);
        self.closed.store(true, Ordering::Release);
        std::mem::take(&mut *q)
    }
}

/// Every live runtime's remote part, by id. A runtime's id is its index here; a 16-bit id keeps
/// the task header at 16 bytes.
static REMOTES: Mutex<Vec<Option<Arc<Remote>>>> = Mutex::new(Vec::new());

/// The remote part of runtime `id`, if it is still running.
pub(crate) fn remote_of(id: u16) -> Option<Arc<Remote>> {
    lock(&REMOTES).get(id as usize).and_then(|r| r.clone())
}

/// Registers a new runtime's remote part and returns its id: the lowest free one.
pub(crate) fn register(remote: Arc<Remote>) -> io::Result<u16> {
    let mut remotes = lock(&REMOTES);
    let id = match remotes.iter().position(Option::is_none) {
        Some(free) => free,
        None => {
            remotes.push(None);
            remotes.len() - 1
        }
    };
    let Ok(id16) = u16::try_from(id) else {
        remotes.truncate(id);
        return Err(io::Error::other(
            "too many uring runtimes at once in this process (at most 65536)",
        ));
    };
    remotes[id] = Some(remote);
    Ok(id16)
}

/// Frees runtime `id` for the next runtime (see the task header's `owner`).
pub(crate) fn unregister(id: u16) {
    let gone = lock(&REMOTES).get_mut(id as usize).and_then(|r| r.take());
    drop(gone);
}

/// Wakes the future given to `block_on`.
pub(crate) struct MainWake {
    woken: AtomicBool,
    remote: Arc<Remote>,
}

impl MainWake {
    /// A waker state for a main future, which starts out woken (it is polled first thing).
    pub(crate) fn new(remote: Arc<Remote>) -> MainWake {
        MainWake {
            woken: AtomicBool::new(true),
            remote,
        }
    }

    /// Whether the main future was woken since the last call (and clears it).
    pub(crate) fn take_woken(&self) -> bool {
        // A load first: the swap is a locked instruction, and most turns find no wake.
        self.woken.load(Ordering::Acquire) && self.woken.swap(false, Ordering::AcqRel)
    }

    /// Whether the main future was woken and not yet polled.
    pub(crate) fn is_woken(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }
}

impl Wake for MainWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let here =
            context::with_current(|s| s.is_some_and(|s| Arc::ptr_eq(&s.remote, &self.remote)));
        if !here {
            self.remote.pending.store(true, Ordering::Release);
            self.remote.notify();
        }
    }
}
