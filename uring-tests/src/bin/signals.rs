//! A program using only `uring::run`, `uring::signal` and plain threads: two runtimes on two
//! threads listen for SIGUSR1 while another thread sends it, then `ctrl_c` sees a SIGINT.
//! `tests/signal.rs` runs it under `../shared/tools/no-readiness-polling` (strace): all its
//! waiting must be `io_uring_enter`, with no epoll, poll, ppoll or select call. Prints `ok`
//! and exits 0 when every listener saw its signals.

use std::sync::mpsc;
use std::time::Duration;
use uring::signal::{signal, SIGINT, SIGUSR1};

const ROUNDS: usize = 20;

fn send(signum: i32) {
    // SAFETY: kill(2) takes no pointer.
    let rc = unsafe { libc::kill(libc::getpid(), signum) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

fn main() {
    // Both listeners exist before any signal is sent, so each must see every round.
    let mut here = signal(SIGUSR1).expect("signal(SIGUSR1)");
    let mut there = signal(SIGUSR1).expect("signal(SIGUSR1)");
    let (ack_tx, ack_rx) = mpsc::channel::<&'static str>();
    let other_ack = ack_tx.clone();
    let other = std::thread::spawn(move || {
        uring::run(async move {
            for _ in 0..ROUNDS {
                there.recv().await.expect("recv on the second runtime");
                other_ack.send("there").unwrap();
            }
        })
    });
    let sender = std::thread::spawn(move || {
        for _ in 0..ROUNDS {
            send(SIGUSR1);
            // Each round is seen by both runtimes before the next is sent.
            let a = ack_rx.recv_timeout(Duration::from_secs(60)).expect("ack");
            let b = ack_rx.recv_timeout(Duration::from_secs(60)).expect("ack");
            assert_ne!(a, b, "both listeners answer each round");
        }
    });
    uring::run(async move {
        for _ in 0..ROUNDS {
            here.recv().await.expect("recv on the main runtime");
            ack_tx.send("here").unwrap();
        }
    });
    sender.join().unwrap();
    other.join().unwrap();

    // ctrl_c: a SIGINT listener installs the handler first, so a SIGINT sent before ctrl_c's own
    // listener exists cannot end the process; the sender repeats until ctrl_c has seen one.
    let _keep = signal(SIGINT).expect("signal(SIGINT)");
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let sender = std::thread::spawn(move || {
        while done_rx.recv_timeout(Duration::from_millis(20)).is_err() {
            send(SIGINT);
        }
    });
    uring::run(uring::signal::ctrl_c()).expect("ctrl_c");
    done_tx.send(()).unwrap();
    sender.join().unwrap();
    println!("ok");
}
