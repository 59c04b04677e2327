//! Files over io_uring: positional reads and writes on the ring, never on a helper thread.

use crate::buf::{IoBuf, IoBufMut};
use crate::fd::SharedFd;
use crate::op::rw;
use crate::BufResult;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

/// An open file. Every method takes `&self`: positional I/O needs no cursor, so one `File`
/// (shared with `Rc`) serves many concurrent operations.
///
/// ```
/// use uring::fs::File;
/// uring::run(async {
///     let std_file = tempfile_for_doc();
///     let f = File::from_std(std_file);
///     let (res, _) = f.write_at(b"hello".to_vec(), 0).await;
///     assert_eq!(res.unwrap(), 5);
///     let (res, buf) = f.read_at(Vec::with_capacity(16), 0).await;
///     assert_eq!(res.unwrap(), 5);
///     assert_eq!(buf, b"hello");
/// });
/// # fn tempfile_for_doc() -> std::fs::File {
/// #     let p = std::env::temp_dir().join(format!("uring-doc-{}", std::process::id()));
/// #     let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
/// #     std::fs::remove_file(&p).unwrap();
/// #     f
/// # }
/// ```
#[derive(Debug)]
pub struct File {
    fd: SharedFd,
}

impl File {
    /// Wraps an open `std::fs::File` (or any fd turned into one, such as a pipe end).
    pub fn from_std(file: std::fs::File) -> File {
        File {
            fd: SharedFd::new(file.into_raw_fd()),
        }
    }

    /// Reads into `buf` from file offset `pos`, filling from the buffer's start up to its
    /// capacity; returns how many bytes were read (0 at end of file).
    pub async fn read_at<B: IoBufMut>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        rw::read(&self.fd, buf, pos).await
    }

    /// Writes the buffer's initialized bytes at file offset `pos`; returns how many were written
    /// (possibly fewer).
    pub async fn write_at<B: IoBuf>(&self, buf: B, pos: u64) -> BufResult<usize, B> {
        rw::write(&self.fd, buf, pos).await
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
