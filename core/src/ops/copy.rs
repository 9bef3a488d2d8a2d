//! `coffer copy`: a repository's objects into another store, byte for byte.
//!
//! Objects are immutable and encrypted, so a copy needs no key: it reads the
//! source (list and get) and only ever calls `put_new` on the destination,
//! whose credentials may allow nothing but PutObject. What the destination
//! has is kept in a local [`journal`], so a re-run stores only what is new
//! without listing or reading the destination.
//!
//! Order, so that a copy stopped at any moment leaves the destination with
//! only whole snapshots: `config` first (a local destination is created by
//! it), then packs, then indexes, then snapshots. Snapshots are listed
//! before packs and indexes: a writer stores a snapshot after every pack
//! and index it needs, so each snapshot listed has its objects in the
//! listings made after it. Snapshots and indexes are named by the SHA-256
//! of their bytes, which is checked before they are stored: a damaged one
//! is reported and left out (packs have random names; `check` on the
//! destination verifies their contents with the key).
//!
//! From S3, each object keeps its Object Lock retention and storage class
//! (as its GET reports them; [`crate::backend::Carried`]): a locked
//! repository copied into a locked bucket stays locked as long.

pub mod journal;
mod spool;

use super::Tally;
use crate::backend::{Backend, Carried, ObjectInfo, ObjectKey, ObjectKind, PackPlaces};
use crate::error::{Error, Result};
use crate::format::id::ObjectId;
use crate::format::snapshot::parse_object_name;
use crate::progress::Progress;
use crate::repository::known::KnownRepositories;
use futures_util::stream::{self, StreamExt};
use journal::Journal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// What to copy, and how.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Snapshots to copy, by their id or a prefix of it (as `snapshots`
    /// shows them); empty copies every snapshot. Packs and indexes are all
    /// copied either way: without the key nothing says which a snapshot
    /// needs.
    pub snapshots: Vec<String>,
    /// Objects moved at once (within a byte budget; each held whole in
    /// memory, but one over 32 MiB is carried through a file).
    pub concurrency: usize,
}

/// What a copy did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    /// Stored at the destination by this run.
    pub copied: Tally,
    /// Skipped: the journal says the destination has them.
    pub known: Tally,
    /// Found at the destination already (a PUT answered "exists"), e.g.
    /// stored by a run whose journal line was lost.
    pub present: Tally,
    /// Snapshots copied or known, among those selected.
    pub snapshots: u64,
    /// Objects left out, each with why (a damaged snapshot or index).
    pub damaged: Vec<String>,
    /// Listed, then gone from the source before they were read (deleted
    /// by `forget`/`prune` meanwhile): not copied, nothing lost.
    pub gone: u64,
}

/// Where the journal of copies of repository `repo_id` to `destination`
/// lives under `dir`: one file per (repository, destination).
pub fn journal_path(dir: &Path, repo_id: &str, destination: &str) -> PathBuf {
    let tag = ObjectId::of_bytes(destination.as_bytes()).to_hex();
    dir.join(format!("{repo_id}-to-{}.journal", &tag[..16]))
}

