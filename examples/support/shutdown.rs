//! Graceful shutdown for the servers in `examples/` (`echo.rs`, `proxy.rs`): on SIGINT or
//! SIGTERM stop accepting, let the open connections finish for a grace period, then return so
//! the program exits 0.
//!
//! Each runtime (each worker of a `uring::Pool`) stops on its own: every worker holds its own
//! [`StopSignals`], and every listener of a signal is woken by it, on every thread. The
//! listeners are all made on the main thread before the server prints its address, so a signal
//! sent by someone who read that address reaches every worker.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Mutex;
use std::task::{Poll, Waker};
use std::time::Duration;
use uring::net::TcpListener;
use uring::signal::{signal, Signal, SIGINT, SIGTERM};

/// The grace period when `--grace` is not given.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Parses `--grace`'s value: seconds, maybe fractional (`0.5`), not negative.
pub fn parse_grace(v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("bad --grace {v:?}: a number of seconds"))
}

/// Listeners for SIGINT and SIGTERM (`Send`: made on the main thread, used on a worker).
pub struct StopSignals {
    int: Signal,
    term: Signal,
}

impl StopSignals {
    /// Starts listening: from now on SIGINT and SIGTERM no longer end the process, they reach
    /// [`StopSignals::wait`].
    pub fn new() -> io::Result<StopSignals> {
        Ok(StopSignals {
            int: signal(SIGINT)?,
            term: signal(SIGTERM)?,
        })
    }

    /// Waits for SIGINT or SIGTERM and says which came. An error from the wait (none is
    /// expected) also stops the server: without it the signals would be ignored.
    pub async fn wait(&mut self) -> &'static str {
        let (mut int, mut term) = (pin!(self.int.recv()), pin!(self.term.recv()));
        let (name, res) = std::future::poll_fn(|cx| {
            if let Poll::Ready(res) = int.as_mut().poll(cx) {
                return Poll::Ready(("SIGINT", res));
            }
            term.as_mut().poll(cx).map(|res| ("SIGTERM", res))
        })
        .await;
        if let Err(e) = res {
            eprintln!("waiting for {name} failed: {e}; stopping");
        }
        name
    }
}

/// A duplicate of a listener's fd, to stop the listening socket at the moment of the stop.
///
/// Dropping the accept loop drops the listener, but the fd closes only once the accepts it had
/// in flight on the ring have answered their cancels, a loop turn or so later; until then the
/// kernel would still complete handshakes into the listen backlog. `shutdown(SHUT_RD)` on a
/// listening socket stops it at once: connections waiting in the backlog are reset, new ones
/// refused, and (with `SO_REUSEPORT`) the socket leaves its port's group.
pub struct ListenerControl(socket2::Socket);

impl ListenerControl {
    /// Duplicates `listener`'s fd.
    pub fn new(listener: &impl AsFd) -> io::Result<ListenerControl> {
        Ok(ListenerControl(
            socket2::SockRef::from(listener).try_clone()?,
        ))
    }

    fn stop(self) {
        let _ = self.0.shutdown(Shutdown::Read);
    }
}

#[derive(Default)]
struct Count {
    open: Cell<usize>,
    idle: Cell<Option<Waker>>,
}

/// The connections open on this runtime: each spawned with [`Connections::spawn`], counted
/// until its task ends (or is dropped when the runtime shuts down).
#[derive(Clone, Default)]
pub struct Connections(Rc<Count>);

/// Held by a connection's task; its drop counts the connection as closed.
struct Open(Rc<Count>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
        if self.0.open.get() == 0 {
            if let Some(w) = self.0.idle.take() {
                w.wake();
            }
        }
    }
}

impl Connections {
    /// Spawns a connection's task on the current runtime, counted while it runs.
    pub fn spawn(&self, connection: impl Future<Output = ()> + 'static) {
        self.0.open.set(self.0.open.get() + 1);
        let open = Open(self.0.clone());
        uring::spawn(async move {
            let _open = open;
            connection.await
        });
    }

    /// How many connections are open.
    pub fn open(&self) -> usize {
        self.0.open.get()
    }

