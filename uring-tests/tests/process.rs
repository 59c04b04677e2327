//! `uring::process`: output and exit codes, many concurrent children all reaped (no zombie left,
//! checked in /proc), 16 MiB through `cat` both ways at once, kill, kill_on_drop, a dropped
//! child reaped anyway, a missing program, try_wait, a wait dropped midway, and a program using
//! only `process` making no readiness-polling call; `examples/run.rs` end to end (prefixed
//! lines, the failure's exit code, commands from stdin, its concurrency limit).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uring::process::{Command, Stdio};
use uring::time::sleep;
use uring_tests::{run_watched, watchdog, Rng};

/// Generous limit for one test: far above what any of them needs on an idle machine.
const LIMIT: Duration = Duration::from_secs(120);

/// The state letter and parent pid of process `pid` (`/proc/PID/stat`), or `None` if it is gone.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses; the last ')' ends it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a zombie child of this process.
fn is_our_zombie(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, ppid)| state == 'Z' && ppid == std::process::id())
}

/// Whether `pid` is (still) a child of this process, zombie or not.
fn is_our_child(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, ppid)| ppid == std::process::id())
}

/// Waits (on the runtime) until `pid` is no child of ours any more: exited and reaped.
async fn until_reaped(pid: u32) {
    let start = Instant::now();
    while is_our_child(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pid {pid} still a child of ours after 30 s: {:?}",
            proc_stat(pid)
        );
        sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn output_and_exit_code() {
    run_watched(LIMIT, || async {
        let out = Command::new("sh")
            .args(["-c", "echo hi; echo oops >&2; exit 3"])
            .output()
            .await
            .unwrap();
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(out.status.code(), Some(3));
        assert!(!out.status.success());

        let status = Command::new("sh")
            .args(["-c", "exit 0"])
            .status()
            .await
            .unwrap();
        assert!(status.success());

        // The environment, working directory and a cleared environment reach the child.
        let out = Command::new("sh")
            .args(["-c", "echo \"$A-$B-$PWD\""])
            .env("A", "1")
            .envs([("B", "2")])
            .current_dir("/")
            .output()
            .await
            .unwrap();
        assert_eq!(out.stdout, b"1-2-/\n");
        let out = Command::new("/bin/sh")
            .args(["-c", "echo \"[$HOME][$A]\""])
            .env_clear()
            .env("A", "kept")
            .output()
            .await
            .unwrap();
        assert_eq!(out.stdout, b"[][kept]\n");
        let out = Command::new("sh")
            .args(["-c", "echo \"[$HOME]\""])
            .env_remove("HOME")
            .output()
            .await
            .unwrap();
        assert_eq!(out.stdout, b"[]\n");
        // output() gives the child /dev/null as its stdin.
        let out = Command::new("cat").output().await.unwrap();
        assert!(out.status.success() && out.stdout.is_empty());
    });
}

#[test]
fn concurrent_children_are_all_reaped() {
    let pids = run_watched(LIMIT, || async {
        let mut waits = Vec::new();
        let mut pids = Vec::new();
        for _ in 0..500 {
            let mut child = Command::new("true").spawn().unwrap();
            pids.push(child.id().unwrap());
            waits.push(uring::spawn(async move {
                let status = child.wait().await.unwrap();
                assert_eq!(child.id(), None, "a reaped child has no id");
                status
            }));
        }
        for w in waits {
            assert!(w.await.unwrap().success());
        }
        pids
    });
    // Every child was reaped: none of them is left as a zombie of ours. (A pid may have been
    // reused since by another test's child; a zombie of ours with that pid right now would be
    // a coincidence of the same instant.)
    let zombies: Vec<u32> = pids.into_iter().filter(|&p| is_our_zombie(p)).collect();
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
}

#[test]
fn sixteen_mib_through_cat() {
    run_watched(LIMIT, || async {
        let mut cat = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = cat.stdin.take().unwrap();
        let stdout = cat.stdout.take().unwrap();
        let data = Rng(11).bytes(16 << 20);
        let expect = data.clone();
        // Written in pieces from one task while another reads: neither side can finish alone
        // (a pipe holds 64 KiB).
        let writer = uring::spawn(async move {
            let mut off = 0;
            while off < data.len() {
                let end = (off + 1_000_003).min(data.len());
                stdin.write_all(data[off..end].to_vec()).await.0.unwrap();
                off = end;
            }
            // stdin drops here: cat sees end of file.
        });
        let mut got = Vec::with_capacity(16 << 20);
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            let (res, b) = stdout.read(buf).await;
            buf = b;
            let n = res.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "cat gave back other bytes");
        assert!(cat.wait().await.unwrap().success());
    });
}

