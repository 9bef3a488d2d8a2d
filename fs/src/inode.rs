//! The inode table: what every inode number stands for.
//!
//! Numbers are stable for the life of the mount, whatever is dropped: the
//! first time a snapshot directory is loaded it gets a block of consecutive
//! numbers, one per entry in name order, and a small record (its tree's
//! location, its snapshot, its block: ~200 bytes) that is kept. Its *listing*
//! (every entry's metadata, the part that grows with what is browsed) is
//! kept in a least-recently-used set within a byte budget and dropped when
//! the budget is full; whoever needs it again (a `stat` of a number the
//! kernel still holds, a lookup in the directory) loads it again from the
//! tree, and the block gives every entry the number it had. So the mount's
//! memory stays within its budget however much is browsed, and the kernel's
//! references never pin memory: any number can be resolved again from its
//! directory's record, so `forget` needs no answer. Virtual directories (the
//! snapshot list) are small and kept; they are rebuilt on refresh and their
//! children keep their numbers through a (parent, name) map.

use coffer_core::format::tree::{Entry, Kind, Location, Xattr};
use lru::LruCache;
use std::collections::{BTreeMap, HashMap};
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
    /// `hosts/<host>/latest` and `tags/<tag>/latest`: a symlink to the
    /// newest sibling, its target fixed when the directory was built (it
    /// is built again when the snapshot list changes).
    Link(Arc<[u8]>),
    /// A snapshot's root directory.
    SnapshotRoot { tree: Location, mtime_ns: i64 },
    /// An entry inside a snapshot.
    Entry(Arc<EntryMeta>),
}

