//! `cp`: copies a file or a directory tree with many reads and writes in flight, all through
//! io_uring.
//!
//! ```text
//! cargo run --release --example cp -- [--depth N] [--chunk BYTES] [--quiet] SRC DST
//! ```
//!
//! * `--depth N` (default 32): how many chunk copies (a read, then its write) are in flight at
//!   once, across files: N worker tasks each take the next chunk of the next file.
//! * `--chunk BYTES` (default 1 MiB): the size of each read and write.
//! * `--plain-buffers`: use ordinary heap buffers instead of registered ones (see below).
//!
//! Each worker owns one buffer for the whole copy, taken from a `uring::buf::FixedBufPool`
//! registered with the ring, so its reads and writes are `IORING_OP_READ_FIXED`/`WRITE_FIXED`
//! (the kernel maps the buffers' pages once instead of on every op). Registered memory counts
//! against `RLIMIT_MEMLOCK` (depth x chunk bytes, 32 MiB by default): if the kernel refuses it,
//! cp says so on stderr and copies with plain buffers.
//!
//! Like `cp -r`: if DST is an existing directory, SRC is copied into it under its own name.
//! Regular files, directories and symlinks are copied; permission bits are preserved. Every
//! read must return exactly the bytes asked for and every write must take them all
//! (`read_exact_at`/`write_all_at`), and each copied file's final size is checked with statx;
//! anything short or any error stops the copy with a message and exit status 1.
//!
//! File data only moves through the ring (`IORING_OP_READ`/`WRITE`), as do opens, statx and
//! closes. io_uring has no `getdents` op, so the directory tree is listed with
//! `std::fs::read_dir` (names and types only, never file data); symlink targets are read with
//! `readlink(2)` and directory permissions set with `chmod(2)`, which have no io_uring op either.
//! Progress (bytes/s and files/s) goes to stderr when stderr is a terminal.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};
use uring::buf::{FixedBuf, FixedBufPool, IoBufMut};
use uring::fs::{File, OpenOptions};

struct Args {
    depth: usize,
    chunk: usize,
    plain_buffers: bool,
    quiet: bool,
    src: PathBuf,
    dst: PathBuf,
}

fn usage() -> String {
    "usage: cp [--depth N] [--chunk BYTES] [--plain-buffers] [--quiet] SRC DST".to_string()
}

fn parse_args() -> Result<Args, String> {
    let mut depth = 32;
    let mut chunk = 1 << 20;
    let mut quiet = false;
    let mut plain_buffers = false;
    let mut paths = Vec::new();
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--depth") | Some("-d") => {
                let v = it.next().ok_or_else(usage)?;
                depth = v
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .filter(|&d: &usize| d > 0)
                    .ok_or_else(|| format!("--depth wants a positive number, got {v:?}"))?;
            }
            Some("--chunk") => {
                let v = it.next().ok_or_else(usage)?;
                chunk = v
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .filter(|&c: &usize| c > 0 && c <= 1 << 30)
                    .ok_or_else(|| format!("--chunk wants 1..=1073741824 bytes, got {v:?}"))?;
            }
            Some("--quiet") | Some("-q") => quiet = true,
            Some("--plain-buffers") => plain_buffers = true,
            Some("-h") | Some("--help") => return Err(usage()),
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("unknown option {s}\n{}", usage()))
            }
            _ => paths.push(PathBuf::from(a)),
        }
    }
    if paths.len() != 2 {
        return Err(usage());
    }
    let dst = paths.pop().expect("two paths");
    let src = paths.pop().expect("two paths");
    Ok(Args {
        depth,
        chunk,
        plain_buffers,
        quiet,
        src,
        dst,
    })
}

/// One regular file to copy.
struct Job {
    src: PathBuf,
    dst: PathBuf,
}

/// A file being copied: both ends open, chunks handed out in order.
struct Open {
    job: usize,
    src: File,
    dst: File,
    size: u64,
    mode: u32,
    next: Cell<u64>,
    chunks_left: Cell<u64>,
}

