//! Walking the sources into the pipeline: metadata into entries, files
//! into chunks, directories into pending trees (post-order, so children
//! are queued before parents).
//!
//! Each kind of source is a [`Source`]: the local tree (`local`: the
//! source paths at their absolute paths, `scan` counting it for the
//! progress display), a stream (`stream`: standard input as one file) and
//! S3 buckets (`buckets`: under `/s3`). Each puts its entries into the
//! snapshot's root; the [`Walker`] they share makes entries, reads files
//! (`file_entry`), counts what it saw and collects the warnings. Entries
//! that vanish or cannot be read are warnings and left out; the run goes
//! on. `excludes` holds the `--exclude` patterns.

mod buckets;
mod excludes;
mod file_entry;
mod local;
mod scan;
mod stream;

pub(crate) use buckets::{Buckets, BUCKETS_DIR};
pub(crate) use excludes::Excludes;
pub use excludes::CACHEDIR_TAG;
pub(crate) use local::LocalTree;
pub(crate) use stream::Stream;

use crate::owner::Owners;
use crate::pipeline::{PendingEntry, Pipeline, Ref};
use crate::BackupError;
use coffer_core::chunker::Chunker;
use coffer_core::format::snapshot::SnapshotStats;
use coffer_core::format::tree::{Entry, Kind, Xattr};
use coffer_core::progress::Progress;
use file_entry::ReadFile;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Threads that open files ahead of the walker (their work is waiting on
/// the disk, not the CPU).
pub const READ_AHEAD_THREADS: usize = 4;

/// Counts a source's files and bytes into the progress display's totals;
/// runs on a thread of its own beside the backup.
pub(crate) type Scanner = Box<dyn FnOnce(&Progress) + Send>;

/// One kind of source a backup reads (as rustic's `ReadSource` or restic's
/// `fs.FS`): the local tree, a stream, S3 buckets.
pub(crate) trait Source {
    /// How to count the source ahead for the progress display; `None`
    /// when it cannot be known before it is read (a stream).
    fn scanner(&self) -> Option<Scanner>;

    /// Walks the source into `walk`'s pipeline; returns its entries in the
    /// snapshot's root directory.
    fn root_entries(&mut self, walk: &mut Walker<'_>) -> Result<Vec<PendingEntry>, BackupError>;
}

/// Counts every source for the progress display's totals, on a thread
/// beside the run (unless one of them cannot be counted ahead).
pub(crate) fn start_scan(sources: &[Box<dyn Source + '_>], progress: Arc<Progress>) {
    let Some(scanners) = sources
        .iter()
        .map(|s| s.scanner())
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    std::thread::spawn(move || {
        for scan in scanners {
            scan(&progress);
        }
        if !progress.stopped() {
            progress.totals_done();
        }
    });
}

/// What the sources share as they are walked: the pipeline, the chunker,
/// the names of owners, the hard links read so far; and what the walk saw.
pub(crate) struct Walker<'a> {
    pipe: &'a Pipeline,
    chunker: Chunker,
    owners: Owners,
    /// Entries keep their extended attributes.
    xattrs: bool,
    /// Hard-linked files read in this run, by (device, inode): their
    /// chunks, holes and size, for their other names.
    links: HashMap<(u64, u64), ReadFile>,
    /// What the walk saw.
    stats: SnapshotStats,
    /// Entries that could not be read, with the reason.
    warnings: Vec<String>,
}

impl<'a> Walker<'a> {
    /// A walker that feeds `pipe`; `xattrs`: entries keep their extended
    /// attributes.
    pub fn new(pipe: &'a Pipeline, chunker: Chunker, xattrs: bool) -> Self {
        Self {
            pipe,
            chunker,
            owners: Owners::default(),
            xattrs,
            links: HashMap::new(),
            stats: SnapshotStats::default(),
            warnings: Vec::new(),
        }
    }

    /// Walks every source; returns the root tree's reference.
    pub fn walk(&mut self, sources: &mut [Box<dyn Source + '_>]) -> Result<Ref, BackupError> {
        let mut entries = Vec::new();
        for source in sources {
            entries.extend(source.root_entries(self)?);
        }
        self.pipe.store_dir(entries)
    }

    /// What the walk saw, and the entries it could not read.
    pub fn into_report(self) -> (SnapshotStats, Vec<String>) {
        (self.stats, self.warnings)
    }

    /// An entry with its owners' names.
    fn entry(
        &mut self,
        name: Vec<u8>,
        kind: Kind,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: i64,
    ) -> Entry {
        Entry {
            uid,
            gid,
            user: self.owners.user(uid),
            group: self.owners.group(gid),
            mtime_ns,
            ..Entry::new(name, kind, mode)
        }
    }

    /// `xattrs` without those readers would refuse (each left out with a
    /// warning, so the run ends with exit 3): a tree holding one would be
    /// refused whole, and with it the entry's neighbours.
    fn storable_xattrs(&mut self, path: &Path, xattrs: Vec<Xattr>) -> Vec<Xattr> {
        let (kept, refused) = crate::xattrs::storable(xattrs);
        for why in refused {
            self.warn(
                path,
                "extended attribute left out",
                &std::io::Error::other(why),
            );
        }
        kept
    }

    /// Notes that `path` (or part of it) is left out, and why.
    fn warn(&mut self, path: &Path, what: &str, e: &std::io::Error) {
        self.stats.errors += 1;
        self.warnings
            .push(format!("{}: {what}: {e}", path.display()));
    }
}
