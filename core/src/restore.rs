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

use crate::error::{Error, Result};
use crate::id::PackId;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::sync::lock;
use crate::tree::{Entry, Kind, Location, Tree};
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::collections::HashSet;
use std::collections::VecDeque;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Ranged reads in flight while writing files.
const FETCHES_IN_FLIGHT: usize = 8;
/// Blobs that lie (nearly) back to back in one pack are read with one
/// request, up to this many bytes...
const MAX_FETCH: u64 = 8 << 20;
/// ...skipping at most this many bytes between two of them (reading a few
/// unneeded kilobytes is cheaper than another round trip).
const MAX_GAP: u64 = 64 << 10;
/// Reads assembled at once. A writer fills one pack per core, so the
/// blobs of consecutive small files alternate between packs; one open read
/// per pack keeps them mergeable.
const OPEN_FETCHES: usize = 4;
/// Trees fetched at once while walking.
const TREES_IN_FLIGHT: usize = 16;
/// Trees read with one request at most (trees are small).
const MAX_TREE_FETCH: u64 = 1 << 20;
/// How far down the queue of trees to look for ones to read together.
const TREE_BATCH_SCAN: usize = 256;
/// Reads queued between the walk and the writer.
const QUEUED_FETCHES: usize = 256;

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The directory to restore into (created if missing).
    pub target: PathBuf,
    /// Restore into a non-empty target, replacing what is in the way.
    pub overwrite: bool,
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
}

/// Whether `e` is damage to (or absence of) repository objects, which
/// costs only the entries that need them, rather than a failure to reach
/// the repository or to write the target, which stops the restore.
fn is_damage(e: &Error) -> bool {
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
    let is_root = unsafe { libc::geteuid() } == 0;
    let (tx, rx) = mpsc::channel(QUEUED_FETCHES);
    let unfinished = Arc::new(Unfinished::default());
    let mut walk = Walk {
        repo,
        progress: opts.progress.clone(),
        overwrite: opts.overwrite,
        is_root,
        stats: RestoreStats::default(),
        tx,
        open: Vec::new(),
        dirs: Vec::new(),
        lost_dirs: HashSet::new(),
        unfinished: unfinished.clone(),
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
            ..
        } = walk;
        Ok::<_, Error>((stats, dirs, lost_dirs))
    };
    let ((mut stats, dirs, lost_dirs), ()) = match tokio::try_join!(walked, writer.run(rx)) {
        Ok(done) => done,
        Err(e) => {
            let removed = unfinished.remove_all();
            if removed > 0 {
                tracing::warn!("removed {removed} partly written files");
            }
            return Err(e);
        }
    };
    for (entry, dest) in dirs.iter().rev() {
        if lost_dirs.contains(dest) {
            // Made empty, its tree unreadable: not left looking restored.
            let _ = std::fs::remove_dir(dest);
            continue;
        }
        apply_metadata(entry, dest, is_root, &mut stats.warnings)?;
    }
    stats.files = writer.stats.files;
    stats.bytes = writer.stats.bytes;
    stats.warnings.append(&mut writer.stats.warnings);
    stats.damaged.append(&mut writer.stats.damaged);
    Ok(stats)
}

