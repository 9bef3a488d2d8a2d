//! Walking the sources: metadata into entries, files into chunks, directories
//! into pending trees (post-order, so children are queued before parents).
//!
//! A source path is stored under its absolute path: backing up `/srv/app`
//! gives a root tree with `srv`, which holds `app`. Entries that vanish or
//! cannot be read are reported as warnings and left out; the run goes on.

use crate::bucket::{self, Bucket, Fetcher, Item, KeyDir};
use crate::chunker::Chunker;
use crate::owner::Owners;
use crate::pipeline::{PendingEntry, Pipeline, Ref};
use crate::readahead::ReadAhead;
use crate::source_file::open_for_reading;
use crate::sparse;
use crate::state::FileRecord;
use crate::BackupError;
use coffer_core::backend::s3::source::{ObjectHeaders, SourceObject};
use coffer_core::format::snapshot::SnapshotStats;
use coffer_core::format::tree::{Entry, HardLink, Hole, Kind, Xattr};
use coffer_core::progress::Progress;
use coffer_core::sync::lock;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::{BTreeMap, HashMap};
use std::fs::Metadata;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Threads that open files ahead of the walker (their work is waiting on
/// the disk, not the CPU).
pub const READ_AHEAD_THREADS: usize = 4;

/// `--exclude` patterns: one without `/` matches an entry's name, one with
/// `/` its absolute path (`*` stays within one path component).
#[derive(Clone)]
pub(crate) struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self, BackupError> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| BackupError::Usage(format!("bad --exclude pattern {p:?}: {e}")))?;
            if p.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| BackupError::Usage(format!("bad --exclude patterns: {e}")))
        };
        Ok(Self {
            names: build(names)?,
            paths: build(paths)?,
        })
    }

    fn excluded(&self, path: &Path) -> bool {
        let name = path.file_name().map(Path::new);
        name.is_some_and(|n| self.names.is_match(n)) || self.paths.is_match(path)
    }
}

/// Counts the regular files below `paths` and their bytes, as the walk
/// will see them, into `progress`'s totals. Runs beside the backup; stops
/// early when the backup ends.
pub(crate) fn scan(
    paths: &[PathBuf],
    excludes: &Excludes,
    one_file_system: bool,
    progress: &Progress,
) {
    // Each path with the device of its source (with one_file_system).
    let mut stack: Vec<(PathBuf, Option<u64>)> = paths.iter().map(|p| (p.clone(), None)).collect();
    while let Some((path, source_dev)) = stack.pop() {
        if progress.stopped() {
            return;
        }
        if excludes.excluded(&path) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            progress.add_total(meta.len());
        } else if meta.is_dir() {
            let dev = one_file_system.then(|| source_dev.unwrap_or(meta.dev()));
            if dev.is_some_and(|d| d != meta.dev()) {
                continue; // another file system: the walk stores it empty
            }
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| (e.path(), dev)));
            }
        }
    }
    progress.totals_done();
}

/// The virtual tree that joins several source paths under one root.
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

/// A source file as read (or known from the state): its chunks and holes.
#[derive(Clone)]
struct ReadFile {
    chunks: Vec<Ref>,
    /// Bytes of data read (holes left out).
    data: u64,
    holes: Vec<Hole>,
    /// Its length: data and holes.
    size: u64,
    /// When the first of its known chunks comes due (`i64::MAX` if none:
    /// the new ones' due times come with their locations).
    due: i64,
}

/// What a walk keeps and where it stops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WalkOptions {
    /// Entries keep their extended attributes.
    pub xattrs: bool,
    /// Directories on another file system than their source (mount points:
    /// /proc, NFS, a FUSE mount) are stored empty, as `tar
    /// --one-file-system` does.
    pub one_file_system: bool,
}