struct Shared {
    jobs: Vec<Job>,
    next_job: Cell<usize>,
    /// Files with chunks not yet handed out.
    open: RefCell<VecDeque<Rc<Open>>>,
    chunk: u64,
    error: RefCell<Option<String>>,
    bytes: Cell<u64>,
    files: Cell<u64>,
}

enum Work {
    Chunk(Rc<Open>, u64, usize),
    NewFile(usize),
    Done,
}

impl Shared {
    fn claim(&self) -> Work {
        if self.error.borrow().is_some() {
            return Work::Done;
        }
        let mut open = self.open.borrow_mut();
        while let Some(f) = open.front() {
            let off = f.next.get();
            if off < f.size {
                let len = (f.size - off).min(self.chunk);
                f.next.set(off + len);
                return Work::Chunk(f.clone(), off, len as usize);
            }
            open.pop_front();
        }
        let i = self.next_job.get();
        if i < self.jobs.len() {
            self.next_job.set(i + 1);
            Work::NewFile(i)
        } else {
            Work::Done
        }
    }

    fn fail(&self, msg: String) {
        let mut e = self.error.borrow_mut();
        if e.is_none() {
            *e = Some(msg);
        }
    }
}

/// Opens both ends of job `i`; the destination gets the source's permission bits.
async fn open_job(shared: &Shared, i: usize) -> Result<Rc<Open>, String> {
    let job = &shared.jobs[i];
    let src = File::open(&job.src)
        .await
        .map_err(|e| format!("cannot open {}: {e}", job.src.display()))?;
    let meta = src
        .metadata()
        .await
        .map_err(|e| format!("cannot stat {}: {e}", job.src.display()))?;
    let mode = meta.permissions().mode();
    let dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&job.dst)
        .await
        .map_err(|e| format!("cannot create {}: {e}", job.dst.display()))?;
    let size = meta.len();
    Ok(Rc::new(Open {
        job: i,
        src,
        dst,
        size,
        mode,
        next: Cell::new(0),
        chunks_left: Cell::new(size.div_ceil(shared.chunk)),
    }))
}

/// The last chunk of a file is written: set its mode exactly (the umask may have narrowed the
/// open's mode) and check its size.
async fn finish_file(shared: &Shared, f: &Open) -> Result<(), String> {
    let job = &shared.jobs[f.job];
    // SAFETY: plain syscall on an fd `f.dst` keeps open. io_uring has no fchmod op.
    if unsafe { libc::fchmod(f.dst.as_raw_fd(), f.mode) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("cannot set the mode of {}: {e}", job.dst.display()));
    }
    let len = f
        .dst
        .metadata()
        .await
        .map_err(|e| format!("cannot stat {}: {e}", job.dst.display()))?
        .len();
    if len != f.size {
        return Err(format!(
            "{} is {len} bytes after the copy, expected {}",
            job.dst.display(),
            f.size
        ));
    }
    shared.files.set(shared.files.get() + 1);
    Ok(())
}

/// A worker's buffer: registered (a `FixedBuf`) or a plain `Vec`.
trait ChunkBuf: IoBufMut {
    /// Empties it for the next read.
    fn reset(&mut self);
}

impl ChunkBuf for Vec<u8> {
    fn reset(&mut self) {
        self.clear();
    }
}

impl ChunkBuf for FixedBuf {
    fn reset(&mut self) {
        self.clear();
    }
}

