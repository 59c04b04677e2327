//! Provided buffer rings: [`BufRing`] and the buffers it hands out, [`RingBuf`].
//!
//! A ring owns `count` buffers of `size` bytes and an array of `count` entries shared with the
//! kernel (`IORING_REGISTER_PBUF_RING`, Linux 5.19). A receive that names the ring's buffer
//! group (`IOSQE_BUFFER_SELECT`) lets the kernel pick a buffer when data arrives, rather than
//! the caller tying up one buffer per socket while it waits. The completion says which buffer
//! (`IORING_CQE_F_BUFFER`, its id in the upper 16 bits of the flags); that buffer is then the
//! program's until it is provided again: written back into the entry at the ring's tail, and the
//! tail moved on (a release store the kernel reads with acquire).

use crate::runtime::{context, RuntimeState};
use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Waker};

/// The kernel's `struct io_uring_buf`: one entry of the shared array. The 16-bit `resv` of the
/// first entry is the ring's tail (`struct io_uring_buf_ring`).
#[repr(C)]
struct Entry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 16);

/// The alignment of the entry array (the kernel wants it page-aligned) and of the buffers.
const PAGE: usize = 4096;

/// A ring of `count` provided buffers of `size` bytes, registered with the current runtime's
/// ring, for `uring::net::Stream::recv_multishot`.
///
/// One multishot receive (`IORING_OP_RECV` with `IORING_RECV_MULTISHOT`, Linux 6.0) then posts
/// a completion per chunk of data the socket gets, each in a buffer the kernel picked from the
/// ring: no buffer waits per idle socket, and one SQE serves a whole stream. Several streams may
/// share one ring. A received buffer is a [`RingBuf`]; dropping it provides it to the kernel
/// again.
///
/// The ring belongs to the runtime it was made on (its buffer group id is that ring's).
/// Without provided buffer rings (before 5.19) it works the same way, unregistered
/// ([`is_registered`](BufRing::is_registered) says which): the stream then runs single-shot
/// receives into its free buffers. Cloning gives another handle to the same ring; its memory is
/// unregistered and freed when the last handle, buffer and receive are gone. The memory is zeroed
/// at allocation (valgrind cannot see the kernel's writes).
///
/// ```
/// use uring::buf::BufRing;
/// use uring::net::{TcpListener, TcpStream};
///
/// uring::run(async {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     let client = uring::spawn(async move {
///         let s = TcpStream::connect(addr).await.unwrap();
///         s.write_all(b"hello, provided buffers".to_vec()).await.0.unwrap();
///     });
///     let (server, _) = listener.accept().await.unwrap();
///     let ring = BufRing::new(8, 4096).unwrap();
///     let mut received = Vec::new();
///     let mut bufs = server.recv_multishot(&ring);
///     while let Some(buf) = bufs.next().await {
///         received.extend_from_slice(&buf.unwrap()); // the buffer goes back to the ring here
///     }
///     assert_eq!(received, b"hello, provided buffers");
///     client.await.unwrap();
///     assert_eq!(ring.available(), 8);
/// });
/// ```
#[derive(Clone)]
pub struct BufRing {
    inner: Rc<Inner>,
}

/// What the ring's handles, buffers and receives share.
struct Inner {
    /// The entry array shared with the kernel: `count` entries, page-aligned, zeroed.
    entries: *mut Entry,
    entries_layout: Layout,
    /// The buffers: `count * size` bytes, page-aligned, zeroed at allocation.
    memory: *mut u8,
    memory_layout: Layout,
    size: usize,
    count: u16,
    /// The tail as we last published it.
    tail: Cell<u16>,
    /// Where the ring is registered: `None` when unregistered.
    registered: Option<Registered>,
    /// Unregistered: the ids of the buffers nobody holds, taken from the end.
    free: RefCell<Vec<u16>>,
    /// Buffers handed out as [`RingBuf`]s and not yet back.
    out: Cell<usize>,
    /// Counts buffers provided back (every return, by a `RingBuf` or by an abandoned receive).
    returns: Cell<u64>,
    /// Receives waiting for a buffer to come back.
    waiters: RefCell<Vec<Waker>>,
}

struct Registered {
    bgid: u16,
    runtime: Weak<RuntimeState>,
}