/// Walks sources and feeds the pipeline.
pub(crate) struct Walker<'a> {
    pipe: &'a Pipeline,
    read_ahead: ReadAhead,
    chunker: Chunker,
    excludes: Excludes,
    owners: Owners,
    /// What the run keeps and where it stops.
    opts: WalkOptions,
    /// With `one_file_system`: the device of the source being walked.
    source_dev: Option<u64>,
    /// Hard-linked files read in this run, by (device, inode): their
    /// chunks, holes and size, for their other names.
    links: HashMap<(u64, u64), ReadFile>,
    /// What the walk saw.
    pub stats: SnapshotStats,
    /// Entries that could not be read, with the reason.
    pub warnings: Vec<String>,
}

impl<'a> Walker<'a> {
    pub fn new(
        pipe: &'a Pipeline,
        chunker: Chunker,
        excludes: Excludes,
        opts: WalkOptions,
    ) -> Self {
        Self {
            pipe,
            read_ahead: ReadAhead::start(READ_AHEAD_THREADS),
            chunker,
            excludes,
            owners: Owners::default(),
            opts,
            source_dev: None,
            links: HashMap::new(),
            stats: SnapshotStats::default(),
            warnings: Vec::new(),
        }
    }

    /// Walks absolute source `paths` and `buckets` (stored under `/s3`);
    /// returns the root tree's reference.
    pub fn backup_sources(
        &mut self,
        paths: &[PathBuf],
        buckets: &[Bucket],
    ) -> Result<Ref, BackupError> {
        let root = source_tree(paths);
        if buckets.is_empty() {
            return self.walk_node(&root);
        }
        let Node::Parent(_, children) = &root else {
            return Err(BackupError::Usage(
                "a bucket is stored under /s3: it cannot go with / as a source".into(),
            ));
        };
        if children.contains_key(BUCKETS_DIR.as_bytes()) {
            return Err(BackupError::Usage(format!(
                "buckets are stored under /{BUCKETS_DIR}: a local source there would be mixed with them"
            )));
        }
        let mut entries = self.parent_entries(children)?;
        entries.push(self.buckets_entry(buckets)?);
        self.pipe.store_dir(entries)
    }

    /// Stores `input` as one file called `name` in an otherwise empty root.
    pub fn backup_stream(&mut self, name: &str, input: impl Read) -> Result<Ref, BackupError> {
        let (uid, gid) = (coffer_core::user::uid(), coffer_core::user::gid());
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
        let mut entry = self.entry(name.as_bytes().to_vec(), Kind::File, 0o600, uid, gid, now);
        let (chunks, total, _) = self.read_chunks(input, None).map_err(|e| match e {
            BackupError::Source { source, .. } => BackupError::Source {
                path: PathBuf::from(name),
                source,
            },
            e => e,
        })?;
        entry.size = total;
        self.stats.files += 1;
        self.stats.files_read += 1;
        self.stats.bytes += total;
        self.stats.bytes_read += total;
        self.pipe.shared.progress.file_done();
        let pe = PendingEntry {
            entry,
            chunks,
            subtree: None,
            record: None,
        };
        self.pipe.store_dir(vec![pe])
    }

    fn walk_node(&mut self, node: &Node) -> Result<Ref, BackupError> {
        match node {
            Node::Source(path) => self.in_source(path, |w| w.walk_dir(path)),
            Node::Parent(_, children) => {
                let entries = self.parent_entries(children)?;
                self.pipe.store_dir(entries)
            }
        }
    }

    fn parent_entries(
        &mut self,
        children: &BTreeMap<Vec<u8>, Node>,
    ) -> Result<Vec<PendingEntry>, BackupError> {
        let mut entries = Vec::new();
        for (name, child) in children {
            let pe = match child {
                Node::Source(path) => self.in_source(path, |w| w.walk_path(path, name.clone()))?,
                Node::Parent(path, _) => self.parent_entry(path, name.clone(), child)?,
            };
            entries.extend(pe);
        }
        Ok(entries)
    }

