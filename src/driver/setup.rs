//! Building the ring: which setup flags and opcodes this kernel offers, and what to say when it
//! offers none.

use io_uring::IoUring;
use std::fmt;
use std::io;
use std::sync::OnceLock;

/// How the runtime's ring was set up, so users and benchmarks can see what the kernel offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingSetup {
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (Linux 6.1+): completion work
    /// runs only when the loop asks for events, in batches, on the loop's own thread.
    DeferTaskrun,
    /// `IORING_SETUP_COOP_TASKRUN` (Linux 5.19+): completion work does not interrupt the loop.
    CoopTaskrun,
    /// No task-run flags: the kernel interrupts the thread to post completions.
    Plain,
}

impl fmt::Display for RingSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RingSetup::DeferTaskrun => "SINGLE_ISSUER|DEFER_TASKRUN",
            RingSetup::CoopTaskrun => "COOP_TASKRUN",
            RingSetup::Plain => "plain",
        })
    }
}

/// Builds a ring of `entries` submission entries with the best setup the kernel accepts.
pub(crate) fn build_ring(entries: u32) -> io::Result<(IoUring, RingSetup)> {
    let cq_entries = entries.saturating_mul(4).clamp(8, 1 << 16);
    let attempts = [
        RingSetup::DeferTaskrun,
        RingSetup::CoopTaskrun,
        RingSetup::Plain,
    ];
    let mut last_err = None;
    for setup in attempts {
        let mut b = IoUring::builder();
        b.setup_clamp().setup_cqsize(cq_entries);
        match setup {
            RingSetup::DeferTaskrun => {
                b.setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag()
                    .setup_submit_all();
            }
            RingSetup::CoopTaskrun => {
                b.setup_coop_taskrun()
                    .setup_taskrun_flag()
                    .setup_submit_all();
            }
            RingSetup::Plain => {}
        }
        match b.build(entries) {
            Ok(ring) => {
                check_features(&ring)?;
                return Ok((ring, setup));
            }
            // An older kernel rejects flags it does not know with EINVAL: try the next setup.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
            Err(e) => return Err(explain_setup_error(e)),
        }
    }
    Err(explain_setup_error(last_err.unwrap_or_else(|| {
        io::Error::from_raw_os_error(libc::EINVAL)
    })))
}

fn check_features(ring: &IoUring) -> io::Result<()> {
    let p = ring.params();
    if !p.is_feature_nodrop() || !p.is_feature_ext_arg() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring on this kernel lacks IORING_FEAT_NODROP or IORING_FEAT_EXT_ARG: \
             uring needs Linux 5.11 or newer (6.1 or newer recommended)",
        ));
    }
    Ok(())
}

/// Whether the running kernel's io_uring offers `opcode`, probed once per process with
/// `IORING_REGISTER_PROBE` on a small throwaway ring. Only ops newer than the Linux 5.11 the
/// runtime requires ask (`MKDIRAT`, `LINKAT`, `SYMLINKAT`: 5.15; `FTRUNCATE`: 6.9); if even the
/// probe fails, every such opcode counts as missing and its caller uses the plain syscall.
pub(crate) fn opcode_supported(opcode: u8) -> bool {
    static OPS: OnceLock<[bool; 256]> = OnceLock::new();
    OPS.get_or_init(|| {
        let mut table = [false; 256];
        let Ok(ring) = IoUring::new(2) else {
            return table;
        };
        let mut probe = io_uring::Probe::new();
        if ring.submitter().register_probe(&mut probe).is_ok() {
            for (code, slot) in table.iter_mut().enumerate() {
                *slot = probe.is_supported(code as u8);
            }
        }
        table
    })[opcode as usize]
}

/// Turns a failed `io_uring_setup` into an error that says what happened and how to fix it.
pub(crate) fn explain_setup_error(e: io::Error) -> io::Error {
    let msg =
        match e.raw_os_error() {
            Some(libc::ENOSYS) => {
                "io_uring is not available: this kernel was built without io_uring \
             (io_uring_setup returned ENOSYS). uring needs Linux 5.11 or newer with \
             CONFIG_IO_URING=y; 6.1 or newer is recommended."
                    .to_string()
            }
            Some(libc::EPERM) => {
                match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
                Ok(v) if v.trim() != "0" => format!(
                    "io_uring is disabled on this system: the sysctl kernel.io_uring_disabled is {} \
                     (io_uring_setup returned EPERM). {} To allow it: \
                     `sudo sysctl -w kernel.io_uring_disabled=0`, or with value 1 add this process's \
                     user to the group named by kernel.io_uring_group.",
                    v.trim(),
                    if v.trim() == "2" {
                        "Value 2 disables io_uring for every process."
                    } else {
                        "Value 1 allows it only for privileged processes and members of kernel.io_uring_group."
                    }
                ),
                _ => "io_uring is blocked for this process (io_uring_setup returned EPERM) although \
                      the kernel.io_uring_disabled sysctl allows it: most likely a seccomp policy, \
                      such as a container runtime's default profile, denies the io_uring syscalls. \
                      Allow io_uring_setup, io_uring_enter and io_uring_register in the policy \
                      (for Docker: --security-opt seccomp=<profile allowing them>)."
                    .to_string(),
            }
            }
            Some(libc::ENOMEM) => {
                "io_uring ring could not be allocated (io_uring_setup returned ENOMEM): \
             the ring is too large for the available memory or the locked-memory limit \
             (RLIMIT_MEMLOCK, which kernels before 5.12 charge rings to). Use a smaller \
             Runtime::builder().entries(..) or raise the limit (`ulimit -l`)."
                    .to_string()
            }
            Some(libc::EINVAL) => {
                "io_uring ring setup was rejected (io_uring_setup returned EINVAL): \
             the kernel does not support the requested ring size or setup flags."
                    .to_string()
            }
            _ => format!("io_uring ring could not be set up: {e}"),
        };
    io::Error::new(e.kind(), msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_basic_ops() {
        assert!(opcode_supported(io_uring::opcode::Read::CODE));
        assert!(opcode_supported(io_uring::opcode::AsyncCancel::CODE));
    }

    #[test]
    fn messages_name_the_cause() {
        let m = explain_setup_error(io::Error::from_raw_os_error(libc::ENOSYS)).to_string();
        assert!(m.contains("ENOSYS"), "{m}");
        let e = explain_setup_error(io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("EPERM"));
        let m = explain_setup_error(io::Error::from_raw_os_error(libc::ENOMEM)).to_string();
        assert!(m.contains("RLIMIT_MEMLOCK"), "{m}");
    }
}
