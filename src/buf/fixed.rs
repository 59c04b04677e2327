//! Registered buffers: [`FixedBufPool`] and [`FixedBuf`].
//!
//! A pool allocates `count` buffers of `size` bytes in one page-aligned, zeroed allocation and
//! registers them with the current runtime's ring (`IORING_REGISTER_BUFFERS_UPDATE` into a
//! sparse table). Reads and writes handed a [`FixedBuf`] then use `READ_FIXED`/`WRITE_FIXED`:
//! the kernel maps the pages once, at registration, instead of pinning and unpinning them on
//! every op.

use crate::driver::MAX_FIXED_BUFFER;
use crate::runtime::{context, RuntimeState};
use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

/// The alignment of a pool's memory: a page, so `O_DIRECT` reads and writes may use it.
const ALIGN: usize = 4096;

/// A pool of buffers registered with the current runtime's ring.
///
/// Get a buffer with [`get`](FixedBufPool::get) (none free: `None`) or
/// [`next`](FixedBufPool::next) (waits for one). A [`FixedBuf`] goes back to the pool when it
/// is dropped, and not before: an op that owns one keeps it until the kernel is done, even if
/// the op's future was dropped, so the kernel never writes into a buffer that someone else got
/// meanwhile.
///
/// Reads and writes on files and pipes (`uring::fs::File`'s `read_at`, `write_at`,
/// `write_all_at`, ...) use `READ_FIXED`/`WRITE_FIXED` when handed a `FixedBuf` (or a
/// [`Slice`](crate::buf::Slice) of one), with no change to the call. Zero-copy sends
/// (`uring::net::Stream::write_zc`) pass it with the fixed-buffer flag
/// (`IORING_RECVSEND_FIXED_BUF`). Other socket receives and sends take a `FixedBuf` like any
/// buffer and use the plain ops.
///
/// The pool belongs to the runtime it was made on: on another runtime its buffers work as
/// plain buffers. When the kernel has no sparse buffer table (before 5.19) the pool works the
/// same way, unregistered ([`is_registered`](FixedBufPool::is_registered) says which). Cloning
/// the pool gives another handle to the same buffers. The memory is freed, and the slots
/// emptied, when the last handle and the last buffer are gone.
///
/// ```
/// use uring::buf::FixedBufPool;
/// use uring::fs::OpenOptions;
///
/// uring::run(async {
///     let pool = FixedBufPool::new(4, 4096).unwrap();
///     let path = std::env::temp_dir().join(format!("fixed-doc-{}", std::process::id()));
///     let file = OpenOptions::new()
///         .read(true)
///         .write(true)
///         .create(true)
///         .truncate(true)
///         .open(&path)
///         .await
///         .unwrap();
///
///     let mut buf = pool.get().expect("four are free");
///     buf.extend_from_slice(b"hello, registered memory");
///     let (res, buf) = file.write_all_at(buf, 0).await;
///     res.unwrap();
///     drop(buf); // back to the pool
///
///     let buf = pool.next().await; // waits if none is free
///     let (res, buf) = file.read_at(buf, 0).await;
///     assert_eq!(&buf[..res.unwrap()], b"hello, registered memory");
///     std::fs::remove_file(&path).unwrap();
/// });
/// ```
#[derive(Clone)]
pub struct FixedBufPool {
    inner: Rc<Inner>,
}

/// What the pool's handles and buffers share.
struct Inner {
    /// The buffers' memory: `count * size` bytes, page-aligned, zeroed at allocation.
    memory: *mut u8,
    layout: Layout,
    size: usize,
    count: u16,
    /// Where the buffers sit in the ring's table, and which ring: `None` when unregistered.
    registered: Option<Registered>,
    /// Indexes of the buffers in the pool, taken from the end.
    free: RefCell<Vec<u16>>,
    /// Tasks waiting in [`FixedBufPool::next`], in order.
    waiters: RefCell<VecDeque<Rc<Waiter>>>,
}

struct Registered {
    first: u32,
    runtime: Weak<RuntimeState>,
}

#[derive(Default)]
struct Waiter {
    waker: RefCell<Option<Waker>>,
    /// Set by a returning buffer that chose this waiter: it must take a buffer or pass the
    /// turn on.
    notified: Cell<bool>,
}

