//! The thread-local context: which runtime is running on this thread.

use crate::runtime::state::RuntimeState;
use std::cell::Cell;
use std::rc::Rc;

thread_local! {
    /// The runtime running on this thread. An `Enter` guard holds a strong count of it for as
    /// long as it is set, so the pointer is valid whenever it is not null. A plain `Cell` of a
    /// pointer needs no destructor, which makes this the cheapest kind of thread-local to read:
    /// every wake and every op submission reads it.
    static CURRENT: Cell<*const RuntimeState> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` with the state of the runtime running on this thread, if there is one.
#[inline]
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&RuntimeState>) -> R) -> R {
    let ptr = CURRENT.with(|c| c.get());
    // SAFETY: INV-context: a non-null CURRENT points to a RuntimeState kept alive by the `Enter`
    // guard that set it, which outlives this call (guards are dropped in reverse order of
    // creation on this thread).
    f(unsafe { ptr.as_ref() })
}

/// The state of the runtime running on this thread, counted.
///
/// # Panics
///
/// Outside a runtime.
#[inline]
pub(crate) fn current() -> Rc<RuntimeState> {
    try_current().unwrap_or_else(|| {
        panic!(
            "this must be called from within a uring runtime \
             (inside uring::run or Runtime::block_on)"
        )
    })
}

/// The state of the runtime running on this thread, counted, if there is one.
#[inline]
pub(crate) fn try_current() -> Option<Rc<RuntimeState>> {
    let ptr = CURRENT.with(|c| c.get());
    if ptr.is_null() {
        return None;
    }
    // SAFETY: INV-context: a non-null CURRENT came from `Rc::as_ptr` of a RuntimeState whose
    // `Enter` guard holds a strong count; we add one for the Rc we return.
    unsafe {
        Rc::increment_strong_count(ptr);
        Some(Rc::from_raw(ptr))
    }
}

/// Sets the thread's current runtime for the guard's lifetime, holding a strong count of it.
pub(crate) struct Enter {
    mine: Rc<RuntimeState>,
    previous: *const RuntimeState,
}

impl Enter {
    /// Makes `state` current. With `nested_ok` false, panics if a runtime is current already
    /// (`block_on` inside `block_on` would deadlock the outer loop).
    pub(crate) fn new(state: &Rc<RuntimeState>, nested_ok: bool) -> Enter {
        let previous = CURRENT.with(|c| c.get());
        if !previous.is_null() && !nested_ok {
            panic!(
                "cannot start a uring runtime from within a runtime: \
                 block_on was called inside uring::run or Runtime::block_on"
            );
        }
        CURRENT.with(|c| c.set(Rc::as_ptr(state)));
        Enter {
            mine: state.clone(),
            previous,
        }
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        // The previous runtime's guard is further up this thread's stack, still alive.
        CURRENT.with(|c| c.set(self.previous));
        let _ = &self.mine;
    }
}
