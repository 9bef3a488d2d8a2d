//! `coffer stats`: how big snapshots are and what dedup and compression
//! save, and what the repository holds.
//!
//! For the chosen snapshots: their files and bytes as a restore would
//! write them (a subtree shared by several paths counts at each), the
//! distinct blobs (chunks and trees) they reference with their bytes before
//! and after compression and encryption, and the part of those no other
//! snapshot references (what forgetting them would free, once pruned).
//! Trees are walked once each however many paths or snapshots share them
//! (a post-order fold with a memo per tree), so a hostile tree shared 2^40
//! ways costs one walk, and its counts saturate rather than wrap.

use crate::backend::ObjectKind;
use crate::error::Result;
use crate::format::id::BlobId;
use crate::format::snapshot::SnapshotInfo;
use crate::format::tree::{nested_too_deep, Kind, Location, Tree, MAX_DEPTH};
use crate::repository::Repository;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What a restore of a tree would write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sizes {
    /// Regular files.
    pub files: u64,
    /// Directories (not counting the snapshot roots).
    pub dirs: u64,
    /// Other entries: symlinks, devices, fifos, sockets.
    pub others: u64,
    /// The files' bytes (holes included).
    pub bytes: u64,
}

impl Sizes {
    fn add(&mut self, o: &Sizes) {
        self.files = self.files.saturating_add(o.files);
        self.dirs = self.dirs.saturating_add(o.dirs);
        self.others = self.others.saturating_add(o.others);
        self.bytes = self.bytes.saturating_add(o.bytes);
    }
}

/// A number of distinct blobs and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Blobs {
    /// Distinct blobs.
    pub count: u64,
    /// Their bytes before compression.
    pub raw_bytes: u64,
    /// Their bytes as stored (compressed and encrypted).
    pub stored_bytes: u64,
}

impl Blobs {
    fn add(&mut self, loc: &Location) {
        self.count += 1;
        self.raw_bytes += loc.raw_length;
        self.stored_bytes += loc.length;
    }
}

/// What `stats` says of the chosen snapshots.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SnapshotsReport {
    /// How many.
    pub snapshots: u64,
    /// What restoring all of them would write.
    pub restored: Sizes,
    /// The distinct blobs they reference (chunks and trees).
    pub blobs: Blobs,
    /// Those no other snapshot references.
    pub unique: Blobs,
    /// What could not be walked (damage, nesting), with where.
    pub problems: Vec<String>,
}

/// What the repository holds, from its listing.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepositoryReport {
    /// Snapshot objects.
    pub snapshots: u64,
    /// Index objects.
    pub indexes: u64,
    /// Packs, and their bytes, by storage class (where the store says;
    /// "STANDARD" otherwise).
    pub packs_by_class: BTreeMap<String, (u64, u64)>,
}

/// One walk's state: sizes per tree, blobs seen (with where they are).
struct Walk<'a> {
    repo: &'a Repository,
    sizes: HashMap<BlobId, Sizes>,
    seen: HashMap<BlobId, Location>,
    problems: Vec<String>,
}

/// A frame of the walk: a tree, how far its entries are done, their sum.
struct Frame {
    id: BlobId,
    tree: Arc<Tree>,
    next: usize,
    sum: Sizes,
}

/// Counts `chosen`; `others` (the snapshots not chosen) are walked too, for
/// what is unique to the chosen ones.
pub async fn snapshots(
    repo: &Repository,
    chosen: &[SnapshotInfo],
    others: &[SnapshotInfo],
) -> Result<SnapshotsReport> {
    let mut mine = Walk::new(repo);
    let mut restored = Sizes::default();
    for s in chosen {
        restored.add(&mine.tree(s.snapshot.tree, &s.id.to_hex()[..8]).await);
    }
    let mut theirs = Walk::new(repo);
    for s in others {
        theirs.tree(s.snapshot.tree, &s.id.to_hex()[..8]).await;
    }
    let (mut blobs, mut unique) = (Blobs::default(), Blobs::default());
    for (id, loc) in &mine.seen {
        blobs.add(loc);
        if !theirs.seen.contains_key(id) {
            unique.add(loc);
        }
    }
    let mut problems = mine.problems;
    problems.extend(theirs.problems);
    Ok(SnapshotsReport {
        snapshots: chosen.len() as u64,
        restored,
        blobs,
        unique,
        problems,
    })
}

