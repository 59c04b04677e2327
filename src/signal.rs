//! Unix signals as ring completions: [`signal`] and [`ctrl_c`], asyncio's
//! `loop.add_signal_handler` and tokio's `tokio::signal`.
//!
//! ```
//! use uring::signal::{signal, SIGUSR1};
//!
//! uring::run(async {
//!     // From now on no SIGUSR1 is lost: each one wakes `usr1` (a burst may wake it once).
//!     let mut usr1 = signal(SIGUSR1).unwrap();
//!     // As `kill -USR1 <pid>` from a shell would (this example runs as its own process).
//!     std::thread::spawn(|| {
//!         // SAFETY: kill(2) takes no pointer.
//!         unsafe { libc::kill(libc::getpid(), SIGUSR1) };
//!     });
//!     usr1.recv().await.unwrap();
//! });
//! ```
//!
//! # How a signal reaches a task
//!
//! The first [`signal`] for a signal number installs a handler for it with `sigaction`
//! (`SA_RESTART`), process-wide and for good. The handler does two async-signal-safe things:
//! it sets the signal's `pending` flag (an atomic) and writes 1 to an eventfd the process
//! keeps for signals. A [`Signal::recv`] that has nothing to report keeps an `IORING_OP_READ` of
//! that eventfd in flight on its runtime's ring, so the loop sleeps in `io_uring_enter` as for
//! any other op; the handler's write completes the read. The task that gets the completion
//! turns every `pending` flag it finds into a new *generation* of that signal and wakes every
//! listener of it, on every runtime and thread (wakers are `Send`; a runtime asleep in the kernel
//! is woken by its own eventfd). A listener reports a signal when the generation moved past the
//! last one it saw. No readiness polling, no thread of its own. `docs/architecture.md`
//! ("Signals") says why this and not a signalfd.
//!
//! Guarantees:
//!
//! - Whatever thread the kernel delivers the signal to (a runtime's, a `Pool` worker's, a
//!   blocking-pool thread, a thread of your own or of a C library), it wakes the listeners: the
//!   handler runs on that thread and only sets a flag and writes the eventfd. No signal mask is
//!   changed anywhere, so child processes inherit none.
//! - No signal is lost once [`signal`] has returned: a signal sent after that and before (or
//!   while) `recv` is polled makes the next `recv` complete. Several signals that arrive before a
//!   listener looks coalesce into one `recv` (as in tokio).
//! - Every listener of a signal is woken by it: several [`Signal`]s for one number in one task,
//!   in several tasks, or on several runtimes and threads each see it.
//!
//! # What installing a handler means
//!
//! Installing the handler replaces the signal's disposition for the whole process: after
//! `signal(SIGINT)` (or the first [`ctrl_c`]) Ctrl-C no longer terminates the process, it only
//! wakes the listeners, and the program decides what to do. A handler that was installed before
//! (by you or a library) is replaced and not called (no chaining). Dropping every [`Signal`]
//! restores nothing: the handler stays installed until the process exits, and signals that
//! arrive while nobody listens are ignored. This is tokio's behaviour too. `exec` resets the
//! handler to the default in the new program (the kernel does that for caught signals).
//!
//! Signal numbers are `libc`'s (`i32`); the common ones are re-exported here ([`SIGINT`],
//! [`SIGTERM`], ...). These are refused with [`InvalidInput`](std::io::ErrorKind::InvalidInput):
//! anything outside `1..=64`, `SIGKILL` and `SIGSTOP` (no handler can be installed), `SIGSEGV`,
//! `SIGBUS`, `SIGILL` and `SIGFPE` (a fault's handler that returns makes the faulting
//! instruction run again, forever; Rust's stack-overflow detection also owns `SIGSEGV` and
//! `SIGBUS`), and 32 and 33 (glibc keeps them for its threads).

