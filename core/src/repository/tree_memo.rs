//! Trees read lately, parsed and verified, in memory, by the location they
//! were read from: a subtree that many directories share (identical
//! directories dedup to one tree; a forged snapshot can name one tree from
//! 2^n paths) is fetched, decrypted and parsed once while it stays here,
//! by restore, export and diff alike. Keyed by the whole location, not the
//! id alone: a reference that names a good tree's id but points elsewhere
//! is read from where it points, and is damage there, as `check` says,
//! whatever was read before. Bounded in the bytes the parsed trees take in
//! memory ([`Tree::memory`]), least recently used first out.

use crate::format::tree::{Location, Tree};
use crate::sync::lock;
use lru::LruCache;
use std::sync::{Arc, Mutex};

/// Bytes the trees kept take in memory, at most.
pub const TREE_MEMO_BYTES: u64 = 32 << 20;
/// A tree larger than this is not kept (it would push out many others).
const LARGEST_KEPT: u64 = TREE_MEMO_BYTES / 4;

/// Parsed trees by location, within [`TREE_MEMO_BYTES`] of memory.
pub struct TreeMemo {
    lru: Mutex<Kept>,
}

struct Kept {
    trees: LruCache<Location, (Arc<Tree>, u64)>,
    bytes: u64,
}

impl Default for TreeMemo {
    fn default() -> Self {
        Self {
            lru: Mutex::new(Kept {
                trees: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }
}

impl TreeMemo {
    /// The tree read from `loc`, if it is kept (it then becomes the most
    /// recently used).
    pub fn get(&self, loc: &Location) -> Option<Arc<Tree>> {
        lock(&self.lru).trees.get(loc).map(|(tree, _)| tree.clone())
    }

    /// Keeps `tree`, read from `loc` and verified, which takes `bytes` of
    /// memory; the least recently used go while the total is over the
    /// bound.
    pub fn keep(&self, loc: Location, tree: Arc<Tree>, bytes: u64) {
        if bytes > LARGEST_KEPT {
            return;
        }
        let mut kept = lock(&self.lru);
        if let Some((_, old)) = kept.trees.put(loc, (tree, bytes)) {
            kept.bytes -= old;
        }
        kept.bytes += bytes;
        while kept.bytes > TREE_MEMO_BYTES {
            match kept.trees.pop_lru() {
                Some((_, (_, gone))) => kept.bytes -= gone,
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::{BlobId, PackId};
    use crate::format::tree::{Entry, Kind};

    fn id(n: u8) -> Location {
        Location {
            id: BlobId([n; 32]),
            pack: PackId([1; 32]),
            offset: u64::from(n) * 100,
            length: 100,
            raw_length: 90,
        }
    }

    fn tree(name: &[u8]) -> Arc<Tree> {
        Arc::new(Tree {
            entries: vec![Entry::new(name.to_vec(), Kind::File, 0o644)],
        })
    }

    #[test]
    fn trees_are_kept_within_the_bound_least_recently_used_out_first() {
        let memo = TreeMemo::default();
        let fifth = TREE_MEMO_BYTES / 5;
        for n in 1..=5 {
            memo.keep(id(n), tree(&[b'0' + n]), fifth);
        }
        assert!(memo.get(&id(1)).is_some()); // 1 used last: 2 goes first
        memo.keep(id(6), tree(b"6"), fifth);
        assert!(memo.get(&id(2)).is_none());
        assert_eq!(memo.get(&id(1)).unwrap().entries[0].name, b"1");
        assert!((3..=6).all(|n| memo.get(&id(n)).is_some()));
        assert_eq!(lock(&memo.lru).bytes, 5 * fifth);
        // Kept again under the same id: counted once.
        memo.keep(id(6), tree(b"6"), fifth);
        assert_eq!(lock(&memo.lru).bytes, 5 * fifth);
    }

    #[test]
    fn a_tree_past_a_quarter_of_the_bound_is_not_kept() {
        let memo = TreeMemo::default();
        memo.keep(id(1), tree(b"small"), 10);
        memo.keep(id(2), tree(b"large"), LARGEST_KEPT + 1);
        assert!(memo.get(&id(2)).is_none());
        assert!(memo.get(&id(1)).is_some());
    }
}
