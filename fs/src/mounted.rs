//! The state of a mounted repository, shared by the FUSE session threads
//! (which answer what they can at once) and the tokio tasks (which fetch):
//! the blob cache, the inode table and the snapshot list. Its fields are
//! its own: the other modules reach them through the methods here, which
//! say which lock guards what and take two only in the lock order. Its
//! other methods live by what they serve: [`crate::dirs`] (loading and
//! listing directories), [`crate::read`] (file contents) and
//! [`crate::attrs`] (attributes).

use crate::cache::BlobCache;
use crate::inode::InodeTable;
use crate::layout::Layout;
use crate::read::Streams;
use crate::walk::Walks;
use crate::MountOptions;
use coffer_core::format::snapshot::{Selection, SnapshotInfo};
use coffer_core::repository::Repository;
use coffer_core::sync::lock;
use fuser::Errno;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Memory the mount uses besides what it keeps (fetches and decodes in
/// flight, FUSE request buffers, allocator slack), counted against the cache
/// size so the mount's peak stays near `--cache-size`. Measured (bench:
/// `ls -lR` of two snapshots, a 400 MB read, `diff -r`, 512 MiB cache):
/// peak 671 MiB counting nothing, 583 MiB counting the listings (83 MiB).
pub(crate) const WORKING_BYTES: u64 = 32 << 20;

/// The share of the cache size the inode table's listings may take (they
/// count against it, so the blob cache gets the rest).
const LISTING_SHARE: u64 = 4;

/// Everything a mount holds; cheap to share with tokio tasks in an `Arc`.
///
/// Lock order: `snapshots` before `table`, never the other way round; no
/// other lock is held while taking either.
pub(crate) struct Mounted {
    /// Decrypted blobs (locks of its own, never held across a call).
    cache: Arc<BlobCache>,
    /// Inodes and the listings kept of them.
    table: Mutex<InodeTable>,
    /// The snapshot list and the virtual directories' layout.
    snapshots: Mutex<SnapshotList>,
    /// How old the snapshot list may get before it is read again.
    refresh_every: Duration,
    /// The snapshots shown (`--host`, `--tag`, `--path`).
    selection: Selection,
    /// Owner of the virtual directories: whoever mounted.
    uid: u32,
    gid: u32,
    /// Damage already logged, so each object is named once (held only
    /// inside [`Mounted::eio`]).
    logged: Mutex<HashSet<String>>,
    /// The walks going on (a leaf lock: nothing else is taken under it).
    walks: Mutex<Walks>,
    /// Each file's reader: its read-ahead window (a leaf lock too).
    streams: Mutex<Streams>,
}

/// The snapshot list and the virtual directories made of it.
pub(crate) struct SnapshotList {
    pub(crate) list: Vec<SnapshotInfo>,
    pub(crate) layout: Layout,
    pub(crate) loaded: Instant,
    /// Bumped on every re-read; virtual directories built from an older
    /// generation are rebuilt on their next lookup.
    pub(crate) generation: u64,
    /// The virtual directories' mtime: when the list last changed (the
    /// newest snapshot's time at first). The kernel keeps directory
    /// listings and drops them when the mtime changes.
    pub(crate) changed_ns: i64,
}

impl SnapshotList {
    /// The list as first read.
    pub(crate) fn new(list: Vec<SnapshotInfo>) -> Self {
        let changed_ns = list
            .last()
            .and_then(|s| s.snapshot.time())
            .map_or(0, |t| t.unix_timestamp_nanos() as i64);
        Self {
            layout: Layout::new(&list),
            list,
            loaded: Instant::now(),
            generation: 1,
            changed_ns,
        }
    }

    /// Replaces the list with `list` as re-read: the mtime moves on if
    /// a snapshot came or went.
    pub(crate) fn replace(&mut self, list: Vec<SnapshotInfo>) {
        let same =
            self.list.len() == list.len() && self.list.iter().zip(&list).all(|(a, b)| a.id == b.id);
        if !same {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            self.changed_ns = now.max(self.changed_ns + 1);
        }
        self.layout = Layout::new(&list);
        self.list = list;
        self.loaded = Instant::now();
        self.generation += 1;
    }

    /// Whether the list is older than `every` (time to re-read it).
    pub(crate) fn stale(&self, every: Duration) -> bool {
        self.loaded.elapsed() >= every
    }
}

impl Mounted {
    /// The state of a new mount: `snapshots` listed, nothing else loaded.
    pub(crate) fn new(
        repo: Arc<Repository>,
        snapshots: Vec<SnapshotInfo>,
        opts: &MountOptions,
    ) -> Self {
        let cache = Arc::new(BlobCache::new(repo, opts.cache_bytes));
        cache.set_reserved(WORKING_BYTES);
        let (uid, gid) = (coffer_core::user::uid(), coffer_core::user::gid());
        Self {
            cache,
            table: Mutex::new(InodeTable::new(opts.cache_bytes / LISTING_SHARE)),
            snapshots: Mutex::new(SnapshotList::new(snapshots)),
            refresh_every: opts.refresh_every,
            selection: opts.selection.clone(),
            uid,
            gid,
            logged: Mutex::new(HashSet::new()),
            walks: Mutex::new(Walks::default()),
            streams: Mutex::new(Streams::new()),
        }
    }

    /// The walks going on, locked (take no other lock while holding it).
    pub(crate) fn walks(&self) -> MutexGuard<'_, Walks> {
        lock(&self.walks)
    }

    /// The files' readers, locked (take no other lock while holding it).
    pub(crate) fn streams(&self) -> MutexGuard<'_, Streams> {
        lock(&self.streams)
    }

    /// The blob cache.
    pub(crate) fn cache(&self) -> &Arc<BlobCache> {
        &self.cache
    }

    /// The inode table, locked. Never take the snapshot list while holding
    /// it: [`Mounted::snapshots_and_table`] takes both.
    pub(crate) fn table(&self) -> MutexGuard<'_, InodeTable> {
        lock(&self.table)
    }

    /// The snapshot list, locked. The table may be taken while holding it,
    /// never the other way round.
    pub(crate) fn snapshots(&self) -> MutexGuard<'_, SnapshotList> {
        lock(&self.snapshots)
    }

    /// The snapshot list and the inode table, locked in the lock order.
    pub(crate) fn snapshots_and_table(
        &self,
    ) -> (MutexGuard<'_, SnapshotList>, MutexGuard<'_, InodeTable>) {
        let snapshots = lock(&self.snapshots);
        (snapshots, lock(&self.table))
    }

    /// Whether the snapshot list is older than the refresh interval.
    pub(crate) fn snapshots_stale(&self) -> bool {
        self.snapshots().stale(self.refresh_every)
    }

    /// The snapshots the mount shows.
    pub(crate) fn selection(&self) -> &Selection {
        &self.selection
    }

    /// The owner of the virtual directories (uid, gid): whoever mounted.
    pub(crate) fn owner(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// Logs a storage or damage error once per object (the error names it),
    /// and maps it to EIO.
    pub(crate) fn eio(&self, what: &str, e: &coffer_core::Error) -> Errno {
        if lock(&self.logged).insert(e.to_string()) {
            tracing::error!("{what}: {e}");
        }
        Errno::EIO
    }
}
