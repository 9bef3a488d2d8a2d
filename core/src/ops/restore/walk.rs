//! The walking half of a restore: trees fetched breadth first (several at
//! once, siblings stored back to back read together), directories, links
//! and special files made as their trees arrive, and each file's chunks
//! queued as reads for the writing half ([`super::write`]).

use super::links::HardLinks;
use super::plan::{next_tree_batch, Span};
use super::target::{apply_metadata, clear_way, make_dir, make_node, make_symlink};
use super::write::{FileFetch, FileJob, Part, Unfinished};
use super::{at, is_damage, RestoreStats};
use crate::error::{Error, Result};
use crate::format::tree::{Entry, Kind, Location, Tree};
use crate::progress::Progress;
use crate::repository::Repository;
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Trees fetched at once while walking.
const TREES_IN_FLIGHT: usize = 16;
/// Reads assembled at once. A writer fills one pack per core, so the
/// blobs of consecutive small files alternate between packs; one open read
/// per pack keeps them mergeable.
const OPEN_FETCHES: usize = 4;

/// The walking half: trees, directories, links and special files; files
/// become queued reads.
pub(super) struct Walk<'a> {
    pub(super) repo: &'a Repository,
    pub(super) progress: Option<Arc<Progress>>,
    pub(super) overwrite: bool,
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
    /// Hard-linked entries: the first name of each file, and the names to
    /// link to it once it is complete.
    pub(super) links: HardLinks,
}

impl Walk<'_> {
    /// Restores the contents of directory `dir` into `path`, breadth first,
    /// fetching up to [`TREES_IN_FLIGHT`] trees at once.
    pub(super) async fn walk(&mut self, dir: &Entry, path: &Path) -> Result<()> {
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
                make_dir(&dest)?;
                self.stats.dirs += 1;
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
    pub(super) async fn add_leaf(&mut self, entry: Entry, dest: PathBuf) -> Result<()> {
        clear_way(self.overwrite, &entry, &dest)?;
        if let Some(link) = entry.link {
            if self.links.is_known(&link, &entry, &dest) {
                return Ok(()); // another name of a file restored already
            }
        }
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
        let file = Arc::new(FileJob::new(
            entry,
            dest,
            self.sparse,
            self.unfinished.clone(),
        ));
        match file.entry.chunks.as_slice() {
            [] => {
                if self.open.is_empty() {
                    self.open.push(FileFetch::new());
                }
                if let Some(fetch) = self.open.last_mut() {
                    fetch.parts.push(Part { file, chunk: None });
                }
            }
            [loc] => {
                let part = Part {
                    file: file.clone(),
                    chunk: Some(0),
                };
                if let Some(fetch) = self.open.iter_mut().find(|f| f.can_take(loc)) {
                    fetch.take(loc, part);
                } else {
                    if self.open.len() >= OPEN_FETCHES {
                        self.send_oldest().await?;
                    }
                    let mut fetch = FileFetch::new();
                    fetch.take(loc, part);
                    self.open.push(fetch);
                }
            }
            chunks => {
                self.flush().await?;
                let mut fetch = FileFetch::new();
                for (index, loc) in chunks.iter().enumerate() {
                    if !fetch.can_take(loc) {
                        self.send(std::mem::replace(&mut fetch, FileFetch::new()))
                            .await?;
                    }
                    let part = Part {
                        file: file.clone(),
                        chunk: Some(index),
                    };
                    fetch.take(loc, part);
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
    pub(super) async fn flush(&mut self) -> Result<()> {
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

/// Reads a batch of trees with one ranged read: each directory's path with
/// its tree or why it could not be read. Fails only when the read fails
/// for another reason than damage.
async fn read_trees(
    repo: &Repository,
    span: Span,
    batch: Vec<(Location, PathBuf)>,
) -> Result<Vec<(PathBuf, Result<Tree>)>> {
    if repo.metadata_cache().is_some() {
        // Whole tree packs come through the cache: read each from there.
        let mut each = Vec::with_capacity(batch.len());
        for (loc, path) in batch {
            match repo.read_tree(&loc).await {
                Err(e) if !is_damage(&e) => return Err(at(&path, e)),
                tree => each.push((path, tree)),
            }
        }
        return Ok(each);
    }
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
