//! `coffer prune`: deletes the packs no snapshot references, and the index
//! objects that then list no stored pack.
//!
//! Safe against writers without any lock (DESIGN.md "Dedup horizon"): a
//! writer reuses only blobs whose pack is younger than the horizon H, so a
//! snapshot that is not stored yet can only reference packs stored after
//! `run start − H`. Prune deletes only packs stored before `now − H −
//! margin`; the margin covers the longest backup run and clock skew. Packs
//! of unknown age (a store that does not say) are never deleted.
//!
//! Crash-safe: snapshots are walked before anything is deleted; then packs
//! go, then index objects. Stopping anywhere leaves every snapshot whole and
//! at most some unreferenced objects for the next prune. A tree of a
//! snapshot that cannot be read stops prune before it deletes anything:
//! what it references is unknown. A snapshot object no reader takes
//! (forged, damaged, a bad name, over its cap) is left out with a warning,
//! as every listing leaves it out: junk a put-only credential stores never
//! blocks prune.

use crate::backend::{ObjectInfo, ObjectKey, ObjectKind};
use crate::error::{Error, Result};
use crate::format::id::{BlobId, PackId};
use crate::format::index::PackKind;
use crate::format::tree::Location;
use crate::repository::Repository;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Trees read at once while walking snapshots.
const TREE_READS: usize = 16;
/// Deletes (and retention questions) sent at once.
const DELETES: usize = 8;

/// How to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Added to the dedup horizon: unreferenced packs younger than both are
    /// kept.
    pub margin: Duration,
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Snapshot objects (names) to treat as gone: what a dry-run `forget`
    /// would remove, so a dry run of both reports what both would free.
    pub gone: HashSet<String>,
}

pub use super::Tally;

/// What prune found and did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Snapshots walked.
    pub snapshots: usize,
    /// Distinct trees read.
    pub trees: u64,
    /// Every pack listed.
    pub packs: Tally,
    /// Packs some snapshot references (kept).
    pub referenced: Tally,
    /// Unreferenced packs deleted (with `dry_run`: that would be).
    pub deleted: Tally,
    /// Unreferenced packs kept because they are younger than horizon +
    /// margin (a running backup may still reference them).
    pub young: Tally,
    /// When the oldest of those may go.
    pub young_until: Option<SystemTime>,
    /// Unreferenced packs kept because the store gives no age.
    pub unknown_age: Tally,
    /// Unreferenced packs kept because Object Lock retains them.
    pub locked: Tally,
    /// The latest retention date among those.
    pub locked_until: Option<SystemTime>,
    /// Index objects deleted (with `dry_run`: that would be).
    pub indexes_deleted: u64,
    /// Index objects that could not be read (kept), with the error.
    pub indexes_unreadable: Vec<String>,
}

/// Prunes `repo`.
pub async fn prune(repo: &Repository, opts: PruneOptions) -> Result<PruneReport> {
    let now = SystemTime::now();
    let keep_for =
        Duration::from_secs(u64::from(repo.config().dedup_horizon_days) * 86_400) + opts.margin;
    let cutoff = now.checked_sub(keep_for).unwrap_or(SystemTime::UNIX_EPOCH);
    let listed = repo.list_packs().await?;
    let mut reach = Reach::new(repo, &opts.gone);
    reach.walk_new_snapshots().await?;

    let mut report = PruneReport::default();
    let mut candidates: Vec<(Stored, ObjectInfo)> = Vec::new();
    for (kind, info) in listed {
        let Some(id) = PackId::from_hex(&info.name) else {
            continue;
        };
        report.packs.add(info.size);
        if reach.packs.contains(&(kind, id)) {
            report.referenced.add(info.size);
            continue;
        }
        match info.modified {
            None => report.unknown_age.add(info.size),
            Some(stored) if stored >= cutoff => {
                report.young.add(info.size);
                let free_at = stored + keep_for;
                report.young_until = Some(report.young_until.map_or(free_at, |t| t.min(free_at)));
            }
            Some(_) => candidates.push(((kind, id), info)),
        }
    }
    // Snapshots stored meanwhile reference only young packs (the horizon
    // guarantees it); walking them anyway costs little and guards against
    // a writer whose clock is far off.
    reach.walk_new_snapshots().await?;
    candidates.retain(|(id, info)| {
        let referenced = reach.packs.contains(id);
        if referenced {
            report.referenced.add(info.size);
        }
        !referenced
    });
    report.snapshots = reach.snapshots.len();
    report.trees = reach.trees.len() as u64;

    let deleted = delete_packs(repo, candidates, now, opts.dry_run, &mut report).await?;
    prune_indexes(repo, &deleted, opts.dry_run, &mut report).await?;
    Ok(report)
}

