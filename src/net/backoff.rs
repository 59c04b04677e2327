//! Pacing an accept loop through errors: [`AcceptBackoff`].

use std::io;
use std::time::Duration;

/// What an accept loop should do after an accept error. Made by [`AcceptBackoff::classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptErrorKind {
    /// The error concerned one connection (it was aborted or refused by a firewall rule before
    /// it was taken, `ECONNABORTED`, `EPROTO`, `EPERM`...): accept the next one at once.
    Connection,
    /// The process or the system is out of something (`EMFILE`, `ENFILE`, `ENOBUFS`,
    /// `ENOMEM`), or the error is unknown: retrying at once would fail again and spin, so pause
    /// first. The connection waits in the listen backlog meanwhile.
    Resource,
    /// The listener itself is broken or gone (`EBADF`, `ENOTSOCK`, `EINVAL` for a socket that
    /// is not listening, `EOPNOTSUPP`, `ECANCELED` when the runtime shuts down): stop.
    Fatal,
}

/// Paces an accept loop: after a resource error (out of fds or memory) it sleeps before the
/// next accept, doubling the pause from `min` up to `max`, and resets after a success. So a
/// server out of fds neither spins on `EMFILE` nor gives up, and it recovers by itself once fds
/// are freed. [`Default`] pauses 10 ms, doubling up to 100 ms.
///
/// ```
/// use uring::net::{AcceptBackoff, TcpListener};
///
/// uring::run(async {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     uring::spawn(async move { uring::net::TcpStream::connect(addr).await });
///     let mut incoming = listener.incoming();
///     let mut backoff = AcceptBackoff::default();
///     # let mut served = 0;
///     loop {
///         match incoming.next().await {
///             Some(Ok(stream)) => {
///                 backoff.on_success();
///                 uring::spawn(async move { drop(stream) });
///                 # served += 1; if served == 1 { break; }
///             }
///             Some(Err(e)) => {
///                 eprintln!("accept: {e}");
///                 // Sleeps after EMFILE and the like; gives the error back if it is fatal.
///                 backoff.on_error(e).await.unwrap();
///             }
///             None => break,
///         }
///     }
/// });
/// ```
#[derive(Debug, Clone)]
pub struct AcceptBackoff {
    min: Duration,
    max: Duration,
    next: Duration,
    pauses: u64,
    /// Per-connection errors in a row: a "per-connection" error that repeats (an LSM denying
    /// every accept before it takes the connection) is treated as a resource error, so the loop
    /// pauses instead of spinning.
    connection_errors: u32,
}

/// Per-connection errors in a row after which the backoff pauses as for a resource error.
const CONNECTION_ERRORS_BEFORE_PAUSE: u32 = 64;

impl Default for AcceptBackoff {
    fn default() -> AcceptBackoff {
        AcceptBackoff::new(Duration::from_millis(10), Duration::from_millis(100))
    }
}

impl AcceptBackoff {
    /// Pauses `min` after the first resource error, doubling up to `max` while they go on.
    /// A zero `min` is taken as 1 ms, so the loop never spins.
    pub fn new(min: Duration, max: Duration) -> AcceptBackoff {
        let min = min.max(Duration::from_millis(1));
        AcceptBackoff {
            min,
            max: max.max(min),
            next: min,
            pauses: 0,
            connection_errors: 0,
        }
    }

    /// How an accept loop should treat `e`.
    pub fn classify(e: &io::Error) -> AcceptErrorKind {
        match e.raw_os_error() {
            Some(
                libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::EINTR
                | libc::ENETDOWN
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::EHOSTUNREACH
                | libc::ENONET
                | libc::ENOPROTOOPT
                | libc::ETIMEDOUT,
            ) => AcceptErrorKind::Connection,
            Some(
                libc::EBADF
                | libc::ENOTSOCK
                | libc::EINVAL
                | libc::EOPNOTSUPP
                | libc::EFAULT
                | libc::ECANCELED,
            ) => AcceptErrorKind::Fatal,
            _ => AcceptErrorKind::Resource,
        }
    }

    /// Handles an accept error: returns at once for a per-connection error, sleeps the current
    /// pause (then doubles it) for a resource error.
    ///
    /// # Errors
    ///
    /// Gives `e` back if it is fatal for the listener ([`AcceptErrorKind::Fatal`]).
    pub async fn on_error(&mut self, e: io::Error) -> io::Result<()> {
        let mut kind = AcceptBackoff::classify(&e);
        if kind == AcceptErrorKind::Connection {
            self.connection_errors = self.connection_errors.saturating_add(1);
            if self.connection_errors >= CONNECTION_ERRORS_BEFORE_PAUSE {
                kind = AcceptErrorKind::Resource;
            }
        }
        match kind {
            AcceptErrorKind::Connection => Ok(()),
            AcceptErrorKind::Fatal => Err(e),
            AcceptErrorKind::Resource => {
                let pause = self.next;
                self.next = self.next.saturating_mul(2).min(self.max);
                self.pauses += 1;
                crate::time::sleep(pause).await;
                Ok(())
            }
        }
    }

    /// Records a successful accept: the next resource error pauses `min` again.
    pub fn on_success(&mut self) {
        self.next = self.min;
        self.connection_errors = 0;
    }

    /// The pause the next resource error will cause.
    pub fn next_pause(&self) -> Duration {
        self.next
    }

    /// How many pauses were taken so far.
    pub fn pauses(&self) -> u64 {
        self.pauses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errors() {
        let k = |errno| AcceptBackoff::classify(&io::Error::from_raw_os_error(errno));
        assert_eq!(k(libc::EMFILE), AcceptErrorKind::Resource);
        assert_eq!(k(libc::ENFILE), AcceptErrorKind::Resource);
        assert_eq!(k(libc::ENOBUFS), AcceptErrorKind::Resource);
        assert_eq!(k(libc::ENOMEM), AcceptErrorKind::Resource);
        assert_eq!(k(libc::ECONNABORTED), AcceptErrorKind::Connection);
        assert_eq!(k(libc::EBADF), AcceptErrorKind::Fatal);
        assert_eq!(k(libc::EINVAL), AcceptErrorKind::Fatal);
        assert_eq!(
            AcceptBackoff::classify(&io::Error::other("unknown")),
            AcceptErrorKind::Resource,
            "an unknown error must pause, not spin"
        );
    }

    #[test]
    fn pauses_double_up_to_max_and_reset() {
        crate::run(async {
            let mut b = AcceptBackoff::new(Duration::from_millis(1), Duration::from_millis(4));
            let started = std::time::Instant::now();
            for _ in 0..4 {
                b.on_error(io::Error::from_raw_os_error(libc::EMFILE))
                    .await
                    .unwrap();
            }
            // 1 + 2 + 4 + 4 ms at least.
            assert!(started.elapsed() >= Duration::from_millis(11));
            assert_eq!(b.pauses(), 4);
            assert_eq!(b.next_pause(), Duration::from_millis(4));
            b.on_success();
            assert_eq!(b.next_pause(), Duration::from_millis(1));
            let e = b
                .on_error(io::Error::from_raw_os_error(libc::EBADF))
                .await
                .unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EBADF));
            assert_eq!(b.pauses(), 4, "a fatal error takes no pause");
        });
    }
}
