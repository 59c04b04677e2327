//! [`probe()`]: the kernel's io_uring as this runtime sees it, for a report on a new machine.
//!
//! It sets up a ring exactly as `Runtime::new` does (same size, same setup flags tried in the
//! same order), asks it what it offers, and reads the limits that decide whether rings can be
//! made at all. Opcode support comes from [`opcode_supported`], the very table the ops consult
//! to choose between the ring and their plain-syscall fallback, so the report says what the
//! runtime will do, not just what the kernel has.

use crate::driver::fixed::FixedFiles;
use crate::driver::setup::{build_ring, opcode_supported, RingSetup};
use crate::driver::{opcodes, DEFAULT_ENTRIES};
use io_uring::{opcode, Parameters};
use std::fmt;
use std::io;

/// What one opcode the runtime uses is for, and what happens without it.
struct OpUse {
    code: u8,
    used_for: &'static str,
    /// `None`: the runtime needs it (every such opcode is in Linux 5.11, the minimum).
    fallback: Option<&'static str>,
}

/// Every opcode the crate submits, in opcode order. A new op adds its line here.
const USED: &[OpUse] = &[
    OpUse {
        code: opcode::Readv::CODE,
        used_for: "vectored file reads (File::readv_at)",
        fallback: None,
    },
    OpUse {
        code: opcode::Writev::CODE,
        used_for: "vectored file writes (File::writev_at)",
        fallback: None,
    },
    OpUse {
        code: opcode::Fsync::CODE,
        used_for: "File::sync_all, sync_data",
        fallback: None,
    },
    OpUse {
        code: opcode::ReadFixed::CODE,
        used_for: "reads into a registered buffer (buf::FixedBuf)",
        fallback: None,
    },
    OpUse {
        code: opcode::WriteFixed::CODE,
        used_for: "writes from a registered buffer (buf::FixedBuf)",
        fallback: None,
    },
    OpUse {
        code: opcode::SendMsg::CODE,
        used_for: "datagram sends to an address, vectored stream writes",
        fallback: None,
    },
    OpUse {
        code: opcode::RecvMsg::CODE,
        used_for: "datagram receives with the sender, vectored stream reads",
        fallback: None,
    },
    OpUse {
        code: opcode::Accept::CODE,
        used_for: "accepts (TcpListener, UnixListener; multishot on 5.19+)",
        fallback: None,
    },
    OpUse {
        code: opcode::AsyncCancel::CODE,
        used_for: "cancelling dropped ops, shutdown",
        fallback: None,
    },
    OpUse {
        code: opcode::Connect::CODE,
        used_for: "connects (TcpStream, UnixStream, datagram connect)",
        fallback: None,
    },
    OpUse {
        code: opcode::Fallocate::CODE,
        used_for: "File::fallocate",
        fallback: None,
    },
    OpUse {
        code: opcode::OpenAt::CODE,
        used_for: "opening files (File::open, OpenOptions)",
        fallback: None,
    },
    OpUse {
        code: opcode::Close::CODE,
        used_for: "File::close",
        fallback: None,
    },
    OpUse {
        code: opcode::Statx::CODE,
        used_for: "metadata (fs::metadata, File::metadata)",
        fallback: None,
    },
    OpUse {
        code: opcode::Read::CODE,
        used_for: "reads (files, pipes, streams), the cross-thread wake's eventfd",
        fallback: None,
    },
    OpUse {
        code: opcode::Write::CODE,
        used_for: "writes (files, pipes, streams)",
        fallback: None,
    },
    OpUse {
        code: opcode::Send::CODE,
        used_for: "stream and connected-datagram sends",
        fallback: None,
    },
    OpUse {
        code: opcode::Recv::CODE,
        used_for: "stream and connected-datagram receives; Stream::recv_multishot into a \
                   buf::BufRing (buffer select 5.19+, IORING_RECV_MULTISHOT 6.0+, single-shot \
                   before)",
        fallback: None,
    },
    OpUse {
        code: opcode::Splice::CODE,
        used_for: "io::splice, copy/copy_bidirectional for bulk stream transfers, \
                   TcpStream::send_file (file -> pipe -> socket)",
        fallback: Some("io::splice and copy: a read into a buffer and a write of it"),
    },
    OpUse {
        code: opcode::Shutdown::CODE,
        used_for: "shutting down a stream's write half",
        fallback: None,
    },
    OpUse {
        code: opcode::RenameAt::CODE,
        used_for: "fs::rename",
        fallback: None,
    },
    OpUse {
        code: opcode::UnlinkAt::CODE,
        used_for: "fs::remove_file, remove_dir",
        fallback: None,
    },
    OpUse {
        code: opcode::MkDirAt::CODE,
        used_for: "fs::create_dir (5.15+)",
        fallback: Some("mkdirat(2) on the loop's thread"),
    },
    OpUse {
        code: opcode::SymlinkAt::CODE,
        used_for: "fs::symlink (5.15+)",
        fallback: Some("symlinkat(2) on the loop's thread"),
    },
    OpUse {
        code: opcode::LinkAt::CODE,
        used_for: "fs::hard_link (5.15+)",
        fallback: Some("linkat(2) on the loop's thread"),
    },
    OpUse {
        code: opcode::SendZc::CODE,
        used_for: "zero-copy stream sends (TcpStream::write_zc, write_all_zc; 6.0+)",
        fallback: Some("a plain SEND"),
    },
    OpUse {
        code: opcode::WaitId::CODE,
        used_for: "waiting for child processes (process::Child::wait)",
        fallback: Some("waitid(2) on a pidfd in the blocking pool"),
    },
    OpUse {
        code: opcode::Ftruncate::CODE,
        used_for: "File::set_len (6.9+)",
        fallback: Some("ftruncate(2) on the loop's thread"),
    },
];

