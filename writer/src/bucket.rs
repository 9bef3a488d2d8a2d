//! S3 bucket prefixes as sources: a listing becomes a tree of directories
//! (keys split on `/`) stored under `/s3/BUCKET`, and its objects files,
//! read a few at once ahead of the walker.
//!
//! Keys that cannot be a path are left out with a warning: an empty
//! component (`a//b`, a leading `/`), `.` or `..`, one longer than 255
//! bytes, and an object whose key is also a directory's (`a` beside
//! `a/b`). A key ending in `/` (a "folder" marker) makes its directory
//! exist, empty or not.

use coffer_core::backend::s3::source::{ObjectReader, S3Source, SourceObject};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Objects fetched at once ahead of the walker: enough to hide a distant
/// endpoint's latency behind small objects. Each buffers at most a few
/// frames (see `FRAMES_AHEAD` in core), so this bounds memory too.
pub const SOURCE_READS: usize = 16;

/// The longest name a Linux file system takes.
const NAME_MAX: usize = 255;

/// One bucket prefix and what its listing holds.
pub(crate) struct Bucket {
    pub source: Arc<S3Source>,
    pub objects: Vec<SourceObject>,
}

/// A directory of the tree made of keys: subdirectories and objects (by
/// index into the listing), and the newest `LastModified` below it as its
/// mtime.
#[derive(Default, Debug)]
pub(crate) struct KeyDir {
    pub dirs: BTreeMap<Vec<u8>, KeyDir>,
    pub files: BTreeMap<Vec<u8>, usize>,
    pub mtime_ns: i64,
}

impl KeyDir {
    /// The directory at `path` below this one, made if missing.
    fn dir_at(&mut self, path: &[&str]) -> &mut KeyDir {
        path.iter().fold(self, |dir, name| {
            dir.dirs.entry(name.as_bytes().to_vec()).or_default()
        })
    }

    /// Drops objects named like a directory beside them (warning each);
    /// sets every directory's mtime to the newest below it.
    fn settle(&mut self, prefix: &str, warn: &mut impl FnMut(String, &str)) -> i64 {
        let clashes: Vec<Vec<u8>> = self
            .files
            .keys()
            .filter(|name| self.dirs.contains_key(*name))
            .cloned()
            .collect();
        for name in clashes {
            self.files.remove(&name);
            let key = format!("{prefix}{}", String::from_utf8_lossy(&name));
            warn(key, "its key is also a directory of other keys: left out");
        }
        for (name, dir) in &mut self.dirs {
            let below = format!("{prefix}{}/", String::from_utf8_lossy(name));
            self.mtime_ns = self.mtime_ns.max(dir.settle(&below, warn));
        }
        self.mtime_ns
    }

    /// The objects below, in the order the walk stores them: each
    /// directory's entries by name, a subdirectory's before what follows it.
    pub fn objects_in_walk_order(&self, out: &mut Vec<usize>) {
        for (_, item) in self.items() {
            match item {
                Item::Dir(dir) => dir.objects_in_walk_order(out),
                Item::File(index) => out.push(index),
            }
        }
    }

    /// Subdirectories and objects together, by name.
    pub fn items(&self) -> Vec<(&[u8], Item<'_>)> {
        let mut items: Vec<(&[u8], Item<'_>)> = self
            .dirs
            .iter()
            .map(|(n, d)| (n.as_slice(), Item::Dir(d)))
            .chain(
                self.files
                    .iter()
                    .map(|(n, &i)| (n.as_slice(), Item::File(i))),
            )
            .collect();
        items.sort_by(|a, b| a.0.cmp(b.0));
        items
    }
}

/// An entry of a [`KeyDir`].
pub(crate) enum Item<'a> {
    Dir(&'a KeyDir),
    File(usize),
}

/// Builds the tree of `objects`' keys; keys left out are passed to `warn`
/// with the reason.
pub(crate) fn key_tree(objects: &[SourceObject], mut warn: impl FnMut(String, &str)) -> KeyDir {
    let mut root = KeyDir::default();
    for (index, obj) in objects.iter().enumerate() {
        let parts: Vec<&str> = obj.key.split('/').collect();
        let (dirs, name) = parts.split_at(parts.len() - 1);
        let marker = name[0].is_empty();
        let bad = |p: &&str| p.is_empty() || *p == "." || *p == ".." || p.len() > NAME_MAX;
        if dirs.iter().any(bad) || (!marker && bad(&name[0])) {
            warn(
                obj.key.clone(),
                "its key has an empty, `.`, `..` or over-long part, which no path can hold: left out",
            );
            continue;
        }
        let dir = root.dir_at(dirs);
        dir.mtime_ns = dir.mtime_ns.max(obj.modified_ns);
        if marker {
            if obj.size > 0 {
                warn(
                    obj.key.clone(),
                    "a folder marker (key ending in /) with data: its directory is kept, not its bytes",
                );
            }
        } else {
            dir.files.insert(name[0].as_bytes().to_vec(), index);
        }
    }
    root.settle("", &mut warn);
    root
}

/// Reads objects in the walk's order, [`SOURCE_READS`] ahead.
pub(crate) struct Fetcher {
    source: Arc<S3Source>,
    rt: tokio::runtime::Handle,
    waiting: VecDeque<SourceObject>,
    started: VecDeque<ObjectReader>,
}

impl Fetcher {
    /// Will read `objects` in this order.
    pub fn new(
        source: Arc<S3Source>,
        rt: tokio::runtime::Handle,
        objects: Vec<SourceObject>,
    ) -> Self {
        let mut fetcher = Self {
            source,
            rt,
            waiting: objects.into(),
            started: VecDeque::new(),
        };
        fetcher.top_up();
        fetcher
    }

