//! `restore`: recreate a snapshot (or a part of it) in a local directory.
//!
//! Everything is created below the target only: names come from verified
//! trees (single components, unique), directories are made by restore itself
//! and files are opened with `O_EXCL | O_NOFOLLOW`, so nothing a snapshot
//! holds can make restore write elsewhere. Directory metadata is applied after
//! the directory's contents, so mtimes survive.
//!
//! Damage does not stop a restore: a file whose data is damaged or missing
//! in the repository is left out (a partly written one is removed, never
//! left with wrong bytes), a directory whose tree is damaged is left out,
//! each listed in [`RestoreStats::damaged`]; everything else is restored.
//! Failing to reach the repository or to write the target stops it.
//!
//! Over a live tree (`--overwrite`, see [`Overwrite`]) a file already at
//! the target is compared with its entry first: one whose size and mtime
//! match is kept (its metadata set again where it differs); a changed one
//! is rebuilt beside it from the chunks it still holds plus those read
//! from the repository, then renamed over it, so a restore that stops
//! leaves the old file whole. `--delete` removes what the snapshot lacks,
//! below the restored path only; `--dry-run` says all this and does none.
//!
//! The parts: [`walk`] (trees, directories, links; files become queued
//! reads), [`existing`] (what is already at the target: compared, kept,
//! deleted), [`links`] (hard links, made once their file is complete),
//! [`plan`] (which blobs one ranged read takes), [`write`] (reads run and
//! files written concurrently, unfinished files tracked) and [`target`]
//! (everything that touches the target directory).

mod existing;
mod links;
mod look;
mod plan;
mod select;
mod target;
mod walk;
mod write;

use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Entry, Kind};
use crate::patterns::Patterns;
use crate::progress::Progress;
use crate::repository::Repository;
use links::HardLinks;
use select::Select;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use target::{apply_metadata, prepare_target};
use tokio::sync::mpsc;
use walk::Walk;
use write::{FileWriter, Unfinished};

/// Reads queued between the walk and the writer.
const QUEUED_FETCHES: usize = 256;

/// What restore does with what is already at the target (restic's
/// `--overwrite` modes; `coffer restore --overwrite` alone is
/// [`Overwrite::IfChanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overwrite {
    /// The target must be empty (or missing): nothing is overwritten.
    #[default]
    Refuse,
    /// Every file already there is compared by content, whatever its size
    /// and mtime, and rebuilt where it differs.
    Always,
    /// A file whose size and mtime match its entry is taken as unchanged
    /// (with `verify`, compared by content too); others are compared by
    /// content and rebuilt where they differ.
    IfChanged,
    /// A file is replaced only if the snapshot's is newer (by mtime).
    IfNewer,
    /// Files already there are kept as they are; only missing ones are
    /// restored.
    Never,
}

/// What restore did (or, with `dry_run`, would do) to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Made where nothing was.
    New,
    /// Something of another kind (or a hard-linked file) was in the way:
    /// removed, and the entry made.
    Replaced,
    /// A file whose content differed, rebuilt: `fetched` bytes (stored)
    /// read from the repository, `reused` bytes taken from the old file.
    Updated {
        /// Stored bytes read from the repository for it.
        fetched: u64,
        /// Bytes of its chunks found in the file already there.
        reused: u64,
    },
    /// The same content, its metadata (mode, owner, mtime, extended
    /// attributes) set again.
    Metadata,
    /// Already as the snapshot holds it.
    Unchanged,
    /// Kept as it is, by the overwrite mode (`never`, `if-newer`).
    Kept,
    /// Removed: the snapshot lacks it (`delete`).
    Deleted,
}

/// A function told each path's [`Action`].
pub type ActionFn = dyn Fn(Action, &Path) + Send + Sync;

/// Told each path's [`Action`] as restore decides it (for `--dry-run` and
/// `--verbose`).
#[derive(Clone)]
pub struct ReportTo(pub Arc<ActionFn>);