impl<'a> Walk<'a> {
    fn new(repo: &'a Repository) -> Self {
        Self {
            repo,
            sizes: HashMap::new(),
            seen: HashMap::new(),
            problems: Vec::new(),
        }
    }

    /// What restoring tree `root` (of snapshot `short`) would write; each
    /// tree is walked once, its blobs and its chunks' added to `seen`.
    async fn tree(&mut self, root: Location, short: &str) -> Sizes {
        let mut stack = Vec::new();
        match self.enter(root, short, "/").await {
            Entered::Known(s) => return s,
            Entered::Missing => return Sizes::default(),
            Entered::Tree(tree) => stack.push(Frame {
                id: root.id,
                tree,
                next: 0,
                sum: Sizes::default(),
            }),
        }
        while let Some(top) = stack.last_mut() {
            let tree = top.tree.clone();
            let Some(entry) = tree.entries.get(top.next) else {
                let Some(done) = stack.pop() else { break };
                self.sizes.insert(done.id, done.sum);
                match stack.last_mut() {
                    Some(parent) => parent.sum.add(&done.sum),
                    None => return done.sum,
                }
                continue;
            };
            top.next += 1;
            match entry.kind {
                Kind::File => {
                    top.sum.files = top.sum.files.saturating_add(1);
                    top.sum.bytes = top.sum.bytes.saturating_add(entry.size);
                    for c in &entry.chunks {
                        self.seen.entry(c.id).or_insert(*c);
                    }
                }
                Kind::Dir => {
                    top.sum.dirs = top.sum.dirs.saturating_add(1);
                    let Some(sub) = entry.subtree else { continue };
                    if stack.len() >= MAX_DEPTH {
                        let name = String::from_utf8_lossy(&entry.name);
                        let why = nested_too_deep();
                        self.problems
                            .push(format!("snapshot {short}: {name}: {why}"));
                        continue;
                    }
                    let name = String::from_utf8_lossy(&entry.name).into_owned();
                    match self.enter(sub, short, &name).await {
                        Entered::Known(s) => {
                            if let Some(top) = stack.last_mut() {
                                top.sum.add(&s);
                            }
                        }
                        Entered::Missing => {}
                        Entered::Tree(tree) => stack.push(Frame {
                            id: sub.id,
                            tree,
                            next: 0,
                            sum: Sizes::default(),
                        }),
                    }
                }
                _ => top.sum.others = top.sum.others.saturating_add(1),
            }
        }
        Sizes::default()
    }

    /// Tree `loc`: its sizes if walked before, else read (a problem noted
    /// if it cannot be); its blob counted.
    async fn enter(&mut self, loc: Location, short: &str, name: &str) -> Entered {
        if let Some(s) = self.sizes.get(&loc.id) {
            return Entered::Known(*s);
        }
        self.seen.entry(loc.id).or_insert(loc);
        match self.repo.shared_tree(&loc).await {
            Ok(t) => Entered::Tree(t),
            Err(e) => {
                self.problems.push(format!("snapshot {short}: {name}: {e}"));
                Entered::Missing
            }
        }
    }
}

enum Entered {
    Known(Sizes),
    Missing,
    Tree(Arc<Tree>),
}

/// Counts the repository's objects from its listing.
pub async fn repository(repo: &Repository) -> Result<RepositoryReport> {
    let backend = repo.backend();
    let mut report = RepositoryReport {
        snapshots: backend.list(ObjectKind::Snapshot).await?.len() as u64,
        indexes: backend.list(ObjectKind::Index).await?.len() as u64,
        ..RepositoryReport::default()
    };
    for (_, pack) in repo.list_packs().await? {
        let class = pack.storage_class.unwrap_or_else(|| "STANDARD".into());
        let slot = report.packs_by_class.entry(class).or_default();
        slot.0 += 1;
        slot.1 += pack.size;
    }
    Ok(report)
}
