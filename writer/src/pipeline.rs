//! The upload pipeline: threads joined by bounded channels.
//!
//! ```text
//! walker ──DataJob──▶ workers (one per core): zstd + OpenPGP into own pack ─┐
//!    │                                                                      ├─SealedPack─▶ uploaders ─▶ backend
//!    └──PendingDir──▶ tree builder: waits for locations, writes tree packs ─┘                 │
//!                                                                         state + index ◀─────┘
//! ```
//!
//! The walker reads, chunks and hashes; a chunk it has not seen goes to the
//! workers with a [`Slot`] that receives its location. Every channel is
//! bounded, so memory is bounded whatever the input (see docs/DESIGN.md for
//! the figure). A blob's location is recorded in the state only after its
//! pack is stored. Here: what the threads share ([`Shared`]: dedup lookups,
//! stored packs recorded, index objects) and the walker's side
//! ([`Pipeline`]); the threads' loops are in `stages`.

mod stages;

use crate::horizon::Horizon;
use crate::pack::{PackBuffers, SealedPack};
use crate::state::{FileRecord, State};
use crate::BackupError;
use coffer_core::backend::{ObjectKey, ObjectKind, PackPlaces, WriteBackend};
use coffer_core::crypto::{self, Recipients};
use coffer_core::format::chunk_key::ChunkIdKey;
use coffer_core::format::id::{BlobId, ObjectId};
use coffer_core::format::index::{IndexFile, IndexPack, PackKind};
use coffer_core::format::tree::{Entry, Location};
use coffer_core::progress::Progress;
use coffer_core::sync::lock;
use crossbeam_channel::{bounded, Sender};
use stages::{tree_builder, uploader, worker};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// An index object is written once this many packs...
const INDEX_BATCH: usize = 64;
/// ...or this many blobs wait for one: an index's blobs are held in memory
/// until it is written, and its JSON is ~120 bytes a blob. With small files
/// 64 packs held ~2.5M blobs (a 10M-file first backup peaked at 1,135 MiB).
/// A pack that would take the waiting blobs past this goes into the next
/// index, so one holds at most this many blobs, or one pack's.
const INDEX_BLOBS: usize = 100_000;
/// New chunks go to the workers in batches of up to this many...
const JOB_BATCH: usize = 64;
/// ...and this many bytes (a larger chunk goes alone): one hand-over, one
/// wake-up per batch, not per chunk (300,000 small files: 250,000
/// involuntary context switches with a hand-over per chunk, 23,000 with
/// batches).
const JOB_BATCH_BYTES: usize = 1 << 20;

/// A location that a worker fills in later, with when the blob comes due.
/// `None` means the blob could not be stored (the run is failing).
pub(crate) struct Slot {
    value: Mutex<Option<Option<(Location, i64)>>>,
    ready: Condvar,
}