    /// The `/s3` directory: a directory per bucket, the tree of its keys
    /// in it.
    fn buckets_entry(&mut self, buckets: &[Bucket]) -> Result<PendingEntry, BackupError> {
        let mut entries = Vec::new();
        let mut newest = 0;
        for b in buckets {
            let mut left_out = Vec::new();
            let tree = bucket::key_tree(&b.objects, |key, why| {
                left_out.push(format!("{}: {why}", b.source.url_of(&key)));
            });
            self.stats.errors += left_out.len() as u64;
            self.warnings.extend(left_out);
            let mut order = Vec::new();
            tree.objects_in_walk_order(&mut order);
            let mut to_read = Vec::new();
            for &i in &order {
                if self.known_object(b, &b.objects[i])?.is_none() {
                    to_read.push(b.objects[i].clone());
                }
            }
            let mut fetcher = Fetcher::new(b.source.clone(), self.pipe.shared.rt.clone(), to_read);
            newest = newest.max(tree.mtime_ns);
            let name = b.source.bucket().as_bytes().to_vec();
            entries.push(self.key_dir_entry(b, &mut fetcher, name, &tree)?);
        }
        let entry = self.synthetic(BUCKETS_DIR.as_bytes().to_vec(), Kind::Dir, newest);
        self.stats.dirs += 1;
        Ok(PendingEntry {
            entry,
            chunks: Vec::new(),
            subtree: Some(self.pipe.store_dir(entries)?),
            record: None,
        })
    }

    /// A directory of a bucket's keys, with everything below it.
    fn key_dir_entry(
        &mut self,
        b: &Bucket,
        fetcher: &mut Fetcher,
        name: Vec<u8>,
        dir: &KeyDir,
    ) -> Result<PendingEntry, BackupError> {
        let mut entries = Vec::new();
        for (name, item) in dir.items() {
            match item {
                Item::Dir(sub) => {
                    entries.push(self.key_dir_entry(b, fetcher, name.to_vec(), sub)?)
                }
                Item::File(i) => {
                    entries.extend(self.object(b, fetcher, name.to_vec(), &b.objects[i])?)
                }
            }
        }
        self.stats.dirs += 1;
        Ok(PendingEntry {
            entry: self.synthetic(name, Kind::Dir, dir.mtime_ns),
            chunks: Vec::new(),
            subtree: Some(self.pipe.store_dir(entries)?),
            record: None,
        })
    }

    /// An entry the walk makes up (for `/s3` and what is below it): owned
    /// by the user running the backup, 0755 for a directory, 0644 else.
    fn synthetic(&mut self, name: Vec<u8>, kind: Kind, mtime_ns: i64) -> Entry {
        let (uid, gid) = (coffer_core::user::uid(), coffer_core::user::gid());
        let mode = if kind == Kind::Dir { 0o755 } else { 0o644 };
        self.entry(name, kind, mode, uid, gid, mtime_ns)
    }

    /// What the state holds of `obj`, if it is the object stored then
    /// (same size, `LastModified` and ETag) and not yet due.
    fn known_object(
        &mut self,
        b: &Bucket,
        obj: &SourceObject,
    ) -> Result<Option<FileRecord>, BackupError> {
        let shared = &self.pipe.shared;
        let url = b.source.url_of(&obj.key);
        Ok(lock(&shared.state).file(url.as_bytes())?.filter(|r| {
            r.size == obj.size
                && r.mtime_ns == obj.modified_ns
                && r.ctime_ns == 0
                && r.inode == bucket::etag_identity(&obj.etag)
                && shared.horizon.reusable(r.due)
        }))
    }

