//! Walks: a reader going through a tree's files in order (`cp -a`,
//! `diff -r`, `tar`, `rsync`, `grep -r`), found by where its reads land, and
//! read ahead in the order the walk will go, many small files with one
//! ranged read where they lie side by side in a pack.
//!
//! Each file's place is its path of positions from its snapshot's root
//! (entries are numbered in name order, so the inode table knows them). A
//! file read from its start whose place comes just after the one before it
//! in depth-first name order (the next few files of the same directory, or
//! the first few of a directory after it) is a step; two steps in a row in
//! one snapshot, or one into a directory just listed, make a walk. Its
//! read-ahead lists the files that come next in the same order, from the
//! directory where the walk began (the deepest one holding every place it
//! went through) down, up to a window of bytes, and hands their chunks to
//! [`crate::cache::BlobCache::prefetch_joined`]; half a window later, the
//! next. A reader that jumps around takes no step twice, so it gets no
//! walk read-ahead: bytes fetched stay bytes read. Each snapshot has its
//! own walk, so the two sides of a `diff -r` are read ahead together.

use crate::mounted::Mounted;
use coffer_core::format::tree::{Kind, Location, Tree};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// A step goes at most this many entries on in one directory...
const NEAR: usize = 16;
/// ...and a walk is this many steps in a row.
const STEPS: u32 = 2;
/// Directories remembered as just listed (`readdir` from the start).
const LISTED_KEPT: usize = 1024;
/// A read-ahead looks at most this many entries...
const PLAN_ENTRIES: usize = 50_000;
/// ...and reads at most this many trees.
const PLAN_TREES: usize = 256;
/// Snapshots walked at once that are remembered.
const WALKS_KEPT: usize = 64;
/// Levels of directories followed up from a file, at most.
const MAX_DEPTH: usize = 512;

/// Where a file lies: from its snapshot root down, each directory's inode
/// and the position in it of the next level (the last: the file's).
pub(crate) type Place = Vec<(u64, usize)>;

/// The walks going on, one per snapshot, and the directories just listed.
#[derive(Default)]
pub(crate) struct Walks {
    walks: HashMap<u64, Walk>,
    listed: VecDeque<u64>,
    listed_set: HashSet<u64>,
}

/// One snapshot's reader: where it read last and how far it has walked.
struct Walk {
    last: Place,
    steps: u32,
    /// Depth (in `last`) of the directory the walk began in.
    top: usize,
    /// Bytes of the files read since the last read-ahead, whether there
    /// was one, and how many bytes it covered (a read-ahead that met its
    /// limit of entries or trees covers less than a window).
    read_since: u64,
    ahead: bool,
    planned: u64,
}

/// A read-ahead to plan: from `place`, the files after it up to the end
/// of the directory at depth `top`.
pub(crate) struct Ahead {
    pub place: Place,
    pub top: usize,
}

impl Walks {
    /// Notes that directory `ino` was listed from its start.
    pub(crate) fn listed(&mut self, ino: u64) {
        if !self.listed_set.insert(ino) {
            return;
        }
        self.listed.push_back(ino);
        if self.listed.len() > LISTED_KEPT {
            if let Some(old) = self.listed.pop_front() {
                self.listed_set.remove(&old);
            }
        }
    }

    /// The read-ahead last started for snapshot `root` covered `bytes`.
    pub(crate) fn planned(&mut self, root: u64, bytes: u64) {
        if let Some(walk) = self.walks.get_mut(&root) {
            walk.planned = walk.planned.min(bytes);
        }
    }

    /// A file of `size` bytes at `place` in snapshot `root` was read from
    /// its start: the read-ahead to start now, if this continues a walk
    /// and the last one is half used (`window` bytes each).
    pub(crate) fn step(
        &mut self,
        root: u64,
        place: Place,
        size: u64,
        window: u64,
    ) -> Option<Ahead> {
        let parent = place.last()?.0;
        let listed = self.listed_set.contains(&parent);
        if self.walks.len() >= WALKS_KEPT && !self.walks.contains_key(&root) {
            self.walks.clear();
        }
        let walk = self.walks.entry(root).or_insert_with(|| Walk {
            last: Vec::new(),
            steps: 0,
            top: 0,
            read_since: 0,
            ahead: false,
            planned: 0,
        });
        if is_step(&walk.last, &place, listed) {
            walk.steps += 1;
            walk.top = walk
                .top
                .min(common_dirs(&walk.last, &place).saturating_sub(1));
        } else {
            walk.steps = u32::from(listed);
            walk.top = place.len() - 1;
            walk.read_since = 0;
            walk.ahead = false;
        }
        walk.last = place;
        walk.read_since = walk.read_since.saturating_add(size);
        if walk.steps < STEPS || (walk.ahead && walk.read_since < walk.planned / 2) {
            return None;
        }
        walk.ahead = true;
        walk.read_since = 0;
        walk.planned = window;
        Some(Ahead {
            place: walk.last.clone(),
            top: walk.top,
        })
    }
}

