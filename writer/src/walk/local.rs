//! The local tree: the source paths joined under one root at their
//! absolute paths (backing up `/srv/app` gives a root with `srv`, which
//! holds `app`), each walked with everything below it; the directories
//! above them keep only their metadata and the listed children.

use super::file_entry::{Came, ReadFile};
use super::scan::scan;
use super::{Excludes, Scanner, Source, Walker, READ_AHEAD_THREADS};
use crate::pipeline::{PendingEntry, Ref};
use crate::readahead::ReadAhead;
use crate::source_file::open_for_reading;
use crate::state::FileRecord;
use crate::BackupError;
use coffer_core::format::tree::{Entry, HardLink, Kind};
use coffer_core::sync::lock;
use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// The virtual tree that joins several source paths under one root.
#[derive(Clone)]
enum Node {
    /// A source path: stored with everything below it.
    Source(PathBuf),
    /// A directory above sources: only its metadata and the listed children.
    Parent(PathBuf, BTreeMap<Vec<u8>, Node>),
}

fn source_tree(paths: &[PathBuf]) -> Node {
    let mut root = Node::Parent(PathBuf::from("/"), BTreeMap::new());
    for path in paths {
        let names: Vec<&[u8]> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.as_bytes()),
                _ => None,
            })
            .collect();
        if names.is_empty() {
            root = Node::Source(PathBuf::from("/"));
            continue;
        }
        let mut node = &mut root;
        let mut prefix = PathBuf::from("/");
        for (i, name) in names.iter().enumerate() {
            prefix.push(std::ffi::OsStr::from_bytes(name));
            let Node::Parent(_, children) = node else {
                break; // an ancestor is itself a source: already covered
            };
            if i + 1 == names.len() {
                children.insert(name.to_vec(), Node::Source(prefix.clone()));
                break;
            }
            node = children
                .entry(name.to_vec())
                .or_insert_with(|| Node::Parent(prefix.clone(), BTreeMap::new()));
        }
    }
    root
}

/// A path the walk stat'ed and will store.
struct Child {
    path: PathBuf,
    name: Vec<u8>,
    meta: Metadata,
    /// For an unchanged regular file: its chunks, from the state.
    known: Option<FileRecord>,
}

/// Local source paths, walked as one tree.
pub(crate) struct LocalTree {
    /// The absolute, clean source paths as given (for the scan).
    paths: Vec<PathBuf>,
    root: Node,
    excludes: Excludes,
    /// Directories on another file system than their source (mount points:
    /// /proc, NFS, a FUSE mount) are stored empty, as `tar
    /// --one-file-system` does.
    one_file_system: bool,
    /// With `one_file_system`: the device of the source being walked.
    source_dev: Option<u64>,
    read_ahead: ReadAhead,
}

impl LocalTree {
    /// The tree of absolute, lexically clean `paths`.
    pub fn new(paths: &[PathBuf], excludes: Excludes, one_file_system: bool) -> Self {
        Self {
            paths: paths.to_vec(),
            root: source_tree(paths),
            excludes,
            one_file_system,
            source_dev: None,
            read_ahead: ReadAhead::start(READ_AHEAD_THREADS),
        }
    }

    fn parent_entries(
        &mut self,
        w: &mut Walker<'_>,
        children: &BTreeMap<Vec<u8>, Node>,
    ) -> Result<Vec<PendingEntry>, BackupError> {
        let mut entries = Vec::new();
        for (name, child) in children {
            let pe = match child {
                Node::Source(path) => {
                    self.in_source(path, |t| t.walk_path(w, path, name.clone()))?
                }
                Node::Parent(path, grandchildren) => {
                    self.parent_entry(w, path, name.clone(), grandchildren)?
                }
            };
            entries.extend(pe);
        }
        Ok(entries)
    }

