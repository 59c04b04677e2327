//! The ring's provided buffer rings (`IORING_REGISTER_PBUF_RING`, Linux 5.19): each has a buffer
//! group id, allocated here per ring, that receives name with `IOSQE_BUFFER_SELECT`.

use io_uring::IoUring;
use std::io;

/// The buffer group ids of one ring.
pub(crate) struct BufGroups {
    /// The next id never handed out.
    next: u16,
    /// Ids given back, for reuse.
    free: Vec<u16>,
    /// The kernel refused a buffer ring with `EINVAL` (before 5.19): rings stay unregistered.
    unsupported: bool,
    /// The runtime is shutting down: no more registrations.
    closed: bool,
}

impl BufGroups {
    pub(crate) fn new() -> BufGroups {
        BufGroups {
            next: 0,
            free: Vec::new(),
            unsupported: false,
            closed: false,
        }
    }

    /// Registers the ring of `entries` entries at `addr` under a free group id and returns it;
    /// `Ok(None)` when this kernel has no provided buffer rings.
    ///
    /// # Safety
    ///
    /// INV-bufring: `addr` is page-aligned, holds `entries` (a power of two, at most 32768)
    /// entries, and stays allocated until the group is unregistered or the ring is gone.
    pub(crate) unsafe fn register(
        &mut self,
        ring: &IoUring,
        addr: u64,
        entries: u16,
    ) -> io::Result<Option<u16>> {
        if self.closed {
            return Err(io::Error::other("the runtime is shutting down"));
        }
        if self.unsupported {
            return Ok(None);
        }
        let bgid = match self.free.pop() {
            Some(id) => id,
            None => {
                let id = self.next;
                self.next = self.next.checked_add(1).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "every buffer group id of this ring is in use (65536 buffer rings)",
                    )
                })?;
                id
            }
        };
        // SAFETY: INV-bufring: as the caller guarantees; the kernel reads the registration
        // argument during the call.
        match unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(addr, entries, bgid, 0)
        } {
            Ok(()) => Ok(Some(bgid)),
            Err(e) => {
                self.free.push(bgid);
                if e.raw_os_error() == Some(libc::EINVAL) {
                    // The arguments are valid (the caller checked them): an older kernel.
                    self.unsupported = true;
                    return Ok(None);
                }
                Err(e)
            }
        }
    }

    /// Unregisters group `bgid` (INV-bufring: no op in flight names it: every op that could
    /// holds the buffer ring, which is being freed).
    pub(crate) fn unregister(&mut self, ring: &IoUring, bgid: u16) {
        if ring.submitter().unregister_buf_ring(bgid).is_ok() {
            self.free.push(bgid);
        }
        // If the kernel refused, the id is never handed out again.
    }

    /// No more registrations (the runtime is shutting down).
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }
}