impl std::fmt::Debug for ReportTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReportTo(..)")
    }
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The directory to restore into (created if missing).
    pub target: PathBuf,
    /// What to do with what is already at the target.
    pub overwrite: Overwrite,
    /// Remove what the snapshot lacks below the restored path.
    pub delete: bool,
    /// Decide and report every action; change nothing.
    pub dry_run: bool,
    /// Compare files whose size and mtime match by content too, and read
    /// every file written back and check it against the snapshot.
    pub verify: bool,
    /// Told each path's action.
    pub report: Option<ReportTo>,
    /// Restore only entries that match (or lie below a directory that
    /// does): names, or paths in the snapshot (`--include`).
    pub include: Option<Patterns>,
    /// Leave out entries that match, and what is below them; with
    /// `delete`, they are not removed either (`--exclude`).
    pub exclude: Option<Patterns>,
    /// Leave holes for the snapshot's holes and for blocks of zeros (the
    /// default, as `restic restore --sparse`); `false` writes the zeros.
    pub sparse: bool,
    /// Counters to update as files are found and written.
    pub progress: Option<Arc<Progress>>,
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreStats {
    /// Regular files written.
    pub files: u64,
    /// Directories made.
    pub dirs: u64,
    /// Symlinks and special files made.
    pub others: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Of `files`, those that replaced a file with other content.
    pub updated: u64,
    /// Files, links and nodes already as the snapshot holds them.
    pub unchanged: u64,
    /// Of those, the ones whose metadata was set again.
    pub metadata: u64,
    /// Entries kept as they were by the overwrite mode.
    pub kept: u64,
    /// Entries removed because the snapshot lacks them (`delete`).
    pub deleted: u64,
    /// Bytes of updated files taken from the files already there.
    pub reused_bytes: u64,
    /// Stored bytes of the chunks the restore reads from the repository
    /// (with `dry_run`: would read); a read may take a few more, between
    /// chunks it merges.
    pub fetch_bytes: u64,
    /// Entries restored incompletely (e.g. a device node without root), each
    /// with the path and the reason.
    pub warnings: Vec<String>,
    /// Files and directories left out because their data in the repository
    /// is damaged or missing, each with the path and the object at fault.
    pub damaged: Vec<String>,
    /// Extended attributes the target's file system could not take (it has
    /// none); one warning in [`RestoreStats::warnings`] says how many.
    pub xattrs_unsupported: u64,
    /// Entries whose set-uid or set-gid bit was left off because their
    /// owner was not restored (not root, or the owner refused).
    pub setid_dropped: u64,
}

impl RestoreStats {
    /// Adds what another part of the restore did (the walk, the file
    /// writer, one read's files) to this.
    fn absorb(&mut self, mut other: RestoreStats) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.others += other.others;
        self.bytes += other.bytes;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.metadata += other.metadata;
        self.kept += other.kept;
        self.deleted += other.deleted;
        self.reused_bytes += other.reused_bytes;
        self.fetch_bytes += other.fetch_bytes;
        self.warnings.append(&mut other.warnings);
        self.damaged.append(&mut other.damaged);
        self.xattrs_unsupported += other.xattrs_unsupported;
        self.setid_dropped += other.setid_dropped;
    }
}

/// Whether `e` is damage to (or absence of) repository objects, which
/// costs only the entries that need them, rather than a failure to reach
/// the repository or to write the target, which stops the restore.
pub(super) fn is_damage(e: &Error) -> bool {
    match e {
        Error::Damaged { .. } | Error::NotFound(_) | Error::Forged { .. } => true,
        Error::At { source, .. } => is_damage(source),
        _ => false,
    }
}