impl BufRing {
    /// Allocates `count` buffers of `size` bytes and registers them as a provided buffer ring
    /// with the current runtime's ring, under a buffer group id of that ring's.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a `count` that is 0 or not a power of two, a `size` of 0 or over 4 GiB
    /// (an entry's length is 32 bits), or sizes that overflow; `OutOfMemory` when the memory
    /// cannot be allocated; outside a runtime an error saying so; the kernel's error when it
    /// refuses to register the ring (`ENOMEM`: registered memory counts against
    /// `RLIMIT_MEMLOCK` on older kernels).
    pub fn new(count: u16, size: usize) -> io::Result<BufRing> {
        Self::with_registration(count, size, true)
    }

    /// The same, never registered: the stream runs single-shot receives into the buffers, as on
    /// a kernel without provided buffer rings. For tests of that fallback.
    #[doc(hidden)]
    pub fn new_unregistered(count: u16, size: usize) -> io::Result<BufRing> {
        Self::with_registration(count, size, false)
    }

    fn with_registration(count: u16, size: usize, register: bool) -> io::Result<BufRing> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if count == 0 || !count.is_power_of_two() {
            return Err(invalid(format!(
                "a BufRing's count must be a power of two from 1 to 32768 (asked for {count})"
            )));
        }
        if size == 0 || u32::try_from(size).is_err() {
            return Err(invalid(format!(
                "a BufRing's buffers hold from 1 byte to 4 GiB - 1 (asked for {size})"
            )));
        }
        let Some(state) = context::try_current() else {
            return Err(io::Error::other(
                "BufRing::new must be called from within a uring runtime (inside uring::run or \
                 Runtime::block_on)",
            ));
        };
        let n = usize::from(count);
        let memory_layout = n
            .checked_mul(size)
            .and_then(|t| Layout::from_size_align(t, PAGE).ok())
            .ok_or_else(|| invalid(format!("{count} buffers of {size} bytes overflow")))?;
        let entries_layout = Layout::from_size_align(n * std::mem::size_of::<Entry>(), PAGE)
            .map_err(|e| invalid(e.to_string()))?;
        let oom = || {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot allocate {count} buffers of {size} bytes"),
            )
        };
        // SAFETY: INV-alloc: the layout has a non-zero size (count and size are at least 1); it
        // is freed in `Inner::drop` with the same layout.
        let memory = unsafe { std::alloc::alloc_zeroed(memory_layout) };
        if memory.is_null() {
            return Err(oom());
        }
        // SAFETY: INV-alloc: as above (at least one 16-byte entry).
        let entries = unsafe { std::alloc::alloc_zeroed(entries_layout) }.cast::<Entry>();
        let mut inner = Inner {
            entries,
            entries_layout,
            memory,
            memory_layout,
            size,
            count,
            tail: Cell::new(0),
            registered: None,
            free: RefCell::new(Vec::new()),
            out: Cell::new(0),
            returns: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
        };
        if entries.is_null() {
            // `inner` frees the buffers as it drops; the null entry array is skipped.
            return Err(oom());
        }
        let registered = if register {
            // SAFETY: INV-bufring: the array is page-aligned, `count` entries long, a power of
            // two of at most 32768 (a u16 power of two), and `Inner` frees it only after
            // unregistering it (or once the ring is gone).
            let r = unsafe {
                state
                    .driver
                    .borrow_mut()
                    .register_buf_ring(entries as u64, count)
            };
            r.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("registering a ring of {count} buffers of {size} bytes: {e}"),
                )
            })?
        } else {
            None
        };
        match registered {
            Some(bgid) => {
                inner.registered = Some(Registered {
                    bgid,
                    runtime: Rc::downgrade(&state),
                });
                for bid in 0..count {
                    inner.push(bid);
                }
                inner.publish();
            }
            None => *inner.free.get_mut() = (0..count).rev().collect(),
        }
        Ok(BufRing {
            inner: Rc::new(inner),
        })
    }

    /// How many buffers the ring has.
    pub fn count(&self) -> usize {
        usize::from(self.inner.count)
    }

    /// How many bytes each buffer holds.
    pub fn buf_capacity(&self) -> usize {
        self.inner.size
    }

    /// How many buffers are not handed out as a [`RingBuf`]: in the kernel's ring for the next
    /// receive (or free, unregistered). Once every receive on the ring has ended or been dropped
    /// and its completions reaped, and every `RingBuf` dropped, it is [`count`](BufRing::count).
    /// (A buffer the kernel filled whose completion nobody took yet still counts as available.)
    pub fn available(&self) -> usize {
        self.count() - self.inner.out.get()
    }

    /// Whether the ring is registered with the kernel (false on a kernel without provided
    /// buffer rings: receives then go into its buffers one by one).
    pub fn is_registered(&self) -> bool {
        self.inner.registered.is_some()
    }

    /// The buffer group id, when registered with the ring of the runtime running now.
    pub(crate) fn group_here(&self) -> Option<u16> {
        let r = self.inner.registered.as_ref()?;
        let here = r.runtime.strong_count() > 0
            && context::with_current(|c| c.is_some_and(|c| std::ptr::eq(c, r.runtime.as_ptr())));
        here.then_some(r.bgid)
    }

    /// How many buffers were provided back so far (a count that only grows).
    pub(crate) fn returns(&self) -> u64 {
        self.inner.returns.get()
    }

    /// Wakes the task of `cx` when a buffer comes back.
    pub(crate) fn wait_for_return(&self, cx: &Context<'_>) {
        crate::waker::store_in(&mut self.inner.waiters.borrow_mut(), cx);
    }

    /// A free buffer of an unregistered ring, empty.
    pub(crate) fn take_free(&self) -> Option<RingBuf> {
        let bid = self.inner.free.borrow_mut().pop()?;
        Some(self.hand_out(bid, 0))
    }

    /// Buffer `bid`, which the completion of a receive on this ring's group named with `len`
    /// bytes received, now the caller's.
    ///
    /// # Safety
    ///
    /// INV-bufring: the completion named `bid` (`IORING_CQE_F_BUFFER`) and it is handed out
    /// once; `len` is the completion's non-negative result.
    pub(crate) unsafe fn received(&self, bid: u16, len: usize) -> RingBuf {
        debug_assert!(bid < self.inner.count && len <= self.inner.size);
        self.hand_out(bid, len.min(self.inner.size))
    }

    fn hand_out(&self, bid: u16, len: usize) -> RingBuf {
        self.inner.out.set(self.inner.out.get() + 1);
        RingBuf(Kind::Ring {
            ring: self.inner.clone(),
            bid,
            len,
        })
    }

    /// Appends the first `len` bytes of buffer `bid` to `out` and provides the buffer again:
    /// what a receive's completion nobody claims does with it.
    ///
    /// # Safety
    ///
    /// INV-bufring: as for [`BufRing::received`]: the completion named `bid`, is handed over
    /// once, and `len` is its result.
    pub(crate) unsafe fn drain_into(&self, bid: u16, len: usize, out: &mut Vec<u8>) {
        let len = len.min(self.inner.size);
        // SAFETY: INV-bufring: the completion gave buffer `bid` to us; the kernel wrote its
        // first `len` bytes and touches it no more until it is provided again below.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(self.inner.ptr(bid), len) });
        self.inner.give_back(bid);
    }
}

