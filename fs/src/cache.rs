//! A byte-bounded LRU of decrypted blobs, shared by every reader of a mount.
//!
//! The `lru` crate bounds entries, not bytes, so a byte counter evicts the
//! least recently used blobs while the total is over the limit. Concurrent
//! requests for the same blob are merged: one fetch, every caller gets its
//! bytes (single flight). Decryption runs on tokio's blocking pool so async
//! threads keep serving requests. Read-ahead fetches a blob at a time
//! ([`BlobCache::prefetch`]) or, for walks over many small files, blobs that
//! lie near one another in a pack with one ranged read
//! ([`BlobCache::prefetch_joined`]); every fetch is timed ([`Link`]).

use crate::link::Link;
use coffer_core::error::Result;
use coffer_core::format::id::BlobId;
use coffer_core::format::tree::Location;
use coffer_core::repository::span;
use coffer_core::repository::Repository;
use coffer_core::sync::lock;
use lru::LruCache;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OnceCell, Semaphore};

type Flight = Arc<OnceCell<Arc<Vec<u8>>>>;
/// A blob's plaintext from a joined read, until its reader takes it.
type Taken = Mutex<Option<Vec<u8>>>;

/// Read-ahead fetches running at once. Each decodes on a core; more than
/// the cores of a small machine only slowed the fetches readers wait for
/// (64 subtree prefetches at once made a directory's first lookup 2-3x
/// slower on 2 cores).
pub const PREFETCHES_AT_ONCE: usize = 4;
/// Read-ahead fetches at once from a remote repository, where each waits a
/// round trip: the cores are idle meanwhile, so more in flight fill it
/// (32 read a stream at 100 ms RTT no faster than 16: 45-47 MiB/s).
pub const REMOTE_PREFETCHES_AT_ONCE: usize = 16;
/// Stored bytes read ahead at once, at most (counted in KiB): what the
/// prefetches in flight hold before their blobs land in the cache; an
/// eighth of the cache, at least [`MIN_PREFETCH_KIB`]. With the round trip,
/// what caps a read-ahead's rate: 64 MiB every 100 ms.
const PREFETCH_KIB_AT_ONCE: u32 = 64 << 10;
const MIN_PREFETCH_KIB: u32 = 4 << 10;
/// A joined read-ahead reads at most this many bytes with one request.
const MAX_JOINED: u64 = 4 << 20;

/// KiB of stored bytes read ahead at once by a cache of `limit` bytes.
fn prefetch_kib(limit: u64) -> u32 {
    u32::try_from(limit / 8 / 1024)
        .unwrap_or(u32::MAX)
        .clamp(MIN_PREFETCH_KIB, PREFETCH_KIB_AT_ONCE)
}

/// What a blob is, for where a miss reads it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blob {
    Chunk,
    Tree,
}

/// Decrypted blobs, most recently used kept, at most `limit` bytes.
pub struct BlobCache {
    repo: Arc<Repository>,
    lru: Mutex<Lru>,
    inflight: Mutex<HashMap<BlobId, Flight>>,
    /// Blobs a prefetch was started for that waits for a slot.
    queued: Mutex<HashSet<BlobId>>,
    prefetch_slots: Semaphore,
    /// [`prefetch_kib`] of the limit.
    prefetch_kib: Semaphore,
    link: Link,
}

struct Lru {
    map: LruCache<BlobId, Arc<Vec<u8>>>,
    bytes: u64,
    limit: u64,
    /// Bytes of the limit used by something else (the mount's inode table).
    reserved: u64,
}

impl Lru {
    /// What blobs may take: the limit less what is reserved, but never
    /// less than an eighth of the limit, so reads keep some cache.
    fn room(&self) -> u64 {
        self.limit.saturating_sub(self.reserved).max(self.limit / 8)
    }

    fn evict_to_room(&mut self) {
        while self.bytes > self.room() {
            match self.map.pop_lru() {
                Some((_, old)) => self.bytes -= old.len() as u64,
                None => break,
            }
        }
    }
}

