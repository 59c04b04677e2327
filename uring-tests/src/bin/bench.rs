//! The benchmark suite: runs uring and its peers side by side on the same work and prints tables.
//!
//! `cargo run --release -p uring-tests --bin bench` runs every suite with defaults;
//! `-- core|echo|fs` runs one.
fn main() {}
