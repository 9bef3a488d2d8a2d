//! Spans: bytes `start..end` of one pack holding blobs that lie (nearly)
//! back to back, read with one ranged request. Reading neighbours together
//! is what makes a reader of many small blobs pay a round trip per span,
//! not per blob: restore's fetch plan and the mount's walk read-ahead both
//! join blobs here ([`Span::can_take`], [`joined`]).

use super::Repository;
use crate::error::{Error, Result};
use crate::format::id::PackId;
use crate::format::index::PackKind;
use crate::format::tree::Location;

/// Blobs that lie (nearly) back to back in one pack are read with one
/// request, up to this many bytes...
pub const MAX_FETCH: u64 = 8 << 20;
/// ...skipping at most this many bytes between two of them (reading a few
/// unneeded kilobytes is cheaper than another round trip).
pub const MAX_GAP: u64 = 64 << 10;

/// Bytes `start..end` of one pack: blobs lying back to back, read with one
/// ranged read. Used for file chunks and for trees alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pack: PackId,
    start: u64,
    end: u64,
}

impl Span {
    /// The bytes of one blob.
    pub fn of(loc: &Location) -> Self {
        Self {
            pack: loc.pack,
            start: loc.offset,
            end: loc.offset.saturating_add(loc.length),
        }
    }

    /// The pack the span lies in.
    pub fn pack(&self) -> &PackId {
        &self.pack
    }

    /// Its first byte's offset in the pack.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether it covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Whether `loc` can join: same pack, and either inside the span
    /// already (a chunk several files share, read once) or after its end,
    /// a gap of at most `max_gap`, the span staying within `max` bytes.
    pub fn can_take(&self, loc: &Location, max: u64, max_gap: u64) -> bool {
        let end = loc.offset.saturating_add(loc.length);
        self.pack == loc.pack
            && ((loc.offset >= self.start && end <= self.end)
                || (loc.offset >= self.end
                    && loc.offset - self.end <= max_gap
                    && end - self.start <= max))
    }

    /// Whether `loc` lies wholly inside the span.
    pub fn holds(&self, loc: &Location) -> bool {
        self.pack == loc.pack
            && loc.offset >= self.start
            && loc.offset.saturating_add(loc.length) <= self.end
    }

    /// Extends the span to the end of `loc` (which [`Span::can_take`]).
    pub fn take(&mut self, loc: &Location) {
        self.end = self.end.max(loc.offset.saturating_add(loc.length));
    }

    /// The span's stored bytes, with one ranged read of its pack, a pack
    /// of `kind`.
    pub async fn read(&self, repo: &Repository, kind: PackKind) -> Result<Vec<u8>> {
        repo.fetch_pack_range(&self.pack, kind, self.start, self.len())
            .await
    }

    /// The stored bytes of `loc` in `data`, which [`Span::read`] returned.
    pub fn blob<'d>(&self, data: &'d [u8], loc: &Location) -> Result<&'d [u8]> {
        let from = loc
            .offset
            .checked_sub(self.start)
            .ok_or_else(|| self.short())? as usize;
        data.get(from..from.saturating_add(loc.length as usize))
            .ok_or_else(|| self.short())
    }

    fn short(&self) -> Error {
        Error::Internal(format!(
            "a read of pack {} came back shorter than asked",
            self.pack
        ))
    }
}

/// `locs` (blobs wanted, in the order they are wanted) joined into spans:
/// blobs of one pack sorted by offset and joined while [`Span::can_take`]
/// them (at most `max` bytes, gaps of at most `max_gap`); the spans in the
/// order their first-wanted blob was wanted. A blob listed twice is read
/// once.
pub fn joined(locs: &[Location], max: u64, max_gap: u64) -> Vec<(Span, Vec<Location>)> {
    let mut order: Vec<usize> = (0..locs.len()).collect();
    order.sort_by_key(|&i| (locs[i].pack, locs[i].offset, locs[i].length));
    order.dedup_by_key(|i| locs[*i].id);
    // Each span with the earliest position any of its blobs was wanted at.
    let mut spans: Vec<(usize, Span, Vec<Location>)> = Vec::new();
    for i in order {
        let loc = &locs[i];
        match spans.last_mut() {
            Some((first, span, blobs)) if span.can_take(loc, max, max_gap) => {
                span.take(loc);
                blobs.push(*loc);
                *first = (*first).min(i);
            }
            _ => spans.push((i, Span::of(loc), vec![*loc])),
        }
    }
    spans.sort_by_key(|(first, _, _)| *first);
    spans.into_iter().map(|(_, s, b)| (s, b)).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::id::BlobId;

    /// A blob of `length` bytes at `offset` of pack `[pack; 32]`.
    pub(crate) fn loc(pack: u8, offset: u64, length: u64) -> Location {
        Location {
            id: BlobId([0; 32]),
            pack: PackId([pack; 32]),
            offset,
            length,
            raw_length: length,
        }
    }

    /// [`loc`] with id `[id; 32]`.
    fn blob(id: u8, pack: u8, offset: u64, length: u64) -> Location {
        Location {
            id: BlobId([id; 32]),
            ..loc(pack, offset, length)
        }
    }

    #[test]
    fn a_short_read_is_an_internal_error_never_other_bytes() {
        let span = Span::of(&loc(1, 100, 10));
        let data = vec![7u8; 5];
        let err = span.blob(&data, &loc(1, 100, 10)).unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err}");
        assert!(span.blob(&data, &loc(1, 50, 10)).is_err(), "before it");
        assert_eq!(span.blob(&[7u8; 10], &loc(1, 100, 10)).unwrap(), [7u8; 10]);
    }

    #[test]
    fn neighbours_join_in_pack_order_and_spans_come_in_the_order_wanted() {
        let wanted = [
            blob(1, 2, 0, 100),   // pack 2 first: its span goes first
            blob(2, 1, 300, 100), // pack 1, out of order...
            blob(3, 1, 100, 100),
            blob(4, 1, 200, 100),              // ...joined as 100..400
            blob(5, 1, 400 + MAX_GAP + 1, 10), // too far: a span of its own
            blob(3, 1, 100, 100),              // wanted again: read once
        ];
        let spans = joined(&wanted, MAX_FETCH, MAX_GAP);
        let got: Vec<_> = spans
            .iter()
            .map(|(s, b)| {
                (
                    s.pack.0[0],
                    s.start,
                    s.end,
                    b.iter().map(|l| l.id.0[0]).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (2, 0, 100, vec![1]),
                (1, 100, 400, vec![3, 4, 2]),
                (1, 400 + MAX_GAP + 1, 400 + MAX_GAP + 11, vec![5]),
            ]
        );
        let capped = joined(&wanted[1..4], 200, MAX_GAP);
        assert_eq!(capped.len(), 2, "at most 200 bytes a span");
        for (span, blobs) in &spans {
            assert!(blobs.iter().all(|b| span.holds(b)));
        }
        assert!(!spans[0].0.holds(&wanted[1]), "another pack");
    }
}
