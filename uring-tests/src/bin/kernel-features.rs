//! Measures three io_uring features that matter to a thread-per-core pool (one ring per worker
//! thread), with the `io-uring` crate directly and no runtime:
//!
//! 1. `IORING_SETUP_ATTACH_WQ`: N rings on N threads, each ring made on its own or attached to
//!    the first ring's io-wq. The workload is one that io-wq serves: buffered 4 KiB random writes
//!    (on a file system without async buffered writes, such as ext4, the kernel punts them to
//!    io-wq workers) and 4 KiB random reads of a cached file with `IOSQE_ASYNC` (always punted),
//!    at QD 32 per ring, one file per ring. It reports IOPS, the most `iou-wrk-*` threads seen at
//!    once (sampled from `/proc/self/task/*/comm` every 25 ms), the distinct threads those workers
//!    belong to (a worker is named after its owner: `iou-wrk-<tid>`), and the process CPU per op
//!    (getrusage, io-wq workers included). A last check makes 4 SQPOLL rings with and without the
//!    flag and counts `iou-sqp-*` threads: what the flag still shares.
//! 2. `IORING_REGISTER_IOWQ_MAX_WORKERS`: the same workloads, plus O_DIRECT reads with
//!    `IOSQE_ASYNC` (the worker blocks on the device, as on any punted op that waits), on 2
//!    rings and threads with the [bounded, unbounded] worker caps set to [0, 0] (unchanged),
//!    [4, 4], [2, 2] and [1, 1]; it also reads the limits back (a [0, 0] register returns the
//!    current ones).
//! 3. `IORING_OP_MSG_RING` against an eventfd write that completes an `IORING_OP_READ` the target
//!    keeps armed on its ring (what `uring` does today): a ping-pong between two threads, each
//!    blocked in `io_uring_enter` waiting for a CQE. It reports the round trip (two wakes) at the
//!    median and p99 and the CPU per wake (user and system, getrusage per thread). MSG_RING runs
//!    twice: sent with the enter that waits (how a loop would batch it) and sent by an enter of
//!    its own (a wake that cannot wait for the end of the turn). Each runs with the two threads
//!    unpinned, pinned to two CPUs and pinned to one CPU (the wake's own cost, without a
//!    cross-CPU wake-up). The price of giving a thread a ring just to send (creating and closing
//!    one) is measured too.
//!
//! Configurations run in alternating rounds (the order reverses every round) and the tables show
//! medians, because the machine may be shared.
//!
//! `cargo run --release -p uring-tests --bin kernel-features` (about a minute);
//! `-- --secs S --rounds R --round-trips N --dir DIR` change the window per file run (0.3 s), the
//! rounds (5), the ping-pong round trips per mode and placement (50,000: 100,000 wakes) and where
//! the files go (the temp dir; 6 files of 64 MiB, removed at the end); `--only files|wakes` runs
//! features 1 and 2 or feature 3 alone.

#![deny(clippy::undocumented_unsafe_blocks)]

use io_uring::{opcode, squeue, types, IoUring};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

const BS: usize = 4096;
const QD: usize = 32;
const FILE_BYTES: u64 = 64 << 20;
const MAX_THREADS: usize = 4;
/// Rings (and threads) of the worker-cap runs, which is also how many O_DIRECT files there are.
const DIRECT_FILES: usize = 2;

const USAGE: &str = "usage: kernel-features [--secs S] [--rounds R] [--round-trips N] [--dir DIR] [--only files|wakes]
  --secs S         measured window of each file run, seconds (default 0.3)
  --rounds R       rounds of every configuration, alternating order (default 5)
  --round-trips N  ping-pong round trips per wake mode, per placement, split over the
                   rounds (default 50000: 100000 wakes)
  --dir DIR        where the 6 test files of 64 MiB go (default: the temp dir)
  --only files|wakes  run features 1 and 2 only, or feature 3 only";

struct Args {
    secs: f64,
    rounds: usize,
    round_trips: usize,
    dir: PathBuf,
    /// Run only the file runs (features 1 and 2) or only the wakes (feature 3).
    only: Option<String>,
}

