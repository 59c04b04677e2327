//! The fs benchmark suite: random and sequential reads and random writes on one large file, for
//! uring, tokio, a plain std positional loop on one thread, and fio's io_uring engine where fio
//! is installed.
//!
//! ```text
//! cargo run --release -p uring-tests --bin bench -- fs [--size 1G] [--secs 2] [--rounds 3] [--only QD32]
//! ```
//!
//! The file (`$TMPDIR/uring-bench-fs-<size>.dat`) is created once and reused. Every row runs for
//! a fixed duration per round and reports the median of the rounds. "Hot" rows read a file that
//! is fully in the page cache (it is read once first); `O_DIRECT` rows bypass the cache and show
//! what the device allows. The last column is uring's figure divided by the row's.
//!
//! Peers:
//! * uring: one runtime, QD tasks each looping `read_at`/`write_at` on one shared `File`.
//! * tokio::fs: QD tasks on a current-thread runtime, each with its own `tokio::fs::File`
//!   doing `seek` + `read_exact` (what tokio::fs offers; both hop to the blocking pool). Not
//!   possible with `O_DIRECT` (tokio's internal buffer is not aligned).
//! * tokio pread: QD tasks each doing `spawn_blocking(pread)`, the fastest tokio can do.
//! * std pread loop: `FileExt::read_at` in a loop on one thread (QD 1 by nature).
//! * fio io_uring: `fio --ioengine=io_uring` with the same pattern, size and depth;
//!   `--invalidate=0` for the hot rows (fio otherwise drops the cache first), `--direct=1` for
//!   `O_DIRECT`.

use super::{median, print_table};
use std::cell::Cell;
use std::future::Future;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uring::fs::AlignedBuf;

/// The suite's options, printed by `bench fs --help`.
pub const USAGE: &str = "usage: bench fs [--size N[K|M|G]] [--secs S] [--rounds R] [--only TEXT] [--engines LIST]
  --size    the test file's size (default 1G; also URING_BENCH_FS_SIZE), created once in $TMPDIR
  --secs    seconds per round of each row (default 2)
  --rounds  rounds per row, interleaved across engines; medians are reported (default 3)
  --only    run only the workloads whose name contains TEXT (e.g. QD32, O_DIRECT, write)
  --engines run only these peers besides uring: tokio-fs,tokio-pread,std,std-rotating,raw,raw-fixed,fio";

/// Settings of one run of the suite.
#[derive(Debug, Clone)]
pub struct Config {
    /// Size of the test file in bytes (default 1 GiB).
    pub size: u64,
    /// Duration of one round of one row.
    pub secs: f64,
    /// Rounds per row; the median is reported.
    pub rounds: usize,
    /// Only the workloads whose name contains this.
    pub only: Option<String>,
    /// Only these peers (`tokio-fs`, `tokio-pread`, `std`, `fio`); uring always runs.
    pub engines: Option<Vec<String>>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            size: 1 << 30,
            secs: 2.0,
            rounds: 3,
            only: None,
            engines: None,
        }
    }
}

impl Config {
    /// Reads `--size N[K|M|G]`, `--secs S`, `--rounds R` (also `URING_BENCH_FS_SIZE`) and
    /// `--only TEXT` (run only the workloads whose name contains TEXT), `--engines a,b` (run only
    /// these peers: `tokio-fs`, `tokio-pread`, `std`, `fio`).
    pub fn from_args(args: &[String]) -> Result<Config, String> {
        let mut c = Config::default();
        if let Ok(s) = std::env::var("URING_BENCH_FS_SIZE") {
            c.size = parse_size(&s)?;
        }
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--size" => c.size = parse_size(val()?)?,
                "--secs" => c.secs = val()?.parse().map_err(|e| format!("--secs: {e}"))?,
                "--rounds" => c.rounds = val()?.parse().map_err(|e| format!("--rounds: {e}"))?,
                "--only" => c.only = Some(val()?.clone()),
                "-h" | "--help" => return Err(USAGE.to_string()),
                "--engines" => c.engines = Some(val()?.split(',').map(str::to_string).collect()),
                other => return Err(format!("fs bench: unknown argument {other}")),
            }
        }
        if c.size < 16 << 20 || c.rounds == 0 || c.secs <= 0.0 {
            return Err("fs bench: --size at least 16M, --rounds and --secs positive".into());
        }
        c.size &= !((1 << 20) - 1);
        Ok(c)
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|e| format!("bad size {s:?}: {e}"))
}

