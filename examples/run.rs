//! `run`: runs shell commands concurrently, a small `xargs -P`, on `uring::process`.
//!
//! ```text
//! cargo run --example run -- -P 2 'echo one' 'sleep 1; echo two >&2' 'exit 7'
//! printf 'echo a\necho b\n' | cargo run --example run -- -P 4
//! ```
//!
//! Each command is one `sh -c` string; with none on the command line, they are read from stdin,
//! one per line (blank lines skipped). At most N run at once (`-P N`, default: the number of
//! CPUs). Each line a command writes to stdout or stderr is copied, as soon as it is complete, to
//! this program's stdout or stderr prefixed with the command's index, counting from 1 in the
//! order given: `[3] line`. The exit code is that of the first command to fail (in the order they
//! finished; 128 + N for a command killed by signal N, 127 for one that could not be started), 0
//! if all succeeded.
//!
//! Children are spawned with `uring::process::Command`, their pipes read on the ring and their
//! exits awaited with `IORING_OP_WAITID`. The prefixed lines are written to this program's own
//! stdout and stderr with std's blocking writes, one `write_all` per batch of complete lines (so
//! lines of different commands never mix): a reader that stops reading stops the program, which
//! is the back-pressure `xargs` has too.

use std::cell::Cell;
use std::io::{BufRead, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::rc::Rc;
use uring::process::{ChildStderr, ChildStdout, Command, Stdio};

const USAGE: &str = "usage: run [-P N] [CMD...]
  Runs each CMD with `sh -c CMD`, at most N at once (-P N, --max-procs N; default: the number of
  CPUs). With no CMD, reads the commands from stdin, one per line (blank lines skipped).
  Each line a command prints goes to stdout or stderr (where the command wrote it) prefixed with
  the command's index, from 1 in the order given: `[3] line`.
  Exit code: the first failure's (in the order commands finished; 128+N when killed by signal N,
  127 when a command could not be started), 0 when all succeeded.";

fn main() -> ExitCode {
    let mut limit = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut commands: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    let mut options = true;
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" if options => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--" if options => options = false,
            "-P" | "--max-procs" if options => {
                limit = match args.next().and_then(|n| n.parse().ok()) {
                    Some(n) if n > 0 => n,
                    _ => return usage("-P needs a positive number"),
                }
            }
            _ if options && a.starts_with("-P") => match a[2..].parse() {
                Ok(n) if n > 0 => limit = n,
                _ => return usage("-P needs a positive number"),
            },
            _ if options && a.starts_with('-') && a.len() > 1 => {
                return usage(&format!("unknown option {a:?}"));
            }
            _ => {
                options = false;
                commands.push(a);
            }
        }
    }
    if commands.is_empty() {
        // Read before anything runs: blocking here stalls nothing.
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim().is_empty() => {}
                Ok(l) => commands.push(l),
                Err(e) => {
                    eprintln!("run: reading commands from stdin: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    let code = uring::run(run_all(commands, limit));
    ExitCode::from(code)
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("run: {msg}\n{USAGE}");
    ExitCode::from(2)
}

/// Runs every command, at most `limit` at once; the first failure's exit code, or 0.
async fn run_all(commands: Vec<String>, limit: usize) -> u8 {
    let commands = Rc::new(commands);
    let next = Rc::new(Cell::new(0usize));
    let first_failure: Rc<Cell<Option<u8>>> = Rc::new(Cell::new(None));
    // `limit` workers, each taking the next command when it finished one.
    let workers: Vec<_> = (0..limit.min(commands.len()))
        .map(|_| {
            let (commands, next, first_failure) =
                (commands.clone(), next.clone(), first_failure.clone());
            uring::spawn(async move {
                loop {
                    let i = next.get();
                    if i >= commands.len() {
                        break;
                    }
                    next.set(i + 1);
                    let code = run_one(i + 1, &commands[i]).await;
                    if code != 0 && first_failure.get().is_none() {
                        first_failure.set(Some(code));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("a worker panicked");
    }
    first_failure.get().unwrap_or(0)
}

/// Runs command number `index`, streaming its output; its exit code as a shell reports it.
async fn run_one(index: usize, command: &str) -> u8 {
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            eprintln!("[{index}] run: cannot start sh: {e}");
            return 127;
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let errors = uring::spawn(async move { stream_err(index, stderr).await });
    stream_out(index, stdout).await;
    errors.await.expect("stderr task");
    match child.wait().await {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => code as u8,
            (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
            (None, None) => 1,
        },
        Err(e) => {
            eprintln!("[{index}] run: waiting for the command: {e}");
            1
        }
    }
}

async fn stream_out(index: usize, pipe: ChildStdout) {
    let mut lines = Lines::new(index);
    loop {
        let (res, buf) = pipe.read(Vec::with_capacity(64 * 1024)).await;
        match res {
            Ok(0) => break,
            Ok(_) => lines.push(&buf, &mut std::io::stdout().lock()),
            Err(e) => {
                eprintln!("[{index}] run: reading stdout: {e}");
                break;
            }
        }
    }
    lines.finish(&mut std::io::stdout().lock());
}

async fn stream_err(index: usize, pipe: ChildStderr) {
    let mut lines = Lines::new(index);
    loop {
        let (res, buf) = pipe.read(Vec::with_capacity(64 * 1024)).await;
        match res {
            Ok(0) => break,
            Ok(_) => lines.push(&buf, &mut std::io::stderr().lock()),
            Err(e) => {
                eprintln!("[{index}] run: reading stderr: {e}");
                break;
            }
        }
    }
    lines.finish(&mut std::io::stderr().lock());
}

/// Cuts a stream into lines and writes each complete one with its command's prefix.
struct Lines {
    prefix: String,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
}

impl Lines {
    fn new(index: usize) -> Lines {
        Lines {
            prefix: format!("[{index}] "),
            partial: Vec::new(),
        }
    }

    /// Takes the next bytes of the stream; writes the lines they complete in one `write_all`.
    fn push(&mut self, bytes: &[u8], out: &mut impl Write) {
        let mut batch = Vec::new();
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            batch.extend_from_slice(self.prefix.as_bytes());
            batch.append(&mut self.partial);
            batch.extend_from_slice(&rest[..=nl]);
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        if !batch.is_empty() {
            // A closed stdout (`run ... | head`) ends nothing here: the commands run on.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
        }
    }

    /// The stream ended: a last line without a newline is written with one.
    fn finish(self, out: &mut impl Write) {
        if !self.partial.is_empty() {
            let mut batch = self.prefix.into_bytes();
            batch.extend_from_slice(&self.partial);
            batch.push(b'\n');
            let _ = out.write_all(&batch).and_then(|()| out.flush());
        }
    }
}
