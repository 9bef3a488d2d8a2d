//! The opened-snapshot cache: each snapshot's plaintext, once its object
//! was checked (SHA-256 = its name, a writer's signature, the host tag),
//! kept on local disk sealed with AES-256-GCM, so listing thousands of
//! snapshots again costs one symmetric decryption each instead of two
//! public-key operations (a PKESK decryption and an Ed25519 check).
//!
//! The key is derived (BLAKE3 `derive_key`) from the chunk-id key and the
//! SHA-256 of the last object of the key state the repository was opened
//! with (its last key change, or `config` before any): only a holder of
//! the repository's secrets can make an entry the reader accepts, and a
//! key change (a writer added or revoked) changes the key, so every entry
//! opened under the old one is dropped and opened again from the store.
//! An entry keeps the fingerprint of the writer that signed the snapshot. The object's name is the associated data:
//! an entry cannot be served for another snapshot. A file is `2` (format),
//! a 12-byte random nonce, the ciphertext, the 16-byte tag; one that fails
//! to open is deleted. Kept by the [`MetadataCache`]'s rules (rename into
//! place, bounded, least recently used first), in its own directory, for
//! local repositories too (the work saved is cryptographic, not I/O).

use super::metadata_cache::MetadataCache;
use crate::format::chunk_key::ChunkIdKey;
use crate::format::id::ObjectId;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use std::path::PathBuf;
use zeroize::Zeroizing;

/// The first byte of every entry: the format described above. (1 held the
/// JSON alone; 2 puts the signer's fingerprint and a line feed before it.)
const FORMAT: u8 = 2;
const NONCE: usize = 12;
const TAG: usize = 16;

/// Opened snapshots of one repository, sealed on local disk.
pub struct OpenedCache {
    files: MetadataCache,
    key: std::sync::RwLock<Zeroizing<[u8; 32]>>,
}

/// The key entries are sealed with, for this chunk-id key and key state.
fn derive(chunk_key: &ChunkIdKey, head: &ObjectId) -> Zeroizing<[u8; 32]> {
    let mut material = Zeroizing::new([0u8; 64]);
    material[..32].copy_from_slice(chunk_key.expose());
    material[32..].copy_from_slice(&head.0);
    Zeroizing::new(blake3::derive_key(
        "coffer 2026 opened snapshot cache v1",
        &material[..],
    ))
}

impl OpenedCache {
    /// A cache in `dir` of at most `limit` bytes, for the repository
    /// whose chunk-id key and key state (its head's digest) these are.
    pub fn new(dir: PathBuf, limit: u64, chunk_key: &ChunkIdKey, config: &ObjectId) -> Self {
        Self {
            files: MetadataCache::named("opened-snapshot cache", dir, limit),
            key: std::sync::RwLock::new(derive(chunk_key, config)),
        }
    }

    /// Seals and opens with the key of another key state from now on (a
    /// key change seen while running): what was opened under the old one
    /// is opened again from the store.
    pub fn rekey(&self, chunk_key: &ChunkIdKey, head: &ObjectId) {
        *self
            .key
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = derive(chunk_key, head);
    }

