//! The fs benchmark suite: random and sequential reads and random writes on one large file, for
//! uring, tokio, a plain std positional loop on one thread, and fio's io_uring engine where fio
//! is installed.
//!
//! ```text
//! cargo run --release -p uring-tests --bin bench -- fs [--size 1G] [--secs 2] [--rounds 3] [--only QD32]
//! ```
//!
//! `bench` with no arguments runs the short pass ([`Config::short`]: four workloads on a
//! 256 MiB file, 3 rounds of 0.5 s); `bench --full` or `bench fs` the defaults below.
//!
//! The file (`$TMPDIR/uring-bench-fs-<size>M.dat`) is created once and reused. Every row runs
//! for a fixed duration per round; rounds interleave the engines (so a noisy neighbour on the
//! shared machine hits them alike) and the table shows medians. "Hot" rows read a file that is
//! fully in the page cache (it is read once first); `O_DIRECT` rows bypass the cache and show
//! what the device allows. Besides IOPS, each row shows IOPS per CPU-second the process used
//! (steadier than wall-clock figures when other processes share the cores), and uring's ratio to
//! the row on both, as the median of per-round ratios.
//!
//! Engines (see `engines.rs`):
//! * uring (QD tasks): one runtime, QD tasks each looping `read_at`/`write_at` on one shared
//!   `File`. uring (QD futures): one task keeping QD op futures in flight.
//! * bare io_uring loop: the `io-uring` crate with no runtime, same ring flags; and the same with
//!   a registered file and registered buffers (`READ_FIXED`). What the kernel allows a runtime.
//!   For `O_DIRECT` it hands each SQE to the kernel when made, as uring and fio do there.
//! * tokio::fs: QD tasks on a current-thread runtime, each with its own `tokio::fs::File`
//!   doing `seek` + `read_exact` (what tokio::fs offers; both hop to the blocking pool). Not
//!   possible with `O_DIRECT` (tokio's internal buffer is not aligned).
//! * tokio spawn_blocking pread: QD tasks each doing `spawn_blocking(pread)`, the fastest tokio
//!   can do, and the only tokio way to use `O_DIRECT`.
//! * std pread loop: `FileExt::read_at` in a loop on one thread (QD 1 by nature); also cycling
//!   through QD buffers, to match the cache footprint of QD reads in flight.
//! * fio io_uring: `fio --ioengine=io_uring` with the same pattern, size and depth;
//!   `--invalidate=0` for the hot rows (fio otherwise drops the cache first), `--direct=1` for
//!   `O_DIRECT`.

mod engines;

use super::{median, print_table, Better, SummaryRow};
use engines::*;

/// The name of the engine that runs uring with a `FixedBufPool` (registered buffers).
const FIXED_ENGINE: &str = "uring (QD tasks, FixedBufPool)";
use std::cell::Cell;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};
use uring::fs::AlignedBuf;

/// The suite's options, printed by `bench fs --help`.
pub const USAGE: &str = "usage: bench fs [--size N[K|M|G]] [--secs S] [--rounds R] [--only TEXT] [--engines LIST]
  --size    the test file's size (default 1G; also URING_BENCH_FS_SIZE), created once in $TMPDIR
  --secs    seconds per round of each row (default 2)
  --rounds  rounds per row, interleaved across engines; medians are reported (default 3)
  --only    run only the workloads whose name contains TEXT (e.g. QD32, O_DIRECT, write)
  --engines run only these peers besides uring: uring-fixed,tokio-fs,tokio-pread,std,std-rotating,raw,raw-fixed,fio";

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
    /// Only the workloads with exactly these names (the short pass's pick); `None` runs all.
    pub workloads: Option<Vec<&'static str>>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            size: 1 << 30,
            secs: 2.0,
            rounds: 3,
            only: None,
            engines: None,
            workloads: None,
        }
    }
}