use crate::driver::slot::Completion;
use crate::fd::SharedFd;
use crate::op::{Op, OpCode};
use crate::runtime::context;
use io_uring::{opcode, squeue};
use slab::Slab;
use std::cell::OnceCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Hangup (`kill -HUP`; a terminal closed).
pub const SIGHUP: i32 = libc::SIGHUP;
/// Interrupt: Ctrl-C in a terminal. [`ctrl_c`] listens for it.
pub const SIGINT: i32 = libc::SIGINT;
/// Quit: Ctrl-\ in a terminal.
pub const SIGQUIT: i32 = libc::SIGQUIT;
/// Termination: what `kill PID`, systemd and container runtimes send to stop a service.
pub const SIGTERM: i32 = libc::SIGTERM;
/// User-defined signal 1.
pub const SIGUSR1: i32 = libc::SIGUSR1;
/// User-defined signal 2.
pub const SIGUSR2: i32 = libc::SIGUSR2;
/// A child process stopped or exited.
pub const SIGCHLD: i32 = libc::SIGCHLD;
/// A write to a pipe or socket with no reader (Rust programs ignore it by default).
pub const SIGPIPE: i32 = libc::SIGPIPE;
/// A timer set with `alarm(2)` expired.
pub const SIGALRM: i32 = libc::SIGALRM;
/// The terminal window changed size.
pub const SIGWINCH: i32 = libc::SIGWINCH;

/// Signal numbers run from 1 to 64 on Linux; index 0 is unused.
const NSIG: usize = 65;

/// What the process knows about one signal number.
struct Entry {
    /// The handler is installed (set once, under `INSTALL`, never cleared).
    installed: AtomicBool,
    /// Set by the handler, taken by [`dispatch`].
    pending: AtomicBool,
    /// How many times [`dispatch`] found the signal pending. A listener has a signal to report
    /// when this moved past the value it saw last.
    generation: AtomicU64,
    /// One entry per live [`Signal`] of this number: the waker of its pending `recv`, if any.
    listeners: Mutex<Slab<Option<Waker>>>,
}

impl Entry {
    const fn new() -> Entry {
        Entry {
            installed: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            listeners: Mutex::new(Slab::new()),
        }
    }
}

static ENTRIES: [Entry; NSIG] = [const { Entry::new() }; NSIG];

/// The eventfd the handler writes (-1 until the first handler is installed). Never closed: a
/// handler may run at any time until the process exits.
static NOTIFY_FD: AtomicI32 = AtomicI32::new(-1);

/// Serializes installing handlers and creating `NOTIFY_FD`.
static INSTALL: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing is left half-done under these locks (a slab insert or remove, a flag).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The signal handler: sets the signal's flag and writes the eventfd. INV-signal: it does
/// nothing else (no allocation, no lock), and it keeps `errno` as it found it.
extern "C" fn handler(signum: libc::c_int) {
    // SAFETY: INV-signal: __errno_location returns this thread's errno, valid for the thread's
    // life; reading and restoring it is what makes the handler invisible to the code it
    // interrupted.
    let errno = unsafe { *libc::__errno_location() };
    if let Some(entry) = usize::try_from(signum).ok().and_then(|i| ENTRIES.get(i)) {
        entry.pending.store(true, Ordering::SeqCst);
    }
    let fd = NOTIFY_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: INV-signal: write(2) is async-signal-safe; it reads 8 bytes of a live u64 and
        // `fd` is the eventfd that is never closed. The counter cannot reach its maximum (2^64
        // - 2) in a process's life, so the write never blocks.
        let _ = unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
    }
    // SAFETY: INV-signal: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn check_signum(signum: i32) -> io::Result<usize> {
    let refuse = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("uring::signal::signal({signum}): {why}"),
        ))
    };
    match signum {
        libc::SIGKILL | libc::SIGSTOP => refuse("this signal cannot be caught"),
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE => {
            refuse("a fault signal cannot be handled by a listener")
        }
        32 | 33 => refuse("reserved by the C library for its threads"),
        1..=64 => Ok(signum as usize),
        _ => refuse("not a signal number (1 to 64)"),
    }
}

