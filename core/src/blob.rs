//! Blob encoding: plaintext → zstd → OpenPGP, and back with every check.

use crate::chunk_key::ChunkIdKey;
use crate::error::{Error, Result};
use crate::openpgp::{Opener, PackSealer};
use crate::tree::{Location, MAX_BLOB_LEN};

/// Compresses `plain` with zstd at `level` and seals it with the pack's key.
pub fn encode(sealer: &PackSealer, level: i32, plain: &[u8]) -> Result<Vec<u8>> {
    let compressed = zstd::bulk::compress(plain, level).map_err(|e| Error::Storage {
        op: "compress",
        key: "blob".into(),
        source: e,
    })?;
    sealer.seal(&compressed)
}

/// Opens a stored blob read from `object` at `loc`: decrypts, decompresses
/// (never beyond `loc.raw_length`) and checks length and keyed id, so a
/// damaged or swapped blob is an error, never wrong bytes.
pub fn decode(
    opener: &Opener,
    key: &ChunkIdKey,
    loc: &Location,
    object: &str,
    stored: &[u8],
) -> Result<Vec<u8>> {
    let what = format!("{object} (blob {} at offset {})", loc.id, loc.offset);
    if loc.raw_length > MAX_BLOB_LEN {
        return Err(Error::damaged(what, "claimed length too large"));
    }
    let compressed = opener.open(&what, stored)?;
    let capacity = usize::try_from(loc.raw_length)
        .map_err(|_| Error::damaged(&what, "claimed length too large"))?;
    let plain = zstd::bulk::decompress(&compressed, capacity)
        .map_err(|e| Error::damaged(&what, format!("not a valid zstd frame: {e}")))?;
    if plain.len() as u64 != loc.raw_length {
        return Err(Error::damaged(
            &what,
            format!("length {} instead of {}", plain.len(), loc.raw_length),
        ));
    }
    if key.blob_id(&plain) != loc.id {
        return Err(Error::damaged(&what, "content does not match its id"));
    }
    Ok(plain)
}
