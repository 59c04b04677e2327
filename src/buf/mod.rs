//! Owned buffers: what an operation hands to the kernel and gets back.
//!
//! The kernel reads and writes a buffer while an operation is in flight, possibly after the future
//! that started it is gone. So every operation takes its buffer by value and returns it with the
//! result as a [`BufResult`]. The traits here describe what the kernel may touch:
//!
//! * [`IoBuf`]: bytes to send. A write sends `bytes_init()` bytes from `stable_ptr()`.
//! * [`IoBufMut`]: room to receive. A read fills the buffer from its start up to `bytes_total()`
//!   (its capacity) and then calls `set_init` so the initialized length covers the bytes read.
//!   `Vec::with_capacity(n)` therefore reads up to `n` bytes.

mod fixed;
mod ring;

pub use fixed::{FixedBuf, FixedBufPool, Next};
pub use ring::{BufRing, RingBuf};

use std::io;
use std::ops::{Bound, RangeBounds};

/// The result of an operation that took an owned buffer: the outcome and the buffer, returned in
/// every case so the caller can reuse it.
pub type BufResult<T, B> = (io::Result<T>, B);

/// A buffer the kernel may read from while an operation is in flight.
///
/// # Safety
///
/// `stable_ptr()` must point to at least `bytes_total()` bytes of memory that stay valid and at the
/// same address for as long as the value is alive, even when the value itself is moved (the
/// memory lives on the heap or is `'static`), and the first `bytes_init()` of them must be
/// initialized. `bytes_init() <= bytes_total()`.
pub unsafe trait IoBuf: Unpin + 'static {
    /// The address of the first byte. It does not change when `self` moves.
    fn stable_ptr(&self) -> *const u8;

    /// How many bytes are initialized: what a write sends.
    fn bytes_init(&self) -> usize;

    /// How many bytes the buffer can hold: what a read may fill.
    fn bytes_total(&self) -> usize;

    /// For a [`FixedBuf`] whose pool is registered with the current runtime's ring: the index
    /// of its slot in the ring's registered-buffer table, so reads and writes use
    /// `READ_FIXED`/`WRITE_FIXED`. `None` for every other buffer (the default); do not
    /// override it (INV-fixedbuf).
    #[doc(hidden)]
    fn fixed_index(&self) -> Option<u16> {
        None
    }

    /// A view of `range` of this buffer, which owns the buffer and can be handed to an operation.
    ///
    /// For a read, `range` is taken within `bytes_total()`; for a write, within `bytes_init()`.
    ///
    /// # Panics
    ///
    /// If the range is out of `0..bytes_total()` or decreasing.
    ///
    /// ```
    /// use uring::buf::IoBuf;
    /// let s = b"hello world".to_vec().slice(6..);
    /// assert_eq!(&s[..], b"world");
    /// assert_eq!(s.into_inner().len(), 11);
    /// ```
    fn slice(self, range: impl RangeBounds<usize>) -> Slice<Self>
    where
        Self: Sized,
    {
        let begin = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.checked_add(1).expect("slice start overflows"),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n.checked_add(1).expect("slice end overflows"),
            Bound::Excluded(&n) => n,
            Bound::Unbounded => self.bytes_total(),
        };
        assert!(
            begin <= end && end <= self.bytes_total(),
            "slice {begin}..{end} out of the buffer's capacity {}",
            self.bytes_total()
        );
        Slice {
            buf: self,
            begin,
            end,
        }
    }
}

/// A buffer the kernel may write into while an operation is in flight.
///
/// # Safety
///
/// As for [`IoBuf`], and `stable_mut_ptr()` points to the same `bytes_total()` bytes, which the
/// kernel may write while the value is alive and owned by an operation.
pub unsafe trait IoBufMut: IoBuf {
    /// The address of the first byte, for writing. Same address as `stable_ptr()`.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// Marks the first `pos` bytes as initialized, if that grows the initialized length.
    ///
    /// # Safety
    ///
    /// The first `pos` bytes must really be initialized (for instance, written by the kernel).
    unsafe fn set_init(&mut self, pos: usize);
}

// SAFETY: a Vec's heap buffer does not move when the Vec moves; `len <= capacity` and the first
// `len` bytes are initialized (INV-heap).
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: INV-heap: same memory as `stable_ptr`; `set_init` only grows `len` within capacity, and
// the caller promises those bytes are initialized.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len() {
            // SAFETY: INV-init: the caller guarantees the first `pos` bytes are initialized, and
            // `pos` is within capacity because the kernel was only given `capacity` bytes.
            unsafe { self.set_len(pos.min(self.capacity())) };
        }
    }
}

// SAFETY: INV-heap: a boxed slice's heap memory does not move with the box; it is fully
// initialized.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: INV-heap: same memory as `stable_ptr`; it is always fully initialized, so `set_init` has
// nothing to record.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

