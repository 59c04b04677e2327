//! Cancellation: futures dropped with their ops in flight, runtimes dropped with ops in flight.
//!
//! These tests also run under valgrind memcheck (`.ci/run`), with `URING_VALGRIND=1`: then counts
//! are smaller and every buffer the kernel writes is zero-initialised first (valgrind cannot see
//! the kernel's writes). They check that the runtime keeps every buffer alive until the kernel is
//! done with it, frees it afterwards (no leak), closes every fd, and keeps working.
//!
//! The tests take a process-wide lock so they run one at a time: the fd-count test compares the
//! process's open fds with a baseline, which another test opening pipes meanwhile would disturb.

use std::cell::Cell;
use std::future::Future;
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;
use uring::buf::{IoBuf, IoBufMut};
use uring::fs::File;
use uring::time::{sleep, timeout};
use uring::Runtime;
use uring_tests::{drop_flag, open_fds, pipe, poll_once, scaled, watchdog, zeroed_buf};

/// Generous: valgrind slows everything down by an order of magnitude or more.
const LIMIT: Duration = Duration::from_secs(300);

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the test body under the watchdog, one test at a time.
fn serial<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let _one_at_a_time: MutexGuard<'_, ()> = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    watchdog(LIMIT, f)
}

/// A pipe whose read end is a uring `File` and whose write end stays a blocking std file: reads
/// on it wait until a test writes.
fn waiting_pipe() -> (File, std::fs::File) {
    let (r, w) = pipe();
    (File::from_std(r).unwrap(), w)
}

/// A buffer that counts itself in a shared live counter from creation until it is freed, so a
/// test can see when the runtime releases a buffer it handed to the kernel.
struct TrackedBuf {
    data: Vec<u8>,
    live: Arc<AtomicUsize>,
}

impl TrackedBuf {
    fn new(len: usize, live: &Arc<AtomicUsize>) -> TrackedBuf {
        live.fetch_add(1, Ordering::SeqCst);
        TrackedBuf {
            data: zeroed_buf(len),
            live: live.clone(),
        }
    }
}

impl Drop for TrackedBuf {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

// SAFETY: the bytes live in `data`'s heap allocation, which does not move when the TrackedBuf
// moves and lives as long as it; `len <= capacity` and the first `len` bytes are initialized
// (the Vec is zero-filled at creation).
unsafe impl IoBuf for TrackedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.data.len()
    }
    fn bytes_total(&self) -> usize {
        self.data.capacity()
    }
}

// SAFETY: the same heap memory as `stable_ptr`, writable through the Vec we own; `set_init` only
// grows `len` within the capacity, for bytes the caller promises are initialized.
unsafe impl IoBufMut for TrackedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.data.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.data.len() {
            // SAFETY: the caller guarantees the first `pos` bytes are initialized; clamped to the
            // capacity the kernel was given.
            unsafe { self.data.set_len(pos.min(self.data.capacity())) };
        }
    }
}

#[test]
fn drop_many_in_flight_ops_then_keep_using_the_runtime() {
    serial(|| {
        let n = scaled(10_000);
        const PIPES: usize = 50;
        let rt = Runtime::new().unwrap();
        let pipes: Vec<(Rc<File>, std::fs::File)> = (0..PIPES)
            .map(|_| {
                let (r, w) = waiting_pipe();
                (Rc::new(r), w)
            })
            .collect();
        let mut pipes = rt.block_on(async move {
            // Tasks blocked in sleeps and in pipe reads that never get data, all aborted.
            let started = Rc::new(Cell::new(0usize));
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let started = started.clone();
                    let reader = pipes[i % PIPES].0.clone();
                    uring::spawn(async move {
                        started.set(started.get() + 1);
                        if i % 2 == 0 {
                            sleep(Duration::from_secs(3600)).await;
                        } else {
                            let (res, _buf) = reader.read_at(zeroed_buf(64), 0).await;
                            panic!("a read on an empty pipe completed: {res:?}");
                        }
                    })
                })
                .collect();
            while started.get() < n {
                uring::yield_now().await;
            }
            // One loop turn later every read is in the kernel.
            sleep(Duration::from_millis(5)).await;
            assert!(handles.iter().all(|h| !h.is_finished()));
            for h in &handles {
                h.abort();
            }
            for h in handles {
                let err = h.await.expect_err("aborted");
                assert!(err.is_cancelled(), "{err}");
            }

            // Plain futures polled once (their ops submitted) and dropped, without tasks.
            let mut futs: Vec<_> = (0..n)
                .map(|i| Box::pin(pipes[i % PIPES].0.read_at(zeroed_buf(32), 0)))
                .collect();
            for f in futs.iter_mut() {
                assert!(poll_once(f).await.is_pending());
            }
            drop(futs);

            // Reads dropped by an expiring timeout.
            for i in 0..scaled(1000) {
                let r = timeout(
                    Duration::from_micros(100),
                    pipes[i % PIPES].0.read_at(zeroed_buf(16), 0),
                )
                .await;
                assert!(r.is_err(), "a read on an empty pipe completed");
            }
            pipes
        });

        // Let the cancels land, then the runtime works as before: data written to every pipe is
        // read back whole by new reads (no cancelled read swallowed it), and sleeps still end.
        rt.block_on(async {
            sleep(Duration::from_millis(20)).await;
            for (k, (reader, writer)) in pipes.iter_mut().enumerate() {
                let msg = format!("message {k} after the cancellations");
                writer.write_all(msg.as_bytes()).unwrap();
                let (res, buf) = reader.read_at(zeroed_buf(256), 0).await;
                let got = res.expect("read after cancellations");
                assert_eq!(&buf[..got], msg.as_bytes());
            }
            let start = std::time::Instant::now();
            sleep(Duration::from_millis(2)).await;
            assert!(start.elapsed() >= Duration::from_millis(2));
            assert_eq!(uring::spawn(async { 11 }).await.unwrap(), 11);
        });
    });
}

