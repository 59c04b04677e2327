//! A one-value channel from a pool thread to a task: a mutex over the value or the receiver's
//! waker. The sender wakes the receiver's task from its own thread, which reaches the task's
//! runtime through the cross-thread wake path (`runtime/remote.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// Makes a connected pair.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(State::Waiting(None)));
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// What the channel holds.
enum State<T> {
    /// Nothing sent yet, both ends alive; the waker of the receiver's last poll, if any.
    Waiting(Option<Waker>),
    /// Sent, not yet received.
    Sent(T),
    /// Over: the value was received, the receiver is gone, or the sender went without sending.
    Closed,
}

type Shared<T> = Arc<Mutex<State<T>>>;

fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, State<T>> {
    // Nothing panics while holding the lock (wakes and drops happen after it is released).
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sending end: sends once.
pub(crate) struct Sender<T> {
    shared: Shared<T>,
}

impl<T> Sender<T> {
    /// Sends `value` and wakes the receiver. Gives the value back if the receiver is gone.
    pub(crate) fn send(self, value: T) -> Result<(), T> {
        let mut state = lock(&self.shared);
        let waker = match &mut *state {
            State::Waiting(waker) => waker.take(),
            State::Closed => return Err(value),
            State::Sent(_) => unreachable!("a oneshot sender sends once"),
        };
        *state = State::Sent(value);
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        if let State::Waiting(waker) = &mut *state {
            let waker = waker.take();
            *state = State::Closed;
            drop(state);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// The sender went without sending.
#[derive(Debug)]
pub(crate) struct Closed;

/// The receiving end: a future of the value.
pub(crate) struct Receiver<T> {
    shared: Shared<T>,
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, Closed>> {
        let mut state = lock(&self.shared);
        match &mut *state {
            State::Waiting(waker) => {
                crate::waker::store(waker, cx);
                Poll::Pending
            }
            State::Sent(_) => match std::mem::replace(&mut *state, State::Closed) {
                State::Sent(value) => Poll::Ready(Ok(value)),
                _ => unreachable!("the state was Sent under the lock"),
            },
            State::Closed => Poll::Ready(Err(Closed)),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // A value sent but never received, or the waker, is dropped after the lock is released.
        let old = std::mem::replace(&mut *lock(&self.shared), State::Closed);
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll<T>(rx: &mut Receiver<T>, count: &Arc<Count>) -> Poll<Result<T, Closed>> {
        let waker = Waker::from(count.clone());
        Pin::new(rx).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn value_sent_before_and_after_the_first_poll() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let (tx, mut rx) = channel();
        tx.send(1).unwrap();
        assert!(matches!(poll(&mut rx, &count), Poll::Ready(Ok(1))));

        let (tx, mut rx) = channel();
        assert!(poll(&mut rx, &count).is_pending());
        let sender = std::thread::spawn(move || tx.send(2).unwrap());
        sender.join().unwrap();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the send woke the receiver"
        );
        assert!(matches!(poll(&mut rx, &count), Poll::Ready(Ok(2))));
    }

    #[test]
    fn ends_going_away() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let (tx, mut rx) = channel::<u8>();
        assert!(poll(&mut rx, &count).is_pending());
        drop(tx);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "a dropped sender wakes the receiver"
        );
        assert!(matches!(poll(&mut rx, &count), Poll::Ready(Err(Closed))));

        let (tx, rx) = channel();
        drop(rx);
        assert_eq!(
            tx.send(3),
            Err(3),
            "the value comes back when nobody receives"
        );

        let value = Arc::new(());
        let (tx, rx) = channel();
        tx.send(value.clone()).unwrap();
        drop(rx);
        assert_eq!(
            Arc::strong_count(&value),
            1,
            "an unreceived value is dropped with the receiver"
        );
    }
}
