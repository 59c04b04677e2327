//! The timer table: deadlines and the wakers waiting for them. Pure data, no syscalls.
//!
//! A binary heap of `(deadline, sequence, key)` orders the deadlines; a slab holds each timer's
//! state. A timer that is removed or reset leaves its old heap entry behind (its sequence number
//! no longer matches), to be skipped when it surfaces; the heap is rebuilt when such entries
//! dominate it. The loop passes the earliest deadline to its one wait in `io_uring_enter`.

use slab::Slab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

/// A registered timer: its slab key, and the sequence number that tells it from a later timer
/// in the same slot (or from a table that was cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerKey {
    key: usize,
    seq: u64,
}

struct Entry {
    deadline: Instant,
    seq: u64,
    waker: Option<Waker>,
    fired: bool,
}

/// A runtime's timers.
pub(crate) struct Timers {
    /// (deadline, sequence, key). Entries whose timer was removed or reset stay until they
    /// surface.
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    entries: Slab<Entry>,
    seq: u64,
    /// Timers registered and not fired yet (the metrics' "timers pending").
    pending: usize,
}

impl Default for Timers {
    /// An empty table whose sequence numbers no other table of the process uses, so a key is
    /// unique in the process (a sleep that keeps only its key can never match another runtime's
    /// timer).
    fn default() -> Timers {
        static TABLES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Timers {
            heap: BinaryHeap::new(),
            entries: Slab::new(),
            seq: TABLES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 40,
            pending: 0,
        }
    }
}

impl Timers {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Registers a timer for `deadline` that wakes `waker`.
    pub(crate) fn insert(&mut self, deadline: Instant, waker: Waker) -> TimerKey {
        let seq = self.next_seq();
        let key = self.entries.insert(Entry {
            deadline,
            seq,
            waker: Some(waker),
            fired: false,
        });
        self.pending += 1;
        self.heap.push(Reverse((deadline, seq, key)));
        TimerKey { key, seq }
    }

    fn entry_mut(&mut self, t: TimerKey) -> Option<&mut Entry> {
        match self.entries.get_mut(t.key) {
            Some(e) if e.seq == t.seq => Some(e),
            _ => None,
        }
    }

    /// Whether the timer fired, or is gone because the table was cleared (its runtime shut
    /// down: the wait is over either way); otherwise records the waker.
    pub(crate) fn poll(&mut self, t: TimerKey, cx: &Context<'_>) -> bool {
        let Some(e) = self.entry_mut(t) else {
            return true;
        };
        if e.fired {
            return true;
        }
        crate::waker::store(&mut e.waker, cx);
        false
    }

    /// Moves a timer to `deadline`, pending again, keeping the waker it has (a task may reset a
    /// sleep and return `Pending` without polling it again). `None` if the timer is gone.
    pub(crate) fn reset(&mut self, t: TimerKey, deadline: Instant) -> Option<TimerKey> {
        let seq = self.next_seq();
        let e = self.entry_mut(t)?;
        e.deadline = deadline;
        e.seq = seq;
        let was_fired = std::mem::replace(&mut e.fired, false);
        self.pending += usize::from(was_fired);
        self.heap.push(Reverse((deadline, seq, t.key)));
        self.compact();
        Some(TimerKey { key: t.key, seq })
    }

    /// Removes a timer; nothing happens if it is gone already.
    pub(crate) fn remove(&mut self, t: TimerKey) {
        let Some(fired) = self.entry_mut(t).map(|e| e.fired) else {
            return;
        };
        if !fired {
            self.pending -= 1;
        }
        drop(self.entries.remove(t.key));
        self.compact();
    }

    /// Rebuilds the heap when stale entries (of removed or reset timers) dominate it.
    fn compact(&mut self) {
        if self.heap.len() > 64 + 2 * self.entries.len() {
            self.heap = self
                .entries
                .iter()
                .filter(|(_, e)| !e.fired)
                .map(|(k, e)| Reverse((e.deadline, e.seq, k)))
                .collect();
        }
    }

    fn is_live(&self, seq: u64, key: usize) -> bool {
        matches!(self.entries.get(key), Some(e) if e.seq == seq && !e.fired)
    }

    /// How long the loop may wait before the earliest live timer is due.
    pub(crate) fn next_timeout(&mut self, now: Instant) -> Option<Duration> {
        while let Some(Reverse((deadline, seq, key))) = self.heap.peek().copied() {
            if self.is_live(seq, key) {
                return Some(deadline.saturating_duration_since(now));
            }
            self.heap.pop();
        }
        None
    }

