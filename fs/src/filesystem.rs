//! `impl fuser::Filesystem`: converts requests, answers from the inode table
//! when it can, and otherwise hands the work to tokio and replies from there,
//! so no storage access ever blocks the FUSE session thread.

use crate::inode::{InodeTable, NodeKind, ROOT};
use crate::MountOptions;
use coffer_core::cache::BlobCache;
use coffer_core::repository::Repository;
use coffer_core::snapshot::SnapshotInfo;
use coffer_core::tree::{Entry, Kind, Location, Tree};
use coffer_core::vfs::Layout;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Snapshot contents never change: the kernel may cache them for long.
const CONTENT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The snapshot list changes: cache the virtual directories briefly.
const VIRTUAL_TTL: Duration = Duration::from_secs(1);
/// Chunks fetched ahead of a sequential reader.
const READ_AHEAD_CHUNKS: usize = 4;

/// The filesystem; cheap to share with tokio tasks through `inner`.
pub(crate) struct CofferFs {
    inner: Arc<Inner>,
    rt: tokio::runtime::Handle,
}

struct Inner {
    cache: BlobCache,
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CofferFs {
    pub fn new(
        repo: Arc<Repository>,
        snapshots: Vec<SnapshotInfo>,
        rt: tokio::runtime::Handle,
        opts: &MountOptions,
    ) -> Self {
        let layout = Layout::new(&snapshots);
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Self {
            inner: Arc::new(Inner {
                cache: BlobCache::new(repo, opts.cache_bytes),
                table: Mutex::new(InodeTable::new()),
                snapshots: Mutex::new(SnapshotList {
                    list: snapshots,
                    layout,
                    loaded: Instant::now(),
                }),
                refresh_every: opts.refresh_every,
                uid,
                gid,
                logged: Mutex::new(HashSet::new()),
            }),
            rt,
        }
    }

    fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(f);
    }
}

