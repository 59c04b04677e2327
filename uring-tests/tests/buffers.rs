//! Owned buffers: no safe API lets a caller shrink or move memory the kernel is writing.

use std::io::Write;
use std::time::Duration;
use uring::buf::IoBuf;
use uring::fs::File;
use uring_tests::{watchdog, TempDir};

#[test]
fn a_read_into_a_slice_of_a_shrunk_buffer_stays_inside_the_buffer() {
    watchdog(Duration::from_secs(60), || {
        let dir = TempDir::new("shrunk-slice");
        let path = dir.path("data");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&[7u8; 8192])
            .unwrap();
        uring::run(async move {
            let f = File::open(&path).await.unwrap();
            // A slice over 4096 bytes of capacity, then the buffer is shrunk under it.
            let mut slice = vec![0u8; 16].slice(0..16);
            slice.get_mut().reserve_exact(4096);
            let mut wide = slice.into_inner().slice(0..4096);
            wide.get_mut().shrink_to(16);
            let cap = wide.get_ref().capacity();
            assert!(cap < 4096, "the buffer really shrank (capacity {cap})");
            let (res, wide) = f.read_at(wide, 0).await;
            let n = res.unwrap();
            assert!(
                n <= cap,
                "the kernel wrote {n} bytes into a {cap}-byte buffer"
            );
            let buf = wide.into_inner();
            assert!(buf.len() <= buf.capacity());
            assert!(buf.iter().all(|&b| b == 7));
        })
    });
}
