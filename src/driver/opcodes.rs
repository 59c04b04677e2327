//! The kernel's opcode numbers by name (`IORING_OP_*`, Linux 6.18), for metrics and the probe.

/// `IORING_OP_<name>` for each opcode number, as `include/uapi/linux/io_uring.h` orders them.
const NAMES: [&str; 63] = [
    "NOP",              // 0
    "READV",            // 1
    "WRITEV",           // 2
    "FSYNC",            // 3
    "READ_FIXED",       // 4
    "WRITE_FIXED",      // 5
    "POLL_ADD",         // 6
    "POLL_REMOVE",      // 7
    "SYNC_FILE_RANGE",  // 8
    "SENDMSG",          // 9
    "RECVMSG",          // 10
    "TIMEOUT",          // 11
    "TIMEOUT_REMOVE",   // 12
    "ACCEPT",           // 13
    "ASYNC_CANCEL",     // 14
    "LINK_TIMEOUT",     // 15
    "CONNECT",          // 16
    "FALLOCATE",        // 17
    "OPENAT",           // 18
    "CLOSE",            // 19
    "FILES_UPDATE",     // 20
    "STATX",            // 21
    "READ",             // 22
    "WRITE",            // 23
    "FADVISE",          // 24
    "MADVISE",          // 25
    "SEND",             // 26
    "RECV",             // 27
    "OPENAT2",          // 28
    "EPOLL_CTL",        // 29
    "SPLICE",           // 30
    "PROVIDE_BUFFERS",  // 31
    "REMOVE_BUFFERS",   // 32
    "TEE",              // 33
    "SHUTDOWN",         // 34
    "RENAMEAT",         // 35
    "UNLINKAT",         // 36
    "MKDIRAT",          // 37
    "SYMLINKAT",        // 38
    "LINKAT",           // 39
    "MSG_RING",         // 40
    "FSETXATTR",        // 41
    "SETXATTR",         // 42
    "FGETXATTR",        // 43
    "GETXATTR",         // 44
    "SOCKET",           // 45
    "URING_CMD",        // 46
    "SEND_ZC",          // 47
    "SENDMSG_ZC",       // 48
    "READ_MULTISHOT",   // 49
    "WAITID",           // 50
    "FUTEX_WAIT",       // 51
    "FUTEX_WAKE",       // 52
    "FUTEX_WAITV",      // 53
    "FIXED_FD_INSTALL", // 54
    "FTRUNCATE",        // 55
    "BIND",             // 56
    "LISTEN",           // 57
    "RECV_ZC",          // 58
    "EPOLL_WAIT",       // 59
    "READV_FIXED",      // 60
    "WRITEV_FIXED",     // 61
    "PIPE",             // 62
];

/// The name of opcode `code` without its `IORING_OP_` prefix (`"READ"`), or `None` for a number
/// newer than this table.
pub(crate) fn name(code: u8) -> Option<&'static str> {
    NAMES.get(code as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::name;
    use io_uring::opcode;

    #[test]
    fn names_match_the_io_uring_crate() {
        assert_eq!(name(opcode::Nop::CODE), Some("NOP"));
        assert_eq!(name(opcode::Read::CODE), Some("READ"));
        assert_eq!(name(opcode::Write::CODE), Some("WRITE"));
        assert_eq!(name(opcode::Accept::CODE), Some("ACCEPT"));
        assert_eq!(name(opcode::AsyncCancel::CODE), Some("ASYNC_CANCEL"));
        assert_eq!(name(opcode::Statx::CODE), Some("STATX"));
        assert_eq!(name(opcode::RecvMsg::CODE), Some("RECVMSG"));
        assert_eq!(name(opcode::SendZc::CODE), Some("SEND_ZC"));
        assert_eq!(name(opcode::Ftruncate::CODE), Some("FTRUNCATE"));
        assert_eq!(name(opcode::Pipe::CODE), Some("PIPE"));
        assert_eq!(name(200), None);
    }
}
