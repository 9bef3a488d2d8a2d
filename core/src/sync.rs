//! Small helpers for shared state across threads.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, taking the data even if another thread panicked while
/// holding it: every user here keeps its data consistent between statements,
/// and a panicked thread fails its operation anyway.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
