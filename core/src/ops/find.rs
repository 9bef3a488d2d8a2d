//! `coffer find`: the entries whose name matches a pattern (or, for a
//! pattern with `/`, whose absolute path does), across snapshots, and each
//! path's history as runs: consecutive snapshots of one host that hold the
//! same entry (same kind, size, mtime and content).
//!
//! A directory's matches are kept by its tree (by tree and path for path
//! patterns) as a small graph that shares what it shares with the trees:
//! a subtree met again, in the same snapshot or the next one, costs no
//! read and no walk, so a snapshot that differs from the one before by one
//! file costs the trees on that file's path. What is stored may be hostile
//! (a subtree shared by 2^40 paths, trees nested past any writer's depth):
//! a snapshot's matches stop at [`MAX_HITS`] and its walk at
//! [`MAX_DIRS`] directories, each with a warning, and nesting past
//! [`MAX_DEPTH`] is named as damage.

use crate::error::Result;
use crate::format::id::BlobId;
use crate::format::snapshot::SnapshotInfo;
use crate::format::tree::{nested_too_deep, Entry, Kind, Tree, MAX_DEPTH};
use crate::patterns::Patterns;
use crate::repository::Repository;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Matches listed per snapshot at most; past it the snapshot's list is cut
/// (with a warning): no stored tree can make find hold more.
pub const MAX_HITS: usize = 200_000;
/// Directories walked per snapshot at most (a path pattern cannot share a
/// subtree's matches between the paths that reach it).
pub const MAX_DIRS: usize = 1_000_000;

/// What `find` looks for ([`Patterns`] as `backup --exclude` reads them).
pub struct Pattern(Patterns);

impl Pattern {
    /// The patterns; a bad one is a usage error that names it.
    pub fn new(patterns: &[String]) -> Result<Self> {
        Patterns::new(patterns, "pattern").map(Self)
    }

    fn matches(&self, name: &[u8], path: &[u8]) -> bool {
        self.0.matches(name, path)
    }

    fn by_path(&self) -> bool {
        self.0.by_path()
    }
}

/// A matching entry as one snapshot holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its kind.
    pub kind: Kind,
    /// Its size (a symlink's target's length; 0 for a directory).
    pub size: u64,
    /// Its modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// What its content is (a file's chunk ids, a symlink's target),
    /// hashed: equal entries hold the same data.
    content: u64,
}

impl Found {
    fn of(e: &Entry) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match e.kind {
            Kind::File => e.chunks.iter().for_each(|c| c.id.0.hash(&mut h)),
            Kind::Symlink => e.target.hash(&mut h),
            _ => {}
        }
        Self {
            kind: e.kind,
            size: if e.kind == Kind::Dir { 0 } else { e.size },
            mtime_ns: e.mtime_ns,
            content: h.finish(),
        }
    }
}

/// One path's entry, the same in consecutive snapshots of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The absolute path inside the snapshots.
    pub path: String,
    /// The host whose snapshots these are.
    pub host: String,
    /// The entry.
    pub found: Found,
    /// The first and last snapshot holding it (indexes into the searched
    /// snapshots), and how many.
    pub first: usize,
    /// See `first`.
    pub last: usize,
    /// Snapshots in the run.
    pub snapshots: usize,
}

/// What `find` found.
#[derive(Debug, Default)]
pub struct FindReport {
    /// Every run, by path, then host, then first snapshot.
    pub runs: Vec<Run>,
    /// Trees walked.
    pub trees_read: u64,
    /// Subtrees whose matches were known from an earlier walk.
    pub trees_skipped: u64,
    /// What could not be searched (damage, nesting), each with its
    /// snapshot and path.
    pub problems: Vec<String>,
    /// Snapshots whose search stopped at a limit, each with why.
    pub cut: Vec<String>,
}

/// The matches inside one directory: its own entries that match, and the
/// subdirectories with matches below, shared as the trees are.
#[derive(Default)]
struct Matches {
    own: Vec<(Vec<u8>, Found)>,
    below: Vec<(Vec<u8>, Arc<Matches>)>,
}

impl Matches {
    fn is_empty(&self) -> bool {
        self.own.is_empty() && self.below.is_empty()
    }
}

/// A subtree's matches are known by its tree (and, for path patterns, by
/// where it is).
type Key = (BlobId, Option<Vec<u8>>);

/// A directory being walked.
struct Frame {
    /// Its name in its parent.
    name: Vec<u8>,
    key: Key,
    tree: Arc<Tree>,
    /// Its absolute path ("" for the root).
    dir: Vec<u8>,
    next: usize,
    found: Matches,
}

/// Searches `snapshots` (oldest first) for `pattern`.
pub async fn find(
    repo: &Repository,
    snapshots: &[SnapshotInfo],
    pattern: &Pattern,
) -> Result<FindReport> {
    let mut search = Search {
        repo,
        pattern,
        memo: HashMap::new(),
        report: FindReport::default(),
    };
    let mut runs = Runs::default();
    for (i, s) in snapshots.iter().enumerate() {
        let short = &s.id.to_hex()[..8];
        let matches = search.snapshot(s, short).await?;
        let (hits, full) = flatten(&matches, MAX_HITS);
        if full {
            search.report.cut.push(format!(
                "snapshot {short}: more than {MAX_HITS} matches; the rest left out (narrow the pattern)"
            ));
        }
        runs.add(i, &s.snapshot.host, hits);
    }
    let mut report = search.report;
    report.runs = runs.finish();
    Ok(report)
}

