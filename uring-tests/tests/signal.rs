//! `uring::signal`: signals delivered as ring completions.
//!
//! Signal handlers are process-wide, so every test that installs one runs in a child process:
//! the test re-executes this binary with `--exact NAME` and `URING_TEST_CHILD=NAME`
//! (`uring_tests::run_child_with_limit`), and the child runs the body. A child that hangs is
//! killed after `LIMIT` and fails the test.

use std::future::Future;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use uring::signal::{signal, Signal, SIGINT, SIGUSR1, SIGUSR2};
use uring::time::{sleep, timeout};
use uring_tests::{is_child, poll_once, run_child_with_limit, watchdog};

const LIMIT: Duration = Duration::from_secs(120);

/// Runs `body` in a child process (this test alone, re-executed) and fails if the child fails.
fn in_child(name: &str, body: impl FnOnce() + Send + 'static) {
    if is_child(name) {
        watchdog(LIMIT, body);
        return;
    }
    let out = run_child_with_limit(name, name, LIMIT + Duration::from_secs(30), || {})
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed in its child process ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `signum` to the whole process (the kernel picks the thread).
fn kill_process(signum: i32) {
    // SAFETY: kill(2) takes no pointer.
    let rc = unsafe { libc::kill(libc::getpid(), signum) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// Sends `signum` to one thread of this process.
fn kill_thread(tid: libc::pid_t, signum: i32) {
    // SAFETY: the tgkill syscall takes no pointer.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, signum) };
    assert_eq!(rc, 0, "tgkill: {}", std::io::Error::last_os_error());
}

fn gettid() -> libc::pid_t {
    // SAFETY: gettid takes no argument.
    unsafe { libc::gettid() }
}

/// `recv` with a limit: a lost signal fails the test instead of hanging it.
async fn recv_within(sig: &mut Signal, limit: Duration, what: &str) {
    match timeout(limit, sig.recv()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{what}: recv failed: {e}"),
        Err(_) => panic!("{what}: no signal within {limit:?}"),
    }
}

/// Whether `recv` completes within `limit`.
async fn recv_completes(sig: &mut Signal, limit: Duration) -> bool {
    match timeout(limit, sig.recv()).await {
        Ok(res) => {
            res.expect("recv");
            true
        }
        Err(_) => false,
    }
}

const SECS_10: Duration = Duration::from_secs(10);

#[test]
fn kill_from_another_thread_completes_recv() {
    in_child("kill_from_another_thread_completes_recv", || {
        uring::run(async {
            let mut usr1 = signal(SIGUSR1).unwrap();
            assert_eq!(usr1.signum(), SIGUSR1);
            let sender = std::thread::spawn(|| kill_process(SIGUSR1));
            recv_within(&mut usr1, SECS_10, "SIGUSR1 from a thread").await;
            sender.join().unwrap();
            // And again: the listener is reusable.
            let sender = std::thread::spawn(|| kill_process(SIGUSR1));
            recv_within(&mut usr1, SECS_10, "second SIGUSR1").await;
            sender.join().unwrap();
        });
    });
}

#[test]
fn a_burst_of_100_signals_gives_at_least_one_recv_and_no_hang() {
    in_child(
        "a_burst_of_100_signals_gives_at_least_one_recv_and_no_hang",
        || {
            uring::run(async {
                let mut usr1 = signal(SIGUSR1).unwrap();
                let sender = std::thread::spawn(|| {
                    for _ in 0..100 {
                        kill_process(SIGUSR1);
                    }
                });
                recv_within(&mut usr1, SECS_10, "the burst").await;
                // Coalesced: more recvs may complete, but never more than signals were sent.
                let mut seen = 1;
                while recv_completes(&mut usr1, Duration::from_millis(300)).await {
                    seen += 1;
                    assert!(seen <= 100, "more recvs than signals");
                }
                sender.join().unwrap();
                // Drained: the listener still works for the next one.
                let sender = std::thread::spawn(|| kill_process(SIGUSR1));
                // (A last recv of the burst may still be pending; at least one more completes.)
                recv_within(&mut usr1, SECS_10, "a signal after the burst").await;
                sender.join().unwrap();
                println!("burst of 100 gave {seen} recv(s)");
            });
        },
    );
}

#[test]
fn a_signal_sent_before_recv_is_polled_is_not_lost() {
    in_child("a_signal_sent_before_recv_is_polled_is_not_lost", || {
        // Made outside any runtime, signalled before one exists.
        let mut usr1 = signal(SIGUSR1).unwrap();
        std::thread::spawn(|| kill_process(SIGUSR1)).join().unwrap();
        uring::run(async {
            // Some loop turns pass first: the signal stays pending for the listener.
            sleep(Duration::from_millis(50)).await;
            recv_within(&mut usr1, SECS_10, "a signal sent before the runtime").await;
            // Sent while no recv is pending, inside the runtime.
            std::thread::spawn(|| kill_process(SIGUSR1)).join().unwrap();
            sleep(Duration::from_millis(50)).await;
            recv_within(&mut usr1, SECS_10, "a signal sent between recvs").await;
            // A recv polled once (its read now in flight) and dropped: the signal that follows
            // is the next recv's.
            {
                let mut first = Box::pin(usr1.recv());
                assert!(poll_once(&mut first).await.is_pending());
            }
            std::thread::spawn(|| kill_process(SIGUSR1)).join().unwrap();
            sleep(Duration::from_millis(50)).await;
            recv_within(&mut usr1, SECS_10, "a signal after a dropped recv").await;
        });
        // Sent with raise(3): the handler runs on this very thread, before raise returns.
        // SAFETY: raise takes no pointer.
        unsafe { libc::raise(SIGUSR1) };
        uring::run(async {
            recv_within(&mut usr1, SECS_10, "a raised signal").await;
        });
    });
}

#[test]
fn two_listeners_in_one_runtime_both_wake() {
    in_child("two_listeners_in_one_runtime_both_wake", || {
        uring::run(async {
            let mut a = signal(SIGUSR2).unwrap();
            let mut b = signal(SIGUSR2).unwrap();
            let mut c = signal(SIGUSR2).unwrap();
            let ta = uring::spawn(async move { recv_within(&mut a, SECS_10, "listener a").await });
            let tb = uring::spawn(async move { recv_within(&mut b, SECS_10, "listener b").await });
            // Both tasks are waiting (their reads in flight) before the signal is sent.
            sleep(Duration::from_millis(20)).await;
            std::thread::spawn(|| kill_process(SIGUSR2));
            ta.await.unwrap();
            tb.await.unwrap();
            // A third listener that was not waiting sees it too.
            recv_within(&mut c, SECS_10, "listener c, not waiting when it came").await;
        });
    });
}

#[test]
fn listeners_on_several_runtimes_and_a_pool_each_wake() {
    in_child("listeners_on_several_runtimes_and_a_pool_each_wake", || {
        let pool = uring::Pool::builder().threads(2).build().unwrap();
        // Made here and moved to where they wait: a Signal is Send.
        let listeners: Vec<Signal> = (0..4).map(|_| signal(SIGUSR1).unwrap()).collect();
        let mut listeners = listeners.into_iter();
        let mut handles = Vec::new();
        for worker in 0..2 {
            let mut sig = listeners.next().unwrap();
            handles.push(pool.spawn_on(worker, move || async move {
                recv_within(&mut sig, SECS_10, "a pool worker's listener").await;
            }));
        }
        let mut on_thread = listeners.next().unwrap();
        let thread = std::thread::spawn(move || {
            uring::run(async move {
                recv_within(&mut on_thread, SECS_10, "a runtime on a plain thread").await;
            })
        });
        let mut main = listeners.next().unwrap();
        uring::run(async move {
            sleep(Duration::from_millis(20)).await;
            std::thread::spawn(|| kill_process(SIGUSR1));
            recv_within(&mut main, SECS_10, "the main runtime's listener").await;
            for h in handles {
                h.await.unwrap();
            }
        });
        thread.join().unwrap();
    });
}

#[test]
fn a_signal_delivered_to_any_thread_reaches_the_listener() {
    in_child(
        "a_signal_delivered_to_any_thread_reaches_the_listener",
        || {
            // Threads that block nothing: a plain one, a blocking-pool thread, pool workers.
            let (tid_tx, tid_rx) = mpsc::channel();
            let release = Arc::new(Barrier::new(3));
            let plain = {
                let (tid_tx, release) = (tid_tx.clone(), release.clone());
                std::thread::spawn(move || {
                    tid_tx.send(("plain thread", gettid())).unwrap();
                    release.wait();
                })
            };
            let pool = uring::Pool::builder().threads(2).build().unwrap();
            for w in 0..2 {
                let tid_tx = tid_tx.clone();
                drop(pool.spawn_on(w, move || async move {
                    tid_tx.send(("pool worker", gettid())).unwrap();
                }));
            }
            let mut usr1 = signal(SIGUSR1).unwrap();
            uring::run(async move {
                let blocking = {
                    let (tid_tx, release) = (tid_tx.clone(), release.clone());
                    uring::spawn_blocking(move || {
                        tid_tx.send(("blocking-pool thread", gettid())).unwrap();
                        release.wait();
                    })
                };
                tid_tx.send(("the runtime's own thread", gettid())).unwrap();
                let mut targets = Vec::new();
                for _ in 0..5 {
                    targets.push(tid_rx.recv_timeout(SECS_10).expect("a thread's tid"));
                }
                for (what, tid) in targets {
                    std::thread::spawn(move || kill_thread(tid, SIGUSR1));
                    recv_within(&mut usr1, SECS_10, what).await;
                    println!("a signal sent to the {what} was received");
                }
                release.wait();
                blocking.await.unwrap();
            });
            plain.join().unwrap();
        },
    );
}

#[test]
fn a_dropped_recv_loses_no_signal_for_other_listeners() {
    // One listener's recv is dropped over and over (a timeout around it) while another waits
    // for each signal: if a dropped read took the eventfd's count and nobody dispatched, the
    // waiting listener would miss that round.
    in_child("a_dropped_recv_loses_no_signal_for_other_listeners", || {
        let rounds = 100;
        let mut steady = signal(SIGUSR1).unwrap();
        let mut flaky = signal(SIGUSR1).unwrap();
        let (ack_tx, ack_rx) = mpsc::channel::<()>();
        let sender = std::thread::spawn(move || {
            for i in 0..rounds {
                std::thread::sleep(Duration::from_micros(200 * (i % 7)));
                kill_process(SIGUSR1);
                ack_rx
                    .recv_timeout(SECS_10)
                    .unwrap_or_else(|_| panic!("round {i}: the steady listener missed it"));
            }
        });
        uring::run(async move {
            let flaky_task = uring::spawn(async move {
                let mut n = 0u64;
                loop {
                    let limit = Duration::from_micros(50 + 100 * (n % 5));
                    let _ = timeout(limit, flaky.recv()).await;
                    n += 1;
                }
            });
            for i in 0..rounds {
                recv_within(&mut steady, SECS_10, &format!("round {i}")).await;
                ack_tx.send(()).unwrap();
            }
            flaky_task.abort();
        });
        sender.join().unwrap();
    });
}

#[test]
fn a_dropped_read_that_took_the_count_still_wakes_a_waiting_listener() {
    // Runtime 1 holds a recv whose read is in flight and never polls it again; runtime 2 has a
    // listener waiting in a task. The signal comes while runtime 2's thread is blocked outside
    // the kernel, so runtime 1's read takes the eventfd's count (with DEFER_TASKRUN runtime 2's
    // read is retried only when its thread enters the kernel again, and then finds nothing).
    // Runtime 1 then drops its recv unpolled: the completion goes to the op's `unclaimed` hook,
    // which must dispatch, or the waiting listener would never hear of this signal.
    in_child(
        "a_dropped_read_that_took_the_count_still_wakes_a_waiting_listener",
        || {
            let mut dropped = signal(SIGUSR1).unwrap();
            let mut waiting = signal(SIGUSR1).unwrap();
            let (ready_tx, ready_rx) = mpsc::channel::<&str>();
            let (go_tx, go_rx) = mpsc::channel::<()>();
            let r1 = {
                let ready_tx = ready_tx.clone();
                std::thread::spawn(move || {
                    uring::run(async move {
                        let mut recv = Box::pin(dropped.recv());
                        let mut cx = Context::from_waker(Waker::noop());
                        assert!(recv.as_mut().poll(&mut cx).is_pending());
                        ready_tx.send("r1").unwrap();
                        // In the kernel when the signal comes; the read completes meanwhile.
                        sleep(Duration::from_millis(300)).await;
                        drop(recv);
                    })
                })
            };
            let r2 = std::thread::spawn(move || {
                uring::run(async move {
                    // Without the dispatch, only the timeout's own wake-up (which polls the
                    // recv once more) would find the signal, 30 s later.
                    let task = uring::spawn(async move {
                        recv_within(
                            &mut waiting,
                            Duration::from_secs(30),
                            "the waiting listener",
                        )
                        .await;
                        Instant::now()
                    });
                    sleep(Duration::from_millis(50)).await;
                    ready_tx.send("r2").unwrap();
                    // This thread is blocked, outside the kernel, until told to go on.
                    go_rx.recv().unwrap();
                    task.await.unwrap()
                })
            });
            for _ in 0..2 {
                ready_rx.recv_timeout(SECS_10).expect("both runtimes ready");
            }
            kill_process(SIGUSR1);
            // Runtime 1 drops its recv 300 ms after it started sleeping.
            std::thread::sleep(Duration::from_millis(600));
            let go = Instant::now();
            go_tx.send(()).unwrap();
            r1.join().unwrap();
            let received = r2.join().unwrap();
            let after = received.saturating_duration_since(go);
            assert!(
                after < Duration::from_secs(10),
                "the waiting listener heard of the signal {after:?} after its thread went on"
            );
        },
    );
}

#[test]
fn ctrl_c_completes_on_sigint() {
    in_child("ctrl_c_completes_on_sigint", || {
        // A SIGINT listener first installs the handler: a SIGINT that comes before ctrl_c made
        // its own listener then cannot end this process. The sender repeats until ctrl_c saw one.
        let _installed = signal(SIGINT).unwrap();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let sender = std::thread::spawn(move || {
            while done_rx.recv_timeout(Duration::from_millis(20)).is_err() {
                kill_process(SIGINT);
            }
        });
        uring::run(async {
            timeout(SECS_10, uring::signal::ctrl_c())
                .await
                .expect("ctrl_c within 10 s")
                .expect("ctrl_c");
        });
        done_tx.send(()).unwrap();
        sender.join().unwrap();
    });
}

#[test]
fn bad_signal_numbers_are_invalid_input() {
    // Refused before anything is installed, so this runs in the test process itself.
    for bad in [
        libc::SIGKILL,
        libc::SIGSTOP,
        0,
        65,
        -1,
        i32::MAX,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        32,
        33,
    ] {
        let err = signal(bad).expect_err(&format!("signal({bad}) must fail"));
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::InvalidInput,
            "signal({bad})"
        );
    }
}

#[test]
fn recv_outside_a_runtime_is_an_error_unless_a_signal_is_waiting() {
    in_child(
        "recv_outside_a_runtime_is_an_error_unless_a_signal_is_waiting",
        || {
            let mut usr2 = signal(SIGUSR2).unwrap();
            let mut cx = Context::from_waker(Waker::noop());
            {
                let mut recv = Box::pin(usr2.recv());
                match recv.as_mut().poll(&mut cx) {
                    Poll::Ready(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::Other),
                    other => panic!("expected an error, got {other:?}"),
                }
            }
            // SAFETY: raise takes no pointer.
            unsafe { libc::raise(SIGUSR2) };
            let mut recv = Box::pin(usr2.recv());
            assert!(matches!(recv.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        },
    );
}

#[test]
fn a_signal_only_program_makes_no_readiness_polling_call() {
    let bin = env!("CARGO_BIN_EXE_signals");
    let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/tools/no-readiness-polling");
    watchdog(LIMIT, move || {
        if tool.exists() {
            let out = std::process::Command::new(&tool).arg(bin).output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("no readiness polling"),
                "{} {bin} ({}):\nstdout:\n{stdout}\nstderr:\n{}",
                tool.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("ok\n"), "the program finished: {stdout}");
        } else {
            // A clean clone without the shared tools: the same check with strace directly.
            uring_tests::e2e::require("strace", "strace");
            strace_check(bin);
        }
    });
}

/// What `no-readiness-polling` does: strace every thread for the readiness syscalls, ignoring
/// the one `poll` of fds 0-2 that Rust's std makes at start-up.
fn strace_check(bin: &str) {
    let log = uring_tests::TempDir::new("signals-strace");
    let path = log.path("trace");
    let set = "epoll_create,epoll_create1,epoll_ctl,epoll_wait,epoll_pwait,epoll_pwait2,\
               poll,ppoll,select,pselect6,io_uring_enter";
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&path)
        .args(["-e", &format!("trace={set}"), bin])
        .output()
        .unwrap();
    assert!(out.status.success(), "{bin} under strace: {}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    let trace = std::fs::read_to_string(&path).unwrap();
    let std_start = "poll([{fd=0, events=0}, {fd=1, events=0}, {fd=2, events=0}], 3, 0)";
    let readiness = ["epoll_", "poll(", "ppoll(", "select(", "pselect6("];
    let bad: Vec<&str> = trace
        .lines()
        .filter(|l| !l.contains(std_start))
        .filter(|l| {
            let call = l.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
            readiness.iter().any(|r| call.starts_with(r))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "readiness polling seen:\n{}",
        bad.join("\n")
    );
    assert!(
        trace.contains("io_uring_enter("),
        "it waited in io_uring_enter"
    );
    println!("checked with strace directly (no ../shared/tools/no-readiness-polling here)");
}
