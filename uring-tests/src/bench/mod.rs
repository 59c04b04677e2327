//! Benchmark suites. Each runs uring and its peers on the same work in one process run and
//! prints a table of measured figures with ratios.

pub mod core;
pub mod echo;
pub mod fs;
pub mod http;
pub mod process;
pub mod proxy;
pub mod threads;

/// Prints a table: a title, a header row and rows, columns padded to fit.
pub fn print_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    let cols = header.len();
    // Widths in characters, not bytes: `format!`'s padding counts characters, and "µs" is
    // three bytes.
    let chars = |s: &str| s.chars().count();
    let mut width: Vec<usize> = header.iter().map(|h| chars(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(chars(c));
        }
    }
    println!("\n## {title}\n");
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = width[i]))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(header.iter().map(|s| s.to_string()).collect());
    line(width.iter().map(|w| "-".repeat(*w)).collect());
    for r in rows {
        line(r.clone());
    }
}

/// The median of `xs` (sorted in place).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Times and costs (ms, CPU per request): a ratio uring/peer below 1 means uring is better.
    Lower,
    /// Rates (requests/s, IOPS): a ratio uring/peer above 1 means uring is better.
    Higher,
}

/// One row of the closing summary: one work item, one figure, uring's value and each peer's.
#[derive(Debug, Clone)]
pub struct SummaryRow {
    /// The suite it comes from (`core`, `threads`, `echo`, `http`, `proxy`, `files`).
    pub suite: &'static str,
    /// The work, as the suite's own table names it.
    pub work: String,
    /// The figure's unit, e.g. `ms` or `IOPS`.
    pub figure: &'static str,
    /// Which way the figure is better.
    pub better: Better,
    /// Decimals to print the figures with.
    pub decimals: usize,
    /// uring's figure.
    pub uring: f64,
    /// Each peer that ran: its summary column (see [`PEER_COLUMNS`]), its figure, and the ratio
    /// uring/peer exactly as the suite's own table computes it (paired per round where the suite
    /// pairs rounds), so the summary never disagrees with the table above it.
    pub peers: Vec<(&'static str, f64, f64)>,
}

/// The summary's peer columns and what each one is in each suite, printed under the table. One
/// column per kind of peer rather than per suite's engine name keeps the table narrow enough for
/// a terminal: the file suite's tokio::fs and the core suite's tokio runtime share a column.
pub const PEER_COLUMNS: &[(&str, &str)] = &[
    (
        "tokio",
        "tokio current_thread (core, echo, process: tokio::process; http: with a LocalSet; \
         proxy: copy_bidirectional; threads: spawn_blocking, memory); tokio::fs \
         seek+read/write_all (files)",
    ),
    (
        "tokio mt",
        "tokio multi-thread runtime with 2 workers (threads)",
    ),
    (
        "tokio ct x2",
        "two tokio current_thread runtimes on two threads, an SO_REUSEPORT listener each \
         (threads)",
    ),
    (
        "io_uring loop",
        "hand-written io_uring loop, no runtime (echo: multishot recv into a buffer ring; \
         files: the same ring flags as uring)",
    ),
    (
        "loop, same ops",
        "hand-written io_uring loop doing exactly uring's ops (echo raw-single)",
    ),
    (
        "loop, fixed",
        "hand-written io_uring loop with a registered file and buffers (files)",
    ),
    (
        "spawn_blocking",
        "tokio with spawn_blocking(pread/pwrite) per op (files)",
    ),
    (
        "std loop",
        "std pread/pwrite loop on one thread (files); std Command::status in a loop (process)",
    ),
    (
        "std loop, QD bufs",
        "the same cycling through QD buffers (files)",
    ),
    (
        "fio",
        "fio --ioengine=io_uring, same pattern and depth (files)",
    ),
    ("haproxy", "haproxy in tcp mode, one thread (proxy)"),
    (
        "haproxy splice",
        "haproxy in tcp mode, one thread, option splice-auto (proxy)",
    ),
];

/// Prints the closing summary: one row per work item and figure, uring's figure, and for each
/// peer its figure with the ratio uring/peer in parentheses. Columns of peers that ran nowhere
/// are left out.
pub fn print_summary(title: &str, rows: &[SummaryRow]) {
    let columns: Vec<(&str, &str)> = PEER_COLUMNS
        .iter()
        .copied()
        .filter(|(c, _)| rows.iter().any(|r| r.peers.iter().any(|p| p.0 == *c)))
        .collect();
    let mut header = vec!["suite", "work", "figure", "better", "uring"];
    header.extend(columns.iter().map(|(c, _)| *c));
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let fmt = |x: f64| {
                if x.is_finite() {
                    format!("{x:.*}", r.decimals)
                } else {
                    "-".to_string()
                }
            };
            let better = match r.better {
                Better::Lower => "lower",
                Better::Higher => "higher",
            };
            let mut cells = vec![
                r.suite.to_string(),
                r.work.clone(),
                r.figure.to_string(),
                better.to_string(),
                fmt(r.uring),
            ];
            cells.extend(columns.iter().map(|(c, _)| {
                r.peers
                    .iter()
                    .find(|p| p.0 == *c)
                    .map_or("-".to_string(), |&(_, v, ratio)| {
                        if ratio.is_finite() {
                            format!("{} ({ratio:.2}x)", fmt(v))
                        } else {
                            format!("{} (-)", fmt(v))
                        }
                    })
            }));
            cells
        })
        .collect();
    print_table(title, &header, &table);
    println!();
    for (c, what) in columns {
        println!("- {c}: {what}");
    }
}
