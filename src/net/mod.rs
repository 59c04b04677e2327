//! Networking over io_uring: TCP, UDP and Unix sockets.