fn prepare_target(target: &Path, overwrite: bool) -> Result<()> {
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() && !overwrite {
                return Err(Error::Path(format!(
                    "target {} is not empty; choose an empty directory or pass --overwrite",
                    target.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(target)
            .map_err(|e| Error::io(target, "creating the restore target", e)),
        Err(e) => Err(Error::io(target, "opening the restore target", e)),
    }
}

/// A regular file to write. Its chunks may be written by several decode
/// tasks at once, each at its own offset; the one that writes the last
/// closes the file and applies its metadata.
struct FileJob {
    entry: Entry,
    dest: PathBuf,
    /// Where each chunk goes in the file.
    offsets: Vec<u64>,
    /// Created by the first part written.
    out: Mutex<Option<Arc<std::fs::File>>>,
    /// Parts not written yet (an empty file has one part, no chunk).
    parts_left: AtomicUsize,
    /// A part's data was damaged: the file is removed once all parts are
    /// through.
    failed: AtomicBool,
    /// Where the file is listed while it is being written.
    unfinished: Arc<Unfinished>,
}

impl FileJob {
    fn new(entry: Entry, dest: PathBuf, unfinished: Arc<Unfinished>) -> Self {
        // Each chunk starts where the one before it ends.
        let offsets = std::iter::once(0)
            .chain(entry.chunk_ends())
            .take(entry.chunks.len())
            .collect();
        let parts = entry.chunks.len().max(1);
        Self {
            entry,
            dest,
            offsets,
            out: Mutex::new(None),
            parts_left: AtomicUsize::new(parts),
            failed: AtomicBool::new(false),
            unfinished,
        }
    }

    /// The file, created (new) on first use.
    fn file(&self) -> Result<Arc<std::fs::File>> {
        let mut out = lock(&self.out);
        if let Some(file) = &*out {
            return Ok(file.clone());
        }
        let file = Arc::new(self.unfinished.create(&self.dest)?);
        *out = Some(file.clone());
        Ok(file)
    }
}

/// The files created and not finished yet. A restore that stops on an
/// error (the target is full, the repository unreachable) removes them:
/// a file whose later part was written first has its full size, and must
/// not be left looking restored.
#[derive(Default)]
struct Unfinished {
    inner: Mutex<UnfinishedFiles>,
}

#[derive(Default)]
struct UnfinishedFiles {
    /// The restore stopped: no file may be created any more (a decode
    /// task still running would otherwise make one after the cleanup).
    stopped: bool,
    paths: HashSet<PathBuf>,
}

impl Unfinished {
    /// Creates `dest` (new) and lists it.
    fn create(&self, dest: &Path) -> Result<std::fs::File> {
        let mut files = lock(&self.inner);
        if files.stopped {
            return Err(Error::Path(format!(
                "{}: not created, the restore stopped",
                dest.display()
            )));
        }
        let file = create(dest)?;
        files.paths.insert(dest.to_path_buf());
        Ok(file)
    }

    /// `dest` is complete (or removed).
    fn finished(&self, dest: &Path) {
        lock(&self.inner).paths.remove(dest);
    }

    /// Stops all creating and removes every file listed; how many.
    fn remove_all(&self) -> usize {
        let mut files = lock(&self.inner);
        files.stopped = true;
        let paths = std::mem::take(&mut files.paths);
        for path in &paths {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(
                    "{}: could not remove the unfinished file: {e}",
                    path.display()
                );
            }
        }
        paths.len()
    }
}

/// Bytes `start..end` of one pack: blobs lying back to back, read with one
/// ranged read. Used for file chunks and for trees alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    pack: PackId,
    start: u64,
    end: u64,
}

impl Span {
    /// The bytes of one blob.
    fn of(loc: &Location) -> Self {
        Self {
            pack: loc.pack,
            start: loc.offset,
            end: loc.offset.saturating_add(loc.length),
        }
    }

    /// Whether `loc` can join: same pack, after the end, a gap of at most
    /// [`MAX_GAP`], and the span stays within `max` bytes.
    fn can_take(&self, loc: &Location, max: u64) -> bool {
        self.pack == loc.pack
            && loc.offset >= self.end
            && loc.offset - self.end <= MAX_GAP
            && loc.offset.saturating_add(loc.length) - self.start <= max
    }

    /// Extends the span to the end of `loc` (which [`Span::can_take`]).
    fn take(&mut self, loc: &Location) {
        self.end = loc.offset.saturating_add(loc.length);
    }

    async fn read(&self, repo: &Repository) -> Result<Vec<u8>> {
        repo.fetch_pack_range(&self.pack, self.start, self.end - self.start)
            .await
    }

    /// The stored bytes of `loc` in `data`, which [`Span::read`] returned.
    fn blob<'d>(&self, data: &'d [u8], loc: &Location) -> Result<&'d [u8]> {
        let from = (loc.offset - self.start) as usize;
        data.get(from..from.saturating_add(loc.length as usize))
            .ok_or_else(|| Error::Path("restore: a read came back short".into()))
    }
}