impl NodeKind {
    pub fn is_dir(&self) -> bool {
        match self {
            NodeKind::Latest | NodeKind::Link(_) => false,
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

/// A loaded directory's entries in name order, with what each is. Shared:
/// whoever answers from it keeps it, even if the table drops it meanwhile.
pub(crate) struct Listing {
    pub children: Children,
    /// What each child is, by position.
    pub kinds: Box<[NodeKind]>,
    /// Estimated heap bytes (see [`entry_bytes`]).
    bytes: u64,
}

/// A loaded directory: its parent (for `..`) and its entries.
#[derive(Clone)]
pub(crate) struct Dir {
    pub parent: u64,
    pub listing: Arc<Listing>,
}

impl Dir {
    /// Child `name`: its number and what it is.
    pub fn child(&self, name: &[u8]) -> Option<(u64, &NodeKind)> {
        let children = &self.listing.children;
        let i = children.binary_search_by(|(n, _)| n[..].cmp(name)).ok()?;
        Some((children[i].1, self.listing.kinds.get(i)?))
    }
}

/// A node made from the snapshot list (never dropped; a snapshot root's
/// entries are a listing like any directory's).
struct VirtualNode {
    parent: u64,
    kind: NodeKind,
    children: Option<Arc<Listing>>,
}

/// A snapshot directory loaded at least once: what loading it again takes,
/// and the numbers its entries have. Kept for the life of the mount.
struct DirRecord {
    tree: Location,
    /// The snapshot root it lies in (hard links are per snapshot).
    snapshot: u64,
    /// Its entries are `base..base + len`, in name order (but for the later
    /// names of a hard-linked file, which have the first name's number).
    base: u64,
    len: u64,
}

/// What the table knows of an inode number without loading anything.
pub(crate) enum Found {
    /// What it is.
    Node(NodeKind),
    /// An entry of directory `dir`, whose listing was dropped: load it.
    Unloaded(u64),
    /// No such number.
    Unknown,
}

/// Bytes a directory record costs, with its share of the maps.
const DIR_RECORD_BYTES: u64 = 256;
/// Bytes a hard-linked file's entry in the links map costs.
const LINK_BYTES: u64 = 64;

/// Inode numbers and their nodes.
pub(crate) struct InodeTable {
    virtual_nodes: HashMap<u64, VirtualNode>,
    /// Numbers of the children of virtual directories, which are rebuilt.
    virtual_numbers: HashMap<(u64, Vec<u8>), u64>,
    /// The snapshot-list generation each virtual directory was built from.
    virtual_built: HashMap<u64, u64>,
    /// Every snapshot directory loaded so far, by number.
    dirs: HashMap<u64, DirRecord>,
    /// Each record's block, by its first number.
    blocks: BTreeMap<u64, u64>,
    /// The snapshot directories' listings kept, least recently used first out.
    listings: LruCache<u64, Arc<Listing>>,
    listing_bytes: u64,
    /// What the listings may take before the least recently used go.
    budget: u64,
    next: u64,
    /// Hard-linked files met so far: (snapshot root inode, device, inode)
    /// to the one inode number all their names share.
    links: HashMap<(u64, u64, u64), u64>,
}

/// About what one loaded entry costs in memory: its metadata, its chunk
/// list and its name in the directory's list. On the bench's two snapshots
/// (154k entries) this said 83 MiB; the mount's RSS grew 130 MiB listing
/// them, which includes the trees' decoded JSON held in the blob cache
/// (counted there).
fn entry_bytes(e: &Entry) -> u64 {
    let meta = std::mem::size_of::<EntryMeta>() + 4 * std::mem::size_of::<usize>();
    let chunks = e.chunks.len() * (std::mem::size_of::<Location>() + 16);
    let name = std::mem::size_of::<(Box<[u8]>, u64)>() + e.name.len();
    let target = e.target.as_ref().map_or(0, Vec::len);
    let xattrs: usize = e
        .xattrs
        .iter()
        .map(|x| std::mem::size_of::<Xattr>() + x.name.len() + x.value.len() + 2 * 16)
        .sum();
    // Allocator headers and rounding: ~16 bytes for each of up to 6 blocks.
    (meta + chunks + name + target + xattrs + 6 * 16) as u64
}

impl InodeTable {
    /// An empty table whose listings may take `budget` bytes.
    pub fn new(budget: u64) -> Self {
        let mut t = Self {
            virtual_nodes: HashMap::new(),
            virtual_numbers: HashMap::new(),
            virtual_built: HashMap::new(),
            dirs: HashMap::new(),
            blocks: BTreeMap::new(),
            listings: LruCache::unbounded(),
            listing_bytes: 0,
            budget,
            next: ROOT + 1,
            links: HashMap::new(),
        };
        t.virtual_nodes.insert(
            ROOT,
            VirtualNode {
                parent: ROOT,
                kind: NodeKind::Root,
                children: None,
            },
        );
        t
    }

    /// What `ino` is, without loading anything.
    pub fn find(&self, ino: u64) -> Found {
        if let Some(node) = self.virtual_nodes.get(&ino) {
            return Found::Node(node.kind.clone());
        }
        let Some((dir, index)) = self.place(ino) else {
            return Found::Unknown;
        };
        match self.listings.peek(&dir) {
            None => Found::Unloaded(dir),
            Some(listing) => match listing.kinds.get(index) {
                Some(kind) => Found::Node(kind.clone()),
                None => Found::Unknown,
            },
        }
    }

    /// The directory whose block holds `ino`, and its position there.
    fn place(&self, ino: u64) -> Option<(u64, usize)> {
        let (&base, &dir) = self.blocks.range(..=ino).next_back()?;
        let record = self.dirs.get(&dir)?;
        (ino < base + record.len).then(|| (dir, (ino - base) as usize))
    }

    /// What `ino` is in `listing`, the listing of the directory whose block
    /// holds it (as just loaded: the table may have dropped it since).
    pub fn kind_in(&self, ino: u64, listing: &Listing) -> Option<NodeKind> {
        let (_, index) = self.place(ino)?;
        listing.kinds.get(index).cloned()
    }

    /// The snapshot directory whose entry `ino` is, and its position there
    /// (name order); `None` for a snapshot root or a virtual node.
    pub fn position(&self, ino: u64) -> Option<(u64, usize)> {
        self.place(ino)
    }

    /// The parent of `ino`, if the table knows it without loading: a
    /// virtual node's, or the directory whose block holds an entry.
    pub fn parent(&self, ino: u64) -> Option<u64> {
        match self.virtual_nodes.get(&ino) {
            Some(node) => Some(node.parent),
            None => self.place(ino).map(|(dir, _)| dir),
        }
    }

    /// Snapshot directory `ino` as loaded, if it is; marks it used.
    pub fn dir(&mut self, ino: u64) -> Option<Dir> {
        let listing = self.listings.get(&ino)?.clone();
        let parent = self.parent(ino)?;
        Some(Dir { parent, listing })
    }

    /// Virtual directory `ino` as last built.
    pub fn virtual_dir(&self, ino: u64) -> Option<Dir> {
        let node = self.virtual_nodes.get(&ino)?;
        Some(Dir {
            parent: node.parent,
            listing: node.children.clone()?,
        })
    }

    /// Where the tree of snapshot directory `ino` is, if it was loaded once
    /// (what loading its listing again needs).
    pub fn dir_tree(&self, ino: u64) -> Option<Location> {
        self.dirs.get(&ino).map(|r| r.tree)
    }

    fn fresh(&mut self, count: u64) -> u64 {
        let ino = self.next;
        self.next += count;
        ino
    }

    /// The inode of `name` in the virtual directory `parent`, made or updated
    /// to be `kind`; the same name always gets the same number.
    pub fn virtual_child(&mut self, parent: u64, name: &[u8], kind: NodeKind) -> u64 {
        let key = (parent, name.to_vec());
        let ino = match self.virtual_numbers.get(&key) {
            Some(&ino) => ino,
            None => {
                let ino = self.fresh(1);
                self.virtual_numbers.insert(key, ino);
                ino
            }
        };
        match self.virtual_nodes.get_mut(&ino) {
            Some(node) => node.kind = kind,
            None => {
                self.virtual_nodes.insert(
                    ino,
                    VirtualNode {
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

    /// Records the children of virtual directory `ino` (made with
    /// [`InodeTable::virtual_child`]), built from snapshot-list `generation`.
    pub fn set_virtual_children(
        &mut self,
        ino: u64,
        children: Vec<(Box<[u8]>, u64)>,
        generation: u64,
    ) {
        let kinds = children
            .iter()
            .map(|(_, child)| match self.virtual_nodes.get(child) {
                Some(node) => node.kind.clone(),
                None => NodeKind::Root, // not reached: made by virtual_child
            })
            .collect();
        let listing = Arc::new(Listing {
            children: children.into_boxed_slice(),
            kinds,
            bytes: 0,
        });
        if let Some(node) = self.virtual_nodes.get_mut(&ino) {
            node.children = Some(listing);
        }
        self.virtual_built.insert(ino, generation);
    }

    /// Loads the entries of snapshot directory `ino` (a snapshot root, or a
    /// directory entry), whose tree is at `tree`, as its listing, unless
    /// another request loaded it first; returns the directory. The first
    /// time, its entries get a block of consecutive numbers in name order
    /// (the mount's read-ahead across files relies on it), but for the
    /// later names of a hard-linked file, which share the number its first
    /// name got; every later time, the same numbers. Then listings are
    /// dropped, least recently used first, until they fit the budget again.
    pub fn load_entries(&mut self, ino: u64, tree: Location, entries: Vec<Entry>) -> Option<Dir> {
        if let Some(dir) = self.dir(ino) {
            return Some(dir);
        }
        let (parent, snapshot) = self.parent_and_snapshot(ino)?;
        let base = match self.dirs.get(&ino) {
            Some(record) if record.len == entries.len() as u64 => record.base,
            Some(_) => return None, // a tree never changes: not this directory's
            None => {
                let len = entries.len() as u64;
                let base = self.fresh(len);
                if len > 0 {
                    self.blocks.insert(base, ino);
                }
                let record = DirRecord {
                    tree,
                    snapshot,
                    base,
                    len,
                };
                self.dirs.insert(ino, record);
                base
            }
        };
        let mut children = Vec::with_capacity(entries.len());
        let mut kinds = Vec::with_capacity(entries.len());
        let mut bytes = 0;
        for (i, e) in entries.into_iter().enumerate() {
            let own = base + i as u64;
            let link = e
                .link
                .filter(|_| e.kind != Kind::Dir)
                .map(|l| (snapshot, l.dev, l.ino));
            let number = match link {
                Some(key) => *self.links.entry(key).or_insert(own),
                None => own,
            };
            bytes += entry_bytes(&e);
            children.push((e.name.clone().into_boxed_slice(), number));
            kinds.push(NodeKind::Entry(Arc::new(EntryMeta::new(e))));
        }
        self.listing_bytes += bytes;
        let listing = Arc::new(Listing {
            children: children.into_boxed_slice(),
            kinds: kinds.into_boxed_slice(),
            bytes,
        });
        self.listings.put(ino, listing.clone());
        self.drop_listings_over_budget();
        Some(Dir { parent, listing })
    }

    /// The parent and snapshot root of a snapshot directory: a snapshot
    /// root's are its virtual parent and itself; an entry's parent is the
    /// directory whose block holds it.
    fn parent_and_snapshot(&self, ino: u64) -> Option<(u64, u64)> {
        if let Some(node) = self.virtual_nodes.get(&ino) {
            return Some((node.parent, ino));
        }
        let (dir, _) = self.place(ino)?;
        Some((dir, self.dirs.get(&dir)?.snapshot))
    }

    /// Drops the least recently used listings (never the last one) while
    /// they take more than the budget.
    fn drop_listings_over_budget(&mut self) {
        while self.listing_bytes > self.budget && self.listings.len() > 1 {
            match self.listings.pop_lru() {
                Some((_, dropped)) => self.listing_bytes -= dropped.bytes,
                None => break,
            }
        }
    }

    /// Inode numbers handed out so far, for `statfs`.
    pub fn len(&self) -> u64 {
        self.next - 1
    }

    /// Listings kept now, for logging.
    pub fn listings(&self) -> usize {
        self.listings.len()
    }

    /// Estimated memory of the table: the listings kept and every record.
    pub fn bytes(&self) -> u64 {
        self.listing_bytes
            + DIR_RECORD_BYTES * self.dirs.len() as u64
            + LINK_BYTES * self.links.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8]) -> Entry {
        Entry::new(name.to_vec(), Kind::Fifo, 0o644)
    }

    fn dir_entry(name: &[u8]) -> Entry {
        Entry {
            kind: Kind::Dir,
            subtree: Some(loc(name[0])),
            ..entry(name)
        }
    }

    fn linked(name: &[u8], ino: u64) -> Entry {
        Entry {
            kind: Kind::File,
            link: Some(coffer_core::format::tree::HardLink {
                dev: 1,
                ino,
                nlink: 2,
            }),
            ..entry(name)
        }
    }

    fn loc(n: u8) -> Location {
        Location {
            id: coffer_core::format::id::BlobId([n; 32]),
            pack: coffer_core::format::id::PackId([n; 32]),
            offset: 0,
            length: 1,
            raw_length: 1,
        }
    }

    fn snapshot_root(t: &mut InodeTable, name: &[u8]) -> u64 {
        let snapshots = t.virtual_child(ROOT, b"snapshots", NodeKind::Snapshots);
        let kind = NodeKind::SnapshotRoot {
            tree: loc(0),
            mtime_ns: 0,
        };
        t.virtual_child(snapshots, name, kind)
    }

    fn numbers(dir: &Dir) -> Vec<u64> {
        dir.listing.children.iter().map(|c| c.1).collect()
    }

    #[test]
    fn numbers_are_stable_per_parent_and_name() {
        let mut t = InodeTable::new(1 << 20);
        let a = t.virtual_child(ROOT, b"snapshots", NodeKind::Snapshots);
        let b = t.virtual_child(ROOT, b"hosts", NodeKind::Hosts);
        assert_ne!(a, b);
        assert_eq!(t.virtual_child(ROOT, b"snapshots", NodeKind::Snapshots), a);
        let x = t.virtual_child(a, b"x", NodeKind::Latest);
        let y = t.virtual_child(b, b"x", NodeKind::Latest);
        assert_ne!(x, y, "same name under another parent is another inode");
        assert_eq!(t.parent(x), Some(a));
    }

    #[test]
    fn entries_load_once_and_keep_their_numbers() {
        let mut t = InodeTable::new(1 << 20);
        let root = snapshot_root(&mut t, b"s");
        let first = t.load_entries(root, loc(0), vec![entry(b"a"), entry(b"b")]);
        let first = numbers(&first.unwrap());
        assert_eq!(first[1], first[0] + 1, "consecutive, in name order");
        let again = t.load_entries(root, loc(0), vec![entry(b"a"), entry(b"b")]);
        assert_eq!(first, numbers(&again.unwrap()));
        assert!(matches!(t.find(first[1]), Found::Node(NodeKind::Entry(_))));
        assert_eq!(t.parent(first[0]), Some(root));
    }

    /// A budget that holds one listing: loading another drops the first,
    /// whose entries are then found unloaded, and loading it again gives
    /// every entry (and a hard-linked file's two names) the same numbers.
    #[test]
    fn a_dropped_listing_loads_again_with_the_same_numbers() {
        let mut t = InodeTable::new(1);
        let root = snapshot_root(&mut t, b"s");
        let top = || vec![dir_entry(b"d"), linked(b"l1", 9), entry(b"z")];
        let inner = || vec![entry(b"x"), linked(b"y", 9)];
        let top_numbers = numbers(&t.load_entries(root, loc(0), top()).unwrap());
        let d = top_numbers[0];
        let inner_numbers = numbers(&t.load_entries(d, loc(b'd'), inner()).unwrap());
        assert_eq!(inner_numbers[1], top_numbers[1], "one file, one number");
        assert_eq!(t.listings(), 1, "the budget holds one listing");
        assert!(matches!(t.find(top_numbers[2]), Found::Unloaded(r) if r == root));
        assert_eq!(t.dir_tree(root), Some(loc(0)));
        assert_eq!(
            numbers(&t.load_entries(root, loc(0), top()).unwrap()),
            top_numbers
        );
        assert!(matches!(t.find(inner_numbers[0]), Found::Unloaded(dir) if dir == d));
        assert_eq!(t.dir_tree(d), Some(loc(b'd')));
        assert_eq!(
            numbers(&t.load_entries(d, loc(b'd'), inner()).unwrap()),
            inner_numbers
        );
        assert_eq!(t.parent(d), Some(root));
        assert!(t.bytes() < 4 * DIR_RECORD_BYTES + 2_000, "{}", t.bytes());
    }
}