fn fail(msg: &str) -> ! {
    eprintln!("kernel-features: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        secs: 0.3,
        rounds: 5,
        round_trips: 50_000,
        dir: std::env::temp_dir(),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| fail(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--secs" => {
                a.secs = value()
                    .parse()
                    .ok()
                    .filter(|&s: &f64| s > 0.0)
                    .unwrap_or_else(|| fail("--secs needs a positive number"))
            }
            "--rounds" => {
                a.rounds = value()
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| fail("--rounds needs a positive number"))
            }
            "--round-trips" => {
                a.round_trips = value()
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| fail("--round-trips needs a positive number"))
            }
            "--dir" => a.dir = PathBuf::from(value()),
            "--only" => {
                a.only = Some(value())
                    .filter(|v| v == "files" || v == "wakes")
                    .or_else(|| fail("--only needs files or wakes"))
            }
            other => fail(&format!("unknown argument {other}")),
        }
    }
    a
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// A ring set up the way `uring` sets its rings up (`SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL`),
/// optionally attached to another ring's io-wq; plain flags where the kernel refuses those.
fn new_ring(entries: u32, attach: Option<RawFd>) -> IoUring {
    let mut b = IoUring::builder();
    b.setup_single_issuer()
        .setup_defer_taskrun()
        .setup_submit_all();
    if let Some(fd) = attach {
        b.setup_attach_wq(fd);
    }
    match b.build(entries) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let mut b = IoUring::builder();
            if let Some(fd) = attach {
                b.setup_attach_wq(fd);
            }
            b.build(entries).expect("io_uring_setup")
        }
        Err(e) => panic!("io_uring_setup: {e}"),
    }
}

/// Submits what is queued and waits for at least one CQE, retrying on EINTR.
fn submit_and_wait(ring: &IoUring) {
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => return,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => panic!("io_uring_enter: {e}"),
        }
    }
}

/// (user, system) CPU time of `who` (RUSAGE_SELF or RUSAGE_THREAD), in nanoseconds.
fn rusage(who: libc::c_int) -> (u64, u64) {
    // SAFETY: rusage is plain data; all-zero bytes are a valid value of it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the live, writable struct it is given.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    (ns(ru.ru_utime), ns(ru.ru_stime))
}

/// The threads of this process whose name starts with `prefix` (`iou-wrk-`, `iou-sqp-`): how
/// many, and the tids in their names (the thread each belongs to).
fn io_threads(prefix: &str) -> (usize, BTreeSet<u32>) {
    let mut n = 0;
    let mut owners = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return (0, owners);
    };
    for entry in dir.flatten() {
        // A thread may exit between the listing and the read: skip it.
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if let Some(rest) = comm.trim_end().strip_prefix(prefix) {
            n += 1;
            if let Ok(tid) = rest.parse() {
                owners.insert(tid);
            }
        }
    }
    (n, owners)
}

/// Waits (at most 3 s) until the `prefix` threads of earlier runs are gone (they exit
/// asynchronously after their owner or ring).
fn wait_for_none(prefix: &str) {
    let t = Instant::now();
    while io_threads(prefix).0 > 0 && t.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(5));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// xorshift64*: offsets, nothing that needs to be good randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn fs_name(dir: &std::path::Path) -> String {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return "?".into();
    };
    // SAFETY: statfs is plain data; all-zero bytes are a valid value of it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a live, writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "?".into();
    }
    match st.f_type as u64 {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        t => format!("fs type {t:#x}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Features 1 and 2: io-wq

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Write,
    ReadAsync,
    /// O_DIRECT reads with `IOSQE_ASYNC`: the io-wq worker blocks on the device, as it would on
    /// any punted op that waits (an fsync, an open on a slow disk).
    DirectReadAsync,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Write => "buffered write",
            Workload::ReadAsync => "read + IOSQE_ASYNC",
            Workload::DirectReadAsync => "O_DIRECT read + ASYNC",
        }
    }
}

#[derive(Clone, Copy)]
struct IoConfig {
    workload: Workload,
    threads: usize,
    attach: bool,
    /// [bounded, unbounded] io-wq worker caps; [0, 0] leaves them as they are.
    cap: [u32; 2],
}

struct IoResult {
    iops: f64,
    workers_max: usize,
    owners: usize,
    cpu_us_per_op: f64,
    /// The limits thread 0's io-wq reported at the end of its run.
    limits: [u32; 2],
}

