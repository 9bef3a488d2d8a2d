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
//! The parts: [`walk`] (trees, directories, links; files become queued
//! reads), [`links`] (hard links, made once their file is complete), [`plan`] (which blobs one ranged read takes), [`write`] (reads run
//! and files written concurrently, unfinished files tracked) and [`target`]
//! (everything that touches the target directory).

mod links;
mod plan;
mod target;
mod walk;
mod write;

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Kind;
use crate::progress::Progress;
use crate::repository::Repository;
use links::HardLinks;
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

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The directory to restore into (created if missing).
    pub target: PathBuf,
    /// Restore into a non-empty target, replacing what is in the way.
    pub overwrite: bool,
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
    prepare_target(&opts.target, opts.overwrite)?;
    let is_root = crate::user::is_root();
    let (tx, rx) = mpsc::channel(QUEUED_FETCHES);
    let unfinished = Arc::new(Unfinished::default());
    let mut walk = Walk {
        repo,
        progress: opts.progress.clone(),
        overwrite: opts.overwrite,
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
            walk.add_leaf(entry, dest).await?;
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
            ..
        } = walk;
        Ok::<_, Error>((stats, dirs, lost_dirs, links))
    };
    let ((mut stats, dirs, lost_dirs, links), ()) = match tokio::try_join!(walked, writer.run(rx)) {
        Ok(done) => done,
        Err(e) => {
            let removed = unfinished.remove_all();
            if removed > 0 {
                tracing::warn!("removed {removed} partly written files");
            }
            return Err(e);
        }
    };
    // Every file is complete: its other names, before directory mtimes.
    links.make(is_root, &mut stats)?;
    for (entry, dest) in dirs.iter().rev() {
        if lost_dirs.contains(dest) {
            // Made empty, its tree unreadable: not left looking restored.
            let _ = std::fs::remove_dir(dest);
            continue;
        }
        apply_metadata(entry, dest, is_root, &mut stats)?;
    }
    stats.absorb(writer.stats);
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

/// `e`, said of `dest`.
pub(super) fn at(dest: &Path, e: Error) -> Error {
    Error::At {
        path: dest.display().to_string(),
        source: Box::new(e),
    }
}
