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
