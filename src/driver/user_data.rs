//! The `user_data` of an SQE: which slot an op lives in, and which op of that slot it is.
//!
//! ```text
//!  63                32 31                 0
//! +--------------------+--------------------+
//! |     generation     |      slot key      |
//! +--------------------+--------------------+
//! ```
//!
//! A slot is reused once its op is done, so the generation tells a stale completion (or a cancel
//! aimed at an op that has finished) from one for the op that holds the slot now. The driver's
//! own SQEs (the wake read, cancels) use reserved values at the top of the range, which no op
//! gets: generations are handed out so that the pair never reaches them.

/// An op's `user_data`: slot key in the low 32 bits, generation in the high 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserData(u64);

impl UserData {
    /// The read on the runtime's eventfd that wakes a loop blocked in `io_uring_enter`.
    pub(crate) const WAKE: UserData = UserData(u64::MAX);
    /// An `IORING_OP_ASYNC_CANCEL` the driver submitted for an op.
    pub(crate) const CANCEL: UserData = UserData(u64::MAX - 1);
    /// The largest generation an op may have: the reserved values above have generation
    /// `u32::MAX`.
    pub(crate) const MAX_GENERATION: u32 = u32::MAX - 1;

    /// The `user_data` of the op in slot `key` with `generation`.
    ///
    /// # Panics
    ///
    /// If `key` does not fit 32 bits (four billion ops in flight at once) or the generation is
    /// one of the reserved ones.
    pub(crate) fn new(key: usize, generation: u32) -> UserData {
        let key = u32::try_from(key).expect("more than 2^32 ops in flight");
        assert!(generation <= Self::MAX_GENERATION, "reserved generation");
        UserData(u64::from(generation) << 32 | u64::from(key))
    }

    /// The value as the kernel sees it.
    pub(crate) fn to_raw(self) -> u64 {
        self.0
    }

    /// The value a CQE carries.
    pub(crate) fn from_raw(raw: u64) -> UserData {
        UserData(raw)
    }

    /// The slot key.
    pub(crate) fn key(self) -> usize {
        self.0 as u32 as usize
    }

    /// The generation of the op in the slot.
    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_key_and_generation() {
        let u = UserData::new(12345, 678);
        assert_eq!((u.key(), u.generation()), (12345, 678));
        assert_eq!(UserData::from_raw(u.to_raw()), u);
    }

    #[test]
    fn ops_never_collide_with_reserved_values() {
        let highest = UserData::new(u32::MAX as usize, UserData::MAX_GENERATION);
        assert_ne!(highest, UserData::WAKE);
        assert_ne!(highest, UserData::CANCEL);
        assert!(highest.to_raw() < UserData::CANCEL.to_raw());
    }

    #[test]
    #[should_panic]
    fn reserved_generation_is_refused() {
        let _ = UserData::new(0, u32::MAX);
    }
}