/// A stored pack: where (`data/` or `files/`) and its id.
type Stored = (ObjectKind, PackId);

/// Deletes the candidate packs that no Object Lock retains; returns those
/// deleted (or, dry, that would be).
async fn delete_packs(
    repo: &Repository,
    candidates: Vec<(Stored, ObjectInfo)>,
    now: SystemTime,
    dry_run: bool,
    report: &mut PruneReport,
) -> Result<HashSet<Stored>> {
    let backend = repo.backend();
    if !dry_run && !candidates.is_empty() {
        tracing::info!("deleting up to {} unreferenced packs", candidates.len());
    }
    let mut work = futures_util::stream::iter(candidates)
        .map(|(id, info)| async move {
            let key = ObjectKey::new(id.0, id.1.to_hex());
            let until = backend.retained_until(&key).await?;
            if let Some(until) = until.filter(|&t| t > now) {
                return Ok((id, info.size, Some(until)));
            }
            if !dry_run {
                backend.delete(&key).await?;
                tracing::debug!("deleted {key}");
            }
            Ok::<_, Error>((id, info.size, None))
        })
        .buffer_unordered(DELETES);
    let mut deleted = HashSet::new();
    while let Some(done) = work.next().await {
        match done? {
            (_, size, Some(until)) => {
                report.locked.add(size);
                report.locked_until = Some(report.locked_until.map_or(until, |t| t.max(until)));
            }
            (id, size, None) => {
                report.deleted.add(size);
                deleted.insert(id);
            }
        }
    }
    Ok(deleted)
}

/// Deletes index objects all of whose packs are gone (deleted now, or
/// earlier). An index that cannot be read is kept and reported.
async fn prune_indexes(
    repo: &Repository,
    deleted: &HashSet<Stored>,
    dry_run: bool,
    report: &mut PruneReport,
) -> Result<()> {
    // Indexes first, then packs: a run stores its packs before the index
    // that lists them, so every listed index finds its packs in the pack
    // listing. The other order could miss the packs of an index a running
    // backup stores in between, and delete that index.
    let indexes = repo.backend().list(ObjectKind::Index).await?;
    let stored: Arc<HashSet<Stored>> = Arc::new(
        repo.list_packs()
            .await?
            .into_iter()
            .filter_map(|(kind, o)| Some((kind, PackId::from_hex(&o.name)?)))
            .filter(|stored| !deleted.contains(stored))
            .collect(),
    );
    let places = repo.places();
    for info in indexes {
        // Read as a stream: whether it lists a pack still stored.
        let stored = stored.clone();
        let listed = repo.fold_index(&info, false, move |any, pack| {
            *any |= stored.contains(&(places.object_kind(pack.kind), pack.id));
        });
        match listed.await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                report.indexes_unreadable.push(e.to_string());
                continue;
            }
        }
        if !dry_run {
            let key = ObjectKey::new(ObjectKind::Index, info.name);
            repo.backend().delete(&key).await?;
            tracing::debug!("deleted {key}");
        }
        report.indexes_deleted += 1;
    }
    Ok(())
}