impl fmt::Debug for BufRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufRing")
            .field("count", &self.inner.count)
            .field("buf_capacity", &self.inner.size)
            .field("available", &self.available())
            .field("registered", &self.is_registered())
            .finish()
    }
}

impl Inner {
    fn ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: INV-alloc: `bid < count`, so the offset lies within the allocation.
        unsafe { self.memory.add(usize::from(bid) * self.size) }
    }

    /// Writes buffer `bid` into the entry at the tail (not yet visible to the kernel).
    fn push(&self, bid: u16) {
        let tail = self.tail.get();
        let at = usize::from(tail & (self.count - 1));
        // SAFETY: INV-bufring: `at < count`; the kernel reads entries only between its head and
        // the published tail, and this one is past the tail. Field writes through a raw pointer:
        // the first entry's `resv` (the tail) is not written here.
        unsafe {
            let e = self.entries.add(at);
            std::ptr::addr_of_mut!((*e).addr).write(self.ptr(bid) as u64);
            std::ptr::addr_of_mut!((*e).len).write(self.size as u32);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail.set(tail.wrapping_add(1));
    }

    /// Makes the entries pushed so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: INV-bufring: the first entry's `resv` field is the ring's tail, a u16 the
        // kernel reads with acquire; it is aligned (offset 14 of a page-aligned array) and lives
        // as long as `self`.
        let tail = unsafe { AtomicU16::from_ptr(std::ptr::addr_of_mut!((*self.entries).resv)) };
        tail.store(self.tail.get(), Ordering::Release);
    }

    /// Buffer `bid` is free again: into the kernel's ring, or the free list.
    fn give_back(&self, bid: u16) {
        if self.registered.is_some() {
            self.push(bid);
            self.publish();
        } else {
            self.free.borrow_mut().push(bid);
        }
        self.returns.set(self.returns.get() + 1);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.entries.is_null() {
            // SAFETY: INV-alloc: allocated in `with_registration` with this layout, never
            // registered.
            unsafe { std::alloc::dealloc(self.memory, self.memory_layout) };
            return;
        }
        // No buffer is out and no receive holds the ring (each holds the Rc): unregister it
        // (INV-bufring), unless the ring is gone already (its buffer list went with it).
        if let Some(r) = &self.registered {
            if let Some(state) = r.runtime.upgrade() {
                if let Ok(mut driver) = state.driver.try_borrow_mut() {
                    driver.unregister_buf_ring(r.bgid);
                } else {
                    // Dropped from inside the driver (never happens: receives' data is dropped
                    // outside it). Keep the memory rather than free what the kernel may read.
                    return;
                }
            }
        }
        // SAFETY: INV-alloc: allocated in `with_registration` with these layouts; INV-bufring:
        // the kernel no longer knows the ring.
        unsafe {
            std::alloc::dealloc(self.entries.cast(), self.entries_layout);
            std::alloc::dealloc(self.memory, self.memory_layout);
        }
    }
}

