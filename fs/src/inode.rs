//! The inode table: what every inode number stands for.
//!
//! Snapshot contents never change, so an entry's inode is made once, when its
//! directory is first loaded, and kept for the life of the mount: numbers are
//! stable whatever the kernel forgets. Virtual directories (the snapshot list)
//! are rebuilt on refresh; their children keep their numbers through a
//! (parent, name) map. Nodes are created as directories are looked at, so
//! memory grows with what is browsed, not with the repository; a node holds
//! only what `stat` and `read` need (about 200 bytes for a small file).

use coffer_core::format::tree::{Entry, Kind, Location, Xattr};
use std::collections::HashMap;
use std::sync::Arc;

/// The root inode.
pub(crate) const ROOT: u64 = 1;

/// What the mount needs of a tree entry: no name (the parent holds it), no
/// user or group names.
pub(crate) struct EntryMeta {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub rdev: u64,
    pub target: Option<Box<[u8]>>,
    pub chunks: Box<[Location]>,
    /// Where each chunk starts in the file (holes lie between some).
    pub chunk_starts: Box<[u64]>,
    /// Where each chunk ends in the file, for binary search.
    pub chunk_ends: Box<[u64]>,
    /// Bytes of data (holes left out), for `st_blocks`.
    pub data_bytes: u64,
    /// Its link count (`st_nlink`): the source's, for a hard-linked file.
    pub nlink: u32,
    pub subtree: Option<Location>,
    /// Extended attributes, sorted by name (`getxattr`, `listxattr`).
    pub xattrs: Box<[Xattr]>,
}

impl EntryMeta {
    pub fn new(e: Entry) -> Self {
        let chunk_starts: Box<[u64]> = e.chunk_starts().collect();
        let chunk_ends = chunk_starts
            .iter()
            .zip(e.chunks.iter())
            .map(|(start, c)| start.saturating_add(c.raw_length))
            .collect();
        let data_bytes = match e.kind {
            Kind::File => e.data_bytes(),
            _ => e.size,
        };
        let nlink = match (e.kind, e.link) {
            (Kind::Dir, _) => 2,
            (_, Some(link)) => u32::try_from(link.nlink).unwrap_or(u32::MAX),
            _ => 1,
        };
        Self {
            kind: e.kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
            size: e.size,
            rdev: e.rdev.unwrap_or(0),
            target: e.target.map(Vec::into_boxed_slice),
            chunks: e.chunks.into_boxed_slice(),
            chunk_starts,
            chunk_ends,
            data_bytes,
            nlink,
            subtree: e.subtree,
            xattrs: e.xattrs.into_boxed_slice(),
        }
    }
}

/// What a node is.
#[derive(Clone)]
pub(crate) enum NodeKind {
    /// The mount's root: `snapshots`, `hosts`, `tags`, `ids`.
    Root,
    /// `snapshots/`.
    Snapshots,
    /// `hosts/`.
    Hosts,
    /// `tags/`.
    Tags,
    /// `ids/`.
    Ids,
    /// `hosts/<host>/`.
    Host(String),
    /// `tags/<tag>/`.
    Tag(String),
    /// `snapshots/latest`, a symlink to the newest snapshot's name.
    Latest,
    /// A snapshot's root directory.
    SnapshotRoot { tree: Location, mtime_ns: i64 },
    /// An entry inside a snapshot.
    Entry(Arc<EntryMeta>),
}

impl NodeKind {
    pub fn is_dir(&self) -> bool {
        match self {
            NodeKind::Latest => false,
            NodeKind::Entry(e) => e.kind == Kind::Dir,
            _ => true,
        }
    }

    /// Whether the node's children depend on the snapshot list.
    pub fn is_virtual_dir(&self) -> bool {
        matches!(
            self,
            NodeKind::Root
                | NodeKind::Snapshots
                | NodeKind::Hosts
                | NodeKind::Tags
                | NodeKind::Ids
                | NodeKind::Host(_)
                | NodeKind::Tag(_)
        )
    }
}

