//! A tiny FUSE filesystem, served by a thread of the test process, whose READ and FLUSH requests
//! can be held unanswered: a deterministic, real-kernel stand-in for a hung network filesystem.
//!
//! The kernel will not cancel an operation that waits on a FUSE request already handed to the
//! daemon (an io-wq worker running an io_uring read of such a file is woken only by the daemon's
//! answer), so [`HungFs`] gives tests an operation that is in flight and uncancellable for
//! exactly as long as they say.
//!
//! # io_uring reads of the file are issued inline unless IOSQE_ASYNC is set
//!
//! A FUSE file has a `poll` method. The daemon answers POLL with ENOSYS (as most do), after which
//! the kernel treats the file as always ready; io_uring therefore issues an IORING_OP_READ of it
//! inline, in io_uring_enter(2), with IOCB_NOWAIT, which FUSE's direct I/O does not honour. The
//! read then blocks the *submitting thread* until the daemon answers (observed on Linux 6.18; the
//! file has no FMODE_NOWAIT: preadv2(RWF_NOWAIT) fails with EOPNOTSUPP). To get the read into an
//! io-wq worker, where a read of a hung NFS file would sit, submit it with IOSQE_ASYNC.
//!
//! The filesystem has a root directory holding one read-only regular file, [`FILE_NAME`], of
//! [`FILE_SIZE`] bytes whose contents are [`file_contents`]. Files are opened with
//! `FOPEN_DIRECT_IO`, so no read is served from the page cache: every read reaches the daemon.
//!
//! The protocol is spoken by hand over `/dev/fuse` (see the kernel's
//! `include/uapi/linux/fuse.h`): INIT, LOOKUP, GETATTR, OPEN, READ, FLUSH, RELEASE, OPENDIR,
//! READDIR, RELEASEDIR, DESTROY are answered; FORGET, BATCH_FORGET and INTERRUPT get no answer (an
//! INTERRUPT leaves the request held: that is the "hung" behaviour); anything else gets ENOSYS.
//!
//! # Process-wide state: use it in a child process
//!
//! Mounting needs CAP_SYS_ADMIN and changes mount state, so tests should use [`HungFs`] inside a
//! child process ([`crate::run_child`] / [`crate::is_child`]). [`HungFs::mount`] also moves the
//! calling thread into a private mount namespace of its own (`unshare(CLONE_NEWNS)`, then `/`
//! made `MS_PRIVATE` recursively) before mounting, so the mount is invisible outside. A mount
//! namespace belongs to a thread: the mount is visible to the thread that called `mount()` and to
//! threads it spawns afterwards, not to other threads of the process. Open the file from those.
//!
//! # Never exit with a request held
//!
//! A task waiting on a FUSE request that the daemon has read cannot be killed (after a fatal
//! signal it waits uninterruptibly for the answer). If the process exits while a request is held,
//! its exit therefore waits for an answer that the (now dead) server thread will never give, and
//! the process hangs in the D state. [`HungFs::shutdown`] and `Drop` answer everything held, so
//! unwinding (a failed assertion in the thread owning the `HungFs`) is safe; `process::exit`,
//! `panic = "abort"` or a panic on another thread that ends the process while a request is held
//! is not. Such a process can be freed from outside by aborting its connection through fusectl:
//! `mount -t fusectl none /sys/fs/fuse/connections`, then write `1` to the `abort` file of the
//! connection (named by the mount's device minor number).

#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The name of the one regular file in the filesystem's root.
pub const FILE_NAME: &str = "file";
/// The size of that file in bytes.
pub const FILE_SIZE: usize = 4096;

/// The contents of [`FILE_NAME`]: byte `i` is `i % 251` (a prime, so a misplaced page shows).
pub fn file_contents() -> Vec<u8> {
    (0..FILE_SIZE).map(|i| (i % 251) as u8).collect()
}

// Protocol constants (include/uapi/linux/fuse.h).
const FUSE_KERNEL_VERSION: u32 = 7;
/// The newest minor version we speak; the reply uses min(kernel's, this).
const OUR_MINOR: u32 = 31;
const FUSE_ROOT_ID: u64 = 1;
const FILE_INO: u64 = 2;
const FOPEN_DIRECT_IO: u32 = 1 << 0;

