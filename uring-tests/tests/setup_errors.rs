//! The clear error when io_uring cannot be set up (seccomp, sysctl), each in a child process.

use std::io;
use std::time::Duration;
use uring::Runtime;
use uring_tests::{is_child, run_child, watchdog};

/// Generous limit for one test: far above what any of them needs on an idle machine.
const LIMIT: Duration = Duration::from_secs(120);

fn watched<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog(LIMIT, f)
}

// ---------------------------------------------------------------------------------------------
// The clear error when io_uring cannot be set up
// ---------------------------------------------------------------------------------------------

/// `io_uring_setup`'s syscall number: 425 on both x86_64 and aarch64 (the generic table).
const SYS_IO_URING_SETUP: u32 = 425;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// Installs a seccomp filter on this thread (and its future children) that makes
/// `io_uring_setup` fail with EPERM and allows every other syscall, as a container runtime's
/// default profile does.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn deny_io_uring_setup() {
    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }
    fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }
    let arch_offset = std::mem::offset_of!(libc::seccomp_data, arch) as u32;
    let nr_offset = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
    let mut filter = [
        // A foreign syscall ABI: allow (nothing of ours runs there).
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, arch_offset),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH,
            0,
            3,
        ),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, nr_offset),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            SYS_IO_URING_SETUP,
            0,
            1,
        ),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl; no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_NO_NEW_PRIVS: {}", io::Error::last_os_error());
    // SAFETY: `prog` points to `filter`, both alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    assert_eq!(rc, 0, "PR_SET_SECCOMP: {}", io::Error::last_os_error());
}

#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn setup_blocked_by_seccomp_gives_a_clear_error() {
    if is_child("seccomp") {
        deny_io_uring_setup();
        match Runtime::new() {
            Ok(_) => println!("RESULT:ok"),
            Err(e) => {
                println!("RESULT:err");
                println!("KIND:{:?}", e.kind());
                println!("MESSAGE:{e}");
            }
        }
        // uring::run panics with the same message.
        std::panic::set_hook(Box::new(|_| {}));
        let panicked = std::panic::catch_unwind(|| uring::run(async {}));
        let _ = std::panic::take_hook();
        match panicked {
            Ok(()) => println!("RUN:returned"),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("RUN_PANIC:{msg}");
            }
        }
        return;
    }
    let out = watched(|| run_child("setup_blocked_by_seccomp_gives_a_clear_error", "seccomp"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    let field = |name: &str| {
        stdout
            .lines()
            // The harness may print its "test ... " prefix on the same line as the first field.
            .find_map(|l| l.find(name).map(|at| &l[at + name.len()..]))
            .unwrap_or_else(|| panic!("child printed no {name}: {stdout}\n{stderr}"))
            .to_string()
    };
    assert_eq!(
        field("RESULT:"),
        "err",
        "Runtime::new() succeeded under the filter"
    );
    assert_eq!(field("KIND:"), "PermissionDenied");
    let message = field("MESSAGE:");
    assert!(
        message.contains("seccomp"),
        "the message does not mention seccomp: {message}"
    );
    assert!(message.contains("EPERM"), "{message}");
    assert_ne!(message.trim(), "Operation not permitted (os error 1)");
    assert!(message.len() > 60, "too terse to help: {message}");
    let panic = field("RUN_PANIC:");
    assert!(
        panic.contains("seccomp"),
        "uring::run panicked without the explanation: {panic}"
    );
}

/// Where io_uring is blocked, `uring::probe()` gives `Runtime::new`'s explanation, and
/// `examples/probe.rs` prints it and exits 1 (the filter is inherited by the example).
#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn probe_under_seccomp_says_why() {
    if is_child("seccomp-probe") {
        deny_io_uring_setup();
        match uring::probe() {
            Ok(p) => println!("RESULT:ok {p}"),
            Err(e) => {
                println!("RESULT:err");
                println!("KIND:{:?}", e.kind());
                println!("MESSAGE:{e}");
            }
        }
        let out = std::process::Command::new(uring_tests::e2e::example("probe"))
            .output()
            .expect("run the probe example");
        println!("EXAMPLE_CODE:{:?}", out.status.code());
        let stderr = String::from_utf8_lossy(&out.stderr).replace('\n', " ");
        println!("EXAMPLE_STDERR:{stderr}");
        return;
    }
    let out = watched(|| run_child("probe_under_seccomp_says_why", "seccomp-probe"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.find(name).map(|at| &l[at + name.len()..]))
            .unwrap_or_else(|| panic!("child printed no {name}: {stdout}\n{stderr}"))
            .to_string()
    };
    assert_eq!(
        field("RESULT:"),
        "err",
        "probe() succeeded under the filter"
    );
    assert_eq!(field("KIND:"), "PermissionDenied");
    assert!(field("MESSAGE:").contains("seccomp"), "{stdout}");
    assert_eq!(field("EXAMPLE_CODE:"), "Some(1)", "{stdout}");
    let example_err = field("EXAMPLE_STDERR:");
    assert!(example_err.contains("seccomp"), "{example_err}");
}