/// What the run's threads share.
struct IoShared<'a> {
    cfg: IoConfig,
    files: &'a [File],
    /// The same files opened with O_DIRECT.
    direct: &'a [File],
    ring0: AtomicI32,
    ring0_made: Barrier,
    start: Barrier,
    stop: AtomicBool,
}

/// One worker thread of a file run: its own ring (attached to thread 0's if asked), QD ops in
/// flight on its own file until told to stop. Returns the ops that completed before the stop and
/// its io-wq's limits.
fn io_thread(idx: usize, sh: &IoShared) -> (u64, [u32; 2]) {
    let ring_attach = if idx == 0 || !sh.cfg.attach {
        None
    } else {
        sh.ring0_made.wait();
        Some(sh.ring0.load(Ordering::Acquire))
    };
    let mut ring = new_ring(QD as u32, ring_attach);
    if idx == 0 {
        sh.ring0.store(ring.as_raw_fd(), Ordering::Release);
        if sh.cfg.attach {
            sh.ring0_made.wait();
        }
    }
    if sh.cfg.cap != [0, 0] {
        let mut cap = sh.cfg.cap;
        ring.submitter()
            .register_iowq_max_workers(&mut cap)
            .expect("IORING_REGISTER_IOWQ_MAX_WORKERS");
    }
    let fd = match sh.cfg.workload {
        Workload::DirectReadAsync => sh.direct[idx].as_raw_fd(),
        _ => sh.files[idx].as_raw_fd(),
    };
    // One spare block, so the buffers can start at a 4 KiB boundary (O_DIRECT).
    let mut bufs = vec![0x5au8; QD * BS + BS];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((idx as u64 + 1) * 0x1234_5678_9abc));
    let blocks = FILE_BYTES / BS as u64;
    let workload = sh.cfg.workload;
    let base = bufs.as_mut_ptr();
    let align = base.align_offset(BS);
    assert!(align < BS);
    // SAFETY: `align < BS`, so `base + align` and the QD blocks after it lie inside `bufs`.
    let base = unsafe { base.add(align) };
    let queue = |ring: &mut IoUring, slot: usize, rng: &mut Rng| {
        let off = (rng.next() % blocks) * BS as u64;
        // SAFETY: `slot < QD`, so the 4 KiB at `base + slot * BS` lie inside `bufs`.
        let buf = unsafe { base.add(slot * BS) };
        let entry = match workload {
            Workload::Write => opcode::Write::new(types::Fd(fd), buf, BS as u32)
                .offset(off)
                .build(),
            Workload::ReadAsync | Workload::DirectReadAsync => {
                opcode::Read::new(types::Fd(fd), buf, BS as u32)
                    .offset(off)
                    .build()
                    .flags(squeue::Flags::ASYNC)
            }
        }
        .user_data(slot as u64);
        // SAFETY: the op's buffer is slot `slot` of `bufs` and its fd is `files[idx]`; both
        // outlive the op, because this thread reaps every op it queued (the drain below) before
        // `bufs` is dropped and returns before the files are closed. A slot is queued again only
        // after its CQE. At most QD ops are queued at once and the SQ has QD entries.
        unsafe { ring.submission().push(&entry) }.expect("SQ full");
    };
    for slot in 0..QD {
        queue(&mut ring, slot, &mut rng);
    }
    sh.start.wait();
    let mut inflight = QD;
    let mut ops = 0u64;
    let mut stopped = false;
    let mut limits = [0u32; 2];
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(QD);
    while inflight > 0 {
        submit_and_wait(&ring);
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        if !stopped && sh.stop.load(Ordering::Acquire) {
            stopped = true;
            // Read the limits while this thread's io-wq is alive: [0, 0] changes nothing.
            ring.submitter()
                .register_iowq_max_workers(&mut limits)
                .expect("IORING_REGISTER_IOWQ_MAX_WORKERS");
        }
        for (slot, res) in done.drain(..) {
            assert_eq!(res, BS as i32, "4 KiB op on slot {slot} returned {res}");
            inflight -= 1;
            if !stopped {
                ops += 1;
                queue(&mut ring, slot as usize, &mut rng);
                inflight += 1;
            }
        }
    }
    (ops, limits)
}

