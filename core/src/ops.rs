//! The operations an admin runs on a repository, one module each, all on top
//! of [`crate::repository::Repository`] (and, for `status` and `copy`, the
//! bare backends):
//!
//! - [`restore`]: a snapshot (or a path in it) into a local directory;
//! - [`export`]: a snapshot as one zip or tar archive, streamed;
//! - [`diff`]: what changed between two snapshots;
//! - [`find`]: entries by name or path across snapshots, as runs;
//! - [`ls`]: a snapshot's entries, one directory or everything below it;
//! - [`check`]: every snapshot's trees and chunks present and well-formed;
//! - [`forget`]: drop the snapshots a retention policy does not keep
//!   ([`forget::retention`] holds the rules);
//! - [`prune`]: delete the packs no snapshot references;
//! - [`keys`]: key changes: writers added, reissued, revoked; recipients
//!   added and removed;
//! - [`stats`]: snapshots' sizes, what dedup and compression save, what
//!   the repository holds;
//! - [`status`]: how fresh the newest snapshot is, from the listing alone;
//! - [`copy`]: the objects into another store, byte for byte (no key).
//!
//! Operations never use each other; what two of them share lives below, in
//! `repository`, `format` or `crypto`, or is a report's figure here
//! ([`Tally`]).

pub mod check;
pub mod copy;
pub mod diff;
pub mod export;
pub mod find;
pub mod forget;
pub mod keys;
pub mod ls;
pub mod prune;
pub mod restore;
pub mod stats;
pub mod status;
pub mod warm_up;

/// A number of stored objects and their bytes (in `prune`'s and `copy`'s
/// reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Objects.
    pub count: u64,
    /// Their stored bytes.
    pub bytes: u64,
}

impl Tally {
    /// One more object of `bytes`.
    pub fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}