/// The eventfd the handlers write, created by the first [`install`].
fn notify_fd() -> io::Result<i32> {
    let fd = NOTIFY_FD.load(Ordering::Acquire);
    if fd >= 0 {
        return Ok(fd);
    }
    let _guard = lock(&INSTALL);
    notify_fd_locked()
}

/// [`notify_fd`] with `INSTALL` held: creates the eventfd if it does not exist yet.
fn notify_fd_locked() -> io::Result<i32> {
    let fd = NOTIFY_FD.load(Ordering::Acquire);
    if fd >= 0 {
        return Ok(fd);
    }
    // Blocking (no EFD_NONBLOCK): the ring then parks its read on the eventfd instead of failing
    // it with EAGAIN, as with the runtime's own wake eventfd.
    // SAFETY: INV-ffi: a plain syscall creating a new fd; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    NOTIFY_FD.store(fd, Ordering::Release);
    Ok(fd)
}

/// Installs the handler for `signum` if it is not installed yet.
fn install(signum: usize) -> io::Result<()> {
    let entry = &ENTRIES[signum];
    if entry.installed.load(Ordering::Acquire) {
        return Ok(());
    }
    let _guard = lock(&INSTALL);
    if entry.installed.load(Ordering::Acquire) {
        return Ok(());
    }
    // The eventfd exists before any handler that writes it.
    notify_fd_locked()?;
    // SAFETY: INV-ffi: sigaction reads the struct we own and fill; `handler` is an `extern "C"
    // fn(c_int)`, the shape a handler without SA_SIGINFO has, and does only what INV-signal
    // allows.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signum as libc::c_int, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EINVAL) {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("uring::signal::signal({signum}): {e}"),
            )
        } else {
            e
        });
    }
    entry.installed.store(true, Ordering::Release);
    Ok(())
}

/// Turns every pending signal into a new generation and wakes its listeners. Called by every
/// `recv` before it waits and whenever the eventfd read completes (also when nobody claims that
/// completion, so a read that took the eventfd's count can never swallow a signal).
fn dispatch() {
    let mut wake = Vec::new();
    for entry in &ENTRIES {
        if !entry.pending.load(Ordering::Relaxed) || !entry.pending.swap(false, Ordering::SeqCst) {
            continue;
        }
        entry.generation.fetch_add(1, Ordering::SeqCst);
        let mut listeners = lock(&entry.listeners);
        wake.extend(listeners.iter_mut().filter_map(|(_, w)| w.take()));
    }
    // Woken outside the locks: a waker may run foreign code.
    for w in wake {
        w.wake();
    }
}

/// Listens for one signal number: each [`recv`](Signal::recv) completes once the signal was
/// delivered since the previous one (or since [`signal`] made the listener). Made by [`signal`].
///
/// A `Signal` is `Send` and `Sync` and needs no runtime until `recv` is awaited: it may be made
/// in `main` before a [`Pool`](crate::Pool) starts and moved to a worker, so no signal sent
/// after that is missed by the worker. Dropping it unregisters the listener; the handler stays
/// installed (see the [module](self) docs).
pub struct Signal {
    signum: usize,
    key: usize,
    /// The generation of the signal this listener has reported (or saw when it was made).
    seen: u64,
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal")
            .field("signum", &self.signum)
            .finish()
    }
}

