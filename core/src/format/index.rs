//! Index objects: which blobs a backup run stored, and where.
//!
//! Readers never need them to read a snapshot (references carry locations);
//! `check` and `prune` use them to know every pack's contents.

use crate::error::{Error, Result};
use crate::format::id::{BlobId, PackId};
use serde::{Deserialize, Serialize};

/// Whether a pack holds file chunks or trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackKind {
    /// File contents.
    Data,
    /// Directory trees.
    Tree,
}

/// One blob in a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexBlob {
    /// The blob's id.
    pub id: BlobId,
    /// Offset in the pack.
    pub offset: u64,
    /// Stored length.
    pub length: u64,
    /// Plaintext length.
    pub raw_length: u64,
}

/// One pack and its blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// The pack.
    pub id: PackId,
    /// What it holds.
    pub kind: PackKind,
    /// Its size in bytes.
    pub size: u64,
    /// When it was stored (RFC 3339 UTC).
    pub time: String,
    /// Its blobs, in pack order.
    pub blobs: Vec<IndexBlob>,
}

/// The JSON of an `index/<id>` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Packs stored by one run (a long run writes several index objects).
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    /// Parses an index; `object` names it in errors.
    pub fn from_json(bytes: &[u8], object: &str) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::damaged(object, format!("not an index: {e}")))
    }

    /// Serializes for storage.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
