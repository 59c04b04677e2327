//! Child processes: [`Command`] builds and spawns one, [`Child`] waits for it on the ring, and
//! its piped stdio ([`ChildStdin`], [`ChildStdout`], [`ChildStderr`]) read and write with owned
//! buffers on the ring. asyncio's `create_subprocess_exec`, tokio's `process`.
//!
//! ```
//! use uring::process::Command;
//!
//! uring::run(async {
//!     let out = Command::new("sh")
//!         .args(["-c", "echo hi; exit 3"])
//!         .output()
//!         .await
//!         .unwrap();
//!     assert_eq!(out.stdout, b"hi\n");
//!     assert_eq!(out.status.code(), Some(3));
//! });
//! ```
//!
//! How it works, and what it costs:
//!
//! - Spawning is std's: [`Command`] wraps a [`std::process::Command`], whose `spawn` starts the
//!   child with `posix_spawn` or `fork`/`exec` (a few syscalls on the calling thread, as in
//!   tokio; nothing waits for readiness). The child's pipe ends are then taken from std's
//!   `Child`, kept in blocking mode (the ring waits for them), and std's `Child` is left behind.
//! - Each child gets a pidfd (`pidfd_open`, Linux 5.3), which names that process and never a
//!   later one with the same number: every wait and signal goes through it.
//! - Waiting is `IORING_OP_WAITID` on the pidfd (Linux 6.7): one SQE, one CQE when the child
//!   exits, the child reaped by the kernel as it completes. Before 6.7, a blocking `waitid` on a
//!   duplicate of the pidfd runs on the blocking pool (as [`spawn_blocking`](crate::spawn_blocking)
//!   closures do), its status sent back on a channel rather than through a task, so a wait left
//!   in flight when its runtime is dropped still hands the status to the next `wait`.
//!   No `SIGCHLD` handler is installed either way, so the process's signal dispositions are left
//!   alone (a program that sets `SIGCHLD` to `SIG_IGN` makes the kernel reap its children
//!   itself, and waits then fail with `ECHILD`, as with std). A child that exits and is reaped
//!   that way before its pidfd is open is still spawned: its pipes work, `id()` is `None`, waits
//!   fail with `ECHILD`, and nothing is ever signalled by its number.
//! - A [`Child`] dropped before it was reaped is still reaped: see [`Child`].
//! - [`ExitStatus`] and [`Output`] are std's (`std::process`).
//!
//! `Child` and the pipes are not `Send`: like the crate's sockets they belong to the runtime
//! (thread) that made them.

mod child;
mod pipe;

pub use child::Child;
pub use pipe::{ChildStderr, ChildStdin, ChildStdout};

use std::ffi::OsStr;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::pin::pin;
use std::process::{ExitStatus, Output};
use std::task::Poll;

/// What a child's stdin, stdout or stderr is connected to: a new pipe to this process
/// ([`piped`](Stdio::piped)), `/dev/null` ([`null`](Stdio::null)), this process's own
/// ([`inherit`](Stdio::inherit)), or an fd given to the child ([`From<OwnedFd>`], [`From<File>`],
/// e.g. another child's pipe through [`ChildStdout::into_owned_fd`]).
///
/// [`From<File>`]: std::fs::File
pub struct Stdio(Kind);

enum Kind {
    Inherit,
    Null,
    Piped,
    Fd(OwnedFd),
}

impl Stdio {
    /// A new pipe between the child and this process: the `Child`'s `stdin`, `stdout` or
    /// `stderr` field holds this end.
    pub fn piped() -> Stdio {
        Stdio(Kind::Piped)
    }

    /// `/dev/null`: the child reads end of file, its writes are dropped.
    pub fn null() -> Stdio {
        Stdio(Kind::Null)
    }

    /// This process's own stdin, stdout or stderr.
    pub fn inherit() -> Stdio {
        Stdio(Kind::Inherit)
    }

    /// std's equivalent, made anew for each spawn (an fd is duplicated, so one `Command` can
    /// spawn many children).
    fn to_std(&self) -> io::Result<std::process::Stdio> {
        Ok(match &self.0 {
            Kind::Inherit => std::process::Stdio::inherit(),
            Kind::Null => std::process::Stdio::null(),
            Kind::Piped => std::process::Stdio::piped(),
            Kind::Fd(fd) => std::process::Stdio::from(fd.try_clone()?),
        })
    }
}

