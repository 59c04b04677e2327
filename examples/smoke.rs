use std::time::{Duration, Instant};
fn main() {
    let rt = uring::Runtime::new().unwrap();
    println!("setup {}", rt.ring_setup());
    let t = Instant::now();
    let v = rt.block_on(async {
        let mut hs = Vec::new();
        for i in 0..100_000u64 {
            hs.push(uring::spawn(async move {
                uring::time::sleep(Duration::from_millis(1)).await;
                i
            }));
        }
        let mut s = 0;
        for h in hs {
            s += h.await.unwrap();
        }
        s
    });
    println!("sum {v} in {:?}", t.elapsed());
    let t = Instant::now();
    rt.block_on(async {
        let h = std::thread::spawn(|| ());
        h.join().unwrap();
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
    println!("remote wake in {:?}", t.elapsed());
    println!("{:?}", rt.driver_stats());
}
