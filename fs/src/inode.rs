//! The inode table: what every inode number stands for.
//!
//! An inode number is given to a (parent, name) pair the first time it is
//! seen and kept for the life of the mount, so numbers are stable whatever
//! the kernel forgets. Nodes are created as directories are looked at, so
//! memory grows with what is browsed, not with the repository.

use coffer_core::tree::{Entry, Kind, Location};
use std::collections::HashMap;
use std::sync::Arc;

/// The root inode.
pub(crate) const ROOT: u64 = 1;

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
    Entry(Arc<Entry>),
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

/// One inode.
pub(crate) struct Node {
    pub parent: u64,
    pub kind: NodeKind,
    /// A directory's children, sorted by name, once loaded.
    pub children: Option<Vec<(Vec<u8>, u64)>>,
    /// A file's chunk end offsets (cumulative sizes), for binary search.
    pub chunk_ends: Arc<Vec<u64>>,
}

/// Inode numbers and their nodes.
pub(crate) struct InodeTable {
    nodes: HashMap<u64, Node>,
    numbers: HashMap<(u64, Vec<u8>), u64>,
    next: u64,
}

impl InodeTable {
    pub fn new() -> Self {
        let mut t = Self {
            nodes: HashMap::new(),
            numbers: HashMap::new(),
            next: ROOT + 1,
        };
        t.nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                kind: NodeKind::Root,
                children: None,
                chunk_ends: Arc::default(),
            },
        );
        t
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The inode of `name` in `parent`, made (or updated) to be `kind`.
    pub fn child(&mut self, parent: u64, name: &[u8], kind: NodeKind) -> u64 {
        let key = (parent, name.to_vec());
        let ino = match self.numbers.get(&key) {
            Some(&ino) => ino,
            None => {
                let ino = self.next;
                self.next += 1;
                self.numbers.insert(key, ino);
                ino
            }
        };
        let chunk_ends = match &kind {
            NodeKind::Entry(e) => Arc::new(
                e.chunks
                    .iter()
                    .scan(0u64, |end, c| {
                        *end += c.raw_length;
                        Some(*end)
                    })
                    .collect(),
            ),
            _ => Arc::default(),
        };
        match self.nodes.get_mut(&ino) {
            // An existing entry node keeps its loaded children: trees never change.
            Some(node) if matches!(node.kind, NodeKind::Entry(_)) => {}
            Some(node) => {
                node.kind = kind;
                node.chunk_ends = chunk_ends;
            }
            None => {
                self.nodes.insert(
                    ino,
                    Node {
                        parent,
                        kind,
                        children: None,
                        chunk_ends,
                    },
                );
            }
        }
        ino
    }

    /// Records a directory's children.
    pub fn set_children(&mut self, ino: u64, children: Vec<(Vec<u8>, u64)>) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.children = Some(children);
        }
    }

    /// The number of nodes, for logging.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_per_parent_and_name() {
        let mut t = InodeTable::new();
        let a = t.child(ROOT, b"snapshots", NodeKind::Snapshots);
        let b = t.child(ROOT, b"hosts", NodeKind::Hosts);
        assert_ne!(a, b);
        assert_eq!(t.child(ROOT, b"snapshots", NodeKind::Snapshots), a);
        let x = t.child(a, b"x", NodeKind::Latest);
        let y = t.child(b, b"x", NodeKind::Latest);
        assert_ne!(x, y, "same name under another parent is another inode");
        assert_eq!(t.get(x).map(|n| n.parent), Some(a));
        assert_eq!(t.len(), 5);
    }
}
