//! The one way a future here records who to wake.

use std::task::{Context, Waker};

/// Keeps `cx`'s waker in `slot`, cloning it only when it would wake a different task than the
/// one stored (a clone is an atomic increment; a task polled again keeps its waker).
pub(crate) fn store(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Adds `cx`'s waker to `wakers` unless one there would wake the same task.
pub(crate) fn store_in(wakers: &mut Vec<Waker>, cx: &Context<'_>) {
    if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
        wakers.push(cx.waker().clone());
    }
}
