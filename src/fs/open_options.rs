//! `OpenOptions`: how to open a file, as in `std::fs::OpenOptions`, opened with
//! `IORING_OP_OPENAT`.

use crate::fs::File;
use crate::op::fs as op;
use std::io;
use std::path::Path;

/// Options for opening a file, with the same meaning as `std::fs::OpenOptions`. The open itself
/// is an `IORING_OP_OPENAT` on the ring.
///
/// Files are always opened with `O_CLOEXEC`. [`custom_flags`](OpenOptions::custom_flags) adds
/// flags such as `O_DIRECT` or `O_SYNC`.
///
/// ```
/// use uring::fs::OpenOptions;
/// uring::run(async {
///     let path = std::env::temp_dir().join(format!("uring-doc-oo-{}", std::process::id()));
///     let f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).await?;
///     f.write_all_at(b"hi".to_vec(), 0).await.0?;
///     f.close().await?;
///     assert_eq!(std::fs::read(&path)?, b"hi");
///     uring::fs::remove_file(&path).await
/// })
/// .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    truncate: bool,
    create: bool,
    create_new: bool,
    mode: u32,
    custom_flags: i32,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// All options off; new files get mode `0o666` (before the umask).
    pub fn new() -> OpenOptions {
        OpenOptions {
            read: false,
            write: false,
            append: false,
            truncate: false,
            create: false,
            create_new: false,
            mode: 0o666,
            custom_flags: 0,
        }
    }

    /// Open for reading.
    pub fn read(&mut self, read: bool) -> &mut OpenOptions {
        self.read = read;
        self
    }

    /// Open for writing.
    pub fn write(&mut self, write: bool) -> &mut OpenOptions {
        self.write = write;
        self
    }

    /// Open for appending (`O_APPEND`): writes go to the end whatever position they name.
    pub fn append(&mut self, append: bool) -> &mut OpenOptions {
        self.append = append;
        self
    }

    /// Truncate the file to 0 bytes on open (needs write access).
    pub fn truncate(&mut self, truncate: bool) -> &mut OpenOptions {
        self.truncate = truncate;
        self
    }

    /// Create the file if it does not exist (needs write or append access).
    pub fn create(&mut self, create: bool) -> &mut OpenOptions {
        self.create = create;
        self
    }

    /// Create the file, failing with `AlreadyExists` if it exists (`O_CREAT | O_EXCL`).
    pub fn create_new(&mut self, create_new: bool) -> &mut OpenOptions {
        self.create_new = create_new;
        self
    }

    /// The permission bits a newly created file gets (before the umask).
    pub fn mode(&mut self, mode: u32) -> &mut OpenOptions {
        self.mode = mode;
        self
    }

    /// Extra `open(2)` flags, such as `libc::O_DIRECT` or `libc::O_SYNC`. The access mode bits
    /// (`O_ACCMODE`) are ignored: use `read`/`write`.
    pub fn custom_flags(&mut self, flags: i32) -> &mut OpenOptions {
        self.custom_flags = flags;
        self
    }

    /// Opens `path` with these options.
    ///
    /// # Errors
    ///
    /// The kernel's error, typed: `NotFound`, `PermissionDenied`, `AlreadyExists`,
    /// `IsADirectory` (a directory opened for writing) and so on; `InvalidInput` for an
    /// inconsistent set of options (as std: for example `truncate` without `write`) or a path
    /// with a NUL byte.
    pub async fn open(&self, path: impl AsRef<Path>) -> io::Result<File> {
        let flags = self.flags()?;
        let path = op::cstring(path.as_ref())?;
        let fd = op::open(path, flags, self.mode as libc::mode_t).await?;
        Ok(File::from_shared(fd))
    }

    /// The `open(2)` flags, checked as std checks them.
    fn flags(&self) -> io::Result<i32> {
        let access = match (self.read, self.write, self.append) {
            (true, false, false) => libc::O_RDONLY,
            (false, true, false) => libc::O_WRONLY,
            (true, true, false) => libc::O_RDWR,
            (false, _, true) => libc::O_WRONLY | libc::O_APPEND,
            (true, _, true) => libc::O_RDWR | libc::O_APPEND,
            (false, false, false) => {
                return Err(invalid("open needs read, write or append access"))
            }
        };
        let writable = self.write || self.append;
        if (self.truncate || self.create || self.create_new) && !writable {
            return Err(invalid("create and truncate need write or append access"));
        }
        if self.truncate && self.append && !self.create_new {
            return Err(invalid("truncate and append together make no sense"));
        }
        let creation = match (self.create, self.truncate, self.create_new) {
            (false, false, false) => 0,
            (true, false, false) => libc::O_CREAT,
            (false, true, false) => libc::O_TRUNC,
            (true, true, false) => libc::O_CREAT | libc::O_TRUNC,
            (_, _, true) => libc::O_CREAT | libc::O_EXCL,
        };
        Ok(access | creation | (self.custom_flags & !libc::O_ACCMODE))
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_std_rules() {
        assert_eq!(
            OpenOptions::new().read(true).flags().unwrap(),
            libc::O_RDONLY
        );
        assert_eq!(
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .flags()
                .unwrap(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC
        );
        assert_eq!(
            OpenOptions::new().append(true).flags().unwrap(),
            libc::O_WRONLY | libc::O_APPEND
        );
        let e = OpenOptions::new().read(true).truncate(true).flags();
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let e = OpenOptions::new().flags();
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT | libc::O_WRONLY)
            .flags()
            .unwrap();
        assert_eq!(f, libc::O_RDONLY | libc::O_DIRECT);
    }
}
