//! A repository in memory, for tests: the same write-once contract as the
//! real backends, plus fault injection (fail every put after the n-th).

use super::{Backend, DeleteBackend, ObjectInfo, ObjectKey, ObjectKind, ReadBackend, WriteBackend};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Objects held in a map.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, (ObjectKey, Vec<u8>)>>,
    puts: AtomicUsize,
    fail_after: Option<usize>,
}

impl MemoryBackend {
    /// An empty backend that never fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty backend whose puts fail after the first `n` succeed.
    pub fn failing_after(n: usize) -> Self {
        Self {
            fail_after: Some(n),
            ..Self::default()
        }
    }

    /// The keys of every object of `kind`.
    pub fn keys(&self, kind: ObjectKind) -> Vec<String> {
        self.lock()
            .values()
            .filter(|(k, _)| k.kind == kind)
            .map(|(k, _)| k.path())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (ObjectKey, Vec<u8>)>> {
        crate::sync::lock(&self.objects)
    }
}

#[async_trait]
impl ReadBackend for MemoryBackend {
    async fn get(&self, key: &ObjectKey) -> Result<Vec<u8>> {
        self.lock()
            .get(&key.path())
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::NotFound(key.path()))
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, length: u64) -> Result<Vec<u8>> {
        let all = self.get(key).await?;
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= all.len() as u64);
        match end {
            Some(end) => Ok(all[offset as usize..end as usize].to_vec()),
            None => Err(Error::damaged(key.path(), "truncated")),
        }
    }

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .lock()
            .values()
            .filter(|(k, _)| k.kind == kind)
            .map(|(k, v)| ObjectInfo {
                name: k.name.clone(),
                size: v.len() as u64,
                modified: None,
            })
            .collect())
    }
}

#[async_trait]
impl WriteBackend for MemoryBackend {
    async fn put_new(&self, key: &ObjectKey, data: Vec<u8>) -> Result<()> {
        let n = self.puts.fetch_add(1, Ordering::SeqCst);
        if self.fail_after.is_some_and(|limit| n >= limit) {
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
        objects.insert(key.path(), (key.clone(), data));
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

impl Backend for MemoryBackend {
    fn describe(&self) -> String {
        "memory".into()
    }
}