/// Starts listening for the signal `signum` (`SIGTERM`, `SIGHUP`, `SIGUSR1`, ...; the numbers of
/// `libc`), installing the process's handler for it on first use: tokio's
/// `tokio::signal::unix::signal`, asyncio's `loop.add_signal_handler`.
///
/// Every signal delivered after this returns is seen by the listener's next
/// [`recv`](Signal::recv); one delivered before the call is not (one racing with the call may
/// be). It may be called outside a runtime.
///
/// ```
/// use uring::signal::{signal, SIGUSR2};
///
/// uring::run(async {
///     let mut first = signal(SIGUSR2).unwrap();
///     let mut second = signal(SIGUSR2).unwrap();
///     // SAFETY: raise(3) takes no pointer.
///     unsafe { libc::raise(SIGUSR2) };
///     // Both listeners see it.
///     first.recv().await.unwrap();
///     second.recv().await.unwrap();
///     // Signals the kernel refuses to hand over, or that are not signals, are InvalidInput.
///     for bad in [libc::SIGKILL, libc::SIGSTOP, 0, 65] {
///         let err = signal(bad).unwrap_err();
///         assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
///     }
/// });
/// ```
///
/// # Errors
///
/// [`InvalidInput`](io::ErrorKind::InvalidInput) for a number that cannot be listened for (see
/// the [module](self) docs); the OS error if the eventfd cannot be created or `sigaction`
/// fails otherwise.
pub fn signal(signum: i32) -> io::Result<Signal> {
    let signum = check_signum(signum)?;
    install(signum)?;
    // Signals still pending from before go to the listeners that were there for them.
    dispatch();
    let entry = &ENTRIES[signum];
    let key = lock(&entry.listeners).insert(None);
    let seen = entry.generation.load(Ordering::SeqCst);
    Ok(Signal { signum, key, seen })
}

/// Waits for Ctrl-C (`SIGINT`): `signal(SIGINT)?.recv().await`, as tokio's
/// `tokio::signal::ctrl_c`.
///
/// The listener is made when the future is first polled: a `SIGINT` before that is not seen
/// (and, once the handler is installed, no longer terminates the process). For a program that
/// waits for Ctrl-C more than once, keep a `signal(SIGINT)` listener instead.
///
/// ```no_run
/// uring::run(async {
///     println!("press Ctrl-C to stop");
///     uring::signal::ctrl_c().await.unwrap();
///     println!("stopping");
/// });
/// ```
///
/// (`no_run`: it waits for a key press.)
///
/// # Errors
///
/// As [`signal`] and [`Signal::recv`].
pub async fn ctrl_c() -> io::Result<()> {
    signal(SIGINT)?.recv().await
}

impl Signal {
    /// The signal number this listener is for.
    pub fn signum(&self) -> i32 {
        self.signum as i32
    }

    /// Waits until the signal was delivered since the last `recv` completed (or since the
    /// listener was made), within a uring runtime.
    ///
    /// Several deliveries before a `recv` looks complete it once; none is lost. Cancel-safe:
    /// dropping the future loses no signal (the next `recv` reports it). The wait is a read on
    /// the ring, so it needs the runtime only when there is nothing to report yet.
    ///
    /// It returns `io::Result<()>`, not tokio's `Option<()>`: the wait is a ring op, and what can
    /// go wrong is an I/O error worth reporting as one (polled outside a uring runtime, or its
    /// runtime shut down and cancelled the read), where `None` would hide the reason. So
    /// `while let Some(()) = sig.recv().await` becomes `loop { sig.recv().await?; ... }`.
    ///
    /// # Errors
    ///
    /// [`Other`](io::ErrorKind::Other) when awaited outside a uring runtime with nothing to
    /// report; the read's error if it fails (`ECANCELED` once the runtime shut down).
    pub async fn recv(&mut self) -> io::Result<()> {
        Recv {
            signal: self,
            read: None,
        }
        .await
    }

    fn entry(&self) -> &'static Entry {
        &ENTRIES[self.signum]
    }

    /// Sets (or, with `None`, clears) the waker `dispatch` wakes for this listener.
    fn set_waker(&self, waker: Option<&Waker>) {
        let mut listeners = lock(&self.entry().listeners);
        if let Some(slot) = listeners.get_mut(self.key) {
            match (slot.as_ref(), waker) {
                (Some(old), Some(new)) if old.will_wake(new) => {}
                (_, new) => *slot = new.cloned(),
            }
        }
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        let mut listeners = lock(&self.entry().listeners);
        listeners.try_remove(self.key);
    }
}

