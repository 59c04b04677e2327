//! A file descriptor shared by its owner and every op that names it.
//!
//! INV-fd: an op keeps a clone of the `SharedFd` of every fd in its SQE until its final CQE (in
//! its data, which an abandoned slot keeps), so the fd is closed only after the kernel is done
//! with it and its number cannot be reused under an op.

use crate::runtime::Handle;
use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

/// An owned fd, closed through the ring (without blocking the loop) when the last clone drops.
#[derive(Clone)]
pub(crate) struct SharedFd(Rc<FdInner>);

struct FdInner {
    fd: RawFd,
}

impl SharedFd {
    /// Takes ownership of `fd`.
    pub(crate) fn new(fd: RawFd) -> SharedFd {
        SharedFd(Rc::new(FdInner { fd }))
    }

    /// Gives the fd back to the caller if no op holds it any more; otherwise returns `self`.
    #[allow(dead_code)]
    pub(crate) fn try_unwrap(self) -> Result<RawFd, SharedFd> {
        match Rc::try_unwrap(self.0) {
            Ok(inner) => {
                let fd = inner.fd;
                std::mem::forget(inner);
                Ok(fd)
            }
            Err(rc) => Err(SharedFd(rc)),
        }
    }

    /// How many handles (owner and in-flight ops) hold the fd.
    #[allow(dead_code)]
    pub(crate) fn holders(&self) -> usize {
        Rc::strong_count(&self.0)
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
        let fd = self.fd;
        let queued = Handle::try_with(|h| match h.driver.try_borrow_mut() {
            Ok(mut d) => {
                d.close(fd);
                true
            }
            Err(_) => false,
        });
        if queued != Some(true) {
            // No runtime on this thread (or it is busy): a plain close. Closing a socket or
            // file does not block unless SO_LINGER says so.
            // SAFETY: this handle owned `fd` and no op holds it any more (INV-fd).
            unsafe { libc::close(fd) };
        }
    }
}
