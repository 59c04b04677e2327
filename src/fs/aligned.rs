//! `AlignedBuf`: heap memory aligned for `O_DIRECT`.

use crate::buf::{IoBuf, IoBufMut};
use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// A fixed-capacity byte buffer whose address is aligned to a block size, for `O_DIRECT` I/O,
/// where the kernel requires the buffer address (and the file offset and length) to be multiples
/// of the device's logical block size (512 or 4096 bytes; [`Metadata::dio_alignment`] tells).
///
/// Like a `Vec<u8>` with fixed capacity: it has an initialized length (what a write sends) and a
/// capacity (what a read may fill). It implements [`IoBuf`] and [`IoBufMut`].
///
/// [`Metadata::dio_alignment`]: crate::fs::Metadata::dio_alignment
///
/// ```
/// use uring::fs::AlignedBuf;
/// let mut buf = AlignedBuf::new(8192);
/// assert_eq!(buf.as_ptr() as usize % 4096, 0);
/// assert_eq!((buf.len(), buf.capacity()), (0, 8192));
/// buf.extend_from_slice(b"block");
/// assert_eq!(&buf[..], b"block");
/// ```
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

/// The default alignment: 4096 bytes, the logical block size of most devices (and a multiple of
/// the others' 512).
pub const DEFAULT_ALIGN: usize = 4096;

impl AlignedBuf {
    /// An empty buffer of `capacity` bytes aligned to 4096 bytes.
    ///
    /// # Panics
    ///
    /// If `capacity` rounded up to the alignment overflows `isize`, or allocation fails.
    pub fn new(capacity: usize) -> AlignedBuf {
        AlignedBuf::with_alignment(capacity, DEFAULT_ALIGN).expect("4096 is a valid alignment")
    }

    /// A buffer of `capacity` zero bytes, all initialized (`len() == capacity`), aligned to 4096
    /// bytes. Zeroed memory also keeps memory checkers such as valgrind quiet about bytes the
    /// kernel writes.
    pub fn zeroed(capacity: usize) -> AlignedBuf {
        let mut b = AlignedBuf::alloc(capacity, DEFAULT_ALIGN, true).expect("valid alignment");
        b.len = capacity;
        b
    }

    /// An empty buffer of `capacity` bytes aligned to `align`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `align` is not a power of two or the size overflows.
    pub fn with_alignment(capacity: usize, align: usize) -> io::Result<AlignedBuf> {
        AlignedBuf::alloc(capacity, align, false)
    }

    fn alloc(capacity: usize, align: usize, zeroed: bool) -> io::Result<AlignedBuf> {
        // A zero-size allocation is not allowed: allocate at least one alignment unit but report
        // the asked-for capacity.
        let layout = Layout::from_size_align(capacity.max(1), align).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("aligned buffer: bad alignment {align} or size {capacity}"),
            )
        })?;
        // SAFETY: INV-alloc: the layout has a non-zero size.
        let raw = unsafe {
            if zeroed {
                alloc::alloc_zeroed(layout)
            } else {
                alloc::alloc(layout)
            }
        };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Ok(AlignedBuf {
            ptr,
            len: 0,
            layout: Layout::from_size_align(capacity, align).unwrap_or(layout),
        })
    }

    /// The alignment of the buffer's address.
    pub fn alignment(&self) -> usize {
        self.layout.align()
    }

    /// How many bytes are initialized.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no byte is initialized.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many bytes the buffer holds at most.
    pub fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// The address of the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The address of the first byte, for writing.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Forgets the initialized bytes (for reuse as a read buffer).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Shortens the initialized part to `len` bytes (no effect if already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Appends bytes after the initialized ones.
    ///
    /// # Panics
    ///
    /// If they do not fit in the capacity.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        assert!(
            data.len() <= self.capacity() - self.len,
            "AlignedBuf: {} more bytes do not fit (len {}, capacity {})",
            data.len(),
            self.len,
            self.capacity()
        );
        // SAFETY: INV-heap: the destination lies within our allocation (checked above) and cannot
        // overlap `data`, which is borrowed immutably while we are borrowed mutably.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                data.len(),
            )
        };
        self.len += data.len();
    }

    /// Initializes the whole capacity to `byte` (so `len() == capacity()`).
    pub fn fill(&mut self, byte: u8) {
        // SAFETY: INV-heap: writes exactly `capacity` bytes of our allocation.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), byte, self.capacity()) };
        self.len = self.capacity();
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: INV-alloc: allocated in `alloc` with this alignment and `max(size, 1)` bytes,
        // which is what we pass back.
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.layout.size().max(1), self.layout.align()),
            )
        };
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    /// The initialized bytes.
    fn deref(&self) -> &[u8] {
        // SAFETY: INV-heap: the first `len` bytes of our allocation are initialized.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: INV-heap: the first `len` bytes of our allocation are initialized, and we are
        // borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("alignment", &self.alignment())
            .finish()
    }
}

// SAFETY: the memory is a heap allocation owned by `self` that does not move when `self` moves
// (INV-heap); `len <= capacity` and the first `len` bytes are initialized.
unsafe impl IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: INV-heap: the same memory as `stable_ptr`; `set_init` only grows `len`, within capacity.
unsafe impl IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        self.len = self.len.max(pos.min(self.capacity()));
    }
}

// SAFETY: INV-heap: the buffer uniquely owns its allocation, like a `Vec<u8>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: INV-heap: shared access only reads the bytes, like a `Vec<u8>`.
unsafe impl Sync for AlignedBuf {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_and_capacity() {
        for align in [512, 4096, 65536] {
            let b = AlignedBuf::with_alignment(3 * align, align).unwrap();
            assert_eq!(b.as_ptr() as usize % align, 0);
            assert_eq!(b.capacity(), 3 * align);
            assert_eq!(b.alignment(), align);
        }
        let e = AlignedBuf::with_alignment(4096, 3000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn zero_capacity_is_fine() {
        let mut b = AlignedBuf::new(0);
        assert_eq!(b.capacity(), 0);
        b.extend_from_slice(b"");
        assert!(b.is_empty());
    }

    #[test]
    fn zeroed_and_fill() {
        let mut b = AlignedBuf::zeroed(100);
        assert_eq!(&b[..], &[0u8; 100][..]);
        b.fill(7);
        assert!(b.iter().all(|&x| x == 7));
        b.truncate(10);
        assert_eq!(b.len(), 10);
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    #[should_panic]
    fn overflow_panics() {
        AlignedBuf::new(4).extend_from_slice(b"too long");
    }
}
