//! The engines the fs suite compares: uring (tasks or futures), a bare io_uring loop, tokio::fs,
//! tokio `spawn_blocking`, a std positional loop and fio. Each returns operations per second.

use super::{buffer, open_std, Config, Deadline, Offsets, Workload};
use std::cell::Cell;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use uring::buf::{IoBuf, IoBufMut};
use uring::fs::AlignedBuf;

/// Ops per second for uring: `depth` tasks on one runtime sharing one `File`.
pub(super) fn run_uring(path: &Path, cfg: &Config, w: &Workload, round: u64) -> f64 {
    let rt = uring::Runtime::new().expect("uring runtime");
    rt.block_on(async {
        let f = Rc::new(uring::fs::File::from(open_std(path, w)));
        qd_tasks(f, cfg, w, round, || buffer(w), AlignedBuf::clear).await
    })
}

/// As [`run_uring`], with each task's buffer a `FixedBuf` from one `FixedBufPool` registered
/// with the ring (so the ops are `READ_FIXED`/`WRITE_FIXED`).
pub(super) fn run_uring_fixed(path: &Path, cfg: &Config, w: &Workload, round: u64) -> f64 {
    let rt = uring::Runtime::new().expect("uring runtime");
    rt.block_on(async {
        let f = Rc::new(uring::fs::File::from(open_std(path, w)));
        let pool = uring::buf::FixedBufPool::new(w.depth, w.block).expect("register buffers");
        assert!(pool.is_registered(), "this kernel registers buffers");
        let buf = || {
            let mut buf = pool.get().expect("one buffer per task");
            if w.write {
                buf.set_len(w.block);
            }
            buf
        };
        qd_tasks(f, cfg, w, round, buf, uring::buf::FixedBuf::clear).await
    })
}

/// `w.depth` tasks on the current runtime, each looping `read_at` (after `clear`) or `write_at`
/// of its own buffer from `make_buf` on `f` until the deadline; ops per second.
async fn qd_tasks<B: IoBuf + IoBufMut>(
    f: Rc<uring::fs::File>,
    cfg: &Config,
    w: &Workload,
    round: u64,
    mut make_buf: impl FnMut() -> B,
    clear: fn(&mut B),
) -> f64 {
    let seq = Rc::new(Cell::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..w.depth)
        .map(|t| {
            let f = f.clone();
            let mut offs = Offsets::new(cfg.size, w, round * 1000 + t as u64 + 1, seq.clone());
            let w = *w;
            let secs = cfg.secs;
            let mut buf = make_buf();
            uring::spawn(async move {
                let mut done = 0u64;
                let mut deadline = Deadline::new(secs);
                while !deadline.passed() {
                    let off = offs.next();
                    let (res, b) = if w.write {
                        f.write_at(buf, off).await
                    } else {
                        clear(&mut buf);
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
pub(super) fn run_uring_futures(path: &Path, cfg: &Config, w: &Workload, round: u64) -> f64 {
    let rt = uring::Runtime::new().expect("uring runtime");
    rt.block_on(async {
        let f = Rc::new(uring::fs::File::from(open_std(path, w)));
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
/// same ring flags as uring's driver, or others with `URING_BENCH_RAW_SETUP=plain|coop`):
/// `depth` reads or writes in flight, all completions reaped and resubmitted in one
/// `io_uring_enter` per batch (`URING_BENCH_RAW_WAIT=N` waits for N). The ceiling any runtime
/// can reach; with `registered`, the file and buffers are registered with the ring.
pub(super) fn run_raw_ring(
    path: &Path,
    cfg: &Config,
    w: &Workload,
    round: u64,
    registered: bool,
) -> f64 {
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
                // As uring does for O_DIRECT files (and fio by default): each SQE reaches the
                // device when it is made, not with the batch.
                if w.direct {
                    // EINTR or EBUSY: the SQE stays queued for the next submit_and_wait.
                    let _ = ring.submit();
                }
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
pub(super) fn run_tokio_fs(path: &Path, cfg: &Config, w: &Workload, round: u64) -> f64 {
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
pub(super) fn run_tokio_pread(path: &Path, cfg: &Config, w: &Workload, round: u64) -> f64 {
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
pub(super) fn run_std(path: &Path, cfg: &Config, w: &Workload, round: u64, nbufs: usize) -> f64 {
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
pub(super) fn run_fio(path: &Path, cfg: &Config, w: &Workload) -> Option<Sample> {
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
pub(super) struct Sample {
    pub(super) ops_per_sec: f64,
    pub(super) ops_per_cpu_sec: f64,
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
pub(super) fn with_cpu(run: impl FnOnce() -> f64) -> Sample {
    let (cpu0, t0) = (cpu_secs(), Instant::now());
    let ops_per_sec = run();
    let (cpu, wall) = (cpu_secs() - cpu0, t0.elapsed().as_secs_f64());
    Sample {
        ops_per_sec,
        ops_per_cpu_sec: ops_per_sec * wall / cpu.max(1e-9),
    }
}

pub(super) fn fio_available() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
