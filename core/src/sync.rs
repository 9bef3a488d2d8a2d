//! Small helpers for shared state across threads.

use crate::error::{Error, Result};
use std::sync::{Mutex, MutexGuard};

/// Runs `f` on tokio's blocking pool (file I/O, decryption); a task that
/// panicked is an internal error naming `what` it was doing.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("{what} failed: {e}")))?
}

/// Locks a mutex, taking the data even if another thread panicked while
/// holding it: every user here keeps its data consistent between statements,
/// and a panicked thread fails its operation anyway.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
