//! A file descriptor shared by its owner and every op that names it.
//!
//! INV-fd: an op keeps a clone of the `SharedFd` of every fd in its SQE until its final CQE (in
//! its data, which an abandoned slot keeps), so the fd is closed only after the kernel is done
//! with it and its number cannot be reused under an op. The last clone to go closes the fd at
//! once, with a plain `close(2)`: when the owner drops it with no op in flight, before the drop
//! returns (so a dropped listener's address can be bound again at once, and a peer sees end of
//! stream at once); when the last op's data goes, in the loop turn that reaped its final CQE. The same holds for a file's slot in the
//! ring's registered-file table: the slot belongs to the `SharedFd` and is freed only when its
//! last clone drops, so no op in flight can name a slot that meanwhile holds another file.

use crate::driver::Registration;
use crate::runtime::{context, RuntimeState};
use io_uring::{squeue, types};
use std::cell::RefCell;
use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};

/// An owned fd, closed when the last clone drops.
#[derive(Clone)]
pub(crate) struct SharedFd(Rc<FdInner>);

struct FdInner {
    fd: RawFd,
    fixed: RefCell<Fixed>,
    /// Opened with `O_DIRECT`: its reads and writes wait on the device, so they are handed to
    /// the kernel as soon as they are queued (see [`SharedFd::submits_at_once`]).
    direct: bool,
}

/// Whether the fd also sits in a ring's registered-file table, so that reads and writes can
/// name it by its slot (`IOSQE_FIXED_FILE`) and the kernel skips looking the fd up and counting
/// a reference to the file on every op.
enum Fixed {
    /// Not opened as a `File` (sockets and other fds): always named by its fd.
    Never,
    /// A file that has not been registered yet; `ops` reads and writes have named it so far.
    Unregistered { ops: u32 },
    /// The kernel refused to register it (or the runtime has no table): named by its fd.
    Failed,
    /// Registered in `slot` of the ring of the runtime `runtime`.
    Registered(FixedSlot),
}

/// A slot of a runtime's registered-file table, freed when dropped.
struct FixedSlot {
    slot: u32,
    /// The runtime whose ring holds the table. Weak: a file may outlive its runtime, and then
    /// the table is gone with the ring and there is nothing to free.
    runtime: Weak<RuntimeState>,
}

impl Drop for FixedSlot {
    fn drop(&mut self) {
        let Some(state) = self.runtime.upgrade() else {
            return;
        };
        // The driver is borrowed only if it dropped an fd while borrowed, which it avoids
        // (orphans are dropped after the borrow ends). Then the slot stays taken: never reused,
        // so no op can name the wrong file, and the table keeps the file open until the ring
        // is closed.
        let borrowed = state.driver.try_borrow_mut();
        if let Ok(mut d) = borrowed {
            d.release_fixed_file(self.slot);
        }
    }
}

/// How many reads and writes a file does by its fd before it gets a registered slot.
/// Registering and releasing a slot cost an `io_uring_register` call each (about as much as a
/// dozen fd lookups they save), so a file read once or twice, as by `uring::fs::read`, is not
/// worth registering; a file read many times is.
const REGISTER_AFTER_OPS: u32 = 16;

/// How an SQE names an fd: its number, or its slot in the ring's registered-file table together
/// with the `IOSQE_FIXED_FILE` flag to add to the SQE.
#[derive(Clone, Copy)]
pub(crate) struct Target {
    pub(crate) fd: types::Fd,
    pub(crate) flags: squeue::Flags,
}

impl SharedFd {
    /// Takes ownership of `fd`.
    pub(crate) fn new(fd: RawFd) -> SharedFd {
        SharedFd(Rc::new(FdInner {
            fd,
            fixed: RefCell::new(Fixed::Never),
            direct: false,
        }))
    }

    /// Takes ownership of `fd`, an open regular file whose reads and writes may use a slot in the
    /// ring's registered-file table (see [`SharedFd::target`]); `status_flags` are its
    /// `F_GETFL` flags (or the flags it was opened with).
    pub(crate) fn new_file(fd: RawFd, status_flags: i32) -> SharedFd {
        SharedFd(Rc::new(FdInner {
            fd,
            fixed: RefCell::new(Fixed::Unregistered { ops: 0 }),
            direct: status_flags & libc::O_DIRECT != 0,
        }))
    }

