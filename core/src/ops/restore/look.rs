//! Restoring over a live tree: what each directory of the target holds,
//! looked at on the blocking pool ahead of the walk (its listing and an
//! `lstat` of every name), so the walk, one task, neither lists nor stats:
//! it asks [`Held`] what is at a name.
//!
//! A look is taken when the directory's tree arrives, before the walk has
//! reached it; it is used only if the directory the walk then finds at
//! that path is the one looked at (same device and inode: the walk may have
//! replaced a file or symlink in the way with a new directory, and a look
//! through a symlink saw another directory). A directory the walk made is
//! empty, and needs no look.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A directory's device and inode.
pub(super) type DirId = (u64, u64);

/// The identity of the directory `meta` describes.
pub(super) fn dir_id(meta: &Metadata) -> DirId {
    (meta.dev(), meta.ino())
}

/// What a directory held when it was looked at.
pub(super) struct Looked {
    dir: DirId,
    /// Every name in it, with what `lstat` said (`None`: gone by then, or
    /// not to be stat'ed; the walk looks again).
    entries: HashMap<Vec<u8>, Option<Metadata>>,
}

/// Looks at directory `path` (a real directory, not a symlink to one):
/// `None` if it is not there, is something else, or cannot be listed.
pub(super) fn look(path: &Path) -> Option<Looked> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_dir() {
        return None;
    }
    let mut entries = HashMap::new();
    for item in std::fs::read_dir(path).ok()? {
        let item = item.ok()?;
        let name = item.file_name();
        let meta = std::fs::symlink_metadata(item.path()).ok();
        entries.insert(name.as_bytes().to_vec(), meta);
    }
    Some(Looked {
        dir: dir_id(&meta),
        entries,
    })
}

/// What the walk knows of a target directory's contents.
pub(super) enum Held {
    /// Nothing looked at (not over a live tree, or the look did not
    /// match): ask the file system.
    Unknown,
    /// A directory the walk made (or, in a dry run, would make).
    Empty,
    Looked(Looked),
}

impl Held {
    /// What the walk knows of directory `dir` whose look is `looked`:
    /// `found` is the directory it found there (`None`: it made it).
    pub(super) fn of(found: Option<DirId>, looked: Option<Looked>) -> Self {
        match (found, looked) {
            (None, _) => Held::Empty,
            (Some(id), Some(looked)) if looked.dir == id => Held::Looked(looked),
            _ => Held::Unknown,
        }
    }

    /// What is at `path`, named `name` in this directory: `None` if
    /// nothing.
    pub(super) fn at(&self, name: &[u8], path: &Path) -> Option<Metadata> {
        match self {
            Held::Unknown => std::fs::symlink_metadata(path).ok(),
            Held::Empty => None,
            Held::Looked(looked) => match looked.entries.get(name) {
                None => None,
                Some(Some(meta)) => Some(meta.clone()),
                Some(None) => std::fs::symlink_metadata(path).ok(),
            },
        }
    }

    /// The names it holds, if known without listing it.
    pub(super) fn names(&self) -> Option<Vec<&[u8]>> {
        match self {
            Held::Unknown => None,
            Held::Empty => Some(Vec::new()),
            Held::Looked(looked) => Some(looked.entries.keys().map(Vec::as_slice).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_counts_only_for_the_directory_it_saw() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        let found = dir_id(&std::fs::symlink_metadata(&dir).unwrap());
        let held = Held::of(Some(found), look(&dir));
        assert_eq!(held.at(b"f", &dir.join("f")).map(|m| m.len()), Some(1));
        // Not listed: nothing there, without asking.
        assert!(held.at(b"g", &dir.join("g")).is_none());
        assert_eq!(held.names().unwrap(), vec![b"f".as_slice()]);

        // A symlink to it is looked through by nobody.
        let link = top.path().join("l");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(look(&link).is_none());
        // The walk found another directory than the one looked at (made
        // anew in its place): the look is not used.
        let other = top.path().join("o");
        std::fs::create_dir(&other).unwrap();
        let other_id = dir_id(&std::fs::symlink_metadata(&other).unwrap());
        let held = Held::of(Some(other_id), look(&dir));
        assert!(matches!(held, Held::Unknown));
        assert!(held.names().is_none());
        // One the walk made holds nothing.
        assert!(Held::of(None, look(&dir))
            .at(b"f", &dir.join("f"))
            .is_none());
    }
}
