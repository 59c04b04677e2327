//! Prints what this machine's kernel offers `uring`: the ring setup a runtime gets, the
//! io_uring features and opcodes (and which ops fall back to plain syscalls), the
//! `kernel.io_uring_disabled` sysctl and the locked-memory limit. The first thing to run on a
//! new machine:
//!
//! ```text
//! cargo run --example probe
//! ```
//!
//! Exits 0 with the report on stdout when a ring can be set up; otherwise prints why not (and
//! how to fix it) on stderr and exits 1.

fn main() {
    match uring::probe() {
        Ok(probe) => println!("{probe}"),
        Err(e) => {
            eprintln!("probe: io_uring is not usable here: {e}");
            std::process::exit(1);
        }
    }
}