impl From<OwnedFd> for Stdio {
    /// The child gets (a duplicate of) this fd.
    fn from(fd: OwnedFd) -> Stdio {
        Stdio(Kind::Fd(fd))
    }
}

impl From<std::fs::File> for Stdio {
    /// The child gets (a duplicate of) this file's fd.
    fn from(file: std::fs::File) -> Stdio {
        Stdio(Kind::Fd(file.into()))
    }
}

impl fmt::Debug for Stdio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Inherit => f.write_str("Stdio::inherit()"),
            Kind::Null => f.write_str("Stdio::null()"),
            Kind::Piped => f.write_str("Stdio::piped()"),
            Kind::Fd(fd) => write!(f, "Stdio::from({fd:?})"),
        }
    }
}

/// A process builder with std's shape: program, arguments, environment, working directory and
/// stdio, then [`spawn`](Command::spawn), [`output`](Command::output) or
/// [`status`](Command::status). One `Command` may spawn many children.
///
/// By default `spawn` and `status` give the child this process's stdin, stdout and stderr;
/// `output` gives it `/dev/null` as stdin and captures stdout and stderr (std's defaults); what
/// [`stdin`](Command::stdin), [`stdout`](Command::stdout) and [`stderr`](Command::stderr) set
/// replaces the default.
///
/// ```
/// use uring::process::{Command, Stdio};
///
/// uring::run(async {
///     let mut child = Command::new("sh")
///         .args(["-c", "echo \"$GREETING from $PWD\""])
///         .env("GREETING", "hello")
///         .current_dir("/")
///         .stdout(Stdio::piped())
///         .spawn()
///         .unwrap();
///     let (res, buf) = child.stdout.take().unwrap().read(Vec::with_capacity(64)).await;
///     res.unwrap();
///     assert_eq!(buf, b"hello from /\n");
///     assert!(child.wait().await.unwrap().success());
/// });
/// ```
pub struct Command {
    std: std::process::Command,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    kill_on_drop: bool,
}

impl Command {
    /// A command running `program` (looked up in `PATH` unless it contains a `/`), with no
    /// arguments, this process's environment and working directory.
    pub fn new<S: AsRef<OsStr>>(program: S) -> Command {
        Command::from(std::process::Command::new(program))
    }

    /// Adds an argument.
    pub fn arg<S: AsRef<OsStr>>(&mut self, arg: S) -> &mut Command {
        self.std.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.std.args(args);
        self
    }

    /// Sets an environment variable for the child.
    pub fn env<K: AsRef<OsStr>, V: AsRef<OsStr>>(&mut self, key: K, val: V) -> &mut Command {
        self.std.env(key, val);
        self
    }

