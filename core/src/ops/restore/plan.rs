//! The fetch plan: which blobs to read with one ranged request. Blobs that
//! lie (nearly) back to back in one pack are read together, for file chunks
//! ([`Fetch`]) and for trees ([`next_tree_batch`]) alike. Pure logic, no
//! I/O but [`Span::read`].

use crate::error::{Error, Result};
use crate::format::id::PackId;
use crate::format::index::PackKind;
use crate::format::tree::Location;
use crate::repository::Repository;
use std::collections::VecDeque;

/// Blobs that lie (nearly) back to back in one pack are read with one
/// request, up to this many bytes...
pub(super) const MAX_FETCH: u64 = 8 << 20;
/// ...skipping at most this many bytes between two of them (reading a few
/// unneeded kilobytes is cheaper than another round trip).
pub(super) const MAX_GAP: u64 = 64 << 10;
/// Over a live tree the chunks read are the few that changed, scattered:
/// a gap there is mostly bytes nobody needs (with 64 KiB, 4.6 MiB read for
/// 1.7 MB of chunks, 1% of /usr/share's files changed), so gaps stay small.
pub(super) const MAX_GAP_OVER: u64 = 4 << 10;
/// Trees read with one request at most (trees are small).
const MAX_TREE_FETCH: u64 = 1 << 20;
/// How far down the queue of trees to look for ones to read together.
const TREE_BATCH_SCAN: usize = 256;

/// Bytes `start..end` of one pack: blobs lying back to back, read with one
/// ranged read. Used for file chunks and for trees alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pack: PackId,
    pub(super) start: u64,
    pub(super) end: u64,
}

impl Span {
    /// The bytes of one blob.
    pub(super) fn of(loc: &Location) -> Self {
        Self {
            pack: loc.pack,
            start: loc.offset,
            end: loc.offset.saturating_add(loc.length),
        }
    }

    /// Whether `loc` can join: same pack, and either inside the span
    /// already (a chunk several files share, read once) or after its end,
    /// a gap of at most `max_gap`, the span staying within `max` bytes.
    pub(super) fn can_take(&self, loc: &Location, max: u64, max_gap: u64) -> bool {
        let end = loc.offset.saturating_add(loc.length);
        self.pack == loc.pack
            && ((loc.offset >= self.start && end <= self.end)
                || (loc.offset >= self.end
                    && loc.offset - self.end <= max_gap
                    && end - self.start <= max))
    }

    /// Extends the span to the end of `loc` (which [`Span::can_take`]).
    pub(super) fn take(&mut self, loc: &Location) {
        self.end = self.end.max(loc.offset.saturating_add(loc.length));
    }

    /// The span's stored bytes, with one ranged read of its pack, a pack
    /// of `kind`.
    pub(super) async fn read(&self, repo: &Repository, kind: PackKind) -> Result<Vec<u8>> {
        repo.fetch_pack_range(&self.pack, kind, self.start, self.end - self.start)
            .await
    }

    /// The stored bytes of `loc` in `data`, which [`Span::read`] returned.
    pub(super) fn blob<'d>(&self, data: &'d [u8], loc: &Location) -> Result<&'d [u8]> {
        let from = (loc.offset - self.start) as usize;
        data.get(from..from.saturating_add(loc.length as usize))
            .ok_or_else(|| {
                Error::Internal(format!(
                    "restore: a read of pack {} came back shorter than asked",
                    self.pack
                ))
            })
    }
}

/// One ranged read of a pack and the parts (of files) it holds.
pub(super) struct Fetch<P> {
    /// `None` while only parts without data (empty files) are queued.
    pub(super) span: Option<Span>,
    pub(super) parts: Vec<P>,
}

impl<P> Fetch<P> {
    pub(super) fn new() -> Self {
        Self {
            span: None,
            parts: Vec::new(),
        }
    }

    /// Whether `loc` can join this read, skipping at most `max_gap` bytes
    /// (see [`Span::can_take`]).
    pub(super) fn can_take(&self, loc: &Location, max_gap: u64) -> bool {
        self.span
            .is_none_or(|s| s.can_take(loc, MAX_FETCH, max_gap))
    }

    /// Adds `part`, whose blob is at `loc` (which [`Fetch::can_take`]).
    pub(super) fn take(&mut self, loc: &Location, part: P) {
        match &mut self.span {
            Some(span) => span.take(loc),
            None => self.span = Some(Span::of(loc)),
        }
        self.parts.push(part);
    }
}