/// A buffer received through a [`BufRing`]: derefs to the bytes received. Dropping it provides
/// it to the ring again.
///
/// It can be written (it is an [`IoBuf`](crate::buf::IoBuf)), for instance echoed back, and
/// then dropped. Bytes a dropped read had left for the socket come as a `RingBuf` too, in plain
/// heap memory rather than the ring's.
pub struct RingBuf(Kind);

enum Kind {
    /// One of the ring's buffers, its first `len` bytes filled.
    Ring {
        ring: Rc<Inner>,
        bid: u16,
        len: usize,
    },
    /// Bytes from the socket's stash.
    Heap(Vec<u8>),
}

impl RingBuf {
    pub(crate) fn from_vec(bytes: Vec<u8>) -> RingBuf {
        RingBuf(Kind::Heap(bytes))
    }

    /// How many bytes it holds.
    pub fn len(&self) -> usize {
        match &self.0 {
            Kind::Ring { len, .. } => *len,
            Kind::Heap(v) => v.len(),
        }
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many bytes it can hold: the ring's buffer size.
    pub fn capacity(&self) -> usize {
        match &self.0 {
            Kind::Ring { ring, .. } => ring.size,
            Kind::Heap(v) => v.capacity(),
        }
    }
}

impl Deref for RingBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            // SAFETY: INV-bufring: buffer `bid` belongs to this `RingBuf` alone (the kernel
            // touches it only once it is provided again, after the drop), its memory was zeroed
            // at allocation, and `len <= size`.
            Kind::Ring { ring, bid, len } => unsafe {
                std::slice::from_raw_parts(ring.ptr(*bid), *len)
            },
            Kind::Heap(v) => v,
        }
    }
}

impl DerefMut for RingBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            // SAFETY: INV-bufring: as in `deref`, and `&mut self` is the only access.
            Kind::Ring { ring, bid, len } => unsafe {
                std::slice::from_raw_parts_mut(ring.ptr(*bid), *len)
            },
            Kind::Heap(v) => v,
        }
    }
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        if let Kind::Ring { ring, bid, .. } = &self.0 {
            ring.out.set(ring.out.get() - 1);
            ring.give_back(*bid);
        }
    }
}

impl fmt::Debug for RingBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RingBuf");
        if let Kind::Ring { bid, .. } = &self.0 {
            d.field("bid", bid);
        }
        d.field("len", &self.len()).finish()
    }
}

// SAFETY: INV-heap and INV-bufring: a ring buffer's memory is part of the ring's allocation,
// which does not move and stays allocated while this `RingBuf` (holding the ring) lives; all of
// it is initialized (zeroed at allocation) and `len <= size`. A heap one is a `Vec`'s.
unsafe impl super::IoBuf for RingBuf {
    fn stable_ptr(&self) -> *const u8 {
        match &self.0 {
            Kind::Ring { ring, bid, .. } => ring.ptr(*bid),
            Kind::Heap(v) => v.as_ptr(),
        }
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: INV-heap and INV-bufring: the same memory as `stable_ptr`, which only this `RingBuf`
// (or the op that owns it) writes while it is out of the ring; `set_init` grows `len` only
// within the capacity.
unsafe impl super::IoBufMut for RingBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        match &mut self.0 {
            Kind::Ring { ring, bid, .. } => ring.ptr(*bid),
            Kind::Heap(v) => v.as_mut_ptr(),
        }
    }
    unsafe fn set_init(&mut self, pos: usize) {
        match &mut self.0 {
            Kind::Ring { ring, len, .. } => *len = (*len).max(pos.min(ring.size)),
            // SAFETY: INV-init: the caller says the first `pos` bytes are written.
            Kind::Heap(v) => unsafe { super::IoBufMut::set_init(v, pos) },
        }
    }
}
