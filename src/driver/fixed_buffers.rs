//! The ring's registered-buffer table: slots for buffers that reads and writes name by index
//! (`READ_FIXED`, `WRITE_FIXED`), so the kernel skips pinning and mapping the pages per op.
//!
//! The table is set up sparse (`IORING_RSRC_REGISTER_SPARSE`, 5.19) the first time a pool asks
//! for slots, and each pool takes a contiguous range of it, filled with one
//! `IORING_REGISTER_BUFFERS_UPDATE` call and emptied the same way when the pool goes.

use io_uring::IoUring;
use std::io;

/// The table's size: the kernel's limit on registered buffers (`IORING_MAX_REG_BUFFERS`).
pub(crate) const SLOTS: u32 = 1 << 14;

/// The largest buffer the kernel registers (1 GiB).
pub(crate) const MAX_BUFFER: usize = 1 << 30;

/// The state of the table.
enum Table {
    /// Not asked for yet.
    Unset,
    /// Set up: the free ranges, as (first slot, count), in no particular order.
    Ready(Vec<(u32, u32)>),
    /// The kernel refused a sparse table (before 5.19): buffers stay unregistered.
    Unsupported,
    /// The runtime is shutting down: no more registrations.
    Closed,
}

/// The free slots of the registered-buffer table.
pub(crate) struct FixedBuffers {
    table: Table,
}

impl FixedBuffers {
    pub(crate) fn new() -> FixedBuffers {
        FixedBuffers {
            table: Table::Unset,
        }
    }

    /// Registers `bufs` in a contiguous range of slots and returns its first slot, `Ok(None)`
    /// when this kernel has no sparse buffer table (the buffers then work unregistered), or the
    /// kernel's error (most often `ENOMEM`: the locked-memory limit).
    pub(crate) fn register(
        &mut self,
        ring: &IoUring,
        bufs: &[libc::iovec],
    ) -> io::Result<Option<u32>> {
        if let Table::Unset = self.table {
            self.table = match ring.submitter().register_buffers_sparse(SLOTS) {
                Ok(()) => Table::Ready(vec![(0, SLOTS)]),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Table::Unsupported,
                Err(e) => return Err(e),
            };
        }
        let free = match &mut self.table {
            Table::Ready(free) => free,
            Table::Unsupported => return Ok(None),
            Table::Closed => {
                return Err(io::Error::other("the runtime is shutting down"));
            }
            Table::Unset => unreachable!("set above"),
        };
        let n = bufs.len() as u32;
        let Some(at) = free.iter().position(|&(_, len)| len >= n) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "no room for {n} more registered buffers in the ring's table of {SLOTS} \
                     (other pools hold the rest)"
                ),
            ));
        };
        let (first, len) = free[at];
        // SAFETY: INV-fixedbuf: the iovecs describe memory the pool owns and keeps allocated
        // until it empties these slots again; the kernel copies the iovecs during the call.
        unsafe { ring.submitter().register_buffers_update(first, bufs, None) }?;
        if len == n {
            free.swap_remove(at);
        } else {
            free[at] = (first + n, len - n);
        }
        Ok(Some(first))
    }

    /// Empties the `n` slots from `first` (INV-fixedbuf: no op in flight names them: their
    /// buffers are all back in their pool).
    pub(crate) fn release(&mut self, ring: &IoUring, first: u32, n: u32) {
        let empty = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            n as usize
        ];
        // SAFETY: INV-fixedbuf: null iovecs empty the slots; nothing is registered.
        let emptied = unsafe {
            ring.submitter()
                .register_buffers_update(first, &empty, None)
        };
        if let (Ok(()), Table::Ready(free)) = (emptied, &mut self.table) {
            free.push((first, n));
            // Merge neighbours, so pools that come and go do not splinter the table.
            free.sort_unstable();
            let mut merged: Vec<(u32, u32)> = Vec::with_capacity(free.len());
            for &(f, l) in free.iter() {
                match merged.last_mut() {
                    Some((mf, ml)) if *mf + *ml == f => *ml += l,
                    _ => merged.push((f, l)),
                }
            }
            *free = merged;
        }
        // If the kernel refused, the slots are never handed out again.
    }

    /// No more registrations (the runtime is shutting down).
    pub(crate) fn close(&mut self) {
        self.table = Table::Closed;
    }
}
