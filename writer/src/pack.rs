//! Packs: blobs appended back to back under one session key.
//!
//! A [`Packer`] gets its [`PackId`] when it opens, so every blob knows its
//! final [`Location`] the moment it is appended, before the pack is sealed or
//! stored. That lets directories be written as soon as they are walked
//! (bounded memory) instead of after every pack is stored.

use coffer_core::crypto::blob;
use coffer_core::crypto::{PackSealer, Recipients};
use coffer_core::format::id::{BlobId, PackId};
use coffer_core::format::index::{IndexBlob, PackKind};
use coffer_core::format::tree::Location;
use coffer_core::sync::lock;
use std::sync::Mutex;

/// A pack being filled.
pub struct Packer {
    id: PackId,
    kind: PackKind,
    sealer: PackSealer,
    bytes: Vec<u8>,
    blobs: Vec<IndexBlob>,
    /// When each blob comes due (see `horizon`), in the order of `blobs`.
    dues: Vec<i64>,
    level: i32,
}

/// A full pack, ready to store.
pub struct SealedPack {
    /// Its id.
    pub id: PackId,
    /// What it holds.
    pub kind: PackKind,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The blobs in it.
    pub blobs: Vec<IndexBlob>,
    /// When each blob comes due, in the order of `blobs`.
    pub dues: Vec<i64>,
    /// Sum of the blobs' plaintext lengths.
    pub raw_bytes: u64,
}

/// Buffers of stored packs, kept for the next packs.
///
/// A pack is ~16 MiB. Allocating each one fresh costs 4,096 page faults, and
/// freeing it raised glibc's mmap threshold, after which freed packs stayed
/// in the allocator's arenas: peak RSS grew well past the live data. The
/// pipeline has a fixed number of packs in flight, so a pool as large as
/// that number allocates each buffer once.
pub struct PackBuffers {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl PackBuffers {
    /// A pool that keeps at most `keep` idle buffers.
    pub fn new(keep: usize) -> Self {
        Self {
            free: Mutex::new(Vec::with_capacity(keep)),
            keep,
        }
    }

    /// An empty buffer with room for `capacity` bytes.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buffer = lock(&self.free).pop().unwrap_or_default();
        buffer.clear();
        buffer.reserve(capacity);
        buffer
    }

    /// Returns a buffer for reuse (dropped if the pool is full).
    pub fn give(&self, buffer: Vec<u8>) {
        if buffer.capacity() == 0 {
            return;
        }
        let mut free = lock(&self.free);
        if free.len() < self.keep {
            free.push(buffer);
        }
    }
}

impl Packer {
    /// Opens pack `id` in `buffer` (cleared) with a new session key (one
    /// public-key operation per recipient).
    pub fn new(
        id: PackId,
        recipients: &Recipients,
        kind: PackKind,
        level: i32,
        mut buffer: Vec<u8>,
    ) -> coffer_core::Result<Self> {
        buffer.clear();
        Ok(Self {
            id,
            kind,
            sealer: PackSealer::new(recipients)?,
            bytes: buffer,
            blobs: Vec::new(),
            dues: Vec::new(),
            level,
        })
    }

    /// Whether a blob of `plain_len` bytes, however it compresses, fits
    /// before the pack reaches `pack_size` (an empty pack takes anything).
    /// Sealing before a pack overflows keeps every pack buffer within the
    /// pack size, so the pooled buffers never grow past it.
    pub fn has_room(&self, plain_len: usize, pack_size: u64) -> bool {
        let bound = blob::encoded_len_bound(&self.sealer, plain_len) as u64;
        self.is_empty() || self.len() + bound <= pack_size
    }

    /// The pack's id.
    pub fn id(&self) -> &PackId {
        &self.id
    }

    /// Compresses, encrypts and appends one blob, due at `due`; returns
    /// where it is.
    pub fn add(&mut self, id: BlobId, plain: &[u8], due: i64) -> coffer_core::Result<Location> {
        let offset = self.bytes.len();
        if let Err(e) = blob::encode_into(&self.sealer, self.level, plain, &mut self.bytes) {
            self.bytes.truncate(offset);
            return Err(e);
        }
        let loc = Location {
            id,
            pack: self.id,
            offset: offset as u64,
            length: (self.bytes.len() - offset) as u64,
            raw_length: plain.len() as u64,
        };
        self.blobs.push(IndexBlob {
            id,
            offset: loc.offset,
            length: loc.length,
            raw_length: loc.raw_length,
        });
        self.dues.push(due);
        Ok(loc)
    }

    /// Bytes in the pack so far.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Closes the pack.
    pub fn seal(self) -> SealedPack {
        let raw_bytes = self.blobs.iter().map(|b| b.raw_length).sum();
        SealedPack {
            id: self.id,
            kind: self.kind,
            bytes: self.bytes,
            blobs: self.blobs,
            dues: self.dues,
            raw_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::crypto::{generate_key, normalize_certs};

    fn recipients() -> Recipients {
        let key = generate_key("t").expect("key");
        let certs = normalize_certs(&key.cert_armored, "t").expect("cert");
        Recipients::from_armored(&certs).expect("recipients")
    }

    #[test]
    fn a_pack_filled_while_it_has_room_never_passes_its_size() {
        let pack_size = 1 << 20;
        let mut packer = Packer::new(
            PackId::random(),
            &recipients(),
            PackKind::Data,
            3,
            Vec::new(),
        )
        .expect("pack");
        // Incompressible blobs: the encoded size is the bound's worst case.
        let mut state = 7u64;
        let mut blob = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (state >> 56) as u8
                })
                .collect()
        };
        let mut added = 0;
        for i in 0u8.. {
            let plain = blob(100_000 + usize::from(i) * 1000);
            if !packer.has_room(plain.len(), pack_size) {
                break;
            }
            packer.add(BlobId([i; 32]), &plain, 0).expect("add");
            added += 1;
        }
        assert!(added >= 8, "only {added} blobs");
        assert!(packer.len() <= pack_size, "{} bytes", packer.len());
        assert!(
            packer.len() > pack_size - 120_000,
            "sealed early: {}",
            packer.len()
        );
        // An empty pack takes any blob, however large.
        let empty = Packer::new(
            PackId::random(),
            &recipients(),
            PackKind::Data,
            3,
            Vec::new(),
        )
        .expect("pack");
        assert!(empty.has_room(10 << 20, pack_size));
    }

    #[test]
    fn buffers_are_reused_and_the_pool_is_capped() {
        let pool = PackBuffers::new(1);
        let mut first = pool.take(4096);
        first.extend_from_slice(b"old bytes");
        let ptr = first.as_ptr();
        pool.give(first);
        pool.give(Vec::with_capacity(10));
        let again = pool.take(4096);
        assert_eq!(again.as_ptr(), ptr, "the buffer given back is taken again");
        assert!(again.is_empty() && again.capacity() >= 4096);
        assert_eq!(
            pool.take(10).len(),
            0,
            "the second buffer was dropped (cap 1)"
        );
    }
}