const FUSE_LOOKUP: u32 = 1;
const FUSE_FORGET: u32 = 2;
const FUSE_GETATTR: u32 = 3;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_RELEASE: u32 = 18;
const FUSE_FLUSH: u32 = 25;
const FUSE_INIT: u32 = 26;
const FUSE_OPENDIR: u32 = 27;
const FUSE_READDIR: u32 = 28;
const FUSE_RELEASEDIR: u32 = 29;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_DESTROY: u32 = 38;
const FUSE_BATCH_FORGET: u32 = 42;
const FUSE_POLL: u32 = 40;

/// sizeof(struct fuse_in_header) and sizeof(struct fuse_out_header).
const IN_HEADER: usize = 40;
const OUT_HEADER: usize = 16;
/// The largest WRITE payload we announce in INIT; the kernel then requires reads of /dev/fuse to
/// offer at least this plus the headers (and never less than 8 KiB).
const MAX_WRITE: u32 = 64 * 1024;
const READ_BUF: usize = MAX_WRITE as usize + 4096;
/// Attribute and entry cache timeout, seconds (the contents never change).
const VALID_SECS: u64 = 60;

/// A mounted FUSE filesystem whose READs and FLUSHes can be held. See the [module docs](self).
pub struct HungFs {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// The /dev/fuse fd; closing it (after the server thread stopped) aborts the connection.
    dev: Option<OwnedFd>,
    server: Option<JoinHandle<io::Result<()>>>,
}

/// What the server thread and the test share.
struct Shared {
    /// The /dev/fuse fd (owned by [`HungFs::dev`], closed only after the server thread joined).
    dev: RawFd,
    /// An eventfd that tells the server thread to stop.
    wake: OwnedFd,
    state: Mutex<State>,
    /// Signalled whenever a request is held or an INTERRUPT arrives.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Answer POLL with "not ready" instead of ENOSYS (see [`HungFs::reads_go_to_workers`]).
    poll_not_ready: bool,
    hold_reads: bool,
    hold_flush: bool,
    /// Set by shutdown: nothing is held any more.
    stopping: bool,
    reads: Vec<HeldRead>,
    /// `unique` ids of held FLUSH requests.
    flushes: Vec<u64>,
    interrupts: usize,
    /// Opcodes answered with ENOSYS, each once, in order of arrival.
    enosys: Vec<u32>,
}

struct HeldRead {
    unique: u64,
    offset: u64,
    size: u32,
}

