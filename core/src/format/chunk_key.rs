//! The chunk-id key: the secret that turns plaintext into blob ids.
//!
//! Blob id = BLAKE3 keyed with this key over the plaintext (a chunk or a
//! tree's JSON). Without it, an observer cannot confirm that a repository
//! holds a guessed file. Writers hold it in the clear (in writer.key);
//! readers unseal it from `config` with their secret key.

use crate::format::id::BlobId;
use zeroize::Zeroize;

/// The 32-byte key of keyed BLAKE3 blob ids. No `Debug`, zeroed on drop.
#[derive(Clone)]
pub struct ChunkIdKey([u8; 32]);

impl ChunkIdKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses a key from a slice; `None` unless it is exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    /// The raw key, for sealing it into `config` or writing writer.key.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The id of a blob whose plaintext is `data`.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.0, data).as_bytes())
    }

    /// The seed of the chunker's gear table, derived from this key so chunk
    /// boundaries reveal less about the data to someone without the key.
    pub fn chunker_seed(&self) -> u64 {
        let derived = blake3::derive_key("coffer 2026 fastcdc gear seed v1", &self.0);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&derived[..8]);
        u64::from_le_bytes(seed)
    }
}

impl Drop for ChunkIdKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_id_depends_on_key_and_data() {
        let a = ChunkIdKey::from_bytes([1; 32]);
        let b = ChunkIdKey::from_bytes([2; 32]);
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), a.blob_id(b"y"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.chunker_seed(), b.chunker_seed());
    }
}
