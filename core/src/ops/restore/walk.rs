//! The walking half of a restore: trees fetched ahead, depth first (several
//! at once, trees stored back to back read together), directories, links
//! and special files made in the writer's order, and each file's chunks
//! queued as reads for the writing half ([`super::write`]).

use super::existing;
use super::links::{HardLinks, Linked};
use super::look::{self, DirId, Held, Looked};
use super::plan::{next_tree_batch, Span};
use super::select::Select;
use super::target::{apply_metadata, clear_way, make_dir, make_node, make_symlink};
use super::write::{finish, write_at, FileFetch, FileJob, Part, Unfinished};
use super::{at, is_damage, Action, Overwrite, ReportTo, RestoreStats};
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::format::chunk_key::ChunkIdKey;
use crate::format::index::PackKind;
use crate::format::tree::{nested_too_deep, Entry, Kind, Location, Tree, MAX_DEPTH};
use crate::progress::Progress;
use crate::repository::Repository;
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Trees fetched at once while walking.
const TREES_IN_FLIGHT: usize = 16;
/// The memory the trees fetched ahead of the walk may take, those in
/// flight counted at what trees read so far took per stored byte. Trees
/// compress ~14x: 16 batches of 1 MiB stored once held the trees of all
/// 200,000 files of tests/memory.rs at once (85 MiB parsed). 16 MiB is
/// ~10,000 directories of a few files ahead, or 40 of 1,000.
const TREES_AHEAD_BYTES: u64 = 16 << 20;
/// Memory per stored byte of tree assumed until trees have been read.
const TREE_GROWTH: u64 = 16;
/// Reads assembled at once. A writer fills one pack per core, so the
/// blobs of consecutive small files alternate between packs, and files
/// unchanged since an earlier backup lie in older packs: one open read per
/// pack keeps each pack's run mergeable.
const OPEN_FETCHES: usize = 64;
/// Files queued (walked, not yet written) at most. Reads merge the blobs
/// of many small files (an 8 MiB read holds ~50,000 files of 100 bytes),
/// so a bound on reads queued is none on files: a restore of 1M small
/// files held every file's job at once (1.3 GB). Each waiting file costs
/// its entry and path, ~1 KB.
pub(super) const FILES_AHEAD: usize = 65_536;

/// The walking half: trees, directories, links and special files; files
/// become queued reads.
pub(super) struct Walk<'a> {
    pub(super) repo: &'a Arc<Repository>,
    pub(super) progress: Option<Arc<Progress>>,
    pub(super) overwrite: Overwrite,
    /// Remove what the snapshot lacks (`--delete`).
    pub(super) delete: bool,
    /// Decide and report, change nothing.
    pub(super) dry_run: bool,
    /// Compare by content whatever the size and mtime, and check every
    /// file written (`--verify`).
    pub(super) verify: bool,
    pub(super) report: Option<ReportTo>,
    /// The chunk-id key and the repository's chunker, to compare files
    /// already at the target.
    pub(super) key: Arc<ChunkIdKey>,
    pub(super) chunker: Arc<Chunker>,
    /// Which entries to take (`--include`, `--exclude`).
    pub(super) select: Arc<Select>,
    /// The most bytes one read skips between two chunks it takes.
    pub(super) max_gap: u64,
    /// Directories made only to lead to included entries: removed at the
    /// end if nothing was restored in them.
    pub(super) maybe_empty: HashSet<PathBuf>,
    pub(super) sparse: bool,
    pub(super) is_root: bool,
    pub(super) stats: RestoreStats,
    pub(super) tx: mpsc::Sender<FileFetch>,
    /// Reads being assembled, oldest first. A file in several blobs gets
    /// reads of its own after these (parts are written at their offsets,
    /// so this is for merging reads, not for order).
    pub(super) open: Vec<FileFetch>,
    /// Directories made, parents before children; their metadata is applied
    /// at the end, in reverse.
    pub(super) dirs: Vec<(Entry, PathBuf)>,
    /// Directories whose tree could not be read (damaged or missing).
    pub(super) lost_dirs: HashSet<PathBuf>,
    /// The files being written.
    pub(super) unfinished: Arc<Unfinished>,
    /// Permits for the files queued ([`FILES_AHEAD`]).
    pub(super) ahead: Arc<Semaphore>,
    /// Hard-linked entries: the first name of each file, and the names to
    /// link to it once it is complete.
    pub(super) links: HardLinks,
    /// Files at the target being compared with their entries, in walk
    /// order.
    pub(super) comparing: VecDeque<Comparing>,
}

/// A file already at the target, being compared with its entry.
pub(super) struct Comparing {
    entry: Entry,
    dest: PathBuf,
    meta: std::fs::Metadata,
    compared: tokio::task::JoinHandle<std::io::Result<(existing::Compared, Option<Result<Begun>>)>>,
}

