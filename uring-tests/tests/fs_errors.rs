//! `uring::fs` on bad input and hostile conditions: missing paths, directories, permissions,
//! reads past the end, the file size limit and a full filesystem give typed errors.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;
use uring::fs::{self, File, OpenOptions};
use uring_tests::{is_child, run_child, Rng, TempDir};

const LIMIT: Duration = Duration::from_secs(120);

/// Runs a future made by `make` on a fresh runtime under the watchdog.
fn run<T: Send + 'static, F: std::future::Future<Output = T>>(
    make: impl FnOnce() -> F + Send + 'static,
) -> T {
    uring_tests::run_watched(LIMIT, make)
}

#[test]
fn missing_path_is_not_found() {
    let dir = TempDir::new("missing");
    let missing = dir.path("nope/nothing");
    let errs = run(move || async move {
        vec![
            File::open(&missing).await.unwrap_err(),
            fs::metadata(&missing).await.unwrap_err(),
            fs::read(&missing).await.unwrap_err(),
            fs::remove_file(&missing).await.unwrap_err(),
            fs::remove_dir(&missing).await.unwrap_err(),
            fs::create_dir(&missing).await.unwrap_err(),
            File::create(&missing).await.unwrap_err(),
            fs::rename(&missing, missing.with_extension("x"))
                .await
                .unwrap_err(),
        ]
    });
    for e in errs {
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}

#[test]
fn directory_opened_for_writing_is_is_a_directory() {
    let dir = TempDir::new("isdir");
    let d = dir.dir().to_path_buf();
    let (create, write, remove) = run(move || async move {
        (
            File::create(&d).await.unwrap_err(),
            OpenOptions::new().write(true).open(&d).await.unwrap_err(),
            fs::remove_file(&d).await.unwrap_err(),
        )
    });
    for e in [create, write] {
        assert_eq!(e.kind(), ErrorKind::IsADirectory, "{e}");
        assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
    }
    // unlink(2) of a directory: EISDIR on Linux.
    assert_eq!(remove.kind(), ErrorKind::IsADirectory, "{remove}");
}

/// Root's CAP_DAC_OVERRIDE ignores mode bits, and the tests run as root, so this runs the check
/// in a child process that drops to uid/gid 65534 (nobody) first: a root-owned 0600 file is then
/// really out of reach. The child finds the file by its parent's pid.
#[test]
fn permission_denied() {
    fn file_for(pid: u32) -> PathBuf {
        std::env::temp_dir().join(format!("uring-fs-perm-{pid}"))
    }
    if is_child("perm") {
        let path = file_for(std::os::unix::process::parent_id());
        // SAFETY: plain syscalls changing this child process's credentials (gid first, then uid,
        // while we still may).
        unsafe {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
        let errs = uring::run(async move {
            vec![
                File::open(&path).await.unwrap_err(),
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .await
                    .unwrap_err(),
                fs::read(&path).await.unwrap_err(),
                fs::remove_file(&path).await.unwrap_err(),
            ]
        });
        for e in errs {
            assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        }
        println!("CHILD-OK");
        return;
    }
    let path = file_for(std::process::id());
    std::fs::write(&path, b"secret").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_child("permission_denied", "perm");
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn read_past_eof_returns_zero() {
    let dir = TempDir::new("eof");
    let p = dir.path("f");
    std::fs::write(&p, b"12345").unwrap();
    let (at_end, past, partial, exact) = run(move || async move {
        let f = File::open(&p).await.unwrap();
        let (a, _) = f.read_at(Vec::with_capacity(10), 5).await;
        let (b, _) = f.read_at(Vec::with_capacity(10), 1 << 40).await;
        let (c, buf) = f.read_at(Vec::with_capacity(10), 3).await;
        let (d, dbuf) = f.read_exact_at(Vec::with_capacity(10), 0).await;
        (
            a.unwrap(),
            b.unwrap(),
            (c.unwrap(), buf),
            (d.unwrap_err(), dbuf),
        )
    });
    assert_eq!(at_end, 0);
    assert_eq!(past, 0);
    assert_eq!(partial, (2, b"45".to_vec()));
    assert_eq!(exact.0.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(exact.1, b"12345", "read_exact_at keeps what it read");
}

/// RLIMIT_FSIZE of 64 KiB in a child (SIGXFSZ ignored so the kernel returns EFBIG instead of
/// killing it): writing 200 KiB gives a clear `FileTooLarge` error and the first 64 KiB are on
/// disk, intact.
#[test]
fn write_past_file_size_limit_fails_cleanly() {
    const CAP: usize = 64 * 1024;
    fn file_for(pid: u32) -> PathBuf {
        std::env::temp_dir().join(format!("uring-fs-fsize-{pid}"))
    }
    let data = Rng(7).bytes(200 * 1024);
    if is_child("fsize") {
        let path = file_for(std::os::unix::process::parent_id());
        // SAFETY: process-wide changes, made in this child process only.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: CAP as u64,
                rlim_max: CAP as u64,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
        let err = uring::run(async move {
            let f = File::create(&path).await.unwrap();
            let (res, _) = f.write_all_at(data, 0).await;
            f.sync_all().await.unwrap();
            res.unwrap_err()
        });
        assert_eq!(err.kind(), ErrorKind::FileTooLarge, "{err}");
        assert_eq!(err.raw_os_error(), Some(libc::EFBIG));
        println!("CHILD-OK {err}");
        return;
    }
    let path = file_for(std::process::id());
    let out = run_child("write_past_file_size_limit_fails_cleanly", "fsize");
    let on_disk = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let on_disk = on_disk.unwrap();
    assert_eq!(on_disk.len(), CAP, "the bytes up to the limit are written");
    assert!(
        on_disk == data[..CAP],
        "the bytes before the error are intact"
    );
}

/// A real full filesystem: a 1 MiB tmpfs mounted in a child's private mount namespace. Writing
/// 3 MiB fails with `StorageFull` and what fit is intact. Where the environment forbids mounts
/// (no CAP_SYS_ADMIN), the child says so and the RLIMIT_FSIZE test above covers the error path.
#[test]
fn write_to_full_tmpfs_fails_cleanly() {
    if is_child("tmpfs") {
        let mnt = std::env::temp_dir().join(format!("uring-fs-tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&mnt).unwrap();
        // SAFETY: process-wide namespace and mount changes, in this child process only; all
        // pointers are to NUL-terminated strings that outlive the calls.
        let mounted = unsafe {
            libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
                && {
                    let target = std::ffi::CString::new(mnt.to_str().unwrap()).unwrap();
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        target.as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        c"size=1m".as_ptr().cast(),
                    ) == 0
                }
        };
        if !mounted {
            println!("CHILD-NO-MOUNT {}", std::io::Error::last_os_error());
            let _ = std::fs::remove_dir(&mnt);
            return;
        }
        let data = Rng(11).bytes(3 << 20);
        let path = mnt.join("big");
        let (err, on_disk) = uring::run(async move {
            let f = File::create(&path).await.unwrap();
            let (res, data) = f.write_all_at(data, 0).await;
            drop(f);
            let on_disk = fs::read(&path).await.unwrap();
            (res.unwrap_err(), (on_disk, data))
        });
        assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
        let (on_disk, data) = on_disk;
        assert!(!on_disk.is_empty() && on_disk.len() < data.len());
        assert!(on_disk == data[..on_disk.len()], "what fit is intact");
        println!("CHILD-OK {} bytes fit: {err}", on_disk.len());
        return;
    }
    let out = run_child("write_to_full_tmpfs_fails_cleanly", "tmpfs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && (stdout.contains("CHILD-OK") || stdout.contains("CHILD-NO-MOUNT")),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{}",
        stdout.lines().find(|l| l.contains("CHILD")).unwrap_or("")
    );
}