#[test]
fn buffers_are_released_only_after_the_kernel_is_done() {
    serial(|| {
        let n = scaled(2000);
        let live = Arc::new(AtomicUsize::new(0));
        let rt = Runtime::new().unwrap();
        let (reader, mut writer) = waiting_pipe();
        let live_in = live.clone();
        rt.block_on(async {
            let mut futs: Vec<_> = (0..n)
                .map(|_| Box::pin(reader.read_at(TrackedBuf::new(64, &live_in), 0)))
                .collect();
            for f in futs.iter_mut() {
                assert!(poll_once(f).await.is_pending());
            }
            assert_eq!(live_in.load(Ordering::SeqCst), n);
            drop(futs);
            // The futures are gone but the kernel still holds every read: no buffer is freed
            // before the loop has reaped each op's final completion.
            assert_eq!(
                live_in.load(Ordering::SeqCst),
                n,
                "a buffer was freed while the kernel still held its read"
            );
            // After the cancels complete, every buffer is freed.
            let start = std::time::Instant::now();
            while live_in.load(Ordering::SeqCst) > 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "{} buffers of cancelled reads were never freed",
                    live_in.load(Ordering::SeqCst)
                );
                sleep(Duration::from_millis(1)).await;
            }

            // A read that completes after its future was dropped: the kernel writes into the
            // buffer, which must still be alive; then it is freed.
            let mut fut = Box::pin(reader.read_at(TrackedBuf::new(64, &live_in), 0));
            assert!(poll_once(&mut fut).await.is_pending());
            writer.write_all(b"late data").unwrap();
            drop(fut);
            assert_eq!(live_in.load(Ordering::SeqCst), 1);
            let start = std::time::Instant::now();
            while live_in.load(Ordering::SeqCst) > 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "buffer never freed"
                );
                sleep(Duration::from_millis(1)).await;
            }

            // A completed read hands its buffer back with the data.
            let mut fut = Box::pin(reader.read_at(TrackedBuf::new(64, &live_in), 0));
            assert!(poll_once(&mut fut).await.is_pending());
            writer.write_all(b"kept").unwrap();
            let (res, buf) = fut.await;
            let got = res.unwrap();
            // The late data may have been taken by the dropped read or may still be queued.
            assert!(buf.data[..got].ends_with(b"kept"), "{:?}", &buf.data[..got]);
            drop(buf);
        });
        assert_eq!(live.load(Ordering::SeqCst), 0);

        // Dropping the runtime with reads in flight frees every buffer: nothing leaks.
        let live_in = live.clone();
        let (reader2, _writer2) = waiting_pipe();
        let reader2 = Rc::new(reader2);
        rt.block_on(async {
            for _ in 0..n {
                let r = reader2.clone();
                let buf = TrackedBuf::new(128, &live_in);
                drop(uring::spawn(async move {
                    let _ = r.read_at(buf, 0).await;
                }));
            }
            // Also futures that are polled and then forgotten in a task that never finishes.
            sleep(Duration::from_millis(5)).await;
        });
        assert_eq!(live.load(Ordering::SeqCst), n);
        drop(rt);
        assert_eq!(
            live.load(Ordering::SeqCst),
            0,
            "runtime drop leaked buffers of in-flight reads"
        );
        drop(reader);
    });
}