    /// One object: reused as the state knows it, or read from the bucket
    /// (the fetcher's next reader: objects are asked for in walk order).
    /// `None` when it could not be read (a warning says why).
    fn object(
        &mut self,
        b: &Bucket,
        fetcher: &mut Fetcher,
        name: Vec<u8>,
        obj: &SourceObject,
    ) -> Result<Option<PendingEntry>, BackupError> {
        let url = b.source.url_of(&obj.key);
        let mut entry = self.synthetic(name, Kind::File, obj.modified_ns);
        entry.size = obj.size;
        let progress = self.pipe.shared.progress.clone();
        if let Some(rec) = self.known_object(b, obj)? {
            self.stats.files += 1;
            self.stats.bytes += rec.size;
            progress.add_bytes(rec.size);
            progress.file_done();
            if self.opts.xattrs {
                entry.xattrs = self.storable_xattrs(Path::new(&url), rec.xattrs);
            }
            let read = ReadFile {
                chunks: rec.chunks.into_iter().map(Ref::Known).collect(),
                data: 0,
                holes: Vec::new(),
                size: rec.size,
                due: rec.due,
            };
            return Ok(Some(self.file_entry(entry, read, None)));
        }
        let mut reader = fetcher
            .next()
            .ok_or_else(|| BackupError::Pipeline(format!("no reader for {url}")))?;
        let xattrs = match reader.headers() {
            Ok(headers) => {
                self.storable_xattrs(Path::new(&url), object_xattrs(&obj.etag, &headers))
            }
            Err(e) => {
                self.warn(Path::new(&url), "cannot read", &e);
                return Ok(None);
            }
        };
        let (chunks, size, due) = match self.read_chunks(reader, Some(obj.size)) {
            Ok(read) => read,
            Err(BackupError::Source { source, .. }) => {
                self.warn(Path::new(&url), "cannot read", &source);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        self.stats.files += 1;
        self.stats.files_read += 1;
        self.stats.bytes += size;
        self.stats.bytes_read += size;
        progress.file_done();
        if self.opts.xattrs {
            entry.xattrs = xattrs.clone();
        }
        let record = FileRecord {
            size,
            mtime_ns: obj.modified_ns,
            ctime_ns: 0,
            inode: bucket::etag_identity(&obj.etag),
            chunks: Vec::new(),
            holes: Vec::new(),
            due,
            xattrs,
        };
        let read = ReadFile {
            chunks,
            data: size,
            holes: Vec::new(),
            size,
            due,
        };
        Ok(Some(self.file_entry(
            entry,
            read,
            Some((url.into_bytes(), record)),
        )))
    }

    fn parent_entry(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        node: &Node,
    ) -> Result<Option<PendingEntry>, BackupError> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => m,
            Ok(_) => return self.walk_path(path, name),
            Err(e) => {
                self.warn(path, "cannot stat", &e);
                return Ok(None);
            }
        };
        let mut entry = self.entry_from(name, Kind::Dir, &meta);
        self.read_xattrs(path, &mut entry);
        self.stats.dirs += 1;
        let subtree = self.walk_node(node)?;
        Ok(Some(PendingEntry {
            entry,
            chunks: Vec::new(),
            subtree: Some(subtree),
            record: None,
        }))
    }

    /// One path of any kind; `None` when excluded or unreadable.
    fn walk_path(
        &mut self,
        path: &Path,
        name: Vec<u8>,
    ) -> Result<Option<PendingEntry>, BackupError> {
        match self.stat_child(path.to_path_buf(), name)? {
            Some(child) => self.walk_child(child),
            None => Ok(None),
        }
    }

