//! A program using only `uring::run`, `uring::spawn` and `uring::process`: captured output, 50
//! concurrent children, 4 MiB through `cat` both ways at once, a killed `sleep` and a child
//! dropped with `kill_on_drop`. `tests/process.rs` runs it under
//! `../shared/tools/no-readiness-polling`: all its waiting (and its children's) must be
//! `io_uring_enter`, with no epoll, poll, ppoll or select call.

use uring::process::{Command, Stdio};

fn main() {
    uring::run(async {
        let out = Command::new("sh")
            .args(["-c", "echo hi; exit 3"])
            .output()
            .await
            .expect("sh");
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.status.code(), Some(3));

        let waits: Vec<_> = (0..50)
            .map(|_| {
                let mut child = Command::new("true").spawn().expect("true");
                uring::spawn(async move { child.wait().await.expect("wait") })
            })
            .collect();
        for w in waits {
            assert!(w.await.expect("task").success());
        }

        let mut cat = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cat");
        let stdin = cat.stdin.take().expect("stdin");
        let stdout = cat.stdout.take().expect("stdout");
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let expect = data.clone();
        let writer = uring::spawn(async move {
            stdin.write_all(data).await.0.expect("write");
        });
        let mut got = Vec::new();
        stdout.read_to_end(&mut got).await.expect("read");
        writer.await.expect("writer");
        assert!(got == expect, "cat gave back other bytes");
        assert!(cat.wait().await.expect("wait cat").success());

        let mut sleeper = Command::new("sleep").arg("100").spawn().expect("sleep");
        sleeper.kill().await.expect("kill");
        assert!(sleeper.try_wait().expect("try_wait").is_some());

        let dropped = Command::new("sleep")
            .arg("100")
            .kill_on_drop(true)
            .spawn()
            .expect("sleep");
        drop(dropped);
        // Let the reaping task see the child exit.
        uring::time::sleep(std::time::Duration::from_millis(100)).await;
    });
    println!("process-only: ok");
}
