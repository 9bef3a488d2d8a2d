//! Directories: loading a directory's children into the inode table (its
//! tree fetched through the cache, or the virtual directories made from the
//! snapshot list), loading again a listing the table dropped, and listing
//! them for `lookup`, `readdir` and `readdirplus`.

use crate::attrs::{attr_of, file_type};
use crate::inode::{Dir, Found, NodeKind};
use crate::mounted::{Mounted, WORKING_BYTES};
use coffer_core::format::tree::{Location, Tree};
use fuser::{Errno, FileAttr, FileType, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

/// Subdirectory trees fetched ahead when a directory is loaded.
const SUBTREE_PREFETCH: usize = 64;
/// Newest snapshots whose root trees are fetched as the mount starts.
const NEWEST_ROOTS_PREFETCH: usize = 8;

impl Mounted {
    /// Re-reads the snapshot list if it is older than the refresh interval.
    pub(crate) async fn refresh_snapshots(&self) {
        if !self.snapshots_stale() {
            return;
        }
        // Key changes first: a writer revoked while mounted is left out
        // from this listing on. A chain that no longer holds keeps the
        // listing as it was (and says why).
        if let Err(e) = self.cache().repo().refresh_key_chain().await {
            self.eio("re-reading the key changes", &e);
            return;
        }
        match self
            .cache()
            .repo()
            .selected_snapshots(self.selection())
            .await
        {
            Ok(list) => self.snapshots().replace(list),
            Err(e) => {
                self.eio("re-reading the snapshot list", &e);
            }
        }
    }

    /// Starts fetching the root trees of the newest snapshots, the ones
    /// most often browsed: from a remote repository with a metadata cache
    /// that brings each one's whole tree pack (the directories of that
    /// backup run), so the first look into a snapshot waits for no tree.
    /// Needs a tokio runtime context.
    pub(crate) fn prefetch_newest_roots(&self) {
        let roots: Vec<Location> = self
            .snapshots()
            .list
            .iter()
            .rev()
            .take(NEWEST_ROOTS_PREFETCH)
            .map(|s| s.snapshot.tree)
            .collect();
        self.cache().prefetch_trees(&roots);
    }

    /// What `ino` is, loading the listing it lies in if the table dropped
    /// it.
    pub(crate) async fn kind_of(&self, ino: u64) -> Result<NodeKind, Errno> {
        let found = self.table().find(ino);
        let dir = match found {
            Found::Node(kind) => return Ok(kind),
            Found::Unknown => return Err(Errno::ENOENT),
            Found::Unloaded(dir) => dir,
        };
        let tree = self.table().dir_tree(dir).ok_or(Errno::ENOENT)?;
        let listing = self.load_listing(dir, tree).await?.listing;
        self.table().kind_in(ino, &listing).ok_or(Errno::ENOENT)
    }

    /// Directory `ino` with its children: a snapshot directory's listing
    /// (loaded from its tree if the table has not kept it), a virtual
    /// directory rebuilt if the snapshot list changed since it was built.
    pub(crate) async fn load_dir(&self, ino: u64) -> Result<Dir, Errno> {
        let kind = self.kind_of(ino).await?;
        if !kind.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if kind.is_virtual_dir() {
            return self.virtual_children(ino, &kind).ok_or(Errno::ENOENT);
        }
        if let Some(dir) = self.table().dir(ino) {
            return Ok(dir);
        }
        let tree = match &kind {
            NodeKind::SnapshotRoot { tree, .. } => *tree,
            NodeKind::Entry(e) => e.subtree.ok_or(Errno::EIO)?,
            _ => return Err(Errno::ENOTDIR),
        };
        self.load_listing(ino, tree).await
    }

    /// Loads snapshot directory `ino`'s entries from its tree at `tree` into
    /// the table (which keeps them while its budget allows) and returns them.
    async fn load_listing(&self, ino: u64, tree: Location) -> Result<Dir, Errno> {
        let loaded = self.tree(&tree).await?;
        self.prefetch_subtrees(&loaded);
        let (dir, table_bytes) = {
            let mut table = self.table();
            let dir = table.load_entries(ino, tree, loaded.entries);
            (dir, table.bytes())
        };
        // The listings count against the cache size: the mount stays within
        // --cache-size however much is browsed.
        self.cache().set_reserved(table_bytes + WORKING_BYTES);
        dir.ok_or(Errno::EIO)
    }

    /// Starts fetching the trees of a directory's subdirectories, so a walk
    /// (`ls -lR`, `find`, `diff -r`) finds them cached: read-ahead for trees.
    fn prefetch_subtrees(&self, tree: &Tree) {
        let subtrees = tree.entries.iter().filter_map(|e| e.subtree.as_ref());
        self.cache().prefetch_trees(subtrees.take(SUBTREE_PREFETCH));
    }

    /// Snapshot directory `ino`, if its listing is loaded (answerable
    /// without I/O). Virtual directories go through [`Mounted::load_dir`],
    /// which rebuilds them when the snapshot list changed.
    pub(crate) fn loaded_dir(&self, ino: u64) -> Option<Dir> {
        self.table().dir(ino)
    }

    /// `name` in directory `dir`: its attributes.
    pub(crate) fn lookup_in(&self, dir: &Dir, name: &[u8]) -> Result<(FileAttr, Duration), Errno> {
        let (child, kind) = dir.child(name).ok_or(Errno::ENOENT)?;
        Ok(attr_of(kind, child, &self.virtual_times()))
    }

    /// Fills `reply` with directory `ino`'s entries from `offset`.
    pub(crate) fn readdir_in(&self, dir: &Dir, ino: u64, offset: u64, mut reply: ReplyDirectory) {
        self.listed(ino, offset);
        each_entry(dir, ino, offset, |child, next, name, kind| {
            let kind = match kind {
                Some(NodeKind::Entry(e)) => file_type(e.kind),
                Some(NodeKind::Latest | NodeKind::Link(_)) => FileType::Symlink,
                _ => FileType::Directory,
            };
            reply.add(INodeNo(child), next, kind, OsStr::from_bytes(name))
        });
        reply.ok();
    }

    /// [`Mounted::readdir_in`] with each entry's attributes, so that the
    /// `stat` of every entry that `ls -l`, `find` or `diff -r` does next is
    /// answered by the kernel without a lookup round trip each.
    pub(crate) fn readdirplus_in(
        &self,
        dir: &Dir,
        ino: u64,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.listed(ino, offset);
        let virtual_times = self.virtual_times();
        each_entry(dir, ino, offset, |child, next, name, kind| {
            // `.` and `..`: the kernel ignores their attributes.
            let (attr, ttl) = match kind {
                Some(kind) => attr_of(kind, child, &virtual_times),
                None => attr_of(&NodeKind::Root, child, &virtual_times),
            };
            let name = OsStr::from_bytes(name);
            reply.add(INodeNo(child), next, name, &ttl, &attr, Generation(0))
        });
        reply.ok();
    }

    /// Directory `ino` is being listed from `offset`: from the start, a
    /// walk may be beginning there ([`crate::walk`]).
    fn listed(&self, ino: u64, offset: u64) {
        if offset == 0 {
            self.walks().listed(ino);
        }
    }

    /// Tree `loc`, through the cache, parsed.
    pub(crate) async fn tree(&self, loc: &Location) -> Result<Tree, Errno> {
        let what = format!("tree {}", loc.id);
        let json = self
            .cache()
            .get_tree(loc)
            .await
            .map_err(|e| self.eio(&what, &e))?;
        Tree::from_json(&json, &what).map_err(|e| self.eio(&what, &e))
    }

    /// The children of a directory made from the snapshot list, rebuilt
    /// only when the list has changed since they were last built.
    fn virtual_children(&self, ino: u64, kind: &NodeKind) -> Option<Dir> {
        let (snaps, mut table) = self.snapshots_and_table();
        let layout = &snaps.layout;
        if table.virtual_current(ino, snaps.generation) {
            return table.virtual_dir(ino);
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
                let group = layout.by_host.get(h).map_or(&[][..], Vec::as_slice);
                for (name, i) in group {
                    add(name, snapshot_root(*i));
                }
                if let Some((newest, _)) = group.last() {
                    add("latest", NodeKind::Link(newest.as_bytes().into()));
                }
            }
            NodeKind::Tag(t) => {
                let group = layout.by_tag.get(t).map_or(&[][..], Vec::as_slice);
                for (name, i) in group {
                    add(name, snapshot_root(*i));
                }
                if let Some((newest, _)) = group.last() {
                    add("latest", NodeKind::Link(newest.as_bytes().into()));
                }
            }
            _ => {}
        }
        out.sort();
        table.set_virtual_children(ino, out, snaps.generation);
        table.virtual_dir(ino)
    }
}

/// Calls `add(child, next offset, name, what the child is)` for directory
/// `ino`'s entries from `offset` on, `.` and `..` first (with no kind),
/// until it returns true (the reply is full).
fn each_entry(
    dir: &Dir,
    ino: u64,
    offset: u64,
    mut add: impl FnMut(u64, u64, &[u8], Option<&NodeKind>) -> bool,
) {
    let listing = &dir.listing;
    let dots = [(ino, &b"."[..], None), (dir.parent, &b".."[..], None)];
    let entries = dots.into_iter().chain(
        listing
            .children
            .iter()
            .zip(listing.kinds.iter())
            .map(|((n, c), k)| (*c, &n[..], Some(k))),
    );
    for (i, (child, name, kind)) in entries.enumerate().skip(offset as usize) {
        if add(child, i as u64 + 1, name, kind) {
            break;
        }
    }
}