impl FixedBufPool {
    /// Allocates `count` buffers of `size` bytes and registers them with the current runtime's
    /// ring.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a `count` or `size` of 0, a `size` over 1 GiB (the kernel's limit), or
    /// more buffers than the ring's table has room for (16384 in all, shared by the runtime's
    /// pools); `OutOfMemory` when the memory cannot be allocated; outside a runtime an error
    /// saying so; the kernel's error when it refuses to register them, most often `ENOMEM`
    /// because registered memory counts against `RLIMIT_MEMLOCK` (see docs/deployment.md).
    pub fn new(count: usize, size: usize) -> io::Result<FixedBufPool> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if count == 0 || size == 0 {
            return Err(invalid(format!(
                "a FixedBufPool needs at least one buffer of at least one byte (asked for \
                 {count} of {size} bytes)"
            )));
        }
        if size > MAX_FIXED_BUFFER {
            return Err(invalid(format!(
                "a registered buffer holds at most 1 GiB (asked for {size} bytes)"
            )));
        }
        let count16 = u16::try_from(count)
            .ok()
            .filter(|&c| u32::from(c) <= crate::driver::FIXED_BUFFER_SLOTS)
            .ok_or_else(|| {
                invalid(format!(
                    "a ring registers at most {} buffers (asked for {count})",
                    crate::driver::FIXED_BUFFER_SLOTS
                ))
            })?;
        let Some(state) = context::try_current() else {
            return Err(io::Error::other(
                "FixedBufPool::new must be called from within a uring runtime (inside \
                 uring::run or Runtime::block_on)",
            ));
        };
        let total = count
            .checked_mul(size)
            .and_then(|t| Layout::from_size_align(t, ALIGN).ok())
            .ok_or_else(|| invalid(format!("{count} buffers of {size} bytes overflow")))?;
        // SAFETY: INV-alloc: the layout has a non-zero size (count and size are at least 1);
        // the memory is freed in `Inner::drop` with the same layout.
        let memory = unsafe { std::alloc::alloc_zeroed(total) };
        if memory.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot allocate {count} buffers of {size} bytes"),
            ));
        }
        let mut inner = Inner {
            memory,
            layout: total,
            size,
            count: count16,
            registered: None,
            free: RefCell::new((0..count16).rev().collect()),
            waiters: RefCell::new(VecDeque::new()),
        };
        let iovecs: Vec<libc::iovec> = (0..count)
            .map(|i| libc::iovec {
                // SAFETY: INV-alloc: `i * size` is within the allocation of `count * size`.
                iov_base: unsafe { memory.add(i * size) }.cast(),
                iov_len: size,
            })
            .collect();
        let registered = state.driver.borrow_mut().register_buffers(&iovecs);
        match registered {
            Ok(Some(first)) => {
                inner.registered = Some(Registered {
                    first,
                    runtime: Rc::downgrade(&state),
                })
            }
            Ok(None) => {}
            Err(e) => {
                // `inner` frees the memory as it drops (nothing registered).
                let limit = memlock_limit();
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "registering {count} buffers of {size} bytes with the ring: {e} \
                         (registered memory counts against RLIMIT_MEMLOCK, {limit}; see \
                         docs/deployment.md)"
                    ),
                ));
            }
        }
        Ok(FixedBufPool {
            inner: Rc::new(inner),
        })
    }

    /// A free buffer, empty (`len() == 0`) with `capacity()` bytes of room, or `None` when every
    /// buffer of the pool is in use.
    pub fn get(&self) -> Option<FixedBuf> {
        let index = self.inner.free.borrow_mut().pop()?;
        Some(FixedBuf {
            pool: self.inner.clone(),
            index,
            len: 0,
        })
    }

    /// Waits for a free buffer (first come, first served) and takes it.
    pub fn next(&self) -> Next {
        Next {
            pool: self.inner.clone(),
            waiter: None,
        }
    }

    /// How many buffers the pool has.
    pub fn count(&self) -> usize {
        usize::from(self.inner.count)
    }

    /// How many bytes each buffer holds.
    pub fn buf_capacity(&self) -> usize {
        self.inner.size
    }

    /// How many buffers are in the pool now (not handed out).
    pub fn available(&self) -> usize {
        self.inner.free.borrow().len()
    }

    /// Whether the buffers are registered with a ring (false when the kernel has no sparse
    /// buffer table: they then work as plain buffers).
    pub fn is_registered(&self) -> bool {
        self.inner.registered.is_some()
    }
}