/// The `IORING_FEAT_*` flags the kernel reported for the ring, by name, and whether the runtime
/// needs each (`true`) or merely benefits.
fn features(p: &Parameters) -> Vec<(&'static str, bool, bool)> {
    vec![
        ("SINGLE_MMAP", p.is_feature_single_mmap(), false),
        ("NODROP", p.is_feature_nodrop(), true),
        ("SUBMIT_STABLE", p.is_feature_submit_stable(), false),
        ("RW_CUR_POS", p.is_feature_rw_cur_pos(), false),
        ("CUR_PERSONALITY", p.is_feature_cur_personality(), false),
        ("FAST_POLL", p.is_feature_fast_poll(), false),
        ("POLL_32BITS", p.is_feature_poll_32bits(), false),
        ("SQPOLL_NONFIXED", p.is_feature_sqpoll_nonfixed(), false),
        ("EXT_ARG", p.is_feature_ext_arg(), true),
        ("NATIVE_WORKERS", p.is_feature_native_workers(), false),
        ("RSRC_TAGS", p.is_feature_resource_tagging(), false),
        ("CQE_SKIP", p.is_feature_skip_cqe_on_success(), false),
        ("LINKED_FILE", p.is_feature_linked_file(), false),
        ("RECVSEND_BUNDLE", p.is_feature_recvsend_bundle(), false),
        ("MIN_TIMEOUT", p.is_feature_min_timeout(), false),
        ("NO_IOWAIT", p.is_feature_no_iowait(), false),
    ]
}

/// One opcode the runtime uses, as [`Probe::used_opcodes`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbedOp {
    /// The kernel's name without `IORING_OP_` (`"READ"`).
    pub name: &'static str,
    /// The opcode number (`IORING_OP_READ` is 22).
    pub code: u8,
    /// Whether this kernel's io_uring offers it.
    pub supported: bool,
    /// Whether the runtime has a fallback (a plain syscall) for kernels without it; `false`
    /// means the runtime needs it.
    pub has_fallback: bool,
}

/// The value of the `kernel.io_uring_disabled` sysctl (`/proc/sys/kernel/io_uring_disabled`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoUringDisabled {
    /// No such file: a kernel before 6.6 (which has no such switch), or `/proc` not mounted.
    Absent,
    /// The value: 0 allows io_uring for all, 1 only for privileged processes and the members of
    /// `kernel.io_uring_group` (here when readable), 2 for nobody.
    Value(u32, Option<i64>),
    /// The file exists but could not be read or parsed: what went wrong.
    Unreadable(String),
}

