//! The fetch plan: which blobs to read with one ranged request. Blobs that
//! lie (nearly) back to back in one pack are read together, for file chunks
//! ([`Fetch`]) and for trees ([`next_tree_batch`]) alike, as
//! [`crate::repository::span`] joins them. Pure logic, no I/O.

use crate::format::tree::Location;
use std::collections::VecDeque;

pub(super) use crate::repository::span::{Span, MAX_FETCH, MAX_GAP};
/// Over a live tree the chunks read are the few that changed, scattered:
/// a gap there is mostly bytes nobody needs (with 64 KiB, 4.6 MiB read for
/// 1.7 MB of chunks, 1% of /usr/share's files changed), so gaps stay small.
pub(super) const MAX_GAP_OVER: u64 = 4 << 10;
/// Trees read with one request at most (trees are small).
const MAX_TREE_FETCH: u64 = 1 << 20;
/// How far down the queue of trees to look for ones to read together.
const TREE_BATCH_SCAN: usize = 256;

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
    pub(in crate::ops::restore) use crate::repository::span::tests::loc;
    use std::path::PathBuf;

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
        assert_eq!((span.start(), span.len()), (100, 30));
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
        let span = fetch.span.expect("a span");
        assert_eq!(
            (span.pack().0, span.start(), span.len()),
            ([1; 32], 100, 50)
        );
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
        assert_eq!((span.start(), span.len()), (100, 350));
        let names: Vec<_> = batch.iter().map(|(_, p)| p.display().to_string()).collect();
        assert_eq!(names, ["0", "2", "3", "5"]);
        let left: Vec<_> = waiting
            .iter()
            .map(|(_, p)| p.display().to_string())
            .collect();
        assert_eq!(left, ["1", "4"]);
    }
}