// SAFETY: INV-heap: `'static` memory never moves or goes away; it is initialized and only read.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: INV-heap: `'static` memory never moves or goes away; it is initialized and only read.
unsafe impl IoBuf for &'static str {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: INV-heap: a String's heap buffer does not move when the String moves. It is only ever
// given to the kernel to read (there is no `IoBufMut` for `String`, which would risk invalid
// UTF-8).
unsafe impl IoBuf for String {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

/// A range of an owned buffer, itself an owned buffer.
///
/// Made by [`IoBuf::slice`]. A read into a `Slice` fills from `begin()` up to `end()`; a write
/// from a `Slice` sends from `begin()` up to the end of the initialized bytes within the range.
///
/// The range is always taken within the buffer as it is when an operation starts: if the
/// buffer shrank through [`get_mut`](Slice::get_mut) (say `shrink_to_fit` on a `Vec`), an
/// operation covers only the part of the range the buffer still has, so the kernel never
/// touches memory past the buffer (INV-heap).
///
/// A read into a slice that starts beyond the buffer's initialized length (say
/// `Vec::with_capacity(20).slice(10..20)`) cannot extend that length: the bytes between it and
/// `begin()` were never written, so they cannot be counted as initialized. The read still returns
/// how many bytes it took, but the underlying `Vec` does not show them: read into slices that
/// start within the initialized bytes (or at their end).
#[derive(Debug)]
pub struct Slice<T> {
    buf: T,
    begin: usize,
    end: usize,
}

impl<T: IoBuf> Slice<T> {
    /// The range as the buffer is now: `begin..end` clamped to its capacity.
    fn bounds(&self) -> (usize, usize) {
        let total = self.buf.bytes_total();
        (self.begin.min(total), self.end.min(total))
    }
}

impl<T> Slice<T> {
    /// Offset of the view's first byte in the underlying buffer.
    pub fn begin(&self) -> usize {
        self.begin
    }

    /// Offset one past the view's last byte in the underlying buffer.
    pub fn end(&self) -> usize {
        self.end
    }

    /// The underlying buffer.
    pub fn get_ref(&self) -> &T {
        &self.buf
    }

    /// The underlying buffer, mutably. If it shrinks below the range, operations on the slice
    /// cover only what is left of the range.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.buf
    }

    /// Gives back the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: IoBuf> std::ops::Deref for Slice<T> {
    type Target = [u8];

    /// The initialized bytes within the view.
    fn deref(&self) -> &[u8] {
        let (begin, end) = self.bounds();
        let init = self.buf.bytes_init().clamp(begin, end);
        // SAFETY: INV-heap: `begin..init` lies within the initialized part of the buffer
        // (IoBuf contract: `bytes_init() <= bytes_total()`).
        unsafe { std::slice::from_raw_parts(self.buf.stable_ptr().add(begin), init - begin) }
    }
}

// SAFETY: INV-heap: the view points into `buf`'s stable memory, and its range is clamped to the
// buffer's `bytes_total()` as it is at each call, so a buffer that shrank since the slice was
// made never lets an operation reach past its memory.
unsafe impl<T: IoBuf> IoBuf for Slice<T> {
    fn stable_ptr(&self) -> *const u8 {
        let (begin, _) = self.bounds();
        // SAFETY: INV-heap: `begin <= bytes_total()`, so the offset stays within (or one past) the
        // buffer.
        unsafe { self.buf.stable_ptr().add(begin) }
    }
    fn bytes_init(&self) -> usize {
        let (begin, end) = self.bounds();
        self.buf.bytes_init().clamp(begin, end) - begin
    }
    fn bytes_total(&self) -> usize {
        let (begin, end) = self.bounds();
        end - begin
    }
    fn fixed_index(&self) -> Option<u16> {
        // A view lies within its buffer, so within the buffer's registered slot.
        self.buf.fixed_index()
    }
}

// SAFETY: INV-heap: the same memory as `stable_ptr`, clamped the same way; `set_init`
// translates to the underlying buffer.
unsafe impl<T: IoBufMut> IoBufMut for Slice<T> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        let (begin, _) = self.bounds();
        // SAFETY: INV-heap: `begin <= bytes_total()`, so the offset stays within (or one past) the
        // buffer.
        unsafe { self.buf.stable_mut_ptr().add(begin) }
    }
    unsafe fn set_init(&mut self, pos: usize) {
        let (begin, end) = self.bounds();
        // Only when the view starts within the initialized part: otherwise the bytes between
        // the initialized length and `begin` are not initialized and cannot be counted.
        if begin <= self.buf.bytes_init() {
            // SAFETY: INV-init: the caller guarantees `pos` bytes from `begin` are initialized
            // (never more than the view, which ends at `end`), and the bytes before `begin` already
            // are.
            unsafe { self.buf.set_init((begin + pos).min(end)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_set_init_grows_only() {
        let mut v = Vec::with_capacity(8);
        v.push(1u8);
        // SAFETY: INV-init: test only claims bytes it writes first.
        unsafe {
            v.as_mut_ptr().add(1).write_bytes(7, 3);
            v.set_init(4);
            v.set_init(2);
        }
        assert_eq!(v, [1, 7, 7, 7]);
    }

    #[test]
    fn slice_views() {
        let s = b"hello".to_vec().slice(1..3);
        assert_eq!(&s[..], b"el");
        assert_eq!(s.bytes_total(), 2);
        let full = Vec::<u8>::with_capacity(10).slice(..);
        assert_eq!(full.bytes_init(), 0);
        assert_eq!(full.bytes_total(), 10);
    }

    #[test]
    fn a_shrunk_buffer_bounds_its_slice() {
        let mut s = Vec::<u8>::with_capacity(4096).slice(0..4096);
        s.get_mut().shrink_to(16);
        let cap = s.get_ref().capacity();
        assert!(cap < 4096);
        assert_eq!(s.bytes_total(), cap, "the view ends where the buffer does");
        assert_eq!(s.stable_ptr(), s.get_ref().as_ptr());
        let mut beyond = Vec::<u8>::with_capacity(4096).slice(100..200);
        beyond.get_mut().shrink_to(8);
        assert_eq!(beyond.bytes_total(), 0);
        assert!(beyond.is_empty());
    }

    #[test]
    #[should_panic]
    fn slice_out_of_range_panics() {
        let _ = vec![0u8; 4].slice(2..9);
    }
}
