//! The metadata cache: whole tree packs, as stored (encrypted), on local
//! disk, so that reading a snapshot's directories costs one request per
//! tree pack instead of one per directory, and the next time nothing.
//!
//! A backup run writes its trees together into tree packs; the first tree
//! read from a pack fetches the whole pack (one GET) and keeps it here,
//! under `<dir>/<first 2 hex>/<pack id>`. A pack never changes (packs are
//! named by a random id and never rewritten), so nothing cached goes
//! stale; it is only ever served through the same verification as a fresh
//! read (a blob's OpenPGP integrity check and keyed id), and a cached file
//! that fails it is dropped and fetched again. Files appear by rename
//! only, so concurrent readers (two mounts and a restore) never see part of
//! one. The total is kept under a byte limit, least recently used first
//! (a file's mtime is its last use). A cache that cannot be written (full,
//! read-only) is said once and the reader goes on without storing.
//!
//! [`ChunkCache`] keeps, the same way, the chunks a mount read (each blob
//! as stored, under `<dir>/<first 2 hex>/<blob id>`), so browsing a
//! snapshot again after a remount reads from local disk; the opened
//! snapshots (`super::opened_cache`) are kept by name the same way too.

use crate::format::id::{BlobId, PackId};
use crate::sync::lock;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A temporary file older than this was left by a reader that died while
/// storing a pack.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Tree packs and snapshot objects of one repository on local disk.
pub struct MetadataCache {
    /// What it is called in messages.
    what: &'static str,
    dir: PathBuf,
    limit: u64,
    /// Bytes the cache holds, once counted (at the first store).
    used: Mutex<Option<u64>>,
    /// One fetch per pack at a time: later readers of the same pack wait
    /// for it, then read the file.
    flights: Mutex<HashMap<PackId, Arc<tokio::sync::Mutex<()>>>>,
    /// Storing failed once: said, and no more attempts.
    read_only: AtomicBool,
}

impl MetadataCache {
    /// A cache in `dir` (made when first stored to) of at most `limit`
    /// bytes.
    pub fn new(dir: PathBuf, limit: u64) -> Self {
        Self::named("metadata cache", dir, limit)
    }

    pub(super) fn named(what: &'static str, dir: PathBuf, limit: u64) -> Self {
        Self {
            what,
            dir,
            limit,
            used: Mutex::new(None),
            flights: Mutex::new(HashMap::new()),
            read_only: AtomicBool::new(false),
        }
    }

    /// The largest file it keeps: a quarter of its bound.
    pub fn largest_kept(&self) -> u64 {
        self.limit / 4
    }

    /// Where it is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, pack: &PackId) -> PathBuf {
        let hex = pack.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Where the file named `name` is kept (under its first two
    /// characters, as packs are); `None` for a name that is not a plain
    /// file name.
    fn named_path(&self, name: &str) -> Option<PathBuf> {
        let plain = name.len() > 2
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        plain.then(|| self.dir.join(&name[..2]).join(name))
    }

    /// `length` bytes at `offset` of the cached `pack`, if it is here and
    /// that long (marked as just used); unverified.
    pub fn read(&self, pack: &PackId, offset: u64, length: u64) -> Option<Vec<u8>> {
        let file = std::fs::File::open(self.path_of(pack)).ok()?;
        // The range must lie in the file before anything of its claimed
        // length is allocated.
        let size = file.metadata().ok()?.len();
        if offset.checked_add(length)? > size {
            return None;
        }
        let mut buf = vec![0; usize::try_from(length).ok()?];
        file.read_exact_at(&mut buf, offset).ok()?;
        let _ = file.set_modified(SystemTime::now());
        Some(buf)
    }

    /// The whole file `name`, if here (marked as just used); unverified.
    pub fn read_named(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.named_path(name)?;
        let file = std::fs::File::open(path).ok()?;
        // Never larger than what is kept (a bigger file is not the cache's).
        if file.metadata().ok()?.len() > self.largest_kept() {
            return None;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut (&file).take(self.largest_kept()), &mut bytes).ok()?;
        let _ = file.set_modified(SystemTime::now());
        Some(bytes)
    }

    /// Keeps `bytes` as the file `name` (see [`MetadataCache::store`]).
    pub fn store_named(&self, name: &str, bytes: &[u8]) {
        if let Some(path) = self.named_path(name) {
            self.store_at(&path, bytes);
        }
    }

    /// Forgets the file `name` (it failed verification).
    pub fn remove_named(&self, name: &str) {
        if let Some(path) = self.named_path(name) {
            self.remove_at(&path);
        }
    }

    /// Forgets a cached pack that failed verification.
    pub fn remove(&self, pack: &PackId) {
        self.remove_at(&self.path_of(pack));
    }

    fn remove_at(&self, path: &Path) {
        if let Ok(meta) = std::fs::metadata(path) {
            if std::fs::remove_file(path).is_ok() {
                if let Some(used) = lock(&self.used).as_mut() {
                    *used = used.saturating_sub(meta.len());
                }
            }
        }
    }

    /// The lock that makes one reader fetch `pack` while the others wait.
    pub fn flight(&self, pack: &PackId) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.flights).entry(*pack).or_default().clone()
    }

    /// Done with `pack`'s fetch: its lock is no longer needed.
    pub fn landed(&self, pack: &PackId) {
        let mut flights = lock(&self.flights);
        if flights.get(pack).is_some_and(|f| Arc::strong_count(f) == 1) {
            flights.remove(pack);
        }
    }

    /// Keeps `bytes` as `pack` (written aside, then renamed into place),
    /// then evicts the least recently used packs past the limit. A failure
    /// is said once; the cache then stops storing.
    pub fn store(&self, pack: &PackId, bytes: &[u8]) {
        self.store_at(&self.path_of(pack), bytes);
    }

    fn store_at(&self, path: &Path, bytes: &[u8]) {
        if self.read_only.load(Ordering::Relaxed) || bytes.len() as u64 > self.largest_kept() {
            return;
        }
        if let Err(e) = self.write(path, bytes) {
            if !self.read_only.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "{} {}: cannot store there ({e}); going on without caching \
                     (free some room, or use --no-cache)",
                    self.what,
                    self.dir.display()
                );
            }
            return;
        }
        let over = {
            let mut used = lock(&self.used);
            let total = used
                .get_or_insert_with(|| self.size())
                .saturating_add(bytes.len() as u64);
            *used = Some(total);
            total > self.limit
        };
        if over {
            self.evict();
        }
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let parent = path.parent().unwrap_or(&self.dir);
        crate::private_dir::create(parent)?;
        // A temporary file is 0600; renamed, it stays so.
        let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
        tmp.write_all(bytes)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Every cached pack: path, size, last use.
    fn files(&self) -> Vec<(PathBuf, u64, SystemTime)> {
        let mut out = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for dir in dirs.flatten() {
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for file in files.flatten() {
                let Ok(meta) = file.metadata() else {
                    continue;
                };
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                if file.file_name().as_encoded_bytes().starts_with(b".tmp") {
                    // Left by a reader killed while storing: never served
                    // (only renamed files are), removed once clearly stale.
                    if used.elapsed().is_ok_and(|age| age > STALE_TEMPORARY) {
                        let _ = std::fs::remove_file(file.path());
                    }
                    continue;
                }
                out.push((file.path(), meta.len(), used));
            }
        }
        out
    }

    /// Removes the least recently used packs until the cache holds at most
    /// 90% of its limit (so it does not scan at every store).
    fn evict(&self) {
        let mut files = self.files();
        files.sort_by_key(|f| f.2);
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        let target = self.limit / 10 * 9;
        for (path, size, _) in files {
            if total <= target {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(size);
            }
        }
        *lock(&self.used) = Some(total);
    }

    /// Bytes the cache holds now.
    pub fn size(&self) -> u64 {
        self.files().iter().map(|f| f.1).sum()
    }
}