/// One workload: pattern, block size, depth, cache mode.
#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    block: usize,
    depth: usize,
    random: bool,
    write: bool,
    direct: bool,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "4K rand read, hot, QD1",
        block: 4096,
        depth: 1,
        random: true,
        write: false,
        direct: false,
    },
    Workload {
        name: "4K rand read, hot, QD32",
        block: 4096,
        depth: 32,
        random: true,
        write: false,
        direct: false,
    },
    Workload {
        name: "4K rand read, O_DIRECT, QD1",
        block: 4096,
        depth: 1,
        random: true,
        write: false,
        direct: true,
    },
    Workload {
        name: "4K rand read, O_DIRECT, QD32",
        block: 4096,
        depth: 32,
        random: true,
        write: false,
        direct: true,
    },
    Workload {
        name: "1M seq read, hot, QD4",
        block: 1 << 20,
        depth: 4,
        random: false,
        write: false,
        direct: false,
    },
    Workload {
        name: "4K rand write, buffered, QD32",
        block: 4096,
        depth: 32,
        random: true,
        write: true,
        direct: false,
    },
];

/// Where each worker takes its next offset: random blocks, or the next sequential block.
#[derive(Clone)]
struct Offsets {
    blocks: u64,
    block: u64,
    random: bool,
    state: u64,
    /// Shared sequential cursor for all workers of one run.
    seq: Rc<Cell<u64>>,
}

impl Offsets {
    fn new(size: u64, w: &Workload, seed: u64, seq: Rc<Cell<u64>>) -> Offsets {
        Offsets {
            blocks: size / w.block as u64,
            block: w.block as u64,
            random: w.random,
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            seq,
        }
    }

    fn next(&mut self) -> u64 {
        if self.random {
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.state = x;
            (x % self.blocks) * self.block
        } else {
            let b = self.seq.get();
            self.seq.set((b + 1) % self.blocks);
            b * self.block
        }
    }
}

/// Checks the clock only every few ops: `Instant::now` is not free.
struct Deadline {
    end: Instant,
    n: u32,
}

impl Deadline {
    fn new(secs: f64) -> Deadline {
        Deadline {
            end: Instant::now() + Duration::from_secs_f64(secs),
            n: 0,
        }
    }

    fn passed(&mut self) -> bool {
        self.n = self.n.wrapping_add(1);
        self.n.is_multiple_of(32) && Instant::now() >= self.end
    }
}

fn open_std(path: &Path, w: &Workload) -> std::fs::File {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(w.write);
    if w.direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path).expect("open the benchmark file")
}

fn buffer(w: &Workload) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(w.block);
    if !w.write {
        b.clear();
    }
    b
}