    /// Marks every timer whose deadline is not after `now` as fired and collects its waker.
    pub(crate) fn fire_expired(&mut self, now: Instant, wakers: &mut Vec<Waker>) {
        while let Some(Reverse((deadline, seq, key))) = self.heap.peek().copied() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if self.is_live(seq, key) {
                let e = &mut self.entries[key];
                e.fired = true;
                self.pending -= 1;
                wakers.extend(e.waker.take());
            }
        }
    }

    /// Whether any timer is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// How many timers are registered and not fired yet.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// How many timers are registered (fired or not).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets every timer (the runtime is shutting down); polls of their keys report them
    /// done from now on. Returns the wakers for dropping outside any borrow of the table.
    pub(crate) fn clear(&mut self) -> impl Sized {
        self.heap.clear();
        self.pending = 0;
        std::mem::take(&mut self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    fn fire(t: &mut Timers, now: Instant) -> usize {
        let mut w = Vec::new();
        t.fire_expired(now, &mut w);
        let n = w.len();
        w.into_iter().for_each(Waker::wake);
        n
    }

    #[test]
    fn fires_in_deadline_order_and_never_early() {
        let mut t = Timers::default();
        let now = Instant::now();
        let (_, w) = counter();
        let late = t.insert(now + Duration::from_secs(2), w.clone());
        let early = t.insert(now + Duration::from_secs(1), w.clone());
        assert_eq!(t.next_timeout(now), Some(Duration::from_secs(1)));
        assert_eq!(fire(&mut t, now), 0);
        assert_eq!(fire(&mut t, now + Duration::from_secs(1)), 1);
        let cx = Context::from_waker(&w);
        assert!(t.poll(early, &cx));
        assert!(!t.poll(late, &cx));
        assert_eq!(fire(&mut t, now + Duration::from_secs(3)), 1);
        assert!(t.poll(late, &cx));
    }

    #[test]
    fn removed_timers_do_not_fire() {
        let mut t = Timers::default();
        let now = Instant::now();
        let (count, w) = counter();
        let a = t.insert(now, w);
        t.remove(a);
        t.remove(a);
        assert_eq!(fire(&mut t, now), 0);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        assert_eq!(t.next_timeout(now), None);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn reset_keeps_the_waker_and_moves_the_deadline() {
        let mut t = Timers::default();
        let now = Instant::now();
        let (count, w) = counter();
        let a = t.insert(now + Duration::from_secs(1), w);
        assert_eq!(t.pending(), 1);
        let a = t.reset(a, now + Duration::from_secs(5)).unwrap();
        assert_eq!(t.pending(), 1);
        // The old deadline passes: nothing fires.
        assert_eq!(fire(&mut t, now + Duration::from_secs(2)), 0);
        assert_eq!(t.next_timeout(now), Some(Duration::from_secs(5)));
        // The new one wakes the waker registered before the reset.
        assert_eq!(fire(&mut t, now + Duration::from_secs(5)), 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(t.pending(), 0, "fired");
        // A fired timer can be reset again and fires again.
        let (_, w2) = counter();
        let cx = Context::from_waker(&w2);
        assert!(t.poll(a, &cx));
        let a = t.reset(a, now + Duration::from_secs(6)).unwrap();
        assert_eq!(t.pending(), 1, "pending again");
        assert!(!t.poll(a, &cx));
        assert_eq!(fire(&mut t, now + Duration::from_secs(6)), 1);
        t.remove(a);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn a_cleared_table_reports_its_timers_done() {
        let mut t = Timers::default();
        let (_, w) = counter();
        let a = t.insert(Instant::now() + Duration::from_secs(60), w.clone());
        drop(t.clear());
        assert!(t.poll(a, &Context::from_waker(&w)));
        assert_eq!(t.reset(a, Instant::now()), None);
        t.remove(a);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn churn_keeps_the_heap_small() {
        let mut t = Timers::default();
        let now = Instant::now();
        let (_, w) = counter();
        for i in 0..10_000u64 {
            let k = t.insert(now + Duration::from_millis(i), w.clone());
            t.remove(k);
        }
        assert!(t.heap.len() <= 64 + 2);
        assert_eq!(t.len(), 0);
    }
}
