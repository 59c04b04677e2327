//! The benchmark suite: runs uring and its peers side by side on the same work and prints tables.
//!
//! `cargo run --release -p uring-tests --bin bench` runs a short pass of every suite (core,
//! threads, process, echo, http, proxy, files; about two and a half minutes) and ends with one
//! summary table of every figure against every peer. `-- --full` runs the whole suite with its full defaults
//! (about 12 minutes, most of it the file suite, which writes a 1 GiB file), also ending with
//! the summary. `-- core|process|threads|echo|http|proxy|fs` runs one suite with its full defaults.
//! `-- core ROW` runs one row of the core suite (for profiling: `perf record -g
//! target/release/bench core spawn --only uring`), `-- threads spawn` one row of the threads
//! suite, `-- echo 50x64` one row of the echo suite, `-- http h2x50` one row of the http suite, `-- proxy curl` one row of the proxy suite.
//! `--rounds N` sets the rounds per figure of the core, process, threads, echo, http and proxy
//! suites;
//! `--only uring|tokio` runs one side of the core suite. `-- fs --help` lists the file suite's
//! own options.
//!
//! The short pass does the same kind of work as the full suite and prints the same kind of
//! ratios, with less of it: the core suite unchanged (it takes seconds), the threads suite with
//! fewer rounds and two echo rows, two echo rows in shorter windows, the http suite's four rows
//! in 3 rounds of 0.6 s windows, the proxy suite's three rows in 3 rounds of 0.3 s wrk windows
//! and a 256 MiB curl fetch, four file workloads on a smaller file in shorter rounds with
//! the main peers. The
//! suites measure for fixed durations, so a busy machine makes the figures noisier but the pass
//! hardly longer.

use std::time::{Duration, Instant};
use uring_tests::bench::{self, SummaryRow};

const USAGE: &str =
    "usage: bench [--full] [all|core|process|threads|echo|http|proxy|fs] [ROW] [--rounds N] [--only uring|tokio]
  (no arguments)  the short pass of every suite, about 2.5 minutes, then one summary
                  table of uring against every peer: the core suite as in full; the process
                  suite in one round (spawn and wait 1,000 `true`, one and 16 at a time); the threads
                  suite with fewer rounds (echo on 2 threads at 50x64 and 500x4096, 10k idle
                  connections once); echo rows 50x64 and 500x4096,
                  5 windows of 0.4 s per server; the http rows (wrk at 50 and 500 connections,
                  h2load at 50x10 and 500x1 streams) in 3 rounds of 0.6 s windows per server;
                  the proxy rows (wrk at 50 and 500 connections, 0.3 s windows, and curl
                  fetching 256 MiB) in 3 rounds per proxy;
                  four file workloads (hot and O_DIRECT 4K random
                  reads at QD32, 1M sequential reads, 4K random writes) on a 256 MiB file, 3 rounds
                  of 0.5 s, against tokio::fs, spawn_blocking, a std loop, a bare io_uring loop
                  and fio (where installed)
  --full          the whole suite with its full defaults (about 12 minutes, most of it the file
                  suite on a 1 GiB file; every echo row and file workload), then the summary table
  all             the same as no suite (the short pass, or the whole suite with --full)
  core [ROW]      the core suite, or one row of it (spawn, sleep, pingpong)
  process [ROW]   spawn and wait 1,000 `true` against tokio::process and std, or one row
                  (sequential, concurrent); 3 rounds (about 15-25 s; 1 round, 6-10 s, in the
                  short pass)
  threads [ROW]   the threads suite (uring::Pool against tokio multi-thread), or one row of it
                  (spawn, blocking, echo, memory)
  echo [ROW]      the echo suite, or one row, CONNSxBYTES (e.g. 50x64); URING_BENCH_QUICK=1 for
                  short windows
  http [ROW]      the http suite (the same hyper service on uring and tokio, under wrk and
                  h2load, installed with apt-get when missing), or one row of it (h1x50,
                  h1x500, h2x50, h2x500)
  proxy [ROW]     the proxy suite (examples/proxy against a tokio copy_bidirectional proxy
                  and haproxy, plain and splice-auto, in front of nginx; wrk with 1 KiB
                  responses and curl fetching 1 GiB; nginx-light, haproxy, wrk and curl are
                  installed with apt-get when missing), or one row of it (wrk50, wrk500, curl)
  fs ARGS         the file suite with its own options (bench fs --help)
  --rounds N      rounds per figure of the core, process, threads, echo, http and proxy suites (in
                  the short pass: echo windows per server)
  --only R        run one side of the core suite only, uring or tokio (for profiling)
  A single suite (core, process, threads, echo, http, proxy, fs) runs with its full defaults and prints its own tables only.";