/// The chunks a mount read from a remote repository, each blob as stored
/// (encrypted), bounded and evicted like the [`MetadataCache`]. Only ever
/// served through the same decryption and keyed-id check as a fresh read.
pub struct ChunkCache(MetadataCache);

impl ChunkCache {
    /// A cache in `dir` (made when first stored to) of at most `limit`
    /// bytes.
    pub fn new(dir: PathBuf, limit: u64) -> Self {
        Self(MetadataCache::named("chunk cache", dir, limit))
    }

    /// The stored bytes of blob `id` (`length` of them), if cached (marked
    /// as just used); unverified.
    pub fn read(&self, id: &BlobId, length: u64) -> Option<Vec<u8>> {
        self.0.read(&PackId(id.0), 0, length)
    }

    /// Keeps blob `id`'s stored bytes (see [`MetadataCache::store`]).
    pub fn store(&self, id: &BlobId, stored: &[u8]) {
        self.0.store(&PackId(id.0), stored);
    }

    /// Forgets a cached blob that failed verification.
    pub fn remove(&self, id: &BlobId) {
        self.0.remove(&PackId(id.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_are_kept_read_back_and_the_least_recently_used_go_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = MetadataCache::new(dir.path().join("trees"), 4000);
        let pack = |n: u8| PackId([n; 32]);
        cache.store(&pack(1), &[1; 900]);
        cache.store(&pack(2), &[2; 900]);
        assert_eq!(cache.read(&pack(1), 10, 5), Some(vec![1; 5]));
        assert_eq!(cache.read(&pack(1), 899, 5), None, "past its end");
        assert_eq!(cache.read(&pack(3), 0, 5), None, "not cached");
        // Pack 1 used last: 2 is the least recently used.
        let past = SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::open(cache.path_of(&pack(2)))
            .and_then(|f| f.set_modified(past))
            .expect("age pack 2");
        cache.store(&pack(3), &[3; 900]);
        cache.store(&pack(4), &[4; 900]);
        cache.store(&pack(5), &[5; 900]);
        assert!(cache.size() <= 4000, "{}", cache.size());
        assert_eq!(cache.read(&pack(2), 0, 1), None, "the oldest went");
        assert_eq!(cache.read(&pack(5), 0, 1), Some(vec![5]));
        cache.remove(&pack(5));
        assert_eq!(cache.read(&pack(5), 0, 1), None);
        cache.store_named("ab12.cd34", b"snapshot");
        assert_eq!(
            cache.read_named("ab12.cd34").as_deref(),
            Some(&b"snapshot"[..])
        );
        assert!(dir.path().join("trees/ab/ab12.cd34").exists());
        cache.store_named("../escape", b"x");
        assert_eq!(cache.read_named("../escape"), None);
        assert!(!dir.path().join("escape").exists());
        let leftovers = std::fs::read_dir(cache.path_of(&pack(1)).parent().unwrap())
            .unwrap()
            .count();
        assert_eq!(leftovers, 1, "no temporary file is left beside a pack");
    }

    #[test]
    fn a_cache_that_cannot_be_written_stores_nothing_and_reads_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"not a directory").expect("write");
        let cache = MetadataCache::new(blocker.join("trees"), 1 << 20);
        cache.store(&PackId([1; 32]), &[1; 10]);
        assert!(cache.read_only.load(Ordering::Relaxed));
        assert_eq!(cache.read(&PackId([1; 32]), 0, 1), None);
    }
}