/// The kernel's io_uring as this runtime sees it: the ring setup it gets, which features and
/// opcodes are there (and what falls back where), the `kernel.io_uring_disabled` sysctl and the
/// locked-memory limit. Made by [`probe()`]; `Display` prints a readable report
/// (`cargo run --example probe`).
#[derive(Debug)]
pub struct Probe {
    kernel: String,
    setup: RingSetup,
    sq_entries: u32,
    cq_entries: u32,
    features: Vec<(&'static str, bool, bool)>,
    ops: Vec<ProbedOp>,
    fixed_slots: u32,
    iowq_workers: Option<[u32; 2]>,
    disabled: IoUringDisabled,
    memlock: Option<(u64, u64)>,
}

/// Probes the kernel's io_uring the way a new `Runtime` would use it: sets up
/// a ring as `Runtime::new` does and reports what it got. The first thing to run on a new
/// machine: `cargo run --example probe`.
///
/// # Errors
///
/// When no ring can be set up: the error is `Runtime::new`'s, which says why and how to fix it
/// (the `kernel.io_uring_disabled` sysctl, a seccomp policy, a kernel without io_uring or older
/// than 5.11, the locked-memory limit).
///
/// ```
/// let probe = uring::probe().unwrap();
/// assert!(probe.is_supported(22)); // IORING_OP_READ
/// assert!(probe.used_opcodes().iter().all(|op| op.supported || op.has_fallback));
/// println!("{probe}");
/// ```
pub fn probe() -> io::Result<Probe> {
    let (ring, setup) = build_ring(DEFAULT_ENTRIES)?;
    let params = ring.params();
    let fixed_slots = FixedFiles::new(&ring).slots();
    let mut workers = [0u32; 2];
    // [0, 0] changes nothing and reads the current limits back.
    let iowq_workers = ring
        .submitter()
        .register_iowq_max_workers(&mut workers)
        .ok()
        .map(|_| workers);
    let ops = USED
        .iter()
        .map(|u| ProbedOp {
            name: opcodes::name(u.code).unwrap_or("UNKNOWN"),
            code: u.code,
            supported: opcode_supported(u.code),
            has_fallback: u.fallback.is_some(),
        })
        .collect();
    Ok(Probe {
        kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|_| "unknown".into()),
        setup,
        sq_entries: params.sq_entries(),
        cq_entries: params.cq_entries(),
        features: features(params),
        ops,
        fixed_slots,
        iowq_workers,
        disabled: io_uring_disabled(),
        memlock: memlock(),
    })
}

fn read_trimmed(path: &str) -> io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string())
}

fn io_uring_disabled() -> IoUringDisabled {
    match read_trimmed("/proc/sys/kernel/io_uring_disabled") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => IoUringDisabled::Absent,
        Err(e) => IoUringDisabled::Unreadable(e.to_string()),
        Ok(v) => match v.parse() {
            Ok(n) => {
                let group = read_trimmed("/proc/sys/kernel/io_uring_group")
                    .ok()
                    .and_then(|g| g.parse().ok());
                IoUringDisabled::Value(n, group)
            }
            Err(_) => IoUringDisabled::Unreadable(format!("unexpected value {v:?}")),
        },
    }
}

/// RLIMIT_MEMLOCK's (soft, hard) limits in bytes, `u64::MAX` for unlimited.
fn memlock() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: INV-ffi: getrlimit writes into the struct we pass, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return None;
    }
    // rlim_t is u64 on every 64-bit Linux target.
    let bytes = |v: libc::rlim_t| -> u64 {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            v
        }
    };
    Some((bytes(limit.rlim_cur), bytes(limit.rlim_max)))
}