/// Ops per second for uring: `depth` tasks on one runtime sharing one `File`.
fn run_uring(path: &Path, cfg: &Config, w: &Workload, round: u64) -> f64 {
    let rt = uring::Runtime::new().expect("uring runtime");
    rt.block_on(async {
        let f = Rc::new(uring::fs::File::from_std(open_std(path, w)));
        let seq = Rc::new(Cell::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..w.depth)
            .map(|t| {
                let f = f.clone();
                let mut offs = Offsets::new(cfg.size, w, round * 1000 + t as u64 + 1, seq.clone());
                let w = *w;
                let secs = cfg.secs;
                uring::spawn(async move {
                    let mut buf = buffer(&w);
                    let mut done = 0u64;
                    let mut deadline = Deadline::new(secs);
                    while !deadline.passed() {
                        let off = offs.next();
                        let (res, b) = if w.write {
                            f.write_at(buf, off).await
                        } else {
                            buf.clear();
                            f.read_at(buf, off).await
                        };
                        buf = b;
                        assert_eq!(res.expect("uring bench op"), w.block);
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("bench task");
        }
        total as f64 / start.elapsed().as_secs_f64()
    })
}

/// One uring op of the benchmark, as a nameable future type for [`run_uring_futures`].
async fn uring_op(
    f: Rc<uring::fs::File>,
    write: bool,
    mut buf: AlignedBuf,
    off: u64,
) -> uring::BufResult<usize, AlignedBuf> {
    if write {
        f.write_at(buf, off).await
    } else {
        buf.clear();
        f.read_at(buf, off).await
    }
}

/// Ops per second for uring: one task keeping `depth` op futures in flight, polling them all
/// when woken (as `join_all`/`FuturesUnordered` would), so a batch of completions costs one
/// task wake instead of `depth`.
fn run_uring_futures(path: &Path, cfg: &Config, w: &Workload, round: u64) -> f64 {
    let rt = uring::Runtime::new().expect("uring runtime");
    rt.block_on(async {
        let f = Rc::new(uring::fs::File::from_std(open_std(path, w)));
        let mut offs = Offsets::new(cfg.size, w, round * 1000 + 1, Rc::new(Cell::new(0)));
        let make = |buf, off| Box::pin(uring_op(f.clone(), w.write, buf, off));
        let mut slots: Vec<Option<_>> = (0..w.depth)
            .map(|_| Some(make(buffer(w), offs.next())))
            .collect();
        let mut live = w.depth;
        let mut done = 0u64;
        let mut deadline = Deadline::new(cfg.secs);
        let start = Instant::now();
        std::future::poll_fn(|cx| {
            for slot in slots.iter_mut() {
                while let Some(fut) = slot {
                    let std::task::Poll::Ready((res, buf)) = fut.as_mut().poll(cx) else {
                        break;
                    };
                    assert_eq!(res.expect("uring bench op"), w.block);
                    done += 1;
                    if deadline.passed() {
                        *slot = None;
                        live -= 1;
                    } else {
                        fut.set(uring_op(f.clone(), w.write, buf, offs.next()));
                    }
                }
            }
            if live == 0 {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        done as f64 / start.elapsed().as_secs_f64()
    })
}

/// Ops per second of a bare io_uring loop with no runtime (the `io-uring` crate directly, the
/// same ring flags as uring's driver, or others with `URING_BENCH_RAW_SETUP=plain|coop`): `depth` reads or writes in flight, all completions reaped
/// and resubmitted in one `io_uring_enter` per batch. The ceiling any runtime can reach.
fn run_raw_ring(path: &Path, cfg: &Config, w: &Workload, round: u64, registered: bool) -> f64 {
    use io_uring::{opcode, types, IoUring};
    use std::os::fd::AsRawFd;
    let mut builder = IoUring::builder();
    builder.setup_submit_all().setup_cqsize(4 * w.depth as u32);
    match std::env::var("URING_BENCH_RAW_SETUP").as_deref() {
        Ok("plain") => {}
        Ok("coop") => {
            builder.setup_coop_taskrun().setup_taskrun_flag();
        }
        _ => {
            builder.setup_single_issuer().setup_defer_taskrun();
        }
    }
    let mut ring: IoUring = builder
        .build(w.depth.next_power_of_two() as u32)
        .expect("io_uring");
    let file = open_std(path, w);
    let fd = types::Fd(file.as_raw_fd());
    let mut offs = Offsets::new(cfg.size, w, round * 1000 + 1, Rc::new(Cell::new(0)));
    let mut bufs: Vec<AlignedBuf> = (0..w.depth).map(|_| AlignedBuf::zeroed(w.block)).collect();
    if registered {
        let iovecs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.capacity(),
            })
            .collect();
        ring.submitter()
            .register_files(&[file.as_raw_fd()])
            .expect("register file");
        // SAFETY: the registered buffers stay alive and in place until the ring (which holds
        // the registration) is dropped: the function drops `ring` before `bufs`.
        unsafe { ring.submitter().register_buffers(&iovecs) }.expect("register buffers");
    }
    let entry = |i: usize, offs: &mut Offsets, bufs: &mut [AlignedBuf]| {
        let ptr = bufs[i].as_mut_ptr();
        let e = if registered {
            let fixed = types::Fixed(0);
            if w.write {
                opcode::WriteFixed::new(fixed, ptr, w.block as u32, i as u16)
                    .offset(offs.next())
                    .build()
            } else {
                opcode::ReadFixed::new(fixed, ptr, w.block as u32, i as u16)
                    .offset(offs.next())
                    .build()
            }
        } else if w.write {
            opcode::Write::new(fd, ptr, w.block as u32)
                .offset(offs.next())
                .build()
        } else {
            opcode::Read::new(fd, ptr, w.block as u32)
                .offset(offs.next())
                .build()
        };
        e.user_data(i as u64)
    };
    for i in 0..w.depth {
        let e = entry(i, &mut offs, &mut bufs);
        // SAFETY: the buffer lives in `bufs` until the loop has reaped every completion.
        unsafe { ring.submission().push(&e).expect("sq has room") };
    }
    let mut done = 0u64;
    let mut live = w.depth;
    let mut deadline = Deadline::new(cfg.secs);
    let mut stop = false;
    let start = Instant::now();
    let mut ready: Vec<(usize, i32)> = Vec::with_capacity(w.depth);
    // How many completions each enter waits for (1 unless URING_BENCH_RAW_WAIT says more).
    let wait_for: usize = std::env::var("URING_BENCH_RAW_WAIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    while live > 0 {
        ring.submit_and_wait(wait_for.min(live))
            .expect("io_uring_enter");
        ready.extend(
            ring.completion()
                .map(|c| (c.user_data() as usize, c.result())),
        );
        for (i, res) in ready.drain(..) {
            assert_eq!(res, w.block as i32, "raw ring op");
            done += 1;
            stop = stop || deadline.passed();
            if stop {
                live -= 1;
            } else {
                let e = entry(i, &mut offs, &mut bufs);
                // SAFETY: as above; the SQ has room for every completion reaped.
                unsafe { ring.submission().push(&e).expect("sq has room") };
            }
        }
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    // The ring goes first: it holds the registered buffers.
    drop(ring);
    drop(bufs);
    rate
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Ops per second for tokio::fs: `depth` tasks, each with its own `tokio::fs::File`, each op a
/// `seek` then `read_exact`/`write_all`.
fn run_tokio_fs(path: &Path, cfg: &Config, w: &Workload, round: u64) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
    let rt = tokio_rt();
    rt.block_on(async {
        let seq = Rc::new(Cell::new(0));
        let local = tokio::task::LocalSet::new();
        let start = Instant::now();
        let total = local
            .run_until(async {
                let mut tasks = Vec::new();
                for t in 0..w.depth {
                    let mut offs =
                        Offsets::new(cfg.size, w, round * 1000 + t as u64 + 1, seq.clone());
                    let w = *w;
                    let secs = cfg.secs;
                    let mut f = tokio::fs::File::from_std(open_std(path, &w));
                    tasks.push(tokio::task::spawn_local(async move {
                        let mut buf = vec![0u8; w.block];
                        let mut done = 0u64;
                        let mut deadline = Deadline::new(secs);
                        while !deadline.passed() {
                            let off = offs.next();
                            f.seek(std::io::SeekFrom::Start(off)).await.expect("seek");
                            if w.write {
                                f.write_all(&buf).await.expect("write");
                                f.flush().await.expect("flush");
                            } else {
                                f.read_exact(&mut buf).await.expect("read");
                            }
                            done += 1;
                        }
                        done
                    }));
                }
                let mut total = 0;
                for t in tasks {
                    total += t.await.expect("tokio task");
                }
                total
            })
            .await;
        total as f64 / start.elapsed().as_secs_f64()
    })
}

/// Ops per second for tokio with `spawn_blocking(pread/pwrite)` per op, `depth` tasks.
fn run_tokio_pread(path: &Path, cfg: &Config, w: &Workload, round: u64) -> f64 {
    let rt = tokio_rt();
    rt.block_on(async {
        let f = Arc::new(open_std(path, w));
        let seq = Rc::new(Cell::new(0));
        let local = tokio::task::LocalSet::new();
        let start = Instant::now();
        let total = local
            .run_until(async {
                let mut tasks = Vec::new();
                for t in 0..w.depth {
                    let mut offs =
                        Offsets::new(cfg.size, w, round * 1000 + t as u64 + 1, seq.clone());
                    let (w, f, secs) = (*w, f.clone(), cfg.secs);
                    tasks.push(tokio::task::spawn_local(async move {
                        let mut buf = AlignedBuf::zeroed(w.block);
                        let mut done = 0u64;
                        let mut deadline = Deadline::new(secs);
                        while !deadline.passed() {
                            let off = offs.next();
                            let f = f.clone();
                            let (n, b) = tokio::task::spawn_blocking(move || {
                                let n = if w.write {
                                    f.write_at(&buf, off)
                                } else {
                                    f.read_at(&mut buf, off)
                                };
                                (n, buf)
                            })
                            .await
                            .expect("blocking task");
                            buf = b;
                            assert_eq!(n.expect("pread"), w.block);
                            done += 1;
                        }
                        done
                    }));
                }
                let mut total = 0;
                for t in tasks {
                    total += t.await.expect("tokio task");
                }
                total
            })
            .await;
        total as f64 / start.elapsed().as_secs_f64()
    })
}

/// Ops per second of a plain positional read (or write) loop on this thread, cycling through
/// `nbufs` buffers (1 for the plain loop; `depth` to give it the same cache footprint as
/// `depth` reads in flight).
fn run_std(path: &Path, cfg: &Config, w: &Workload, round: u64, nbufs: usize) -> f64 {
    let f = open_std(path, w);
    let mut offs = Offsets::new(cfg.size, w, round + 1, Rc::new(Cell::new(0)));
    let mut bufs: Vec<AlignedBuf> = (0..nbufs).map(|_| AlignedBuf::zeroed(w.block)).collect();
    let mut done = 0u64;
    let start = Instant::now();
    let mut deadline = Deadline::new(cfg.secs);
    while !deadline.passed() {
        let buf = &mut bufs[done as usize % nbufs];
        let off = offs.next();
        let n = if w.write {
            f.write_at(buf, off)
        } else {
            f.read_at(buf, off)
        };
        assert_eq!(n.expect("pread"), w.block);
        done += 1;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// Ops per second of fio's io_uring engine, or `None` without fio (or if it fails).
fn run_fio(path: &Path, cfg: &Config, w: &Workload) -> Option<Sample> {
    let rw = match (w.write, w.random) {
        (false, true) => "randread",
        (false, false) => "read",
        (true, true) => "randwrite",
        (true, false) => "write",
    };
    let out = Command::new("fio")
        .arg("--name=uring-bench")
        .arg(format!("--filename={}", path.display()))
        .arg(format!("--size={}", cfg.size))
        .arg(format!("--rw={rw}"))
        .arg(format!("--bs={}", w.block))
        .arg("--ioengine=io_uring")
        .arg(format!("--iodepth={}", w.depth))
        .arg(format!("--direct={}", w.direct as u8))
        .arg("--invalidate=0")
        .arg("--time_based")
        .arg(format!("--runtime={}ms", (cfg.secs * 1000.0) as u64))
        .arg("--randrepeat=0")
        .arg("--output-format=json")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("fio failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let json = String::from_utf8_lossy(&out.stdout);
    let section = if w.write { "\"write\"" } else { "\"read\"" };
    let at = json.find(section)?;
    let iops = json_number(&json[at..], "\"iops\"")?;
    let cpu = json_number(&json, "\"usr_cpu\"")? + json_number(&json, "\"sys_cpu\"")?;
    Some(Sample {
        ops_per_sec: iops,
        ops_per_cpu_sec: iops / (cpu / 100.0).max(1e-9),
    })
}

/// The number after the first `key :` in fio's JSON text.
fn json_number(text: &str, key: &str) -> Option<f64> {
    let k = text.find(key)?;
    let v = text[k + key.len()..].trim_start_matches([' ', ':']);
    let end = v.find([',', '\n', ' ', '}'])?;
    v[..end].trim().parse().ok()
}

/// One measurement: throughput, and throughput per second of CPU the process used (user and
/// system, all its threads: tokio's blocking pool and io_uring's io-wq workers included), which
/// a noisy neighbour on a shared machine disturbs much less than wall-clock throughput.
#[derive(Clone, Copy)]
struct Sample {
    ops_per_sec: f64,
    ops_per_cpu_sec: f64,
}

fn cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs an in-process engine, measuring its CPU time as well.
fn with_cpu(run: impl FnOnce() -> f64) -> Sample {
    let (cpu0, t0) = (cpu_secs(), Instant::now());
    let ops_per_sec = run();
    let (cpu, wall) = (cpu_secs() - cpu0, t0.elapsed().as_secs_f64());
    Sample {
        ops_per_sec,
        ops_per_cpu_sec: ops_per_sec * wall / cpu.max(1e-9),
    }
}

fn fio_available() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Creates the test file with non-zero data (no holes) unless it exists with the right size.
fn prepare_file(size: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("uring-bench-fs-{}M.dat", size >> 20));
    if std::fs::metadata(&path).map(|m| m.len()).ok() == Some(size) {
        return path;
    }
    eprintln!("creating {} ({} MiB) ...", path.display(), size >> 20);
    let f = std::fs::File::create(&path).expect("create the benchmark file");
    let mut chunk = vec![0u8; 1 << 20];
    let mut x = 0x1234_5678_9abc_def1u64;
    for (i, b) in chunk.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x as u8) | (i as u8 & 1);
    }
    for off in (0..size).step_by(1 << 20) {
        f.write_all_at(&chunk, off)
            .expect("write the benchmark file");
    }
    f.sync_all().expect("sync the benchmark file");
    path
}

/// Reads the whole file once so the hot rows find it in the page cache.
fn warm(path: &Path) {
    let f = std::fs::File::open(path).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while let Ok(n) = f.read_at(&mut buf, off) {
        if n == 0 {
            break;
        }
        off += n as u64;
    }
}

fn fmt_rate(ops: f64, block: usize) -> (String, String) {
    let mib = ops * block as f64 / (1 << 20) as f64;
    (format!("{:.0}", ops), format!("{:.1}", mib))
}

/// Runs the suite and prints its table. `args`: see [`Config::from_args`].
pub fn run(args: &[String]) {
    let cfg = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) if e == USAGE => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let path = prepare_file(cfg.size);
    let fio = fio_available();
    let mut rows = Vec::new();
    for w in WORKLOADS {
        if cfg
            .only
            .as_ref()
            .is_some_and(|o| !w.name.contains(o.as_str()))
        {
            continue;
        }
        if !w.direct {
            warm(&path);
        }
        let want = |e: &str| {
            cfg.engines
                .as_ref()
                .is_none_or(|v| v.iter().any(|x| x == e))
        };
        type Engine<'a> = (&'static str, Box<dyn Fn(u64) -> Option<Sample> + 'a>);
        let mut engines: Vec<Engine> = vec![(
            "uring (QD tasks)",
            Box::new(|r| Some(with_cpu(|| run_uring(&path, &cfg, w, r)))),
        )];
        if w.depth > 1 {
            engines.push((
                "uring (QD futures, 1 task)",
                Box::new(|r| Some(with_cpu(|| run_uring_futures(&path, &cfg, w, r)))),
            ));
        }
        if want("raw") {
            engines.push((
                "bare io_uring loop, no runtime",
                Box::new(|r| Some(with_cpu(|| run_raw_ring(&path, &cfg, w, r, false)))),
            ));
        }
        if want("raw-fixed") {
            engines.push((
                "bare io_uring loop, fixed file+bufs",
                Box::new(|r| Some(with_cpu(|| run_raw_ring(&path, &cfg, w, r, true)))),
            ));
        }
        if !w.direct && want("tokio-fs") {
            engines.push((
                "tokio::fs (seek+read)",
                Box::new(|r| Some(with_cpu(|| run_tokio_fs(&path, &cfg, w, r)))),
            ));
        }
        if want("tokio-pread") {
            engines.push((
                "tokio spawn_blocking pread",
                Box::new(|r| Some(with_cpu(|| run_tokio_pread(&path, &cfg, w, r)))),
            ));
        }
        if want("std") {
            engines.push((
                "std pread loop, 1 thread",
                Box::new(|r| Some(with_cpu(|| run_std(&path, &cfg, w, r, 1)))),
            ));
        }
        if w.depth > 1 && want("std-rotating") {
            engines.push((
                "std pread loop, QD buffers in turn",
                Box::new(|r| Some(with_cpu(|| run_std(&path, &cfg, w, r, w.depth)))),
            ));
        }
        if fio && want("fio") {
            engines.push(("fio io_uring", Box::new(|_| run_fio(&path, &cfg, w))));
        }
        // Rounds interleave the engines, so a noisy neighbour on the shared machine slows all
        // of them alike rather than one whole row.
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); engines.len()];
        for r in 0..cfg.rounds as u64 {
            for (i, (_, run)) in engines.iter().enumerate() {
                if let Some(x) = run(r) {
                    samples[i].push(x);
                }
            }
        }
        let medians: Vec<Option<(f64, f64)>> = samples
            .iter()
            .map(|xs| {
                let mut ops: Vec<f64> = xs.iter().map(|x| x.ops_per_sec).collect();
                let mut cpu: Vec<f64> = xs.iter().map(|x| x.ops_per_cpu_sec).collect();
                (!xs.is_empty()).then(|| (median(&mut ops), median(&mut cpu)))
            })
            .collect();
        let (uring, uring_cpu) = medians[0].expect("uring ran");
        for ((engine, _), m) in engines.iter().zip(medians) {
            let cells = match m {
                Some((ops, cpu)) => {
                    let (i, mib) = fmt_rate(ops, w.block);
                    vec![
                        i,
                        mib,
                        format!("{cpu:.0}"),
                        format!("{:.2}x", uring / ops),
                        format!("{:.2}x", uring_cpu / cpu),
                    ]
                }
                None => vec![
                    "failed".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ],
            };
            // The engines' names say "read"; for the write workload they write.
            let engine = if w.write {
                engine
                    .replace("pread", "pwrite")
                    .replace("seek+read", "seek+write_all")
            } else {
                engine.to_string()
            };
            let mut row = vec![w.name.to_string(), engine];
            row.extend(cells);
            rows.push(row);
        }
        eprintln!("done: {}", w.name);
    }
    print_table(
        &format!(
            "fs: {} MiB file, {} x {:.1} s rounds (median); uring/this = uring's figure / the row's",
            cfg.size >> 20,
            cfg.rounds,
            cfg.secs
        ),
        &[
            "workload",
            "engine",
            "IOPS",
            "MiB/s",
            "IOPS per CPU-s",
            "uring/this IOPS",
            "uring/this per CPU",
        ],
        &rows,
    );
    if !fio {
        println!("\n(fio is not installed: no fio rows)");
    }
}