/// One ranged read of a pack and the file parts it holds.
struct Fetch {
    /// `None` while only empty files are queued.
    span: Option<Span>,
    parts: Vec<Part>,
}

/// A file's chunk (`Some(index)` into its entry's chunks) or, for an empty
/// file, just the file.
struct Part {
    file: Arc<FileJob>,
    chunk: Option<usize>,
}

impl Fetch {
    fn new() -> Self {
        Self {
            span: None,
            parts: Vec::new(),
        }
    }

    /// Whether `loc` can join this read (see [`Span::can_take`]).
    fn can_take(&self, loc: &Location) -> bool {
        self.span.is_none_or(|s| s.can_take(loc, MAX_FETCH))
    }

    fn take(&mut self, file: &Arc<FileJob>, index: usize, loc: &Location) {
        match &mut self.span {
            Some(span) => span.take(loc),
            None => self.span = Some(Span::of(loc)),
        }
        self.parts.push(Part {
            file: file.clone(),
            chunk: Some(index),
        });
    }
}

/// The walking half: trees, directories, links and special files; files
/// become queued reads.
struct Walk<'a> {
    repo: &'a Repository,
    progress: Option<Arc<Progress>>,
    overwrite: bool,
    is_root: bool,
    stats: RestoreStats,
    tx: mpsc::Sender<Fetch>,
    /// Reads being assembled, oldest first. A file in several blobs gets
    /// reads of its own after these (parts are written at their offsets,
    /// so this is for merging reads, not for order).
    open: Vec<Fetch>,
    /// Directories made, parents before children; their metadata is applied
    /// at the end, in reverse.
    dirs: Vec<(Entry, PathBuf)>,
    /// Directories whose tree could not be read (damaged or missing).
    lost_dirs: HashSet<PathBuf>,
    /// The files being written.
    unfinished: Arc<Unfinished>,
}