impl fmt::Debug for FixedBufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBufPool")
            .field("count", &self.inner.count)
            .field("buf_capacity", &self.inner.size)
            .field("available", &self.available())
            .field("registered", &self.is_registered())
            .finish()
    }
}

/// Whether `runtime` is the one running on this thread. A runtime that is gone is not, even if
/// the current one was allocated at its address.
#[inline]
fn is_current(runtime: &Weak<RuntimeState>) -> bool {
    runtime.strong_count() > 0
        && context::with_current(|c| c.is_some_and(|c| std::ptr::eq(c, runtime.as_ptr())))
}

/// `RLIMIT_MEMLOCK` as a phrase for an error message.
fn memlock_limit() -> String {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: INV-ffi: getrlimit writes into the struct we pass, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return "unknown here".to_string();
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        "unlimited here".to_string()
    } else {
        format!("{} bytes here", limit.rlim_cur)
    }
}

impl Inner {
    /// A buffer comes back: it is free again, and the first waiter (if any) is told.
    fn give_back(&self, index: u16) {
        self.free.borrow_mut().push(index);
        self.notify_one();
    }

    fn notify_one(&self) {
        let waiter = self.waiters.borrow_mut().pop_front();
        if let Some(w) = waiter {
            w.notified.set(true);
            if let Some(waker) = w.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    fn ptr(&self, index: u16) -> *mut u8 {
        // SAFETY: INV-alloc: `index < count`, so the offset lies within the allocation.
        unsafe { self.memory.add(usize::from(index) * self.size) }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // No buffer is out (each holds the Rc), so no op names a slot: empty them first
        // (INV-fixedbuf), unless the ring is gone already (its table went with it).
        if let Some(r) = &self.registered {
            if let Some(state) = r.runtime.upgrade() {
                if let Ok(mut driver) = state.driver.try_borrow_mut() {
                    driver.release_buffers(r.first, u32::from(self.count));
                } else {
                    // Dropped from inside the driver (never happens: buffers are dropped by
                    // ops' owners, outside it). Keep the memory rather than free what the
                    // table still describes.
                    return;
                }
            }
        }
        // SAFETY: INV-alloc: allocated in `FixedBufPool::new` with this layout; INV-fixedbuf:
        // no slot of the ring's table describes it any more.
        unsafe { std::alloc::dealloc(self.memory, self.layout) };
    }
}

/// A future that waits for a free buffer of a [`FixedBufPool`]: [`FixedBufPool::next`].
///
/// Dropping it gives up its place in the queue; if a returning buffer had already chosen it,
/// the next waiter is told instead, so no buffer waits unseen.
pub struct Next {
    pool: Rc<Inner>,
    waiter: Option<Rc<Waiter>>,
}

impl Future for Next {
    type Output = FixedBuf;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FixedBuf> {
        let this = self.get_mut();
        // First come, first served: a newcomer does not take a buffer while others queue.
        let my_turn = match &this.waiter {
            None => this.pool.waiters.borrow().is_empty(),
            Some(w) => w.notified.get(),
        };
        if my_turn {
            let index = this.pool.free.borrow_mut().pop();
            if let Some(index) = index {
                this.waiter = None;
                return Poll::Ready(FixedBuf {
                    pool: this.pool.clone(),
                    index,
                    len: 0,
                });
            }
        }
        match &this.waiter {
            Some(w) if !w.notified.get() => {
                *w.waker.borrow_mut() = Some(cx.waker().clone());
            }
            _ => {
                // New, or told but the buffer was taken (by `get`): queue (again, at the front
                // when it had been told, so it keeps its turn).
                let told = this.waiter.take().is_some();
                let w = Rc::new(Waiter::default());
                *w.waker.borrow_mut() = Some(cx.waker().clone());
                let mut waiters = this.pool.waiters.borrow_mut();
                if told {
                    waiters.push_front(w.clone());
                } else {
                    waiters.push_back(w.clone());
                }
                this.waiter = Some(w);
            }
        }
        Poll::Pending
    }
}

impl Drop for Next {
    fn drop(&mut self) {
        if let Some(w) = self.waiter.take() {
            if w.notified.get() {
                // Chosen for a buffer it will not take: pass the turn on.
                self.pool.notify_one();
            } else {
                self.pool
                    .waiters
                    .borrow_mut()
                    .retain(|x| !Rc::ptr_eq(x, &w));
            }
        }
    }
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("queued", &self.waiter.is_some())
            .finish()
    }
}

/// A buffer of a [`FixedBufPool`], registered with the ring: reads and writes on files use
/// `READ_FIXED`/`WRITE_FIXED` with it. Like a `Vec<u8>` with a fixed capacity: it derefs to its
/// first `len()` bytes, a read fills it from its start up to `capacity()` and sets `len()` to
/// cover what was read, a write sends its first `len()` bytes. Dropping it returns it to the
/// pool.
///
/// Its memory is zeroed when the pool is made and never uninitialized after, so
/// [`set_len`](FixedBuf::set_len) is safe (bytes a previous user left are visible to the next:
/// keep secrets elsewhere, or clear them).
pub struct FixedBuf {
    pool: Rc<Inner>,
    index: u16,
    len: usize,
}

impl FixedBuf {
    /// How many bytes are filled: what a write sends, what `Deref` shows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many bytes the buffer holds: the pool's buffer size.
    pub fn capacity(&self) -> usize {
        self.pool.size
    }