/// Whether a read at `next` steps on from one at `last` in depth-first
/// name order: later, and either a few entries on in the same directory
/// or among the first entries of another (listed: one just listed).
fn is_step(last: &Place, next: &Place, listed: bool) -> bool {
    let (Some(&(last_dir, last_at)), Some(&(dir, at))) = (last.last(), next.last()) else {
        return listed && next.last().is_some_and(|&(_, at)| at < NEAR);
    };
    let later = next
        .iter()
        .map(|l| l.1)
        .cmp(last.iter().map(|l| l.1))
        .is_gt();
    if last_dir == dir {
        return later && at - last_at <= NEAR;
    }
    (later || listed) && at < NEAR
}

/// How many directories, from the root down, two places share.
fn common_dirs(a: &Place, b: &Place) -> usize {
    let mut n = 0;
    for (x, y) in a.iter().zip(b) {
        if x.0 != y.0 {
            break;
        }
        n += 1;
        if x.1 != y.1 {
            break;
        }
    }
    n
}

impl Mounted {
    /// File `ino` (of `size` bytes) was read from its start: if that
    /// continues a walk, start reading ahead of it.
    pub(crate) fn walk_step(self: &Arc<Self>, ino: u64, size: u64) {
        let Some((root, place)) = self.place_of(ino) else {
            return;
        };
        let window = self.walk_window();
        let Some(ahead) = self.walks().step(root, place, size, window) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mounted = self.clone();
        rt.spawn(async move {
            let (chunks, bytes) = mounted.files_ahead(&ahead, window).await;
            mounted.walks().planned(root, bytes);
            mounted.cache().prefetch_joined(&chunks);
        });
    }

    /// File `ino`'s snapshot root and place in it.
    fn place_of(&self, ino: u64) -> Option<(u64, Place)> {
        let table = self.table();
        let mut place = Vec::new();
        let mut at = ino;
        while let Some(level) = table.position(at) {
            place.push(level);
            at = level.0;
            if place.len() > MAX_DEPTH {
                return None;
            }
        }
        place.reverse();
        (!place.is_empty()).then_some((at, place))
    }

    /// The chunks of the files a walk reads next after `ahead.place`, in
    /// the order it reads them, up to `window` bytes: the rest of each
    /// directory from the file's up to the walk's top, depth first.
    /// The bytes they hold come with them.
    async fn files_ahead(&self, ahead: &Ahead, window: u64) -> (Vec<Location>, u64) {
        let mut out = Budget {
            chunks: Vec::new(),
            bytes: 0,
            entries: 0,
            trees: 0,
            window,
        };
        for &(dir, at) in ahead.place[ahead.top..].iter().rev() {
            let Some(loc) = self.table().dir_tree(dir) else {
                break;
            };
            // Depth first: each directory's tree and where in it to go on.
            let mut stack = Vec::new();
            if let Some(tree) = self.tree_for_walk(&loc, &mut out).await {
                stack.push((tree, at + 1));
            }
            while let Some((tree, from)) = stack.pop() {
                let mut down = None;
                for (i, e) in tree.entries.iter().enumerate().skip(from) {
                    if out.full() {
                        return out.done();
                    }
                    out.entries += 1;
                    match (e.kind, e.subtree) {
                        (Kind::File, _) => out.take(&e.chunks),
                        (Kind::Dir, Some(sub)) => {
                            // Go down now, on with this one after.
                            down = Some((i + 1, sub));
                            break;
                        }
                        _ => {}
                    }
                }
                if let Some((next, sub)) = down {
                    let below = self.tree_for_walk(&sub, &mut out).await;
                    stack.push((tree, next));
                    if let Some(below) = below {
                        stack.push((below, 0));
                    }
                }
            }
        }
        out.done()
    }
}

impl Mounted {
    /// Tree `loc` for a walk's read-ahead (counted against its limit), or
    /// `None` if it cannot be read (the walk's own read will say why).
    async fn tree_for_walk(&self, loc: &Location, out: &mut Budget) -> Option<Arc<Tree>> {
        out.trees += 1;
        self.tree(loc).await.ok().map(Arc::new)
    }
}

/// What a read-ahead has taken so far, and its limits.
struct Budget {
    chunks: Vec<Location>,
    bytes: u64,
    entries: usize,
    trees: usize,
    window: u64,
}