impl HungFs {
    /// Mounts the filesystem at a fresh directory under the temp dir, in a private mount
    /// namespace of the calling thread, and starts its server thread. Returns once the kernel's
    /// INIT has been answered. Fails with a descriptive error if /dev/fuse is missing, the
    /// namespace or the mount cannot be set up, or INIT does not arrive.
    pub fn mount() -> io::Result<HungFs> {
        let dev: OwnedFd = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|e| context(e, "open /dev/fuse"))?
            .into();
        let wake = eventfd()?;
        enter_private_mount_namespace()?;
        let dir = fresh_dir()?;
        let target = cstring(&dir)?;
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let opts = CString::new(format!(
            "fd={},rootmode=40000,user_id={uid},group_id={gid}",
            dev.as_raw_fd()
        ))
        .expect("no NUL in mount options");
        // SAFETY: all pointers are to NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"uringtest".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            let _ = std::fs::remove_dir(&dir);
            return Err(context(e, &format!("mount fuse at {}", dir.display())));
        }
        let mut fs = HungFs {
            shared: Arc::new(Shared {
                dev: dev.as_raw_fd(),
                wake,
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
            dir,
            dev: Some(dev),
            server: None,
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let shared = fs.shared.clone();
        let server = std::thread::Builder::new()
            .name("hungfs".into())
            .spawn(move || serve(&shared, target, ready_tx));
        match server {
            Ok(server) => fs.server = Some(server),
            Err(e) => {
                unmount(&cstring(&fs.dir)?);
                let _ = std::fs::remove_dir(&fs.dir);
                return Err(context(e, "spawn FUSE server thread"));
            }
        }
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(fs),
            // Dropping `fs` stops the server, unmounts and removes the directory.
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "FUSE: the kernel's INIT was not answered within 10 s",
            )),
        }
    }

    /// The mount point.
    pub fn mount_point(&self) -> &Path {
        &self.dir
    }

    /// The path of the filesystem's one regular file.
    pub fn file_path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// While on, READ requests are held unanswered. Switching it off answers the held ones at
    /// once (with the file's bytes).
    pub fn hold_reads(&self, on: bool) {
        let held = {
            let mut st = self.shared.lock();
            st.hold_reads = on;
            if on {
                return;
            }
            std::mem::take(&mut st.reads)
        };
        for r in held {
            self.shared.reply_read(&r);
        }
    }

    /// With `on`, POLL requests fail (EIO, which the kernel reports as EPOLLERR) instead of
    /// getting ENOSYS. io_uring then sees a file that cannot be read without blocking and hands
    /// its reads to an io-wq worker, as it does for a file on NFS (which has no poll method):
    /// set this before the first read, so that a held read blocks a worker, not the thread that
    /// submitted it.
    pub fn reads_go_to_workers(&self, on: bool) {
        self.shared.lock().poll_not_ready = on;
    }

    /// While on, FLUSH requests (sent by close(2)) are held unanswered. Switching it off answers
    /// the held ones at once (with success).
    pub fn hold_flush(&self, on: bool) {
        let held = {
            let mut st = self.shared.lock();
            st.hold_flush = on;
            if on {
                return;
            }
            std::mem::take(&mut st.flushes)
        };
        for unique in held {
            self.shared.reply(unique, &[]);
        }
    }

    /// How many READ requests are held now.
    pub fn held_reads(&self) -> usize {
        self.shared.lock().reads.len()
    }

    /// How many FLUSH requests are held now.
    pub fn held_flushes(&self) -> usize {
        self.shared.lock().flushes.len()
    }

    /// How many INTERRUPT requests the kernel has sent (one per held request whose waiter got a
    /// signal, e.g. an io-wq worker whose io_uring op was cancelled).
    pub fn interrupts(&self) -> usize {
        self.shared.lock().interrupts
    }

    /// The opcodes the kernel sent that were answered with ENOSYS (each once, in order of
    /// arrival): shows which optional requests the kernel tried, e.g. POLL (40).
    pub fn enosys_opcodes(&self) -> Vec<u32> {
        self.shared.lock().enosys.clone()
    }

    /// Waits up to `limit` until at least `n` READs are held; returns whether they were.
    pub fn wait_held_reads(&self, n: usize, limit: Duration) -> bool {
        self.shared.wait(limit, |st| st.reads.len() >= n)
    }

    /// Waits up to `limit` until at least `n` FLUSHes are held; returns whether they were.
    pub fn wait_held_flushes(&self, n: usize, limit: Duration) -> bool {
        self.shared.wait(limit, |st| st.flushes.len() >= n)
    }

    /// Waits up to `limit` until at least `n` INTERRUPTs have arrived; returns whether they had.
    pub fn wait_interrupts(&self, n: usize, limit: Duration) -> bool {
        self.shared.wait(limit, |st| st.interrupts >= n)
    }

    /// Answers everything held, unmounts (lazily, MNT_DETACH), stops the server thread and closes
    /// /dev/fuse (which aborts the connection: a request still unanswered fails with
    /// ECONNABORTED, and later use of a file still open on it with ENOTCONN), then removes the
    /// mount point. `Drop` does the same, ignoring errors.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        let Some(server) = self.server.take() else {
            return Ok(());
        };
        let (reads, flushes) = {
            let mut st = self.shared.lock();
            st.stopping = true;
            (
                std::mem::take(&mut st.reads),
                std::mem::take(&mut st.flushes),
            )
        };
        for r in reads {
            self.shared.reply_read(&r);
        }
        for unique in flushes {
            self.shared.reply(unique, &[]);
        }
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a local array to the eventfd we own.
        unsafe { libc::write(self.shared.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
        let served = server
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("FUSE server thread panicked")));
        // The server thread is gone: nothing else uses the fd. Closing it aborts the connection.
        drop(self.dev.take());
        let removed = std::fs::remove_dir(&self.dir)
            .map_err(|e| context(e, &format!("remove mount point {}", self.dir.display())));
        served.and(removed)
    }
}