    fn top_up(&mut self) {
        while self.started.len() < SOURCE_READS {
            let Some(obj) = self.waiting.pop_front() else {
                return;
            };
            self.started.push_back(self.source.read(&self.rt, obj));
        }
    }

    /// The next object's reader (the walker asks in the order given).
    pub fn next(&mut self) -> Option<ObjectReader> {
        let reader = self.started.pop_front();
        self.top_up();
        reader
    }
}

/// The state's stand-in for an inode number: the ETag's hash, so a new
/// object under the same key, size and time is still seen as new.
pub(crate) fn etag_identity(etag: &str) -> u64 {
    let hash = blake3::hash(etag.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: u64, modified_ns: i64) -> SourceObject {
        SourceObject {
            key: key.into(),
            size,
            etag: format!("\"{key}\""),
            modified_ns,
        }
    }

    fn names(dir: &KeyDir, prefix: &str, out: &mut Vec<String>) {
        for (name, d) in &dir.dirs {
            let path = format!("{prefix}{}/", String::from_utf8_lossy(name));
            out.push(format!("{path} {}", d.mtime_ns));
            names(d, &path, out);
        }
        for name in dir.files.keys() {
            out.push(format!("{prefix}{}", String::from_utf8_lossy(name)));
        }
    }

    #[test]
    fn keys_become_directories_and_files_and_impossible_ones_are_left_out() {
        let objects = vec![
            obj("a", 1, 1),
            obj("a/b", 1, 5),
            obj("a/c d/é", 1, 7),
            obj("empty/", 0, 9),
            obj("marker/", 3, 2),
            obj("x//y", 1, 1),
            obj("/lead", 1, 1),
            obj("z/../w", 1, 1),
            obj(&"n".repeat(256), 1, 1),
            obj("top", 1, 3),
        ];
        let mut warned = Vec::new();
        let tree = key_tree(&objects, |key, why| warned.push(format!("{key}: {why}")));
        let mut out = Vec::new();
        names(&tree, "", &mut out);
        assert_eq!(
            out,
            [
                "a/ 7",
                "a/c d/ 7",
                "a/c d/é",
                "a/b",
                "empty/ 9",
                "marker/ 2",
                "top"
            ]
        );
        assert_eq!(tree.mtime_ns, 9);
        assert_eq!(warned.len(), 6, "{warned:#?}");
        assert!(warned
            .iter()
            .any(|w| w.starts_with("x//y: its key has an empty")));
        assert!(warned
            .iter()
            .any(|w| w.starts_with("marker/: a folder marker")));
        assert!(warned
            .iter()
            .any(|w| w.starts_with("a: its key is also a directory")));
        let mut order = Vec::new();
        tree.objects_in_walk_order(&mut order);
        let keys: Vec<&str> = order.iter().map(|&i| objects[i].key.as_str()).collect();
        assert_eq!(keys, ["a/b", "a/c d/é", "top"]);
    }

    #[test]
    fn an_etag_is_an_identity() {
        assert_eq!(etag_identity("\"x\""), etag_identity("\"x\""));
        assert_ne!(etag_identity("\"x\""), etag_identity("\"y\""));
    }
}
