//! `impl fuser::Filesystem`: a thin adapter. Each callback converts the
//! request, answers from the inode table when it can, and otherwise hands
//! the work to tokio and replies from there, so no storage access ever
//! blocks a FUSE session thread. What it calls lives in [`crate::dirs`],
//! [`crate::read`] and [`crate::attrs`], on [`Mounted`].

use crate::attrs::{xattr, xattr_names};
use crate::inode::{Dir, Found, NodeKind};
use crate::mounted::Mounted;
use crate::read::regular_file;
use crate::MountOptions;
use coffer_core::format::snapshot::SnapshotInfo;
use coffer_core::format::tree::Kind;
use coffer_core::repository::Repository;
use fuser::{
    Errno, FileHandle, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyXattr, Request,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// The filesystem; cheap to share with tokio tasks through `inner`.
pub(crate) struct CofferFs {
    inner: Arc<Mounted>,
    rt: tokio::runtime::Handle,
}

impl CofferFs {
    pub fn new(
        repo: Arc<Repository>,
        snapshots: Vec<SnapshotInfo>,
        rt: tokio::runtime::Handle,
        opts: &MountOptions,
    ) -> Self {
        let inner = Arc::new(Mounted::new(repo, snapshots, opts));
        {
            let _runtime = rt.enter();
            inner.prefetch_newest_roots();
        }
        Self { inner, rt }
    }

    /// Runs `answer` with directory `ino` and its children: on the FUSE
    /// thread that got the request if they are loaded, else on tokio after
    /// loading them (errors go to `reply`). Serves `lookup`, `readdir` and
    /// `readdirplus`.
    fn when_loaded<R: ErrorReply>(
        &self,
        ino: u64,
        reply: R,
        answer: impl FnOnce(&Mounted, &Dir, R) + Send + 'static,
    ) {
        if let Some(dir) = self.inner.loaded_dir(ino) {
            return answer(&self.inner, &dir, reply);
        }
        let inner = self.inner.clone();
        self.spawn(async move { load_then_answer(&inner, ino, reply, answer).await });
    }

    /// [`CofferFs::when_loaded`] for `readdir` and `readdirplus`: listing
    /// `snapshots/` from the start first re-reads the snapshot list (if it
    /// is older than the refresh interval), so new backups show up.
    fn listing<R: ErrorReply>(
        &self,
        ino: u64,
        offset: u64,
        reply: R,
        answer: impl FnOnce(&Mounted, &Dir, R) + Send + 'static,
    ) {
        let is_snapshots = offset == 0
            && matches!(
                self.inner.table().find(ino),
                Found::Node(NodeKind::Snapshots)
            );
        if !is_snapshots {
            return self.when_loaded(ino, reply, answer);
        }
        let inner = self.inner.clone();
        self.spawn(async move {
            inner.refresh_snapshots().await;
            load_then_answer(&inner, ino, reply, answer).await;
        });
    }

    /// Runs `answer` with what `ino` is: on the FUSE thread if the table
    /// has it, else on tokio after loading the listing it lies in again
    /// (the table dropped it). Serves the requests about one inode.
    fn with_node<R: ErrorReply>(
        &self,
        ino: u64,
        reply: R,
        answer: impl FnOnce(&Arc<Mounted>, NodeKind, R) + Send + 'static,
    ) {
        let found = self.inner.table().find(ino);
        match found {
            Found::Node(kind) => return answer(&self.inner, kind, reply),
            Found::Unknown => return reply.fail(Errno::ENOENT),
            Found::Unloaded(_) => {}
        }
        let inner = self.inner.clone();
        self.spawn(async move {
            match inner.kind_of(ino).await {
                Ok(kind) => answer(&inner, kind, reply),
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

/// Loads directory `ino` with its children, then runs `answer` (errors go
/// to `reply`).
async fn load_then_answer<R: ErrorReply>(
    inner: &Mounted,
    ino: u64,
    reply: R,
    answer: impl FnOnce(&Mounted, &Dir, R),
) {
    match inner.load_dir(ino).await {
        Ok(dir) => answer(inner, &dir, reply),
        Err(e) => reply.fail(e),
    }
}

/// The replies that [`CofferFs::when_loaded`] and [`CofferFs::with_node`]
/// answer with an error if loading fails.
trait ErrorReply: Send + 'static {
    fn fail(self, e: Errno);
}

macro_rules! error_reply {
    ($($reply:ty),*) => {
        $(impl ErrorReply for $reply {
            fn fail(self, e: Errno) {
                self.error(e)
            }
        })*
    };
}

error_reply!(
    ReplyEntry,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyAttr,
    ReplyData,
    ReplyOpen,
    ReplyXattr
);

/// The `getxattr`/`listxattr` protocol: a `size` of 0 asks for the length,
/// a buffer too small gets ERANGE.
fn reply_xattr(reply: ReplyXattr, data: &[u8], size: u32) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
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
            // Attributes the kernel re-reads are compared with what it
            // cached (a virtual directory's mtime, for its listing).
            InitFlags::FUSE_AUTO_INVAL_DATA,
        ] {
            let _ = config.add_capabilities(flag);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        let table = self.inner.table();
        tracing::info!(
            inodes = table.len(),
            listings = table.listings(),
            table_mib = table.bytes() >> 20,
            "unmounted"
        );
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.as_bytes().to_vec();
        self.when_loaded(parent.0, reply, move |inner, dir, reply| {
            match inner.lookup_in(dir, &name) {
                Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    // A virtual directory's attributes come from the snapshot list: re-read
    // it first when it is old. The kernel asks for them (their TTL is short)
    // before it lists such a directory from its own cache, and lists it
    // again only if the mtime moved, which it does when the list changes.
    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let rt = self.rt.clone();
        self.with_node(ino.0, reply, move |inner, kind, reply| {
            if !kind.is_virtual_dir() || !inner.snapshots_stale() {
                let (attr, ttl) = inner.attr(&kind, ino.0);
                return reply.attr(&ttl, &attr);
            }
            let refreshing = inner.clone();
            rt.spawn(async move {
                refreshing.refresh_snapshots().await;
                let (attr, ttl) = refreshing.attr(&kind, ino.0);
                reply.attr(&ttl, &attr);
            });
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.with_node(ino.0, reply, |inner, kind, reply| match kind {
            NodeKind::Latest => {
                let snaps = inner.snapshots();
                reply.data(snaps.layout.latest().unwrap_or("").as_bytes());
            }
            NodeKind::Link(target) => reply.data(&target),
            NodeKind::Entry(e) if e.kind == Kind::Symlink => {
                reply.data(e.target.as_deref().unwrap_or_default());
            }
            _ => reply.error(Errno::EINVAL),
        });
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
        self.with_node(ino.0, reply, |_, _, reply| reply.error(Errno::ENOSYS));
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
        let rt = self.rt.clone();
        self.with_node(ino.0, reply, move |inner, kind, reply| {
            let entry = match regular_file(&kind) {
                Ok(entry) => entry,
                Err(e) => return reply.error(e),
            };
            {
                let _runtime = rt.enter(); // for the read-ahead it starts
                if let Some(data) = inner.read_cached(ino.0, &entry, offset, size) {
                    return reply.data(&data);
                }
            }
            let inner = inner.clone();
            rt.spawn(async move {
                match inner.read(ino.0, &entry, offset, size).await {
                    Ok(data) => reply.data(&data),
                    Err(e) => reply.error(e),
                }
            });
        });
    }

    // Directories need no handle either: ENOSYS to OPENDIR tells the kernel
    // (5.1 and later) to open directories without asking from then on, to
    // send no RELEASEDIR, and to keep what it listed (FOPEN_CACHE_DIR and
    // KEEP_CACHE): two round trips fewer per directory for `ls -lR` and
    // `find`, and a second walk lists from the kernel's cache. Snapshot
    // directories never change; a virtual one is listed again when its
    // mtime moves (`getattr`, FUSE_AUTO_INVAL_DATA).
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.listing(ino.0, offset, reply, move |inner, dir, reply| {
            inner.readdir_in(dir, ino.0, offset, reply)
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
        self.listing(ino.0, offset, reply, move |inner, dir, reply| {
            inner.readdirplus_in(dir, ino.0, offset, reply)
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

    // Extended attributes as stored (ACLs and capabilities among them), so
    // getfacl, getcap and `cp -a`/`rsync -X` out of the mount carry them.
    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.as_bytes().to_vec();
        self.with_node(ino.0, reply, move |_, kind, reply| {
            match xattr(&kind, &name) {
                Ok(value) => reply_xattr(reply, &value, size),
                Err(e) => reply.error(e),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.with_node(ino.0, reply, move |_, kind, reply| {
            reply_xattr(reply, &xattr_names(&kind), size)
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, self.inner.table().len(), 0, 4096, 255, 4096);
    }
}