/// Takes the next tree to read from `waiting`, with the trees queued after
/// it that lie just behind it in the same pack (sibling directories without
/// subdirectories were stored one after the other), for one ranged read.
pub(super) fn next_tree_batch<T>(
    waiting: &mut VecDeque<(Location, T)>,
) -> Option<(Span, Vec<(Location, T)>)> {
    let first = waiting.pop_front()?;
    let mut span = Span::of(&first.0);
    let mut batch = vec![first];
    let mut i = 0;
    while i < waiting.len().min(TREE_BATCH_SCAN) {
        if !span.can_take(&waiting[i].0, MAX_TREE_FETCH, MAX_GAP) {
            i += 1;
        } else if let Some(item) = waiting.remove(i) {
            span.take(&item.0);
            batch.push(item);
        }
    }
    Some((span, batch))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::format::id::BlobId;
    use std::path::PathBuf;

    /// A blob of `length` bytes at `offset` of pack `[pack; 32]`.
    pub(in crate::ops::restore) fn loc(pack: u8, offset: u64, length: u64) -> Location {
        Location {
            id: BlobId([0; 32]),
            pack: PackId([pack; 32]),
            offset,
            length,
            raw_length: length,
        }
    }

    #[test]
    fn a_blob_inside_a_read_joins_it_without_changing_it() {
        let mut fetch = Fetch::new();
        fetch.take(&loc(1, 100, 10), 0);
        fetch.take(&loc(1, 110, 20), 1);
        assert!(
            fetch.can_take(&loc(1, 100, 10), MAX_GAP),
            "the same blob again"
        );
        assert!(!fetch.can_take(&loc(1, 125, 10), MAX_GAP), "past the end");
        fetch.take(&loc(1, 100, 10), 2);
        let span = fetch.span.expect("a span");
        assert_eq!((span.start, span.end), (100, 130));
        assert_eq!(fetch.parts, vec![0, 1, 2]);
    }

    #[test]
    fn a_read_takes_blobs_behind_it_in_the_same_pack_only() {
        let mut fetch = Fetch::new();
        assert!(fetch.can_take(&loc(1, 100, 10), MAX_GAP));
        fetch.take(&loc(1, 100, 10), 0);
        assert!(fetch.can_take(&loc(1, 110, 10), MAX_GAP), "adjacent");
        assert!(
            fetch.can_take(&loc(1, 110 + MAX_GAP, 10), MAX_GAP),
            "small gap"
        );
        assert!(
            !fetch.can_take(&loc(1, 111 + MAX_GAP, 10), MAX_GAP),
            "gap too big"
        );
        assert!(
            !fetch.can_take(&loc(1, 111 + MAX_GAP_OVER, 10), MAX_GAP_OVER),
            "over a tree"
        );
        assert!(
            !fetch.can_take(&loc(1, 50, 10), MAX_GAP),
            "behind the start"
        );
        assert!(!fetch.can_take(&loc(2, 110, 10), MAX_GAP), "other pack");
        assert!(
            !fetch.can_take(&loc(1, 110, MAX_FETCH), MAX_GAP),
            "too long"
        );
        fetch.take(&loc(1, 120, 30), 1);
        let expected = Span {
            pack: PackId([1; 32]),
            start: 100,
            end: 150,
        };
        assert_eq!(fetch.span, Some(expected));
        assert_eq!(fetch.parts, [0, 1]);
    }

    #[test]
    fn sibling_trees_stored_back_to_back_are_read_together() {
        let mut waiting: VecDeque<(Location, PathBuf)> = [
            loc(1, 100, 100),
            loc(2, 200, 100), // other pack: stays
            loc(1, 200, 100),
            loc(1, 350, 100), // 50-byte gap: taken
            loc(1, 50, 10),   // behind: stays
            loc(1, 150, 50),  // inside (a tree two directories share): taken
        ]
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l, PathBuf::from(i.to_string())))
        .collect();
        let (span, batch) = next_tree_batch(&mut waiting).unwrap();
        assert_eq!((span.start, span.end), (100, 450));
        let names: Vec<_> = batch.iter().map(|(_, p)| p.display().to_string()).collect();
        assert_eq!(names, ["0", "2", "3", "5"]);
        let left: Vec<_> = waiting
            .iter()
            .map(|(_, p)| p.display().to_string())
            .collect();
        assert_eq!(left, ["1", "4"]);
    }

    #[test]
    fn a_short_read_is_an_internal_error_never_other_bytes() {
        let span = Span::of(&loc(1, 100, 10));
        let data = vec![7u8; 5];
        let err = span.blob(&data, &loc(1, 100, 10)).unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err}");
        assert_eq!(span.blob(&[7u8; 10], &loc(1, 100, 10)).unwrap(), [7u8; 10]);
    }
}