fn run_io(cfg: IoConfig, files: &[File], direct: &[File], secs: f64) -> IoResult {
    wait_for_none("iou-wrk-");
    let sh = IoShared {
        cfg,
        files,
        direct,
        ring0: AtomicI32::new(-1),
        ring0_made: Barrier::new(cfg.threads),
        start: Barrier::new(cfg.threads + 1),
        stop: AtomicBool::new(false),
    };
    thread::scope(|s| {
        let sh = &sh;
        let handles: Vec<_> = (0..cfg.threads)
            .map(|i| s.spawn(move || io_thread(i, sh)))
            .collect();
        sh.start.wait();
        let (u0, s0) = rusage(libc::RUSAGE_SELF);
        let t0 = Instant::now();
        let window = Duration::from_secs_f64(secs);
        let mut workers_max = 0;
        let mut owners = BTreeSet::new();
        while t0.elapsed() < window {
            thread::sleep(Duration::from_millis(25).min(window.saturating_sub(t0.elapsed())));
            let (n, o) = io_threads("iou-wrk-");
            workers_max = workers_max.max(n);
            owners.extend(o);
        }
        let (u1, s1) = rusage(libc::RUSAGE_SELF);
        let elapsed = t0.elapsed().as_secs_f64();
        sh.stop.store(true, Ordering::Release);
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("file thread"))
            .collect();
        let ops: u64 = results.iter().map(|r| r.0).sum();
        IoResult {
            iops: ops as f64 / elapsed,
            workers_max,
            owners: owners.len(),
            cpu_us_per_op: ((u1 - u0) + (s1 - s0)) as f64 / 1000.0 / ops.max(1) as f64,
            limits: results[0].1,
        }
    })
}

/// Median IOPS (and its range), median worker counts and CPU of one configuration's rounds.
struct IoSummary {
    kiops: f64,
    kiops_lo: f64,
    kiops_hi: f64,
    workers: f64,
    owners: f64,
    cpu: f64,
    limits: [u32; 2],
}

fn summarize(rs: &[IoResult]) -> IoSummary {
    let mut k: Vec<f64> = rs.iter().map(|r| r.iops / 1000.0).collect();
    let mut w: Vec<f64> = rs.iter().map(|r| r.workers_max as f64).collect();
    let mut o: Vec<f64> = rs.iter().map(|r| r.owners as f64).collect();
    let mut c: Vec<f64> = rs.iter().map(|r| r.cpu_us_per_op).collect();
    let kiops = median(&mut k);
    IoSummary {
        kiops,
        kiops_lo: k[0],
        kiops_hi: k[k.len() - 1],
        workers: median(&mut w),
        owners: median(&mut o),
        cpu: median(&mut c),
        limits: rs[rs.len() - 1].limits,
    }
}

fn kiops_cell(s: &IoSummary) -> String {
    format!("{:.1} ({:.0}-{:.0})", s.kiops, s.kiops_lo, s.kiops_hi)
}

/// The test files: one per thread for the buffered workloads, then `DIRECT_FILES` more, synced,
/// for the O_DIRECT reads (apart, so those never meet pages the writes dirtied), opened again
/// with O_DIRECT.
fn make_files(dir: &std::path::Path) -> (Vec<File>, Vec<File>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut paths = Vec::new();
    let chunk = vec![0xa5u8; 1 << 20];
    for i in 0..MAX_THREADS + DIRECT_FILES {
        let path = dir.join(format!("kernel-features-{}-{i}.dat", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap_or_else(|e| fail(&format!("cannot create {}: {e}", path.display())));
        for _ in 0..FILE_BYTES / chunk.len() as u64 {
            f.write_all(&chunk).expect("fill the test file");
        }
        // Read it once so the read workload hits the page cache.
        let mut b = vec![0u8; 1 << 20];
        let len = b.len() as u64;
        for j in 0..FILE_BYTES / len {
            f.read_exact_at(&mut b, j * len)
                .expect("read the test file");
        }
        f.sync_all().expect("fsync the test file");
        files.push(f);
        paths.push(path);
    }
    let direct = paths[MAX_THREADS..]
        .iter()
        .map(|p| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(p)
                .unwrap_or_else(|e| fail(&format!("cannot open {} O_DIRECT: {e}", p.display())))
        })
        .collect();
    files.truncate(MAX_THREADS);
    (files, direct, paths)
}

/// Counts `iou-sqp-*` threads with 4 SQPOLL rings made on their own or attached to the first.
fn sqpoll_threads(attach: bool) -> usize {
    wait_for_none("iou-sqp-");
    let first: IoUring = IoUring::builder()
        .setup_sqpoll(50)
        .build(8)
        .expect("SQPOLL ring");
    let mut rest = Vec::new();
    for _ in 1..4 {
        let mut b: io_uring::Builder = IoUring::builder();
        b.setup_sqpoll(50);
        if attach {
            b.setup_attach_wq(first.as_raw_fd());
        }
        rest.push(b.build(8).expect("SQPOLL ring"));
    }
    thread::sleep(Duration::from_millis(20));
    let n = io_threads("iou-sqp-").0;
    drop(rest);
    drop(first);
    n
}

// ---------------------------------------------------------------------------------------------
// Feature 3: cross-thread wakes

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// `write(2)` to the peer's eventfd; the peer keeps an `IORING_OP_READ` on it armed.
    Eventfd,
    /// `IORING_OP_MSG_RING` to the peer's ring, submitted by the enter that then waits.
    MsgRing,
    /// `IORING_OP_MSG_RING`, submitted at once by an enter of its own, then a separate wait.
    MsgRingOwnEnter,
}

