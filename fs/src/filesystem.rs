//! `impl fuser::Filesystem`: converts requests, answers from the inode table
//! when it can, and otherwise hands the work to tokio and replies from there,
//! so no storage access ever blocks the FUSE session thread.

use crate::inode::EntryMeta;
use crate::inode::{InodeTable, NodeKind};
use crate::MountOptions;
use coffer_core::cache::BlobCache;
use coffer_core::repository::Repository;
use coffer_core::snapshot::SnapshotInfo;
use coffer_core::sync::lock;
use coffer_core::tree::{Kind, Location, Tree};
use coffer_core::vfs::Layout;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Snapshot contents never change: the kernel may cache them for long.
const CONTENT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The snapshot list changes: cache the virtual directories briefly.
const VIRTUAL_TTL: Duration = Duration::from_secs(1);
/// Chunks fetched ahead of a sequential reader.
const READ_AHEAD_CHUNKS: usize = 4;
/// Memory the mount uses besides what it keeps (fetches and decodes in
/// flight, FUSE request buffers, allocator slack), counted against the cache
/// size so the mount's peak stays near `--cache-size`. Measured (bench:
/// `ls -lR` of two snapshots, a 400 MB read, `diff -r`, 512 MiB cache):
/// peak 671 MiB counting nothing, 583 MiB counting the listings (83 MiB).
const WORKING_BYTES: u64 = 32 << 20;
/// Subdirectory trees fetched ahead when a directory is loaded.
const SUBTREE_PREFETCH: usize = 64;
/// When a file's first bytes are read, the first chunks of up to this many
/// files after it in its directory are fetched ahead...
const NEXT_FILES_PREFETCH: u64 = 16;
/// ...up to this many bytes of them.
const NEXT_FILES_PREFETCH_BYTES: u64 = 8 << 20;

/// The filesystem; cheap to share with tokio tasks through `inner`.
pub(crate) struct CofferFs {
    inner: Arc<Inner>,
    rt: tokio::runtime::Handle,
}

struct Inner {
    cache: Arc<BlobCache>,
    table: Mutex<InodeTable>,
    snapshots: Mutex<SnapshotList>,
    refresh_every: Duration,
    /// Owner of the virtual directories: whoever mounted.
    uid: u32,
    gid: u32,
    /// Damage already logged, so each object is named once.
    logged: Mutex<HashSet<String>>,
}

struct SnapshotList {
    list: Vec<SnapshotInfo>,
    layout: Layout,
    loaded: Instant,
    /// Bumped on every re-read; virtual directories built from an older
    /// generation are rebuilt on their next lookup.
    generation: u64,
}

impl CofferFs {
    pub fn new(
        repo: Arc<Repository>,
        snapshots: Vec<SnapshotInfo>,
        rt: tokio::runtime::Handle,
        opts: &MountOptions,
    ) -> Self {
        let layout = Layout::new(&snapshots);
        let cache = Arc::new(BlobCache::new(repo, opts.cache_bytes));
        cache.set_reserved(WORKING_BYTES);
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Self {
            inner: Arc::new(Inner {
                cache,
                table: Mutex::new(InodeTable::new()),
                snapshots: Mutex::new(SnapshotList {
                    list: snapshots,
                    layout,
                    loaded: Instant::now(),
                    generation: 1,
                }),
                refresh_every: opts.refresh_every,
                uid,
                gid,
                logged: Mutex::new(HashSet::new()),
            }),
            rt,
        }
    }

    /// Runs `answer` once directory `ino`'s children are in the table: on
    /// the FUSE thread if they are, else on tokio after loading them
    /// (errors go to `reply`). Serves `lookup`, `readdir` and `readdirplus`.
    fn when_loaded<R: ErrorReply>(
        &self,
        ino: u64,
        reply: R,
        answer: impl FnOnce(&Inner, R) + Send + 'static,
    ) {
        if self.inner.loaded(ino) {
            return answer(&self.inner, reply);
        }
        let inner = self.inner.clone();
        self.spawn(async move {
            match inner.load_children(ino).await {
                Ok(()) => answer(&inner, reply),
                Err(e) => reply.fail(e),
            }
        });
    }

    fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(f);
    }
}

impl Inner {
    /// Logs a storage or damage error once per object (the error names it),
    /// and maps it to EIO.
    fn eio(&self, what: &str, e: &coffer_core::Error) -> Errno {
        if lock(&self.logged).insert(e.to_string()) {
            tracing::error!("{what}: {e}");
        }
        Errno::EIO
    }

    /// Re-reads the snapshot list if it is older than the refresh interval.
    async fn refresh_snapshots(&self) {
        if lock(&self.snapshots).loaded.elapsed() < self.refresh_every {
            return;
        }
        match self.cache.repo().snapshots().await {
            Ok(list) => {
                let layout = Layout::new(&list);
                let mut snaps = lock(&self.snapshots);
                *snaps = SnapshotList {
                    list,
                    layout,
                    loaded: Instant::now(),
                    generation: snaps.generation + 1,
                };
            }
            Err(e) => {
                self.eio("re-reading the snapshot list", &e);
            }
        }
    }

    /// Makes sure `ino`'s children are in the table, fetching its tree if
    /// needed. Virtual directories are rebuilt from the snapshot list.
    async fn load_children(&self, ino: u64) -> Result<(), Errno> {
        let kind = {
            let table = lock(&self.table);
            let node = table.get(ino).ok_or(Errno::ENOENT)?;
            if !node.kind.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            if node.children.is_some() && !node.kind.is_virtual_dir() {
                return Ok(());
            }
            node.kind.clone()
        };
        if kind.is_virtual_dir() {
            self.virtual_children(ino, &kind);
            return Ok(());
        }
        let loc = match &kind {
            NodeKind::SnapshotRoot { tree, .. } => *tree,
            NodeKind::Entry(e) => e.subtree.ok_or(Errno::EIO)?,
            _ => return Err(Errno::ENOTDIR),
        };
        let tree = self.tree(&loc).await?;
        self.prefetch_subtrees(&tree);
        let table_bytes = {
            let mut table = lock(&self.table);
            table.load_entries(ino, tree.entries);
            table.bytes()
        };
        // The directory listing counts against the cache size: the mount
        // stays within --cache-size however much is browsed.
        self.cache.set_reserved(table_bytes + WORKING_BYTES);
        Ok(())
    }

    /// Starts fetching the trees of a directory's subdirectories, so a walk
    /// (`ls -lR`, `find`, `diff -r`) finds them cached: read-ahead for trees.
    fn prefetch_subtrees(&self, tree: &Tree) {
        let subtrees = tree.entries.iter().filter_map(|e| e.subtree.as_ref());
        self.cache.prefetch(subtrees.take(SUBTREE_PREFETCH));
    }

    /// Whether `ino`'s children are loaded and final (answerable without I/O).
    fn loaded(&self, ino: u64) -> bool {
        lock(&self.table)
            .get(ino)
            .is_some_and(|n| n.children.is_some() && !n.kind.is_virtual_dir())
    }

    /// `name` in `parent`, whose children must be loaded.
    fn lookup_loaded(&self, parent: u64, name: &[u8]) -> Result<(FileAttr, Duration), Errno> {
        let ino = {
            let table = lock(&self.table);
            let children = table
                .get(parent)
                .and_then(|n| n.children.as_ref())
                .ok_or(Errno::ENOENT)?;
            match children.binary_search_by(|(n, _)| n[..].cmp(name)) {
                Ok(i) => children[i].1,
                Err(_) => return Err(Errno::ENOENT),
            }
        };
        self.attr(ino)
    }

