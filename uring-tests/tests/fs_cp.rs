//! `examples/cp` copying a tree of 1,000 files, and its errors.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uring_tests::{watchdog, Rng, TempDir};

const LIMIT: Duration = Duration::from_secs(120);

fn cp_binary() -> PathBuf {
    // target/<profile>/deps/fs-<hash> -> target/<profile>/examples/cp
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let cp = profile_dir.join("examples/cp");
    // `cargo test --workspace` builds the examples, but `cargo test -p uring-tests` does not
    // (and would leave a stale binary): under cargo, ask it to bring the example up to date
    // (a no-op when it is). Tests racing here wait on cargo's build lock.
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "uring", "--example", "cp"]);
        if release {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo to build the cp example");
        assert!(
            out.status.success(),
            "building examples/cp failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(cp.exists(), "{} missing", cp.display());
    cp
}

/// The 1,000-file tree: random sizes from 0 B to 8 MiB, skewed small, with a few multi-MiB
/// files, in nested directories; `examples/cp` copies it and every file is compared.
#[test]
fn cp_copies_a_tree_of_1000_files() {
    let dir = TempDir::new("tree");
    let src = dir.path("src");
    let mut rng = Rng(0x5eed);
    let mut files = Vec::new();
    for i in 0..1000 {
        let sub = format!("d{}/e{}", rng.next_u64() % 10, rng.next_u64() % 5);
        let size = match i {
            0 => 8 << 20,
            1..=5 => (1 << 20) + (rng.next_u64() % (7 << 20)) as usize,
            _ => match rng.next_u64() % 100 {
                0..=9 => 0,
                10..=89 => (rng.next_u64() % 16_384) as usize,
                90..=97 => (rng.next_u64() % 262_144) as usize,
                _ => (rng.next_u64() % (1 << 20)) as usize,
            },
        };
        let rel = PathBuf::from(sub).join(format!("f{i}"));
        std::fs::create_dir_all(src.join(rel.parent().unwrap())).unwrap();
        std::fs::write(src.join(&rel), rng.bytes(size)).unwrap();
        let mode = [0o644, 0o600, 0o755, 0o640][i % 4];
        std::fs::set_permissions(src.join(&rel), std::fs::Permissions::from_mode(mode)).unwrap();
        files.push((rel, mode));
    }
    // The default (a registered buffer per worker), then plain heap buffers.
    for (name, extra) in [("dst", None), ("dst-plain", Some("--plain-buffers"))] {
        let dst = dir.path(name);
        let cp = cp_binary();
        let from = src.clone();
        let out = watchdog(LIMIT, move || {
            let mut cmd = std::process::Command::new(cp);
            cmd.args(["--depth", "16"]);
            if let Some(e) = extra {
                cmd.arg(e);
            }
            cmd.arg(&from).arg(&dst).output().unwrap()
        });
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "cp failed: {stderr}");
        assert!(
            !stderr.contains("plain buffers") && !stderr.contains("plain ones"),
            "{name}: registered buffers were used: {stderr}"
        );
        let dst = dir.path(name);
        let mut bytes = 0;
        for (rel, mode) in &files {
            let a = std::fs::read(src.join(rel)).unwrap();
            let b = std::fs::read(dst.join(rel))
                .unwrap_or_else(|e| panic!("{name}: {} not copied: {e}", rel.display()));
            assert!(a == b, "{name}: {} differs", rel.display());
            let m = std::fs::metadata(dst.join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777;
            assert_eq!(m, *mode, "{name}: {} mode", rel.display());
            bytes += a.len();
        }
        assert!(bytes > 8 << 20);
        // Nothing extra was created.
        assert_eq!(walk_files(&dst), 1000, "{name}");
    }
}

fn walk_files(d: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(d).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += walk_files(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

#[test]
fn cp_reports_errors_with_nonzero_exit() {
    let dir = TempDir::new("cperr");
    let cp = cp_binary();
    let out = std::process::Command::new(&cp)
        .arg(dir.path("missing"))
        .arg(dir.path("dst"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("No such file"), "{msg}");
    let out = std::process::Command::new(&cp)
        .arg("--depth")
        .arg("0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--depth"));
    // Writing into a directory that is a file fails clearly.
    std::fs::write(dir.path("src"), b"x").unwrap();
    std::fs::write(dir.path("blocker"), b"x").unwrap();
    let out = std::process::Command::new(&cp)
        .arg(dir.path("src"))
        .arg(dir.path("blocker/inside"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot create"));
    // A directory into itself, and a file onto itself, are refused (and the file survives).
    std::fs::create_dir(dir.path("tree")).unwrap();
    for (from, to) in [("tree", "tree/sub"), ("src", "src")] {
        let out = std::process::Command::new(&cp)
            .arg(dir.path(from))
            .arg(dir.path(to))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{from} -> {to}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("into itself"));
    }
    assert_eq!(std::fs::read(dir.path("src")).unwrap(), b"x");
    assert!(!dir.path("tree/sub").exists());
}