/// Copies `from`'s objects to `to` (see the module's description); the
/// journal lives in `journal_dir` ([`journal_path`]). With this host's
/// `pins`, the source's config must be the one pinned for its location,
/// and the destination's location is pinned to the same config: a config
/// later replaced at the copy is refused here as at the original.
pub async fn copy(
    from: &dyn Backend,
    to: &dyn Backend,
    journal_dir: &Path,
    pins: Option<&KnownRepositories>,
    opts: &CopyOptions,
    progress: &Progress,
) -> Result<CopyReport> {
    let (config, carried) = from
        .get_carried(&ObjectKey::config(), ObjectKind::Config.max_size())
        .await
        .map_err(|e| crate::repository::config_error(from, e))?;
    let parsed = crate::format::config::RepoConfig::from_json(&config, "config")?;
    let repo_id = parsed.id.clone();
    let destination = to.location();
    // The key changes must hold together (their signatures need no secret
    // key): a copy never spreads a forged or broken chain.
    let digest = ObjectId::of_bytes(&config);
    let chain = crate::repository::key_chain::read(from, &parsed, digest).await?;
    if let Some(pins) = pins {
        pins.check(&from.location(), &digest, &chain.digests())?;
        pins.check(&destination, &digest, &chain.digests())?;
    }
    let header = format!("coffer copy journal 1 {repo_id} {destination}");
    let journal = Journal::open(&journal_path(journal_dir, &repo_id, &destination), &header)?;
    spool::remove_stale(journal_dir);

    let snapshots = select(from.list(ObjectKind::Snapshot).await?, &opts.snapshots)?;
    let indexes = from.list(ObjectKind::Index).await?;
    let packs = from.list(ObjectKind::Pack).await?;
    // A version 3 repository's data packs are apart (`files/`); in an
    // earlier one nothing there is part of the repository.
    let files_apart = PackPlaces::of(&parsed).files_apart();
    let file_packs = match files_apart {
        true => from.list(ObjectKind::FilePack).await?,
        false => Vec::new(),
    };
    let keys: Vec<ObjectInfo> = from
        .list(ObjectKind::Keys)
        .await?
        .into_iter()
        .filter(|o| crate::format::key_change::parse_object_name(&o.name).is_some())
        .collect();
    let (objects, bytes) = [&keys, &snapshots, &indexes, &packs, &file_packs]
        .iter()
        .flat_map(|l| l.iter())
        .fold((1, config.len() as u64), |(n, b), o| (n + 1, b + o.size));
    progress.set_totals(objects, bytes);

    let mut run = Copier {
        from,
        to,
        spool_dir: journal_dir,
        concurrency: opts.concurrency.max(1),
        journal,
        report: CopyReport::default(),
        progress,
        files_apart,
    };
    run.put_config(config, &carried).await?;
    // Key changes before any snapshot: a reader of the copy must never see
    // a revoked writer's snapshot without the revocation.
    for (kind, listed) in [
        (ObjectKind::Keys, keys),
        (ObjectKind::Pack, packs),
        (ObjectKind::FilePack, file_packs),
        (ObjectKind::Index, indexes),
        (ObjectKind::Snapshot, snapshots),
    ] {
        run.copy_kind(kind, listed).await?;
    }
    Ok(run.report)
}

/// The snapshots `wanted` names (all if empty); each name must match one.
fn select(listed: Vec<ObjectInfo>, wanted: &[String]) -> Result<Vec<ObjectInfo>> {
    if wanted.is_empty() {
        return Ok(listed);
    }
    let id_of = |o: &ObjectInfo| parse_object_name(&o.name).map(|(_, id)| id.to_hex());
    let mut chosen: Vec<ObjectInfo> = Vec::new();
    for want in wanted {
        let want = want.to_ascii_lowercase();
        let hits: Vec<&ObjectInfo> = listed
            .iter()
            .filter(|o| id_of(o).is_some_and(|id| id.starts_with(&want)))
            .collect();
        match hits.as_slice() {
            [one] => {
                if !chosen.iter().any(|c| c.name == one.name) {
                    chosen.push((*one).clone());
                }
            }
            [] => {
                return Err(Error::Snapshot(format!(
                    "no snapshot id starts with {want:?}; copy names snapshots by id, as \
                     `coffer snapshots` shows them (it reads no snapshot, so not `latest`)"
                )))
            }
            _ => {
                return Err(Error::Snapshot(format!(
                    "{want:?} is the start of {} snapshot ids; give more digits",
                    hits.len()
                )))
            }
        }
    }
    Ok(chosen)
}

/// One copy under way.
struct Copier<'a> {
    from: &'a dyn Backend,
    to: &'a dyn Backend,
    /// Where large objects are carried through a file (the journal's
    /// directory: this host's, private, on disk).
    spool_dir: &'a Path,
    concurrency: usize,
    journal: Journal,
    report: CopyReport,
    progress: &'a Progress,
    /// The source keeps data packs apart (version 3): only they take the
    /// destination's storage class ([`Carried::takes_class`]).
    files_apart: bool,
}

/// What became of one object.
enum Moved {
    Copied(u64),
    Present(u64),
    Damaged(String),
    Gone,
}