impl Wake {
    fn name(self) -> &'static str {
        match self {
            Wake::Eventfd => "eventfd write + armed READ (today)",
            Wake::MsgRing => "MSG_RING, sent with the wait's enter",
            Wake::MsgRingOwnEnter => "MSG_RING, sent by its own enter",
        }
    }
}

/// The CQE that wakes a thread: the armed read completing, or the peer's message.
const WAKE: u64 = 1;
/// The sender's own MSG_RING SQE; with CQE_SKIP_SUCCESS it posts a CQE only if it fails.
const SENT: u64 = 2;

/// Where the two ping-pong threads run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Wherever the scheduler puts them (a `Pool` without `pin_cpus`).
    Unpinned,
    /// Pinned to two different CPUs (a `Pool` with `pin_cpus`).
    TwoCpus,
    /// Both pinned to one CPU: the wake's own cost, with no cross-CPU wake-up.
    OneCpu,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::Unpinned => "unpinned",
            Placement::TwoCpus => "2 CPUs",
            Placement::OneCpu => "1 CPU",
        }
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bit set; all-zero bytes are a valid (empty) value of it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(
        rc,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE, the number of CPUs a cpu_set_t holds.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is a plain bit set; all-zero bytes are a valid (empty) value of it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` comes from `allowed_cpus`, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes from the live `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

struct PingShared {
    mode: Wake,
    /// The CPU each thread pins itself to, if any.
    cpus: [Option<usize>; 2],
    round_trips: usize,
    eventfds: [OwnedFd; 2],
    rings: [AtomicI32; 2],
    ready: Barrier,
}

fn eventfd() -> OwnedFd {
    // SAFETY: a plain syscall making a new fd; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh fd nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// One side of the ping-pong: thread 0 starts each round trip and times it, thread 1 answers.
/// Returns the round trips' durations (thread 0 only, ns) and this thread's (user, system) CPU.
fn ping_thread(me: usize, sh: &PingShared) -> (Vec<u64>, (u64, u64)) {
    if let Some(cpu) = sh.cpus[me] {
        pin_to(cpu);
    }
    // Declared before the ring so it outlives it.
    let mut wake_buf = Box::new(0u64);
    let mut ring = new_ring(8, None);
    sh.rings[me].store(ring.as_raw_fd(), Ordering::Release);
    let my_efd = sh.eventfds[me].as_raw_fd();
    let peer_efd = sh.eventfds[1 - me].as_raw_fd();
    let buf_ptr: *mut u64 = &mut *wake_buf;
    let arm = |ring: &mut IoUring| {
        let read = opcode::Read::new(types::Fd(my_efd), buf_ptr.cast(), 8)
            .build()
            .user_data(WAKE);
        // SAFETY: the read fills the boxed u64 `wake_buf`, which outlives the ring, and names an
        // eventfd `sh` keeps open until after this thread returns. One read is armed at a time:
        // a new one is queued only after the previous one's CQE. The SQ has room (8 entries).
        unsafe { ring.submission().push(&read) }.expect("SQ full");
    };
    if sh.mode == Wake::Eventfd {
        arm(&mut ring);
        ring.submit().expect("io_uring_enter");
    }
    sh.ready.wait();
    let peer_ring = sh.rings[1 - me].load(Ordering::Acquire);
    let send = |ring: &mut IoUring| match sh.mode {
        Wake::Eventfd => {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd `sh` keeps open.
            let n = unsafe { libc::write(peer_efd, (&one as *const u64).cast(), 8) };
            assert_eq!(n, 8, "eventfd write: {}", std::io::Error::last_os_error());
        }
        Wake::MsgRing | Wake::MsgRingOwnEnter => {
            let msg = opcode::MsgRingData::new(types::Fd(peer_ring), 0, WAKE, None)
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS)
                .user_data(SENT);
            // SAFETY: the message points at no memory; the target ring's fd stays open until
            // both threads are joined (each ring is dropped only after its thread's last send
            // was submitted and the peer got it). The SQ has room (8 entries).
            unsafe { ring.submission().push(&msg) }.expect("SQ full");
            if sh.mode == Wake::MsgRingOwnEnter {
                ring.submit().expect("io_uring_enter");
            }
        }
    };
    let wait = |ring: &mut IoUring| {
        let mut woken = false;
        while !woken {
            submit_and_wait(ring);
            for c in ring.completion() {
                match c.user_data() {
                    WAKE => {
                        let want = if sh.mode == Wake::Eventfd { 8 } else { 0 };
                        assert_eq!(c.result(), want, "wake CQE");
                        woken = true;
                    }
                    _ => panic!("MSG_RING failed: {}", c.result()),
                }
            }
        }
        if sh.mode == Wake::Eventfd {
            // Re-armed the way the runtime does it: queued now, submitted by the next enter.
            arm(ring);
        }
    };
    sh.ready.wait();
    let (u0, s0) = rusage(libc::RUSAGE_THREAD);
    let mut rtts = Vec::with_capacity(if me == 0 { sh.round_trips } else { 0 });
    for _ in 0..sh.round_trips {
        if me == 0 {
            let t = Instant::now();
            send(&mut ring);
            wait(&mut ring);
            rtts.push(t.elapsed().as_nanos() as u64);
        } else {
            wait(&mut ring);
            send(&mut ring);
        }
    }
    if me == 1 && sh.mode == Wake::MsgRing {
        // The last answer is queued and would go with the next wait: submit it.
        ring.submit().expect("io_uring_enter");
    }
    let (u1, s1) = rusage(libc::RUSAGE_THREAD);
    // Both rings stay open until both sides are done (the last message targets ring 0).
    sh.ready.wait();
    // No read is in flight here: every submitted read was reaped, and the re-arm queued after
    // the last one was never submitted (dropping the ring discards it).
    drop(ring);
    drop(wake_buf);
    (rtts, (u1 - u0, s1 - s0))
}

fn run_ping(mode: Wake, placement: Placement, round_trips: usize) -> (Vec<u64>, u64, u64) {
    let cpus = allowed_cpus();
    let sh = PingShared {
        mode,
        cpus: match placement {
            Placement::Unpinned => [None, None],
            Placement::TwoCpus => [Some(cpus[0]), Some(cpus[1])],
            Placement::OneCpu => [Some(cpus[0]), Some(cpus[0])],
        },
        round_trips,
        eventfds: [eventfd(), eventfd()],
        rings: [AtomicI32::new(-1), AtomicI32::new(-1)],
        ready: Barrier::new(2),
    };
    thread::scope(|s| {
        let sh = &sh;
        let a = s.spawn(move || ping_thread(0, sh));
        let b = s.spawn(move || ping_thread(1, sh));
        let (rtts, (ua, sa)) = a.join().expect("ping thread");
        let (_, (ub, sb)) = b.join().expect("pong thread");
        (rtts, ua + ub, sa + sb)
    })
}

/// Median time to create and close a ring with the runtime's flags, µs.
fn ring_creation_us() -> f64 {
    let mut v: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            drop(new_ring(8, None));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    median(&mut v)
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args = parse_args();
    let total = Instant::now();
    let files_on = args.only.as_deref() != Some("wakes");
    let wakes_on = args.only.as_deref() != Some("files");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "kernel-features: Linux {}, {cpus} CPUs, files on {} ({}), {} rounds, {:.2} s per file run",
        kernel.trim(),
        args.dir.display(),
        fs_name(&args.dir),
        args.rounds,
        args.secs
    );

    let (files, direct, paths) = if files_on {
        make_files(&args.dir)
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };

    let workloads = [Workload::Write, Workload::ReadAsync];
    let caps: [[u32; 2]; 4] = [[0, 0], [4, 4], [2, 2], [1, 1]];
    let mut configs = Vec::new();
    if files_on {
        for w in workloads {
            for threads in [2, 4] {
                for attach in [false, true] {
                    configs.push(IoConfig {
                        workload: w,
                        threads,
                        attach,
                        cap: [0, 0],
                    });
                }
            }
        }
        for w in [
            Workload::Write,
            Workload::ReadAsync,
            Workload::DirectReadAsync,
        ] {
            for cap in caps {
                configs.push(IoConfig {
                    workload: w,
                    threads: DIRECT_FILES,
                    attach: false,
                    cap,
                });
            }
        }
    }
    let mut modes: Vec<(Placement, Wake)> = Vec::new();
    if wakes_on {
        let placements: &[Placement] = if allowed_cpus().len() >= 2 {
            &[Placement::Unpinned, Placement::TwoCpus, Placement::OneCpu]
        } else {
            &[Placement::OneCpu]
        };
        for &p in placements {
            for m in [Wake::Eventfd, Wake::MsgRing, Wake::MsgRingOwnEnter] {
                modes.push((p, m));
            }
        }
    }

    let mut io_results: Vec<Vec<IoResult>> = configs.iter().map(|_| Vec::new()).collect();
    let mut pings: Vec<PingStats> = modes.iter().map(|_| PingStats::default()).collect();
    let per_round = args.round_trips.div_ceil(args.rounds);
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..configs.len()).collect();
        let mut mode_order: Vec<usize> = (0..modes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
            mode_order.reverse();
        }
        for i in order {
            io_results[i].push(run_io(configs[i], &files, &direct, args.secs));
        }
        for m in mode_order {
            let (mut r, u, s) = run_ping(modes[m].1, modes[m].0, per_round);
            r.sort_unstable();
            let p = &mut pings[m];
            p.round_p50s.push(r[r.len() / 2] as f64 / 1000.0);
            p.rtts.extend(r);
            p.user_ns += u;
            p.sys_ns += s;
        }
        eprintln!("round {} of {} done", round + 1, args.rounds);
    }
    drop(files);
    drop(direct);
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }

    if files_on {
        let sqpoll = [sqpoll_threads(false), sqpoll_threads(true)];
        let sums: Vec<IoSummary> = io_results.iter().map(|r| summarize(r)).collect();
        print_io_tables(&configs, &sums, &caps, sqpoll);
    }
    if wakes_on {
        let ring_us = ring_creation_us();
        print_wake_table(&modes, &mut pings, ring_us);
    }
    println!();
    println!("total {:.1} s", total.elapsed().as_secs_f64());
}