impl Walk<'_> {
    /// Restores the contents of directory `dir` into `path`, breadth first,
    /// fetching up to [`TREES_IN_FLIGHT`] trees at once.
    async fn walk(&mut self, dir: &Entry, path: &Path) -> Result<()> {
        let repo = self.repo;
        let mut waiting: VecDeque<(Location, PathBuf)> = VecDeque::new();
        if let Some(loc) = dir.subtree {
            waiting.push_back((loc, path.to_path_buf()));
        }
        let mut fetching = FuturesOrdered::new();
        loop {
            while fetching.len() < TREES_IN_FLIGHT {
                let Some((span, batch)) = next_tree_batch(&mut waiting) else {
                    break;
                };
                fetching.push_back(read_trees(repo, span, batch));
            }
            let Some(trees) = fetching.next().await else {
                return Ok(());
            };
            for (path, tree) in trees? {
                match tree {
                    Ok(tree) => self.add_tree(tree, &path, &mut waiting).await?,
                    Err(e) if is_damage(&e) => {
                        self.stats.damaged.push(at(&path, e).to_string());
                        self.lost_dirs.insert(path);
                    }
                    Err(e) => return Err(at(&path, e)),
                }
            }
        }
    }

    /// Makes the entries of one directory's tree below `path`; queues its
    /// subdirectories' trees.
    async fn add_tree(
        &mut self,
        tree: Tree,
        path: &Path,
        waiting: &mut VecDeque<(Location, PathBuf)>,
    ) -> Result<()> {
        for child in tree.entries {
            let dest = path.join(OsStr::from_bytes(&child.name));
            if child.kind == Kind::Dir {
                clear_way(self.overwrite, &child, &dest)?;
                self.make_dir(&dest)?;
                if let Some(loc) = child.subtree {
                    waiting.push_back((loc, dest.clone()));
                }
                self.dirs.push((child, dest));
            } else {
                self.add_leaf(child, dest).await?;
            }
        }
        Ok(())
    }

    /// Restores a file, symlink or special file.
    async fn add_leaf(&mut self, entry: Entry, dest: PathBuf) -> Result<()> {
        clear_way(self.overwrite, &entry, &dest)?;
        match entry.kind {
            Kind::File => self.add_file(entry, dest).await,
            _ => self.restore_other(&entry, &dest),
        }
    }

    /// Queues a file's chunks as reads: a file in one blob (or none) joins
    /// any open read it fits; a file in several blobs goes after all open
    /// reads, in reads of its own (merged where its blobs are adjacent).
    async fn add_file(&mut self, entry: Entry, dest: PathBuf) -> Result<()> {
        if let Some(p) = &self.progress {
            p.add_total(entry.size);
        }
        let file = Arc::new(FileJob::new(entry, dest, self.unfinished.clone()));
        match file.entry.chunks.as_slice() {
            [] => {
                if self.open.is_empty() {
                    self.open.push(Fetch::new());
                }
                if let Some(fetch) = self.open.last_mut() {
                    fetch.parts.push(Part { file, chunk: None });
                }
            }
            [loc] => {
                if let Some(fetch) = self.open.iter_mut().find(|f| f.can_take(loc)) {
                    fetch.take(&file, 0, loc);
                } else {
                    if self.open.len() >= OPEN_FETCHES {
                        self.send_oldest().await?;
                    }
                    let mut fetch = Fetch::new();
                    fetch.take(&file, 0, loc);
                    self.open.push(fetch);
                }
            }
            chunks => {
                self.flush().await?;
                let mut fetch = Fetch::new();
                for (index, loc) in chunks.iter().enumerate() {
                    if !fetch.can_take(loc) {
                        self.send(std::mem::replace(&mut fetch, Fetch::new()))
                            .await?;
                    }
                    fetch.take(&file, index, loc);
                }
                self.send(fetch).await?;
            }
        }
        Ok(())
    }

    async fn send_oldest(&mut self) -> Result<()> {
        if self.open.is_empty() {
            return Ok(());
        }
        let oldest = self.open.remove(0);
        self.send(oldest).await
    }

    /// Sends every open read to the writer.
    async fn flush(&mut self) -> Result<()> {
        for fetch in std::mem::take(&mut self.open) {
            self.send(fetch).await?;
        }
        Ok(())
    }

    async fn send(&self, fetch: Fetch) -> Result<()> {
        if fetch.parts.is_empty() {
            return Ok(());
        }
        // The writer hung up: it failed, and its error is the one reported.
        self.tx
            .send(fetch)
            .await
            .map_err(|_| Error::Path("restore: the file writer stopped".into()))
    }

    fn make_dir(&mut self, dest: &Path) -> Result<()> {
        if !dest.is_dir() {
            std::fs::create_dir(dest).map_err(|e| Error::io(dest, "creating a directory", e))?;
        }
        self.stats.dirs += 1;
        Ok(())
    }

    /// A symlink or special file, with its metadata.
    fn restore_other(&mut self, entry: &Entry, dest: &Path) -> Result<()> {
        if entry.kind == Kind::Symlink {
            let target = entry.target.as_deref().unwrap_or_default();
            std::os::unix::fs::symlink(OsStr::from_bytes(target), dest)
                .map_err(|e| Error::io(dest, "creating a symlink", e))?;
        } else if let Err(e) = make_node(entry, dest) {
            self.stats
                .warnings
                .push(format!("{}: not restored: {e}", dest.display()));
            return Ok(());
        }
        self.stats.others += 1;
        apply_metadata(entry, dest, self.is_root, &mut self.stats.warnings)
    }
}

/// Takes the next tree to read from `waiting`, with the trees queued after
/// it that lie just behind it in the same pack (sibling directories without
/// subdirectories were stored one after the other), for one ranged read.
fn next_tree_batch(
    waiting: &mut VecDeque<(Location, PathBuf)>,
) -> Option<(Span, Vec<(Location, PathBuf)>)> {
    let first = waiting.pop_front()?;
    let mut span = Span::of(&first.0);
    let mut batch = vec![first];
    let mut i = 0;
    while i < waiting.len().min(TREE_BATCH_SCAN) {
        if !span.can_take(&waiting[i].0, MAX_TREE_FETCH) {
            i += 1;
        } else if let Some(item) = waiting.remove(i) {
            span.take(&item.0);
            batch.push(item);
        }
    }
    Some((span, batch))
}

