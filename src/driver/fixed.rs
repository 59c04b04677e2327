//! The ring's registered-file table: slots a file can occupy so that its reads and writes name
//! it by slot (`IOSQE_FIXED_FILE`) and the kernel skips the per-op fd lookup.

use io_uring::IoUring;
use std::os::fd::RawFd;

/// The table's size, capped by `RLIMIT_NOFILE` (which the kernel enforces on it).
const SLOTS: u32 = 4096;

/// What became of a request for a slot.
pub(crate) enum Registration {
    /// The fd is in this slot now.
    Slot(u32),
    /// Every slot is taken; one may be free later.
    Full,
    /// No table (the kernel refused to set one up, or the runtime shut down), or the kernel
    /// refused this fd: asking again would not help.
    Refused,
}

/// The free slots of the table, if the ring has one.
pub(crate) struct FixedFiles {
    /// `None`: the kernel refused to set up a table (or `RLIMIT_NOFILE` is 0); files are then
    /// always named by their fds.
    free: Option<Vec<u32>>,
    /// Files registered so far.
    pub(crate) registered: u64,
    /// Files in the table now.
    pub(crate) in_use: u64,
}

impl FixedFiles {
    /// Sets up an empty (sparse) table on `ring`.
    pub(crate) fn new(ring: &IoUring) -> FixedFiles {
        let mut table = FixedFiles {
            free: None,
            registered: 0,
            in_use: 0,
        };
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: INV-ffi: getrlimit writes into the struct we pass, nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return table;
        }
        let slots = limit.rlim_cur.min(libc::rlim_t::from(SLOTS)) as u32;
        if slots > 0 && ring.submitter().register_files_sparse(slots).is_ok() {
            // Popped from the end: slot 0 first.
            table.free = Some((0..slots).rev().collect());
        }
        table
    }

    /// How many slots are free now: the table's size while nothing is registered, 0 without a
    /// table.
    pub(crate) fn slots(&self) -> u32 {
        self.free.as_ref().map_or(0, |f| f.len() as u32)
    }

    /// Puts `fd` (an open file) in a free slot.
    pub(crate) fn register(&mut self, ring: &IoUring, fd: RawFd) -> Registration {
        let Some(free) = &mut self.free else {
            return Registration::Refused;
        };
        let Some(slot) = free.pop() else {
            return Registration::Full;
        };
        match ring.submitter().register_files_update(slot, &[fd]) {
            Ok(1) => {
                self.registered += 1;
                self.in_use += 1;
                Registration::Slot(slot)
            }
            _ => {
                free.push(slot);
                Registration::Refused
            }
        }
    }

    /// Empties `slot` and makes it free for the next file. The caller guarantees that no op in
    /// flight names the slot (INV-fd: the slot's `SharedFd` is gone).
    pub(crate) fn release(&mut self, ring: &IoUring, slot: u32) {
        self.in_use -= 1;
        // Dropping the table's reference to the file needs no wait: the kernel keeps the file
        // alive for any request still using it.
        let emptied = ring.submitter().register_files_update(slot, &[-1]).is_ok();
        if let (true, Some(free)) = (emptied, &mut self.free) {
            free.push(slot);
        }
        // If the kernel refused, the slot is never handed out again.
    }

    /// No more registrations (the runtime is shutting down).
    pub(crate) fn close(&mut self) {
        self.free = None;
    }
}
