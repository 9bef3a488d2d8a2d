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
    /// Each file's first name (restored as the file itself).
    first: HashMap<(u64, u64), PathBuf>,
    /// Later names: the entry, its path, and the first name to link to.
    later: Vec<(Entry, PathBuf, PathBuf)>,
}

impl HardLinks {
    /// Whether `entry` at `dest` is a later name of a file met before: then
    /// it is remembered, to be linked by [`HardLinks::make`]. Otherwise
    /// `dest` becomes the file's first name and the caller restores it.
    pub(super) fn is_known(&mut self, link: &HardLink, entry: &Entry, dest: &Path) -> bool {
        match self.first.get(&(link.dev, link.ino)) {
            Some(first) => {
                self.later
                    .push((entry.clone(), dest.to_path_buf(), first.clone()));
                true
            }
            None => {
                self.first.insert((link.dev, link.ino), dest.to_path_buf());
                false
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
                    std::fs::copy(&first, &dest)
                        .map_err(|e| Error::io(&dest, "copying a hard-linked file", e))?;
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
