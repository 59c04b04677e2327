//! The benchmark suite: runs uring and its peers side by side on the same work and prints tables.
//!
//! `cargo run --release -p uring-tests --bin bench` runs every suite with defaults;
//! `-- core|echo|fs` runs one. `-- core ROW` runs one row of the core suite (for profiling:
//! `perf record -g target/release/bench core spawn --only uring`), `-- echo 50x64` one row of the
//! echo suite. `--rounds N` sets the rounds per figure; `--only uring|tokio` runs one side of the
//! core suite. `-- fs --help` lists the file suite's own options.

use uring_tests::bench;

const USAGE: &str = "usage: bench [all|core|echo|fs] [ROW] [--rounds N] [--only uring|tokio]
  no suite: every suite with defaults
  core ROW: one row of the core suite (spawn, sleep, pingpong)
  echo ROW: one row of the echo suite, CONNSxBYTES (e.g. 50x64); URING_BENCH_QUICK=1 for short windows
  fs ARGS:  the file suite with its own options (bench fs --help)
  --only:   run one side of the core suite only (for profiling)";

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
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
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
    if !matches!(suite.as_str(), "all" | "core" | "echo" | "fs") {
        fail(&format!("unknown suite {suite:?}"));
    }
    if let Some(r) = &row {
        if suite != "core" && suite != "echo" {
            fail("a row can only be picked within the core or echo suite");
        }
        if suite == "core" && !bench::core::ROWS.contains(&r.as_str()) {
            fail(&format!(
                "unknown core row {r:?}; rows are {:?}",
                bench::core::ROWS
            ));
        }
    }
    let all = suite == "all";

    if all || suite == "core" {
        bench::core::run(&bench::core::Options {
            rounds: rounds.unwrap_or(bench::core::DEFAULT_ROUNDS),
            row: row.clone(),
            runtime: only.clone(),
        });
    }
    if all || suite == "echo" {
        bench::echo::run(
            rounds.unwrap_or(bench::echo::DEFAULT_ROUNDS),
            row.as_deref(),
        );
    }
    if all || suite == "fs" {
        bench::fs::run(&[]);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("bench: {msg}\n{USAGE}");
    std::process::exit(2)
}