impl Drop for HungFs {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait(&self, limit: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut st = self.lock();
        loop {
            if done(&st) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Writes a successful reply with `body`. The kernel answers ENOENT if the request is no
    /// longer waiting (aborted); that and other errors are ignored: there is no one to tell.
    fn reply(&self, unique: u64, body: &[u8]) {
        self.send(unique, 0, body);
    }

    /// Writes an error reply (`errno` positive).
    fn reply_err(&self, unique: u64, errno: i32) {
        self.send(unique, -errno, &[]);
    }

    fn send(&self, unique: u64, error: i32, body: &[u8]) {
        let len = OUT_HEADER + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&error.to_ne_bytes());
        msg.extend_from_slice(&unique.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: writes `msg` (which we own and which outlives the call) to the /dev/fuse fd,
        // which stays open until the server thread has joined and all replies are written.
        unsafe { libc::write(self.dev, msg.as_ptr().cast(), msg.len()) };
    }

    /// Answers a READ with the file's bytes in the requested range.
    fn reply_read(&self, r: &HeldRead) {
        let data = file_contents();
        let start = (r.offset as usize).min(FILE_SIZE);
        let end = start.saturating_add(r.size as usize).min(FILE_SIZE);
        self.reply(r.unique, &data[start..end]);
    }
}

/// The server thread: reads requests from /dev/fuse until told to stop or the connection ends,
/// then unmounts (it runs in the mount namespace of the mount).
fn serve(shared: &Shared, target: CString, ready: mpsc::Sender<io::Result<()>>) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUF];
    let mut ready = Some(ready);
    let result = loop {
        let mut fds = [
            libc::pollfd {
                fd: shared.dev,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: shared.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a local array of two pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break Err(context(e, "poll /dev/fuse"));
        }
        if fds[1].revents != 0 {
            break Ok(());
        }
        // SAFETY: reads into our buffer, at most its length.
        let n = unsafe { libc::read(shared.dev, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // ENOENT: the request was interrupted before we read it.
                Some(libc::EINTR | libc::EAGAIN | libc::ENOENT) => continue,
                // The connection was aborted or unmounted.
                Some(libc::ENODEV) => break Ok(()),
                _ => break Err(context(e, "read /dev/fuse")),
            }
        }
        let n = n as usize;
        if n < IN_HEADER || u32_at(&buf, 0) as usize != n {
            break Err(io::Error::other(format!(
                "FUSE: malformed request ({n} bytes read)"
            )));
        }
        if let Err(e) = handle(shared, &buf[..n], &mut ready) {
            break Err(e);
        }
    };
    if let Some(ready) = ready.take() {
        let _ = ready.send(Err(match &result {
            Err(e) => io::Error::new(e.kind(), format!("FUSE server failed before INIT: {e}")),
            Ok(()) => io::Error::other("FUSE: connection ended before INIT"),
        }));
    }
    // SAFETY: `target` is a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    let unmounted = if rc == 0 {
        Ok(())
    } else {
        Err(context(io::Error::last_os_error(), "umount2(MNT_DETACH)"))
    };
    result.and(unmounted)
}

