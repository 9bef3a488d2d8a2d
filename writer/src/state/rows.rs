//! The row format of a file record's `chunks` column: binary (locations
//! as ids and LEB128 varints, holes, and for an S3 object its attributes),
//! and the JSON earlier versions wrote, which is still read.

use coffer_core::format::id::{BlobId, PackId};
use coffer_core::format::tree::{Hole, Location, Xattr};

/// A file's row keeps its chunks in `chunks`: in binary (first byte
/// [`BINARY_CHUNKS`]), or as JSON as earlier versions wrote them: a list of
/// locations, or for a sparse file the locations with its holes.
/// Both are read; only binary is written. Binary, a location is 64 bytes of
/// ids and three varints (~70 bytes against ~190 of JSON), which is most of
/// a small file's row: at 1M files the state went from 366 MB to 235 MB.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub(super) enum JsonChunks {
    Plain(Vec<Location>),
    Sparse {
        chunks: Vec<Location>,
        holes: Vec<Hole>,
    },
}

/// The first byte of a binary chunk list; JSON starts with `[` or `{`.
const BINARY_CHUNKS: u8 = 1;
/// The first byte of a binary chunk list followed by extended attributes
/// (an S3 object's, which are not read again while it is unchanged).
/// Versions before it read such a row as damaged: the object is read again.
const BINARY_CHUNKS_XATTRS: u8 = 2;

/// `chunks` and `holes` in the binary row format: [`BINARY_CHUNKS`], the
/// number of locations, each as blob id, pack id, offset, length, raw
/// length; then the number of holes, each as offset, length. With
/// `xattrs`, [`BINARY_CHUNKS_XATTRS`] and the same, then the number of
/// attributes, each as name length, name, value length, value. Numbers are
/// LEB128 varints.
pub(super) fn encode_chunks(chunks: &[Location], holes: &[Hole], xattrs: &[Xattr]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + chunks.len() * 80 + holes.len() * 10);
    out.push(if xattrs.is_empty() {
        BINARY_CHUNKS
    } else {
        BINARY_CHUNKS_XATTRS
    });
    put_varint(&mut out, chunks.len() as u64);
    for loc in chunks {
        out.extend_from_slice(&loc.id.0);
        out.extend_from_slice(&loc.pack.0);
        put_varint(&mut out, loc.offset);
        put_varint(&mut out, loc.length);
        put_varint(&mut out, loc.raw_length);
    }
    put_varint(&mut out, holes.len() as u64);
    for hole in holes {
        put_varint(&mut out, hole.offset);
        put_varint(&mut out, hole.length);
    }
    if !xattrs.is_empty() {
        put_varint(&mut out, xattrs.len() as u64);
        for x in xattrs {
            put_varint(&mut out, x.name.len() as u64);
            out.extend_from_slice(&x.name);
            put_varint(&mut out, x.value.len() as u64);
            out.extend_from_slice(&x.value);
        }
    }
    out
}