impl Inner {
    /// Logs a storage or damage error once per message, and maps it to EIO.
    fn eio(&self, what: &str, e: &coffer_core::Error) -> Errno {
        let msg = format!("{what}: {e}");
        if lock(&self.logged).insert(msg.clone()) {
            tracing::error!("{msg}");
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
                *lock(&self.snapshots) = SnapshotList {
                    list,
                    layout,
                    loaded: Instant::now(),
                };
            }
            Err(e) => {
                self.eio("re-reading the snapshot list", &e);
            }
        }
    }

    /// Makes sure `ino`'s children are in the table (fetching its tree if
    /// needed) and returns them.
    async fn children(&self, ino: u64) -> Result<Vec<(Vec<u8>, u64)>, Errno> {
        let kind = {
            let table = lock(&self.table);
            let node = table.get(ino).ok_or(Errno::ENOENT)?;
            if !node.kind.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            if let Some(children) = &node.children {
                if !node.kind.is_virtual_dir() {
                    return Ok(children.clone());
                }
            }
            node.kind.clone()
        };
        if kind.is_virtual_dir() {
            return Ok(self.virtual_children(ino, &kind));
        }
        let loc = match &kind {
            NodeKind::SnapshotRoot { tree, .. } => *tree,
            NodeKind::Entry(e) => e.subtree.ok_or(Errno::EIO)?,
            _ => return Err(Errno::ENOTDIR),
        };
        let tree = self.tree(&loc).await?;
        let mut table = lock(&self.table);
        let children: Vec<(Vec<u8>, u64)> = tree
            .entries
            .into_iter()
            .map(|e| {
                let name = e.name.clone();
                let child = table.child(ino, &name, NodeKind::Entry(Arc::new(e)));
                (name, child)
            })
            .collect();
        table.set_children(ino, children.clone());
        Ok(children)
    }

    async fn tree(&self, loc: &Location) -> Result<Tree, Errno> {
        let what = format!("tree {}", loc.id);
        let json = self.cache.get(loc).await.map_err(|e| self.eio(&what, &e))?;
        Tree::from_json(&json, &what).map_err(|e| self.eio(&what, &e))
    }

    /// The children of a directory made from the snapshot list.
    fn virtual_children(&self, ino: u64, kind: &NodeKind) -> Vec<(Vec<u8>, u64)> {
        let snaps = lock(&self.snapshots);
        let layout = &snaps.layout;
        let mut table = lock(&self.table);
        let mut out = Vec::new();
        let mut add = |name: &str, kind: NodeKind| {
            let child = table.child(ino, name.as_bytes(), kind);
            out.push((name.as_bytes().to_vec(), child));
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
        table.set_children(ino, out.clone());
        out
    }

    fn attr(&self, ino: u64) -> Result<(FileAttr, Duration), Errno> {
        let table = lock(&self.table);
        let node = table.get(ino).ok_or(Errno::ENOENT)?;
        let newest = lock(&self.snapshots)
            .list
            .last()
            .and_then(|s| s.snapshot.time())
            .map_or(0, |t| t.unix_timestamp_nanos() as i64);
        let dir = |mtime_ns: i64| Meta {
            kind: FileType::Directory,
            perm: 0o555,
            uid: self.uid,
            gid: self.gid,
            mtime_ns,
            size: 0,
            rdev: 0,
        };
        let (meta, ttl) = match &node.kind {
            NodeKind::Latest => {
                let target = lock(&self.snapshots).layout.latest().unwrap_or("").len();
                let mut m = dir(newest);
                m.kind = FileType::Symlink;
                m.perm = 0o777;
                m.size = target as u64;
                (m, VIRTUAL_TTL)
            }
            NodeKind::SnapshotRoot { mtime_ns, .. } => (dir(*mtime_ns), CONTENT_TTL),
            NodeKind::Entry(e) => (Meta::of(e), CONTENT_TTL),
            _ => (dir(newest), VIRTUAL_TTL),
        };
        Ok((meta.attr(ino), ttl))
    }

    async fn lookup(&self, parent: u64, name: &[u8]) -> Result<(FileAttr, Duration), Errno> {
        let children = self.children(parent).await?;
        let ino = match children.binary_search_by(|(n, _)| n.as_slice().cmp(name)) {
            Ok(i) => children[i].1,
            Err(_) => return Err(Errno::ENOENT),
        };
        self.attr(ino)
    }

    async fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let (entry, ends) = {
            let table = lock(&self.table);
            let node = table.get(ino).ok_or(Errno::ENOENT)?;
            match &node.kind {
                NodeKind::Entry(e) if e.kind == Kind::File => (e.clone(), node.chunk_ends.clone()),
                _ => return Err(Errno::EISDIR),
            }
        };
        let file_size = ends.last().copied().unwrap_or(0);
        let end = file_size.min(offset.saturating_add(u64::from(size)));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut i = ends.partition_point(|&e| e <= offset);
        let mut pos = offset;
        while pos < end && i < entry.chunks.len() {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            let what = format!("file {:?}", entry.display_name());
            let data = self
                .cache
                .get(&entry.chunks[i])
                .await
                .map_err(|e| self.eio(&what, &e))?;
            let from = (pos - start) as usize;
            let to = ((end - start) as usize).min(data.len());
            out.extend_from_slice(&data[from..to]);
            pos = start + to as u64;
            i += 1;
        }
        Ok(out)
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
    fn of(e: &Entry) -> Self {
        Self {
            kind: file_type(e.kind),
            perm: (e.mode & 0o7777) as u16,
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
            size: e.size,
            rdev: e.rdev.unwrap_or(0) as u32,
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
        ] {
            let _ = config.add_capabilities(flag);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let inner = self.inner.clone();
        let name = name.as_bytes().to_vec();
        self.spawn(async move {
            match inner.lookup(parent.0, &name).await {
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
        let table = lock(&self.inner.table);
        match table.get(ino.0).map(|n| &n.kind) {
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

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.inner.attr(ino.0) {
            Ok((attr, _)) if attr.kind == FileType::RegularFile => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Ok(_) => reply.error(Errno::EISDIR),
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
        let inner = self.inner.clone();
        self.spawn(async move {
            match inner.read(ino.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            }
            read_ahead(&inner, ino.0, offset + u64::from(size));
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
        mut reply: ReplyDirectory,
    ) {
        let inner = self.inner.clone();
        self.spawn(async move {
            let children = match inner.children(ino.0).await {
                Ok(c) => c,
                Err(e) => return reply.error(e),
            };
            let parent = lock(&inner.table).get(ino.0).map_or(ROOT, |n| n.parent);
            let mut all: Vec<(u64, FileType, &[u8])> = vec![
                (ino.0, FileType::Directory, b"."),
                (parent, FileType::Directory, b".."),
            ];
            let table = lock(&inner.table);
            for (name, child) in &children {
                let kind = match table.get(*child).map(|n| &n.kind) {
                    Some(NodeKind::Entry(e)) => file_type(e.kind),
                    Some(NodeKind::Latest) => FileType::Symlink,
                    _ => FileType::Directory,
                };
                all.push((*child, kind, name));
            }
            for (i, (child, kind, name)) in all.iter().enumerate().skip(offset as usize) {
                if reply.add(
                    INodeNo(*child),
                    i as u64 + 1,
                    *kind,
                    OsStr::from_bytes(name),
                ) {
                    break;
                }
            }
            drop(table);
            reply.ok();
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    // Extended attributes are not stored yet: every file has none.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
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

/// Fetches the chunks after `next_offset` into the cache in the background.
fn read_ahead(inner: &Arc<Inner>, ino: u64, next_offset: u64) {
    let (chunks, first) = {
        let table = lock(&inner.table);
        let Some(node) = table.get(ino) else { return };
        let NodeKind::Entry(e) = &node.kind else {
            return;
        };
        let first = node.chunk_ends.partition_point(|&e| e <= next_offset);
        (e.clone(), first)
    };
    for loc in chunks.chunks.iter().skip(first).take(READ_AHEAD_CHUNKS) {
        if inner.cache.contains(&loc.id) {
            continue;
        }
        let (inner, loc) = (inner.clone(), *loc);
        tokio::spawn(async move {
            let _ = inner.cache.get(&loc).await;
        });
    }
}