/// A file's rebuild begun beside it: the temporary file, with the chunks
/// found in the old one copied in.
struct Begun {
    temp: PathBuf,
    new: std::fs::File,
    copied: existing::Copied,
}

/// Compares the file at `path` with `entry` (`Err`: it cannot be read)
/// and, when it differs and `rebuild` is given (the unfinished files, and
/// whether to write holes), begins its rebuild. On the blocking pool, so
/// the walk goes on meanwhile.
fn compare_and_begin(
    path: &Path,
    entry: &Entry,
    key: &ChunkIdKey,
    chunker: &Chunker,
    rebuild: Option<(Arc<Unfinished>, bool)>,
) -> std::io::Result<(existing::Compared, Option<Result<Begun>>)> {
    let compared = existing::compare(path, entry, key, chunker)?;
    let begun = match rebuild {
        Some((unfinished, sparse)) if !compared.same => Some(begin(
            path,
            entry,
            &compared.reuse,
            key,
            &unfinished,
            sparse,
        )),
        _ => None,
    };
    Ok((compared, begun))
}

/// Creates the rebuild of the file at `path` beside it and copies in the
/// chunks `reuse` found in it.
fn begin(
    path: &Path,
    entry: &Entry,
    reuse: &[Option<u64>],
    key: &ChunkIdKey,
    unfinished: &Unfinished,
    sparse: bool,
) -> Result<Begun> {
    let temp = existing::temp_path(path);
    let new = unfinished.create(&temp)?;
    let old = existing::open_existing(path)
        .map_err(|e| Error::io(path, "reading the file restore replaces", e))?;
    let copied = existing::copy_reused(&old, &new, entry, reuse, key, |f, d, at| {
        write_at(f, d, at, sparse)
    })
    .map_err(|e| Error::io(&temp, "writing a file", e))?;
    Ok(Begun { temp, new, copied })
}

/// Files compared by content at once, over a live tree: each reads the
/// file, which with a cold cache waits for the disk (439 changed files of
/// /usr/share one after the other: 0.17 s of a 0.65 s restore).
const COMPARES_AHEAD: usize = 16;