/// The future of [`Signal::recv`]: the listener and, while it waits, the eventfd read.
struct Recv<'a> {
    signal: &'a mut Signal,
    read: Option<Op<NotifyRead>>,
}

impl Future for Recv<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // Registered before the generation is read: a dispatch on another thread either
            // bumped the generation before this lock (and the read below sees it), or wakes
            // this waker.
            this.signal.set_waker(Some(cx.waker()));
            dispatch();
            let generation = this.signal.entry().generation.load(Ordering::SeqCst);
            if generation != this.signal.seen {
                this.signal.seen = generation;
                this.signal.set_waker(None);
                return Poll::Ready(Ok(()));
            }
            let read = match &mut this.read {
                Some(read) => read,
                None => {
                    if context::try_current().is_none() {
                        this.signal.set_waker(None);
                        return Poll::Ready(Err(io::Error::other(
                            "uring::signal::Signal::recv must be awaited within a uring runtime \
                             (inside uring::run or Runtime::block_on)",
                        )));
                    }
                    let data = match NotifyRead::new() {
                        Ok(data) => data,
                        Err(e) => {
                            this.signal.set_waker(None);
                            return Poll::Ready(Err(e));
                        }
                    };
                    this.read.insert(Op::new(data))
                }
            };
            match Pin::new(read).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready((c, _data)) => {
                    this.read = None;
                    if c.result < 0 {
                        this.signal.set_waker(None);
                        return Poll::Ready(Err(io::Error::from_raw_os_error(-c.result)));
                    }
                    // The eventfd was written: look at the flags again.
                }
            }
        }
    }
}

impl Drop for Recv<'_> {
    fn drop(&mut self) {
        // A dropped read's completion still dispatches (`unclaimed`), so nothing is lost.
        self.signal.set_waker(None);
    }
}

thread_local! {
    /// This thread's duplicate of the eventfd, for its rings' reads (an `SharedFd` is not
    /// `Send`). Closed when the thread exits and the last read that names it is done.
    static LOCAL_FD: OnceCell<SharedFd> = const { OnceCell::new() };
}

/// A duplicate of the eventfd (the same file: reading it takes the same count).
fn dup_notify_fd() -> io::Result<SharedFd> {
    let fd = notify_fd()?;
    // SAFETY: INV-ffi: fcntl on the eventfd, which is never closed; the result is checked.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(SharedFd::new(dup))
}

fn local_fd() -> io::Result<SharedFd> {
    LOCAL_FD
        .try_with(|cell| {
            if let Some(fd) = cell.get() {
                return Ok(fd.clone());
            }
            let fd = dup_notify_fd()?;
            Ok(cell.get_or_init(|| fd).clone())
        })
        // The thread is exiting: a duplicate of its own.
        .unwrap_or_else(|_| dup_notify_fd())
}

/// `IORING_OP_READ` of 8 bytes from the signals' eventfd.
struct NotifyRead {
    fd: SharedFd,
    buf: Box<[u8; 8]>,
}

impl NotifyRead {
    fn new() -> io::Result<NotifyRead> {
        Ok(NotifyRead {
            fd: local_fd()?,
            buf: Box::new([0; 8]),
        })
    }
}

// SAFETY: INV-heap: the SQE points into `buf`, a box owned by `self` whose memory does not move
// when `self` does; INV-fd: it names `fd`, held open by `self`.
unsafe impl OpCode for NotifyRead {
    fn create_entry(&mut self) -> squeue::Entry {
        let target = self.fd.target();
        opcode::Read::new(target.fd, self.buf.as_mut_ptr(), 8)
            .build()
            .flags(target.flags)
    }

    fn unclaimed(&mut self, _c: Completion) {
        // The read may have taken the eventfd's count: make sure the signals it stood for reach
        // their listeners (dispatch only wakes wakers, which this hook may do).
        dispatch();
    }
}