async fn worker<B: ChunkBuf>(shared: Rc<Shared>, mut buf: B) {
    loop {
        let (f, off, len) = match shared.claim() {
            Work::Done => return,
            Work::NewFile(i) => match open_job(&shared, i).await {
                Ok(f) => {
                    if f.size == 0 {
                        if let Err(e) = finish_file(&shared, &f).await {
                            shared.fail(e);
                        }
                        continue;
                    }
                    let len = f.size.min(shared.chunk);
                    f.next.set(len);
                    shared.open.borrow_mut().push_back(f.clone());
                    (f, 0, len as usize)
                }
                Err(e) => {
                    shared.fail(e);
                    return;
                }
            },
            Work::Chunk(f, off, len) => (f, off, len),
        };
        let job = &shared.jobs[f.job];
        buf.reset();
        let (res, slice) = f.src.read_exact_at(buf.slice(0..len), off).await;
        buf = slice.into_inner();
        if let Err(e) = res {
            shared.fail(format!("read of {} at {off}: {e}", job.src.display()));
            return;
        }
        let (res, slice) = f.dst.write_all_at(buf.slice(0..len), off).await;
        buf = slice.into_inner();
        if let Err(e) = res {
            shared.fail(format!("write of {} at {off}: {e}", job.dst.display()));
            return;
        }
        shared.bytes.set(shared.bytes.get() + len as u64);
        f.chunks_left.set(f.chunks_left.get() - 1);
        if f.chunks_left.get() == 0 {
            if let Err(e) = finish_file(&shared, &f).await {
                shared.fail(e);
                return;
            }
        }
    }
}

/// Walks the source tree: creates the destination directories (through the ring) and symlinks,
/// and lists the regular files to copy. Returns the directories with their modes, to set last
/// (a read-only source directory must stay writable until its files are in).
async fn plan(
    src: &Path,
    dst: &Path,
    jobs: &mut Vec<Job>,
    dirs: &mut Vec<(PathBuf, u32)>,
) -> Result<(), String> {
    let meta = uring::fs::symlink_metadata(src)
        .await
        .map_err(|e| format!("cannot stat {}: {e}", src.display()))?;
    if meta.is_file() {
        jobs.push(Job {
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
        });
        return Ok(());
    }
    if !meta.is_dir() {
        return Err(format!(
            "{} is not a regular file or a directory",
            src.display()
        ));
    }
    let mut stack = vec![(
        src.to_path_buf(),
        dst.to_path_buf(),
        meta.permissions().mode(),
    )];
    while let Some((s, d, mode)) = stack.pop() {
        match uring::fs::create_dir(&d).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create directory {}: {e}", d.display())),
        }
        dirs.push((d.clone(), mode));
        let entries =
            std::fs::read_dir(&s).map_err(|e| format!("cannot list {}: {e}", s.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", s.display()))?;
            let ty = entry
                .file_type()
                .map_err(|e| format!("cannot stat {}: {e}", entry.path().display()))?;
            let (sp, dp) = (entry.path(), d.join(entry.file_name()));
            if ty.is_dir() {
                let m = uring::fs::symlink_metadata(&sp)
                    .await
                    .map_err(|e| format!("cannot stat {}: {e}", sp.display()))?;
                stack.push((sp, dp, m.permissions().mode()));
            } else if ty.is_file() {
                jobs.push(Job { src: sp, dst: dp });
            } else if ty.is_symlink() {
                let target = std::fs::read_link(&sp)
                    .map_err(|e| format!("cannot read link {}: {e}", sp.display()))?;
                uring::fs::symlink(&target, &dp)
                    .await
                    .map_err(|e| format!("cannot create symlink {}: {e}", dp.display()))?;
            } else {
                eprintln!(
                    "cp: skipping {} (not a file, directory or symlink)",
                    sp.display()
                );
            }
        }
    }
    Ok(())
}

/// Copying a directory into itself would walk the copy as it grows: refuse, as cp(1) does.
fn refuse_copy_into_itself(src: &Path, dst: &Path) -> Result<(), String> {
    let Ok(src) = src.canonicalize() else {
        return Ok(()); // plan() reports the missing source
    };
    // The destination may not exist yet: canonicalize its nearest existing ancestor.
    let mut existing = dst.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = if parent.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    parent.to_path_buf()
                };
            }
            _ => return Ok(()),
        }
    }
    let mut full = existing
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dst.display()))?;
    full.extend(rest.iter().rev());
    if full == src || (full.starts_with(&src) && src.is_dir()) {
        return Err(format!(
            "cannot copy {} into itself ({})",
            src.display(),
            full.display()
        ));
    }
    Ok(())
}