/// Handles one request. Errors only for a protocol failure that should stop the server.
fn handle(
    shared: &Shared,
    req: &[u8],
    ready: &mut Option<mpsc::Sender<io::Result<()>>>,
) -> io::Result<()> {
    let opcode = u32_at(req, 4);
    let unique = u64_at(req, 8);
    let nodeid = u64_at(req, 16);
    let body = &req[IN_HEADER..];
    match opcode {
        FUSE_INIT => {
            let major = u32_at(body, 0);
            let minor = u32_at(body, 4);
            let max_readahead = u32_at(body, 8);
            if major != FUSE_KERNEL_VERSION {
                shared.reply_err(unique, libc::EPROTO);
                return Err(io::Error::other(format!(
                    "FUSE: the kernel speaks protocol {major}.{minor}, we speak 7.x"
                )));
            }
            // struct fuse_init_out (64 bytes).
            let mut out = Vec::with_capacity(64);
            out.extend_from_slice(&FUSE_KERNEL_VERSION.to_ne_bytes());
            out.extend_from_slice(&minor.min(OUR_MINOR).to_ne_bytes());
            out.extend_from_slice(&max_readahead.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes()); // flags: none
            out.extend_from_slice(&0u16.to_ne_bytes()); // max_background: default
            out.extend_from_slice(&0u16.to_ne_bytes()); // congestion_threshold: default
            out.extend_from_slice(&MAX_WRITE.to_ne_bytes());
            out.extend_from_slice(&1u32.to_ne_bytes()); // time_gran: 1 ns
            out.extend_from_slice(&0u16.to_ne_bytes()); // max_pages (needs FUSE_MAX_PAGES)
            out.extend_from_slice(&0u16.to_ne_bytes()); // map_alignment
            out.extend_from_slice(&0u32.to_ne_bytes()); // flags2
            out.resize(64, 0); // unused[7]
            shared.reply(unique, &out);
            if let Some(ready) = ready.take() {
                let _ = ready.send(Ok(()));
            }
        }
        FUSE_LOOKUP => {
            let name = body.split(|&b| b == 0).next().unwrap_or(&[]);
            if nodeid == FUSE_ROOT_ID && name == FILE_NAME.as_bytes() {
                // struct fuse_entry_out.
                let mut out = Vec::with_capacity(128);
                out.extend_from_slice(&FILE_INO.to_ne_bytes());
                out.extend_from_slice(&0u64.to_ne_bytes()); // generation
                out.extend_from_slice(&VALID_SECS.to_ne_bytes()); // entry_valid
                out.extend_from_slice(&VALID_SECS.to_ne_bytes()); // attr_valid
                out.extend_from_slice(&0u32.to_ne_bytes()); // entry_valid_nsec
                out.extend_from_slice(&0u32.to_ne_bytes()); // attr_valid_nsec
                push_attr(&mut out, FILE_INO);
                shared.reply(unique, &out);
            } else {
                shared.reply_err(unique, libc::ENOENT);
            }
        }
        FUSE_GETATTR => {
            if nodeid == FUSE_ROOT_ID || nodeid == FILE_INO {
                // struct fuse_attr_out.
                let mut out = Vec::with_capacity(104);
                out.extend_from_slice(&VALID_SECS.to_ne_bytes()); // attr_valid
                out.extend_from_slice(&0u32.to_ne_bytes()); // attr_valid_nsec
                out.extend_from_slice(&0u32.to_ne_bytes()); // dummy
                push_attr(&mut out, nodeid);
                shared.reply(unique, &out);
            } else {
                shared.reply_err(unique, libc::ENOENT);
            }
        }
        FUSE_OPEN => {
            let flags = u32_at(body, 0) as i32;
            if nodeid != FILE_INO {
                shared.reply_err(unique, libc::ENOENT);
            } else if flags & libc::O_ACCMODE != libc::O_RDONLY {
                shared.reply_err(unique, libc::EACCES);
            } else {
                shared.reply(unique, &open_out(1, FOPEN_DIRECT_IO));
            }
        }
        FUSE_READ => {
            // struct fuse_read_in: fh, offset, size, ...
            let r = HeldRead {
                unique,
                offset: u64_at(body, 8),
                size: u32_at(body, 16),
            };
            let mut st = shared.lock();
            if st.hold_reads && !st.stopping {
                st.reads.push(r);
                shared.changed.notify_all();
            } else {
                drop(st);
                shared.reply_read(&r);
            }
        }
        FUSE_FLUSH => {
            let mut st = shared.lock();
            if st.hold_flush && !st.stopping {
                st.flushes.push(unique);
                shared.changed.notify_all();
            } else {
                drop(st);
                shared.reply(unique, &[]);
            }
        }
        FUSE_OPENDIR => {
            if nodeid == FUSE_ROOT_ID {
                shared.reply(unique, &open_out(0, 0));
            } else {
                shared.reply_err(unique, libc::ENOTDIR);
            }
        }
        FUSE_READDIR => {
            let offset = u64_at(body, 8);
            let size = u32_at(body, 16) as usize;
            shared.reply(unique, &dirents(offset, size));
        }
        FUSE_RELEASE | FUSE_RELEASEDIR | FUSE_DESTROY => shared.reply(unique, &[]),
        FUSE_POLL if shared.lock().poll_not_ready => {
            // The kernel turns a failed POLL into EPOLLERR: never readable without blocking.
            shared.reply_err(unique, libc::EIO);
        }
        FUSE_INTERRUPT => {
            // No answer: the interrupted request stays held.
            shared.lock().interrupts += 1;
            shared.changed.notify_all();
        }
        FUSE_FORGET | FUSE_BATCH_FORGET => {}
        _ => {
            let mut st = shared.lock();
            if !st.enosys.contains(&opcode) {
                st.enosys.push(opcode);
            }
            drop(st);
            shared.reply_err(unique, libc::ENOSYS);
        }
    }
    Ok(())
}

