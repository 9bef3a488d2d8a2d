//! File contents: a read answered from the cache on the FUSE thread when
//! every chunk it needs is there, else fetched on tokio; and read-ahead,
//! within a file (its next chunks) and across files (the next files' first
//! chunks, for `cp -r`, `diff -r` and the like).

use crate::inode::{EntryMeta, Found, NodeKind};
use crate::mounted::Mounted;
use coffer_core::format::tree::Kind;
use fuser::Errno;
use std::sync::Arc;

/// Chunks fetched ahead of a sequential reader.
const READ_AHEAD_CHUNKS: usize = 4;
/// When a file's first bytes are read, the first chunks of up to this many
/// files after it in its directory are fetched ahead...
const NEXT_FILES_PREFETCH: u64 = 16;
/// ...up to this many bytes of them.
const NEXT_FILES_PREFETCH_BYTES: u64 = 8 << 20;

/// The regular file a node that is `kind` is.
pub(crate) fn regular_file(kind: &NodeKind) -> Result<Arc<EntryMeta>, Errno> {
    match kind {
        NodeKind::Entry(e) if e.kind == Kind::File => Ok(e.clone()),
        _ => Err(Errno::EISDIR),
    }
}

impl Mounted {
    /// [`Mounted::read`] when every chunk it needs is cached: answered on the
    /// FUSE thread, without handing the request to tokio and back (two
    /// thread wake-ups per read). `None` if a chunk must be fetched.
    pub(crate) fn read_cached(
        &self,
        ino: u64,
        entry: &EntryMeta,
        offset: u64,
        size: u32,
    ) -> Option<Vec<u8>> {
        let pieces = pieces(entry, offset, size);
        let mut out = Vec::with_capacity(pieces.iter().map(Piece::len).sum());
        for piece in pieces {
            match piece {
                Piece::Chunk(i, range) => {
                    let data = self.cache().cached(&entry.chunks[i].id)?;
                    out.extend_from_slice(data.get(range)?);
                }
                Piece::Zeros(n) => out.resize(out.len() + n, 0),
            }
        }
        self.read_ahead(ino, entry, offset, size);
        Some(out)
    }

    /// `size` bytes of file `ino` (`entry`) from `offset`, fetched as needed.
    pub(crate) async fn read(
        &self,
        ino: u64,
        entry: &EntryMeta,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let pieces = pieces(entry, offset, size);
        let mut out = Vec::with_capacity(pieces.iter().map(Piece::len).sum());
        for piece in pieces {
            let (i, range) = match piece {
                Piece::Chunk(i, range) => (i, range),
                Piece::Zeros(n) => {
                    out.resize(out.len() + n, 0);
                    continue;
                }
            };
            let what = || format!("reading inode {ino}");
            let data = self
                .cache()
                .get(&entry.chunks[i])
                .await
                .map_err(|e| self.eio(&what(), &e))?;
            let bytes = data.get(range).ok_or_else(|| {
                let e =
                    coffer_core::Error::damaged(what(), "a chunk is shorter than its entry says");
                self.eio(&what(), &e)
            })?;
            out.extend_from_slice(bytes);
        }
        self.read_ahead(ino, entry, offset, size);
        Ok(out)
    }

    /// After a read: fetch the file's next chunks and, at its start, the
    /// next files' first chunks. Needs to run inside the tokio runtime.
    fn read_ahead(&self, ino: u64, entry: &EntryMeta, offset: u64, size: u32) {
        let read_end = offset.saturating_add(u64::from(size));
        let next = entry.chunk_ends.partition_point(|&e| e <= read_end);
        self.cache()
            .prefetch(entry.chunks.iter().skip(next).take(READ_AHEAD_CHUNKS));
        if offset == 0 {
            self.prefetch_next_files(ino);
        }
    }

