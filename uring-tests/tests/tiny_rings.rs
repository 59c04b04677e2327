//! Tiny rings: far more concurrent ops than ring entries (SQ full, CQ overflow), no
//! completion lost.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use uring::time::sleep;
use uring::Runtime;
use uring_tests::{pipe, watchdog};

/// Generous limit for one test: far above what any of them needs on an idle machine.
const LIMIT: Duration = Duration::from_secs(120);

fn watched<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog(LIMIT, f)
}

// ---------------------------------------------------------------------------------------------
// Tiny rings: far more concurrent ops than ring entries (SQ full, CQ overflow)
// ---------------------------------------------------------------------------------------------

/// An unlinked temporary file holding `len` bytes of a known pattern.
fn pattern_file(len: usize) -> std::fs::File {
    use std::io::Write;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "uring-core-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f.write_all(&(0..len).map(pattern_byte).collect::<Vec<u8>>())
        .unwrap();
    f
}

fn pattern_byte(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8)) as u8
}

/// 100k concurrent reads from a file, each checked byte for byte, plus 100k concurrent writes at
/// distinct offsets read back afterwards, on a ring of `entries` entries.
fn tiny_ring_file_ops(entries: u32) {
    const OPS: usize = 100_000;
    const LEN: usize = 64 * 1024;
    let rt = Runtime::builder().entries(entries).build().unwrap();
    let file = Rc::new(uring::fs::File::from_std(pattern_file(LEN)).unwrap());
    let bad = rt.block_on(async {
        let handles: Vec<_> = (0..OPS)
            .map(|i| {
                let f = file.clone();
                uring::spawn(async move {
                    let pos = (i * 61) % (LEN - 16);
                    let (res, buf) = f.read_at(Vec::with_capacity(16), pos as u64).await;
                    let n = res.expect("read_at");
                    let expected: Vec<u8> = (pos..pos + 16).map(pattern_byte).collect();
                    n == 16 && buf == expected
                })
            })
            .collect();
        let mut bad = 0;
        for h in handles {
            if !h.await.unwrap() {
                bad += 1;
            }
        }
        bad
    });
    assert_eq!(
        bad, 0,
        "{bad} reads gave wrong data on an entries({entries}) ring"
    );

    let out = Rc::new(uring::fs::File::from_std(pattern_file(0)).unwrap());
    rt.block_on(async {
        let handles: Vec<_> = (0..OPS)
            .map(|i| {
                let f = out.clone();
                uring::spawn(async move {
                    let word = (i as u32).to_le_bytes().to_vec();
                    let (res, _) = f.write_at(word, i as u64 * 4).await;
                    assert_eq!(res.expect("write_at"), 4);
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let (res, buf) = out.read_at(Vec::with_capacity(OPS * 4), 0).await;
        assert_eq!(res.unwrap(), OPS * 4);
        for (i, w) in buf.chunks_exact(4).enumerate() {
            assert_eq!(u32::from_le_bytes(w.try_into().unwrap()), i as u32);
        }
    });
    let stats = rt.driver_stats();
    assert!(
        stats.backlogged > 0,
        "the SQ-full path was never taken on an entries({entries}) ring: {stats:?}"
    );
    assert!(stats.completions >= 2 * OPS as u64, "{stats:?}");
}

/// 100k concurrent one-byte reads on pipes that get their data only while the reads wait; every
/// byte arrives exactly once.
fn tiny_ring_pipe_reads(entries: u32) {
    const OPS: usize = 100_000;
    const PIPES: usize = 16;
    let rt = Runtime::builder().entries(entries).build().unwrap();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..PIPES {
        let (r, w) = pipe();
        readers.push(Rc::new(uring::fs::File::from_std(r).unwrap()));
        writers.push(uring::fs::File::from_std(w).unwrap());
    }
    let counts = rt.block_on(async {
        let handles: Vec<_> = (0..OPS)
            .map(|i| {
                let r = readers[i % PIPES].clone();
                uring::spawn(async move {
                    let (res, buf) = r.read_at(Vec::with_capacity(1), 0).await;
                    assert_eq!(res.expect("pipe read"), 1);
                    buf[0]
                })
            })
            .collect();
        // Let every read reach the kernel and wait there.
        sleep(Duration::from_millis(20)).await;
        // Each pipe gets OPS / PIPES bytes: value (i % 251) for its i-th byte.
        let per_pipe = OPS / PIPES;
        for w in &writers {
            let data: Vec<u8> = (0..per_pipe).map(|i| (i % 251) as u8).collect();
            let mut sent = 0;
            while sent < data.len() {
                let (res, _) = w.write_at(data[sent..].to_vec(), 0).await;
                sent += res.expect("pipe write");
            }
        }
        let mut counts = [0usize; 251];
        for h in handles {
            counts[h.await.unwrap() as usize] += 1;
        }
        counts
    });
    let per_pipe = OPS / PIPES;
    for (v, &c) in counts.iter().enumerate() {
        let per = (0..per_pipe).filter(|i| i % 251 == v).count();
        assert_eq!(c, per * PIPES, "byte value {v} arrived {c} times");
    }
}

#[test]
fn tiny_ring_2_entries_file_ops() {
    watched(|| tiny_ring_file_ops(2));
}

#[test]
fn tiny_ring_4_entries_file_ops() {
    watched(|| tiny_ring_file_ops(4));
}

#[test]
fn tiny_ring_2_entries_pipe_reads() {
    watched(|| tiny_ring_pipe_reads(2));
}

#[test]
fn tiny_ring_4_entries_pipe_reads() {
    watched(|| tiny_ring_pipe_reads(4));
}