impl Config {
    /// The short pass `bench` runs by default (about 35 s, a few more with fio): a 256 MiB file
    /// (a quarter of the full suite's, so creating and warming it is quick), 3 rounds of 0.5 s,
    /// and one workload of each kind (hot random reads, `O_DIRECT` random reads, hot sequential
    /// reads, buffered random writes) at the depth the targets name. Peers: tokio::fs, tokio
    /// spawn_blocking, the std loop, the bare io_uring loop and fio; the variants (registered
    /// buffers, rotating buffers, QD1) only run in the full suite. `URING_BENCH_FS_SIZE` still
    /// sets the size.
    ///
    /// # Errors
    ///
    /// When `URING_BENCH_FS_SIZE` is not a size.
    pub fn short() -> Result<Config, String> {
        let mut c = Config {
            size: 256 << 20,
            secs: 0.5,
            rounds: 3,
            only: None,
            engines: Some(
                [
                    "uring-fixed",
                    "tokio-fs",
                    "tokio-pread",
                    "std",
                    "raw",
                    "fio",
                ]
                .map(str::to_string)
                .to_vec(),
            ),
            workloads: Some(vec![
                "4K rand read, hot, QD32",
                "4K rand read, O_DIRECT, QD32",
                "1M seq read, hot, QD4",
                "4K rand write, buffered, QD32",
            ]),
        };
        if let Ok(s) = std::env::var("URING_BENCH_FS_SIZE") {
            c.size = parse_size(&s)? & !((1 << 20) - 1);
        }
        Ok(c)
    }

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

/// Runs the suite, prints its table and returns its rows for the closing summary. `args`: see
/// [`Config::from_args`].
pub fn run(args: &[String]) -> Vec<SummaryRow> {
    let cfg = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) if e == USAGE => {
            println!("{USAGE}");
            return Vec::new();
        }
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    run_config(&cfg)
}