#[derive(Default)]
struct PingStats {
    rtts: Vec<u64>,
    round_p50s: Vec<f64>,
    user_ns: u64,
    sys_ns: u64,
}

fn print_io_tables(
    configs: &[IoConfig],
    sums: &[IoSummary],
    caps: &[[u32; 2]],
    sqpoll: [usize; 2],
) {
    // The ATTACH_WQ configurations come first, in pairs (own, attached), then the caps, one
    // block of `caps.len()` per workload.
    let cap_workloads = 3;
    let cap_first = configs.len() - cap_workloads * caps.len();
    println!();
    println!("1. IORING_SETUP_ATTACH_WQ: 4 KiB random ops, QD {QD} per ring, one ring, thread and");
    println!("   64 MiB file each (files on ext4 punt buffered writes); kIOPS median (min-max) of the rounds;");
    println!("   wrk = most iou-wrk threads at once, own = the threads they belong to;");
    println!("   CPU = process µs per op, io-wq workers included");
    println!();
    println!(
        "{:<22} {:>5} | {:<36} | {:<36}",
        "", "", "own io-wq", "ATTACH_WQ to ring 0"
    );
    println!(
        "{:<22} {:>5} | {:>19} {:>4} {:>4} {:>6} | {:>19} {:>4} {:>4} {:>6}",
        "workload", "rings", "kIOPS", "wrk", "own", "CPU", "kIOPS", "wrk", "own", "CPU"
    );
    for (i, pair) in sums[..cap_first].chunks(2).enumerate() {
        let cfg = configs[i * 2];
        let (a, b) = (&pair[0], &pair[1]);
        println!(
            "{:<22} {:>5} | {:>19} {:>4} {:>4} {:>6.2} | {:>19} {:>4} {:>4} {:>6.2}",
            cfg.workload.name(),
            cfg.threads,
            kiops_cell(a),
            a.workers,
            a.owners,
            a.cpu,
            kiops_cell(b),
            b.workers,
            b.owners,
            b.cpu
        );
    }
    println!();
    println!(
        "   SQPOLL check, 4 rings on one thread: {} iou-sqp threads on their own, {} with ATTACH_WQ",
        sqpoll[0], sqpoll[1]
    );

    println!();
    println!(
        "2. IORING_REGISTER_IOWQ_MAX_WORKERS: the same ops on {DIRECT_FILES} rings and threads, caps"
    );
    println!(
        "   [bounded, unbounded] set by each thread on its ring; limits = what thread 0's io-wq"
    );
    println!("   reports at the end (a [0, 0] register reads them); columns as in table 1");
    println!();
    let names: Vec<&str> = (0..cap_workloads)
        .map(|w| configs[cap_first + w * caps.len()].workload.name())
        .collect();
    println!(
        "{:<8} | {:<31} | {:<31} | {:<31} |",
        "", names[0], names[1], names[2]
    );
    println!(
        "{:<8} | {:>19} {:>4} {:>6} | {:>19} {:>4} {:>6} | {:>19} {:>4} {:>6} | limits",
        "cap", "kIOPS", "wrk", "CPU", "kIOPS", "wrk", "CPU", "kIOPS", "wrk", "CPU"
    );
    for (c, cap) in caps.iter().enumerate() {
        let mut line = format!("{:<8}", format!("{cap:?}"));
        for w in 0..cap_workloads {
            let r = &sums[cap_first + w * caps.len() + c];
            line += &format!(" | {:>19} {:>4} {:>6.2}", kiops_cell(r), r.workers, r.cpu);
        }
        let limits = sums[cap_first + caps.len() + c].limits;
        println!("{line} | {limits:?}");
    }
}

