//! `uring::probe()` and `examples/probe.rs` on this kernel: the opcodes the crate uses are
//! listed (every one the source submits) and present, the report names them, the ring setup is
//! the one a runtime gets, the sysctl and memlock values are the system's, and the example runs
//! and exits 0. (`setup_errors.rs` checks the probe where io_uring is blocked.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use uring::{IoUringDisabled, Runtime};
use uring_tests::e2e;

const LIMIT: Duration = Duration::from_secs(120);

/// The opcodes the tests name: what every network and file program here uses.
const CORE: &[&str] = &[
    "READ",
    "WRITE",
    "RECV",
    "SEND",
    "RECVMSG",
    "SENDMSG",
    "ACCEPT",
    "CONNECT",
    "OPENAT",
    "CLOSE",
    "STATX",
    "ASYNC_CANCEL",
];

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

#[test]
fn the_opcodes_the_crate_uses_are_listed_and_present() {
    let probe = uring::probe().expect("io_uring works on the test machine");
    let names: Vec<&str> = probe.used_opcodes().iter().map(|op| op.name).collect();
    for want in CORE {
        let op = probe
            .used_opcodes()
            .iter()
            .find(|op| op.name == *want)
            .unwrap_or_else(|| panic!("{want} is not listed: {names:?}"));
        assert!(op.supported, "{want} missing on this kernel");
        assert!(
            !op.has_fallback,
            "{want} has no fallback: the runtime needs it"
        );
        assert!(probe.is_supported(op.code));
    }
    assert!(probe.is_supported(io_uring::opcode::Read::CODE));
    assert!(probe.has_feature("NODROP") && probe.has_feature("EXT_ARG"));
    assert!(!probe.has_feature("NO_SUCH_FEATURE"));
    if kernel_at_least(6, 9) {
        assert!(probe.all_ops_on_the_ring(), "6.9+ has every op: {probe}");
    }
    let report = probe.to_string();
    for name in &names {
        assert!(report.contains(name), "the report lacks {name}:\n{report}");
    }
    for want in [
        "ring setup",
        "io_uring_disabled",
        "RLIMIT_MEMLOCK",
        "verdict",
    ] {
        assert!(
            report.contains(want),
            "the report lacks {want:?}:\n{report}"
        );
    }
}

/// `opcode::RecvMsg` in the source is `RECVMSG` in the kernel's names: CamelCase lowered, the
/// kernel's underscores dropped (`AsyncCancel`, `ASYNC_CANCEL`); a multishot variant is its
/// base opcode with a flag.
fn normalized(name: &str) -> String {
    let n = name.to_ascii_lowercase().replace('_', "");
    n.strip_suffix("multi").map(str::to_string).unwrap_or(n)
}

fn source_opcodes(dir: &Path, found: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_opcodes(&path, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            let mut rest = line;
            while let Some(at) = rest.find("opcode::") {
                rest = &rest[at + "opcode::".len()..];
                let ident: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                // `opcode::X::new(..)` submits X; `opcode::X::CODE` only names it.
                if rest[ident.len()..].starts_with("::new") {
                    found.insert(normalized(&ident));
                }
            }
        }
    }
}

#[test]
fn every_opcode_the_source_submits_is_in_the_probe() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src");
    let mut submitted = BTreeSet::new();
    source_opcodes(&src, &mut submitted);
    assert!(submitted.contains("read") && submitted.contains("accept"));
    let probe = uring::probe().unwrap();
    let listed: BTreeSet<String> = probe
        .used_opcodes()
        .iter()
        .map(|op| normalized(op.name))
        .collect();
    let unlisted: Vec<&String> = submitted.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "ops submitted in src/ but missing from the probe's table (src/driver/probe.rs): \
         {unlisted:?}"
    );
}

#[test]
fn the_probe_sees_what_a_runtime_gets_and_the_system_limits() {
    let probe = uring::probe().unwrap();
    let rt = Runtime::new().unwrap();
    assert_eq!(probe.ring_setup(), rt.ring_setup());
    let (sq, cq) = probe.ring_entries();
    assert_eq!((sq, cq), (1024, 4096), "Runtime::new's ring");
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        Ok(v) => match probe.io_uring_disabled() {
            IoUringDisabled::Value(n, _) => assert_eq!(n.to_string(), v.trim()),
            other => panic!("the sysctl reads {v:?}, the probe says {other:?}"),
        },
        Err(_) => assert_eq!(probe.io_uring_disabled(), &IoUringDisabled::Absent),
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) },
        0
    );
    let (soft, _hard) = probe.memlock_limit().expect("readable");
    if limit.rlim_cur == libc::RLIM_INFINITY {
        assert_eq!(soft, u64::MAX);
    } else {
        assert_eq!(soft, limit.rlim_cur);
    }
    assert!(
        probe.registered_file_slots() > 0,
        "this kernel gives a table"
    );
    assert!(probe
        .kernel_release()
        .chars()
        .next()
        .unwrap()
        .is_ascii_digit());
    // Probing twice gives the same report.
    assert_eq!(probe.to_string(), uring::probe().unwrap().to_string());
}

#[test]
fn the_probe_example_prints_the_report_and_exits_0() {
    let out = e2e::run_ok(&mut Command::new(e2e::example("probe")), LIMIT, "probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in CORE {
        assert!(
            stdout.contains(want),
            "example output lacks {want}:\n{stdout}"
        );
    }
    assert!(stdout.contains("verdict:"), "{stdout}");
    assert!(stdout.contains("ring setup"), "{stdout}");
}
