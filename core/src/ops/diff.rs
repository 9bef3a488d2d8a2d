//! `diff`: what changed between two snapshots, comparing trees by blob id so
//! identical subtrees are skipped without being fetched.
//!
//! Each change is one line, like restic's: `+` added, `-` removed, `M`
//! content or type changed, `U` metadata only (mode, owner, mtime).
//! Directories end with `/`; an added or removed directory lists everything
//! below it too.

use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::tree::{nested_too_deep, Entry, Kind, Tree, MAX_DEPTH};
use crate::repository::Repository;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// One change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Only in the second snapshot.
    Added,
    /// Only in the first snapshot.
    Removed,
    /// Content (or kind, or link target) differs.
    Modified,
    /// Only metadata differs.
    Metadata,
}

impl Change {
    /// The one-letter symbol.
    pub fn symbol(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
        }
    }
}

/// Counts of a diff, and of the trees it had to read.
#[derive(Debug, Default, Clone)]
pub struct DiffStats {
    /// Trees fetched.
    pub trees_read: u64,
    /// Subtrees skipped because their ids matched.
    pub trees_skipped: u64,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Compares directory entries `a` and `b` (found at `path`) and calls `out`
/// with each change, in path order.
pub async fn diff(
    repo: &Repository,
    a: &Entry,
    b: &Entry,
    path: &str,
    out: &mut dyn FnMut(Change, &str),
) -> Result<DiffStats> {
    let mut d = Differ {
        repo,
        stats: DiffStats::default(),
        out,
        depth: 0,
        changes: 0,
        alike: HashSet::new(),
    };
    d.dirs(a, b, path).await?;
    Ok(d.stats)
}

struct Differ<'a, 'o> {
    repo: &'a Repository,
    stats: DiffStats,
    out: &'o mut dyn FnMut(Change, &str),
    /// Directories entered, so far down: each one is a boxed future on
    /// the stack, so a hostile nesting is refused, not followed.
    depth: usize,
    /// Changes reported so far.
    changes: u64,
    /// Pairs of trees compared and found to differ in nothing reported:
    /// met again (one subtree named from many places), they are skipped,
    /// so the work is bounded by the distinct pairs plus the output.
    alike: HashSet<(Option<BlobId>, Option<BlobId>)>,
}

impl Differ<'_, '_> {
    /// Reads the tree of directory `e`, found at `path`, `self.depth`
    /// directories down.
    async fn tree(&mut self, e: &Entry, path: &str) -> Result<Arc<Tree>> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::damaged(path.to_string(), nested_too_deep()));
        }
        match &e.subtree {
            Some(loc) => {
                self.stats.trees_read += 1;
                self.repo.shared_tree(loc).await
            }
            None => Ok(Arc::new(Tree::default())),
        }
    }

    fn dirs<'s>(
        &'s mut self,
        a: &'s Entry,
        b: &'s Entry,
        path: &'s str,
    ) -> BoxFuture<'s, Result<()>> {
        Box::pin(async move {
            let pair = (a.subtree.map(|l| l.id), b.subtree.map(|l| l.id));
            if pair.0 == pair.1 || self.alike.contains(&pair) {
                self.stats.trees_skipped += 1;
                return Ok(());
            }
            let changes = self.changes;
            let (ta, tb) = (self.tree(a, path).await?, self.tree(b, path).await?);
            self.depth += 1;
            let (mut i, mut j) = (0, 0);
            while i < ta.entries.len() || j < tb.entries.len() {
                let order = match (ta.entries.get(i), tb.entries.get(j)) {
                    (Some(x), Some(y)) => x.name.cmp(&y.name),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    _ => std::cmp::Ordering::Greater,
                };
                match order {
                    std::cmp::Ordering::Less => {
                        self.all(&ta.entries[i], path, Change::Removed).await?;
                        i += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        self.all(&tb.entries[j], path, Change::Added).await?;
                        j += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        self.pair(&ta.entries[i], &tb.entries[j], path).await?;
                        i += 1;
                        j += 1;
                    }
                }
            }
            self.depth -= 1;
            if self.changes == changes {
                self.alike.insert(pair);
            }
            Ok(())
        })
    }

    /// Reports one change.
    fn emit(&mut self, change: Change, path: &str) {
        self.changes += 1;
        (self.out)(change, path);
    }

    async fn pair(&mut self, a: &Entry, b: &Entry, parent: &str) -> Result<()> {
        let path = join(parent, a);
        if a.kind != b.kind {
            self.all(a, parent, Change::Removed).await?;
            return self.all(b, parent, Change::Added).await;
        }
        let content = match a.kind {
            Kind::File => {
                a.size != b.size
                    || a.holes != b.holes
                    || a.chunks
                        .iter()
                        .map(|c| c.id)
                        .ne(b.chunks.iter().map(|c| c.id))
            }
            Kind::Symlink => a.target != b.target,
            Kind::Char | Kind::Block => a.rdev != b.rdev,
            _ => false,
        };
        let meta = a.mode != b.mode
            || a.uid != b.uid
            || a.gid != b.gid
            || a.mtime_ns != b.mtime_ns
            || a.xattrs != b.xattrs
            // Became or stopped being a hard link, or another file's name
            // (not a changed link count: a new name elsewhere is not a
            // change of this one).
            || a.link.map(|l| (l.dev, l.ino)) != b.link.map(|l| (l.dev, l.ino));
        if content {
            self.emit(Change::Modified, &path);
        } else if meta {
            self.emit(Change::Metadata, &path);
        }
        if a.kind == Kind::Dir {
            self.dirs(a, b, &path).await?;
        }
        Ok(())
    }

    /// Reports `e` and, for a directory, everything below it.
    fn all<'s>(
        &'s mut self,
        e: &'s Entry,
        parent: &'s str,
        change: Change,
    ) -> BoxFuture<'s, Result<()>> {
        Box::pin(async move {
            let path = join(parent, e);
            self.emit(change, &path);
            if e.kind == Kind::Dir {
                let tree = self.tree(e, &path).await?;
                self.depth += 1;
                for child in &tree.entries {
                    self.all(child, &path, change).await?;
                }
                self.depth -= 1;
            }
            Ok(())
        })
    }
}

fn join(parent: &str, e: &Entry) -> String {
    let mut p = format!("{}/{}", parent.trim_end_matches('/'), e.display_name());
    if e.kind == Kind::Dir {
        p.push('/');
    }
    p
}
