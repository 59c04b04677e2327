//! [`Child`]: a running child process, waited for on the ring, and the reaping of children
//! dropped before they were waited for.

use crate::blocking::{Closed, Receiver};
use crate::fd::SharedFd;
use crate::op::wait::{self, zeroed_siginfo, WaitId};
use crate::op::Op;
use crate::process::pipe::{shared_pipe, ChildStderr, ChildStdin, ChildStdout};
use crate::runtime::context;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::ExitStatus;
use std::task::{ready, Context, Poll, Waker};

/// A child process started by [`Command::spawn`](crate::process::Command::spawn).
///
/// Its piped stdio are the public fields [`stdin`](Child::stdin), [`stdout`](Child::stdout) and
/// [`stderr`](Child::stderr) (`None` unless spawned with
/// [`Stdio::piped`](crate::process::Stdio::piped)); take them out with `Option::take` to use them
/// from other tasks. [`wait`](Child::wait) is one ring operation, `IORING_OP_WAITID` on the
/// child's pidfd (Linux 6.7 and newer; before that a blocking `waitid` on the blocking pool), and
/// it reaps the child: no `SIGCHLD` handler, no zombie.
///
/// A `wait` future may be dropped at any point (inside a [`timeout`](crate::time::timeout), a
/// `select`): the operation stays with the `Child`, so the next `wait` or
/// [`try_wait`](Child::try_wait) picks it up and nothing is lost.
///
/// Dropping a `Child` does not stop the process, unless
/// [`kill_on_drop`](crate::process::Command::kill_on_drop) was set (then it is sent `SIGKILL`).
/// Either way it is still reaped once it exits: by a task on the current runtime that keeps a
/// `WAITID` in flight, or (outside a runtime, or when that runtime shuts down first) by a
/// blocking `waitid` on the blocking pool.
///
/// ```
/// use uring::process::{Command, Stdio};
///
/// uring::run(async {
///     let mut child = Command::new("sh")
///         .arg("-c")
///         .arg("read line; echo \"got $line\"")
///         .stdin(Stdio::piped())
///         .stdout(Stdio::piped())
///         .spawn()
///         .unwrap();
///     let stdin = child.stdin.take().unwrap();
///     stdin.write_all(b"hello\n".to_vec()).await.0.unwrap();
///     drop(stdin);
///     let mut out = Vec::new();
///     child.stdout.take().unwrap().read_to_end(&mut out).await.unwrap();
///     assert_eq!(out, b"got hello\n");
///     assert!(child.wait().await.unwrap().success());
/// });
/// ```
pub struct Child {
    pid: u32,
    /// `None`: the child had already exited and been reaped by something else (`SIGCHLD` set
    /// to `SIG_IGN`, a `waitpid(-1)` on another thread) when uring came to watch it. It ran,
    /// its pipes are there, but its status is gone and its pid may name another process now:
    /// nothing is ever sent to that pid.
    pidfd: Option<SharedFd>,
    /// Known once the child was reaped.
    status: Option<ExitStatus>,
    /// The wait in flight, kept here so that a dropped `wait` future loses nothing.
    waiter: Option<Waiter>,
    /// Whether waits go through `IORING_OP_WAITID` (else the blocking pool).
    ring_wait: bool,
    kill_on_drop: bool,
    /// The write end of the child's stdin, if it was spawned with `Stdio::piped()`.
    pub stdin: Option<ChildStdin>,
    /// The read end of the child's stdout, if it was spawned with `Stdio::piped()`.
    pub stdout: Option<ChildStdout>,
    /// The read end of the child's stderr, if it was spawned with `Stdio::piped()`.
    pub stderr: Option<ChildStderr>,
}

/// A wait in flight.
enum Waiter {
    /// `IORING_OP_WAITID` on the pidfd.
    Ring(Op<WaitId>),
    /// A blocking `waitid` on the blocking pool (kernels before 6.7). Its result comes back
    /// on a channel, not through a task of the runtime that started it, so it survives that
    /// runtime: a later `wait` on another one still gets the status.
    Pool(Receiver<io::Result<Option<ExitStatus>>>),
}