/// Measured windows per echo server and row in the short pass. Five, not the full suite's ten:
/// an odd count, so the median is a measured window, and enough that one burst of noise on the
/// shared machine does not move it.
const SHORT_ECHO_ROUNDS: usize = 5;

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some("fs") {
        bench::fs::run(&raw[1..]);
        return;
    }
    let mut suite: Option<String> = None;
    let mut row: Option<String> = None;
    let mut rounds: Option<usize> = None;
    let mut only: Option<String> = None;
    let mut full = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            "--full" => full = true,
            "--rounds" => {
                rounds = Some(
                    args.next()
                        .and_then(|n| n.parse().ok())
                        .filter(|&n| n > 0)
                        .unwrap_or_else(|| fail("--rounds needs a positive number")),
                );
            }
            "--only" => {
                only = args
                    .next()
                    .filter(|r| r == "uring" || r == "tokio")
                    .map(Some)
                    .unwrap_or_else(|| fail("--only needs uring or tokio"));
            }
            _ if suite.is_none() => suite = Some(a),
            _ if row.is_none() => row = Some(a),
            _ => fail(&format!("unexpected argument {a:?}")),
        }
    }
    let suite = suite.unwrap_or_else(|| "all".to_string());
    if !matches!(
        suite.as_str(),
        "all" | "core" | "process" | "threads" | "echo" | "http" | "proxy" | "fs"
    ) {
        fail(&format!("unknown suite {suite:?}"));
    }
    if let Some(r) = &row {
        if !matches!(
            suite.as_str(),
            "core" | "process" | "threads" | "echo" | "http" | "proxy"
        ) {
            fail(
                "a row can only be picked within the core, process, threads, echo, http or proxy \
                 suite",
            );
        }
        if suite == "proxy" && !bench::proxy::row_keys().contains(r) {
            fail(&format!(
                "unknown proxy row {r:?}; rows are {:?}",
                bench::proxy::row_keys()
            ));
        }
        if suite == "http" && !bench::http::row_keys().contains(r) {
            fail(&format!(
                "unknown http row {r:?}; rows are {:?}",
                bench::http::row_keys()
            ));
        }
        if suite == "process" && !bench::process::ROWS.contains(&r.as_str()) {
            fail(&format!(
                "unknown process row {r:?}; rows are {:?}",
                bench::process::ROWS
            ));
        }
        if suite == "threads" && !bench::threads::ROWS.contains(&r.as_str()) {
            fail(&format!(
                "unknown threads row {r:?}; rows are {:?}",
                bench::threads::ROWS
            ));
        }
        if suite == "core" && !bench::core::ROWS.contains(&r.as_str()) {
            fail(&format!(
                "unknown core row {r:?}; rows are {:?}",
                bench::core::ROWS
            ));
        }
    }
    let core_opts = bench::core::Options {
        rounds: rounds.unwrap_or(bench::core::DEFAULT_ROUNDS),
        row: row.clone(),
        runtime: only.clone(),
    };

    // One suite: its full defaults, its own tables, as before the short pass existed.
    match suite.as_str() {
        "core" => {
            bench::core::run(&core_opts);
            return;
        }
        "process" => {
            bench::process::run(
                rounds.unwrap_or(bench::process::DEFAULT_ROUNDS),
                row.as_deref(),
            );
            return;
        }
        "threads" => {
            let mut opts = bench::threads::Options::full(rounds);
            opts.row = row.clone();
            bench::threads::run(&opts);
            return;
        }
        "echo" => {
            bench::echo::run(
                rounds.unwrap_or(bench::echo::DEFAULT_ROUNDS),
                row.as_deref(),
            );
            return;
        }
        "http" => {
            let mut opts = bench::http::Options::full(rounds);
            if let Some(r) = &row {
                opts = opts.only(r);
            }
            bench::http::run(&opts);
            return;
        }
        "proxy" => {
            let mut opts = bench::proxy::Options::full(rounds);
            if let Some(r) = &row {
                opts = opts.only(r);
            }
            bench::proxy::run(&opts);
            return;
        }
        "fs" => {
            bench::fs::run(&[]);
            return;
        }
        _ => {}
    }

    let pass = if full { "full suite" } else { "short pass" };
    println!(
        "bench: {pass} of every suite (core, process, threads, echo, http, proxy, files); {}",
        if full {
            "about 14 minutes"
        } else {
            "about two and a half minutes; `--full` runs the whole suite (about 14 minutes)"
        }
    );
    let start = Instant::now();
    let mut summary: Vec<SummaryRow> = Vec::new();
    let mut took: Vec<(&str, Duration)> = Vec::new();

    let t = Instant::now();
    summary.extend(bench::core::run(&core_opts));
    took.push(("core", t.elapsed()));

    let t = Instant::now();
    summary.extend(bench::process::run(
        rounds.unwrap_or(if full {
            bench::process::DEFAULT_ROUNDS
        } else {
            1
        }),
        None,
    ));
    took.push(("process", t.elapsed()));

    let t = Instant::now();
    summary.extend(bench::threads::run(&if full {
        bench::threads::Options::full(rounds)
    } else {
        bench::threads::Options::short(rounds)
    }));
    took.push(("threads", t.elapsed()));

    let t = Instant::now();
    let echo = if full {
        bench::echo::run(rounds.unwrap_or(bench::echo::DEFAULT_ROUNDS), None)
    } else {
        bench::echo::run_short(rounds.unwrap_or(SHORT_ECHO_ROUNDS))
    };
    summary.extend(bench::echo::summary(&echo));
    took.push(("echo", t.elapsed()));

    let t = Instant::now();
    summary.extend(bench::http::run(&if full {
        bench::http::Options::full(rounds)
    } else {
        bench::http::Options::short(rounds)
    }));
    took.push(("http", t.elapsed()));

    let t = Instant::now();
    summary.extend(bench::proxy::run(&if full {
        bench::proxy::Options::full(rounds)
    } else {
        bench::proxy::Options::short(rounds)
    }));
    took.push(("proxy", t.elapsed()));

    let t = Instant::now();
    if full {
        summary.extend(bench::fs::run(&[]));
    } else {
        let cfg = bench::fs::Config::short().unwrap_or_else(|e| fail(&e));
        summary.extend(bench::fs::run_config(&cfg));
    }
    took.push(("files", t.elapsed()));

    bench::print_summary(
        &format!(
            "summary ({pass}): uring and each peer on the same work in this run; a peer's cell \
             is its figure (uring/peer). Where lower is better a ratio below 1 favours uring, \
             where higher is better one above 1"
        ),
        &summary,
    );
    println!(
        "- ratios: core, process and threads (spawn, spawn_blocking, memory), uring's median over \
         its rounds / the peer's; echo, threads echo, http, proxy and files, the median of per-round \
         ratios (each round measures both sides back to back), as in the tables above."
    );
    println!(
        "\nbench: {pass} took {:.0} s ({})",
        start.elapsed().as_secs_f64(),
        took.iter()
            .map(|(s, d)| format!("{s} {:.0} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn fail(msg: &str) -> ! {
    eprintln!("bench: {msg}\n{USAGE}");
    std::process::exit(2)
}