    /// Stats a path the walk will store; for a regular file, looks up what
    /// the state remembers of it. `None` when excluded or gone.
    fn stat_child(&mut self, path: PathBuf, name: Vec<u8>) -> Result<Option<Child>, BackupError> {
        if self.excludes.excluded(&path) {
            return Ok(None);
        }
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                self.warn(&path, "cannot stat", &e);
                return Ok(None);
            }
        };
        let known = if meta.is_file() {
            let shared = &self.pipe.shared;
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
    fn walk_child(&mut self, child: Child) -> Result<Option<PendingEntry>, BackupError> {
        let Child {
            path,
            name,
            meta,
            known,
        } = child;
        let path = path.as_path();
        let ft = meta.file_type();
        let kind = if ft.is_file() {
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
        };
        let mut entry = self.entry_from(name, kind, &meta);
        self.read_xattrs(path, &mut entry);
        let mut pe = PendingEntry {
            entry: entry.clone(),
            chunks: Vec::new(),
            subtree: None,
            record: None,
        };
        match kind {
            Kind::File => return self.file(path, &meta, entry, known),
            Kind::Dir => {
                self.stats.dirs += 1;
                pe.subtree = Some(if self.source_dev.is_some_and(|dev| dev != meta.dev()) {
                    // Another file system mounted here: the mount point only.
                    self.pipe.store_dir(Vec::new())?
                } else {
                    self.walk_dir(path)?
                });
                return Ok(Some(pe));
            }
            Kind::Symlink => match std::fs::read_link(path) {
                Ok(target) => {
                    let target = target.as_os_str().as_bytes().to_vec();
                    entry.size = target.len() as u64;
                    entry.target = Some(target);
                }
                Err(e) => {
                    self.warn(path, "cannot read link", &e);
                    return Ok(None);
                }
            },
            Kind::Char | Kind::Block => entry.rdev = Some(meta.rdev()),
            Kind::Fifo | Kind::Socket => {}
        }
        self.stats.others += 1;
        pe.entry = entry;
        Ok(Some(pe))
    }

    /// A directory's contents, queued as one tree.
    fn walk_dir(&mut self, path: &Path) -> Result<Ref, BackupError> {
        let mut children: Vec<(Vec<u8>, PathBuf)> = Vec::new();
        match std::fs::read_dir(path) {
            Ok(rd) => {
                for item in rd {
                    match item {
                        Ok(de) => children.push((de.file_name().as_bytes().to_vec(), de.path())),
                        Err(e) => self.warn(path, "cannot list", &e),
                    }
                }
            }
            Err(e) => self.warn(path, "cannot list", &e),
        }
        children.sort();
        // Stat everything first, so the files that must be read can be
        // read ahead while the walker works through the ones before them.
        let mut stated = Vec::with_capacity(children.len());
        for (name, path) in children {
            if let Some(child) = self.stat_child(path, name)? {
                if child.meta.is_file() && child.known.is_none() {
                    self.read_ahead.hint(child.path.clone());
                }
                stated.push(child);
            }
        }
        let mut entries = Vec::with_capacity(stated.len());
        for child in stated {
            entries.extend(self.walk_child(child)?);
        }
        self.pipe.store_dir(entries)
    }

    /// A regular file: reused (another name of a file this run read, or
    /// unchanged since the state's run), or read.
    fn file(
        &mut self,
        path: &Path,
        meta: &Metadata,
        entry: Entry,
        known: Option<FileRecord>,
    ) -> Result<Option<PendingEntry>, BackupError> {
        let key = path.as_os_str().as_bytes().to_vec();
        let progress = &self.pipe.shared.progress;
        // Another name of a file this run has read (stored once), or a file
        // the state says is unchanged: not read again.
        let reused = match entry.link.and_then(|l| self.links.get(&(l.dev, l.ino))) {
            Some(same) => Some(same.clone()),
            None => known.map(|rec| ReadFile {
                chunks: rec.chunks.into_iter().map(Ref::Known).collect(),
                data: 0,
                holes: rec.holes,
                size: rec.size,
                due: rec.due,
            }),
        };
        if let Some(read) = reused {
            self.stats.files += 1;
            self.stats.bytes += read.size;
            progress.add_bytes(read.size);
            progress.file_done();
            return Ok(Some(self.file_entry(entry, read, None)));
        }
        let file = match open_for_reading(path) {
            Ok(f) => f,
            Err(e) => {
                self.warn(path, "cannot open", &e);
                return Ok(None);
            }
        };
        let read = match self.read_file(&file, meta) {
            Ok(read) => read,
            Err(BackupError::Source { source, .. }) => {
                self.warn(path, "cannot read", &source);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        self.stats.files += 1;
        self.stats.files_read += 1;
        self.stats.bytes += read.size;
        self.stats.bytes_read += read.data;
        self.pipe.shared.progress.file_done();
        // Remember the file only if it did not change while we read it (the
        // open file's inode: a file renamed over it since is a new inode,
        // with its own times, and is read next run).
        let stable = read.size == meta.size()
            && file.metadata().is_ok_and(|after| {
                after.mtime() == meta.mtime()
                    && after.mtime_nsec() == meta.mtime_nsec()
                    && after.ctime() == meta.ctime()
                    && after.ctime_nsec() == meta.ctime_nsec()
            });
        let record = stable.then(|| {
            (
                key,
                FileRecord {
                    size: read.size,
                    mtime_ns: mtime_ns(meta),
                    ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
                    inode: meta.ino(),
                    chunks: Vec::new(),
                    holes: read.holes.clone(),
                    due: read.due,
                    xattrs: Vec::new(),
                },
            )
        });
        Ok(Some(self.file_entry(entry, read, record)))
    }

    /// A file's entry with what was read (or reused) of it; a hard-linked
    /// file is remembered for its other names.
    fn file_entry(
        &mut self,
        mut entry: Entry,
        read: ReadFile,
        record: Option<(Vec<u8>, FileRecord)>,
    ) -> PendingEntry {
        entry.size = read.size;
        entry.holes = read.holes.clone();
        if let Some(link) = entry.link {
            self.links
                .entry((link.dev, link.ino))
                .or_insert_with(|| read.clone());
        }
        PendingEntry {
            entry,
            chunks: read.chunks,
            subtree: None,
            record,
        }
    }

    /// Reads an open source file into chunks: all of it, or for a sparse
    /// file only its data ranges (each chunked on its own, so a chunk never
    /// spans a hole), the holes between them noted.
    fn read_file(
        &mut self,
        file: &std::fs::File,
        meta: &Metadata,
    ) -> Result<ReadFile, BackupError> {
        let source = |source| BackupError::Source {
            path: PathBuf::new(),
            source,
        };
        let Some(ranges) = sparse::data_ranges(file, meta.size(), meta.blocks()).map_err(source)?
        else {
            let (chunks, size, due) = self.read_chunks(file, Some(meta.size()))?;
            return Ok(ReadFile {
                chunks,
                data: size,
                holes: Vec::new(),
                size,
                due,
            });
        };
        let mut read = ReadFile {
            chunks: Vec::new(),
            data: 0,
            holes: Vec::new(),
            size: 0,
            due: i64::MAX,
        };
        let hole = |read: &mut ReadFile, upto: u64| {
            if upto > read.size {
                read.holes.push(Hole {
                    offset: read.size,
                    length: upto - read.size,
                });
                self.pipe.shared.progress.add_bytes(upto - read.size);
                read.size = upto;
            }
        };
        let mut whole = true;
        for &(start, end) in &ranges {
            hole(&mut read, start);
            let mut input = file;
            input.seek(SeekFrom::Start(start)).map_err(source)?;
            let want = end - start;
            let (chunks, n, due) = self.read_chunks(input.take(want), Some(want))?;
            read.chunks.extend(chunks);
            read.data += n;
            read.size += n;
            read.due = read.due.min(due);
            if n < want {
                whole = false; // it shrank while we read: it ends here
                break;
            }
        }
        if whole {
            hole(&mut read, meta.size());
        }
        Ok(read)
    }

    /// Chunks `input` into the pipeline: (references, bytes, when the first
    /// known chunk comes due).
    /// A read error is `BackupError::Source`; a pipeline error is fatal.
    fn read_chunks(
        &mut self,
        input: impl Read,
        size_hint: Option<u64>,
    ) -> Result<(Vec<Ref>, u64, i64), BackupError> {
        let pipe = self.pipe;
        let mut refs = Vec::new();
        let mut total = 0u64;
        let mut due = i64::MAX;
        let mut fatal = None;
        let read = self.chunker.chunk(input, size_hint, |data| {
            total += data.len() as u64;
            pipe.shared.progress.add_bytes(data.len() as u64);
            let id = pipe.shared.key.blob_id(&data);
            match pipe.store_chunk(id, data) {
                Ok((r, chunk_due)) => {
                    refs.push(r);
                    due = due.min(chunk_due);
                    Ok(())
                }
                Err(e) => {
                    fatal = Some(e);
                    Err(std::io::Error::other("the backup pipeline failed"))
                }
            }
        });
        if let Some(e) = fatal {
            return Err(e);
        }
        read.map_err(|source| BackupError::Source {
            path: PathBuf::new(),
            source,
        })?;
        Ok((refs, total, due))
    }

    fn entry_from(&mut self, name: Vec<u8>, kind: Kind, meta: &Metadata) -> Entry {
        let mut e = self.entry(
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

    fn entry(
        &mut self,
        name: Vec<u8>,
        kind: Kind,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime_ns: i64,
    ) -> Entry {
        Entry {
            uid,
            gid,
            user: self.owners.user(uid),
            group: self.owners.group(gid),
            mtime_ns,
            ..Entry::new(name, kind, mode)
        }
    }

    /// Runs `walk` over source `path`; with `one_file_system`, the walk
    /// stays on the device `path` is on.
    fn in_source<T>(&mut self, path: &Path, walk: impl FnOnce(&mut Self) -> T) -> T {
        let dev = self
            .opts
            .one_file_system
            .then(|| std::fs::symlink_metadata(path).ok().map(|m| m.dev()))
            .flatten();
        let outer = std::mem::replace(&mut self.source_dev, dev);
        let walked = walk(self);
        self.source_dev = outer;
        walked
    }

    /// Reads `path`'s extended attributes into `entry`, unless the run
    /// leaves them out; attributes that cannot be read are a warning (the
    /// entry is stored without them).
    fn read_xattrs(&mut self, path: &Path, entry: &mut Entry) {
        if !self.opts.xattrs {
            return;
        }
        match crate::xattrs::read(path) {
            Ok(xattrs) => entry.xattrs = self.storable_xattrs(path, xattrs),
            Err(e) => self.warn(path, "cannot read extended attributes", &e),
        }
    }

    /// `xattrs` without those readers would refuse (each left out with a
    /// warning, so the run ends with exit 3): a tree holding one would be
    /// refused whole, and with it the entry's neighbours.
    fn storable_xattrs(&mut self, path: &Path, xattrs: Vec<Xattr>) -> Vec<Xattr> {
        let (kept, refused) = crate::xattrs::storable(xattrs);
        for why in refused {
            self.warn(
                path,
                "extended attribute left out",
                &std::io::Error::other(why),
            );
        }
        kept
    }

    fn warn(&mut self, path: &Path, what: &str, e: &std::io::Error) {
        self.stats.errors += 1;
        self.warnings
            .push(format!("{}: {what}: {e}", path.display()));
    }
}

/// The directory of the root that holds the bucket sources.
pub(crate) const BUCKETS_DIR: &str = "s3";

/// An object's ETag (unquoted) and headers as `user.s3.*` attributes,
/// sorted by name.
fn object_xattrs(etag: &str, headers: &ObjectHeaders) -> Vec<Xattr> {
    let mut xattrs: Vec<Xattr> = std::iter::once(("etag", etag.trim_matches('"')))
        .chain(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .map(|(name, value)| Xattr {
            name: format!("user.s3.{name}").into_bytes(),
            value: value.as_bytes().to_vec(),
        })
        .collect();
    xattrs.sort_by(|a, b| a.name.cmp(&b.name));
    xattrs.dedup_by(|a, b| a.name == b.name);
    xattrs
}

fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

fn same_file(rec: &FileRecord, meta: &Metadata) -> bool {
    rec.size == meta.size()
        && rec.mtime_ns == mtime_ns(meta)
        && rec.ctime_ns == meta.ctime() * 1_000_000_000 + meta.ctime_nsec()
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

    #[test]
    fn excludes_match_names_or_paths() {
        let ex = Excludes::new(&["*.tmp".into(), "/srv/*/cache".into()]).unwrap();
        assert!(ex.excluded(Path::new("/a/b.tmp")));
        assert!(ex.excluded(Path::new("/srv/app/cache")));
        assert!(!ex.excluded(Path::new("/srv/app/x/cache")));
        assert!(!ex.excluded(Path::new("/a/b.txt")));
    }
}
