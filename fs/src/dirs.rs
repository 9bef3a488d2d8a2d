//! Directories: loading a directory's children into the inode table (its
//! tree fetched through the cache, or the virtual directories made from the
//! snapshot list) and listing them for `lookup`, `readdir` and
//! `readdirplus`.

use crate::attrs::{attr_in, file_type};
use crate::inode::{InodeTable, NodeKind};
use crate::mounted::{Mounted, WORKING_BYTES};
use coffer_core::format::tree::{Location, Tree};
use coffer_core::sync::lock;
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
        match self.cache.repo().snapshots().await {
            Ok(list) => lock(&self.snapshots).replace(list),
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
        let roots: Vec<Location> = lock(&self.snapshots)
            .list
            .iter()
            .rev()
            .take(NEWEST_ROOTS_PREFETCH)
            .map(|s| s.snapshot.tree)
            .collect();
        self.cache.prefetch_trees(&roots);
    }

    /// Whether the snapshot list is older than the refresh interval.
    pub(crate) fn snapshots_stale(&self) -> bool {
        lock(&self.snapshots).stale(self.refresh_every)
    }

    /// Makes sure `ino`'s children are in the table, fetching its tree if
    /// needed. Virtual directories are rebuilt from the snapshot list.
    pub(crate) async fn load_children(&self, ino: u64) -> Result<(), Errno> {
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
        self.cache.prefetch_trees(subtrees.take(SUBTREE_PREFETCH));
    }

    /// Whether `ino`'s children are loaded and final (answerable without I/O).
    pub(crate) fn loaded(&self, ino: u64) -> bool {
        lock(&self.table)
            .get(ino)
            .is_some_and(|n| n.children.is_some() && !n.kind.is_virtual_dir())
    }

    /// `name` in `parent`, whose children must be loaded.
    pub(crate) fn lookup_loaded(
        &self,
        parent: u64,
        name: &[u8],
    ) -> Result<(FileAttr, Duration), Errno> {
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
    pub(crate) fn readdir_loaded(&self, ino: u64, offset: u64, mut reply: ReplyDirectory) {
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

    /// [`Mounted::readdir_loaded`] with each entry's attributes, so that the
    /// `stat` of every entry that `ls -l`, `find` or `diff -r` does next is
    /// answered by the kernel without a lookup round trip each.
    pub(crate) fn readdirplus_loaded(&self, ino: u64, offset: u64, mut reply: ReplyDirectoryPlus) {
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
        let json = self
            .cache
            .get_tree(loc)
            .await
            .map_err(|e| self.eio(&what, &e))?;
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
