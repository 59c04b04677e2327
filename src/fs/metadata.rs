//! `Metadata`: what `statx` says about a file.

use std::fmt;
use std::fs::Permissions;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

/// Information about a file, from an `IORING_OP_STATX`: size, type, permissions, times, owner.
///
/// Made by [`File::metadata`](crate::fs::File::metadata), [`metadata`](crate::fs::metadata) and
/// [`symlink_metadata`](crate::fs::symlink_metadata).
#[derive(Clone)]
pub struct Metadata {
    stx: Box<libc::statx>,
}

/// The type of a file: regular file, directory, symlink or something else (device, fifo, socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileType {
    mode: u32,
}

impl FileType {
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// A symbolic link (only seen by [`symlink_metadata`](crate::fs::symlink_metadata)).
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
}

impl Metadata {
    pub(crate) fn from_statx(stx: Box<libc::statx>) -> Metadata {
        Metadata { stx }
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.stx.stx_size
    }

    /// Whether the file is empty (size 0).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's type.
    pub fn file_type(&self) -> FileType {
        FileType { mode: self.mode() }
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.file_type().is_file()
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.file_type().is_dir()
    }

    /// A symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.file_type().is_symlink()
    }

    /// The full `st_mode`: type bits and permission bits.
    pub fn mode(&self) -> u32 {
        self.stx.stx_mode as u32
    }

    /// The permission bits, as std's `Permissions` (`PermissionsExt::mode` gives them back).
    pub fn permissions(&self) -> Permissions {
        Permissions::from_mode(self.mode() & 0o7777)
    }

    /// Last modification time.
    ///
    /// # Errors
    ///
    /// `Unsupported` if the filesystem did not report it.
    pub fn modified(&self) -> io::Result<SystemTime> {
        self.time(libc::STATX_MTIME, self.stx.stx_mtime, "modification")
    }

    /// Last access time.
    ///
    /// # Errors
    ///
    /// `Unsupported` if the filesystem did not report it.
    pub fn accessed(&self) -> io::Result<SystemTime> {
        self.time(libc::STATX_ATIME, self.stx.stx_atime, "access")
    }

    /// Creation (birth) time.
    ///
    /// # Errors
    ///
    /// `Unsupported` where the filesystem does not record it (for example some tmpfs and older
    /// filesystems).
    pub fn created(&self) -> io::Result<SystemTime> {
        self.time(libc::STATX_BTIME, self.stx.stx_btime, "creation")
    }

    /// Owner's user id.
    pub fn uid(&self) -> u32 {
        self.stx.stx_uid
    }

    /// Owner's group id.
    pub fn gid(&self) -> u32 {
        self.stx.stx_gid
    }

    /// Inode number.
    pub fn ino(&self) -> u64 {
        self.stx.stx_ino
    }

    /// Number of hard links.
    pub fn nlink(&self) -> u64 {
        self.stx.stx_nlink as u64
    }

    /// The preferred I/O block size.
    pub fn blksize(&self) -> u64 {
        self.stx.stx_blksize as u64
    }

    /// Allocated 512-byte blocks.
    pub fn blocks(&self) -> u64 {
        self.stx.stx_blocks
    }

    /// For `O_DIRECT`: the alignment the kernel requires of buffer addresses and of file offsets
    /// and lengths, as `(memory, offset)`, where the filesystem reports it (Linux 6.1+,
    /// `STATX_DIOALIGN`). `None` if unknown; `Some((0, 0))` if the file does not support
    /// `O_DIRECT`. Size an [`AlignedBuf`](crate::fs::AlignedBuf) with it.
    pub fn dio_alignment(&self) -> Option<(u32, u32)> {
        if self.stx.stx_mask & libc::STATX_DIOALIGN == 0 {
            return None;
        }
        Some((self.stx.stx_dio_mem_align, self.stx.stx_dio_offset_align))
    }

    fn time(&self, bit: u32, ts: libc::statx_timestamp, what: &str) -> io::Result<SystemTime> {
        if self.stx.stx_mask & bit == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the filesystem does not report the {what} time"),
            ));
        }
        let nanos = Duration::from_nanos(ts.tv_nsec as u64);
        let t = if ts.tv_sec >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(ts.tv_sec as u64) + nanos
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(ts.tv_sec.unsigned_abs()) + nanos
        };
        Ok(t)
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("file_type", &self.file_type())
            .field("len", &self.len())
            .field("mode", &format_args!("{:o}", self.mode()))
            .field("modified", &self.modified().ok())
            .finish_non_exhaustive()
    }
}
