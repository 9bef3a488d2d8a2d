//! `coffer check`: proves that every snapshot's trees and chunks are
//! present and well-formed, reading only snapshots, trees and the pack
//! listing (object sizes). With [`CheckOptions::read_data`] it also reads,
//! decrypts and verifies (a share of) the file chunks. Damage is reported
//! per snapshot and path; the check goes on past it.

use crate::backend::{ObjectKind, PackPlaces};
use crate::error::{Error, Result};
use crate::format::id::{BlobId, PackId};
use crate::format::index::PackKind;
use crate::format::tree::{nested_too_deep, Kind, Location, Tree, MAX_DEPTH};
use crate::repository::{root_entry, Repository};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The snapshot (8 hex digits) it was found under; empty for a
    /// problem outside snapshots (an index object).
    pub snapshot: String,
    /// The path in the snapshot (empty: the snapshot object itself).
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// How much to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Read and verify file chunks too: `Some(share)` with share in
    /// (0, 1]; each distinct chunk is picked (or not) by its id, so the same
    /// share of a repository picks the same chunks every time.
    pub read_data: Option<f64>,
}

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Snapshot objects checked.
    pub snapshots: usize,
    /// Distinct trees read.
    pub trees: u64,
    /// Chunk references checked against the packs.
    pub chunks: u64,
    /// Packs listed.
    pub packs: usize,
    /// Index objects read.
    pub indexes: usize,
    /// Distinct chunks read and verified (with `read_data`).
    pub chunks_read: u64,
    /// Their stored bytes.
    pub bytes_read: u64,
    /// With `read_data`: packs found archived in cold storage (S3 answered
    /// InvalidObjectState), whose chunks were not read: not damage.
    pub cold_packs: usize,
    /// Distinct chunks left unread in them.
    pub chunks_cold: u64,
    /// Everything wrong, in the order found. A snapshot a revoked writer
    /// signed after its revocation is here, as forged.
    pub damage: Vec<Damage>,
    /// Snapshots of revoked writers that stay (made before the
    /// revocation): (writer, the key change that revoked it, snapshot).
    pub kept_from_revoked: Vec<(String, u64, String)>,
}

/// Trees read at once.
const TREE_READS: usize = 16;
/// Chunks read (with read-data) at once.
const CHUNK_READS: usize = 8;

/// Checks every snapshot of `repo`. Fails only when the repository cannot
/// be listed; anything damaged is in the report.
///
/// Per snapshot, in three steps: fetch the trees not known whole yet,
/// [`TREE_READS`] at once, breadth first; walk them depth first (no I/O),
/// checking every reference against the pack listing and collecting the
/// chunks to read; with read-data, read those [`CHUNK_READS`] at once.
/// Each step is linear in the snapshot's distinct trees, however often
/// they are referenced. Memory: the trees of one snapshot, at most.
pub async fn check(repo: &Repository, opts: CheckOptions) -> Result<CheckReport> {
    let (packs, junk) = listed_packs(repo).await?;
    let stored = packs.len();
    let mut checker = Checker {
        packs: Arc::new(packs),
        places: repo.places(),
        read_share: opts
            .read_data
            .map(|s| (s.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u32),
        verified: HashSet::new(),
        cold: HashSet::new(),
        unread: HashSet::new(),
        clean: HashSet::new(),
        trees: HashMap::new(),
        walked: HashMap::new(),
        reads: Vec::new(),
        whole_if_read: Vec::new(),
        report: CheckReport {
            packs: stored,
            ..CheckReport::default()
        },
        snapshot: String::new(),
    };
    checker.report.damage.extend(junk);
    checker.indexes(repo).await?;
    let chain = repo.key_chain();
    for name in repo.snapshot_names().await? {
        checker.snapshot = crate::format::snapshot::short_name(&name);
        checker.report.snapshots += 1;
        match repo.load_snapshot(&name).await {
            Ok(info) => {
                let writer = info
                    .signer
                    .as_deref()
                    .and_then(|f| chain.state.writer_by_fingerprint(f));
                if let Some(w) = writer {
                    if let Some(revoked) = &w.revoked {
                        let kept = (w.name.clone(), revoked.seq, checker.snapshot.clone());
                        checker.report.kept_from_revoked.push(kept);
                    }
                }
                let root = root_entry(&info.snapshot);
                if let Some(loc) = root.subtree {
                    checker.fetch_trees(repo, loc).await;
                    checker.walk(loc, String::from("/"));
                    checker.read_chunks(repo).await;
                    checker.trees.clear();
                    checker.walked.clear();
                }
            }
            Err(e) => checker.damaged(String::new(), e.to_string()),
        }
    }
    Ok(checker.report)
}

/// Every stored pack's size, by where it is stored and its id.
type ListedPacks = HashMap<(ObjectKind, PackId), u64>;

/// The size of every stored pack, and a problem for each object under
/// `data/` (or `files/`) no reader takes: a name that is not a pack id
/// (every reader leaves it alone), a size over [`ObjectKind::max_size`].
async fn listed_packs(repo: &Repository) -> Result<(ListedPacks, Vec<Damage>)> {
    let mut packs = HashMap::new();
    let mut junk = Vec::new();
    let limit = ObjectKind::Pack.max_size();
    for (kind, info) in repo.list_packs().await? {
        let problem = match PackId::from_hex(&info.name) {
            None => "its name is not a pack id (no reader uses it; delete it by hand)".to_string(),
            Some(_) if info.size > limit => {
                format!("{} bytes, more than a pack may have ({limit})", info.size)
            }
            Some(id) => {
                packs.insert((kind, id), info.size);
                continue;
            }
        };
        junk.push(Damage {
            snapshot: String::new(),
            path: format!("{}{}", kind.prefix(), info.name),
            problem,
        });
    }
    Ok((packs, junk))
}

/// What reading one chunk found.
enum Read {
    /// Read and verified.
    Whole,
    /// Its pack is archived in cold storage: not read.
    Cold,
    /// Damaged or missing: why.
    Bad(String),
}

/// A file chunk to read and verify, and where it was found.
struct ChunkRead {
    path: String,
    /// Its position in the file (1-based) and the file's chunk count.
    index: usize,
    of: usize,
    loc: Location,
}

/// What the walk found below a tree.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    /// Everything below it was found whole (so far).
    whole: bool,
    /// Chunks below it were queued for reading.
    queued: bool,
}