/// The packs the snapshots reference, found by walking their trees (each
/// distinct tree once).
struct Reach<'a> {
    repo: &'a Repository,
    /// Snapshot objects to leave out.
    gone: &'a HashSet<String>,
    /// Snapshot objects walked.
    snapshots: HashSet<String>,
    /// Snapshot objects no reader takes (not signed by a writer, damaged):
    /// not walked.
    left_out: HashSet<String>,
    /// Trees read (by id).
    trees: HashSet<BlobId>,
    /// Every pack referenced, by a tree or a file chunk, as stored.
    packs: HashSet<Stored>,
}

impl<'a> Reach<'a> {
    fn new(repo: &'a Repository, gone: &'a HashSet<String>) -> Self {
        Self {
            repo,
            gone,
            snapshots: HashSet::new(),
            left_out: HashSet::new(),
            trees: HashSet::new(),
            packs: HashSet::new(),
        }
    }

    /// Lists the snapshots and walks those not walked yet.
    async fn walk_new_snapshots(&mut self) -> Result<()> {
        for name in self.repo.snapshot_names().await? {
            let seen = self.snapshots.contains(&name) || self.left_out.contains(&name);
            if seen || self.gone.contains(&name) {
                continue;
            }
            let info = match self.repo.load_snapshot(&name).await {
                Ok(info) => info,
                // Not from a writer, or not a snapshot a reader takes (a
                // bad name, content that does not match it, over its size
                // cap, not decryptable): whatever it points at, no
                // snapshot a reader lists needs it for that. A put-only
                // credential can store such an object and Object Lock
                // keep it, so it must not stop prune. Never deleted here.
                Err(e @ (Error::Forged { .. } | Error::Damaged { .. })) => {
                    tracing::warn!("{e}; prune leaves it out (`coffer check` lists it)");
                    self.left_out.insert(name);
                    continue;
                }
                Err(e) => return Err(stop(&name, e)),
            };
            self.walk(info.snapshot.tree)
                .await
                .map_err(|e| stop(&name, e))?;
            self.snapshots.insert(name);
        }
        Ok(())
    }

    /// Marks everything below `root` as referenced.
    async fn walk(&mut self, root: Location) -> Result<()> {
        let repo = self.repo;
        let data = repo.places().object_kind(PackKind::Data);
        let mut pending = Vec::new();
        self.visit(root, &mut pending);
        let mut reads = FuturesUnordered::new();
        loop {
            while reads.len() < TREE_READS {
                let Some(loc) = pending.pop() else { break };
                reads.push(async move { repo.read_tree(&loc).await });
            }
            let Some(tree) = reads.next().await else {
                return Ok(());
            };
            for entry in tree?.entries {
                self.packs
                    .extend(entry.chunks.iter().map(|c| (data, c.pack)));
                if let Some(sub) = entry.subtree {
                    self.visit(sub, &mut pending);
                }
            }
        }
    }

    /// Marks the tree at `loc` referenced and queues it if its id is new.
    /// The same tree may be stored twice (a writer stores it again once its
    /// first copy is past the horizon): every copy's pack counts, but the
    /// children are the same, so each id is read once.
    fn visit(&mut self, loc: Location, pending: &mut Vec<Location>) {
        let tree = self.repo.places().object_kind(PackKind::Tree);
        self.packs.insert((tree, loc.pack));
        if self.trees.insert(loc.id) {
            pending.push(loc);
        }
    }
}

/// The error that stops prune when a snapshot cannot be walked.
fn stop(snapshot: &str, e: Error) -> Error {
    Error::At {
        path: format!(
            "snapshot {}: what it references is unknown, so prune deleted nothing \
             (run `coffer check`; forget the damaged snapshot, then prune again)",
            crate::format::snapshot::short_name(snapshot)
        ),
        source: Box::new(e),
    }
}
