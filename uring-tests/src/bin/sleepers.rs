//! A program using only `uring::run`, `uring::spawn` and `uring::time::sleep`: tasks that sleep
//! for various times, joined by the main future. Checked with
//! `../shared/tools/no-readiness-polling target/release/sleepers`: all its waiting must be
//! `io_uring_enter`, with no epoll, poll, ppoll or select call.

use std::time::Duration;

fn main() {
    let total = uring::run(async {
        let handles: Vec<_> = (0..1000u64)
            .map(|i| {
                uring::spawn(async move {
                    uring::time::sleep(Duration::from_millis(i % 50)).await;
                    // A second, nested task that sleeps too.
                    uring::spawn(async move {
                        uring::time::sleep(Duration::from_micros(100 * (i % 7))).await;
                        i
                    })
                    .await
                    .expect("nested task")
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h.await.expect("task");
        }
        total
    });
    assert_eq!(total, 999 * 1000 / 2);
    println!("done: 1000 tasks slept and summed to {total}");
}
