//! Hard links: the first name of a hard-linked file met in the walk is
//! restored as usual; every later name becomes a hard link to it, made
//! once all files are complete (a link shares its file's bytes, mode and
//! mtime, so it needs nothing else). Only names inside the restored path
//! are linked: one whose other names lie outside it is an ordinary file.

use super::target::apply_metadata;
use super::RestoreStats;
use crate::error::{Error, Result};
use crate::format::tree::{Entry, HardLink, Kind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Hard-linked files met so far, and the names still to link.
#[derive(Default)]
pub(super) struct HardLinks {
    /// Each file's first name (restored as the file itself) and its kind.
    first: HashMap<(u64, u64), (PathBuf, Kind)>,
    /// Later names: the entry, its path, and the first name to link to.
    later: Vec<(Entry, PathBuf, PathBuf)>,
}

/// What [`HardLinks::is_known`] makes of a name with a link.
pub(super) enum Linked {
    /// The first name met: the caller restores it.
    First,
    /// A later name of a file met before: it is linked at the end.
    Later,
    /// A later name whose kind is not its first name's: one file has one
    /// kind, so the tree is damaged (it could make a restore link or copy
    /// a file of another kind); the name is not restored, for this reason.
    Mismatch(String),
}

impl HardLinks {
    /// Whether `entry` at `dest` is a later name of a file met before: then
    /// it is remembered, to be linked by [`HardLinks::make`]. Otherwise
    /// `dest` becomes the file's first name and the caller restores it.
    pub(super) fn is_known(&mut self, link: &HardLink, entry: &Entry, dest: &Path) -> Linked {
        match self.first.get(&(link.dev, link.ino)) {
            Some((first, kind)) if *kind != entry.kind => Linked::Mismatch(format!(
                "{}: not restored: damaged tree: it is a hard link of {}, but a {:?} where that \
                 name is a {:?}",
                dest.display(),
                first.display(),
                entry.kind,
                kind
            )),
            Some((first, _)) => {
                self.later
                    .push((entry.clone(), dest.to_path_buf(), first.clone()));
                Linked::Later
            }
            None => {
                self.first
                    .insert((link.dev, link.ino), (dest.to_path_buf(), entry.kind));
                Linked::First
            }
        }
    }

    /// Links every later name to its file's first name. A first name that
    /// was not restored (its data is damaged) leaves its later names out
    /// too, said the same way; a file system that cannot link gets a copy,
    /// with a warning.
    pub(super) fn make(self, is_root: bool, stats: &mut RestoreStats) -> Result<()> {
        for (entry, dest, first) in self.later {
            if std::fs::symlink_metadata(&first).is_err() {
                let why = format!(
                    "{}: not restored: it is a hard link of {}, which was not restored",
                    dest.display(),
                    first.display()
                );
                match entry.kind {
                    Kind::File => stats.damaged.push(why),
                    _ => stats.warnings.push(why),
                }
                continue;
            }
            match std::fs::hard_link(&first, &dest) {
                Ok(()) => {}
                Err(e) if entry.kind == Kind::File => {
                    stats.warnings.push(format!(
                        "{}: restored as a copy of {}: cannot make a hard link: {e}",
                        dest.display(),
                        first.display()
                    ));
                    copy_regular(&first, &dest)?;
                    apply_metadata(&entry, &dest, is_root, stats)?;
                }
                Err(e) => {
                    stats.warnings.push(format!(
                        "{}: not restored: cannot make a hard link to {}: {e}",
                        dest.display(),
                        first.display()
                    ));
                    continue;
                }
            }
            match entry.kind {
                Kind::File => stats.files += 1,
                _ => stats.others += 1,
            }
        }
        Ok(())
    }
}

/// Copies the regular file `from` (this restore made it) to the new file
/// `to`, never following a symlink at either name: whatever stands at
/// `from` now, only a regular file's bytes are copied, and `to` is created,
/// never opened through a link.
fn copy_regular(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut source = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(from)
        .map_err(|e| Error::io(from, "opening a hard-linked file to copy it", e))?;
    let meta = source
        .metadata()
        .map_err(|e| Error::io(from, "opening a hard-linked file to copy it", e))?;
    if !meta.is_file() {
        return Err(Error::io(
            from,
            "copying a hard-linked file",
            std::io::Error::other("not a regular file any more; nothing copied"),
        ));
    }
    let mut dest = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)
        .map_err(|e| Error::io(to, "copying a hard-linked file", e))?;
    std::io::copy(&mut source, &mut dest)
        .map_err(|e| Error::io(to, "copying a hard-linked file", e))?;
    Ok(())
}