/// A row's chunks, holes and attributes (binary) or chunks and holes
/// (JSON); `None` if it does not parse.
pub(super) fn decode_chunks(bytes: &[u8]) -> Option<(Vec<Location>, Vec<Hole>, Vec<Xattr>)> {
    let with_xattrs = match bytes.first() {
        Some(&BINARY_CHUNKS) => false,
        Some(&BINARY_CHUNKS_XATTRS) => true,
        _ => {
            return match serde_json::from_slice(bytes).ok()? {
                JsonChunks::Plain(chunks) => Some((chunks, Vec::new(), Vec::new())),
                JsonChunks::Sparse { chunks, holes } => Some((chunks, holes, Vec::new())),
            }
        }
    };
    let mut rest = &bytes[1..];
    let n = usize::try_from(take_varint(&mut rest)?).ok()?;
    let mut chunks = Vec::with_capacity(n.min(rest.len() / 67));
    for _ in 0..n {
        let id = BlobId(take_id(&mut rest)?);
        let pack = PackId(take_id(&mut rest)?);
        chunks.push(Location {
            id,
            pack,
            offset: take_varint(&mut rest)?,
            length: take_varint(&mut rest)?,
            raw_length: take_varint(&mut rest)?,
        });
    }
    let n = usize::try_from(take_varint(&mut rest)?).ok()?;
    let mut holes = Vec::with_capacity(n.min(rest.len() / 2));
    for _ in 0..n {
        holes.push(Hole {
            offset: take_varint(&mut rest)?,
            length: take_varint(&mut rest)?,
        });
    }
    let mut xattrs = Vec::new();
    if with_xattrs {
        let n = usize::try_from(take_varint(&mut rest)?).ok()?;
        for _ in 0..n.min(rest.len()) {
            let name = take_bytes(&mut rest)?;
            let value = take_bytes(&mut rest)?;
            xattrs.push(Xattr { name, value });
        }
        if xattrs.len() != n {
            return None;
        }
    }
    rest.is_empty().then_some((chunks, holes, xattrs))
}

/// A varint length and that many bytes.
fn take_bytes(bytes: &mut &[u8]) -> Option<Vec<u8>> {
    let n = usize::try_from(take_varint(bytes)?).ok()?;
    if n > bytes.len() {
        return None;
    }
    let (taken, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(taken.to_vec())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn take_id(bytes: &mut &[u8]) -> Option<[u8; 32]> {
    let (id, rest) = bytes.split_first_chunk::<32>()?;
    *bytes = rest;
    Some(*id)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A location whose ids are made of `n`.
    pub(in crate::state) fn loc(n: u8) -> Location {
        Location {
            id: BlobId([n; 32]),
            pack: PackId([n + 1; 32]),
            offset: 10,
            length: 20,
            raw_length: 30,
        }
    }

    /// Chunks and holes at the edges of what a varint holds.
    pub(in crate::state) fn sample() -> (Vec<Location>, Vec<Hole>) {
        let holes = vec![
            Hole {
                offset: 0,
                length: 1 << 40,
            },
            Hole {
                offset: u64::MAX - 1,
                length: 127,
            },
        ];
        let chunks = vec![
            loc(1),
            Location {
                offset: u64::MAX,
                length: 128,
                ..loc(9)
            },
        ];
        (chunks, holes)
    }

    /// Rows are written binary, read back whole, and a damaged one does
    /// not parse (the file is read again).
    #[test]
    fn chunk_lists_read_binary_rows_and_refuse_damaged_ones() {
        let (chunks, holes) = sample();
        let bytes = encode_chunks(&chunks, &holes, &[]);
        assert_eq!(bytes[0], BINARY_CHUNKS);
        assert_eq!(
            decode_chunks(&bytes),
            Some((chunks.clone(), holes.clone(), Vec::new()))
        );
        assert_eq!(encode_chunks(&[loc(1)], &[], &[]).len(), 1 + 1 + 64 + 3 + 1);
        let xattrs = vec![
            Xattr {
                name: b"user.s3.content-type".to_vec(),
                value: b"text/plain".to_vec(),
            },
            Xattr {
                name: b"user.s3.etag".to_vec(),
                value: Vec::new(),
            },
        ];
        let with = encode_chunks(&chunks, &holes, &xattrs);
        assert_eq!(with[0], BINARY_CHUNKS_XATTRS);
        assert_eq!(
            decode_chunks(&with),
            Some((chunks.clone(), holes.clone(), xattrs))
        );
        for row in [&bytes, &with] {
            for cut in 1..row.len() {
                assert_eq!(decode_chunks(&row[..cut]), None, "cut at {cut}");
            }
            let mut longer = row.to_vec();
            longer.push(0);
            assert_eq!(decode_chunks(&longer), None);
        }
        assert_eq!(decode_chunks(&[BINARY_CHUNKS, 0xff, 0xff, 0xff]), None);
    }
}