/// A directory's children: name and inode number, sorted by name.
pub(crate) type Children = Box<[(Box<[u8]>, u64)]>;

/// One inode.
pub(crate) struct Node {
    pub parent: u64,
    pub kind: NodeKind,
    /// A directory's children, sorted by name, once loaded.
    pub children: Option<Children>,
}

/// Inode numbers and their nodes.
pub(crate) struct InodeTable {
    nodes: HashMap<u64, Node>,
    /// Numbers of the children of virtual directories, which are rebuilt.
    virtual_numbers: HashMap<(u64, Vec<u8>), u64>,
    /// The snapshot-list generation each virtual directory was built from.
    virtual_built: HashMap<u64, u64>,
    next: u64,
    /// Estimated heap bytes of the snapshot entries loaded (see
    /// [`entry_bytes`]): counted against the mount's cache size.
    bytes: u64,
    /// Hard-linked files met so far: (snapshot root inode, device, inode)
    /// to the one inode number all their names share.
    links: HashMap<(u64, u64, u64), u64>,
}

/// About what one loaded entry costs in memory: its node in the map (with
/// the map's spare room), its metadata, its chunk list and its name in the
/// parent's list. On the bench's two snapshots (154k entries) this says
/// 83 MiB; the mount's RSS grew 130 MiB listing them, which includes the
/// trees' decoded JSON held in the blob cache (counted there).
fn entry_bytes(e: &Entry) -> u64 {
    let node = std::mem::size_of::<(u64, Node)>() * 8 / 7;
    let meta = std::mem::size_of::<EntryMeta>() + 2 * std::mem::size_of::<usize>();
    let chunks = e.chunks.len() * (std::mem::size_of::<Location>() + 8);
    let name = std::mem::size_of::<(Box<[u8]>, u64)>() + e.name.len();
    let target = e.target.as_ref().map_or(0, Vec::len);
    let xattrs: usize = e
        .xattrs
        .iter()
        .map(|x| std::mem::size_of::<Xattr>() + x.name.len() + x.value.len() + 2 * 16)
        .sum();
    // Allocator headers and rounding: ~16 bytes for each of up to 5 blocks.
    (node + meta + chunks + name + target + xattrs + 5 * 16) as u64
}