#[test]
fn dropped_reads_lose_no_byte() {
    run_watched(LIMIT, || async {
        let mut child = Command::new("sh")
            .args(["-c", "for i in $(seq 1 2000); do echo line $i; done"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut got = Vec::new();
        let mut rng = Rng(5);
        loop {
            // Reads dropped at random points: what they took comes back to the next read.
            let limit = Duration::from_micros(rng.below(300));
            match uring::time::timeout(
                limit,
                stdout.read(Vec::with_capacity(1 + rng.below(4096) as usize)),
            )
            .await
            {
                Ok((res, buf)) => {
                    if res.unwrap() == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf);
                }
                Err(_) => continue,
            }
        }
        let expect: String = (1..=2000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(String::from_utf8(got).unwrap(), expect);
        assert!(child.wait().await.unwrap().success());
    });
}

#[test]
fn kill_gives_a_signal_status() {
    run_watched(LIMIT, || async {
        let mut child = Command::new("sleep").arg("100").spawn().unwrap();
        let pid = child.id().unwrap();
        child.kill().await.unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.signal(), Some(9));
        assert_eq!(status.code(), None);
        assert!(!is_our_child(pid), "killed child reaped");
        // Killing a reaped child is no error (std's behaviour).
        child.start_kill().unwrap();
    });
}

#[test]
fn kill_on_drop_kills_and_reaps() {
    run_watched(LIMIT, || async {
        let child = Command::new("sleep")
            .arg("100")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        assert!(is_our_child(pid));
        drop(child);
        until_reaped(pid).await;

        // A `wait` in flight when the child is dropped: still killed and reaped.
        let mut child = Command::new("sleep")
            .arg("100")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        assert!(
            uring::time::timeout(Duration::from_millis(10), child.wait())
                .await
                .is_err()
        );
        drop(child);
        until_reaped(pid).await;
    });
}

#[test]
fn a_dropped_child_is_reaped_when_it_exits() {
    run_watched(LIMIT, || async {
        let child = Command::new("sh")
            .args(["-c", "sleep 0.2"])
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        drop(child);
        // Not killed: it runs on...
        assert!(is_our_child(pid) && !is_our_zombie(pid));
        // ...and the runtime reaps it once it exits.
        until_reaped(pid).await;
    });
    // Dropped outside any runtime (the runtime it came from is gone): the blocking pool reaps it.
    watchdog(LIMIT, || {
        let rt = uring::Runtime::new().unwrap();
        let child = rt.block_on(async { Command::new("sleep").arg("0.2").spawn().unwrap() });
        let pid = child.id().unwrap();
        drop(rt);
        drop(child);
        let start = Instant::now();
        while is_our_child(pid) {
            assert!(start.elapsed() < Duration::from_secs(30), "not reaped");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

#[test]
fn a_runtime_shut_down_hands_its_orphans_to_the_pool() {
    let pid = run_watched(LIMIT, || async {
        let child = Command::new("sleep").arg("0.3").spawn().unwrap();
        let pid = child.id().unwrap();
        // The reaping task is dropped with the runtime, long before the child exits.
        drop(child);
        pid
    });
    let start = Instant::now();
    while is_our_child(pid) {
        assert!(start.elapsed() < Duration::from_secs(30), "not reaped");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn missing_program_is_not_found() {
    run_watched(LIMIT, || async {
        let err = Command::new("/nonexistent/program").spawn().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        let err = Command::new("no-such-program-uring-test")
            .output()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        let err = Command::new("no-such-program-uring-test")
            .status()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    });
}

#[test]
fn try_wait_before_and_after_exit() {
    run_watched(LIMIT, || async {
        let mut child = Command::new("sh")
            .args(["-c", "read x; exit 4"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(child.try_wait().unwrap().is_none());
        assert!(child.id().is_some());
        // Closing stdin lets it exit.
        drop(child.stdin.take());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(30));
            sleep(Duration::from_millis(2)).await;
        };
        assert_eq!(status.code(), Some(4));
        assert_eq!(child.id(), None);
        assert_eq!(child.try_wait().unwrap(), Some(status));
        assert_eq!(child.wait().await.unwrap(), status);
    });
}

#[test]
fn a_dropped_wait_loses_no_status() {
    run_watched(LIMIT, || async {
        for _ in 0..20 {
            let mut child = Command::new("sh")
                .args(["-c", "sleep 0.01; exit 6"])
                .spawn()
                .unwrap();
            // Waits dropped at random points, the last ones likely after the exit: the status
            // they may have reaped is kept for the next wait.
            let mut rng = Rng(child.id().unwrap() as u64 | 1);
            loop {
                let limit = Duration::from_micros(rng.below(5_000));
                if let Ok(s) = uring::time::timeout(limit, child.wait()).await {
                    assert_eq!(s.unwrap().code(), Some(6));
                    break;
                }
                if rng.below(2) == 0 {
                    if let Some(s) = child.try_wait().unwrap() {
                        assert_eq!(s.code(), Some(6));
                        break;
                    }
                }
            }
            assert_eq!(child.wait().await.unwrap().code(), Some(6));
        }
    });
}

#[test]
fn pipes_chain_two_children() {
    run_watched(LIMIT, || async {
        let mut first = Command::new("sh")
            .args(["-c", "echo b; echo a"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let fd = first.stdout.take().unwrap().into_owned_fd().unwrap();
        let out = Command::new("sort").stdin(fd).output().await.unwrap();
        assert_eq!(out.stdout, b"a\nb\n");
        assert!(first.wait().await.unwrap().success());
    });
}

/// The tool that runs a command under strace and fails on any readiness-polling call: beside
/// the repository (`../shared/tools`), or where `NO_READINESS_POLLING` says.
fn no_readiness_polling_tool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NO_READINESS_POLLING") {
        return Some(PathBuf::from(p));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        repo.join("../shared/tools/no-readiness-polling"),
        PathBuf::from("/work/shared/tools/no-readiness-polling"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

#[test]
fn process_makes_no_readiness_polling_call() {
    let Some(tool) = no_readiness_polling_tool() else {
        println!(
            "SKIPPED: no-readiness-polling is not installed here (../shared/tools or \
             $NO_READINESS_POLLING)"
        );
        return;
    };
    uring_tests::e2e::require("strace", "strace");
    let out = std::process::Command::new(tool)
        .args(["--timeout", "100", env!("CARGO_BIN_EXE_process-only")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("no readiness polling"),
        "no-readiness-polling failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("process-only: ok"), "{stdout}");
}

#[test]
fn run_example_prefixes_lines_and_exits_with_the_failure() {
    let out = std::process::Command::new(uring_tests::e2e::example("run"))
        .args([
            "-P",
            "2",
            "echo a1; echo a2",
            "echo b1 >&2; exit 7",
            "sleep 0.1; echo c1; echo c2 >&2",
            "printf 'd1\\nd2'",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let mut lines: Vec<&str> = stdout.lines().collect();
    // Each command's own lines keep their order.
    let pos = |l: &str| lines.iter().position(|x| *x == l);
    assert!(pos("[1] a1") < pos("[1] a2"), "{stdout}");
    assert!(pos("[4] d1") < pos("[4] d2"), "{stdout}");
    lines.sort_unstable();
    assert_eq!(lines, ["[1] a1", "[1] a2", "[3] c1", "[4] d1", "[4] d2"]);
    let mut err_lines: Vec<&str> = stderr.lines().collect();
    err_lines.sort_unstable();
    assert_eq!(err_lines, ["[2] b1", "[3] c2"]);

    // All succeeding, commands from stdin: exit code 0.
    let mut child = std::process::Command::new(uring_tests::e2e::example("run"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo x\n\necho y\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, ["[1] x", "[2] y"]);
}

#[test]
fn run_example_keeps_to_its_limit() {
    // Each command notes its start and end in a file; with -P 2 never more than 2 overlap.
    let dir = uring_tests::TempDir::new("run-limit");
    let log = dir.path("log");
    let cmd = format!(
        "echo start >> {log}; sleep 0.05; echo end >> {log}",
        log = log.display()
    );
    let cmds: Vec<&str> = (0..8).map(|_| cmd.as_str()).collect();
    let out = std::process::Command::new(uring_tests::e2e::example("run"))
        .args(["-P", "2"])
        .args(&cmds)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let (mut running, mut most) = (0i32, 0i32);
    for l in text.lines() {
        running += if l == "start" { 1 } else { -1 };
        most = most.max(running);
    }
    assert_eq!(text.lines().count(), 16);
    assert!(most <= 2, "{most} ran at once:\n{text}");
}

#[test]
fn stdin_shutdown_and_a_gone_reader() {
    run_watched(LIMIT, || async {
        let mut cat = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"before".to_vec()).await.0.unwrap();
        stdin.shutdown_write().await.unwrap();
        // cat saw end of file: it wrote what it had and exits.
        let mut out = Vec::new();
        cat.stdout
            .take()
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, b"before");
        let err = stdin.write(b"after".to_vec()).await.0.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(cat.wait().await.unwrap().success());

        // A child that exits without reading: writes fail with EPIPE (SIGPIPE is ignored).
        let mut child = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        child.wait().await.unwrap();
        let err = stdin.write_all(vec![7; 1 << 20]).await.0.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    });
}

/// The pids of this process's children whose environment contains `marker`.
fn children_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| is_our_child(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

#[test]
fn a_dropped_output_future_with_kill_on_drop_kills_its_child() {
    run_watched(LIMIT, || async {
        let marker = "URING_OUTPUT_DROP_MARKER";
        let out = Command::new("sleep")
            .arg("100")
            .env(marker, "1")
            .kill_on_drop(true)
            .output();
        // Spawned when output() was called.
        let pids = children_with(marker);
        assert_eq!(pids.len(), 1, "{pids:?}");
        assert!(uring::time::timeout(Duration::from_millis(20), out)
            .await
            .is_err());
        until_reaped(pids[0]).await;
    });
}

#[test]
fn an_idle_pipe_hands_over_its_own_fd() {
    run_watched(Duration::from_secs(60), || async {
        use std::os::fd::AsRawFd;
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (in_fd, out_fd) = (stdin.as_raw_fd(), stdout.as_raw_fd());
        // No op in flight: the fds themselves, not duplicates.
        let stdin = stdin.into_owned_fd().unwrap();
        let stdout = stdout.into_owned_fd().unwrap();
        assert_eq!(stdin.as_raw_fd(), in_fd);
        assert_eq!(stdout.as_raw_fd(), out_fd);
        let mut w = std::fs::File::from(stdin);
        std::io::Write::write_all(&mut w, b"mine now\n").unwrap();
        drop(w);
        let mut r = std::fs::File::from(stdout);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut r, &mut got).unwrap();
        assert_eq!(got, "mine now\n");
        assert!(child.wait().await.unwrap().success());
    });
}

/// With `SIGCHLD` set to `SIG_IGN` the kernel reaps children itself, often before uring has
/// opened a pidfd for one. Every spawn still succeeds and its output still arrives; waits fail
/// with `ECHILD` (as std's do) and a kill is a no-op, never a signal by a number that may
/// name another process now. Runs in a child process: the disposition is process-wide.
#[test]
fn children_reaped_by_sigchld_ignored_still_spawn() {
    if !uring_tests::is_child("sigchld-ignored") {
        let out = uring_tests::run_child(
            "children_reaped_by_sigchld_ignored_still_spawn",
            "sigchld-ignored",
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
        assert!(
            out.status.success(),
            "child test failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    // SAFETY: a plain disposition change (no handler), in this test's own process.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    run_watched(LIMIT, || async {
        let mut gone_before_watch = 0;
        for i in 0..200 {
            // `sh -c echo` exits at once, so some are reaped before the pidfd is open.
            let mut child = Command::new("sh")
                .args(["-c", &format!("echo {i}")])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {i} under SIG_IGN: {e}"));
            if child.id().is_none() {
                gone_before_watch += 1;
            }
            let mut out = Vec::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_end(&mut out)
                .await
                .unwrap();
            assert_eq!(out, format!("{i}\n").into_bytes());
            child.start_kill().unwrap();
            let e = child.wait().await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ECHILD), "wait {i}: {e}");
            assert_eq!(
                child.try_wait().unwrap_err().raw_os_error(),
                Some(libc::ECHILD)
            );
        }
        println!("{gone_before_watch} of 200 children were reaped before uring watched them");
    });
}