/// Appends a struct fuse_attr (88 bytes) for the root directory or the file.
fn push_attr(out: &mut Vec<u8>, ino: u64) {
    let (mode, size, nlink) = if ino == FUSE_ROOT_ID {
        (libc::S_IFDIR | 0o555, 0u64, 2u32)
    } else {
        (libc::S_IFREG | 0o444, FILE_SIZE as u64, 1u32)
    };
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    out.extend_from_slice(&ino.to_ne_bytes());
    out.extend_from_slice(&size.to_ne_bytes());
    out.extend_from_slice(&size.div_ceil(512).to_ne_bytes()); // blocks
    for _ in 0..3 {
        out.extend_from_slice(&0u64.to_ne_bytes()); // atime, mtime, ctime
    }
    for _ in 0..3 {
        out.extend_from_slice(&0u32.to_ne_bytes()); // their nanoseconds
    }
    out.extend_from_slice(&mode.to_ne_bytes());
    out.extend_from_slice(&nlink.to_ne_bytes());
    out.extend_from_slice(&uid.to_ne_bytes());
    out.extend_from_slice(&gid.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // rdev
    out.extend_from_slice(&4096u32.to_ne_bytes()); // blksize
    out.extend_from_slice(&0u32.to_ne_bytes()); // flags
}

/// A struct fuse_open_out.
fn open_out(fh: u64, open_flags: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&fh.to_ne_bytes());
    out.extend_from_slice(&open_flags.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out
}

/// The root's entries from index `offset` on, as struct fuse_dirent records (each padded to 8
/// bytes, `off` the index of the next one), as many as fit in `size` bytes.
fn dirents(offset: u64, size: usize) -> Vec<u8> {
    let entries: [(u64, &str, u32); 3] = [
        (FUSE_ROOT_ID, ".", libc::DT_DIR.into()),
        (FUSE_ROOT_ID, "..", libc::DT_DIR.into()),
        (FILE_INO, FILE_NAME, libc::DT_REG.into()),
    ];
    let mut out = Vec::new();
    for (i, &(ino, name, kind)) in entries.iter().enumerate().skip(offset as usize) {
        let rec = (24 + name.len()).next_multiple_of(8);
        if out.len() + rec > size {
            break;
        }
        out.extend_from_slice(&ino.to_ne_bytes());
        out.extend_from_slice(&(i as u64 + 1).to_ne_bytes());
        out.extend_from_slice(&(name.len() as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(name.as_bytes());
        out.resize(out.len().next_multiple_of(8), 0);
    }
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_ne_bytes(s.try_into().expect("4 bytes")))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_ne_bytes(s.try_into().expect("8 bytes")))
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(context(io::Error::last_os_error(), "eventfd"));
    }
    // SAFETY: `fd` is a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn unmount(target: &CString) {
    // SAFETY: `target` is a NUL-terminated path that outlives the call.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
}

/// Moves the calling thread into a mount namespace of its own whose mounts do not propagate,
/// unless it already has one (a thread-local mark, or a namespace differing from the main
/// thread's, i.e. set up by an earlier call on this thread or the thread that spawned it).
fn enter_private_mount_namespace() -> io::Result<()> {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if DONE.get() {
        return Ok(());
    }
    let ns = |p: &str| std::fs::read_link(p).ok();
    let own = ns("/proc/thread-self/ns/mnt");
    if own.is_some() && own != ns("/proc/self/ns/mnt") {
        DONE.set(true);
        return Ok(());
    }
    // SAFETY: unshare has no memory preconditions; it affects this thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(context(
            io::Error::last_os_error(),
            "unshare(CLONE_NEWNS) for a private mount namespace",
        ));
    }
    // SAFETY: all pointers are NUL-terminated strings (or null where allowed) that outlive the
    // call; this changes propagation in the new namespace only.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(context(
            io::Error::last_os_error(),
            "make / MS_PRIVATE|MS_REC in the new mount namespace",
        ));
    }
    DONE.set(true);
    Ok(())
}

/// Creates a fresh, empty directory under the temp dir for the mount point.
fn fresh_dir() -> io::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let dir = std::env::temp_dir().join(format!(
            "uring-hungfs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(context(e, &format!("create {}", dir.display()))),
        }
    }
}

/// Aborts every FUSE connection of this machine through the fusectl filesystem (mounting it at
/// `/sys/fs/fuse/connections` if needed): requests still held by a fixture whose process died
/// fail at once, so the threads waiting on them (and the dying process) can finish. For test
/// cleanup after a child was killed.
pub fn abort_all_connections() {
    let dir = Path::new("/sys/fs/fuse/connections");
    let mounted = std::fs::read_dir(dir)
        .map(|d| d.count() > 0)
        .unwrap_or(false);
    if !mounted {
        // SAFETY: all pointers are to NUL-terminated strings that outlive the call.
        unsafe {
            libc::mount(
                c"fusectl".as_ptr(),
                c"/sys/fs/fuse/connections".as_ptr(),
                c"fusectl".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::write(e.path().join("abort"), "1");
        }
    }
}