impl Budget {
    fn take(&mut self, chunks: &[Location]) {
        for c in chunks {
            if self.bytes >= self.window {
                return;
            }
            self.bytes += c.raw_length;
            self.chunks.push(*c);
        }
    }

    /// The chunks taken and their bytes.
    fn done(self) -> (Vec<Location>, u64) {
        (self.chunks, self.bytes)
    }

    fn full(&self) -> bool {
        self.bytes >= self.window || self.entries >= PLAN_ENTRIES || self.trees >= PLAN_TREES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u64 = 100;
    const WINDOW: u64 = 1000;

    /// A file at position `at` of directory `dir`, under `above` (pairs).
    fn place(above: &[(u64, usize)], dir: u64, at: usize) -> Place {
        let mut p = above.to_vec();
        p.push((dir, at));
        p
    }

    #[test]
    fn files_read_in_order_make_a_walk_and_jumps_do_not() {
        let mut walks = Walks::default();
        let d = [(ROOT, 3)];
        assert!(walks.step(ROOT, place(&d, 7, 0), 10, WINDOW).is_none());
        assert!(
            walks.step(ROOT, place(&d, 7, 1), 10, WINDOW).is_none(),
            "one step"
        );
        let ahead = walks
            .step(ROOT, place(&d, 7, 3), 10, WINDOW)
            .expect("two steps");
        assert_eq!((ahead.place, ahead.top), (place(&d, 7, 3), 1));
        assert!(
            walks.step(ROOT, place(&d, 7, 4), 10, WINDOW).is_none(),
            "the read-ahead is not half used"
        );
        assert!(
            walks.step(ROOT, place(&d, 7, 5), 600, WINDOW).is_some(),
            "now it is"
        );

        let mut random = Walks::default();
        for at in [40, 3, 200, 120, 121 + NEAR, 90, 91] {
            assert!(
                random.step(ROOT, place(&d, 7, at), 10, WINDOW).is_none(),
                "at {at}"
            );
        }
    }

    #[test]
    fn a_walk_goes_on_into_the_next_directory_and_widens_to_their_parent() {
        let mut walks = Walks::default();
        let a = [(ROOT, 2), (20, 0)]; // ROOT/2/0/ = directory 30
        let b = [(ROOT, 2), (20, 1)]; // ROOT/2/1/ = directory 31
        walks.step(ROOT, place(&a, 30, 0), 10, WINDOW);
        walks.step(ROOT, place(&a, 30, 1), 10, WINDOW);
        assert!(walks.step(ROOT, place(&a, 30, 2), 10, WINDOW).is_some());
        let ahead = walks
            .step(ROOT, place(&b, 31, 0), 600, WINDOW)
            .expect("the next directory's first file");
        assert_eq!(ahead.top, 1, "from directory 20, which holds both");
        assert!(
            walks.step(ROOT, place(&a, 30, 9), 10, WINDOW).is_none(),
            "going back is no step"
        );
    }

    #[test]
    fn a_read_ahead_cut_short_is_followed_sooner() {
        let mut walks = Walks::default();
        let d = [(ROOT, 3)];
        for at in 0..2 {
            walks.step(ROOT, place(&d, 7, at), 10, WINDOW);
        }
        assert!(walks.step(ROOT, place(&d, 7, 2), 10, WINDOW).is_some());
        walks.planned(ROOT, 100); // it met its limit of entries
        assert!(walks.step(ROOT, place(&d, 7, 3), 40, WINDOW).is_none());
        assert!(
            walks.step(ROOT, place(&d, 7, 4), 10, WINDOW).is_some(),
            "half of 100"
        );
    }

    #[test]
    fn a_directory_just_listed_starts_a_walk_at_its_second_file() {
        let mut walks = Walks::default();
        walks.listed(7);
        let d = [(ROOT, 3)];
        assert!(walks.step(ROOT, place(&d, 7, 0), 10, WINDOW).is_none());
        assert!(walks.step(ROOT, place(&d, 7, 1), 10, WINDOW).is_some());
    }

    #[test]
    fn each_snapshot_has_its_own_walk() {
        let mut walks = Walks::default();
        let (d1, d2) = ([(ROOT, 3)], [(ROOT + 1, 3)]);
        for at in 0..2 {
            walks.step(ROOT, place(&d1, 7, at), 10, WINDOW);
            walks.step(ROOT + 1, place(&d2, 8, at), 10, WINDOW);
        }
        assert!(walks.step(ROOT, place(&d1, 7, 2), 10, WINDOW).is_some());
        assert!(walks.step(ROOT + 1, place(&d2, 8, 2), 10, WINDOW).is_some());
    }
}