/// `(major, minor)` of a kernel release string such as `6.18.0-arch1`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl Probe {
    /// The running kernel's release (`/proc/sys/kernel/osrelease`).
    pub fn kernel_release(&self) -> &str {
        &self.kernel
    }

    /// The ring setup a runtime gets here (what `Runtime::ring_setup` reports).
    pub fn ring_setup(&self) -> RingSetup {
        self.setup
    }

    /// The submission and completion queue sizes of a ring with `Runtime::new`'s defaults.
    pub fn ring_entries(&self) -> (u32, u32) {
        (self.sq_entries, self.cq_entries)
    }

    /// Whether the kernel reported `IORING_FEAT_<name>` (`"NODROP"`, `"FAST_POLL"`) for the
    /// ring; `false` for a name this probe does not know.
    pub fn has_feature(&self, name: &str) -> bool {
        self.features.iter().any(|&(n, on, _)| n == name && on)
    }

    /// Whether this kernel's io_uring offers opcode `code` (`IORING_REGISTER_PROBE`).
    pub fn is_supported(&self, code: u8) -> bool {
        opcode_supported(code)
    }

    /// Every opcode the runtime submits, whether this kernel has it, and whether the runtime
    /// falls back to a plain syscall without it.
    pub fn used_opcodes(&self) -> &[ProbedOp] {
        &self.ops
    }

    /// Slots the ring's registered-file table got (0: the kernel refused a table, and files
    /// are named by fd).
    pub fn registered_file_slots(&self) -> u32 {
        self.fixed_slots
    }

    /// The io-wq worker limits `[bounded, unbounded]` for this thread's rings, if the kernel
    /// reports them (`IORING_REGISTER_IOWQ_MAX_WORKERS`, 5.15+).
    pub fn iowq_max_workers(&self) -> Option<[u32; 2]> {
        self.iowq_workers
    }

    /// The `kernel.io_uring_disabled` sysctl.
    pub fn io_uring_disabled(&self) -> &IoUringDisabled {
        &self.disabled
    }

    /// RLIMIT_MEMLOCK's (soft, hard) limits in bytes (`u64::MAX`: unlimited), if readable.
    pub fn memlock_limit(&self) -> Option<(u64, u64)> {
        self.memlock
    }

    /// Whether every opcode the runtime uses goes through the ring here (no syscall fallback).
    pub fn all_ops_on_the_ring(&self) -> bool {
        self.ops.iter().all(|op| op.supported)
    }
}