    /// Read-ahead across files: `cp -r`, `diff -r`, `tar` and `rsync` read a
    /// directory's files one after the other in name order, and a small
    /// file is one fetch each, so without this every file waits for the
    /// disk or the network in turn. A directory's entries get consecutive
    /// inode numbers in name order (see `InodeTable::load_entries`), so the
    /// files after `ino` are `ino + 1`, `ino + 2`... while the parent is
    /// the same.
    fn prefetch_next_files(&self, ino: u64) {
        let mut firsts = Vec::new();
        {
            let table = self.table();
            let Some(parent) = table.parent(ino) else {
                return;
            };
            let mut bytes = 0;
            for next in ino + 1..=ino + NEXT_FILES_PREFETCH {
                if table.parent(next) != Some(parent) {
                    break;
                }
                let Found::Node(NodeKind::Entry(e)) = table.find(next) else {
                    continue;
                };
                let Some(first) = e.chunks.first().filter(|_| e.kind == Kind::File) else {
                    continue;
                };
                bytes += first.raw_length;
                if bytes > NEXT_FILES_PREFETCH_BYTES {
                    break;
                }
                firsts.push(*first);
            }
        }
        self.cache().prefetch(firsts.iter());
    }
}

/// Part of a read: bytes of a chunk, or zeros (a hole).
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    /// Chunk index, range in it.
    Chunk(usize, std::ops::Range<usize>),
    /// This many zeros.
    Zeros(usize),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Chunk(_, r) => r.len(),
            Piece::Zeros(n) => *n,
        }
    }
}

/// What makes `size` bytes from `offset` of `file`: ranges of its chunks,
/// and zeros where holes lie between them (or after the last).
fn pieces(file: &EntryMeta, offset: u64, size: u32) -> Vec<Piece> {
    spans(
        &file.chunk_starts,
        &file.chunk_ends,
        file.size,
        offset,
        size,
    )
}

/// [`pieces`] of a file of `file_size` bytes whose chunks lie at
/// `starts[i]..ends[i]` (in order, holes between).
fn spans(starts: &[u64], ends: &[u64], file_size: u64, offset: u64, size: u32) -> Vec<Piece> {
    let end = file_size.min(offset.saturating_add(u64::from(size)));
    let mut out = Vec::new();
    let mut at = offset;
    let mut i = ends.partition_point(|&e| e <= offset);
    while at < end {
        match (starts.get(i), ends.get(i)) {
            (Some(&start), Some(&chunk_end)) if start < end => {
                if start > at {
                    out.push(Piece::Zeros((start - at) as usize));
                    at = start;
                }
                let to = end.min(chunk_end);
                out.push(Piece::Chunk(
                    i,
                    (at - start) as usize..(to - start) as usize,
                ));
                at = to;
                i += 1;
            }
            _ => {
                out.push(Piece::Zeros((end - at) as usize));
                at = end;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{spans, Piece};

    #[test]
    fn pieces_cover_exactly_the_bytes_asked_for() {
        // Chunks of 10, 5 and 20 bytes.
        let (starts, ends) = ([0, 10, 15], [10, 15, 35]);
        let pieces = |offset, size| spans(&starts, &ends, 35, offset, size);
        let c = Piece::Chunk;
        assert_eq!(pieces(0, 4), vec![c(0, 0..4)]);
        assert_eq!(pieces(8, 10), vec![c(0, 8..10), c(1, 0..5), c(2, 0..3)]);
        assert_eq!(pieces(10, 5), vec![c(1, 0..5)]);
        assert_eq!(pieces(30, 100), vec![c(2, 15..20)]);
        assert!(pieces(35, 10).is_empty(), "at the end");
        assert!(pieces(99, 10).is_empty(), "past the end");
        assert!(spans(&[], &[], 0, 0, 10).is_empty(), "empty file");
        assert!(pieces(3, 0).is_empty(), "nothing asked");
    }

    #[test]
    fn holes_read_as_zeros() {
        // A hole of 100, a chunk of 10, a hole of 50, a chunk of 5, a
        // hole of 20: 185 bytes.
        let (starts, ends) = ([100, 160], [110, 165]);
        let pieces = |offset, size| spans(&starts, &ends, 185, offset, size);
        let (c, z) = (Piece::Chunk, Piece::Zeros);
        assert_eq!(pieces(0, 10), vec![z(10)]);
        assert_eq!(pieces(95, 10), vec![z(5), c(0, 0..5)]);
        assert_eq!(pieces(105, 60), vec![c(0, 5..10), z(50), c(1, 0..5)]);
        assert_eq!(pieces(164, 100), vec![c(1, 4..5), z(20)]);
        assert_eq!(pieces(170, 100), vec![z(15)]);
        assert_eq!(spans(&[], &[], 4096, 0, 100), vec![z(100)], "all hole");
    }
}