impl BlobCache {
    /// A cache of at most `limit` bytes over `repo`.
    pub fn new(repo: Arc<Repository>, limit: u64) -> Self {
        let prefetches = if repo.backend().is_local() {
            PREFETCHES_AT_ONCE
        } else {
            REMOTE_PREFETCHES_AT_ONCE
        };
        Self {
            repo,
            lru: Mutex::new(Lru {
                map: LruCache::unbounded(),
                bytes: 0,
                limit,
                reserved: 0,
            }),
            inflight: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashSet::new()),
            prefetch_slots: Semaphore::new(prefetches),
            prefetch_kib: Semaphore::new(prefetch_kib(limit) as usize),
            link: Link::new(),
        }
    }

    /// The link to the store, as the fetches so far measured it.
    pub(crate) fn link(&self) -> &Link {
        &self.link
    }

    /// Bytes the cache may keep now (its limit less what is reserved).
    pub(crate) fn room(&self) -> u64 {
        lock(&self.lru).room()
    }

    /// The repository behind the cache.
    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// Blob `id`'s plaintext if it is cached (counts as a use).
    pub fn cached(&self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        lock(&self.lru).map.get(id).cloned()
    }

    /// Whether blob `id` is cached.
    pub fn contains(&self, id: &BlobId) -> bool {
        lock(&self.lru).map.contains(id)
    }

    /// Starts fetching, in the background, each of `locs` not cached yet
    /// (read-ahead), at most [`PREFETCHES_AT_ONCE`] at a time (from a remote
    /// repository [`REMOTE_PREFETCHES_AT_ONCE`]) in the order
    /// given. A reader's own request never waits for these: it starts its
    /// fetch at once (and a queued prefetch of the same blob then finds it
    /// cached). Does nothing outside a tokio runtime.
    pub fn prefetch<'a>(self: &Arc<Self>, locs: impl IntoIterator<Item = &'a Location>) {
        self.prefetch_as(Blob::Chunk, locs);
    }

    /// [`BlobCache::prefetch`] for trees (read through the repository's
    /// tree cache, when it has one).
    pub fn prefetch_trees<'a>(self: &Arc<Self>, locs: impl IntoIterator<Item = &'a Location>) {
        self.prefetch_as(Blob::Tree, locs);
    }

    fn prefetch_as<'a>(self: &Arc<Self>, what: Blob, locs: impl IntoIterator<Item = &'a Location>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for loc in locs {
            if !self.queue(&loc.id) {
                continue;
            }
            let (cache, loc) = (self.clone(), *loc);
            rt.spawn(async move {
                let Some(_permits) = cache.slot(loc.length).await else {
                    return;
                };
                lock(&cache.queued).remove(&loc.id);
                // Checked again: a permit is never held waiting for a fetch
                // that someone else started.
                if !cache.cached_or_coming(&loc.id) {
                    let _ = cache.get_as(what, &loc).await;
                }
            });
        }
    }

    /// Read-ahead for a walk over many files: starts fetching each of
    /// `locs` (file chunks, in the order they will be read) not cached
    /// yet, those that lie near one another in a pack joined into one
    /// ranged read ([`span::joined`], as restore reads them), the reads
    /// started in the order their first blob is wanted. A reader that asks
    /// for one of them meanwhile waits for its read instead of starting
    /// another. Does nothing outside a tokio runtime.
    pub fn prefetch_joined(self: &Arc<Self>, locs: &[Location]) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let wanted: Vec<Location> = locs.iter().filter(|l| self.queue(&l.id)).copied().collect();
        for (span, blobs) in span::joined(&wanted, MAX_JOINED, span::MAX_GAP) {
            let cache = self.clone();
            rt.spawn(async move {
                let Some(_permits) = cache.slot(span.len()).await else {
                    return;
                };
                cache.fetch_joined(blobs).await;
            });
        }
    }

    /// Marks blob `id` queued for a prefetch, unless it is cached, coming
    /// or queued already (then false).
    fn queue(&self, id: &BlobId) -> bool {
        !self.cached_or_coming(id) && lock(&self.queued).insert(*id)
    }

    /// A prefetch slot and room for `bytes` more in flight (`None` if the
    /// cache is going away).
    async fn slot(
        &self,
        bytes: u64,
    ) -> Option<(
        tokio::sync::SemaphorePermit<'_>,
        tokio::sync::SemaphorePermit<'_>,
    )> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, MIN_PREFETCH_KIB);
        let slot = self.prefetch_slots.acquire().await.ok()?;
        let room = self.prefetch_kib.acquire_many(kib).await.ok()?;
        Some((slot, room))
    }

    /// Fetches `blobs` (near one another in one pack) with one ranged read
    /// and keeps each: those still neither cached nor being fetched, each
    /// claimed (a reader asking for it waits for this read). If the read
    /// fails, nothing is kept and each claim is let go: a reader then
    /// fetches its blob on its own.
    async fn fetch_joined(&self, blobs: Vec<Location>) {
        let claimed: Vec<(Location, Flight)> = {
            let mut queued = lock(&self.queued);
            let mut inflight = lock(&self.inflight);
            let lru = lock(&self.lru);
            blobs
                .into_iter()
                .filter_map(|loc| {
                    queued.remove(&loc.id);
                    if lru.map.contains(&loc.id) || inflight.contains_key(&loc.id) {
                        return None;
                    }
                    let flight: Flight = Arc::new(OnceCell::new());
                    inflight.insert(loc.id, flight.clone());
                    Some((loc, flight))
                })
                .collect()
        };
        if claimed.is_empty() {
            return;
        }
        let locs: Vec<Location> = claimed.iter().map(|(l, _)| *l).collect();
        let bytes = locs.iter().map(|l| l.length).sum();
        // Each claim's cell is held while the read runs: a reader's
        // get_or_try_init waits for it rather than fetching again. Each
        // blob's plaintext is taken out of the read's, never copied.
        let read: OnceCell<Option<Vec<Taken>>> = OnceCell::new();
        let started = Instant::now();
        let reading = || async {
            let each = self.repo.read_chunks(locs.clone()).await.ok()?;
            self.link.record(bytes, started.elapsed());
            Some(each.into_iter().map(|r| Mutex::new(r.ok())).collect())
        };
        let each_blob = claimed.iter().enumerate().map(|(i, (loc, flight))| {
            let read = &read;
            async move {
                let got = flight
                    .get_or_try_init(|| async {
                        let all = read.get_or_init(reading).await;
                        // A failed read or blob: the readers fetch it alone.
                        let plain = all.as_ref().and_then(|a| lock(a.get(i)?).take());
                        plain.map(Arc::new).ok_or(())
                    })
                    .await
                    .cloned();
                (*loc, flight, got)
            }
        });
        for (loc, flight, got) in futures_util::future::join_all(each_blob).await {
            self.land(&loc.id, flight);
            if let Ok(data) = got {
                self.insert(loc.id, data);
            }
        }
    }

    /// Ends `flight` for blob `id` (if it is still the one in flight).
    fn land(&self, id: &BlobId, flight: &Flight) {
        let mut inflight = lock(&self.inflight);
        if inflight.get(id).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            inflight.remove(id);
        }
    }

    /// Whether blob `id` is cached or being fetched.
    fn cached_or_coming(&self, id: &BlobId) -> bool {
        self.contains(id) || lock(&self.inflight).contains_key(id)
    }

    /// The plaintext of the blob at `loc`, from the cache or fetched,
    /// decrypted and verified once however many callers ask at the same time.
    pub async fn get(&self, loc: &Location) -> Result<Arc<Vec<u8>>> {
        self.get_as(Blob::Chunk, loc).await
    }

    /// [`BlobCache::get`] for a tree: a miss reads it through the
    /// repository's tree cache (whole tree packs on disk), when it has one.
    pub async fn get_tree(&self, loc: &Location) -> Result<Arc<Vec<u8>>> {
        self.get_as(Blob::Tree, loc).await
    }

    async fn get_as(&self, what: Blob, loc: &Location) -> Result<Arc<Vec<u8>>> {
        if let Some(hit) = lock(&self.lru).map.get(&loc.id) {
            return Ok(hit.clone());
        }
        let flight = lock(&self.inflight)
            .entry(loc.id)
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let result = flight
            .get_or_try_init(|| self.fetch(what, *loc))
            .await
            .cloned();
        self.land(&loc.id, &flight);
        let data = result?;
        self.insert(loc.id, data.clone());
        Ok(data)
    }

    /// A miss: read and verified by the repository (through its tree or
    /// chunk cache on disk, when it has one); this cache only keeps the
    /// result.
    async fn fetch(&self, what: Blob, loc: Location) -> Result<Arc<Vec<u8>>> {
        let started = Instant::now();
        let plain = match what {
            Blob::Tree => self.repo.read_tree_json(&loc).await?,
            Blob::Chunk => self.repo.read_chunk(&loc).await?,
        };
        self.link.record(loc.length, started.elapsed());
        Ok(Arc::new(plain))
    }

    fn insert(&self, id: BlobId, data: Arc<Vec<u8>>) {
        let mut lru = lock(&self.lru);
        if lru.map.contains(&id) {
            return;
        }
        let size = data.len() as u64;
        if size > lru.room() {
            return;
        }
        lru.bytes += size;
        lru.map.put(id, data);
        lru.evict_to_room();
    }

    /// Counts `bytes` of other memory against the limit (evicting blobs to
    /// make room): the mount's inode table, which grows as it is browsed.
    pub fn set_reserved(&self, bytes: u64) {
        let mut lru = lock(&self.lru);
        lru.reserved = bytes;
        lru.evict_to_room();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8, len: usize) -> (BlobId, Arc<Vec<u8>>) {
        (BlobId([n; 32]), Arc::new(vec![n; len]))
    }

    #[test]
    fn reserved_bytes_shrink_the_room_but_never_below_an_eighth() {
        let mut lru = Lru {
            map: LruCache::unbounded(),
            bytes: 0,
            limit: 800,
            reserved: 0,
        };
        for n in 0..8 {
            let (id, data) = blob(n, 100);
            lru.bytes += data.len() as u64;
            lru.map.put(id, data);
        }
        lru.evict_to_room();
        assert_eq!((lru.map.len(), lru.bytes), (8, 800));
        lru.reserved = 500;
        lru.evict_to_room();
        assert_eq!((lru.map.len(), lru.bytes), (3, 300), "room 800 - 500");
        assert!(lru.map.contains(&BlobId([7; 32])), "the most recent stay");
        lru.reserved = 10_000;
        lru.evict_to_room();
        assert_eq!((lru.map.len(), lru.bytes), (1, 100), "an eighth is kept");
    }
}