    /// Fills `reply` with `ino`'s entries from `offset`; children must be loaded.
    fn readdir_loaded(&self, ino: u64, offset: u64, mut reply: ReplyDirectory) {
        let table = lock(&self.table);
        let listed = each_entry(&table, ino, offset, |child, next, name| {
            let kind = match table.get(child).map(|n| &n.kind) {
                Some(NodeKind::Entry(e)) => file_type(e.kind),
                Some(NodeKind::Latest) => FileType::Symlink,
                _ => FileType::Directory,
            };
            reply.add(INodeNo(child), next, kind, OsStr::from_bytes(name))
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// [`Inner::readdir_loaded`] with each entry's attributes, so that the
    /// `stat` of every entry that `ls -l`, `find` or `diff -r` does next is
    /// answered by the kernel without a lookup round trip each.
    fn readdirplus_loaded(&self, ino: u64, offset: u64, mut reply: ReplyDirectoryPlus) {
        let virtual_times = self.virtual_times();
        let table = lock(&self.table);
        let listed = each_entry(&table, ino, offset, |child, next, name| {
            let Ok((attr, ttl)) = attr_in(&table, &virtual_times, child) else {
                return false;
            };
            let name = OsStr::from_bytes(name);
            reply.add(INodeNo(child), next, name, &ttl, &attr, Generation(0))
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    async fn tree(&self, loc: &Location) -> Result<Tree, Errno> {
        let what = format!("tree {}", loc.id);
        let json = self.cache.get(loc).await.map_err(|e| self.eio(&what, &e))?;
        Tree::from_json(&json, &what).map_err(|e| self.eio(&what, &e))
    }

    /// The children of a directory made from the snapshot list, rebuilt
    /// only when the list has changed since they were last built.
    fn virtual_children(&self, ino: u64, kind: &NodeKind) {
        let snaps = lock(&self.snapshots);
        let layout = &snaps.layout;
        let mut table = lock(&self.table);
        if table.virtual_current(ino, snaps.generation) {
            return;
        }
        let mut out = Vec::new();
        let mut add = |name: &str, kind: NodeKind| {
            let child = table.virtual_child(ino, name.as_bytes(), kind);
            out.push((name.as_bytes().into(), child));
        };
        let snapshot_root = |i: usize| {
            let s = &snaps.list[i].snapshot;
            NodeKind::SnapshotRoot {
                tree: s.tree,
                mtime_ns: s.time().map_or(0, |t| t.unix_timestamp_nanos() as i64),
            }
        };
        match kind {
            NodeKind::Root => {
                add("hosts", NodeKind::Hosts);
                add("ids", NodeKind::Ids);
                add("snapshots", NodeKind::Snapshots);
                add("tags", NodeKind::Tags);
            }
            NodeKind::Snapshots => {
                for (name, i) in &layout.by_time {
                    add(name, snapshot_root(*i));
                }
                if layout.latest().is_some() {
                    add("latest", NodeKind::Latest);
                }
            }
            NodeKind::Hosts => {
                for host in layout.by_host.keys() {
                    add(host, NodeKind::Host(host.clone()));
                }
            }
            NodeKind::Tags => {
                for tag in layout.by_tag.keys() {
                    add(tag, NodeKind::Tag(tag.clone()));
                }
            }
            NodeKind::Ids => {
                for (name, i) in &layout.by_id {
                    add(name, snapshot_root(*i));
                }
            }
            NodeKind::Host(h) => {
                for (name, i) in layout.by_host.get(h).into_iter().flatten() {
                    add(name, snapshot_root(*i));
                }
            }
            NodeKind::Tag(t) => {
                for (name, i) in layout.by_tag.get(t).into_iter().flatten() {
                    add(name, snapshot_root(*i));
                }
            }
            _ => {}
        }
        out.sort();
        table.set_virtual_children(ino, out, snaps.generation);
    }

    /// Lock order: `snapshots` before `table`, never the other way round.
    fn attr(&self, ino: u64) -> Result<(FileAttr, Duration), Errno> {
        let virtual_times = self.virtual_times();
        attr_in(&lock(&self.table), &virtual_times, ino)
    }

    /// What virtual nodes' attributes show of the snapshot list.
    fn virtual_times(&self) -> VirtualTimes {
        let snaps = lock(&self.snapshots);
        VirtualTimes {
            newest_ns: snaps
                .list
                .last()
                .and_then(|s| s.snapshot.time())
                .map_or(0, |t| t.unix_timestamp_nanos() as i64),
            latest_len: snaps.layout.latest().unwrap_or("").len() as u64,
            uid: self.uid,
            gid: self.gid,
        }
    }

    /// The regular file `ino`.
    fn file(&self, ino: u64) -> Result<Arc<EntryMeta>, Errno> {
        let table = lock(&self.table);
        match &table.get(ino).ok_or(Errno::ENOENT)?.kind {
            NodeKind::Entry(e) if e.kind == Kind::File => Ok(e.clone()),
            _ => Err(Errno::EISDIR),
        }
    }

    /// [`Inner::read`] when every chunk it needs is cached: answered on the
    /// FUSE thread, without handing the request to tokio and back (two
    /// thread wake-ups per read). `None` if a chunk must be fetched.
    fn read_cached(&self, ino: u64, entry: &EntryMeta, offset: u64, size: u32) -> Option<Vec<u8>> {
        let pieces = pieces(&entry.chunk_ends, offset, size);
        let mut out = Vec::with_capacity(pieces.iter().map(|(_, r)| r.len()).sum());
        for (i, range) in pieces {
            let data = self.cache.cached(&entry.chunks[i].id)?;
            out.extend_from_slice(data.get(range)?);
        }
        self.read_ahead(ino, entry, offset, size);
        Some(out)
    }

    /// `size` bytes of file `ino` (`entry`) from `offset`, fetched as needed.
    async fn read(
        &self,
        ino: u64,
        entry: &EntryMeta,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let pieces = pieces(&entry.chunk_ends, offset, size);
        let mut out = Vec::with_capacity(pieces.iter().map(|(_, r)| r.len()).sum());
        for (i, range) in pieces {
            let what = || format!("reading inode {ino}");
            let data = self
                .cache
                .get(&entry.chunks[i])
                .await
                .map_err(|e| self.eio(&what(), &e))?;
            let bytes = data.get(range).ok_or_else(|| {
                let e =
                    coffer_core::Error::damaged(what(), "a chunk is shorter than its entry says");
                self.eio(&what(), &e)
            })?;
            out.extend_from_slice(bytes);
        }
        self.read_ahead(ino, entry, offset, size);
        Ok(out)
    }

    /// After a read: fetch the file's next chunks and, at its start, the
    /// next files' first chunks. Needs to run inside the tokio runtime.
    fn read_ahead(&self, ino: u64, entry: &EntryMeta, offset: u64, size: u32) {
        let read_end = offset.saturating_add(u64::from(size));
        let next = entry.chunk_ends.partition_point(|&e| e <= read_end);
        self.cache
            .prefetch(entry.chunks.iter().skip(next).take(READ_AHEAD_CHUNKS));
        if offset == 0 {
            self.prefetch_next_files(ino);
        }
    }

    /// Read-ahead across files: `cp -r`, `diff -r`, `tar` and `rsync` read a
    /// directory's files one after the other in name order, and a small
    /// file is one fetch each, so without this every file waits for the
    /// disk or the network in turn. A directory's entries get consecutive
    /// inode numbers in name order (see `InodeTable::load_entries`), so the
    /// files after `ino` are `ino + 1`, `ino + 2`... while the parent is
    /// the same.
    fn prefetch_next_files(&self, ino: u64) {
        let mut firsts = Vec::new();
        {
            let table = lock(&self.table);
            let Some(parent) = table.get(ino).map(|n| n.parent) else {
                return;
            };
            let mut bytes = 0;
            for next in ino + 1..=ino + NEXT_FILES_PREFETCH {
                let Some(node) = table.get(next).filter(|n| n.parent == parent) else {
                    break;
                };
                let NodeKind::Entry(e) = &node.kind else {
                    continue;
                };
                let Some(first) = e.chunks.first().filter(|_| e.kind == Kind::File) else {
                    continue;
                };
                bytes += first.raw_length;
                if bytes > NEXT_FILES_PREFETCH_BYTES {
                    break;
                }
                firsts.push(*first);
            }
        }
        self.cache.prefetch(firsts.iter());
    }
}

/// Which bytes of which chunks make `size` bytes from `offset` of a file
/// whose chunks end at `ends` (cumulative): (chunk index, range in it).
fn pieces(ends: &[u64], offset: u64, size: u32) -> Vec<(usize, std::ops::Range<usize>)> {
    let end = ends
        .last()
        .copied()
        .unwrap_or(0)
        .min(offset.saturating_add(u64::from(size)));
    let mut out = Vec::new();
    if offset >= end {
        return out;
    }
    let mut i = ends.partition_point(|&e| e <= offset);
    while i < ends.len() {
        let start = if i == 0 { 0 } else { ends[i - 1] };
        if start >= end {
            break;
        }
        let from = offset.max(start) - start;
        let to = end.min(ends[i]) - start;
        out.push((i, from as usize..to as usize));
        i += 1;
    }
    out
}

/// The replies of `lookup`, `readdir` and `readdirplus`, which
/// [`CofferFs::when_loaded`] answers with an error if loading fails.
trait ErrorReply: Send + 'static {
    fn fail(self, e: Errno);
}

impl ErrorReply for ReplyEntry {
    fn fail(self, e: Errno) {
        self.error(e)
    }
}

impl ErrorReply for ReplyDirectory {
    fn fail(self, e: Errno) {
        self.error(e)
    }
}

impl ErrorReply for ReplyDirectoryPlus {
    fn fail(self, e: Errno) {
        self.error(e)
    }
}

/// The attributes a node shows.
struct Meta {
    kind: FileType,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    size: u64,
    rdev: u32,
}

impl Meta {
    fn of(e: &EntryMeta) -> Self {
        Self {
            kind: file_type(e.kind),
            perm: (e.mode & 0o7777) as u16,
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
            size: e.size,
            rdev: e.rdev as u32,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let t = system_time(self.mtime_ns);
        FileAttr {
            ino: INodeNo(ino),
            size: self.size,
            blocks: self.size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: self.kind,
            perm: self.perm,
            nlink: if self.kind == FileType::Directory {
                2
            } else {
                1
            },
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: 1 << 20,
            flags: 0,
        }
    }
}

/// Calls `add(child, next offset, name)` for directory `ino`'s entries from
/// `offset` on, `.` and `..` first, until it returns true (the reply is
/// full). The children must be loaded.
fn each_entry(
    table: &InodeTable,
    ino: u64,
    offset: u64,
    mut add: impl FnMut(u64, u64, &[u8]) -> bool,
) -> Result<(), Errno> {
    let node = table.get(ino).ok_or(Errno::ENOENT)?;
    let children = node.children.as_deref().unwrap_or_default();
    let dots = [(ino, &b"."[..]), (node.parent, &b".."[..])];
    let entries = dots
        .into_iter()
        .chain(children.iter().map(|(n, c)| (*c, &n[..])));
    for (i, (child, name)) in entries.enumerate().skip(offset as usize) {
        if add(child, i as u64 + 1, name) {
            break;
        }
    }
    Ok(())
}

/// What the attributes of virtual nodes (the snapshot list) are made of.
struct VirtualTimes {
    newest_ns: i64,
    latest_len: u64,
    uid: u32,
    gid: u32,
}

/// `ino`'s attributes and how long the kernel may keep them.
fn attr_in(
    table: &InodeTable,
    virtual_times: &VirtualTimes,
    ino: u64,
) -> Result<(FileAttr, Duration), Errno> {
    let node = table.get(ino).ok_or(Errno::ENOENT)?;
    let dir = |mtime_ns: i64| Meta {
        kind: FileType::Directory,
        perm: 0o555,
        uid: virtual_times.uid,
        gid: virtual_times.gid,
        mtime_ns,
        size: 0,
        rdev: 0,
    };
    let (meta, ttl) = match &node.kind {
        NodeKind::Entry(e) => (Meta::of(e), CONTENT_TTL),
        NodeKind::Latest => {
            let mut m = dir(virtual_times.newest_ns);
            m.kind = FileType::Symlink;
            m.perm = 0o777;
            m.size = virtual_times.latest_len;
            (m, VIRTUAL_TTL)
        }
        NodeKind::SnapshotRoot { mtime_ns, .. } => (dir(*mtime_ns), CONTENT_TTL),
        _ => (dir(virtual_times.newest_ns), VIRTUAL_TTL),
    };
    Ok((meta.attr(ino), ttl))
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Char => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
        Kind::Socket => FileType::Socket,
    }
}

impl fuser::Filesystem for CofferFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(1 << 20);
        for flag in [
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_DO_READDIRPLUS,
        ] {
            let _ = config.add_capabilities(flag);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        let table = lock(&self.inner.table);
        tracing::info!(
            inodes = table.len(),
            listing_mib = table.bytes() >> 20,
            "unmounted"
        );
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.as_bytes().to_vec();
        self.when_loaded(parent.0, reply, move |inner, reply| {
            match inner.lookup_loaded(parent.0, &name) {
                Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inner.attr(ino.0) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let kind = lock(&self.inner.table).get(ino.0).map(|n| n.kind.clone());
        match kind {
            Some(NodeKind::Latest) => {
                let snaps = lock(&self.inner.snapshots);
                reply.data(snaps.layout.latest().unwrap_or("").as_bytes());
            }
            Some(NodeKind::Entry(e)) if e.kind == Kind::Symlink => {
                reply.data(e.target.as_deref().unwrap_or_default());
            }
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    // Files need no handle: ENOSYS to a read-only open tells the kernel
    // (3.14 and later) to open files without asking from then on, with
    // FOPEN_KEEP_CACHE, and to send no RELEASE on close. That saves two
    // round trips per file for `cp -r`, `diff -r` and the like. Writes never
    // get here on a read-only mount; refuse them anyway.
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.inner.attr(ino.0) {
            Ok(_) => reply.error(Errno::ENOSYS),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let entry = match self.inner.file(ino.0) {
            Ok(entry) => entry,
            Err(e) => return reply.error(e),
        };
        {
            let _runtime = self.rt.enter(); // for the read-ahead it starts
            if let Some(data) = self.inner.read_cached(ino.0, &entry, offset, size) {
                return reply.data(&data);
            }
        }
        let inner = self.inner.clone();
        self.spawn(async move {
            match inner.read(ino.0, &entry, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let is_snapshots = matches!(
            lock(&self.inner.table).get(ino.0).map(|n| &n.kind),
            Some(NodeKind::Snapshots)
        );
        if !is_snapshots {
            return reply.opened(FileHandle(0), FopenFlags::empty());
        }
        let inner = self.inner.clone();
        self.spawn(async move {
            inner.refresh_snapshots().await;
            reply.opened(FileHandle(0), FopenFlags::empty());
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.when_loaded(ino.0, reply, move |inner, reply| {
            inner.readdir_loaded(ino.0, offset, reply)
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.when_loaded(ino.0, reply, move |inner, reply| {
            inner.readdirplus_loaded(ino.0, offset, reply)
        });
    }

    // Nothing to flush: ENOSYS tells the kernel not to send FLUSH again,
    // which saves a round trip on every close.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    // Extended attributes are not stored yet. ENOSYS tells the kernel once and
    // for all (it then answers EOPNOTSUPP itself, without asking again), which
    // saves `ls -l` and `cp -a` two round trips per file.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(
            0,
            0,
            0,
            lock(&self.inner.table).len() as u64,
            0,
            4096,
            255,
            4096,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn pieces_cover_exactly_the_bytes_asked_for() {
        // Chunks of 10, 5 and 20 bytes.
        let ends = [10, 15, 35];
        assert_eq!(pieces(&ends, 0, 4), vec![(0, 0..4)]);
        assert_eq!(pieces(&ends, 8, 10), vec![(0, 8..10), (1, 0..5), (2, 0..3)]);
        assert_eq!(pieces(&ends, 10, 5), vec![(1, 0..5)]);
        assert_eq!(pieces(&ends, 30, 100), vec![(2, 15..20)]);
        assert!(pieces(&ends, 35, 10).is_empty(), "at the end");
        assert!(pieces(&ends, 99, 10).is_empty(), "past the end");
        assert!(pieces(&[], 0, 10).is_empty(), "empty file");
        assert!(pieces(&ends, 3, 0).is_empty(), "nothing asked");
    }
}
