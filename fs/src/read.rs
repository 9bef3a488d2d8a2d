//! File contents: a read answered from the cache on the FUSE thread when
//! every chunk it needs is there, else fetched on tokio; and read-ahead:
//! within a file, a window that grows while the reader goes on in order
//! (up to what the link needs: [`crate::link::Link::window`]) and closes
//! when it jumps; across files, the walk read-ahead ([`crate::walk`]).

use crate::inode::{EntryMeta, NodeKind};
use crate::mounted::Mounted;
use coffer_core::format::tree::Kind;
use fuser::Errno;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Arc;

/// The smallest read-ahead window of a reader going on in order, and
/// where it starts: about four chunks.
const MIN_WINDOW: u64 = 4 << 20;
/// A walk's read-ahead covers at least this many bytes of the files next.
const MIN_WALK_WINDOW: u64 = 8 << 20;
/// A window is at most this share of the cache (a `diff -r` runs two
/// walks and a stream or two at once).
const WINDOW_SHARE: u64 = 8;
/// A read within this many bytes of where the last one ended still goes on
/// in order: the kernel sends its own read-ahead (up to 1 MiB) in pieces
/// that may arrive out of order.
const IN_ORDER_SLACK: u64 = 2 << 20;
/// Files whose readers are remembered.
const STREAMS_KEPT: usize = 256;

/// Each recently read file's reader ([`Stream`]), by inode.
pub(crate) struct Streams(LruCache<u64, Stream>);

impl Streams {
    pub(crate) fn new() -> Self {
        Self(LruCache::new(
            NonZeroUsize::new(STREAMS_KEPT).unwrap_or(NonZeroUsize::MIN),
        ))
    }
}

/// A reader of one file: where its next read starts if it goes on in
/// order, and how far ahead of it to read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stream {
    next: u64,
    window: u64,
}

impl Stream {
    /// A read of `size` bytes at `offset`: the bytes to read ahead of it.
    /// In order (from the start, or near where the last read ended) the
    /// window doubles, from [`MIN_WINDOW`] up to `target`; after a jump it
    /// is closed (nothing read ahead) until the reader goes on in order.
    fn advance(&mut self, offset: u64, size: u32, target: u64) -> u64 {
        let end = offset.saturating_add(u64::from(size));
        if offset == 0 || offset.abs_diff(self.next) <= IN_ORDER_SLACK {
            self.window = self
                .window
                .saturating_mul(2)
                .clamp(MIN_WINDOW, target.max(MIN_WINDOW));
            self.next = self.next.max(end);
        } else {
            self.window = 0;
            self.next = end;
        }
        self.window
    }
}

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
        self: &Arc<Self>,
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
    /// What comes after is asked for first, so its fetches start with this
    /// read's own rather than a round trip later.
    pub(crate) async fn read(
        self: &Arc<Self>,
        ino: u64,
        entry: &EntryMeta,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        self.read_ahead(ino, entry, offset, size);
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
        Ok(out)
    }

    /// With a read: fetch the file's chunks after it (those the read does
    /// not touch) within its reader's window and, when it was read from its
    /// start, tell the walks. Needs to run inside the tokio runtime.
    fn read_ahead(self: &Arc<Self>, ino: u64, entry: &EntryMeta, offset: u64, size: u32) {
        let target = self.cache().link().window(MIN_WINDOW, self.window_cap());
        let window = self
            .streams()
            .0
            .get_or_insert_mut(ino, Stream::default)
            .advance(offset, size, target);
        let read_end = offset.saturating_add(u64::from(size));
        let ahead_end = read_end.saturating_add(window);
        let next = entry.chunk_starts.partition_point(|&s| s < read_end);
        let within = entry.chunk_starts[next..].partition_point(|&s| s < ahead_end);
        if window > 0 {
            self.cache()
                .prefetch(entry.chunks[next..next + within].iter());
        }
        if offset == 0 {
            self.walk_step(ino, entry.size);
        }
    }

    /// The largest read-ahead window: a share of the cache.
    fn window_cap(&self) -> u64 {
        self.cache().room() / WINDOW_SHARE
    }

    /// A walk's read-ahead window: what the link needs, within the cap.
    pub(crate) fn walk_window(&self) -> u64 {
        self.cache()
            .link()
            .window(MIN_WALK_WINDOW, self.window_cap())
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
    use super::{spans, Piece, Stream, MIN_WINDOW};

    #[test]
    fn the_window_grows_while_the_reader_goes_on_and_closes_when_it_jumps() {
        let target = 8 * MIN_WINDOW;
        let mut s = Stream::default();
        let mut windows = Vec::new();
        for i in 0..6 {
            windows.push(s.advance(i * 131_072, 131_072, target));
        }
        let m = MIN_WINDOW;
        assert_eq!(
            windows,
            [m, 2 * m, 4 * m, 8 * m, 8 * m, 8 * m],
            "grows to the target"
        );
        assert_eq!(s.advance(500 << 20, 4096, target), 0, "a jump closes it");
        assert_eq!(s.advance(100 << 20, 4096, target), 0, "and another");
        assert_eq!(
            s.advance((100 << 20) + 4096, 4096, target),
            m,
            "in order again"
        );
        assert_eq!(s.advance(0, 4096, target), 2 * m, "the start is in order");
        let mut far = Stream::default();
        far.advance(0, 4096, target);
        assert_eq!(
            far.advance(4096 + (1 << 20), 4096, target),
            2 * m,
            "the kernel's read-ahead arrives a little out of order"
        );
        assert_eq!(
            Stream::default().advance(0, 1, 0),
            m,
            "at least the minimum"
        );
    }

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