impl Copier<'_> {
    /// Stores `config` unless the journal has it. One already there is
    /// taken for the source's: the destination is never read (its
    /// credentials may not allow it, and a denied GET is an alarm in an
    /// audit log). Were it another repository's, nothing of it would be
    /// overwritten (every name is random or a content hash); its readers
    /// would leave our snapshots out as not signed by their writers.
    async fn put_config(&mut self, config: Vec<u8>, carried: &Carried) -> Result<()> {
        let key = ObjectKey::config();
        let size = config.len() as u64;
        self.progress.file_done();
        if self.journal.has(&key) {
            self.report.known.add(size);
            return Ok(());
        }
        match store(self.to, &key, config, carried).await? {
            Moved::Present(_) => self.report.present.add(size),
            _ => self.report.copied.add(size),
        }
        self.journal.record(&key)
    }

    /// Copies the `listed` objects of `kind` the journal does not have,
    /// `concurrency` at once, recording each once stored.
    async fn copy_kind(&mut self, kind: ObjectKind, listed: Vec<ObjectInfo>) -> Result<()> {
        let mut todo = Vec::new();
        for o in listed {
            if let Some(why) = refused(kind, &o) {
                self.report.damaged.push(format!(
                    "{}{} in {}: {why}; not copied (run `coffer check` on the source)",
                    kind.prefix(),
                    o.name,
                    self.from.describe()
                ));
                self.progress.file_done();
                continue;
            }
            let key = ObjectKey::new(kind, o.name);
            if self.journal.has(&key) {
                self.report.known.add(o.size);
                self.done(&key, o.size);
            } else {
                todo.push((key, o.size));
            }
        }
        let (from, to, spool_dir) = (self.from, self.to, self.spool_dir);
        let takes_class =
            kind == ObjectKind::FilePack || (kind == ObjectKind::Pack && !self.files_apart);
        let budget = Arc::new(Semaphore::new(BUDGET_UNITS as usize));
        let mut moves = stream::iter(todo)
            .map(|(key, size)| {
                let budget = budget.clone();
                async move {
                    let moved = match budget.acquire_many_owned(budget_units(size)).await {
                        Ok(_held) if size > spool::SPOOL_OVER => {
                            spool::move_spooled(from, to, &key, size, spool_dir, takes_class).await
                        }
                        Ok(_held) => move_one(from, to, &key, takes_class).await,
                        Err(_) => Err(Error::Internal("copy: the byte budget closed".into())),
                    };
                    (key, moved)
                }
            })
            .buffer_unordered(self.concurrency);
        while let Some((key, moved)) = moves.next().await {
            let size = match moved? {
                Moved::Copied(n) => {
                    self.report.copied.add(n);
                    n
                }
                Moved::Present(n) => {
                    self.report.present.add(n);
                    n
                }
                Moved::Damaged(why) => {
                    self.report.damaged.push(why);
                    self.progress.file_done();
                    continue;
                }
                Moved::Gone => {
                    self.report.gone += 1;
                    self.progress.file_done();
                    continue;
                }
            };
            self.done(&key, size);
            self.journal.record(&key)?;
        }
        Ok(())
    }

    /// Counts `key` (of `size` bytes) as at the destination.
    fn done(&mut self, key: &ObjectKey, size: u64) {
        self.progress.add_bytes(size);
        self.progress.file_done();
        if key.kind == ObjectKind::Snapshot {
            self.report.snapshots += 1;
        }
    }
}

/// Listed bytes of the objects a copy holds at once (each is read whole,
/// then stored; one over [`spool::SPOOL_OVER`] goes through a file, a
/// range at a time, and counts as that size): objects start only while
/// their sizes fit, so many large ones cost no more than the budget, and
/// the default 4 uploads of 16 MiB packs (or 16 of them, for a long link)
/// never wait for it.
const BYTES_IN_FLIGHT: u64 = 256 << 20;
/// The budget is counted in MiB.
const BUDGET_UNIT: u64 = 1 << 20;
const BUDGET_UNITS: u64 = BYTES_IN_FLIGHT / BUDGET_UNIT;

/// The share of [`BYTES_IN_FLIGHT`] an object of `size` listed bytes
/// takes: at least one unit, and at most all (a larger one goes alone).
fn budget_units(size: u64) -> u32 {
    size.min(spool::SPOOL_OVER)
        .div_ceil(BUDGET_UNIT)
        .clamp(1, BUDGET_UNITS) as u32
}

/// Why a listed object is not copied at all, if it is not: a name that is
/// not of its kind (no reader takes it, and a name is a path at the
/// destination), or a size over its kind's cap. Decided from the listing,
/// before any request for it.
fn refused(kind: ObjectKind, listed: &ObjectInfo) -> Option<String> {
    let key = ObjectKey::new(kind, listed.name.clone());
    let named = match kind {
        ObjectKind::Keys => crate::format::key_change::parse_object_name(&key.name).is_some(),
        _ => crate::repository::object_id(&key).is_ok(),
    };
    if !named {
        return Some("its name is not an object id".into());
    }
    let limit = kind.max_size();
    (listed.size > limit).then(|| {
        format!(
            "{} bytes, more than its kind may have ({limit})",
            listed.size
        )
    })
}

