//! An object read as a stream, a range at a time, for a parser on a
//! blocking thread: memory stays at one range however large the object.
//! Its SHA-256 is computed on the way, so that an object named by its
//! hash is checked once its last byte has been read.

use super::{Backend, ObjectKey};
use crate::error::Error;
use crate::format::id::ObjectId;
use crate::sync::lock;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::sync::{Arc, Mutex};

/// Bytes fetched with one ranged read.
const RANGE: u64 = 8 << 20;

/// What a [`RangedReader`] leaves behind for its owner: the first error
/// from the store (the parser sees only an I/O error) and, once every byte
/// has been read, the object's SHA-256.
#[derive(Default)]
pub struct Outcome {
    /// The store's error that ended the reading, as it was.
    pub failed: Option<Error>,
    /// The SHA-256 of all `size` bytes, once read to the end.
    pub digest: Option<ObjectId>,
}

/// `size` bytes of one object, fetched [`RANGE`] bytes at a time with
/// `handle.block_on` (so: only from a thread outside the runtime, such as
/// tokio's blocking pool).
pub struct RangedReader {
    handle: tokio::runtime::Handle,
    backend: Arc<dyn Backend>,
    key: ObjectKey,
    size: u64,
    /// Bytes fetched so far.
    at: u64,
    range: Vec<u8>,
    /// Bytes of `range` handed out.
    pos: usize,
    hasher: Sha256,
    outcome: Arc<Mutex<Outcome>>,
}

impl RangedReader {
    /// A reader of `key`, `size` bytes long (as listed), and where it will
    /// leave its [`Outcome`].
    pub fn new(
        handle: tokio::runtime::Handle,
        backend: Arc<dyn Backend>,
        key: ObjectKey,
        size: u64,
    ) -> (Self, Arc<Mutex<Outcome>>) {
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let reader = Self {
            handle,
            backend,
            key,
            size,
            at: 0,
            range: Vec::new(),
            pos: 0,
            hasher: Sha256::new(),
            outcome: outcome.clone(),
        };
        (reader, outcome)
    }

    /// Fetches the next range; `false` at the end of the object (its
    /// digest then left in the outcome).
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.at >= self.size {
            let mut outcome = lock(&self.outcome);
            if outcome.digest.is_none() {
                let hasher = std::mem::take(&mut self.hasher);
                outcome.digest = Some(ObjectId(hasher.finalize().into()));
            }
            return Ok(false);
        }
        let length = RANGE.min(self.size - self.at);
        let fetched = self
            .handle
            .block_on(self.backend.get_range(&self.key, self.at, length));
        let range = match fetched {
            Ok(range) if range.len() as u64 == length => range,
            Ok(range) => {
                let short = Error::damaged(
                    self.key.path(),
                    format!("a read of {length} bytes returned {}", range.len()),
                );
                return Err(self.failed(short));
            }
            Err(e) => return Err(self.failed(e)),
        };
        self.hasher.update(&range);
        self.at += length;
        self.range = range;
        self.pos = 0;
        Ok(true)
    }

    /// Keeps `e` for the owner; the parser gets an I/O error saying it.
    fn failed(&self, e: Error) -> std::io::Error {
        let said = std::io::Error::other(e.to_string());
        lock(&self.outcome).failed.get_or_insert(e);
        said
    }
}

impl Read for RangedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.range.len() && !self.fill()? {
            return Ok(0);
        }
        let left = &self.range[self.pos..];
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::backend::{ObjectKind, WriteBackend};

    fn stored(bytes: &[u8]) -> (tokio::runtime::Runtime, Arc<MemoryBackend>, ObjectKey) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let backend = Arc::new(MemoryBackend::new());
        let key = ObjectKey::new(ObjectKind::Index, ObjectId::of_bytes(bytes).to_hex());
        rt.block_on(backend.put_new(&key, bytes.to_vec())).unwrap();
        (rt, backend, key)
    }

    #[test]
    fn an_object_reads_whole_a_range_at_a_time_and_its_digest_is_left_at_the_end() {
        let bytes: Vec<u8> = (0..(RANGE as usize * 2 + 1000)).map(|n| n as u8).collect();
        let (rt, backend, key) = stored(&bytes);
        let (mut reader, outcome) = RangedReader::new(
            rt.handle().clone(),
            backend.clone(),
            key,
            bytes.len() as u64,
        );
        let read = std::thread::spawn(move || {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        })
        .join()
        .unwrap()
        .unwrap();
        assert!(read == bytes);
        assert_eq!(backend.reads(), 3);
        let outcome = lock(&outcome);
        assert_eq!(outcome.digest, Some(ObjectId::of_bytes(&bytes)));
        assert!(outcome.failed.is_none());
    }

    #[test]
    fn an_object_shorter_than_listed_is_damage_kept_for_the_owner() {
        let (rt, backend, key) = stored(b"short");
        let (mut reader, outcome) = RangedReader::new(rt.handle().clone(), backend, key, 100);
        let err = std::thread::spawn(move || reader.read_to_end(&mut Vec::new()))
            .join()
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let outcome = lock(&outcome);
        assert!(matches!(outcome.failed, Some(Error::Damaged { .. })));
        assert!(outcome.digest.is_none());
    }
}
