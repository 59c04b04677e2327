//! The ring's registered-buffer table: slots for buffers that reads and writes name by index
//! (`READ_FIXED`, `WRITE_FIXED`), so the kernel skips pinning and mapping the pages per op.
//!
//! The table is set up sparse (`IORING_RSRC_REGISTER_SPARSE`, 5.19) the first time a pool asks
//! for slots, and each pool takes a contiguous range of it, filled with one
//! `IORING_REGISTER_BUFFERS_UPDATE` call and emptied the same way when the pool goes.

use io_uring::IoUring;
use std::io;
use std::os::fd::AsRawFd;

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
        // The kernel registers the buffers one by one and, when one fails (most often ENOMEM:
        // the locked-memory limit), reports how many it did: a partial range is undone and the
        // failure of the first one left out is the error.
        let done = update(ring, first, bufs)?;
        if done < bufs.len() {
            let err = match update(ring, first + done as u32, &bufs[done..done + 1]) {
                Err(e) => e,
                Ok(_) => io::Error::other("the kernel registered only part of the buffers"),
            };
            let _ = update(ring, first, &empty(done));
            return Err(err);
        }
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
        // Only a full emptying frees the range (a partial one leaves slots holding memory).
        let emptied = match update(ring, first, &empty(n as usize)) {
            Ok(k) if k == n as usize => Ok(()),
            _ => Err(()),
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

/// `n` null iovecs: what empties `n` slots.
fn empty(n: usize) -> Vec<libc::iovec> {
    vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        n
    ]
}

/// `IORING_REGISTER_BUFFERS_UPDATE` of `bufs` into the slots from `first`: how many the kernel
/// registered (fewer than asked when one failed), or its error when the first failed. The
/// io-uring crate's wrapper drops that count, so this makes the call itself.
fn update(ring: &IoUring, first: u32, bufs: &[libc::iovec]) -> io::Result<usize> {
    /// The kernel's `struct io_uring_rsrc_update2`.
    #[repr(C)]
    struct RsrcUpdate2 {
        offset: u32,
        resv: u32,
        data: u64,
        tags: u64,
        nr: u32,
        resv2: u32,
    }
    const IORING_REGISTER_BUFFERS_UPDATE: libc::c_uint = 16;
    let arg = RsrcUpdate2 {
        offset: first,
        resv: 0,
        data: bufs.as_ptr() as u64,
        tags: 0,
        nr: bufs.len() as u32,
        resv2: 0,
    };
    // SAFETY: INV-ffi: `arg` and the iovecs it points to live through the call, which only
    // reads them; the ring's fd is open while `ring` is. INV-fixedbuf: the iovecs describe
    // memory the pool owns and keeps allocated until it empties these slots again (or null
    // iovecs, which empty them).
    let res = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring.as_raw_fd(),
            IORING_REGISTER_BUFFERS_UPDATE,
            &arg as *const RsrcUpdate2,
            std::mem::size_of::<RsrcUpdate2>() as libc::c_uint,
        )
    };
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res as usize)
    }
}
