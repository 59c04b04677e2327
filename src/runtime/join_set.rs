//! The spawning half of [`JoinSet`]: the task core holds the set, the runtime starts its tasks.

use crate::runtime::spawn;
use crate::task::{AbortHandle, JoinSet};
use std::future::Future;

impl<T: 'static> JoinSet<T> {
    /// Spawns `task` on the current thread's runtime, as [`uring::spawn`](crate::spawn) does
    /// (the future need not be `Send`), and adds it to the set. Returns an [`AbortHandle`] to
    /// cancel this one task; the output comes out of [`join_next`](JoinSet::join_next).
    ///
    /// # Panics
    ///
    /// Outside a runtime, as `uring::spawn` does.
    ///
    /// ```
    /// uring::run(async {
    ///     let mut set = uring::task::JoinSet::new();
    ///     let slow = set.spawn(std::future::pending::<u8>());
    ///     set.spawn(async { 1u8 });
    ///     assert_eq!(set.join_next().await.unwrap().unwrap(), 1);
    ///     slow.abort();
    ///     assert!(set.join_next().await.unwrap().unwrap_err().is_cancelled());
    ///     assert!(set.join_next().await.is_none());
    /// });
    /// ```
    pub fn spawn<F>(&mut self, task: F) -> AbortHandle
    where
        F: Future<Output = T> + 'static,
    {
        self.insert(spawn(task))
    }
}
