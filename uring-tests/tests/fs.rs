//! `uring::fs` against the real kernel: bad input, full filesystems, round trips of every API
//! function, concurrency on one file, and the 1,000-file tree copy with `examples/cp`.

use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use uring::buf::IoBuf;
use uring::fs::{self, AlignedBuf, File, OpenOptions};
use uring_tests::{is_child, run_child, watchdog};

const LIMIT: Duration = Duration::from_secs(120);

/// A fresh directory under the temp dir, removed (with its contents) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "uring-fs-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Runs a future made by `make` on a fresh runtime on the watchdog's thread.
fn run<T: Send + 'static, F: std::future::Future<Output = T>>(
    make: impl FnOnce() -> F + Send + 'static,
) -> T {
    watchdog(LIMIT, move || uring::run(make()))
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
    let d = dir.0.clone();
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

#[test]
fn file_round_trips() {
    let dir = TempDir::new("file");
    let p = dir.path("f");
    let checks = run(move || async move {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&p)
            .await
            .unwrap();
        let again = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .await;
        assert_eq!(again.unwrap_err().kind(), ErrorKind::AlreadyExists);

        // write_at / read_at / write_all_at / read_exact_at
        let data = Rng(1).bytes(300_000);
        let (res, data) = f.write_all_at(data, 100).await;
        res.unwrap();
        let (res, buf) = f.read_exact_at(Vec::with_capacity(300_000), 100).await;
        res.unwrap();
        assert!(buf == data);
        let (n, buf) = f.read_at(vec![9u8; 4].slice(..), 0).await;
        assert_eq!(n.unwrap(), 4);
        assert_eq!(
            buf.into_inner(),
            [0, 0, 0, 0],
            "the hole before offset 100 reads as zeros"
        );
        let (n, _) = f.write_at(b"abc".to_vec(), 0).await;
        assert_eq!(n.unwrap(), 3);

        // writev_at / readv_at
        let (n, _) = f.writev_at(vec![b"12".to_vec(), b"345".to_vec()], 10).await;
        assert_eq!(n.unwrap(), 5);
        let bufs = vec![Vec::with_capacity(1), Vec::with_capacity(4)];
        let (n, bufs) = f.readv_at(bufs, 10).await;
        assert_eq!(n.unwrap(), 5);
        assert_eq!(bufs, [b"1".to_vec(), b"2345".to_vec()]);

        // metadata
        let m = f.metadata().await.unwrap();
        assert_eq!(m.len(), 300_100);
        assert!(m.is_file() && !m.is_dir() && !m.is_symlink());
        assert_eq!(m.permissions().mode() & 0o777, 0o640 & !umask());
        let age = SystemTime::now()
            .duration_since(m.modified().unwrap())
            .unwrap_or_default();
        assert!(age < Duration::from_secs(600));
        m.accessed().unwrap();
        let std_meta = std::fs::metadata(&p).unwrap();
        assert_eq!(m.ino(), std_meta.ino());
        assert_eq!(m.modified().unwrap(), std_meta.modified().unwrap());

        // set_len, fallocate, sync
        f.set_len(10).await.unwrap();
        assert_eq!(f.metadata().await.unwrap().len(), 10);
        f.set_len(5000).await.unwrap();
        let (res, tail) = f.read_exact_at(Vec::with_capacity(4990), 10).await;
        res.unwrap();
        assert!(tail.iter().all(|&b| b == 0), "extension reads as zeros");
        f.fallocate(0, 1 << 20, 0).await.unwrap();
        let m = f.metadata().await.unwrap();
        assert_eq!(m.len(), 1 << 20);
        assert!(m.blocks() * 512 >= 1 << 20, "space is allocated");
        f.sync_data().await.unwrap();
        f.sync_all().await.unwrap();
        let read_only = File::open(&p).await.unwrap();
        let e = read_only.set_len(0).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let (e, _) = read_only.write_at(b"x".to_vec(), 0).await;
        assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EBADF));

        // close, into_std, from_std, AsFd
        assert_eq!(fds_open_on(&p), 2, "f and read_only are open");
        read_only.close().await.unwrap();
        assert_eq!(fds_open_on(&p), 1, "close released the fd");
        let std_file = f.into_std().unwrap();
        assert_eq!(std_file.metadata().unwrap().len(), 1 << 20);
        let f = File::from_std(std_file).unwrap();
        let (n, buf) = f.read_at(Vec::with_capacity(3), 0).await;
        assert_eq!((n.unwrap(), buf), (3, b"abc".to_vec()));
        use std::os::fd::AsFd;
        assert!(f.as_fd().try_clone_to_owned().is_ok());
        f.close().await.unwrap();

        // append
        let a = OpenOptions::new().append(true).open(&p).await.unwrap();
        let (n, _) = a.write_at(b"END".to_vec(), 0).await;
        assert_eq!(n.unwrap(), 3);
        drop(a);
        let all = fs::read(&p).await.unwrap();
        assert_eq!(
            &all[all.len() - 3..],
            b"END",
            "O_APPEND writes go to the end"
        );
        all.len()
    });
    assert_eq!(checks, (1 << 20) + 3);
}

