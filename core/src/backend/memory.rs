//! A repository in memory, for tests: the same write-once contract as the
//! real backends, plus fault injection (fail every put after the n-th,
//! fail the reads of chosen objects, flip a bit of one) and a clock to
//! turn back (objects listed as stored earlier, for prune's horizon), and
//! a count of reads.

use super::{Backend, DeleteBackend, ObjectInfo, ObjectKey, ObjectKind, ReadBackend, WriteBackend};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// One stored object.
struct Stored {
    key: ObjectKey,
    data: Vec<u8>,
    /// When it was stored, as listings report it.
    at: SystemTime,
}

/// Objects held in a map.
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, Stored>>,
    puts: AtomicUsize,
    /// Puts numbered from this one on fail (`usize::MAX`: none).
    fail_after: AtomicUsize,
    /// Paths whose reads fail as an unreachable store would.
    unreadable: Mutex<HashSet<String>>,
    /// Reads (whole or ranged) so far.
    reads: AtomicUsize,
    /// Bytes those reads returned.
    read_bytes: AtomicU64,
    /// Paths read that did not exist, in order.
    misses: Mutex<Vec<String>>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self {
            objects: Mutex::default(),
            puts: AtomicUsize::new(0),
            fail_after: AtomicUsize::new(usize::MAX),
            unreadable: Mutex::default(),
            reads: AtomicUsize::new(0),
            read_bytes: AtomicU64::new(0),
            misses: Mutex::default(),
        }
    }
}

impl MemoryBackend {
    /// An empty backend that never fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty backend whose puts fail after the first `n` succeed.
    pub fn failing_after(n: usize) -> Self {
        let b = Self::default();
        b.fail_after.store(n, Ordering::SeqCst);
        b
    }

    /// Ends the failures `failing_after` injected: every later put works.
    pub fn heal(&self) {
        self.fail_after.store(usize::MAX, Ordering::SeqCst);
    }

    /// The keys of every object of `kind`.
    pub fn keys(&self, kind: ObjectKind) -> Vec<String> {
        self.lock()
            .values()
            .filter(|o| o.key.kind == kind)
            .map(|o| o.key.path())
            .collect()
    }

    /// Every object's path and bytes.
    pub fn contents(&self) -> BTreeMap<String, Vec<u8>> {
        (self.lock().iter())
            .map(|(path, o)| (path.clone(), o.data.clone()))
            .collect()
    }

    /// Lists every object as stored `by` earlier than it was.
    pub fn backdate(&self, by: Duration) {
        for o in self.lock().values_mut() {
            o.at = o.at.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH);
        }
    }

    /// Flips one bit of the object at `path`, at byte `offset` (counted
    /// from its end if it is past it); whether there was such an object.
    pub fn corrupt(&self, path: &str, offset: usize) -> bool {
        let mut objects = self.lock();
        let Some(o) = objects.get_mut(path).filter(|o| !o.data.is_empty()) else {
            return false;
        };
        let at = offset.min(o.data.len() - 1);
        o.data[at] ^= 0x10;
        true
    }

    /// Makes every read of the object at `path` fail as an unreachable
    /// store's would (not as damage).
    pub fn fail_reads(&self, path: &str) {
        crate::sync::lock(&self.unreadable).insert(path.to_string());
    }

    /// Reads (whole or ranged, of any object) served so far.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Bytes the reads so far returned (a ranged read counts its range).
    pub fn read_bytes(&self) -> u64 {
        self.read_bytes.load(Ordering::SeqCst)
    }

    /// The paths read so far that did not exist (a reader looking in the
    /// wrong place, or a missing object), in order.
    pub fn misses(&self) -> Vec<String> {
        crate::sync::lock(&self.misses).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Stored>> {
        crate::sync::lock(&self.objects)
    }
}

#[async_trait]
impl ReadBackend for MemoryBackend {
    async fn get(&self, key: &ObjectKey, limit: u64) -> Result<Vec<u8>> {
        let data = self.get_any(key)?;
        super::check_size(&key.path(), data.len() as u64, limit)?;
        self.read_bytes
            .fetch_add(data.len() as u64, Ordering::SeqCst);
        Ok(data)
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, length: u64) -> Result<Vec<u8>> {
        let all = self.get_any(key)?;
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= all.len() as u64);
        match end {
            Some(end) => {
                self.read_bytes.fetch_add(end - offset, Ordering::SeqCst);
                Ok(all[offset as usize..end as usize].to_vec())
            }
            None => Err(Error::damaged(key.path(), "truncated")),
        }
    }

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .lock()
            .values()
            .filter(|o| o.key.kind == kind)
            .map(|o| ObjectInfo {
                name: o.key.name.clone(),
                size: o.data.len() as u64,
                modified: Some(o.at),
                storage_class: None,
            })
            .collect())
    }
}

impl MemoryBackend {
    /// The whole object, whatever its size (or the injected fault).
    fn get_any(&self, key: &ObjectKey) -> Result<Vec<u8>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if crate::sync::lock(&self.unreadable).contains(&key.path()) {
            return Err(Error::Storage {
                op: "get",
                key: key.path(),
                source: std::io::Error::other("injected fault"),
            });
        }
        let found = self.lock().get(&key.path()).map(|o| o.data.clone());
        found.ok_or_else(|| {
            crate::sync::lock(&self.misses).push(key.path());
            Error::NotFound(key.path())
        })
    }
}

#[async_trait]
impl WriteBackend for MemoryBackend {
    async fn put_new(&self, key: &ObjectKey, data: Vec<u8>) -> Result<()> {
        let n = self.puts.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_after.load(Ordering::SeqCst) {
            return Err(Error::Storage {
                op: "put",
                key: key.path(),
                source: std::io::Error::other("injected fault"),
            });
        }
        let mut objects = self.lock();
        if objects.contains_key(&key.path()) {
            return Err(Error::AlreadyExists(key.path()));
        }
        let stored = Stored {
            key: key.clone(),
            data,
            at: SystemTime::now(),
        };
        objects.insert(key.path(), stored);
        Ok(())
    }
}

#[async_trait]
impl DeleteBackend for MemoryBackend {
    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.lock().remove(&key.path());
        Ok(())
    }
}

impl super::Carry for MemoryBackend {}

impl Backend for MemoryBackend {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn location(&self) -> String {
        "memory".into()
    }
}