    /// Waits until no connection is open.
    pub async fn idle(&self) {
        std::future::poll_fn(|cx| {
            if self.0.open.get() == 0 {
                Poll::Ready(())
            } else {
                self.0.idle.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// Runs `accept_loop` (which owns the listener and spawns connections through `connections`)
/// until SIGINT or SIGTERM; then drops it and stops the listener (`control`: new connections are
/// refused from then on), and waits up to `grace` for the open connections to finish. A second
/// signal ends the wait at once. Returns when the wait is over; connections still open are
/// dropped with the runtime.
pub async fn serve_until_stopped(
    name: &str,
    control: ListenerControl,
    accept_loop: impl Future<Output = ()>,
    mut stop: StopSignals,
    connections: Connections,
    grace: Duration,
) {
    let signal = {
        let mut accept_loop = pin!(accept_loop);
        let mut stopped = pin!(stop.wait());
        let signal = std::future::poll_fn(|cx| {
            if accept_loop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            stopped.as_mut().poll(cx).map(Some)
        })
        .await;
        match signal {
            Some(signal) => signal,
            // The accept loop only ends when its listener does: nothing left to serve.
            None => return,
        }
    };
    // The accept loop is gone and the listening socket stopped: no more connections.
    control.stop();
    let open = connections.open();
    eprintln!("{name}: {signal}: stopped accepting; {open} connection(s) open, grace {grace:?}");
    if open == 0 {
        return;
    }
    let mut idle = pin!(connections.idle());
    let mut grace_over = pin!(uring::time::sleep(grace));
    let mut again = pin!(stop.wait());
    let why = std::future::poll_fn(|cx| {
        if idle.as_mut().poll(cx).is_ready() {
            return Poll::Ready("every connection finished");
        }
        if grace_over.as_mut().poll(cx).is_ready() {
            return Poll::Ready("the grace period is over");
        }
        again.as_mut().poll(cx).map(|_| "a second signal came")
    })
    .await;
    let left = connections.open();
    eprintln!("{name}: {why}; exiting, dropping {left} connection(s)");
}

/// Serves on `addr` until SIGINT or SIGTERM and the grace period (see [`serve_until_stopped`]),
/// on this thread's own runtime (`threads == 1`) or on a `uring::Pool` of `threads` workers
/// (0: one per CPU), each with its own `SO_REUSEPORT` listener on the address, so the kernel
/// spreads connections. `accept_loop` makes a runtime's accept loop from its listener. Prints
/// the bound address first (the first listener fixes the port when `addr` says 0); setup
/// failures end the process with a message naming `name`.
pub fn serve<F, Fut>(
    name: &'static str,
    addr: SocketAddr,
    threads: usize,
    grace: Duration,
    accept_loop: F,
) where
    F: Fn(TcpListener, Connections) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let listen = move |addr: SocketAddr, reuseport: bool| {
        let l = if reuseport {
            TcpListener::bind_reuseport(addr)
        } else {
            TcpListener::bind(addr)
        };
        l.unwrap_or_else(|e| die(name, format!("cannot listen on {addr}: {e}")))
    };
    let stop_signals = move || {
        StopSignals::new()
            .unwrap_or_else(|e| die(name, format!("cannot listen for SIGINT and SIGTERM: {e}")))
    };
    let run = move |listener: TcpListener, stop: StopSignals| {
        let control = ListenerControl::new(&listener)
            .unwrap_or_else(|e| die(name, format!("cannot duplicate the listener's fd: {e}")));
        let connections = Connections::default();
        let accept = accept_loop(listener, connections.clone());
        serve_until_stopped(name, control, accept, stop, connections, grace)
    };
    if threads == 1 {
        let listener = listen(addr, false);
        let runtime = uring::Runtime::new().unwrap_or_else(|e| die(name, e));
        let stop = stop_signals();
        println!("{}", listener.local_addr().expect("bound address"));
        runtime.block_on(run(listener, stop));
        return;
    }
    let first = listen(addr, true);
    let addr = first.local_addr().expect("bound address");
    // The first worker takes this listener (as a std one: it crosses to its thread).
    let first = Mutex::new(Some(first.into_std().expect("a listener without ops")));
    let pool = uring::Pool::builder()
        .threads(threads)
        .build()
        .unwrap_or_else(|e| die(name, e));
    // One pair of signal listeners per worker, all made before the address is printed.
    let stops = Mutex::new(
        (0..pool.threads())
            .map(|_| stop_signals())
            .collect::<Vec<_>>(),
    );
    println!("{addr}");
    pool.run_each(move |_worker| {
        let listener = match first.lock().unwrap().take() {
            Some(l) => TcpListener::from_std(l)
                .unwrap_or_else(|e| die(name, format!("cannot listen on {addr}: {e}"))),
            None => listen(addr, true),
        };
        let stop = stops.lock().unwrap().pop().expect("one per worker");
        run(listener, stop)
    });
}

/// Ends the process after a setup failure, saying which program and what.
fn die(name: &str, what: impl std::fmt::Display) -> ! {
    eprintln!("{name}: {what}");
    std::process::exit(1);
}