impl Verdict {
    const WHOLE: Self = Self {
        whole: true,
        queued: false,
    };
    const DAMAGED: Self = Self {
        whole: false,
        queued: false,
    };

    /// Adds a child's verdict.
    fn join(&mut self, child: Self) {
        self.whole &= child.whole;
        self.queued |= child.queued;
    }
}

/// A tree being walked: the entries left to check and what the checked
/// ones showed.
struct Frame {
    id: BlobId,
    path: String,
    tree: Tree,
    /// The next entry to check.
    next: usize,
    verdict: Verdict,
}

/// What [`Checker::enter`] found.
enum Enter {
    /// A tree to walk.
    Open(Frame),
    /// A tree not to walk (again).
    Known(Verdict),
}

struct Checker {
    packs: Arc<ListedPacks>,
    /// Where packs of each kind are.
    places: PackPlaces,
    /// With read-data: chunks whose id's first 4 bytes are at most this
    /// are read.
    read_share: Option<u32>,
    /// Chunks read and found whole.
    verified: HashSet<BlobId>,
    /// Packs found archived (with read-data): not read again.
    cold: HashSet<PackId>,
    /// Chunks left unread in them.
    unread: HashSet<BlobId>,
    /// Trees whose whole subtree was found whole: not read again.
    clean: HashSet<BlobId>,
    /// The current snapshot's trees, fetched (or the read's error); each
    /// leaves when the walk reaches it.
    trees: HashMap<BlobId, std::result::Result<Tree, String>>,
    /// The current snapshot's trees the walk reached: `None` while being
    /// walked, then the verdict.
    walked: HashMap<BlobId, Option<Verdict>>,
    /// The current snapshot's chunks to read, in walk order.
    reads: Vec<ChunkRead>,
    /// Trees found whole but for chunks still to read: whole once those
    /// read well.
    whole_if_read: Vec<BlobId>,
    report: CheckReport,
    /// The snapshot being checked.
    snapshot: String,
}

impl Checker {
    fn damaged(&mut self, path: String, problem: String) {
        self.report.damage.push(Damage {
            snapshot: self.snapshot.clone(),
            path,
            problem,
        });
    }