/// How many of this process's fds are open on `path` (robust against other tests opening and
/// closing their own fds in parallel).
fn fds_open_on(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

fn umask() -> u32 {
    // SAFETY: umask is process-wide; set it back at once to the same value.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    }
}

#[test]
fn path_function_round_trips() {
    let dir = TempDir::new("paths");
    let base = dir.0.clone();
    run(move || async move {
        let p = |s: &str| base.join(s);
        // write / read / metadata
        fs::write(p("a"), b"alpha".to_vec()).await.unwrap();
        assert_eq!(fs::read(p("a")).await.unwrap(), b"alpha");
        fs::write(p("a"), "re").await.unwrap();
        assert_eq!(fs::read(p("a")).await.unwrap(), b"re", "write truncates");
        let big = Rng(3).bytes(5 << 20 | 17);
        fs::write(p("big"), big.clone()).await.unwrap();
        assert!(fs::read(p("big")).await.unwrap() == big);
        assert_eq!(
            fs::metadata(p("big")).await.unwrap().len(),
            big.len() as u64
        );
        // /proc files report size 0 and are read to their end anyway.
        let status = fs::read("/proc/self/status").await.unwrap();
        assert!(String::from_utf8_lossy(&status).contains("Name:"));

        // create_dir / create_dir_all / remove_dir
        fs::create_dir(p("d")).await.unwrap();
        assert!(fs::metadata(p("d")).await.unwrap().is_dir());
        let e = fs::create_dir(p("d")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        fs::create_dir_all(p("d/x/y/z")).await.unwrap();
        fs::create_dir_all(p("d/x/y/z")).await.unwrap();
        assert!(std::fs::metadata(p("d/x/y/z")).unwrap().is_dir());
        let e = fs::create_dir_all(p("a/sub")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotADirectory, "{e}");
        let e = fs::remove_dir(p("d/x")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DirectoryNotEmpty);
        fs::remove_dir(p("d/x/y/z")).await.unwrap();
        assert!(!p("d/x/y/z").exists());

        // rename / hard_link / symlink / symlink_metadata / remove_file
        fs::rename(p("a"), p("b")).await.unwrap();
        assert!(!p("a").exists());
        assert_eq!(std::fs::read(p("b")).unwrap(), b"re");
        fs::hard_link(p("b"), p("c")).await.unwrap();
        assert_eq!(fs::metadata(p("b")).await.unwrap().nlink(), 2);
        let e = fs::hard_link(p("b"), p("c")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        fs::symlink("b", p("s")).await.unwrap();
        assert_eq!(std::fs::read_link(p("s")).unwrap(), Path::new("b"));
        assert!(fs::symlink_metadata(p("s")).await.unwrap().is_symlink());
        assert!(
            fs::metadata(p("s")).await.unwrap().is_file(),
            "metadata follows the link"
        );
        assert_eq!(fs::read(p("s")).await.unwrap(), b"re");
        fs::remove_file(p("s")).await.unwrap();
        fs::remove_file(p("c")).await.unwrap();
        assert!(!p("c").exists() && p("b").exists());

        // copy keeps content and permissions
        std::fs::set_permissions(p("big"), std::fs::Permissions::from_mode(0o751)).unwrap();
        let n = fs::copy(p("big"), p("big2")).await.unwrap();
        assert_eq!(n, big.len() as u64);
        assert!(std::fs::read(p("big2")).unwrap() == big);
        let mode = std::fs::metadata(p("big2")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o751);
        assert_eq!(fs::copy(p("b"), p("empty-dir-target")).await.unwrap(), 2);
        std::fs::write(p("zero"), b"").unwrap();
        assert_eq!(fs::copy(p("zero"), p("zero2")).await.unwrap(), 0);
        assert_eq!(std::fs::read(p("zero2")).unwrap(), b"");
        let e = fs::copy(p("d"), p("dcopy")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    });
}

#[test]
fn o_direct_with_aligned_buffers() {
    let dir = TempDir::new("direct");
    let p = dir.path("f");
    let data = Rng(5).bytes(64 * 1024);
    std::fs::write(&p, &data).unwrap();
    let res = run(move || async move {
        let f = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&p)
            .await
        {
            Ok(f) => f,
            // tmpfs and some overlay setups refuse O_DIRECT.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return None,
            Err(e) => panic!("open O_DIRECT: {e}"),
        };
        let m = f.metadata().await.unwrap();
        let align = match m.dio_alignment() {
            Some((mem, off)) if mem > 0 => (mem.max(off) as usize).max(512),
            _ => 4096,
        };
        let (res, buf) = f.read_exact_at(AlignedBuf::new(8192), 8192).await;
        res.unwrap();
        let mut w = AlignedBuf::with_alignment(align, align).unwrap();
        w.fill(0xAB);
        let (res, _) = f.write_all_at(w, 0).await;
        res.unwrap();
        let (res, back) = f.read_exact_at(AlignedBuf::zeroed(align), 0).await;
        res.unwrap();
        Some((buf.to_vec(), back.to_vec(), align))
    });
    let Some((read, back, align)) = res else {
        eprintln!("the temp dir's filesystem refuses O_DIRECT: nothing to check here");
        return;
    };
    assert!(read == data[8192..16384]);
    assert!(back.iter().all(|&b| b == 0xAB) && back.len() == align);
}

/// Many reads in flight on one file shared with `Rc`.
#[test]
fn concurrent_reads_on_one_file() {
    let dir = TempDir::new("conc");
    let p = dir.path("f");
    let data = Rng(9).bytes(4 << 20);
    std::fs::write(&p, &data).unwrap();
    let ok = run(move || async move {
        let data = Rc::new(data);
        let f = Rc::new(File::open(&p).await.unwrap());
        let mut tasks = Vec::new();
        for t in 0..64u64 {
            let (f, data) = (f.clone(), data.clone());
            tasks.push(uring::spawn(async move {
                let mut rng = Rng(t + 1);
                for _ in 0..50 {
                    let len = (rng.next() % 20_000 + 1) as usize;
                    let off = rng.next() % (data.len() - len) as u64;
                    let (res, buf) = f.read_at(Vec::with_capacity(len), off).await;
                    assert_eq!(res.unwrap(), len);
                    assert!(buf[..] == data[off as usize..off as usize + len]);
                }
                50
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        n
    });
    assert_eq!(ok, 64 * 50);
}

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
        let sub = format!("d{}/e{}", rng.next() % 10, rng.next() % 5);
        let size = match i {
            0 => 8 << 20,
            1..=5 => (1 << 20) + (rng.next() % (7 << 20)) as usize,
            _ => match rng.next() % 100 {
                0..=9 => 0,
                10..=89 => (rng.next() % 16_384) as usize,
                90..=97 => (rng.next() % 262_144) as usize,
                _ => (rng.next() % (1 << 20)) as usize,
            },
        };
        let rel = PathBuf::from(sub).join(format!("f{i}"));
        std::fs::create_dir_all(src.join(rel.parent().unwrap())).unwrap();
        std::fs::write(src.join(&rel), rng.bytes(size)).unwrap();
        let mode = [0o644, 0o600, 0o755, 0o640][i % 4];
        std::fs::set_permissions(src.join(&rel), std::fs::Permissions::from_mode(mode)).unwrap();
        files.push((rel, mode));
    }
    let dst = dir.path("dst");
    let cp = cp_binary();
    let out = watchdog(LIMIT, move || {
        std::process::Command::new(cp)
            .args(["--depth", "16"])
            .arg(&src)
            .arg(&dst)
            .output()
            .unwrap()
    });
    assert!(
        out.status.success(),
        "cp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (src, dst) = (dir.path("src"), dir.path("dst"));
    let mut bytes = 0;
    for (rel, mode) in &files {
        let a = std::fs::read(src.join(rel)).unwrap();
        let b = std::fs::read(dst.join(rel))
            .unwrap_or_else(|e| panic!("{} not copied: {e}", rel.display()));
        assert!(a == b, "{} differs", rel.display());
        let m = std::fs::metadata(dst.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(m, *mode, "{} mode", rel.display());
        bytes += a.len();
    }
    assert!(bytes > 8 << 20);
    // Nothing extra was created.
    let count = walk_files(&dst);
    assert_eq!(count, 1000);
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

/// An empty buffer of `capacity` bytes whose memory is zeroed, so valgrind (which cannot see the
/// kernel's writes) counts what a read puts there as initialized.
fn zeroed(capacity: usize) -> Vec<u8> {
    let mut v = vec![0u8; capacity];
    v.clear();
    v
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// A file read through the ring many times takes a slot in the ring's registered-file table
/// (at its 17th read or write), freed when the file closes (or, if a dropped read still holds it,
/// when that read completes) and handed to a later file. 10,000 opens, more than the table's
/// 4,096 slots, with up to 16 files open at once and some reads dropped in flight: every read
/// returns its own file's bytes, and at the end no slot is taken. Valgrind-clean:
/// `URING_VALGRIND=1 valgrind target/debug/deps/fs-<hash> registered --test-threads=1`.
#[test]
fn registered_file_slots_are_freed_and_reused() {
    const FILES: usize = 64;
    const OPENS: usize = 10_000;
    const READS_PER_OPEN: usize = 20;
    const WINDOW: usize = 16;
    let dir = TempDir::new("fixed");
    let contents: Vec<Vec<u8>> = (0..FILES)
        .map(|i| Rng(i as u64 + 1).bytes(8192 + i * 100))
        .collect();
    let paths: Vec<PathBuf> = (0..FILES).map(|i| dir.path(&format!("f{i}"))).collect();
    for (p, c) in paths.iter().zip(&contents) {
        std::fs::write(p, c).unwrap();
    }
    let stats = watchdog(LIMIT, move || {
        let rt = uring::Runtime::new().unwrap();
        rt.block_on(async {
            let mut open: std::collections::VecDeque<(usize, File)> = Default::default();
            for n in 0..OPENS {
                let i = (n * 7) % FILES;
                let f = File::open(&paths[i]).await.unwrap();
                let len = contents[i].len();
                for r in 0..READS_PER_OPEN {
                    let off = (n * 13 + r * 101) % (len - 100);
                    let (res, buf) = f.read_at(zeroed(100), off as u64).await;
                    assert_eq!(res.unwrap(), 100, "open {n} of file {i}");
                    assert!(
                        buf[..] == contents[i][off..off + 100],
                        "open {n}: file {i}'s bytes"
                    );
                }
                if n % 10 == 0 {
                    // A read submitted and then dropped: it keeps the file's slot until the
                    // kernel completes it, even after the File below is gone.
                    let mut read = std::pin::pin!(f.read_at(vec![0u8; len], 0));
                    let _ = std::future::poll_fn(|cx| {
                        let polled = std::future::Future::poll(read.as_mut(), cx);
                        std::task::Poll::Ready(polled.is_ready())
                    })
                    .await;
                }
                open.push_back((i, f));
                if open.len() > WINDOW {
                    // Read the oldest open file once more (its slot was kept all along), then
                    // close it; alternate between close() and drop.
                    let (j, old) = open.pop_front().unwrap();
                    let (res, buf) = old.read_at(zeroed(64), 0).await;
                    assert_eq!(res.unwrap(), 64);
                    assert!(buf[..] == contents[j][..64], "file {j} reread");
                    if n % 2 == 0 {
                        old.close().await.unwrap();
                    } else {
                        drop(old);
                    }
                }
            }
            drop(open);
            // The dropped reads free their slots when their completions arrive.
            for _ in 0..3000 {
                if rt.driver_stats().fixed_files_in_use == 0 {
                    break;
                }
                uring::time::sleep(Duration::from_millis(10)).await;
            }
        });
        rt.driver_stats()
    });
    if kernel_at_least(5, 19) {
        assert_eq!(
            stats.fixed_files_registered, OPENS as u64,
            "every file was registered once: {stats:?}"
        );
    }
    assert_eq!(
        stats.fixed_files_in_use, 0,
        "every slot was freed: {stats:?}"
    );
}

/// Reads 96 bytes `rounds` times from each file (`i`, file of `contents[i % 8]`) and checks them.
async fn read_all(files: &[(usize, File)], contents: &[Vec<u8>], rounds: usize) {
    for r in 0..rounds {
        for (i, f) in files {
            let off = (r * 37) % 4000;
            let (res, buf) = f.read_at(zeroed(96), off as u64).await;
            assert_eq!(res.unwrap(), 96);
            assert!(buf[..] == contents[i % 8][off..off + 96], "file {i}");
        }
    }
}

/// With the registered-file table full, files are read by their fds, correctly, and take a slot
/// as soon as closing files free some. The table is made small (64 slots) by creating the
/// runtime under a low `RLIMIT_NOFILE`, in a child process.
#[test]
fn full_registered_file_table_falls_back_to_fds() {
    const SLOTS: usize = 64;
    const OPEN: usize = 100;
    const CLOSE: usize = 50;
    if is_child("fixed-full") {
        let dir = TempDir::new("fixed-full");
        let contents: Vec<Vec<u8>> = (0..8).map(|i| Rng(i + 11).bytes(4096)).collect();
        let paths: Vec<PathBuf> = (0..8).map(|i| dir.path(&format!("f{i}"))).collect();
        for (p, c) in paths.iter().zip(&contents) {
            std::fs::write(p, c).unwrap();
        }
        let old = uring_tests::set_nofile_limit(SLOTS as u64);
        let rt = uring::Runtime::new().unwrap();
        uring_tests::set_nofile_limit(old);
        rt.block_on(async {
            let mut files = Vec::new();
            for i in 0..OPEN {
                files.push((i, File::open(&paths[i % 8]).await.unwrap()));
            }
            read_all(&files, &contents, 20).await;
            let s = rt.driver_stats();
            assert_eq!(s.fixed_files_in_use, SLOTS as u64, "table full: {s:?}");
            assert_eq!(s.fixed_files_registered, SLOTS as u64, "{s:?}");
            files.drain(..CLOSE);
            read_all(&files, &contents, 2).await;
            let s = rt.driver_stats();
            assert_eq!(s.fixed_files_in_use, (OPEN - CLOSE) as u64, "{s:?}");
            assert_eq!(s.fixed_files_registered, OPEN as u64, "{s:?}");
        });
        println!("CHILD-OK");
        return;
    }
    if !kernel_at_least(5, 19) {
        eprintln!("skipped: sparse registered-file tables need Linux 5.19");
        return;
    }
    let out = run_child("full_registered_file_table_falls_back_to_fds", "fixed-full");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
