//! Blob encoding: plaintext → zstd → OpenPGP, and back with every check.

use crate::crypto::open::Opener;
use crate::crypto::seal::PackSealer;
use crate::error::{Error, Result};
use crate::format::chunk_key::ChunkIdKey;
use crate::format::tree::{Location, MAX_BLOB_LEN};
use std::cell::RefCell;
use zstd::bulk::{Compressor, Decompressor};

thread_local! {
    // zstd contexts, one per thread and reused: making one per blob cost
    // about 5% of the time to encode or decode a blob (its tables are
    // allocated and cleared each time).
    static COMPRESSOR: RefCell<Option<(i32, Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `plain` with zstd at `level` and seals it with the pack's key.
pub fn encode(sealer: &PackSealer, level: i32, plain: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(sealer, level, plain, &mut out)?;
    Ok(out)
}

/// [`encode`], appending the stored blob to `out` (a pack being filled).
/// On error `out` may hold part of it.
pub fn encode_into(sealer: &PackSealer, level: i32, plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let compressed = compress(level, plain).map_err(|e| Error::Storage {
        op: "compress",
        key: "blob".into(),
        source: e,
    })?;
    out.reserve(sealer.sealed_len_bound(compressed.len()));
    sealer.seal_into(&compressed, out)
}

/// At least the length [`encode`] makes of `plain_len` bytes, whatever they
/// hold (zstd's bound for incompressible input, plus the envelope).
pub fn encoded_len_bound(sealer: &PackSealer, plain_len: usize) -> usize {
    sealer.sealed_len_bound(zstd::zstd_safe::compress_bound(plain_len))
}

/// zstd at `level`, with this thread's reused context.
pub fn compress(level: i32, plain: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let compressor = match slot {
            Some((l, c)) if *l == level => c,
            _ => &mut slot.insert((level, Compressor::new(level)?)).1,
        };
        compressor.compress(plain)
    })
}

/// Decompresses one zstd frame of at most `capacity` bytes, with this
/// thread's reused context.
pub fn decompress(compressed: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(d) => d,
            None => slot.insert(Decompressor::new()?),
        };
        decompressor.decompress(compressed, capacity)
    })
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
    let plain = decompress(&compressed, capacity)
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