/// Reads `key` from `from` and stores it at `to` (in the destination's
/// storage class if `takes_class`, see [`Carried::takes_class`]).
async fn move_one(
    from: &dyn Backend,
    to: &dyn Backend,
    key: &ObjectKey,
    takes_class: bool,
) -> Result<Moved> {
    let (bytes, mut carried) = match from.get_carried(key, key.kind.max_size()).await {
        Ok(got) => got,
        Err(e) => return unread(e),
    };
    if let Some(damaged) = misnamed(from, key, || ObjectId::of_bytes(&bytes)) {
        return Ok(damaged);
    }
    carried.takes_class = takes_class;
    store(to, key, bytes, &carried).await
}

/// What a failed read of an object at the source comes to: gone since
/// the listing (a snapshot deleted meanwhile is not copied; its packs,
/// copied before it, may be gone too: prune deletes only packs no
/// remaining snapshot needs), damaged (reported, the copy goes on), or an
/// error that stops the copy.
fn unread(e: Error) -> Result<Moved> {
    match e {
        Error::NotFound(_) => Ok(Moved::Gone),
        e @ Error::Damaged { .. } => Ok(Moved::Damaged(e.to_string())),
        e => Err(e),
    }
}

/// Why `key`, read from `from`, is not copied, if its SHA-256 (`digest`,
/// computed only for objects named by it: not packs, whose names are
/// random, nor key changes, named by their place in the chain and checked
/// by their signatures) is not its name.
fn misnamed(
    from: &dyn Backend,
    key: &ObjectKey,
    digest: impl FnOnce() -> ObjectId,
) -> Option<Moved> {
    if key.kind.is_fanned() || key.kind == ObjectKind::Keys {
        return None;
    }
    let actual = digest();
    (crate::repository::object_id(key).ok() != Some(actual)).then(|| {
        Moved::Damaged(format!(
            "{key} in {}: its SHA-256 is {actual}, not its name; not copied \
             (run `coffer check` on the source)",
            from.describe()
        ))
    })
}

/// Stores `bytes` as `key` at `to`.
async fn store(
    to: &dyn Backend,
    key: &ObjectKey,
    bytes: Vec<u8>,
    carried: &Carried,
) -> Result<Moved> {
    let size = bytes.len() as u64;
    stored(to.put_new_carried(key, bytes, carried).await, size)
}

/// What a put of `size` bytes came to: one already there counts as present.
fn stored(put: Result<()>, size: u64) -> Result<Moved> {
    match put {
        Ok(()) => Ok(Moved::Copied(size)),
        Err(Error::AlreadyExists(_)) => Ok(Moved::Present(size)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(names: &[&str]) -> Vec<ObjectInfo> {
        names
            .iter()
            .map(|n| ObjectInfo {
                name: n.to_string(),
                size: 1,
                modified: None,
                storage_class: None,
            })
            .collect()
    }

    #[test]
    fn objects_take_their_size_of_the_byte_budget_and_a_large_one_all_of_it() {
        assert_eq!(budget_units(0), 1);
        assert_eq!(budget_units(1), 1);
        assert_eq!(budget_units(16 << 20), 16);
        assert_eq!(budget_units((16 << 20) + 1), 17);
        // Carried through a file: one spool's worth, however large.
        assert_eq!(budget_units(3 << 30), 32);
        // Sixteen default packs at once fit.
        assert!(16 * budget_units(16 << 20) as u64 <= BUDGET_UNITS);
    }

    #[test]
    fn snapshots_are_chosen_by_a_prefix_of_their_id_once_each() {
        let id = |start: &str| format!("{start:0<64}");
        let tag = "0011223344556677";
        let (abc, abd, abe) = (id("abc1"), id("abd2"), id("abe3"));
        let with_tag = format!("{tag}.{abc}");
        let all = listed(&[&with_tag, &format!("{tag}.{abd}"), &abe]);
        let names = |wanted: &[&str]| -> Result<Vec<String>> {
            let wanted: Vec<String> = wanted.iter().map(|w| w.to_string()).collect();
            Ok(select(all.clone(), &wanted)?
                .into_iter()
                .map(|o| o.name)
                .collect())
        };
        assert_eq!(names(&[]).unwrap().len(), 3);
        assert_eq!(names(&["ABC", "abc1", "abe"]).unwrap(), [with_tag, abe]);
        let ambiguous = names(&["ab"]).unwrap_err().to_string();
        assert!(ambiguous.contains("start of 3 snapshot ids"), "{ambiguous}");
        let none = names(&["latest"]).unwrap_err().to_string();
        assert!(none.contains("not `latest`"), "{none}");
        // The host tag is not part of the id.
        assert!(names(&["0011"]).is_err());
    }
}