impl InodeTable {
    pub fn new() -> Self {
        let mut t = Self {
            nodes: HashMap::new(),
            virtual_numbers: HashMap::new(),
            virtual_built: HashMap::new(),
            next: ROOT + 1,
            bytes: 0,
            links: HashMap::new(),
        };
        t.nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                kind: NodeKind::Root,
                children: None,
            },
        );
        t
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    fn fresh(&mut self) -> u64 {
        let ino = self.next;
        self.next += 1;
        ino
    }

    /// The inode of `name` in the virtual directory `parent`, made or updated
    /// to be `kind`; the same name always gets the same number.
    pub fn virtual_child(&mut self, parent: u64, name: &[u8], kind: NodeKind) -> u64 {
        let key = (parent, name.to_vec());
        let ino = match self.virtual_numbers.get(&key) {
            Some(&ino) => ino,
            None => {
                let ino = self.fresh();
                self.virtual_numbers.insert(key, ino);
                ino
            }
        };
        match self.nodes.get_mut(&ino) {
            // A snapshot root keeps its loaded children: trees never change.
            Some(node) if matches!(node.kind, NodeKind::SnapshotRoot { .. }) => {}
            Some(node) => node.kind = kind,
            None => {
                self.nodes.insert(
                    ino,
                    Node {
                        parent,
                        kind,
                        children: None,
                    },
                );
            }
        }
        ino
    }

    /// Whether the virtual directory `ino` was built from snapshot-list
    /// `generation`.
    pub fn virtual_current(&self, ino: u64, generation: u64) -> bool {
        self.virtual_built.get(&ino) == Some(&generation)
    }

    /// Records the children of virtual directory `ino`, built from
    /// snapshot-list `generation`.
    pub fn set_virtual_children(
        &mut self,
        ino: u64,
        children: Vec<(Box<[u8]>, u64)>,
        generation: u64,
    ) {
        self.set_children(ino, children);
        self.virtual_built.insert(ino, generation);
    }

    fn set_children(&mut self, ino: u64, children: Vec<(Box<[u8]>, u64)>) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.children = Some(children.into_boxed_slice());
        }
    }

    /// The snapshot root directory `ino` lies in (`ino` itself for one).
    fn snapshot_of(&self, mut ino: u64) -> u64 {
        while let Some(node) = self.nodes.get(&ino) {
            if matches!(node.kind, NodeKind::SnapshotRoot { .. }) || node.parent == ino {
                break;
            }
            ino = node.parent;
        }
        ino
    }

    /// Loads the entries of a snapshot directory `ino` as its children, once:
    /// if another request loaded them first, theirs (and their numbers) stay.
    /// The children get consecutive numbers in name order (the mount's
    /// read-ahead across files relies on it), but for the later names of a
    /// hard-linked file, which share the number its first name got.
    pub fn load_entries(&mut self, ino: u64, entries: Vec<Entry>) {
        if self.get(ino).is_none_or(|n| n.children.is_some()) {
            return;
        }
        let snapshot = self.snapshot_of(ino);
        let mut children = Vec::with_capacity(entries.len());
        for e in entries {
            let link = e
                .link
                .filter(|_| e.kind != Kind::Dir)
                .map(|l| (snapshot, l.dev, l.ino));
            if let Some(&same) = link.as_ref().and_then(|key| self.links.get(key)) {
                children.push((e.name.into_boxed_slice(), same));
                continue;
            }
            self.bytes += entry_bytes(&e);
            let child = self.fresh();
            if let Some(key) = link {
                self.links.insert(key, child);
            }
            let name = e.name.clone().into_boxed_slice();
            self.nodes.insert(
                child,
                Node {
                    parent: ino,
                    kind: NodeKind::Entry(Arc::new(EntryMeta::new(e))),
                    children: None,
                },
            );
            children.push((name, child));
        }
        self.set_children(ino, children);
    }

    /// The number of nodes, for logging.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Estimated memory of the loaded snapshot entries, in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8]) -> Entry {
        Entry {
            name: name.to_vec(),
            kind: Kind::Fifo,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime_ns: 0,
            size: 0,
            target: None,
            rdev: None,
            chunks: vec![],
            subtree: None,
            xattrs: Vec::new(),
            link: None,
            holes: Vec::new(),
        }
    }

    #[test]
    fn numbers_are_stable_per_parent_and_name() {
        let mut t = InodeTable::new();
        let a = t.virtual_child(ROOT, b"snapshots", NodeKind::Snapshots);
        let b = t.virtual_child(ROOT, b"hosts", NodeKind::Hosts);
        assert_ne!(a, b);
        assert_eq!(t.virtual_child(ROOT, b"snapshots", NodeKind::Snapshots), a);
        let x = t.virtual_child(a, b"x", NodeKind::Latest);
        let y = t.virtual_child(b, b"x", NodeKind::Latest);
        assert_ne!(x, y, "same name under another parent is another inode");
        assert_eq!(t.get(x).map(|n| n.parent), Some(a));
    }

    #[test]
    fn entries_load_once_and_keep_their_numbers() {
        let mut t = InodeTable::new();
        let dir = t.virtual_child(ROOT, b"d", NodeKind::Snapshots);
        let numbers = |t: &InodeTable| -> Vec<u64> {
            let children = t.get(dir).and_then(|n| n.children.as_ref());
            children.unwrap().iter().map(|c| c.1).collect()
        };
        t.load_entries(dir, vec![entry(b"a"), entry(b"b")]);
        let first = numbers(&t);
        assert_eq!(first[1], first[0] + 1, "consecutive, in name order");
        t.load_entries(dir, vec![entry(b"a"), entry(b"b")]);
        let second = numbers(&t);
        assert_eq!(first, second);
        assert_eq!(t.len(), 4);
    }
}