    /// Checks the index objects: each must decrypt, and each pack it lists
    /// that is stored must have the size it lists (a pack it lists may be
    /// gone: prune deletes packs, never rewrites an index). Problems are
    /// reported with an empty snapshot and the index's name as the path.
    async fn indexes(&mut self, repo: &Repository) -> Result<()> {
        for info in repo.backend().list(ObjectKind::Index).await? {
            let path = format!("index/{}", info.name);
            // Read as a stream: what it says of each pack is compared as it
            // is parsed, and only the disagreements are kept.
            let (packs, places) = (self.packs.clone(), self.places);
            // Once per pack, however often it is listed.
            let mismatches = repo
                .fold_index(&info, BTreeMap::new(), move |wrong, pack| {
                    match packs.get(&(places.object_kind(pack.kind), pack.id)) {
                        Some(&size) if size != pack.size => {
                            wrong.insert(pack.id, (size, pack.size));
                        }
                        _ => {}
                    }
                })
                .await;
            match mismatches {
                Err(e) => self.report.damage.push(Damage {
                    snapshot: String::new(),
                    path,
                    problem: e.to_string(),
                }),
                Ok(wrong) => {
                    self.report.indexes += 1;
                    for (pack, (size, said)) in wrong {
                        self.report.damage.push(Damage {
                            snapshot: String::new(),
                            path: path.clone(),
                            problem: format!("pack {pack} is {size} bytes; the index says {said}"),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether `loc` lies inside a stored pack of `kind`; the problem if
    /// not.
    fn stored(&self, loc: &Location, kind: PackKind) -> std::result::Result<(), String> {
        let key = (self.places.object_kind(kind), loc.pack);
        let Some(&size) = self.packs.get(&key) else {
            return Err(format!("pack {} is missing", loc.pack));
        };
        match loc.offset.checked_add(loc.length) {
            Some(end) if end <= size => Ok(()),
            _ => Err(format!(
                "pack {} is {size} bytes, too short for a blob at {}+{}",
                loc.pack, loc.offset, loc.length
            )),
        }
    }

    /// Fetches every tree below `root` that is stored and not known whole,
    /// several at once, into `self.trees`.
    async fn fetch_trees(&mut self, repo: &Repository, root: Location) {
        let mut pending = vec![root];
        let mut reads = FuturesUnordered::new();
        loop {
            while reads.len() < TREE_READS {
                let Some(loc) = pending.pop() else { break };
                if self.clean.contains(&loc.id)
                    || self.trees.contains_key(&loc.id)
                    || self.stored(&loc, PackKind::Tree).is_err()
                {
                    continue;
                }
                // Claim it, so a second reference does not read it again.
                self.trees.insert(loc.id, Err("not read".into()));
                reads.push(async move { (loc.id, repo.read_tree(&loc).await) });
            }
            let Some((id, tree)) = reads.next().await else {
                return;
            };
            let tree = tree.map_err(|e| e.to_string());
            if let Ok(t) = &tree {
                pending.extend(t.entries.iter().filter_map(|e| match e.kind {
                    Kind::Dir => e.subtree,
                    _ => None,
                }));
            }
            self.trees.insert(id, tree);
        }
    }

    /// Checks a file's chunks against the packs and queues the picked ones
    /// for reading; returns whether any was queued.
    fn file(&mut self, path: &str, chunks: &[Location]) -> std::result::Result<bool, String> {
        let mut queued = false;
        for (i, chunk) in chunks.iter().enumerate() {
            self.report.chunks += 1;
            self.stored(chunk, PackKind::Data)?;
            let picked = self.read_share.is_some_and(|share| {
                u32::from_be_bytes([chunk.id.0[0], chunk.id.0[1], chunk.id.0[2], chunk.id.0[3]])
                    <= share
            });
            if picked && !self.verified.contains(&chunk.id) {
                self.reads.push(ChunkRead {
                    path: path.to_string(),
                    index: i + 1,
                    of: chunks.len(),
                    loc: *chunk,
                });
                queued = true;
            }
        }
        Ok(queued)
    }

    /// Checks the tree at `root` (the directory `path`) and everything
    /// below it from the fetched trees, depth first with a stack of its
    /// own: a tree's verdict is known once its last entry is. Each tree is
    /// walked once per snapshot, however many paths reach it (a subtree
    /// named from many places costs one walk, and its damage is reported
    /// at the first path only), and once ever if it proves whole.
    fn walk(&mut self, root: Location, path: String) {
        let mut stack = match self.enter(root, path, 0) {
            Enter::Open(frame) => vec![frame],
            Enter::Known(_) => return,
        };
        while let Some(top) = stack.last_mut() {
            let Some(entry) = top.tree.entries.get(top.next) else {
                let Some(done) = stack.pop() else { break };
                let verdict = self.leave(done);
                if let Some(parent) = stack.last_mut() {
                    parent.verdict.join(verdict);
                }
                continue;
            };
            top.next += 1;
            let child = format!(
                "{}{}{}",
                top.path,
                if top.path.ends_with('/') { "" } else { "/" },
                String::from_utf8_lossy(&entry.name)
            );
            match (entry.kind, entry.subtree) {
                (Kind::Dir, Some(sub)) => {
                    let depth = stack.len();
                    match self.enter(sub, child, depth) {
                        Enter::Open(frame) => stack.push(frame),
                        Enter::Known(verdict) => {
                            if let Some(top) = stack.last_mut() {
                                top.verdict.join(verdict);
                            }
                        }
                    }
                }
                (Kind::File, _) => {
                    let found = self.file(&child, &entry.chunks);
                    match found {
                        Ok(queued) => top.verdict.queued |= queued,
                        Err(problem) => {
                            top.verdict.whole = false;
                            self.damaged(child, problem);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Starts on the tree at `loc` (the directory `path`, `depth` levels
    /// below the root): its frame, or its verdict when that is known
    /// already (whole before, walked in this snapshot, or damaged: then
    /// reported here).
    fn enter(&mut self, loc: Location, path: String, depth: usize) -> Enter {
        if self.clean.contains(&loc.id) {
            return Enter::Known(Verdict::WHOLE);
        }
        if let Some(walked) = self.walked.get(&loc.id) {
            // `None`: still being walked, so it contains itself. Keyed
            // hashes make that unbuildable; it is damage all the same.
            let Some(verdict) = *walked else {
                self.damaged(path, "directory contains itself".into());
                return Enter::Known(Verdict::DAMAGED);
            };
            return Enter::Known(verdict);
        }
        let problem = if depth >= MAX_DEPTH {
            Some(nested_too_deep())
        } else if let Err(problem) = self.stored(&loc, PackKind::Tree) {
            Some(format!("directory listing lost: {problem}"))
        } else {
            match self.trees.remove(&loc.id) {
                Some(Ok(tree)) => {
                    self.report.trees += 1;
                    self.walked.insert(loc.id, None);
                    return Enter::Open(Frame {
                        id: loc.id,
                        path,
                        tree,
                        next: 0,
                        verdict: Verdict::WHOLE,
                    });
                }
                Some(Err(e)) => Some(format!("directory listing unreadable: {e}")),
                None => Some("directory listing was not read".into()),
            }
        };
        if let Some(problem) = problem {
            self.damaged(path, problem);
        }
        self.walked.insert(loc.id, Some(Verdict::DAMAGED));
        Enter::Known(Verdict::DAMAGED)
    }

    /// Records the verdict on a tree whose entries are all checked. A tree
    /// with chunks still to read is not remembered as whole yet.
    fn leave(&mut self, frame: Frame) -> Verdict {
        let v = frame.verdict;
        if v.whole && !v.queued {
            self.clean.insert(frame.id);
        } else if v.whole {
            self.whole_if_read.push(frame.id);
        }
        self.walked.insert(frame.id, Some(v));
        v
    }

    /// Reads and verifies the queued chunks (each distinct one once), and
    /// reports each file with a bad chunk (its first).
    async fn read_chunks(&mut self, repo: &Repository) {
        let reads = std::mem::take(&mut self.reads);
        let mut distinct: HashMap<BlobId, Location> = HashMap::new();
        for r in &reads {
            distinct.entry(r.loc.id).or_insert(r.loc);
        }
        // A pack found archived is not asked again (one failed GET each,
        // a few at most when reads of it run at once).
        let cold = Arc::new(std::sync::Mutex::new(std::mem::take(&mut self.cold)));
        let results: HashMap<BlobId, Read> = futures_util::stream::iter(distinct.into_values())
            .map(|loc| {
                let cold = cold.clone();
                async move {
                    if crate::sync::lock(&cold).contains(&loc.pack) {
                        return (loc.id, Read::Cold);
                    }
                    let read = match repo.read_blob(&loc, PackKind::Data).await {
                        Ok(_) => Read::Whole,
                        Err(Error::Cold(_)) => {
                            crate::sync::lock(&cold).insert(loc.pack);
                            Read::Cold
                        }
                        Err(e) => Read::Bad(e.to_string()),
                    };
                    (loc.id, read)
                }
            })
            .buffer_unordered(CHUNK_READS)
            .collect()
            .await;
        self.cold = std::mem::take(&mut *crate::sync::lock(&cold));
        self.report.cold_packs = self.cold.len();
        let whole_if_read = std::mem::take(&mut self.whole_if_read);
        if results.values().all(|r| matches!(r, Read::Whole)) {
            self.clean.extend(whole_if_read);
        }
        let mut reported: HashSet<String> = HashSet::new();
        for r in reads {
            match results.get(&r.loc.id) {
                Some(Read::Whole) if self.verified.insert(r.loc.id) => {
                    self.report.chunks_read += 1;
                    self.report.bytes_read += r.loc.length;
                }
                Some(Read::Cold) if self.unread.insert(r.loc.id) => {
                    self.report.chunks_cold += 1;
                }
                Some(Read::Bad(e)) if reported.insert(r.path.clone()) => {
                    let problem = format!("chunk {} of {}: {e}", r.index, r.of);
                    self.damaged(r.path, problem);
                }
                _ => {}
            }
        }
    }
}
