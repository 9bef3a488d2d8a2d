//! Packs: blobs appended back to back under one session key.
//!
//! A [`Packer`] gets a random [`PackId`] when it opens, so every blob knows its
//! final [`Location`] the moment it is appended, before the pack is sealed or
//! stored. That lets directories be written as soon as they are walked
//! (bounded memory) instead of after every pack is stored.

use coffer_core::blob;
use coffer_core::id::{BlobId, PackId};
use coffer_core::index::{IndexBlob, PackKind};
use coffer_core::openpgp::{PackSealer, Recipients};
use coffer_core::tree::Location;

/// A pack being filled.
pub struct Packer {
    id: PackId,
    kind: PackKind,
    sealer: PackSealer,
    bytes: Vec<u8>,
    blobs: Vec<IndexBlob>,
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
    /// Sum of the blobs' plaintext lengths.
    pub raw_bytes: u64,
}

impl Packer {
    /// Opens a pack: new id, new session key (one public-key operation per
    /// recipient).
    pub fn new(
        recipients: &Recipients,
        kind: PackKind,
        level: i32,
        capacity: usize,
    ) -> coffer_core::Result<Self> {
        Ok(Self {
            id: PackId::random(),
            kind,
            sealer: PackSealer::new(recipients)?,
            bytes: Vec::with_capacity(capacity),
            blobs: Vec::new(),
            level,
        })
    }

    /// Compresses, encrypts and appends one blob; returns where it is.
    pub fn add(&mut self, id: BlobId, plain: &[u8]) -> coffer_core::Result<Location> {
        let stored = blob::encode(&self.sealer, self.level, plain)?;
        let loc = Location {
            id,
            pack: self.id,
            offset: self.bytes.len() as u64,
            length: stored.len() as u64,
            raw_length: plain.len() as u64,
        };
        self.bytes.extend_from_slice(&stored);
        self.blobs.push(IndexBlob {
            id,
            offset: loc.offset,
            length: loc.length,
            raw_length: loc.raw_length,
        });
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
            raw_bytes,
        }
    }
}