fn print_wake_table(modes: &[(Placement, Wake)], pings: &mut [PingStats], ring_us: f64) {
    println!();
    println!(
        "3. Cross-thread wake, ping-pong between two threads blocked in io_uring_enter: {} round",
        pings[0].rtts.len()
    );
    println!("   trips (2 wakes each) per mode; round trip in µs (p50 over all, range of the");
    println!("   rounds' p50s, p99); CPU per wake in µs, both threads (getrusage per thread)");
    println!();
    println!(
        "{:<8} {:<38} | {:>6} {:>13} {:>6} | {:>6} {:>6} {:>6}",
        "threads", "wake", "p50", "round p50s", "p99", "user", "sys", "total"
    );
    for (&(placement, mode), p) in modes.iter().zip(pings.iter_mut()) {
        let r = &mut p.rtts;
        r.sort_unstable();
        let q = |q: f64| r[((r.len() as f64 * q) as usize).min(r.len() - 1)] as f64 / 1000.0;
        let rm = &mut p.round_p50s;
        rm.sort_by(|a, b| a.total_cmp(b));
        let wakes = 2.0 * r.len() as f64;
        println!(
            "{:<8} {:<38} | {:>6.2} {:>13} {:>6.2} | {:>6.2} {:>6.2} {:>6.2}",
            placement.name(),
            mode.name(),
            q(0.5),
            format!("{:.2}-{:.2}", rm[0], rm[rm.len() - 1]),
            q(0.99),
            p.user_ns as f64 / 1000.0 / wakes,
            p.sys_ns as f64 / 1000.0 / wakes,
            (p.user_ns + p.sys_ns) as f64 / 1000.0 / wakes
        );
    }
    println!();
    println!(
        "   creating and closing a ring (what a thread without one would pay to send MSG_RING): {ring_us:.1} µs"
    );
}
