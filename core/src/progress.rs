//! Live counts of a running backup or restore, for progress displays.
//!
//! The worker adds to the counters as it goes (lock-free atomics); a
//! display thread reads a [`Counts`] copy whenever it redraws. Totals may
//! grow while the work runs (a backup's sources are scanned alongside) and
//! are final once `totals_known` is set.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The counters one run updates.
#[derive(Debug, Default)]
pub struct Progress {
    files: AtomicU64,
    bytes: AtomicU64,
    total_files: AtomicU64,
    total_bytes: AtomicU64,
    totals_known: AtomicBool,
    stop: AtomicBool,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Files done.
    pub files: u64,
    /// Bytes done: of files done, and read so far of files under way.
    pub bytes: u64,
    /// Files to do (so far, while the totals are not known).
    pub total_files: u64,
    /// Bytes to do (likewise).
    pub total_bytes: u64,
    /// Whether the totals are final.
    pub totals_known: bool,
}

impl Progress {
    /// A file is done (its bytes were counted with [`Progress::add_bytes`]).
    pub fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` more bytes are done.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// One more file of `size` bytes to do.
    pub fn add_total(&self, size: u64) {
        self.total_files.fetch_add(1, Ordering::Relaxed);
        self.total_bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// Sets the totals outright, and marks them final.
    pub fn set_totals(&self, files: u64, bytes: u64) {
        self.total_files.store(files, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
        self.totals_known.store(true, Ordering::Relaxed);
    }

    /// The totals are final.
    pub fn totals_done(&self) {
        self.totals_known.store(true, Ordering::Relaxed);
    }

    /// Asks helpers (the source scan) to stop: the run is over.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether [`Progress::stop`] was called.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        Counts {
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            total_files: self.total_files.load(Ordering::Relaxed),
            total_bytes: self.total_bytes.load(Ordering::Relaxed),
            totals_known: self.totals_known.load(Ordering::Relaxed),
        }
    }
}