/// Reads a batch of trees with one ranged read: each directory's path with
/// its tree or why it could not be read. Fails only when the read fails
/// for another reason than damage.
async fn read_trees(
    repo: &Repository,
    span: Span,
    batch: Vec<(Location, PathBuf)>,
) -> Result<Vec<(PathBuf, Result<Tree>)>> {
    let data = match span.read(repo).await {
        Ok(data) => data,
        Err(e) if is_damage(&e) => {
            // Each tree alone: a cut pack still holds those before the cut.
            let mut each = Vec::with_capacity(batch.len());
            for (loc, path) in batch {
                each.push((path, repo.read_tree(&loc).await));
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

/// With --overwrite, removes whatever stands where `entry` goes (but keeps
/// an existing real directory for a directory entry).
fn clear_way(overwrite: bool, entry: &Entry, dest: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
        return Ok(());
    };
    if !overwrite {
        return Err(Error::Path(format!(
            "{} already exists; pass --overwrite to replace it",
            dest.display()
        )));
    }
    if meta.is_dir() {
        if entry.kind == Kind::Dir {
            return Ok(());
        }
        std::fs::remove_dir_all(dest)
    } else {
        std::fs::remove_file(dest)
    }
    .map_err(|e| Error::io(dest, "removing what is in the way (--overwrite)", e))
}

/// The writing half: runs the queued reads, [`FETCHES_IN_FLIGHT`] at once;
/// each is decoded and its files written on the blocking pool (all cores),
/// every chunk at its offset, so files are written in parallel.
struct FileWriter {
    progress: Option<Arc<Progress>>,
    repo: Arc<Repository>,
    is_root: bool,
    stats: RestoreStats,
}

impl FileWriter {
    async fn run(&mut self, rx: mpsc::Receiver<Fetch>) -> Result<()> {
        let (repo, progress, is_root) = (self.repo.clone(), self.progress.clone(), self.is_root);
        let written = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|fetch| (fetch, rx))
        })
        .map(move |fetch| read_and_write(repo.clone(), fetch, progress.clone(), is_root))
        .buffer_unordered(FETCHES_IN_FLIGHT);
        let mut written = std::pin::pin!(written);
        while let Some(result) = written.next().await {
            let mut done = result?;
            self.stats.files += done.files;
            self.stats.bytes += done.bytes;
            self.stats.warnings.append(&mut done.warnings);
            self.stats.damaged.append(&mut done.damaged);
        }
        Ok(())
    }
}

/// Runs one read, then on the blocking pool decodes its blobs and writes
/// each into its file; returns what it wrote.
async fn read_and_write(
    repo: Arc<Repository>,
    fetch: Fetch,
    progress: Option<Arc<Progress>>,
    is_root: bool,
) -> Result<RestoreStats> {
    let fetched = match &fetch.span {
        Some(span) => match span.read(&repo).await {
            Ok(data) => Fetched::Span(data),
            Err(e) if is_damage(&e) => Fetched::Each(read_each(&repo, &fetch.parts).await),
            Err(e) => {
                return Err(match fetch.parts.first() {
                    Some(part) => at(&part.file.dest, e),
                    None => e,
                })
            }
        },
        None => Fetched::Span(Vec::new()),
    };
    tokio::task::spawn_blocking(move || {
        let mut stats = RestoreStats::default();
        let progress = progress.as_deref();
        match fetched {
            Fetched::Span(data) => {
                for part in &fetch.parts {
                    let plain = match (part.chunk, &fetch.span) {
                        (Some(index), Some(span)) => {
                            let loc = &part.file.entry.chunks[index];
                            span.blob(&data, loc)
                                .and_then(|stored| repo.decode_blob(loc, stored))
                                .map_err(|e| e.to_string())
                        }
                        _ => Ok(Vec::new()),
                    };
                    write_part(part, plain, is_root, progress, &mut stats)?;
                }
            }
            Fetched::Each(each) => {
                for (part, plain) in fetch.parts.iter().zip(each) {
                    write_part(part, plain, is_root, progress, &mut stats)?;
                }
            }
        }
        Ok(stats)
    })
    .await
    .map_err(|e| Error::Path(format!("restore: writing files failed: {e}")))?
}