    fn key(&self) -> Zeroizing<[u8; 32]> {
        self.key
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The fingerprint of the writer that signed snapshot object `name`
    /// (`None`: the repository predates signing) and its plaintext, if an
    /// entry for it opens (one that does not is deleted).
    pub fn read(&self, name: &str) -> Option<(Option<String>, Vec<u8>)> {
        let sealed = self.files.read_named(name)?;
        let opened = self.open(name, &sealed).and_then(|mut plain| {
            let line = plain.iter().position(|&b| b == b'\n')?;
            let signer = String::from_utf8(plain[..line].to_vec()).ok()?;
            plain.drain(..=line);
            Some(((!signer.is_empty()).then_some(signer), plain))
        });
        if opened.is_none() {
            tracing::debug!("opened-snapshot cache: entry {name} does not open; dropped");
            self.files.remove_named(name);
        }
        opened
    }

    /// Keeps the checked plaintext of snapshot object `name`.
    pub fn store(&self, name: &str, signer: Option<&str>, json: &[u8]) {
        let mut plaintext = Vec::with_capacity(41 + json.len());
        plaintext.extend_from_slice(signer.unwrap_or("").as_bytes());
        plaintext.push(b'\n');
        plaintext.extend_from_slice(json);
        if let Some(sealed) = self.seal(name, &plaintext) {
            self.files.store_named(name, &sealed);
        }
    }

    /// Forgets the entry of snapshot object `name` (its content proved
    /// unusable after opening).
    pub fn remove(&self, name: &str) {
        self.files.remove_named(name);
    }

    fn seal(&self, name: &str, plaintext: &[u8]) -> Option<Vec<u8>> {
        let nonce: [u8; NONCE] = rand::random();
        let mut tag = [0u8; TAG];
        let cipher = Cipher::aes_256_gcm();
        let body = encrypt_aead(
            cipher,
            &self.key()[..],
            Some(&nonce),
            name.as_bytes(),
            plaintext,
            &mut tag,
        )
        .ok()?;
        let mut out = Vec::with_capacity(1 + NONCE + body.len() + TAG);
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
        Some(out)
    }

    fn open(&self, name: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let (&format, rest) = sealed.split_first()?;
        if format != FORMAT || rest.len() < NONCE + TAG {
            return None;
        }
        let (nonce, rest) = rest.split_at(NONCE);
        let (body, tag) = rest.split_at(rest.len() - TAG);
        let cipher = Cipher::aes_256_gcm();
        decrypt_aead(
            cipher,
            &self.key()[..],
            Some(nonce),
            name.as_bytes(),
            body,
            tag,
        )
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &std::path::Path, config: u8) -> OpenedCache {
        let key = ChunkIdKey::from_bytes([7; 32]);
        OpenedCache::new(dir.join("opened"), 1 << 20, &key, &ObjectId([config; 32]))
    }

    #[test]
    fn an_entry_opens_only_for_its_name_under_the_same_key_and_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opened = cache(dir.path(), 1);
        opened.store("ab12.cd34", Some("ABCD"), b"{\"snapshot\":1}");
        assert_eq!(
            opened.read("ab12.cd34"),
            Some((Some("ABCD".to_string()), b"{\"snapshot\":1}".to_vec()))
        );
        // An unsigned snapshot (a repository from before signing).
        opened.store("ab13.cd34", None, b"{}");
        assert_eq!(opened.read("ab13.cd34"), Some((None, b"{}".to_vec())));
        let file = dir.path().join("opened/ab/ab12.cd34");
        let sealed = std::fs::read(&file).expect("entry on disk");
        assert!(
            !sealed.windows(8).any(|w| w == b"snapshot"),
            "the plaintext is not on disk"
        );

        // Served under another name: refused, and dropped.
        std::fs::create_dir_all(dir.path().join("opened/ef")).expect("mkdir");
        std::fs::write(dir.path().join("opened/ef/ef56.0000"), &sealed).expect("copy");
        assert_eq!(opened.read("ef56.0000"), None);
        assert!(!dir.path().join("opened/ef/ef56.0000").exists());

        // Another key state (a writer added or revoked): not opened.
        assert_eq!(cache(dir.path(), 2).read("ab12.cd34"), None);
        assert!(!file.exists(), "dropped once it failed");

        // A flipped byte: refused.
        opened.store("ab12.cd34", Some("ABCD"), b"{\"snapshot\":1}");
        let mut flipped = std::fs::read(&file).expect("entry");
        let last = flipped.len() - 20;
        flipped[last] ^= 1;
        std::fs::write(&file, &flipped).expect("flip");
        assert_eq!(opened.read("ab12.cd34"), None);
    }
}