    /// Sets the filled length to `len`, exposing whatever the buffer holds there (zeroes, or
    /// what the last user of the buffer left).
    ///
    /// # Panics
    ///
    /// When `len > capacity()`.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "set_len({len}) beyond the buffer's capacity {}",
            self.capacity()
        );
        self.len = len;
    }

    /// Empties the buffer (`len()` becomes 0), as before a read that should fill it afresh.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `data` after the filled bytes.
    ///
    /// # Panics
    ///
    /// When it does not fit: `len() + data.len() > capacity()`.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self
            .len
            .checked_add(data.len())
            .filter(|&e| e <= self.capacity())
            .unwrap_or_else(|| {
                panic!(
                    "{} more bytes do not fit a FixedBuf of {} with {} filled",
                    data.len(),
                    self.capacity(),
                    self.len
                )
            });
        let start = self.len;
        self.as_mut_capacity()[start..end].copy_from_slice(data);
        self.len = end;
    }

    /// The whole buffer, `capacity()` bytes, filled or not (all of it is initialized memory).
    pub fn as_mut_capacity(&mut self) -> &mut [u8] {
        // SAFETY: INV-fixedbuf: this buffer's `size` bytes belong to this `FixedBuf` alone
        // (its index is out of the free list) and are initialized (zeroed at allocation); no op
        // owns it while we hold `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.pool.ptr(self.index), self.pool.size) }
    }
}

impl Deref for FixedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: INV-fixedbuf: as in `as_mut_capacity`; `len <= size`.
        unsafe { std::slice::from_raw_parts(self.pool.ptr(self.index), self.len) }
    }
}

impl DerefMut for FixedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.as_mut_capacity()[..len]
    }
}

impl Drop for FixedBuf {
    fn drop(&mut self) {
        self.pool.give_back(self.index);
    }
}

impl fmt::Debug for FixedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBuf")
            .field("index", &self.index)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

// SAFETY: INV-heap and INV-fixedbuf: the buffer's memory is part of the pool's allocation,
// which does not move and stays allocated while this `FixedBuf` (holding the pool) lives; its
// first `len` bytes (indeed all of it) are initialized, and `len <= capacity`.
unsafe impl super::IoBuf for FixedBuf {
    #[inline]
    fn stable_ptr(&self) -> *const u8 {
        self.pool.ptr(self.index)
    }
    #[inline]
    fn bytes_init(&self) -> usize {
        self.len
    }
    #[inline]
    fn bytes_total(&self) -> usize {
        self.pool.size
    }
    #[inline]
    fn fixed_index(&self) -> Option<u16> {
        let r = self.pool.registered.as_ref()?;
        // Only the ring that holds the table knows the slot (INV-fixedbuf).
        let here = is_current(&r.runtime);
        let slot = r.first + u32::from(self.index);
        here.then(|| u16::try_from(slot).ok()).flatten()
    }
}

// SAFETY: INV-heap and INV-fixedbuf: the same memory as `stable_ptr`, written by the kernel
// only while an op owns this buffer; `set_init` only grows `len` within the capacity.
unsafe impl super::IoBufMut for FixedBuf {
    #[inline]
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.pool.ptr(self.index)
    }
    #[inline]
    unsafe fn set_init(&mut self, pos: usize) {
        self.len = self.len.max(pos.min(self.pool.size));
    }
}