/// What one read brought.
enum Fetched {
    /// The span's stored bytes, decoded part by part as they are written.
    Span(Vec<u8>),
    /// Its pack is damaged or missing there: each part's plaintext read on
    /// its own (a cut pack still holds the blobs before the cut), or why
    /// it could not be read.
    Each(Vec<std::result::Result<Vec<u8>, String>>),
}

/// Each part's plaintext read on its own, or why it could not be read.
async fn read_each(repo: &Repository, parts: &[Part]) -> Vec<std::result::Result<Vec<u8>, String>> {
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        out.push(match part.chunk {
            Some(index) => repo
                .read_blob(&part.file.entry.chunks[index])
                .await
                .map_err(|e| e.to_string()),
            None => Ok(Vec::new()),
        });
    }
    out
}

/// Writes one part of a file at its offset (or, if its data was lost,
/// marks the file failed); the last part through closes the file and
/// applies its metadata, or removes it if any part failed.
fn write_part(
    part: &Part,
    plain: std::result::Result<Vec<u8>, String>,
    is_root: bool,
    progress: Option<&Progress>,
    stats: &mut RestoreStats,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let job = &part.file;
    match plain {
        Err(lost) => {
            if !job.failed.swap(true, Ordering::AcqRel) {
                stats
                    .damaged
                    .push(format!("{}: {lost}", job.dest.display()));
            }
        }
        Ok(_) if job.failed.load(Ordering::Acquire) => {}
        Ok(plain) => {
            let file = job.file()?;
            if let Some(index) = part.chunk {
                let offset = job.offsets.get(index).copied().unwrap_or_default();
                file.write_all_at(&plain, offset)
                    .map_err(|e| Error::io(&job.dest, "writing a file", e))?;
                stats.bytes += plain.len() as u64;
                if let Some(p) = progress {
                    p.add_bytes(plain.len() as u64);
                }
            }
        } // this part's handle is dropped before it counts as written
    }
    if job.parts_left.fetch_sub(1, Ordering::AcqRel) != 1 {
        return Ok(());
    }
    // Every other part is through and its handle dropped: this closes it.
    drop(lock(&job.out).take());
    job.unfinished.finished(&job.dest);
    if job.failed.load(Ordering::Acquire) {
        // Never leave a file with holes where its data should be.
        return match std::fs::remove_file(&job.dest) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(
                &job.dest,
                "removing a file whose data is damaged",
                e,
            )),
            _ => Ok(()),
        };
    }
    stats.files += 1;
    if let Some(p) = progress {
        p.file_done();
    }
    apply_metadata(&job.entry, &job.dest, is_root, &mut stats.warnings)
}

fn at(dest: &Path, e: Error) -> Error {
    Error::At {
        path: dest.display().to_string(),
        source: Box::new(e),
    }
}

fn create(dest: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(dest)
        .map_err(|e| Error::io(dest, "creating a file", e))
}

/// Owner (as root), mode and mtime of `entry` on `dest`. A refused owner
/// is a warning; a refused mode or mtime an error.
fn apply_metadata(
    entry: &Entry,
    dest: &Path,
    is_root: bool,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let c = cpath(dest)?;
    if is_root {
        // SAFETY: `c` is a valid NUL-terminated path.
        if unsafe { libc::lchown(c.as_ptr(), entry.uid, entry.gid) } != 0 {
            warnings.push(format!(
                "{}: cannot set owner: {}",
                dest.display(),
                std::io::Error::last_os_error()
            ));
        }
    }
    if entry.kind != Kind::Symlink {
        // SAFETY: as above.
        if unsafe { libc::chmod(c.as_ptr(), (entry.mode & 0o7777) as libc::mode_t) } != 0 {
            return Err(Error::io(
                dest,
                "setting the mode",
                std::io::Error::last_os_error(),
            ));
        }
    }
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: entry.mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
            tv_nsec: entry.mtime_ns.rem_euclid(1_000_000_000) as libc::c_long,
        },
    ];
    // SAFETY: valid path and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(Error::io(
            dest,
            "setting the mtime",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Path(format!("{}: path contains a NUL byte", path.display())))
}