/// Restores `path` of `snapshot` into `opts.target`. A directory's contents
/// go into the target; a single file or link goes into it under its name.
///
/// Two halves run together: the walk fetches trees (several at once), makes
/// directories, links and special files, and queues the files' blobs as
/// reads, merging blobs that lie back to back in one pack into one ranged
/// read; the writer runs those reads several at once, and each, on the
/// blocking pool, decodes its blobs and writes them into their files at
/// their offsets (files are written in parallel; the task that writes a
/// file's last part applies its metadata). Directory metadata is applied
/// last, deepest first, so mtimes survive.
pub async fn restore(
    repo: &Arc<Repository>,
    snapshot: &Snapshot,
    path: &str,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    let entry = repo.resolve(snapshot, path).await?;
    let over = opts.overwrite != Overwrite::Refuse;
    prepare_target(&opts.target, over, opts.dry_run)?;
    let is_root = crate::user::is_root();
    let key = Arc::new(repo.chunk_key().clone());
    let chunker = Arc::new(Chunker::new(
        repo.config().chunker.clone(),
        key.chunker_seed(),
    ));
    let (tx, rx) = mpsc::channel(QUEUED_FETCHES);
    let unfinished = Arc::new(Unfinished::default());
    let mut walk = Walk {
        repo,
        progress: opts.progress.clone(),
        overwrite: opts.overwrite,
        delete: opts.delete,
        dry_run: opts.dry_run,
        verify: opts.verify,
        report: opts.report.clone(),
        key,
        chunker,
        select: Arc::new(Select::new(
            opts.include.clone(),
            opts.exclude.clone(),
            &opts.target,
            &snapshot_root(path, &entry),
        )),
        maybe_empty: HashSet::new(),
        max_gap: if over {
            plan::MAX_GAP_OVER
        } else {
            plan::MAX_GAP
        },
        sparse: opts.sparse,
        is_root,
        stats: RestoreStats::default(),
        tx,
        open: Vec::new(),
        dirs: Vec::new(),
        lost_dirs: HashSet::new(),
        unfinished: unfinished.clone(),
        ahead: Arc::new(tokio::sync::Semaphore::new(walk::FILES_AHEAD)),
        links: HardLinks::default(),
        comparing: Default::default(),
    };
    let mut writer = FileWriter {
        repo: repo.clone(),
        progress: opts.progress.clone(),
        is_root,
        stats: RestoreStats::default(),
    };
    let is_snapshot_root = path.split('/').all(|p| p.is_empty() || p == ".");
    let walked = async {
        if entry.kind == Kind::Dir {
            if !is_snapshot_root {
                walk.dirs.push((entry.clone(), opts.target.clone()));
            }
            walk.walk(&entry, &opts.target).await?;
        } else {
            let dest = opts.target.join(OsStr::from_bytes(&entry.name));
            let there = std::fs::symlink_metadata(&dest).ok();
            walk.add_leaf(entry, dest, there).await?;
        }
        walk.flush().await?;
        if let Some(p) = &walk.progress {
            p.totals_done();
        }
        // Closing the queue ends the writer.
        let Walk {
            stats,
            dirs,
            lost_dirs,
            links,
            maybe_empty,
            ..
        } = walk;
        Ok::<_, Error>((stats, dirs, lost_dirs, links, maybe_empty))
    };
    let ((mut stats, dirs, lost_dirs, links, maybe_empty), ()) =
        match tokio::try_join!(walked, writer.run(rx)) {
            Ok(done) => done,
            Err(e) => {
                let removed = unfinished.remove_all();
                if removed > 0 {
                    tracing::warn!("removed {removed} partly written files");
                }
                return Err(e);
            }
        };
    stats.absorb(writer.stats);
    if opts.dry_run {
        return Ok(stats);
    }
    // Every file is complete: its other names, before directory mtimes.
    links.make(is_root, &mut stats)?;
    for (entry, dest) in dirs.iter().rev() {
        if lost_dirs.contains(dest) {
            // Made empty, its tree unreadable: not left looking restored.
            let _ = std::fs::remove_dir(dest);
            continue;
        }
        if maybe_empty.contains(dest) && std::fs::remove_dir(dest).is_ok() {
            continue; // made on the way to included entries, none came
        }
        if over {
            // Over a live tree most directories are as they were: one stat
            // rather than the three calls that set the same metadata again.
            let same = std::fs::symlink_metadata(dest)
                .is_ok_and(|meta| !existing::metadata_differs(entry, &meta, dest, is_root));
            if same {
                continue;
            }
        }
        apply_metadata(entry, dest, is_root, &mut stats)?;
    }
    if stats.setid_dropped > 0 {
        tracing::info!(
            "{}: {} entries restored without their set-uid/set-gid bits: their owner was \
             not restored (restore as root to keep both)",
            opts.target.display(),
            stats.setid_dropped
        );
    }
    if stats.xattrs_unsupported > 0 {
        stats.warnings.push(format!(
            "{}: the file system takes no extended attributes: {} were not restored \
             (restore onto ext4, xfs or btrfs to keep ACLs and capabilities)",
            opts.target.display(),
            stats.xattrs_unsupported
        ));
    }
    Ok(stats)
}

/// The path in the snapshot that the target stands for: the restored
/// directory, or the parent of a restored file.
fn snapshot_root(path: &str, entry: &Entry) -> PathBuf {
    let path = Path::new("/").join(path.trim_start_matches('/'));
    match entry.kind {
        Kind::Dir => path,
        _ => path.parent().map(Path::to_path_buf).unwrap_or(path),
    }
}

/// `e`, said of `dest`.
pub(super) fn at(dest: &Path, e: Error) -> Error {
    Error::At {
        path: dest.display().to_string(),
        source: Box::new(e),
    }
}