/// Runs the suite as `cfg` says, prints its table and returns its rows for the closing summary:
/// per workload, uring's (QD tasks) IOPS and each peer's, with the same paired ratios as the
/// table.
pub fn run_config(cfg: &Config) -> Vec<SummaryRow> {
    let path = prepare_file(cfg.size);
    let fio = fio_available();
    let mut rows = Vec::new();
    let mut summary = Vec::new();
    for w in WORKLOADS {
        if cfg
            .only
            .as_ref()
            .is_some_and(|o| !w.name.contains(o.as_str()))
            || cfg.workloads.as_ref().is_some_and(|n| !n.contains(&w.name))
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
        // (name in the table, column in the closing summary (`None`: uring itself), the run).
        type Engine<'a> = (
            &'static str,
            Option<&'static str>,
            Box<dyn Fn(u64) -> Option<Sample> + 'a>,
        );
        let mut engines: Vec<Engine> = vec![(
            "uring (QD tasks)",
            None,
            Box::new(|r| Some(with_cpu(|| run_uring(&path, cfg, w, r)))),
        )];
        if want("uring-fixed") {
            engines.push((
                FIXED_ENGINE,
                None,
                Box::new(|r| Some(with_cpu(|| run_uring_fixed(&path, cfg, w, r)))),
            ));
        }
        if w.depth > 1 {
            engines.push((
                "uring (QD futures, 1 task)",
                None,
                Box::new(|r| Some(with_cpu(|| run_uring_futures(&path, cfg, w, r)))),
            ));
        }
        if want("raw") {
            engines.push((
                "bare io_uring loop, no runtime",
                Some("io_uring loop"),
                Box::new(|r| Some(with_cpu(|| run_raw_ring(&path, cfg, w, r, false)))),
            ));
        }
        if want("raw-fixed") {
            engines.push((
                "bare io_uring loop, fixed file+bufs",
                Some("loop, fixed"),
                Box::new(|r| Some(with_cpu(|| run_raw_ring(&path, cfg, w, r, true)))),
            ));
        }
        if !w.direct && want("tokio-fs") {
            engines.push((
                "tokio::fs (seek+read)",
                Some("tokio"),
                Box::new(|r| Some(with_cpu(|| run_tokio_fs(&path, cfg, w, r)))),
            ));
        }
        if want("tokio-pread") {
            engines.push((
                "tokio spawn_blocking pread",
                Some("spawn_blocking"),
                Box::new(|r| Some(with_cpu(|| run_tokio_pread(&path, cfg, w, r)))),
            ));
        }
        if want("std") {
            engines.push((
                "std pread loop, 1 thread",
                Some("std loop"),
                Box::new(|r| Some(with_cpu(|| run_std(&path, cfg, w, r, 1)))),
            ));
        }
        if w.depth > 1 && want("std-rotating") {
            engines.push((
                "std pread loop, QD buffers in turn",
                Some("std loop, QD bufs"),
                Box::new(|r| Some(with_cpu(|| run_std(&path, cfg, w, r, w.depth)))),
            ));
        }
        if fio && want("fio") {
            engines.push((
                "fio io_uring",
                Some("fio"),
                Box::new(|_| run_fio(&path, cfg, w)),
            ));
        }
        // Rounds interleave the engines, so a noisy neighbour on the shared machine slows all
        // of them alike rather than one whole row.
        // samples[engine][round]; `None` where a run failed (fio only).
        let mut samples: Vec<Vec<Option<Sample>>> = vec![Vec::new(); engines.len()];
        for r in 0..cfg.rounds as u64 {
            for (i, (_, _, run)) in engines.iter().enumerate() {
                samples[i].push(run(r));
            }
        }
        let mut peers = Vec::new();
        let mut uring_ops = f64::NAN;
        let fixed = engines
            .iter()
            .position(|(name, _, _)| *name == FIXED_ENGINE);
        for (i, (engine, column, _)) in engines.iter().enumerate() {
            let ok: Vec<Sample> = samples[i].iter().flatten().copied().collect();
            let cells = if ok.is_empty() {
                vec![
                    "failed".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]
            } else {
                let mut ops: Vec<f64> = ok.iter().map(|x| x.ops_per_sec).collect();
                let mut cpu: Vec<f64> = ok.iter().map(|x| x.ops_per_cpu_sec).collect();
                // Ratios pair uring's round with this engine's same round (run back to back),
                // then take the median: steadier than a ratio of medians on a noisy machine.
                let paired_with = |u: usize, f: fn(&Sample) -> f64| {
                    let mut rs: Vec<f64> = samples[u]
                        .iter()
                        .zip(&samples[i])
                        .filter_map(|(u, x)| Some(f(u.as_ref()?) / f(x.as_ref()?)))
                        .collect();
                    median(&mut rs)
                };
                let paired = |f: fn(&Sample) -> f64| paired_with(0, f);
                let median_ops = median(&mut ops);
                let ratio = paired(|x| x.ops_per_sec);
                match column {
                    None if i == 0 => uring_ops = median_ops,
                    None => {}
                    Some(c) => peers.push((*c, median_ops, ratio)),
                }
                let (i_ops, mib) = fmt_rate(median_ops, w.block);
                vec![
                    i_ops,
                    mib,
                    format!("{:.0}", median(&mut cpu)),
                    format!("{ratio:.2}x"),
                    format!("{:.2}x", paired(|x| x.ops_per_cpu_sec)),
                    match fixed {
                        Some(k) => format!("{:.2}x", paired_with(k, |x| x.ops_per_sec)),
                        None => "-".into(),
                    },
                ]
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
        summary.push(SummaryRow {
            suite: "files",
            work: format!("{} ({} MiB file)", w.name, cfg.size >> 20),
            figure: "IOPS",
            better: Better::Higher,
            decimals: 0,
            uring: uring_ops,
            peers,
        });
        // The same comparison with uring's registered buffers as uring's figure.
        if let Some(k) = fixed {
            let ops_of = |i: usize| {
                let mut v: Vec<f64> = samples[i].iter().flatten().map(|x| x.ops_per_sec).collect();
                median(&mut v)
            };
            let peers = engines
                .iter()
                .enumerate()
                .filter_map(|(i, (_, column, _))| {
                    let mut rs: Vec<f64> = samples[k]
                        .iter()
                        .zip(&samples[i])
                        .filter_map(|(u, x)| {
                            Some(u.as_ref()?.ops_per_sec / x.as_ref()?.ops_per_sec)
                        })
                        .collect();
                    Some((column.as_ref().copied()?, ops_of(i), median(&mut rs)))
                })
                .collect();
            summary.push(SummaryRow {
                suite: "files",
                work: format!("{}, FixedBufPool ({} MiB file)", w.name, cfg.size >> 20),
                figure: "IOPS",
                better: Better::Higher,
                decimals: 0,
                uring: ops_of(k),
                peers,
            });
        }
        eprintln!("done: {}", w.name);
    }
    print_table(
        &format!(
            "fs: {} MiB file, {} x {:.1} s rounds (median); uring/this = median over rounds of uring's figure / the row's in the same round (fixed/this: uring with FixedBufPool's)",
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
            "fixed/this IOPS",
        ],
        &rows,
    );
    if !fio {
        println!("\n(fio is not installed: no fio rows)");
    }
    summary
}