#[test]
fn drop_runtime_with_ops_and_tasks_in_flight() {
    serial(|| {
        let n = scaled(5000);
        let rt = Runtime::new().unwrap();
        let live = Arc::new(AtomicUsize::new(0));
        let (reader, writer) = waiting_pipe();
        let reader = Rc::new(reader);
        let (flags, handles) = rt.block_on(async {
            let mut flags: Vec<Rc<Cell<bool>>> = Vec::new();
            let mut handles = Vec::new();
            for i in 0..n {
                let (guard, flag) = drop_flag();
                flags.push(flag);
                let r = reader.clone();
                let buf = TrackedBuf::new(32, &live);
                let h = uring::spawn(async move {
                    let _guard = guard;
                    match i % 3 {
                        0 => {
                            let _ = r.read_at(buf, 0).await;
                        }
                        1 => {
                            drop(buf);
                            sleep(Duration::from_secs(3600)).await;
                        }
                        _ => {
                            // A task that spawns another one blocked in a read.
                            let inner = uring::spawn(async move {
                                let _ = r.read_at(buf, 0).await;
                            });
                            let _ = inner.await;
                        }
                    }
                });
                if i % 2 == 0 {
                    drop(h);
                } else {
                    // These handles outlive the runtime.
                    handles.push(h);
                }
            }
            // The main future leaves ops in flight too: a read polled once and a pending sleep.
            let mut read = Box::pin(reader.read_at(TrackedBuf::new(32, &live), 0));
            assert!(poll_once(&mut read).await.is_pending());
            sleep(Duration::from_millis(5)).await;
            drop(read);
            (flags, handles)
        });
        drop(rt);
        for h in &handles {
            assert!(h.is_finished(), "a task survived its runtime");
        }
        drop(handles);
        let dropped = flags.iter().filter(|f| f.get()).count();
        assert_eq!(dropped, n, "runtime drop dropped every task");
        assert_eq!(
            live.load(Ordering::SeqCst),
            0,
            "buffers leaked at runtime drop"
        );
        drop(writer);
        // The pipe's read end (held by every op) is closed once the last holder is gone.
        drop(reader);
    });
}

#[test]
fn fds_return_to_baseline() {
    serial(|| {
        let baseline = open_fds();
        let pipes_n = scaled(200);
        let reads_per_pipe = 10;
        {
            let rt = Runtime::new().unwrap();
            let with_runtime = open_fds();
            assert!(with_runtime > baseline);
            rt.block_on(async {
                // Pipe read ends with reads in flight, dropped while the kernel holds the reads:
                // each fd is closed once the cancelled reads let go of it.
                let mut writers = Vec::new();
                let mut tasks = Vec::new();
                for _ in 0..pipes_n {
                    let (r, w) = waiting_pipe();
                    writers.push(w);
                    let r = Rc::new(r);
                    for _ in 0..reads_per_pipe {
                        let r = r.clone();
                        tasks.push(uring::spawn(async move {
                            let _ = r.read_at(zeroed_buf(8), 0).await;
                        }));
                    }
                }
                sleep(Duration::from_millis(5)).await;
                assert_eq!(open_fds(), with_runtime + 2 * pipes_n);
                for t in &tasks {
                    t.abort();
                }
                for t in tasks {
                    assert!(t.await.unwrap_err().is_cancelled());
                }
                drop(writers);
                let start = std::time::Instant::now();
                while open_fds() != with_runtime {
                    assert!(
                        start.elapsed() < Duration::from_secs(60),
                        "{} fds still open after dropping the files",
                        open_fds() - with_runtime
                    );
                    sleep(Duration::from_millis(1)).await;
                }
            });

            // Now files with reads in flight when the runtime itself is dropped. The write ends
            // stay open until after the runtime is gone, so the reads keep waiting.
            let writers = rt.block_on(async {
                let mut writers = Vec::new();
                for _ in 0..pipes_n {
                    let (r, w) = waiting_pipe();
                    writers.push(w);
                    let r = Rc::new(r);
                    for _ in 0..reads_per_pipe {
                        let r = r.clone();
                        drop(uring::spawn(async move {
                            let _ = r.read_at(zeroed_buf(8), 0).await;
                        }));
                    }
                }
                sleep(Duration::from_millis(5)).await;
                writers
            });
            drop(rt);
            assert_eq!(
                open_fds(),
                baseline + pipes_n,
                "only the write ends are left"
            );
            drop(writers);
        }
        let after = open_fds();
        assert_eq!(
            after, baseline,
            "fds leaked: {baseline} open before, {after} after the runtime was dropped"
        );
    });
}