struct Search<'a> {
    repo: &'a Repository,
    pattern: &'a Pattern,
    memo: HashMap<Key, Arc<Matches>>,
    report: FindReport,
}

impl Search<'_> {
    fn key(&self, tree: BlobId, dir: &[u8]) -> Key {
        (tree, self.pattern.by_path().then(|| dir.to_vec()))
    }

    /// The matches in snapshot `s` (damage below its root is a problem
    /// reported, not an error).
    async fn snapshot(&mut self, s: &SnapshotInfo, short: &str) -> Result<Arc<Matches>> {
        let root = s.snapshot.tree;
        let key = self.key(root.id, b"");
        if let Some(known) = self.memo.get(&key) {
            self.report.trees_skipped += 1;
            return Ok(known.clone());
        }
        let tree = match self.repo.shared_tree(&root).await {
            Ok(t) => t,
            Err(e) => {
                self.report
                    .problems
                    .push(format!("snapshot {short}: /: {e}"));
                return Ok(Arc::new(Matches::default()));
            }
        };
        self.report.trees_read += 1;
        let mut stack = vec![Frame {
            name: Vec::new(),
            key,
            tree,
            dir: Vec::new(),
            next: 0,
            found: Matches::default(),
        }];
        let mut dirs = 1usize;
        while let Some(top) = stack.last_mut() {
            let Some(entry) = top.tree.entries.get(top.next) else {
                let Some(done) = stack.pop() else { break };
                let found = Arc::new(done.found);
                self.memo.insert(done.key, found.clone());
                match stack.last_mut() {
                    Some(parent) if !found.is_empty() => {
                        parent.found.below.push((done.name, found))
                    }
                    Some(_) => {}
                    None => return Ok(found),
                }
                continue;
            };
            top.next += 1;
            let mut path = top.dir.clone();
            path.push(b'/');
            path.extend_from_slice(&entry.name);
            if self.pattern.matches(&entry.name, &path) {
                top.found.own.push((entry.name.clone(), Found::of(entry)));
            }
            let (Kind::Dir, Some(sub)) = (entry.kind, entry.subtree) else {
                continue;
            };
            let name = entry.name.clone();
            let key = self.key(sub.id, &path);
            if let Some(known) = self.memo.get(&key) {
                self.report.trees_skipped += 1;
                if !known.is_empty() {
                    top.found.below.push((name, known.clone()));
                }
                continue;
            }
            let shown = String::from_utf8_lossy(&path).into_owned();
            if stack.len() >= MAX_DEPTH {
                let why = nested_too_deep();
                self.report
                    .problems
                    .push(format!("snapshot {short}: {shown}: {why}"));
                continue;
            }
            if dirs >= MAX_DIRS {
                self.report.cut.push(format!(
                    "snapshot {short}: more than {MAX_DIRS} directories; the rest not searched"
                ));
                return Ok(Arc::new(unwind(stack)));
            }
            dirs += 1;
            match self.repo.shared_tree(&sub).await {
                Ok(tree) => {
                    self.report.trees_read += 1;
                    stack.push(Frame {
                        name,
                        key,
                        tree,
                        dir: path,
                        next: 0,
                        found: Matches::default(),
                    });
                }
                Err(e) => self
                    .report
                    .problems
                    .push(format!("snapshot {short}: {shown}: {e}")),
            }
        }
        Ok(Arc::new(Matches::default()))
    }
}

/// What a walk cut short found: each open directory's matches joined into
/// its parent's (none remembered: they are incomplete).
fn unwind(mut stack: Vec<Frame>) -> Matches {
    let mut inner: Option<(Vec<u8>, Matches)> = None;
    while let Some(mut frame) = stack.pop() {
        if let Some((name, found)) = inner.take().filter(|(_, m)| !m.is_empty()) {
            frame.found.below.push((name, Arc::new(found)));
        }
        inner = Some((frame.name, frame.found));
    }
    inner.map(|(_, m)| m).unwrap_or_default()
}

/// Every match below `root` as (absolute path, entry), at most `limit` of
/// them; whether it stopped there.
fn flatten(root: &Matches, limit: usize) -> (Vec<(Vec<u8>, Found)>, bool) {
    let mut out = Vec::new();
    if !emit(&mut out, b"", root, limit) {
        return (out, true);
    }
    // Each directory with its path and how far its `below` list is done.
    let mut stack: Vec<(Vec<u8>, &Matches, usize)> = vec![(Vec::new(), root, 0)];
    while let Some((dir, m, next)) = stack.last_mut() {
        let Some((name, child)) = m.below.get(*next) else {
            stack.pop();
            continue;
        };
        *next += 1;
        let path = join(dir, name);
        if !emit(&mut out, &path, child, limit) {
            return (out, true);
        }
        stack.push((path, child.as_ref(), 0));
    }
    (out, false)
}