    /// Whether a read or write of this fd should reach the kernel when it is queued rather
    /// than with the rest of the loop turn's SQEs: true for a file opened with `O_DIRECT`,
    /// whose ops wait on the device. A device started on each request as it comes keeps more of
    /// them in flight than one handed a batch per turn (docs/architecture.md, "When SQEs reach
    /// the kernel"). A flag changed later with `fcntl(F_SETFL)` is not seen: only the timing of
    /// the submission depends on it.
    pub(crate) fn submits_at_once(&self) -> bool {
        self.0.direct
    }

    /// How a read or write SQE submitted now, on the current runtime, should name this fd: by its
    /// registered slot for a file (registering it after `REGISTER_AFTER_OPS` reads and writes,
    /// one `io_uring_register` call), by its number otherwise or when registration fails. Call it
    /// from `create_entry`, when the driver is not borrowed.
    ///
    /// The op must hold a clone of `self` until its final CQE (INV-fd): that keeps the slot
    /// taken while the kernel may look at it.
    #[inline]
    pub(crate) fn target(&self) -> Target {
        let plain = Target {
            fd: types::Fd(self.0.fd),
            flags: squeue::Flags::empty(),
        };
        let fixed = self.0.fixed.borrow();
        match &*fixed {
            Fixed::Never | Fixed::Failed => plain,
            Fixed::Registered(s) => {
                // Only the ring that holds the table knows the slot: on another runtime (a file
                // carried from one runtime to the next) use the fd.
                // A runtime that is gone is not this one, even if the current one was
                // allocated at its address (its table holds other files).
                let here = s.runtime.strong_count() > 0
                    && context::with_current(|c| {
                        c.is_some_and(|c| std::ptr::eq(c, s.runtime.as_ptr()))
                    });
                if here {
                    fixed_target(s.slot)
                } else {
                    plain
                }
            }
            Fixed::Unregistered { .. } => {
                drop(fixed);
                self.unregistered_target(plain)
            }
        }
    }

    /// [`SharedFd::target`] for a file not registered yet: counts the op, and registers the
    /// file once it has done `REGISTER_AFTER_OPS`. Out of line: it runs 16 times per file.
    #[cold]
    fn unregistered_target(&self, plain: Target) -> Target {
        let mut fixed = self.0.fixed.borrow_mut();
        match &*fixed {
            Fixed::Unregistered { ops } if *ops < REGISTER_AFTER_OPS => {
                *fixed = Fixed::Unregistered { ops: *ops + 1 };
                plain
            }
            Fixed::Unregistered { .. } => {
                let Some(state) = context::try_current() else {
                    return plain;
                };
                // Borrowed only if an fd is used from inside the driver, which does not happen;
                // then simply try again at the next op.
                let Ok(mut driver) = state.driver.try_borrow_mut() else {
                    return plain;
                };
                match driver.register_fixed_file(self.0.fd) {
                    Registration::Slot(slot) => {
                        *fixed = Fixed::Registered(FixedSlot {
                            slot,
                            runtime: Rc::downgrade(&state),
                        });
                        fixed_target(slot)
                    }
                    // Files closing free slots: try again at the next op (no syscall until a
                    // slot is free).
                    Registration::Full => plain,
                    Registration::Refused => {
                        *fixed = Fixed::Failed;
                        plain
                    }
                }
            }
            _ => plain,
        }
    }

    /// Gives the fd back to the caller if no op holds it any more; otherwise returns `self`.
    /// A registered slot is freed first.
    pub(crate) fn try_unwrap(self) -> Result<RawFd, SharedFd> {
        match Rc::try_unwrap(self.0) {
            Ok(inner) => {
                let fd = inner.fd;
                // Frees the slot (FixedSlot's drop); what is left owns nothing but the fd.
                drop(inner.fixed.replace(Fixed::Never));
                std::mem::forget(inner);
                Ok(fd)
            }
            Err(rc) => Err(SharedFd(rc)),
        }
    }
}

fn fixed_target(slot: u32) -> Target {
    Target {
        fd: types::Fd(slot as RawFd),
        flags: squeue::Flags::FIXED_FILE,
    }
}

impl AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd
    }
}

impl fmt::Debug for SharedFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedFd({})", self.0.fd)
    }
}

impl Drop for FdInner {
    fn drop(&mut self) {
        // A plain close: no op holds the fd any more (INV-fd), and closing a socket or a local
        // file does not block (unless SO_LINGER says so). A file on a network filesystem may
        // flush on close; `File::close` closes through the ring for that.
        // SAFETY: this handle owned `fd` and no op holds it any more (INV-fd).
        unsafe { libc::close(self.fd) };
        // `fixed` drops after this, freeing the table slot (the table holds its own reference
        // to the file, so the order of the two does not matter).
    }
}
