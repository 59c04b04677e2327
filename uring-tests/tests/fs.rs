//! `uring::fs` round trips against the real kernel: every API function, O_DIRECT, and
//! concurrency on one file.

use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, SystemTime};
use uring::buf::IoBuf;
use uring::fs::{self, AlignedBuf, File, OpenOptions};
use uring_tests::{fds_open_on, Rng, TempDir};

const LIMIT: Duration = Duration::from_secs(120);

/// Runs a future made by `make` on a fresh runtime under the watchdog.
fn run<T: Send + 'static, F: std::future::Future<Output = T>>(
    make: impl FnOnce() -> F + Send + 'static,
) -> T {
    uring_tests::run_watched(LIMIT, make)
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
    let base = dir.dir().to_path_buf();
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

/// `io_uring_enter` calls the runtime made while `n` reads of `f` were queued from one task in
/// one poll (counted before the loop's turn, so no wait or reaping is in it), and the bytes the
/// reads returned once all were awaited.
async fn enters_for_reads(f: Rc<File>, n: usize, block: usize) -> (u64, Vec<Vec<u8>>) {
    let reads: Vec<_> = (0..n)
        .map(|i| {
            let f = f.clone();
            Box::pin(async move {
                f.read_exact_at(AlignedBuf::zeroed(block), (i * block) as u64)
                    .await
            })
        })
        .collect();
    let before = uring::metrics().enters();
    let mut first_pass = None;
    let mut out = Vec::new();
    let done = join_all(reads, || {
        first_pass.get_or_insert(uring::metrics().enters() - before);
    })
    .await;
    for (res, buf) in done {
        res.unwrap();
        out.push(buf.to_vec());
    }
    (first_pass.expect("polled once"), out)
}

/// Polls every future once per wake until all are done; their outputs in order. `after_pass`
/// runs after each pass over them.
async fn join_all<F: std::future::Future + Unpin>(
    mut futs: Vec<F>,
    mut after_pass: impl FnMut(),
) -> Vec<F::Output> {
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, out) in futs.iter_mut().zip(outs.iter_mut()) {
            if out.is_none() {
                if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                    *out = Some(v);
                }
            }
        }
        after_pass();
        if outs.iter().all(Option::is_some) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outs.into_iter().map(Option::unwrap).collect()
}

/// Reads of an `O_DIRECT` file reach the kernel as they are queued (one `io_uring_enter` each:
/// the device starts on each at once), whether the file was opened by uring or wrapped from
/// std; buffered reads queued together go in one batch. Both read the right bytes.
#[test]
fn o_direct_ops_reach_the_kernel_as_they_are_queued() {
    let dir = TempDir::new("direct-at-once");
    let p = dir.path("f");
    let data = Rng(11).bytes(64 * 1024);
    std::fs::write(&p, &data).unwrap();
    let res = run(move || async move {
        let direct = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&p)
            .await
        {
            Ok(f) => Rc::new(f),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return None,
            Err(e) => panic!("open O_DIRECT: {e}"),
        };
        let wrapped = {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&p)
                .unwrap();
            Rc::new(File::from(f))
        };
        let buffered = Rc::new(File::open(&p).await.unwrap());
        let n = 8;
        Some((
            enters_for_reads(direct, n, 4096).await,
            enters_for_reads(wrapped, n, 4096).await,
            enters_for_reads(buffered, n, 4096).await,
        ))
    });
    let Some((direct, wrapped, buffered)) = res else {
        eprintln!("the temp dir's filesystem refuses O_DIRECT: nothing to check here");
        return;
    };
    for (what, (_, bufs)) in [
        ("direct", &direct),
        ("wrapped", &wrapped),
        ("buffered", &buffered),
    ] {
        for (i, b) in bufs.iter().enumerate() {
            assert!(b[..] == data[i * 4096..(i + 1) * 4096], "{what} read {i}");
        }
    }
    // One enter per O_DIRECT read as it is queued, before the loop's turn; buffered reads
    // wait in the SQ for the turn, which submits them together.
    assert_eq!(direct.0, 8, "enters while 8 O_DIRECT reads were queued");
    assert_eq!(
        wrapped.0, 8,
        "enters while 8 wrapped O_DIRECT reads were queued"
    );
    assert_eq!(buffered.0, 0, "enters while 8 buffered reads were queued");
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
                    let len = (rng.next_u64() % 20_000 + 1) as usize;
                    let off = rng.next_u64() % (data.len() - len) as u64;
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
