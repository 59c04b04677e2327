use std::time::{Duration, Instant};
fn main() {
    let rt = uring::Runtime::new().unwrap();
    eprintln!("setup {}", rt.ring_setup());
    let t = Instant::now();
    rt.block_on(async {
        let (tx, rx) = std::sync::mpsc::channel::<std::task::Waker>();
        let th = std::thread::spawn(move || {
            let w = rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            w.wake();
        });
        let mut sent = Some(tx);
        let mut done = false;
        std::future::poll_fn(|cx| {
            if done {
                return std::task::Poll::Ready(());
            }
            if let Some(tx) = sent.take() {
                tx.send(cx.waker().clone()).unwrap();
                done = true;
            }
            std::task::Poll::Pending
        })
        .await;
        th.join().unwrap();
    });
    eprintln!("remote wake in {:?} {:?}", t.elapsed(), rt.driver_stats());
}