    /// A directory above sources (walked whole if it is not a directory).
    fn parent_entry(
        &mut self,
        w: &mut Walker<'_>,
        path: &Path,
        name: Vec<u8>,
        children: &BTreeMap<Vec<u8>, Node>,
    ) -> Result<Option<PendingEntry>, BackupError> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => m,
            Ok(_) => return self.walk_path(w, path, name),
            Err(e) => {
                w.warn(path, "cannot stat", &e);
                return Ok(None);
            }
        };
        let mut entry = entry_from(w, name, Kind::Dir, &meta);
        read_xattrs(w, path, &mut entry);
        w.stats.dirs += 1;
        let entries = self.parent_entries(w, children)?;
        Ok(Some(PendingEntry {
            entry,
            chunks: Vec::new(),
            subtree: Some(w.pipe.store_dir(entries)?),
            record: None,
        }))
    }

    /// One path of any kind; `None` when excluded or unreadable.
    fn walk_path(
        &mut self,
        w: &mut Walker<'_>,
        path: &Path,
        name: Vec<u8>,
    ) -> Result<Option<PendingEntry>, BackupError> {
        match self.stat_child(w, path.to_path_buf(), name)? {
            Some(child) => self.walk_child(w, child),
            None => Ok(None),
        }
    }

    /// Stats a path the walk will store; for a regular file, looks up what
    /// the state remembers of it. `None` when excluded or gone.
    fn stat_child(
        &mut self,
        w: &mut Walker<'_>,
        path: PathBuf,
        name: Vec<u8>,
    ) -> Result<Option<Child>, BackupError> {
        if self.excludes.excluded(&path) {
            return Ok(None);
        }
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                w.warn(&path, "cannot stat", &e);
                return Ok(None);
            }
        };
        if self.excludes.too_large(&meta) {
            return Ok(None);
        }
        let known = if meta.is_file() {
            let shared = &w.pipe.shared;
            lock(&shared.state)
                .file(path.as_os_str().as_bytes())?
                .filter(|r| same_file(r, &meta) && shared.horizon.reusable(r.due))
        } else {
            None
        };
        Ok(Some(Child {
            path,
            name,
            meta,
            known,
        }))
    }

    /// Stores one stat'ed path.
    fn walk_child(
        &mut self,
        w: &mut Walker<'_>,
        child: Child,
    ) -> Result<Option<PendingEntry>, BackupError> {
        let Child {
            path,
            name,
            meta,
            known,
        } = child;
        let path = path.as_path();
        let kind = kind_of(&meta);
        let mut entry = entry_from(w, name, kind, &meta);
        read_xattrs(w, path, &mut entry);
        match kind {
            Kind::File => return file(w, path, &meta, entry, known),
            Kind::Dir => {
                w.stats.dirs += 1;
                let subtree = if self.source_dev.is_some_and(|dev| dev != meta.dev()) {
                    // Another file system mounted here: the mount point only.
                    w.pipe.store_dir(Vec::new())?
                } else {
                    self.walk_dir(w, path)?
                };
                return Ok(Some(PendingEntry {
                    entry,
                    chunks: Vec::new(),
                    subtree: Some(subtree),
                    record: None,
                }));
            }
            Kind::Symlink => match std::fs::read_link(path) {
                Ok(target) => {
                    let target = target.as_os_str().as_bytes().to_vec();
                    entry.size = target.len() as u64;
                    entry.target = Some(target);
                }
                Err(e) => {
                    w.warn(path, "cannot read link", &e);
                    return Ok(None);
                }
            },
            Kind::Char | Kind::Block => entry.rdev = Some(meta.rdev()),
            Kind::Fifo | Kind::Socket => {}
        }
        w.stats.others += 1;
        Ok(Some(PendingEntry {
            entry,
            chunks: Vec::new(),
            subtree: None,
            record: None,
        }))
    }

    /// A directory's contents, queued as one tree.
    fn walk_dir(&mut self, w: &mut Walker<'_>, path: &Path) -> Result<Ref, BackupError> {
        let entries = self.dir_entries(w, path)?;
        w.pipe.store_dir(entries)
    }

    /// A directory's entries, with everything below them.
    fn dir_entries(
        &mut self,
        w: &mut Walker<'_>,
        path: &Path,
    ) -> Result<Vec<PendingEntry>, BackupError> {
        let mut children: Vec<(Vec<u8>, PathBuf)> = Vec::new();
        match std::fs::read_dir(path) {
            Ok(rd) => {
                for item in rd {
                    match item {
                        Ok(de) => children.push((de.file_name().as_bytes().to_vec(), de.path())),
                        Err(e) => w.warn(path, "cannot list", &e),
                    }
                }
            }
            Err(e) => w.warn(path, "cannot list", &e),
        }
        // A marked directory (a cache): only the marker is kept.
        if let Some(marker) = self.excludes.marker_in(path) {
            children.retain(|(name, _)| name.as_slice() == marker);
        }
        children.sort();
        // Stat everything first, so the files that must be read can be
        // read ahead while the walker works through the ones before them.
        let mut stated = Vec::with_capacity(children.len());
        for (name, path) in children {
            if let Some(child) = self.stat_child(w, path, name)? {
                if child.meta.is_file() && child.known.is_none() {
                    self.read_ahead.hint(child.path.clone());
                }
                stated.push(child);
            }
        }
        let mut entries = Vec::with_capacity(stated.len());
        for child in stated {
            entries.extend(self.walk_child(w, child)?);
        }
        Ok(entries)
    }

    /// Runs `walk` over source `path`; with `one_file_system`, the walk
    /// stays on the device `path` is on.
    fn in_source<T>(&mut self, path: &Path, walk: impl FnOnce(&mut Self) -> T) -> T {
        let dev = self
            .one_file_system
            .then(|| std::fs::symlink_metadata(path).ok().map(|m| m.dev()))
            .flatten();
        let outer = std::mem::replace(&mut self.source_dev, dev);
        let walked = walk(self);
        self.source_dev = outer;
        walked
    }
}