    /// Sets environment variables for the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.std.envs(vars);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove<K: AsRef<OsStr>>(&mut self, key: K) -> &mut Command {
        self.std.env_remove(key);
        self
    }

    /// Starts the child with an empty environment (plus what [`env`](Command::env) sets).
    pub fn env_clear(&mut self) -> &mut Command {
        self.std.env_clear();
        self
    }

    /// Sets the child's working directory.
    pub fn current_dir<P: AsRef<Path>>(&mut self, dir: P) -> &mut Command {
        self.std.current_dir(dir);
        self
    }

    /// What the child's stdin is (see [`Stdio`]).
    pub fn stdin<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Command {
        self.stdin = Some(cfg.into());
        self
    }

    /// What the child's stdout is (see [`Stdio`]).
    pub fn stdout<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Command {
        self.stdout = Some(cfg.into());
        self
    }

    /// What the child's stderr is (see [`Stdio`]).
    pub fn stderr<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Command {
        self.stderr = Some(cfg.into());
        self
    }

    /// Whether dropping the [`Child`] before it was reaped sends it `SIGKILL` (default `false`:
    /// the child runs on, and is reaped once it exits). The `Child`s of
    /// [`output`](Command::output) and [`status`](Command::status) are covered too: dropping
    /// their future kills the child.
    pub fn kill_on_drop(&mut self, kill_on_drop: bool) -> &mut Command {
        self.kill_on_drop = kill_on_drop;
        self
    }

    /// The std command inside, for what std has and this does not (`CommandExt`: `uid`,
    /// `process_group`, `pre_exec`, ...). Its stdio settings are not used: those of this
    /// `Command` replace them at each spawn.
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.std
    }

    /// The std command inside.
    pub fn as_std(&self) -> &std::process::Command {
        &self.std
    }

    /// Starts the child. Its piped stdio are in the [`Child`]'s fields.
    ///
    /// # Errors
    ///
    /// `NotFound` if the program does not exist, `PermissionDenied` if it cannot be executed,
    /// and whatever else std's `spawn` or `pidfd_open` report (`EMFILE`, `EAGAIN`).
    pub fn spawn(&mut self) -> io::Result<Child> {
        self.spawn_with([Kind::Inherit, Kind::Inherit, Kind::Inherit])
    }

    fn spawn_with(&mut self, defaults: [Kind; 3]) -> io::Result<Child> {
        let [stdin, stdout, stderr] = defaults.map(Stdio);
        let pick = |set: &Option<Stdio>, default: &Stdio| set.as_ref().unwrap_or(default).to_std();
        self.std.stdin(pick(&self.stdin, &stdin)?);
        self.std.stdout(pick(&self.stdout, &stdout)?);
        self.std.stderr(pick(&self.stderr, &stderr)?);
        let child = self.std.spawn()?;
        Child::from_std(child, self.kill_on_drop)
    }

    /// Runs the child to its end and gives its status and what it wrote: stdout and stderr are
    /// captured and stdin is `/dev/null` unless set otherwise (std's defaults). The child is
    /// spawned at once, when this is called; the future reads both pipes and waits.
    ///
    /// # Errors
    ///
    /// As [`spawn`](Command::spawn), or the first read or wait error.
    pub fn output(&mut self) -> impl Future<Output = io::Result<Output>> + 'static {
        let child = self.spawn_with([Kind::Null, Kind::Piped, Kind::Piped]);
        async move {
            let mut child = child?;
            let stdout = child.stdout.take();
            let stderr = child.stderr.take();
            let (out, err, status) = join3(
                read_all(stdout.as_ref().map(ChildStdout::pipe)),
                read_all(stderr.as_ref().map(ChildStderr::pipe)),
                child.wait(),
            )
            .await;
            Ok(Output {
                status: status?,
                stdout: out?,
                stderr: err?,
            })
        }
    }

    /// Runs the child to its end and gives its status. Its stdio are this process's unless set
    /// otherwise; pipes asked for are closed at once.
    ///
    /// # Errors
    ///
    /// As [`spawn`](Command::spawn) and [`Child::wait`].
    pub fn status(&mut self) -> impl Future<Output = io::Result<ExitStatus>> + 'static {
        let child = self.spawn();
        async move {
            let mut child = child?;
            drop(child.stdout.take());
            drop(child.stderr.take());
            child.wait().await
        }
    }
}

impl From<std::process::Command> for Command {
    /// Takes a std command as it is configured, but for its stdio (see
    /// [`as_std_mut`](Command::as_std_mut)).
    fn from(std: std::process::Command) -> Command {
        Command {
            std,
            stdin: None,
            stdout: None,
            stderr: None,
            kill_on_drop: false,
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("std", &self.std)
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .field("kill_on_drop", &self.kill_on_drop)
            .finish()
    }
}

/// Reads a captured pipe to its end (nothing if there is no pipe).
async fn read_all(pipe: Option<&crate::net::conn::PipeReader>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(pipe) = pipe {
        pipe::read_to_end(pipe, &mut out).await?;
    }
    Ok(out)
}

/// Runs three futures at once on this task; their outputs once all are done.
async fn join3<A: Future, B: Future, C: Future>(
    a: A,
    b: B,
    c: C,
) -> (A::Output, B::Output, C::Output) {
    let (mut a, mut b, mut c) = (pin!(a), pin!(b), pin!(c));
    let (mut ra, mut rb, mut rc) = (None, None, None);
    poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if rc.is_none() {
            if let Poll::Ready(v) = c.as_mut().poll(cx) {
                rc = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() && rc.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (
        ra.expect("polled to the end"),
        rb.expect("polled to the end"),
        rc.expect("polled to the end"),
    )
}