fn make_node(entry: &Entry, dest: &Path) -> std::io::Result<()> {
    let kind = match entry.kind {
        Kind::Fifo => libc::S_IFIFO,
        Kind::Char => libc::S_IFCHR,
        Kind::Block => libc::S_IFBLK,
        _ => libc::S_IFSOCK,
    };
    let c = CString::new(dest.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    let mode = kind | (entry.mode & 0o7777) as libc::mode_t;
    // SAFETY: valid path; mknod has no other preconditions.
    if unsafe { libc::mknod(c.as_ptr(), mode, entry.rdev.unwrap_or(0) as libc::dev_t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;

    fn loc(pack: u8, offset: u64, length: u64) -> Location {
        Location {
            id: BlobId([0; 32]),
            pack: PackId([pack; 32]),
            offset,
            length,
            raw_length: length,
        }
    }

    fn three_part_file(dest: &Path, chunks: &[Vec<u8>]) -> Arc<FileJob> {
        let entry = Entry {
            name: b"f".to_vec(),
            kind: Kind::File,
            mode: 0o640,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime_ns: 1_000_000_000_000_000_000,
            size: 18,
            target: None,
            rdev: None,
            chunks: chunks.iter().map(|c| loc(1, 0, c.len() as u64)).collect(),
            subtree: None,
        };
        Arc::new(FileJob::new(entry, dest.to_path_buf(), Arc::default()))
    }

    #[test]
    fn parts_written_out_of_order_make_the_file_and_the_last_sets_its_mtime() {
        let dir = tempfile::tempdir().expect("temp dir");
        let chunks = [b"first ".to_vec(), b"second ".to_vec(), b"third".to_vec()];
        let dest = dir.path().join("f");
        let file = three_part_file(&dest, &chunks);
        let mut stats = RestoreStats::default();
        for index in [2, 0, 1] {
            let part = Part {
                file: file.clone(),
                chunk: Some(index),
            };
            write_part(&part, Ok(chunks[index].clone()), false, None, &mut stats).expect("write");
            assert_eq!(
                stats.files,
                u64::from(index == 1),
                "done only after the last"
            );
        }
        assert_eq!(std::fs::read(&dest).expect("read"), b"first second third");
        let meta = std::fs::metadata(&dest).expect("stat");
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.mode() & 0o777, meta.mtime()), (0o640, 1_000_000_000));
        assert!(lock(&file.out).is_none(), "the file was closed");
    }

    #[test]
    fn a_stopped_restore_removes_its_unfinished_files_and_creates_no_more() {
        let dir = tempfile::tempdir().expect("temp dir");
        let chunks = [b"first ".to_vec(), b"second ".to_vec(), b"third".to_vec()];
        let (done, half, later) = (
            dir.path().join("done"),
            dir.path().join("half"),
            dir.path().join("later"),
        );
        let unfinished = Arc::new(Unfinished::default());
        let job = |dest: &Path| {
            let mut file = three_part_file(dest, &chunks);
            Arc::get_mut(&mut file).expect("one owner").unfinished = unfinished.clone();
            file
        };
        let mut stats = RestoreStats::default();
        let mut write = |file: &Arc<FileJob>, index: usize| {
            let part = Part {
                file: file.clone(),
                chunk: Some(index),
            };
            write_part(&part, Ok(chunks[index].clone()), false, None, &mut stats)
        };
        let done_job = job(&done);
        for index in 0..3 {
            write(&done_job, index).expect("write");
        }
        // The last part first: the file has its full size, holes before.
        let half_job = job(&half);
        write(&half_job, 2).expect("write");
        assert_eq!(std::fs::metadata(&half).expect("stat").len(), 18);

        assert_eq!(unfinished.remove_all(), 1);
        assert!(!half.exists(), "a partly written file was left");
        assert_eq!(std::fs::read(&done).expect("read"), b"first second third");
        let err = write(&job(&later), 0).expect_err("created after the stop");
        assert!(err.to_string().contains("the restore stopped"), "{err}");
        assert!(!later.exists());
    }

    #[test]
    fn a_file_with_a_lost_part_is_removed_and_named_once_whatever_the_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let chunks = [b"first ".to_vec(), b"second ".to_vec(), b"third".to_vec()];
        for (n, order) in [[0, 1, 2], [1, 0, 2], [2, 1, 0], [0, 2, 1]]
            .iter()
            .enumerate()
        {
            let dest = dir.path().join(format!("f{n}"));
            let file = three_part_file(&dest, &chunks);
            let mut stats = RestoreStats::default();
            for &index in order {
                let part = Part {
                    file: file.clone(),
                    chunk: Some(index),
                };
                // The middle chunk's blob is damaged; so is the last one's.
                let plain = match index {
                    0 => Ok(chunks[0].clone()),
                    _ => Err(format!("damaged object data/xx/p{index}")),
                };
                write_part(&part, plain, false, None, &mut stats).expect("write");
            }
            assert!(!dest.exists(), "order {order:?}: a partial file was left");
            assert_eq!(stats.files, 0);
            assert_eq!(stats.damaged.len(), 1, "{:?}", stats.damaged);
            assert!(stats.damaged[0].contains(&format!("f{n}: damaged object")));
            assert!(lock(&file.out).is_none(), "the file was closed");
        }
    }

    #[test]
    fn a_read_takes_blobs_behind_it_in_the_same_pack_only() {
        let file = Arc::new(FileJob::new(
            Entry {
                name: b"f".to_vec(),
                kind: Kind::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
                user: None,
                group: None,
                mtime_ns: 0,
                size: 40,
                target: None,
                rdev: None,
                chunks: Vec::new(),
                subtree: None,
            },
            PathBuf::from("f"),
            Arc::default(),
        ));
        let mut fetch = Fetch::new();
        assert!(fetch.can_take(&loc(1, 100, 10)));
        fetch.take(&file, 0, &loc(1, 100, 10));
        assert!(fetch.can_take(&loc(1, 110, 10)), "adjacent");
        assert!(fetch.can_take(&loc(1, 110 + MAX_GAP, 10)), "small gap");
        assert!(!fetch.can_take(&loc(1, 111 + MAX_GAP, 10)), "gap too big");
        assert!(!fetch.can_take(&loc(1, 50, 10)), "behind the start");
        assert!(!fetch.can_take(&loc(2, 110, 10)), "other pack");
        assert!(!fetch.can_take(&loc(1, 110, MAX_FETCH)), "too long");
        fetch.take(&file, 1, &loc(1, 120, 30));
        let expected = Span {
            pack: PackId([1; 32]),
            start: 100,
            end: 150,
        };
        assert_eq!(fetch.span, Some(expected));
        assert_eq!(fetch.parts.len(), 2);
    }

    #[test]
    fn sibling_trees_stored_back_to_back_are_read_together() {
        let mut waiting: VecDeque<(Location, PathBuf)> = [
            loc(1, 0, 100),
            loc(2, 100, 100), // other pack: stays
            loc(1, 100, 100),
            loc(1, 250, 100), // 50-byte gap: taken
            loc(1, 50, 10),   // behind: stays
        ]
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l, PathBuf::from(i.to_string())))
        .collect();
        let (span, batch) = next_tree_batch(&mut waiting).unwrap();
        assert_eq!((span.start, span.end), (0, 350));
        let names: Vec<_> = batch.iter().map(|(_, p)| p.display().to_string()).collect();
        assert_eq!(names, ["0", "2", "3"]);
        let left: Vec<_> = waiting
            .iter()
            .map(|(_, p)| p.display().to_string())
            .collect();
        assert_eq!(left, ["1", "4"]);
    }
}