impl Walk<'_> {
    /// Restores the contents of directory `dir` into `path` depth first, in
    /// name order: the order the writer read the files in, so the chunks of
    /// files restored one after the other lie back to back in their packs
    /// and are read together. Trees are fetched ahead in the same order,
    /// up to [`TREES_IN_FLIGHT`] at once. (A restore of /usr/share/doc +
    /// 100 MB, 214 MiB from 168 MiB stored: 758 ranged reads breadth first
    /// with 4 open reads, 302 depth first with 64, 29 once a chunk that
    /// several files share joins the read that already holds it; 2.8 s ->
    /// 1.9-2.2 s at 40 ms round trip.)
    pub(super) async fn walk(&mut self, dir: &Entry, path: &Path) -> Result<()> {
        let Some(root) = dir.subtree else {
            return Ok(());
        };
        let over = self.over_live_tree();
        let mut trees = TreesAhead::new(self.repo, root, path, self.select.clone(), over);
        // Directories being restored, innermost last.
        let mut within: Vec<Within> = Vec::new();
        let whole = self.select.takes_all() || self.select.included(path);
        // The top directory as the walk finds it (a look at it counts).
        let found = std::fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| look::dir_id(&m));
        let mut next_dir = Some((path.to_path_buf(), whole, found));
        loop {
            if let Some((dir, whole, found)) = next_dir.take() {
                let tree = if within.len() >= MAX_DEPTH {
                    Ok(Err(Error::damaged(
                        dir.display().to_string(),
                        nested_too_deep(),
                    )))
                } else {
                    trees.get(&dir).await
                };
                match tree? {
                    Ok(tree) => {
                        let held = if over {
                            Held::of(found, trees.look(&dir).await)
                        } else {
                            Held::Unknown
                        };
                        if self.delete && whole {
                            self.delete_extras(&tree, &dir, &held)?;
                        }
                        within.push(Within {
                            tree,
                            next: 0,
                            path: dir,
                            whole,
                            held,
                        })
                    }
                    Err(e) if is_damage(&e) => {
                        self.stats.damaged.push(at(&dir, e).to_string());
                        self.lost_dirs.insert(dir);
                    }
                    Err(e) => return Err(at(&dir, e)),
                }
            }
            let Some(w) = within.last_mut() else {
                return Ok(());
            };
            let Some(child) = w.tree.entries.get(w.next).cloned() else {
                within.pop();
                continue;
            };
            w.next += 1;
            let dest = w.path.join(OsStr::from_bytes(&child.name));
            if let Some(why) = past_path_limits(&dest, &child.name) {
                self.stats.warnings.push(why);
                continue;
            }
            if self.select.excluded(&dest) {
                continue;
            }
            let inside = w.whole || self.select.included(&dest);
            let there = if over || child.kind == Kind::Dir {
                w.held.at(&child.name, &dest)
            } else {
                None
            };
            if child.kind == Kind::Dir {
                let Some(found) = self.add_dir(&child, &dest, inside, there)? else {
                    continue;
                };
                if child.subtree.is_some() {
                    next_dir = Some((dest.clone(), inside, found));
                }
                self.dirs.push((child, dest));
            } else if inside {
                self.add_leaf(child, dest, there).await?;
                self.settle_ready().await?;
            }
        }
    }

    /// Tells the report what happens to `path`.
    fn tell(&self, action: Action, path: &Path) {
        if let Some(report) = &self.report {
            (report.0)(action, path);
        }
    }

    /// Whether anything at the target may be replaced.
    fn over_live_tree(&self) -> bool {
        self.overwrite != Overwrite::Refuse
    }

    /// Makes directory `dest` (a real one already there, `there`, is kept,
    /// anything else in the way removed): the directory found there
    /// (`None` when made), or nothing when the mode keeps what is in the
    /// way and the directory's contents are left out. One made only on the
    /// way to included entries (`inside` false) is not reported, and
    /// removed at the end if it stays empty.
    fn add_dir(
        &mut self,
        entry: &Entry,
        dest: &Path,
        inside: bool,
        there: Option<std::fs::Metadata>,
    ) -> Result<Option<Option<DirId>>> {
        let action = match &there {
            None => Action::New,
            Some(meta) if meta.is_dir() => Action::Unchanged,
            Some(_) if matches!(self.overwrite, Overwrite::Never | Overwrite::IfNewer) => {
                self.stats.kept += 1;
                self.tell(Action::Kept, dest);
                return Ok(None);
            }
            Some(_) => Action::Replaced,
        };
        if !self.dry_run && action != Action::Unchanged {
            clear_way(self.over_live_tree(), entry, dest)?;
            make_dir(dest)?;
        }
        let found = match (&there, action) {
            (Some(meta), Action::Unchanged) => Some(look::dir_id(meta)),
            _ => None,
        };
        if !inside {
            if action != Action::Unchanged {
                self.maybe_empty.insert(dest.to_path_buf());
            }
            return Ok(Some(found));
        }
        self.stats.dirs += 1;
        if action != Action::Unchanged {
            self.tell(action, dest);
        }
        Ok(Some(found))
    }

    /// With `--delete`: removes what directory `dir` holds that `tree`
    /// does not name (`held`: what it holds, if looked at).
    fn delete_extras(&mut self, tree: &Tree, dir: &Path, held: &Held) -> Result<()> {
        let extras = match held.names() {
            Some(names) => existing::extras_of(dir, tree, names),
            None => existing::extras(dir, tree)?,
        };
        for path in extras {
            if self.select.excluded(&path) {
                continue;
            }
            if !self.dry_run {
                existing::remove(&path)?;
            }
            self.stats.deleted += 1;
            self.tell(Action::Deleted, &path);
        }
        Ok(())
    }

    /// Restores a file, symlink or special file; `there` is what is at
    /// `dest` already (over a live tree).
    pub(super) async fn add_leaf(
        &mut self,
        entry: Entry,
        dest: PathBuf,
        there: Option<std::fs::Metadata>,
    ) -> Result<()> {
        let mut action = Action::New;
        if self.over_live_tree() {
            if let Some(meta) = there {
                if self.over_existing(&entry, &dest, &meta).await? {
                    return Ok(());
                }
                action = Action::Replaced;
            }
        }
        self.put_leaf(entry, dest, action).await
    }

    /// Makes a file, symlink or special file at `dest` where nothing is
    /// (`action` New) or in place of what is there (Replaced).
    async fn put_leaf(&mut self, entry: Entry, dest: PathBuf, action: Action) -> Result<()> {
        if self.dry_run {
            self.plan_new(&entry, action, &dest);
            return Ok(());
        }
        clear_way(self.over_live_tree(), &entry, &dest)?;
        self.tell(action, &dest);
        if let Some(link) = entry.link {
            match self.links.is_known(&link, &entry, &dest) {
                Linked::First => {}
                Linked::Later => return Ok(()), // another name of a file restored already
                Linked::Mismatch(why) => {
                    self.stats.damaged.push(why);
                    return Ok(());
                }
            }
        }
        match entry.kind {
            Kind::File => self.add_file(entry, dest).await,
            _ => self.restore_other(&entry, &dest),
        }
    }

    /// What a dry run says of an entry made where nothing was, or in place
    /// of what is in the way.
    fn plan_new(&mut self, entry: &Entry, action: Action, dest: &Path) {
        if entry.kind == Kind::File {
            self.stats.files += 1;
            self.stats.fetch_bytes += entry.chunks.iter().map(|c| c.length).sum::<u64>();
        } else {
            self.stats.others += 1;
        }
        self.tell(action, dest);
    }

    /// What to do with `meta`, already at `dest` where `entry` goes: true
    /// when that is done (kept, its metadata set again, or a file rebuilt
    /// from what it holds), false when it is to be replaced.
    async fn over_existing(
        &mut self,
        entry: &Entry,
        dest: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<bool> {
        let keep = match self.overwrite {
            Overwrite::Never => true,
            Overwrite::IfNewer => entry.mtime_ns <= existing::mtime_ns(meta),
            _ => false,
        };
        if keep {
            self.stats.kept += 1;
            self.tell(Action::Kept, dest);
            return Ok(true);
        }
        if entry.link.is_some() {
            // Hard-linked names are made anew, as one group.
            return Ok(false);
        }
        match entry.kind {
            Kind::File if meta.is_file() => self.file_over(entry, dest, meta).await,
            _ if existing::same_other(entry, meta, dest) => {
                self.keep(entry, dest, meta)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// An entry already as the snapshot holds it: its metadata set again
    /// where it differs.
    fn keep(&mut self, entry: &Entry, dest: &Path, meta: &std::fs::Metadata) -> Result<()> {
        self.stats.unchanged += 1;
        if !existing::metadata_differs(entry, meta, dest, self.is_root) {
            self.tell(Action::Unchanged, dest);
            return Ok(());
        }
        if !self.dry_run {
            apply_metadata(entry, dest, self.is_root, &mut self.stats)?;
        }
        self.stats.metadata += 1;
        self.tell(Action::Metadata, dest);
        Ok(())
    }

    /// A regular file already at `dest`: kept if its size and mtime match
    /// (`if-changed` without `verify`), else compared by content on the
    /// blocking pool while the walk goes on ([`COMPARES_AHEAD`] at once),
    /// and settled in walk order ([`Walk::settle_oldest`]).
    async fn file_over(
        &mut self,
        entry: &Entry,
        dest: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<bool> {
        let quick = self.overwrite == Overwrite::IfChanged && !self.verify;
        if quick && meta.len() == entry.size && existing::mtime_ns(meta) == entry.mtime_ns {
            self.keep(entry, dest, meta)?;
            return Ok(true);
        }
        let (path, e, key, chunker) = (
            dest.to_path_buf(),
            entry.clone(),
            self.key.clone(),
            self.chunker.clone(),
        );
        let rebuild = (!self.dry_run).then(|| (self.unfinished.clone(), self.sparse));
        let compared = tokio::task::spawn_blocking(move || {
            compare_and_begin(&path, &e, &key, &chunker, rebuild)
        });
        self.comparing.push_back(Comparing {
            entry: entry.clone(),
            dest: dest.to_path_buf(),
            meta: meta.clone(),
            compared,
        });
        while self.comparing.len() > COMPARES_AHEAD {
            self.settle_oldest().await?;
        }
        Ok(true)
    }

    /// Settles the compares at the front of the queue that are done.
    async fn settle_ready(&mut self) -> Result<()> {
        while self
            .comparing
            .front()
            .is_some_and(|c| c.compared.is_finished())
        {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest compare and acts on it: the file kept (its
    /// metadata set again where it differs), rebuilt from what it holds,
    /// or, if it cannot be read, replaced.
    async fn settle_oldest(&mut self) -> Result<()> {
        let Some(c) = self.comparing.pop_front() else {
            return Ok(());
        };
        let compared = c
            .compared
            .await
            .map_err(|e| Error::Internal(format!("restore: comparing a file failed: {e}")))?;
        match compared {
            Ok((x, _)) if x.same => self.keep(&c.entry, &c.dest, &c.meta),
            Ok((x, None)) => {
                self.plan_update(&c.entry, &c.dest, &x.reuse);
                Ok(())
            }
            Ok((_, Some(begun))) => self.update_file(c.entry, c.dest, begun?).await,
            Err(e) => {
                tracing::debug!("{}: cannot be compared ({e}); replaced", c.dest.display());
                self.put_leaf(c.entry, c.dest, Action::Replaced).await
            }
        }
    }

    /// What a dry run says of a file it would rebuild from the chunks
    /// `reuse` found in it and those it lacks.
    fn plan_update(&mut self, entry: &Entry, dest: &Path, reuse: &[Option<u64>]) {
        let (mut fetched, mut reused) = (0, 0);
        for (chunk, found) in entry.chunks.iter().zip(reuse) {
            match found {
                Some(_) => reused += chunk.raw_length,
                None => fetched += chunk.length,
            }
        }
        self.stats.updated += 1;
        self.stats.files += 1;
        self.stats.fetch_bytes += fetched;
        self.stats.reused_bytes += reused;
        self.tell(Action::Updated { fetched, reused }, dest);
    }

    /// Finishes rebuilding the file at `dest` beside it, `begun` with the
    /// chunks found in it: the others queued as reads; renamed over it
    /// once complete ([`finish`]).
    async fn update_file(&mut self, entry: Entry, dest: PathBuf, begun: Begun) -> Result<()> {
        self.stats.updated += 1;
        if let Some(p) = &self.progress {
            p.add_total(entry.size);
        }
        let ahead = self.place_ahead().await?;
        let Begun { temp, new, copied } = begun;
        let fetched: u64 = copied.missing.iter().map(|&i| entry.chunks[i].length).sum();
        self.stats.reused_bytes += copied.bytes;
        self.stats.fetch_bytes += fetched;
        if let Some(p) = &self.progress {
            p.add_bytes(copied.bytes);
        }
        self.tell(
            Action::Updated {
                fetched,
                reused: copied.bytes,
            },
            &dest,
        );
        let missing = copied.missing;
        let job = FileJob::new(entry, dest, self.sparse, self.unfinished.clone(), ahead)
            .replacing(temp, new, missing.len())
            .verified_with(self.verify.then(|| self.key.clone()));
        let job = Arc::new(job);
        if missing.is_empty() {
            // Complete already: closed, checked and renamed on the blocking
            // pool, as the writer does with the files it completes.
            let (progress, is_root) = (self.progress.clone(), self.is_root);
            let done = tokio::task::spawn_blocking(move || {
                let mut stats = RestoreStats::default();
                finish(&job, is_root, progress.as_deref(), &mut stats).map(|()| stats)
            })
            .await
            .map_err(|e| Error::Internal(format!("restore: finishing a file failed: {e}")))??;
            self.stats.absorb(done);
            return Ok(());
        }
        for index in missing {
            let loc = job.entry.chunks[index];
            let part = Part {
                file: job.clone(),
                chunk: Some(index),
            };
            self.queue_part(&loc, part).await?;
        }
        Ok(())
    }

    /// Queues a file's chunks as reads, each joining an open read it fits
    /// ([`Walk::queue_part`]); an empty file rides along with any read.
    async fn add_file(&mut self, entry: Entry, dest: PathBuf) -> Result<()> {
        if let Some(p) = &self.progress {
            p.add_total(entry.size);
        }
        self.stats.fetch_bytes += entry.chunks.iter().map(|c| c.length).sum::<u64>();
        let ahead = self.place_ahead().await?;
        let file = FileJob::new(entry, dest, self.sparse, self.unfinished.clone(), ahead)
            .verified_with(self.verify.then(|| self.key.clone()));
        let file = Arc::new(file);
        match file.entry.chunks.as_slice() {
            [] => {
                if self.open.is_empty() {
                    self.open.push(FileFetch::new());
                }
                if let Some(fetch) = self.open.last_mut() {
                    fetch.parts.push(Part { file, chunk: None });
                }
            }
            chunks => {
                for (index, loc) in chunks.iter().enumerate() {
                    let part = Part {
                        file: file.clone(),
                        chunk: Some(index),
                    };
                    self.queue_part(loc, part).await?;
                }
            }
        }
        Ok(())
    }

    /// A place for one more file among the [`FILES_AHEAD`] queued. When
    /// none is free, the open reads are sent first: the files waiting in
    /// them hold places, and only the writer finishing files frees any.
    async fn place_ahead(&mut self) -> Result<OwnedSemaphorePermit> {
        if let Ok(permit) = self.ahead.clone().try_acquire_owned() {
            return Ok(permit);
        }
        self.send_open().await?;
        self.ahead
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("restore: the queue of files closed".into()))
    }

    /// Adds a chunk to the open read it fits (same pack, inside it or
    /// right after it), else to a new one, sending the least recently
    /// extended open read when there are [`OPEN_FETCHES`] (a pack's long
    /// run stays open while stray chunks come and go).
    async fn queue_part(&mut self, loc: &Location, part: Part) -> Result<()> {
        let max_gap = self.max_gap;
        let mut fetch = match self.open.iter().position(|f| f.can_take(loc, max_gap)) {
            Some(i) => self.open.remove(i),
            None => {
                if self.open.len() >= OPEN_FETCHES {
                    self.send_oldest().await?;
                }
                FileFetch::new()
            }
        };
        fetch.take(loc, part);
        self.open.push(fetch);
        Ok(())
    }

    async fn send_oldest(&mut self) -> Result<()> {
        if self.open.is_empty() {
            return Ok(());
        }
        let oldest = self.open.remove(0);
        self.send(oldest).await
    }

    /// Settles every compare still under way, then sends every open read
    /// to the writer: the walk is over.
    pub(super) async fn flush(&mut self) -> Result<()> {
        while !self.comparing.is_empty() {
            self.settle_oldest().await?;
        }
        self.send_open().await
    }

    /// Sends every open read to the writer.
    async fn send_open(&mut self) -> Result<()> {
        for fetch in std::mem::take(&mut self.open) {
            self.send(fetch).await?;
        }
        Ok(())
    }

    async fn send(&self, fetch: FileFetch) -> Result<()> {
        if fetch.parts.is_empty() {
            return Ok(());
        }
        // The writer hung up: it failed, and its error is the one reported.
        self.tx
            .send(fetch)
            .await
            .map_err(|_| Error::Internal("restore: the file writer stopped".into()))
    }

    /// A symlink or special file, with its metadata.
    fn restore_other(&mut self, entry: &Entry, dest: &Path) -> Result<()> {
        if entry.kind == Kind::Symlink {
            make_symlink(entry, dest)?;
        } else if let Err(e) = make_node(entry, dest) {
            self.stats
                .warnings
                .push(format!("{}: not restored: {e}", dest.display()));
            return Ok(());
        }
        self.stats.others += 1;
        apply_metadata(entry, dest, self.is_root, &mut self.stats)
    }
}

/// The trees of a restore, fetched ahead of the walk in the order it needs
/// them (depth first: a tree's subdirectories go to the front of the
/// queue as it arrives), several at once, and held until the walk asks. A
/// tree the repository read lately (a subtree many directories share)
/// comes from its memo without a read; none deeper than [`MAX_DEPTH`] is
/// queued.
struct TreesAhead {
    repo: Arc<Repository>,
    waiting: VecDeque<(Location, PathBuf)>,
    fetching: FuturesOrdered<TreeBatch>,
    /// Each with the memory it takes ([`Tree::memory`], 0 for an error).
    fetched: HashMap<PathBuf, (Result<Arc<Tree>>, u64)>,
    /// The memory the trees ahead take, within [`TREES_AHEAD_BYTES`].
    ahead: TreesMemory,
    /// Components of the restore's top directory, to count depths from.
    top: usize,
    /// Excluded directories' trees are not read.
    select: Arc<Select>,
    /// Over a live tree: directories being looked at ahead of the walk
    /// ([`STATS_AHEAD`] at once); `None` into an empty target.
    stat_ahead: Option<Arc<Semaphore>>,
    /// The looks taken or under way, by directory.
    looks: HashMap<PathBuf, tokio::task::JoinHandle<Option<Looked>>>,
}

/// What the trees ahead of a restore's walk take: those fetched, by
/// [`Tree::memory`], and those in flight, estimated from their stored
/// length at the growth seen so far.
#[derive(Default)]
struct TreesMemory {
    /// Memory of the trees fetched and not yet walked into.
    fetched: u64,
    /// Stored lengths of the reads in flight, in the order they land.
    in_flight: VecDeque<u64>,
    /// Stored and in-memory bytes of every tree read so far.
    stored_seen: u64,
    memory_seen: u64,
}

impl TreesMemory {
    /// Whether another read of trees fits in [`TREES_AHEAD_BYTES`].
    fn room(&self) -> bool {
        let growth = match self.stored_seen {
            0 => TREE_GROWTH,
            stored => self.memory_seen.div_ceil(stored).max(1),
        };
        let flying: u64 = self.in_flight.iter().sum();
        self.fetched + flying.saturating_mul(growth) < TREES_AHEAD_BYTES
    }

    /// A read of `stored` bytes of trees went out.
    fn reading(&mut self, stored: u64) {
        self.in_flight.push_back(stored);
    }

    /// The oldest read landed with trees taking `memory`.
    fn landed(&mut self, memory: u64) {
        let stored = self.in_flight.pop_front().unwrap_or(0);
        self.fetched += memory;
        if stored > 0 {
            self.stored_seen += stored;
            self.memory_seen += memory;
        }
    }

    /// The walk took a tree taking `memory` from those fetched.
    fn taken(&mut self, memory: u64) {
        self.fetched = self.fetched.saturating_sub(memory);
    }
}

/// A directory being restored: its tree, the index of its next entry,
/// whether it is included whole, and what the target holds in it.
struct Within {
    tree: Arc<Tree>,
    next: usize,
    path: PathBuf,
    whole: bool,
    held: Held,
}

/// Directories that restore over a live tree looks at ahead of the walk,
/// on the blocking pool ([`look`]): the walk is one task, and with a cold
/// cache each lookup waits for the disk (over /usr/share, 48k entries:
/// 0.88 s cold against 0.42 s warm when the walk looked itself).
const STATS_AHEAD: usize = 32;

type TreeBatch = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<(PathBuf, Result<Arc<Tree>>)>>> + Send>,
>;

impl TreesAhead {
    fn new(
        repo: &Arc<Repository>,
        root: Location,
        path: &Path,
        select: Arc<Select>,
        over_live_tree: bool,
    ) -> Self {
        Self {
            repo: repo.clone(),
            waiting: VecDeque::from([(root, path.to_path_buf())]),
            fetching: FuturesOrdered::new(),
            fetched: HashMap::new(),
            ahead: TreesMemory::default(),
            top: path.components().count(),
            select,
            stat_ahead: over_live_tree.then(|| Arc::new(Semaphore::new(STATS_AHEAD))),
            looks: HashMap::new(),
        }
    }

    /// Starts a look at directory `path` on the blocking pool (over a live
    /// tree).
    fn look_ahead(&mut self, path: &Path) {
        let Some(permits) = self.stat_ahead.clone() else {
            return;
        };
        let dir = path.to_path_buf();
        let handle = tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            tokio::task::spawn_blocking(move || look::look(&dir))
                .await
                .ok()?
        });
        self.looks.insert(path.to_path_buf(), handle);
    }

    /// The look at directory `dir`, once taken (`None` if none was).
    async fn look(&mut self, dir: &Path) -> Option<Looked> {
        self.looks.remove(dir)?.await.ok()?
    }

    /// The tree of directory `dir` (queued when its parent's arrived),
    /// waiting for it if needed. The outer error stops the restore; the
    /// inner one is that tree's (damaged or missing).
    async fn get(&mut self, dir: &Path) -> Result<Result<Arc<Tree>>> {
        loop {
            if let Some((tree, memory)) = self.fetched.remove(dir) {
                self.ahead.taken(memory);
                return Ok(tree);
            }
            // One read always goes out while none is: the tree the walk
            // needs next is the first waiting, in flight, or fetched.
            while self.fetching.len() < TREES_IN_FLIGHT
                && (self.fetching.is_empty() || self.ahead.room())
            {
                if let Some(known) = self.remembered() {
                    self.ahead.reading(0);
                    self.fetching
                        .push_back(Box::pin(std::future::ready(Ok(vec![known]))));
                    continue;
                }
                let Some((span, batch)) = next_tree_batch(&mut self.waiting) else {
                    break;
                };
                self.ahead.reading(span.len());
                // Read and decoded here, as the walk polls it: decoding on
                // the workers (a third of the walk's thread over a live
                // tree) gave their malloc arenas to tree memory, and a
                // restore of 200,000 files peaked past its bound (240 MiB
                // against 230, tests/memory.rs).
                self.fetching
                    .push_back(Box::pin(read_trees(self.repo.clone(), span, batch)));
            }
            let Some(trees) = self.fetching.next().await else {
                return Err(Error::Internal(format!(
                    "restore: the tree of {} was never queued",
                    dir.display()
                )));
            };
            let mut landed = 0;
            for (path, tree) in trees? {
                let memory = tree.as_ref().map_or(0, |t| t.memory());
                if let Ok(tree) = &tree {
                    self.queue_subtrees(tree, &path);
                    self.look_ahead(&path);
                }
                landed += memory;
                self.fetched.insert(path, (tree, memory));
            }
            self.ahead.landed(landed);
        }
    }

    /// The next waiting tree, taken from the queue, if the repository's
    /// memo holds it.
    fn remembered(&mut self) -> Option<(PathBuf, Result<Arc<Tree>>)> {
        let (loc, _) = self.waiting.front()?;
        let tree = self.repo.remembered_tree(loc)?;
        let (_, path) = self.waiting.pop_front()?;
        Some((path, Ok(tree)))
    }

    /// Queues the subdirectories of `tree` (directory `path`) first, in
    /// name order, but none the walk leaves out without asking for its
    /// tree: nested past [`MAX_DEPTH`], past Linux's name and path limits
    /// ([`past_path_limits`]), or excluded.
    fn queue_subtrees(&mut self, tree: &Tree, path: &Path) {
        let depth = path.components().count().saturating_sub(self.top);
        if depth + 1 >= MAX_DEPTH {
            return;
        }
        let subdirs = tree.entries.iter().filter(|e| e.kind == Kind::Dir);
        let subtrees: Vec<_> = subdirs
            .filter_map(|e| {
                let dest = path.join(OsStr::from_bytes(&e.name));
                if past_path_limits(&dest, &e.name).is_some() || self.select.excluded(&dest) {
                    return None;
                }
                Some((e.subtree?, dest))
            })
            .collect();
        for item in subtrees.into_iter().rev() {
            self.waiting.push_front(item);
        }
    }
}

/// Reads a batch of trees with one ranged read: each directory's path with
/// its tree or why it could not be read. Fails only when the read fails
/// for another reason than damage.
async fn read_trees(
    repo: Arc<Repository>,
    span: Span,
    batch: Vec<(Location, PathBuf)>,
) -> Result<Vec<(PathBuf, Result<Arc<Tree>>)>> {
    if repo.metadata_cache().is_some() {
        // Whole tree packs come through the cache: read each from there.
        let mut each = Vec::with_capacity(batch.len());
        for (loc, path) in batch {
            match repo.shared_tree(&loc).await {
                Err(e) if !is_damage(&e) => return Err(at(&path, e)),
                tree => each.push((path, tree)),
            }
        }
        return Ok(each);
    }
    let data = match span.read(&repo, PackKind::Tree).await {
        Ok(data) => data,
        Err(e) if is_damage(&e) => {
            // Each tree alone: a cut pack still holds those before the cut.
            let mut each = Vec::with_capacity(batch.len());
            for (loc, path) in batch {
                each.push((path, repo.shared_tree(&loc).await));
            }
            return Ok(each);
        }
        Err(e) => {
            return Err(match batch.first() {
                Some((_, path)) => at(path, e),
                None => e,
            })
        }
    };
    Ok(batch
        .into_iter()
        .map(|(loc, path)| {
            let tree = span
                .blob(&data, &loc)
                .and_then(|stored| repo.decode_tree(&loc, stored));
            (path, tree)
        })
        .collect())
}

/// Why `dest` (named `name`) cannot be made, if it is past Linux's limits
/// (a name of 255 bytes, a path of 4095): that entry, and what is below it,
/// is left out with a warning and the restore goes on.
fn past_path_limits(dest: &Path, name: &[u8]) -> Option<String> {
    const NAME_MAX: usize = 255;
    const PATH_MAX: usize = libc::PATH_MAX as usize - 1;
    let length = dest.as_os_str().len();
    let why = if name.len() > NAME_MAX {
        format!("its name is {} bytes, past Linux's {NAME_MAX}", name.len())
    } else if length > PATH_MAX {
        format!(
            "its path is {length} bytes, past Linux's {PATH_MAX} \
             (restore it into a shorter target, or a directory below it by name)"
        )
    } else {
        return None;
    };
    let shown = dest.display().to_string();
    let shown = match shown.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &shown[..cut]),
        None => shown,
    };
    Some(format!("{shown}: not restored: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_of(files: usize) -> Arc<Tree> {
        let entries = (0..files)
            .map(|i| Entry::new(format!("f{i:06}").into_bytes(), Kind::File, 0o644))
            .collect();
        Arc::new(Tree { entries })
    }

    #[test]
    fn trees_ahead_stop_at_their_memory_counting_those_in_flight_at_the_growth_seen() {
        let mut ahead = TreesMemory::default();
        assert!(ahead.room());
        // Before any tree landed, a stored byte counts TREE_GROWTH.
        ahead.reading(TREES_AHEAD_BYTES / TREE_GROWTH);
        assert!(!ahead.room(), "a read that may fill the bound");
        let big = tree_of(20_000);
        let memory = big.memory();
        assert!(memory > 20_000 * std::mem::size_of::<Entry>() as u64);
        ahead.landed(memory);
        // The tree grew memory / stored per stored byte: reads in flight
        // now count at that.
        let growth = memory.div_ceil(TREES_AHEAD_BYTES / TREE_GROWTH).max(1);
        assert_eq!(ahead.fetched, memory);
        let fits = (TREES_AHEAD_BYTES - memory) / growth;
        ahead.reading(fits.saturating_sub(1));
        assert!(ahead.room() == (memory < TREES_AHEAD_BYTES));
        ahead.taken(memory);
        ahead.landed(0);
        assert_eq!(ahead.fetched, 0);
        assert!(ahead.in_flight.is_empty());
        assert!(ahead.room());
    }

    #[test]
    fn entries_past_linux_name_and_path_limits_are_named_not_attempted() {
        let target = Path::new("/restore/target");
        assert_eq!(past_path_limits(&target.join("f"), b"f"), None);
        let name = vec![b'n'; 256];
        let dest = target.join(OsStr::from_bytes(&name));
        let why = past_path_limits(&dest, &name).unwrap();
        assert!(
            why.contains("its name is 256 bytes, past Linux's 255"),
            "{why}"
        );
        assert!(why.starts_with("/restore/target/nnn") && why.contains("...: not restored"));
        let deep = target.join("d/".repeat(2100));
        let why = past_path_limits(&deep, b"d").unwrap();
        assert!(
            why.contains("its path is 4216 bytes, past Linux's 4095"),
            "{why}"
        );
        let at_limit = target.join("d".repeat(4095 - "/restore/target/".len()));
        assert_eq!(past_path_limits(&at_limit, b"d"), None);
    }
}