impl Slot {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            value: Mutex::new(None),
            ready: Condvar::new(),
        })
    }

    fn filled(loc: Location, due: i64) -> Arc<Self> {
        let slot = Self::new();
        slot.set(Some((loc, due)));
        slot
    }

    fn set(&self, loc: Option<(Location, i64)>) {
        let mut v = lock(&self.value);
        *v = Some(loc);
        self.ready.notify_all();
    }

    fn wait(&self) -> Option<(Location, i64)> {
        let mut v = lock(&self.value);
        loop {
            if let Some(loc) = *v {
                return loc;
            }
            v = self.ready.wait(v).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A reference to a blob: known from the state, or on its way.
#[derive(Clone)]
pub(crate) enum Ref {
    Known(Location),
    Pending(Arc<Slot>),
}

impl Ref {
    fn resolve(&self) -> Option<Location> {
        match self {
            Ref::Known(loc) => Some(*loc),
            Ref::Pending(slot) => slot.wait().map(|(loc, _)| loc),
        }
    }

    /// When a blob this run stores comes due (a known one's due time is
    /// the walker's to count).
    fn pending_due(&self) -> Option<i64> {
        match self {
            Ref::Known(_) => None,
            Ref::Pending(slot) => slot.wait().map(|(_, due)| due),
        }
    }
}

/// What the state and the run know of a blob.
enum Lookup {
    /// Stored (or on its way) and not yet due: reuse, until then.
    Reuse(Ref, i64),
    /// Stored, but past due: store again.
    Due,
    /// Never stored.
    New,
}

/// A directory entry whose blob references may still be pending.
pub(crate) struct PendingEntry {
    /// The entry without chunks or subtree.
    pub entry: Entry,
    pub chunks: Vec<Ref>,
    pub subtree: Option<Ref>,
    /// For a file that was read: its state key and identity, to record once
    /// its chunks are placed.
    pub record: Option<(Vec<u8>, FileRecord)>,
}

/// A walked directory, sent to the tree builder in post-order.
pub(crate) struct PendingDir {
    pub entries: Vec<PendingEntry>,
    pub slot: Arc<Slot>,
}

struct DataJob {
    id: BlobId,
    data: Vec<u8>,
    slot: Arc<Slot>,
    /// Stored before and past due (so due a whole horizon later).
    again: bool,
}

/// New chunks gathered for the workers.
#[derive(Default)]
struct Batch {
    jobs: Vec<DataJob>,
    bytes: usize,
}

impl Batch {
    fn take(&mut self) -> Vec<DataJob> {
        self.bytes = 0;
        std::mem::take(&mut self.jobs)
    }
}

/// Counts shared by the pipeline's threads.
#[derive(Default)]
pub(crate) struct Counters {
    pub new_blobs: AtomicU64,
    pub new_bytes: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub new_packs: AtomicU64,
}

/// What every pipeline thread shares.
pub(crate) struct Shared {
    pub key: ChunkIdKey,
    /// Live counts for progress displays.
    pub progress: Arc<Progress>,
    /// The repository's id (snapshot names carry a host tag made with it).
    pub repo_id: String,
    pub recipients: Recipients,
    pub level: i32,
    pub pack_size: u64,
    /// Where packs of each kind are stored (the repository's version).
    pub places: PackPlaces,
    pub backend: Arc<dyn WriteBackend>,
    pub rt: tokio::runtime::Handle,
    pub state: Mutex<State>,
    pending: Mutex<HashMap<BlobId, Arc<Slot>>>,
    /// Until when stored blobs are reused; new packs' ids.
    pub horizon: Horizon,
    pub counters: Counters,
    failed: AtomicBool,
    failure: Mutex<Option<BackupError>>,
    index: Mutex<Vec<IndexPack>>,
    /// Stored packs' buffers, for the next packs. The pool never holds more
    /// than were in flight at once, so the cap only bounds odd cases.
    buffers: PackBuffers,
}

impl Shared {
    pub fn new(
        key: ChunkIdKey,
        recipients: Recipients,
        config: &coffer_core::format::config::RepoConfig,
        backend: Arc<dyn WriteBackend>,
        rt: tokio::runtime::Handle,
        state: State,
        now: i64,
    ) -> Self {
        Self {
            key,
            recipients,
            repo_id: config.id.clone(),
            progress: Arc::default(),
            level: config.zstd_level,
            pack_size: config.pack_size,
            places: PackPlaces::of(config),
            backend,
            rt,
            state: Mutex::new(state),
            pending: Mutex::new(HashMap::new()),
            horizon: Horizon::new(now, config.dedup_horizon_days),
            counters: Counters::default(),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            index: Mutex::new(Vec::new()),
            buffers: PackBuffers::new(8),
        }
    }

    /// Counts into `progress` (for a display) instead of private counters.
    pub fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Marks the run failed; the first error is the one reported.
    pub fn fail(&self, e: BackupError) {
        let mut f = lock(&self.failure);
        if f.is_none() {
            *f = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    pub fn take_failure(&self) -> Option<BackupError> {
        lock(&self.failure).take()
    }

    /// Where blob `id` is, if this run or an earlier one stored it and it is
    /// not yet due; with its due time (`i64::MAX` for one this run stores:
    /// its slot tells).
    fn lookup(
        &self,
        pending: &HashMap<BlobId, Arc<Slot>>,
        id: &BlobId,
    ) -> Result<Lookup, BackupError> {
        if let Some(slot) = pending.get(id) {
            return Ok(Lookup::Reuse(Ref::Pending(slot.clone()), i64::MAX));
        }
        Ok(match lock(&self.state).blob(id)? {
            Some((loc, due)) if self.horizon.reusable(due) => Lookup::Reuse(Ref::Known(loc), due),
            Some(_) => Lookup::Due,
            None => Lookup::New,
        })
    }

    /// Sealed packs are written here; in one place so every writer of packs
    /// counts and records them the same way.
    fn store_pack(&self, pack: SealedPack) -> Result<(), BackupError> {
        let key = self.places.key(&pack.id, pack.kind);
        let size = pack.bytes.len() as u64;
        let stored = match pack.kind {
            PackKind::Data => self
                .rt
                .block_on(self.backend.put_new_data_pack(&key, pack.bytes))
                .map(|buffer| self.buffers.give(buffer)),
            PackKind::Tree => self.rt.block_on(self.backend.put_new(&key, pack.bytes)),
        };
        stored.map_err(BackupError::Store)?;
        {
            let mut state = lock(&self.state);
            for (b, &due) in pack.blobs.iter().zip(&pack.dues) {
                let loc = Location {
                    id: b.id,
                    pack: pack.id,
                    offset: b.offset,
                    length: b.length,
                    raw_length: b.raw_length,
                };
                state.add_blob(&loc, due)?;
            }
            // Known for good: a run killed after this reuses the pack.
            state.checkpoint()?;
        }
        {
            let mut pending = lock(&self.pending);
            for b in &pack.blobs {
                pending.remove(&b.id);
            }
        }
        let c = &self.counters;
        c.new_packs.fetch_add(1, Ordering::Relaxed);
        c.stored_bytes.fetch_add(size, Ordering::Relaxed);
        c.new_blobs
            .fetch_add(pack.blobs.len() as u64, Ordering::Relaxed);
        c.new_bytes.fetch_add(pack.raw_bytes, Ordering::Relaxed);
        let batches = {
            let mut index = lock(&self.index);
            let mut batches = Vec::new();
            // A pack that would take the waiting index past INDEX_BLOBS
            // starts the next one: an index holds at most INDEX_BLOBS blobs,
            // or one pack's.
            let held: usize = index.iter().map(|p| p.blobs.len()).sum();
            if !index.is_empty() && held + pack.blobs.len() > INDEX_BLOBS {
                batches.push(std::mem::take(&mut *index));
            }
            index.push(IndexPack {
                id: pack.id,
                kind: pack.kind,
                size,
                time: coffer_core::format::encoding::now_rfc3339(),
                blobs: pack.blobs,
            });
            let blobs: usize = index.iter().map(|p| p.blobs.len()).sum();
            if index.len() >= INDEX_BATCH || blobs >= INDEX_BLOBS {
                batches.push(std::mem::take(&mut *index));
            }
            batches
        };
        for batch in batches {
            self.write_index(batch)?;
        }
        Ok(())
    }

    /// Writes an index object listing `packs` (nothing if empty).
    pub fn write_index(&self, packs: Vec<IndexPack>) -> Result<(), BackupError> {
        if packs.is_empty() {
            return Ok(());
        }
        let json = IndexFile { packs }.to_json();
        let sealed = crypto::seal_message(&self.recipients, &json)?;
        let key = ObjectKey::new(ObjectKind::Index, ObjectId::of_bytes(&sealed).to_hex());
        match self.rt.block_on(self.backend.put_new(&key, sealed)) {
            Ok(()) | Err(coffer_core::Error::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(BackupError::Store(e)),
        }
    }

    /// Packs stored since the last index object.
    pub fn take_index_rest(&self) -> Vec<IndexPack> {
        std::mem::take(&mut *lock(&self.index))
    }
}

/// The running pipeline.
pub(crate) struct Pipeline {
    pub shared: Arc<Shared>,
    data_tx: Option<Sender<Vec<DataJob>>>,
    /// New chunks not yet handed to the workers (sent before a directory
    /// that may wait for them goes to the tree builder).
    batch: Mutex<Batch>,
    dir_tx: Option<Sender<PendingDir>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts `workers` compress/encrypt threads, the tree builder and the
    /// uploaders.
    pub fn start(shared: Arc<Shared>, workers: usize) -> Self {
        let workers = workers.max(1);
        let (data_tx, data_rx) = bounded::<Vec<DataJob>>(2 * workers);
        let (dir_tx, dir_rx) = bounded::<PendingDir>(256);
        // Rendezvous: a full pack waits in its worker until an uploader is free,
        // so no pack buffer sits in the channel.
        let (pack_tx, pack_rx) = bounded::<SealedPack>(0);
        let mut threads = Vec::new();
        for i in 0..workers {
            let (s, rx, tx) = (shared.clone(), data_rx.clone(), pack_tx.clone());
            threads.push(spawn(format!("coffer-pack-{i}"), move || {
                worker(&s, rx, tx)
            }));
        }
        let (s, tx) = (shared.clone(), pack_tx.clone());
        threads.push(spawn("coffer-trees".into(), move || {
            tree_builder(&s, dir_rx, tx)
        }));
        drop(pack_tx);
        for i in 0..shared.backend.upload_concurrency() {
            let (s, rx) = (shared.clone(), pack_rx.clone());
            threads.push(spawn(format!("coffer-upload-{i}"), move || {
                uploader(&s, rx)
            }));
        }
        Self {
            shared,
            data_tx: Some(data_tx),
            batch: Mutex::new(Batch::default()),
            dir_tx: Some(dir_tx),
            threads,
        }
    }

    /// Returns a reference to the chunk `data` (id `id`), sending it to the
    /// workers unless it is already stored, not yet due, or on its way; with
    /// its due time if known (`i64::MAX` for one on its way: its slot tells).
    pub fn store_chunk(&self, id: BlobId, data: Vec<u8>) -> Result<(Ref, i64), BackupError> {
        self.check_running()?;
        let (slot, again) = {
            let mut pending = lock(&self.shared.pending);
            let again = match self.shared.lookup(&pending, &id)? {
                Lookup::Reuse(r, due) => return Ok((r, due)),
                Lookup::Due => true,
                Lookup::New => false,
            };
            let slot = Slot::new();
            pending.insert(id, slot.clone());
            (slot, again)
        };
        let job = DataJob {
            id,
            data,
            slot: slot.clone(),
            again,
        };
        // Batches stay within JOB_BATCH_BYTES; a chunk that large goes alone.
        let mut ready = Vec::new();
        {
            let mut batch = lock(&self.batch);
            if batch.bytes + job.data.len() > JOB_BATCH_BYTES {
                ready.push(batch.take());
            }
            if job.data.len() >= JOB_BATCH_BYTES {
                ready.push(vec![job]);
            } else {
                batch.bytes += job.data.len();
                batch.jobs.push(job);
                if batch.jobs.len() >= JOB_BATCH {
                    ready.push(batch.take());
                }
            }
        }
        for jobs in ready {
            self.send_jobs(jobs)?;
        }
        Ok((Ref::Pending(slot), i64::MAX))
    }

    /// Hands the chunks not yet sent to the workers.
    fn flush_jobs(&self) -> Result<(), BackupError> {
        let jobs = lock(&self.batch).take();
        self.send_jobs(jobs)
    }

    fn send_jobs(&self, jobs: Vec<DataJob>) -> Result<(), BackupError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let stopped = || BackupError::Pipeline("the packing threads stopped".into());
        let tx = self.data_tx.as_ref().ok_or_else(stopped)?;
        tx.send(jobs).map_err(|unsent| {
            for job in unsent.0 {
                job.slot.set(None); // nobody waits for what is never stored
            }
            stopped()
        })
    }

    /// Queues a walked directory; returns the reference its parent uses.
    pub fn store_dir(&self, entries: Vec<PendingEntry>) -> Result<Ref, BackupError> {
        self.check_running()?;
        // The tree builder waits for the directory's chunks: they must be
        // on their way before it does (else it could wait for the walker,
        // and the walker for room in the directories' queue).
        self.flush_jobs()?;
        let slot = Slot::new();
        let dir = PendingDir {
            entries,
            slot: slot.clone(),
        };
        self.dir_tx
            .as_ref()
            .and_then(|tx| tx.send(dir).ok())
            .ok_or_else(|| BackupError::Pipeline("the tree thread stopped".into()))?;
        Ok(Ref::Pending(slot))
    }

    /// Fails once any pipeline thread has failed, so the walk stops early;
    /// the first error is the one reported (see [`Shared::take_failure`]).
    fn check_running(&self) -> Result<(), BackupError> {
        if self.shared.failed() {
            return Err(BackupError::Pipeline(
                "stopped after an earlier error".into(),
            ));
        }
        Ok(())
    }

    /// Flushes every pack, waits for all uploads, and returns the location
    /// of `root` (the last directory queued).
    pub fn finish(mut self, root: Ref) -> Result<Location, BackupError> {
        if let Err(e) = self.flush_jobs() {
            self.shared.fail(e);
        }
        self.data_tx = None;
        self.dir_tx = None;
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                self.shared
                    .fail(BackupError::Pipeline("a pipeline thread panicked".into()));
            }
        }
        if let Some(e) = self.shared.take_failure() {
            return Err(e);
        }
        root.resolve()
            .ok_or_else(|| BackupError::Pipeline("the root tree was not stored".into()))
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        // An early error: close the channels and let the threads drain.
        self.shared
            .fail(BackupError::Pipeline("backup aborted".into()));
        for job in lock(&self.batch).take() {
            job.slot.set(None);
        }
        self.data_tx = None;
        self.dir_tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .unwrap_or_else(|e| panic!("cannot start a pipeline thread: {e}"))
}
