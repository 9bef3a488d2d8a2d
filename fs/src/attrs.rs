//! Attributes: what `stat` shows of an entry of a snapshot (its stored
//! metadata) or of a virtual directory (made from the snapshot list), and
//! how long the kernel may keep them; and the extended attributes stored
//! with an entry (ACLs and capabilities among them), for `getxattr` and
//! `listxattr`.

use crate::inode::{EntryMeta, NodeKind};
use crate::mounted::Mounted;
use coffer_core::format::tree::Kind;
use fuser::{Errno, FileAttr, FileType, INodeNo};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Snapshot contents never change: the kernel may cache them for long.
const CONTENT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The snapshot list changes: cache the virtual directories briefly.
const VIRTUAL_TTL: Duration = Duration::from_secs(1);

impl Mounted {
    /// The attributes of `ino`, which is `kind`.
    /// Lock order: `snapshots` before `table`, never the other way round.
    pub(crate) fn attr(&self, kind: &NodeKind, ino: u64) -> (FileAttr, Duration) {
        attr_of(kind, ino, &self.virtual_times())
    }
}

/// The value of extended attribute `name` of a node that is `kind`: ENODATA
/// when it has none of that name (virtual nodes have none).
pub(crate) fn xattr(kind: &NodeKind, name: &[u8]) -> Result<Vec<u8>, Errno> {
    match kind {
        NodeKind::Entry(e) => e
            .xattrs
            .binary_search_by(|x| x.name.as_slice().cmp(name))
            .map(|i| e.xattrs[i].value.clone())
            .map_err(|_| Errno::NO_XATTR),
        _ => Err(Errno::NO_XATTR),
    }
}

/// The names of a node's extended attributes, each ended by a NUL, as
/// `listxattr(2)` gives them.
pub(crate) fn xattr_names(kind: &NodeKind) -> Vec<u8> {
    let mut out = Vec::new();
    if let NodeKind::Entry(e) = kind {
        for x in e.xattrs.iter() {
            out.extend_from_slice(&x.name);
            out.push(0);
        }
    }
    out
}

impl Mounted {
    /// What virtual nodes' attributes show of the snapshot list.
    pub(crate) fn virtual_times(&self) -> VirtualTimes {
        let snaps = self.snapshots();
        let (uid, gid) = self.owner();
        VirtualTimes {
            newest_ns: snaps
                .list
                .last()
                .and_then(|s| s.snapshot.time())
                .map_or(0, |t| t.unix_timestamp_nanos() as i64),
            changed_ns: snaps.changed_ns,
            latest_len: snaps.layout.latest().unwrap_or("").len() as u64,
            uid,
            gid,
        }
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
    /// Bytes allocated (`st_blocks` * 512): a sparse file's data only.
    allocated: u64,
    nlink: u32,
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
            allocated: e.data_bytes,
            nlink: e.nlink,
            rdev: e.rdev as u32,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let t = system_time(self.mtime_ns);
        FileAttr {
            ino: INodeNo(ino),
            size: self.size,
            blocks: self.allocated.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: self.kind,
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: 1 << 20,
            flags: 0,
        }
    }
}

/// What the attributes of virtual nodes (the snapshot list) are made of.
pub(crate) struct VirtualTimes {
    newest_ns: i64,
    changed_ns: i64,
    latest_len: u64,
    uid: u32,
    gid: u32,
}

/// The attributes of `ino`, which is `kind`, and how long the kernel may
/// keep them.
pub(crate) fn attr_of(
    kind: &NodeKind,
    ino: u64,
    virtual_times: &VirtualTimes,
) -> (FileAttr, Duration) {
    let dir = |mtime_ns: i64| Meta {
        kind: FileType::Directory,
        perm: 0o555,
        uid: virtual_times.uid,
        gid: virtual_times.gid,
        mtime_ns,
        size: 0,
        allocated: 0,
        nlink: 2,
        rdev: 0,
    };
    let (meta, ttl) = match kind {
        NodeKind::Entry(e) => (Meta::of(e), CONTENT_TTL),
        NodeKind::Latest => {
            let mut m = dir(virtual_times.newest_ns);
            m.kind = FileType::Symlink;
            m.perm = 0o777;
            m.size = virtual_times.latest_len;
            m.allocated = m.size;
            m.nlink = 1;
            (m, VIRTUAL_TTL)
        }
        NodeKind::Link(target) => {
            let mut m = dir(virtual_times.changed_ns);
            m.kind = FileType::Symlink;
            m.perm = 0o777;
            m.size = target.len() as u64;
            m.allocated = m.size;
            m.nlink = 1;
            (m, VIRTUAL_TTL)
        }
        NodeKind::SnapshotRoot { mtime_ns, .. } => (dir(*mtime_ns), CONTENT_TTL),
        _ => (dir(virtual_times.changed_ns), VIRTUAL_TTL),
    };
    (meta.attr(ino), ttl)
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

pub(crate) fn file_type(kind: Kind) -> FileType {
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