impl Source for LocalTree {
    fn scanner(&self) -> Option<Scanner> {
        let (paths, excludes) = (self.paths.clone(), self.excludes.clone());
        let one_file_system = self.one_file_system;
        Some(Box::new(move |progress| {
            scan(&paths, &excludes, one_file_system, progress)
        }))
    }

    fn root_entries(&mut self, w: &mut Walker<'_>) -> Result<Vec<PendingEntry>, BackupError> {
        match self.root.clone() {
            Node::Source(path) => self.in_source(&path, |t| t.dir_entries(w, &path)),
            Node::Parent(_, children) => self.parent_entries(w, &children),
        }
    }
}

/// A regular file: reused (another name of a file this run read, or
/// unchanged since the state's run), or read.
fn file(
    w: &mut Walker<'_>,
    path: &Path,
    meta: &Metadata,
    entry: Entry,
    known: Option<FileRecord>,
) -> Result<Option<PendingEntry>, BackupError> {
    // Another name of a file this run has read (stored once), or a file
    // the state says is unchanged: not read again.
    if let Some(read) = w.linked(&entry).or_else(|| known.map(ReadFile::known)) {
        return Ok(Some(w.file_entry(entry, read, Came::Reused)));
    }
    let file = match open_for_reading(path) {
        Ok(f) => f,
        Err(e) => {
            w.warn(path, "cannot open", &e);
            return Ok(None);
        }
    };
    let read = match w.read_file(&file, meta) {
        Ok(read) => read,
        Err(BackupError::Source { source, .. }) => {
            w.warn(path, "cannot read", &source);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    // Remember the file only if it did not change while we read it (the
    // open file's inode: a file renamed over it since is a new inode,
    // with its own times, and is read next run).
    let stable = read.size == meta.size()
        && file.metadata().is_ok_and(|after| {
            mtime_ns(&after) == mtime_ns(meta) && ctime_ns(&after) == ctime_ns(meta)
        });
    let record = stable.then(|| {
        let record = FileRecord {
            size: read.size,
            mtime_ns: mtime_ns(meta),
            ctime_ns: ctime_ns(meta),
            inode: meta.ino(),
            chunks: Vec::new(),
            holes: read.holes.clone(),
            due: read.due,
            xattrs: Vec::new(),
        };
        (path.as_os_str().as_bytes().to_vec(), record)
    });
    Ok(Some(w.file_entry(entry, read, Came::Read(record))))
}

fn kind_of(meta: &Metadata) -> Kind {
    let ft = meta.file_type();
    if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else {
        Kind::Socket
    }
}

fn entry_from(w: &mut Walker<'_>, name: Vec<u8>, kind: Kind, meta: &Metadata) -> Entry {
    let mut e = w.entry(
        name,
        kind,
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid(),
        mtime_ns(meta),
    );
    e.size = if kind == Kind::File { meta.size() } else { 0 };
    e.link = (kind != Kind::Dir && meta.nlink() > 1).then(|| HardLink {
        dev: meta.dev(),
        ino: meta.ino(),
        nlink: meta.nlink(),
    });
    e
}

/// Reads `path`'s extended attributes into `entry`, unless the run
/// leaves them out; attributes that cannot be read are a warning (the
/// entry is stored without them).
fn read_xattrs(w: &mut Walker<'_>, path: &Path, entry: &mut Entry) {
    if !w.xattrs {
        return;
    }
    match crate::xattrs::read(path) {
        Ok(xattrs) => entry.xattrs = w.storable_xattrs(path, xattrs),
        Err(e) => w.warn(path, "cannot read extended attributes", &e),
    }
}

fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

fn ctime_ns(meta: &Metadata) -> i64 {
    meta.ctime() * 1_000_000_000 + meta.ctime_nsec()
}

/// Whether the state's record is of this file as it is now.
fn same_file(rec: &FileRecord, meta: &Metadata) -> bool {
    rec.size == meta.size()
        && rec.mtime_ns == mtime_ns(meta)
        && rec.ctime_ns == ctime_ns(meta)
        && rec.inode == meta.ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(node: &Node) -> Vec<String> {
        match node {
            Node::Source(p) => vec![format!("S {}", p.display())],
            Node::Parent(p, children) => {
                let mut out = vec![format!("P {}", p.display())];
                for c in children.values() {
                    out.extend(names(c));
                }
                out
            }
        }
    }

    #[test]
    fn sources_nest_under_their_absolute_paths() {
        let t = source_tree(&[
            PathBuf::from("/srv/app"),
            PathBuf::from("/etc"),
            PathBuf::from("/srv/app/sub"),
        ]);
        assert_eq!(names(&t), ["P /", "S /etc", "P /srv", "S /srv/app"]);
        assert_eq!(
            names(&source_tree(&[PathBuf::from("/"), PathBuf::from("/x")])),
            ["S /"]
        );
    }
}