fn limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else if v >= 1 << 20 && v.is_multiple_of(1 << 20) {
        format!("{} MiB", v >> 20)
    } else if v >= 1 << 10 && v.is_multiple_of(1 << 10) {
        format!("{} KiB", v >> 10)
    } else {
        format!("{v} bytes")
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = kernel_version(&self.kernel);
        let at_least = |v: (u32, u32)| version.is_some_and(|k| k >= v);
        writeln!(
            f,
            "uring probe: the kernel's io_uring as this runtime sees it"
        )?;
        writeln!(f)?;
        writeln!(f, "kernel              {}", self.kernel)?;
        match &self.disabled {
            IoUringDisabled::Absent => writeln!(
                f,
                "io_uring_disabled   absent (no /proc/sys/kernel/io_uring_disabled: kernel \
                 before 6.6, nothing to switch)"
            )?,
            IoUringDisabled::Value(0, _) => {
                writeln!(f, "io_uring_disabled   0 (allowed for every process)")?
            }
            IoUringDisabled::Value(1, group) => writeln!(
                f,
                "io_uring_disabled   1 (only privileged processes and members of \
                 kernel.io_uring_group{})",
                group.map(|g| format!(" = {g}")).unwrap_or_default()
            )?,
            IoUringDisabled::Value(v, _) => {
                writeln!(f, "io_uring_disabled   {v} (disabled for every process)")?
            }
            IoUringDisabled::Unreadable(e) => writeln!(f, "io_uring_disabled   unreadable ({e})")?,
        }
        match self.memlock {
            Some((soft, hard)) => writeln!(
                f,
                "RLIMIT_MEMLOCK      soft {}, hard {} ({})",
                limit(soft),
                limit(hard),
                if at_least((5, 12)) {
                    "this kernel charges rings to the memory cgroup, not to this limit"
                } else {
                    "kernels before 5.12 charge ring memory to it"
                }
            )?,
            None => writeln!(f, "RLIMIT_MEMLOCK      unreadable")?,
        }
        writeln!(
            f,
            "ring setup          {} (tried in order: SINGLE_ISSUER|DEFER_TASKRUN, COOP_TASKRUN, \
             plain)",
            self.setup
        )?;
        writeln!(
            f,
            "ring size           {} SQ entries, {} CQ entries (Runtime::new's default)",
            self.sq_entries, self.cq_entries
        )?;
        if self.fixed_slots > 0 {
            writeln!(
                f,
                "registered files    {} slots (files read or written often skip the fd lookup)",
                self.fixed_slots
            )?;
        } else {
            writeln!(
                f,
                "registered files    none (the kernel refused a table; files are named by fd)"
            )?;
        }
        match self.iowq_workers {
            Some([b, u]) => writeln!(
                f,
                "io-wq workers       at most {b} bounded, {u} unbounded per thread \
                 (Builder::iowq_max_workers caps them)"
            )?,
            None => writeln!(
                f,
                "io-wq workers       limits unknown (no IORING_REGISTER_IOWQ_MAX_WORKERS)"
            )?,
        }
        // Wrapped so the report reads in an 80-column terminal.
        let mut line = String::from("features           ");
        for &(name, on, required) in &self.features {
            let item = format!(
                " {}{name}{}",
                if on { "+" } else { "-" },
                if required { " (required)" } else { "" }
            );
            if line.len() + item.len() > 88 {
                writeln!(f, "{line}")?;
                line = " ".repeat(19);
            }
            line.push_str(&item);
        }
        writeln!(f, "{line}")?;
        writeln!(f)?;
        writeln!(f, "opcodes the runtime uses:")?;
        for (op, u) in self.ops.iter().zip(USED) {
            let status = if op.supported { "yes" } else { "NO " };
            let note = match (op.supported, u.fallback) {
                (true, Some(fb)) => format!("; without it: {fb}"),
                (false, Some(fb)) => format!("; falls back to {fb}"),
                (false, None) => "; NEEDED: the runtime cannot do this without it".to_string(),
                (true, None) => String::new(),
            };
            writeln!(
                f,
                "  {:<13} {:>2}  {status}  {}{note}",
                op.name, op.code, u.used_for
            )?;
        }
        let multishot = if at_least((5, 19)) {
            "expected (kernel 5.19+)"
        } else {
            "not expected (kernel before 5.19): incoming_multishot() falls back to single accepts"
        };
        writeln!(f, "  multishot accept   {multishot}")?;
        writeln!(f)?;
        let missing: Vec<&str> = self
            .ops
            .iter()
            .filter(|op| !op.supported && !op.has_fallback)
            .map(|op| op.name)
            .collect();
        let fallbacks = self
            .ops
            .iter()
            .filter(|op| !op.supported && op.has_fallback)
            .count();
        if !missing.is_empty() {
            write!(
                f,
                "verdict: missing opcodes the runtime needs: {}",
                missing.join(", ")
            )
        } else if fallbacks > 0 {
            write!(
                f,
                "verdict: usable; {fallbacks} op(s) fall back to plain syscalls on the loop's \
                 thread (Linux 6.9+ has them all)"
            )
        } else {
            write!(
                f,
                "verdict: every op the runtime uses goes through the ring"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.18.0-arch1-1"), Some((6, 18)));
        assert_eq!(kernel_version("5.15.0"), Some((5, 15)));
        assert_eq!(kernel_version("unknown"), None);
    }

    #[test]
    fn limits_read_well() {
        assert_eq!(limit(u64::MAX), "unlimited");
        assert_eq!(limit(8 << 20), "8 MiB");
        assert_eq!(limit(64 << 10), "64 KiB");
        assert_eq!(limit(1000), "1000 bytes");
    }

    #[test]
    fn the_used_table_is_in_opcode_order_and_named() {
        assert!(USED.windows(2).all(|w| w[0].code < w[1].code));
        assert!(USED.iter().all(|u| opcodes::name(u.code).is_some()));
    }
}