impl Child {
    /// Takes over a child std just spawned: opens its pidfd and takes its pipes.
    pub(crate) fn from_std(
        mut child: std::process::Child,
        kill_on_drop: bool,
    ) -> io::Result<Child> {
        let pid = child.id();
        let pidfd = match pidfd_open(pid) {
            // A pid is free for reuse once its process is reaped, which someone else may have
            // done before the pidfd was opened (SIGCHLD ignored, a `waitpid(-1)` on another
            // thread): the pidfd is kept only if it names a child of ours, or it could name an
            // unrelated process.
            Ok(fd) => match is_our_child(&fd) {
                Ok(ours) => ours.then_some(fd),
                Err(e) => {
                    // The pidfd names our child (pidfd_open found it) but cannot be waited on:
                    // stop it through the pidfd rather than leave it behind.
                    let _ = pidfd_kill(&fd);
                    let _ = child.wait();
                    return Err(e);
                }
            },
            // No such process: it exited and was reaped already.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => None,
            Err(e) => {
                // Without a pidfd there is no sound way to wait; do not leave the child behind.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let stdin = child.stdin.take().map(OwnedFd::from);
        let stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        let mut child = Child {
            pid,
            pidfd,
            status: None,
            waiter: None,
            ring_wait: wait::supported(),
            kill_on_drop,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        // On an error here, dropping `child` reaps (or kills) the process.
        child.stdin = stdin.map(shared_pipe).transpose()?.map(ChildStdin::new);
        child.stdout = stdout.map(shared_pipe).transpose()?.map(ChildStdout::new);
        child.stderr = stderr.map(shared_pipe).transpose()?.map(ChildStderr::new);
        Ok(child)
    }

    /// The child's process id, or `None` once it was reaped (by [`wait`](Child::wait) or
    /// [`try_wait`](Child::try_wait), or by something else before uring watched it, as under
    /// `SIGCHLD = SIG_IGN`): the number may then belong to another process.
    pub fn id(&self) -> Option<u32> {
        (self.status.is_none() && self.pidfd.is_some()).then_some(self.pid)
    }

    /// Waits for the child to exit and reaps it; closes [`stdin`](Child::stdin) first (as std
    /// and tokio do) so a child reading it sees end of file. Once the status is known, every
    /// later call returns it at once.
    ///
    /// Cancel-safe: dropping the future keeps the wait in flight inside the `Child`, and the
    /// next `wait` continues it.
    ///
    /// # Errors
    ///
    /// `ECHILD` if something else reaped the child (a `waitpid(-1)` elsewhere, or `SIGCHLD`
    /// set to `SIG_IGN`); `ECANCELED` if the runtime shut down.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        poll_fn(|cx| self.poll_wait(cx)).await
    }

    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<ExitStatus>> {
        if let Some(status) = self.status {
            return Poll::Ready(Ok(status));
        }
        let Some(pidfd) = &self.pidfd else {
            return Poll::Ready(Err(reaped_elsewhere()));
        };
        if self.waiter.is_none() {
            self.waiter = Some(if self.ring_wait {
                Waiter::Ring(wait::wait_id(pidfd))
            } else {
                match pool_wait(pidfd) {
                    Ok(h) => Waiter::Pool(h),
                    Err(e) => return Poll::Ready(Err(e)),
                }
            });
        }
        let res = match self.waiter.as_mut().expect("a waiter was just set") {
            Waiter::Ring(op) => {
                let (c, data) = ready!(Pin::new(op).poll(cx));
                if c.result < 0 {
                    Err(io::Error::from_raw_os_error(-c.result))
                } else {
                    Ok(exit_status(&data.info))
                }
            }
            Waiter::Pool(rx) => match ready!(Pin::new(rx).poll(cx)) {
                Ok(Ok(Some(status))) => Ok(status),
                Ok(Ok(None)) => Err(io::Error::other("waitid returned no child")),
                Ok(Err(e)) => Err(e),
                Err(Closed) => Err(io::Error::other(
                    "the blocking waitid did not run or panicked",
                )),
            },
        };
        self.waiter = None;
        if let Ok(status) = res {
            self.status = Some(status);
        }
        Poll::Ready(res)
    }

    /// The child's status if it has exited (and reaps it), `None` if it still runs. Does not
    /// block or wait.
    ///
    /// # Errors
    ///
    /// As [`wait`](Child::wait).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        if self.waiter.is_some() {
            // No `wait` future is alive (they borrow `self`): the waker the op holds is a
            // dropped one's, so looking with a no-op waker takes nothing from anyone.
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(res) = self.poll_wait(&mut cx) {
                return res.map(Some);
            }
        }
        let Some(pidfd) = &self.pidfd else {
            return Err(reaped_elsewhere());
        };
        match waitid(pidfd.as_raw_fd(), libc::WNOHANG) {
            Ok(Some(status)) => {
                self.status = Some(status);
                // Its wait, if any, now ends with ECHILD or its cancel: nothing to keep.
                self.waiter = None;
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            // The wait in flight reaped it; its completion has not been seen yet.
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) && self.waiter.is_some() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends `SIGKILL` to the child and returns without waiting (through its pidfd, so never
    /// to another process that took its number). `Ok` if it already exited.
    ///
    /// # Errors
    ///
    /// If the signal cannot be sent (`EPERM`).
    pub fn start_kill(&mut self) -> io::Result<()> {
        // Exited already; without a pidfd its pid may be another process's: nothing to send.
        let (None, Some(pidfd)) = (self.status, &self.pidfd) else {
            return Ok(());
        };
        match pidfd_kill(pidfd) {
            // Exited and reaped by the wait in flight, whose completion is on its way.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r,
        }
    }

    /// Sends `SIGKILL` and waits for the child to exit (tokio's `kill`); its status is then what
    /// [`wait`](Child::wait) returns (`signal() == Some(9)` unless it exited first).
    ///
    /// # Errors
    ///
    /// As [`start_kill`](Child::start_kill) and [`wait`](Child::wait).
    pub async fn kill(&mut self) -> io::Result<()> {
        self.start_kill()?;
        self.wait().await.map(drop)
    }

    /// Makes waits use the blocking pool even where the ring has `IORING_OP_WAITID` (the
    /// fallback's own tests).
    #[cfg(test)]
    pub(crate) fn wait_on_pool(&mut self) {
        self.ring_wait = false;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() || self.pidfd.is_none() {
            return;
        }
        if self.kill_on_drop {
            let _ = self.start_kill();
        }
        let ring = match self.waiter.take() {
            // Its blocking thread waits on, reaps the child and drops the status.
            Some(Waiter::Pool(handle)) => return drop(handle),
            Some(Waiter::Ring(op)) => Some(op),
            None => None,
        };
        if let Some(pidfd) = &self.pidfd {
            if let Ok(Some(_)) = waitid(pidfd.as_raw_fd(), libc::WNOHANG) {
                return;
            }
            reap_orphan(pidfd, ring, self.ring_wait);
        }
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.pid)
            .field("status", &self.status)
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish_non_exhaustive()
    }
}

/// `pidfd_send_signal(pidfd, SIGKILL)`: never reaches another process that took the number.
fn pidfd_kill(pidfd: &SharedFd) -> io::Result<()> {
    // SAFETY: INV-ffi: pidfd_send_signal on a pidfd the caller holds open, no siginfo pointer,
    // result checked.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `pidfd_open(pid, 0)`: an fd that names this process (and no later one with its number).
fn pidfd_open(pid: u32) -> io::Result<SharedFd> {
    // SAFETY: INV-ffi: a plain syscall without pointers, result checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(SharedFd::new(fd as RawFd))
}

/// A duplicate of the pidfd, to send to the blocking pool (a `SharedFd` stays on its thread).
fn dup_pidfd(pidfd: &SharedFd) -> io::Result<OwnedFd> {
    // SAFETY: INV-ffi: dup of an fd `pidfd` holds open, result checked.
    let fd = unsafe { libc::fcntl(pidfd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: INV-fd: `fd` is a new fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `waitid(P_PIDFD, pidfd, WEXITED | options)`: the status of the exited (and now reaped)
/// child, or `None` when `WNOHANG` found it running. `EINTR` is retried.
fn waitid(pidfd: RawFd, options: libc::c_int) -> io::Result<Option<ExitStatus>> {
    loop {
        let mut info = zeroed_siginfo();
        // SAFETY: INV-ffi: `info` lives through the call; the pidfd is held open by the caller.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd as libc::id_t,
                &mut info,
                libc::WEXITED | options,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: INV-siginfo: zeroed above, then filled by the kernel; si_pid is a plain int.
        let pid = unsafe { info.si_pid() };
        return Ok((pid != 0).then(|| exit_status(&info)));
    }
}

/// The fallback wait: a blocking `waitid` on the blocking pool, on a duplicate of the pidfd.
fn pool_wait(pidfd: &SharedFd) -> io::Result<Receiver<io::Result<Option<ExitStatus>>>> {
    let fd = dup_pidfd(pidfd)?;
    crate::blocking::run_detached(move || waitid(fd.as_raw_fd(), 0))
}

/// The status `waitid` wrote, as the wait status std's `ExitStatus` is made of: an exit code in
/// bits 8-15, a killing signal in bits 0-6 (with 0x80 for a core dump).
fn exit_status(info: &libc::siginfo_t) -> ExitStatus {
    // SAFETY: INV-siginfo: the siginfo was zeroed, then filled by the kernel (waitid's, or the
    // ring's after its CQE); si_status is a plain int at a fixed offset.
    let status = unsafe { info.si_status() };
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_KILLED => status & 0x7f,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        // Stopped or continued: not reported without WSTOPPED or WCONTINUED.
        _ => ((status & 0xff) << 8) | 0x7f,
    };
    ExitStatus::from_raw(raw)
}

/// Makes sure a child dropped before it was reaped is reaped once it exits. On a runtime with
/// `IORING_OP_WAITID`: a task that keeps the wait in flight (the `Child`'s own, if it had one);
/// it costs no thread. Elsewhere, or if that task is dropped first (its runtime shuts down), or
/// without the opcode: a blocking `waitid` on the blocking pool, which holds a pool thread until
/// the child exits.
fn reap_orphan(pidfd: &SharedFd, ring: Option<Op<WaitId>>, ring_wait: bool) {
    if ring_wait && context::try_current().is_some() {
        let orphan = Orphan {
            pidfd: pidfd.clone(),
            reaped: false,
        };
        let op = ring.unwrap_or_else(|| wait::wait_id(pidfd));
        drop(crate::spawn(async move {
            // The whole guard moves into the task (not just the field assigned below).
            let mut orphan = orphan;
            let (c, _) = op.await;
            // Reaped here, or by someone else.
            orphan.reaped = c.result >= 0 || c.result == -libc::ECHILD;
        }));
        return;
    }
    drop(ring);
    reap_on_pool(pidfd);
}

/// The reaping task's guard: if the task ends (or is dropped) without having reaped the child,
/// the blocking pool takes over.
struct Orphan {
    pidfd: SharedFd,
    reaped: bool,
}

impl Drop for Orphan {
    fn drop(&mut self) {
        if !self.reaped {
            reap_on_pool(&self.pidfd);
        }
    }
}

/// A blocking `waitid` for the child on the blocking pool, nobody awaiting it. If the pidfd
/// cannot be duplicated or no pool thread can start, the child stays a zombie until this
/// process exits (nothing else can be done without a thread or a runtime).
fn reap_on_pool(pidfd: &SharedFd) {
    if let Ok(fd) = dup_pidfd(pidfd) {
        let _ = crate::blocking::execute_detached(move || {
            let _ = waitid(fd.as_raw_fd(), 0);
        });
    }
}

/// Whether `pidfd` names a child of this process (exited or not), without reaping it:
/// `waitid(P_PIDFD, .., WNOHANG | WNOWAIT)` fails with `ECHILD` otherwise.
fn is_our_child(pidfd: &SharedFd) -> io::Result<bool> {
    match waitid(pidfd.as_raw_fd(), libc::WNOHANG | libc::WNOWAIT) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What `wait` and `try_wait` return for a child reaped by something else: `ECHILD`, as the
/// kernel answers a wait for it.
fn reaped_elsewhere() -> io::Error {
    io::Error::from_raw_os_error(libc::ECHILD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Command;

    #[test]
    fn a_pool_wait_keeps_the_status_when_its_runtime_is_gone() {
        let mut child = crate::run(async {
            let mut child = Command::new("sh")
                .args(["-c", "sleep 0.3; exit 7"])
                .spawn()
                .unwrap();
            child.wait_on_pool();
            // The wait starts (one poll) and its future is dropped: the blocking waitid stays
            // in flight inside the `Child`.
            let mut wait = Box::pin(child.wait());
            let noop = &mut Context::from_waker(Waker::noop());
            assert!(wait.as_mut().poll(noop).is_pending());
            drop(wait);
            child
        });
        // That runtime is gone; the pool thread reaps the child meanwhile, and its status waits
        // for the next `wait`, on another runtime.
        let status = crate::run(async move { child.wait().await.unwrap() });
        assert_eq!(status.code(), Some(7));
    }

    /// A child reaped before uring came to watch it (what `SIGCHLD = SIG_IGN` does at random):
    /// no pid, waits give `ECHILD`, a kill sends nothing, and the drop leaves nothing behind.
    #[test]
    fn a_child_reaped_elsewhere_first_has_no_pid_and_no_status() {
        crate::run(async {
            let mut std_child = std::process::Command::new("true").spawn().unwrap();
            std_child.wait().unwrap();
            let mut child = Child::from_std(std_child, true).unwrap();
            assert_eq!(child.id(), None);
            assert_eq!(
                child.try_wait().unwrap_err().raw_os_error(),
                Some(libc::ECHILD)
            );
            child.start_kill().unwrap();
            let e = child.wait().await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ECHILD));
        });
    }

    #[test]
    fn the_pool_fallback_waits_and_reaps() {
        crate::run(async {
            let mut child = Command::new("sh").args(["-c", "exit 5"]).spawn().unwrap();
            child.wait_on_pool();
            let status = child.wait().await.unwrap();
            assert_eq!(status.code(), Some(5));
            assert_eq!(child.id(), None);

            let mut child = Command::new("sleep").arg("100").spawn().unwrap();
            child.wait_on_pool();
            assert!(child.try_wait().unwrap().is_none());
            // A dropped wait keeps its blocking waitid; try_wait and wait pick it up.
            let early =
                crate::time::timeout(std::time::Duration::from_millis(20), child.wait()).await;
            assert!(early.is_err());
            child.start_kill().unwrap();
            let status = child.wait().await.unwrap();
            assert_eq!(status.signal(), Some(libc::SIGKILL));
        });
    }
}
