//! The benchmark suite: runs uring and its peers side by side on the same work and prints tables.
//!
//! `cargo run --release -p uring-tests --bin bench` runs every suite with defaults;
//! `-- core|echo|fs` runs one.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fs") => uring_tests::bench::fs::run(&args[1..]),
        None => uring_tests::bench::fs::run(&[]),
        Some(other) => {
            eprintln!("unknown suite {other}: use core, echo or fs");
            std::process::exit(2);
        }
    }
}