fn is_terminal(fd: i32) -> bool {
    // SAFETY: isatty only inspects the fd number.
    unsafe { libc::isatty(fd) == 1 }
}

async fn progress(shared: Rc<Shared>, start: Instant, total_files: usize) {
    let mut tick = uring::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        let (b, f) = (shared.bytes.get(), shared.files.get());
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{:.1} MiB, {:.1} MiB/s, {f}/{total_files} files, {:.0} files/s   ",
            b as f64 / 1048576.0,
            b as f64 / 1048576.0 / secs,
            f as f64 / secs
        );
        let _ = err.flush();
    }
}

async fn copy_all(args: Args) -> Result<(u64, u64, Duration), String> {
    let mut dst = args.dst.clone();
    if let Ok(m) = uring::fs::metadata(&args.dst).await {
        if m.is_dir() {
            let name = args
                .src
                .file_name()
                .ok_or_else(|| format!("{} has no file name", args.src.display()))?;
            dst = dst.join(name);
        }
    }
    refuse_copy_into_itself(&args.src, &dst)?;
    let start = Instant::now();
    let mut jobs = Vec::new();
    let mut dirs = Vec::new();
    plan(&args.src, &dst, &mut jobs, &mut dirs).await?;
    let total_files = jobs.len();
    let shared = Rc::new(Shared {
        jobs,
        next_job: Cell::new(0),
        open: RefCell::new(VecDeque::new()),
        chunk: args.chunk as u64,
        error: RefCell::new(None),
        bytes: Cell::new(0),
        files: Cell::new(0),
    });
    let ticker = (!args.quiet && is_terminal(2))
        .then(|| uring::spawn(progress(shared.clone(), start, total_files)));
    // One registered buffer per worker, or plain ones when registering is refused (a low
    // RLIMIT_MEMLOCK, a kernel without a sparse buffer table) or not wanted.
    let pool = if args.plain_buffers {
        None
    } else {
        match FixedBufPool::new(args.depth, args.chunk) {
            Ok(p) if p.is_registered() => Some(p),
            Ok(_) => {
                if !args.quiet {
                    eprintln!("cp: this kernel cannot register buffers; using plain ones");
                }
                None
            }
            Err(e) => {
                if !args.quiet {
                    eprintln!("cp: using plain buffers: {e}");
                }
                None
            }
        }
    };
    let workers: Vec<_> = (0..args.depth)
        .map(|_| match &pool {
            Some(p) => {
                let buf = p.get().expect("one registered buffer per worker");
                uring::spawn(worker(shared.clone(), buf))
            }
            None => {
                let buf = Vec::with_capacity(args.chunk);
                uring::spawn(worker(shared.clone(), buf))
            }
        })
        .collect();
    for w in workers {
        w.await.map_err(|e| format!("a copy task failed: {e}"))?;
    }
    if let Some(t) = ticker {
        t.abort();
        eprintln!();
    }
    if let Some(e) = shared.error.borrow_mut().take() {
        return Err(e);
    }
    if shared.files.get() as usize != total_files {
        return Err(format!(
            "only {} of {total_files} files were copied",
            shared.files.get()
        ));
    }
    // Deepest directories first, so a read-only parent is set after its children.
    for (d, mode) in dirs.iter().rev() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("cannot set the mode of {}: {e}", d.display()))?;
    }
    Ok((shared.bytes.get(), shared.files.get(), start.elapsed()))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("cp: {msg}");
            return ExitCode::from(2);
        }
    };
    let show = !args.quiet && is_terminal(2);
    let rt = match uring::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cp: cannot start io_uring: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(copy_all(args)) {
        Ok((bytes, files, took)) => {
            if show {
                let secs = took.as_secs_f64().max(1e-9);
                eprintln!(
                    "cp: {files} files, {bytes} bytes in {secs:.2} s ({:.1} MiB/s, {:.0} files/s)",
                    bytes as f64 / 1048576.0 / secs,
                    files as f64 / secs
                );
            }
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("cp: {msg}");
            ExitCode::FAILURE
        }
    }
}