#[test]
fn unpolled_ops_cost_nothing_and_free_their_buffer_at_once() {
    serial(|| {
        let rt = Runtime::new().unwrap();
        let live = Arc::new(AtomicUsize::new(0));
        let (reader, _writer) = waiting_pipe();
        rt.block_on(async {
            let before = rt.driver_stats();
            let futs: Vec<_> = (0..scaled(1000))
                .map(|_| reader.read_at(TrackedBuf::new(16, &live), 0))
                .collect();
            assert_eq!(live.load(Ordering::SeqCst), futs.len());
            drop(futs);
            assert_eq!(
                live.load(Ordering::SeqCst),
                0,
                "an unpolled op kept its buffer"
            );
            sleep(Duration::from_millis(1)).await;
            let after = rt.driver_stats();
            assert_eq!(
                after.completions, before.completions,
                "unpolled ops reached the ring: {before:?} -> {after:?}"
            );
        });
    });
}

#[test]
fn wakers_used_after_their_task_or_runtime_is_gone() {
    serial(|| {
        type Slot = Arc<Mutex<Option<std::task::Waker>>>;
        let rt = Runtime::new().unwrap();
        let finished_slot: Slot = Arc::default();
        let pending_slot: Slot = Arc::default();
        let (f, p) = (finished_slot.clone(), pending_slot.clone());
        rt.block_on(async move {
            // A task that keeps a clone of its waker somewhere else, then finishes.
            uring::spawn(async move {
                std::future::poll_fn(|cx| {
                    *f.lock().unwrap() = Some(cx.waker().clone());
                    Poll::Ready(())
                })
                .await;
            })
            .await
            .unwrap();
            // A late wake of a finished task, from another thread, is ignored.
            let late = finished_slot.clone();
            std::thread::spawn(move || late.lock().unwrap().take().unwrap().wake())
                .join()
                .unwrap();
            sleep(Duration::from_millis(2)).await;
            // A task still pending when the runtime is dropped, whose waker another thread has.
            drop(uring::spawn(async move {
                std::future::poll_fn(|cx| {
                    *p.lock().unwrap() = Some(cx.waker().clone());
                    Poll::<()>::Pending
                })
                .await;
            }));
            uring::yield_now().await;
        });
        let waker = pending_slot
            .lock()
            .unwrap()
            .take()
            .expect("task stored its waker");
        drop(rt);
        // Waking (and dropping) it after the runtime is gone does nothing, on any thread.
        std::thread::spawn(move || {
            waker.wake_by_ref();
            let clone = waker.clone();
            drop(waker);
            clone.wake();
        })
        .join()
        .unwrap();
    });
}

#[test]
fn op_future_outliving_its_runtime() {
    serial(|| {
        let live = Arc::new(AtomicUsize::new(0));
        let rt = Runtime::new().unwrap();
        let (reader, _writer) = waiting_pipe();
        let reader = Rc::new(reader);
        let r = reader.clone();
        let l = live.clone();
        let l2 = live.clone();
        // Two reads in flight, moved out of block_on: the runtime shuts down under them.
        let (mut polled_later, dropped_later) = rt.block_on(async move {
            let mut a = Box::pin(async move { r.read_at(TrackedBuf::new(8, &l), 0).await });
            assert!(poll_once(&mut a).await.is_pending());
            let r2 = reader.clone();
            let mut b = Box::pin(async move { r2.read_at(TrackedBuf::new(8, &l2), 0).await });
            assert!(poll_once(&mut b).await.is_pending());
            (a, b)
        });
        drop(rt);
        // The kernel is done with both (the runtime cancelled and reaped them), so their buffers
        // are still owned by the futures, alive.
        assert_eq!(live.load(Ordering::SeqCst), 2);
        // Polling one gives its buffer back with an error, without a runtime.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match polled_later.as_mut().poll(&mut cx) {
            Poll::Ready((res, buf)) => {
                assert!(res.is_err(), "a read cancelled by shutdown gave {res:?}");
                drop(buf);
            }
            Poll::Pending => panic!("a read whose runtime is gone is still pending"),
        }
        drop(polled_later);
        drop(dropped_later);
        assert_eq!(live.load(Ordering::SeqCst), 0, "buffers leaked");
    });
}