/// Adds `m`'s own matches in `dir` to `out`; false if that would pass
/// `limit`.
fn emit(out: &mut Vec<(Vec<u8>, Found)>, dir: &[u8], m: &Matches, limit: usize) -> bool {
    for (name, found) in &m.own {
        if out.len() >= limit {
            return false;
        }
        out.push((join(dir, name), found.clone()));
    }
    true
}

/// `dir` + `/` + `name` (an empty name, a walk cut short, adds nothing).
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = dir.to_vec();
    if !name.is_empty() {
        path.push(b'/');
        path.extend_from_slice(name);
    }
    path
}

/// Runs as snapshots are added, oldest first.
#[derive(Default)]
struct Runs {
    runs: Vec<Run>,
    /// The run each (host, path) is in, if any.
    open: HashMap<(String, Vec<u8>), usize>,
    /// Each host's snapshot before the one being added.
    previous: HashMap<String, usize>,
}

impl Runs {
    fn add(&mut self, snapshot: usize, host: &str, hits: Vec<(Vec<u8>, Found)>) {
        let previous = self.previous.get(host).copied();
        for (path, found) in hits {
            let key = (host.to_string(), path);
            let going_on = self.open.get(&key).copied().filter(|&r| {
                let run = &self.runs[r];
                run.found == found && Some(run.last) == previous
            });
            match going_on {
                Some(r) => {
                    let run = &mut self.runs[r];
                    run.last = snapshot;
                    run.snapshots += 1;
                }
                None => {
                    self.runs.push(Run {
                        path: String::from_utf8_lossy(&key.1).into_owned(),
                        host: host.to_string(),
                        found,
                        first: snapshot,
                        last: snapshot,
                        snapshots: 1,
                    });
                    self.open.insert(key, self.runs.len() - 1);
                }
            }
        }
        self.previous.insert(host.to_string(), snapshot);
    }

    fn finish(mut self) -> Vec<Run> {
        self.runs.sort_by(|a, b| {
            (a.path.as_bytes(), &a.host, a.first).cmp(&(b.path.as_bytes(), &b.host, b.first))
        });
        self.runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(size: u64) -> Found {
        Found {
            kind: Kind::File,
            size,
            mtime_ns: 0,
            content: size,
        }
    }

    fn hits(list: &[(&str, u64)]) -> Vec<(Vec<u8>, Found)> {
        list.iter()
            .map(|(p, s)| (p.as_bytes().to_vec(), found(*s)))
            .collect()
    }

    /// Added, changed, removed, re-added: four runs; another host's
    /// snapshots between them break nothing.
    #[test]
    fn runs_follow_one_host_and_break_on_change_or_absence() {
        let mut r = Runs::default();
        r.add(0, "a", hits(&[("/f", 1)]));
        r.add(1, "b", hits(&[]));
        r.add(2, "a", hits(&[("/f", 1)]));
        r.add(3, "a", hits(&[("/f", 2)]));
        r.add(4, "a", hits(&[]));
        r.add(5, "a", hits(&[("/f", 2)]));
        r.add(6, "b", hits(&[("/f", 2)]));
        let got: Vec<(String, usize, usize, usize, u64)> = r
            .finish()
            .into_iter()
            .map(|r| (r.host, r.first, r.last, r.snapshots, r.found.size))
            .collect();
        assert_eq!(
            got,
            [
                ("a".into(), 0, 2, 2, 1),
                ("a".into(), 3, 3, 1, 2),
                ("a".into(), 5, 5, 1, 2),
                ("b".into(), 6, 6, 1, 2),
            ]
        );
    }

    /// A graph that shares one subtree 2^30 ways flattens to the limit,
    /// not further.
    #[test]
    fn flattening_a_shared_graph_stops_at_the_limit() {
        let mut m = Arc::new(Matches {
            own: vec![(b"x".to_vec(), found(1))],
            below: Vec::new(),
        });
        for _ in 0..30 {
            m = Arc::new(Matches {
                own: Vec::new(),
                below: vec![(b"a".to_vec(), m.clone()), (b"b".to_vec(), m)],
            });
        }
        let (out, cut) = flatten(&m, 1000);
        assert!(cut);
        assert_eq!(out.len(), 1000);
        assert_eq!(out[0].0, format!("{}/x", "/a".repeat(30)).into_bytes());
        let small = Matches {
            own: vec![(b"y".to_vec(), found(2))],
            below: vec![(
                b"d".to_vec(),
                Arc::new(Matches {
                    own: vec![(b"z".to_vec(), found(3))],
                    below: Vec::new(),
                }),
            )],
        };
        let (out, cut) = flatten(&small, 2);
        assert!(!cut);
        let paths: Vec<&[u8]> = out.iter().map(|(p, _)| p.as_slice()).collect();
        assert_eq!(paths, [&b"/y"[..], &b"/d/z"[..]]);
    }
}
