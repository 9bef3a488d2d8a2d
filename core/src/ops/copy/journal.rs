//! What a copy has stored at one destination: one object path per line,
//! appended once the destination has the object, so a re-run skips it
//! without asking the destination (whose credentials may allow nothing but
//! PutObject).
//!
//! The first line names the journal's repository and destination; a file
//! whose first line differs is started afresh. A line cut short by a crash
//! is not a path and is ignored; a line lost with the page cache costs one
//! PUT, answered "already exists", which counts as stored. Lines are never
//! written before the object is stored, so the journal never claims an
//! object the destination lacks. One copy at a time holds a journal (an
//! exclusive `flock` on it, released with the process).

use crate::backend::{ObjectKey, ObjectKind};
use crate::error::{Error, Result};
use crate::format::id::{ObjectId, PackId};
use crate::format::snapshot::parse_object_name;
use std::collections::HashSet;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// An open journal, locked.
pub struct Journal {
    file: std::fs::File,
    path: PathBuf,
    stored: HashSet<String>,
}

impl Journal {
    /// Opens (or creates) the journal at `path` for `header` (repository
    /// and destination), taking its lock.
    pub fn open(path: &Path, header: &str) -> Result<Self> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| Error::Io {
                path: path.to_path_buf(),
                what,
                source,
            }
        };
        if let Some(dir) = path.parent() {
            crate::private_dir::create(dir).map_err(io("creating the copy journal's directory"))?;
        }
        let file = crate::private_dir::open_append(path).map_err(io("opening the copy journal"))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Usage(format!(
                    "{}: another copy to this destination is running; wait for it",
                    path.display()
                ))
            } else {
                io("locking the copy journal")(e)
            });
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut &file, &mut text)
            .map_err(io("reading the copy journal"))?;
        let mut lines = text.lines();
        let mut stored = HashSet::new();
        if lines.next() == Some(header) {
            stored.extend(lines.filter(|l| is_object_path(l)).map(str::to_string));
            if !text.ends_with('\n') {
                // A line cut by a crash: end it, so the next record starts
                // a line of its own.
                (&file)
                    .write_all(b"\n")
                    .map_err(io("writing the copy journal"))?;
            }
        } else {
            file.set_len(0)
                .map_err(io("starting the copy journal afresh"))?;
            (&file)
                .write_all(format!("{header}\n").as_bytes())
                .map_err(io("writing the copy journal"))?;
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            stored,
        })
    }

    /// Whether the destination has `key`, as far as this journal knows.
    pub fn has(&self, key: &ObjectKey) -> bool {
        self.stored.contains(&key.path())
    }

    /// Objects the journal knows.
    pub fn len(&self) -> usize {
        self.stored.len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }

    /// Records that the destination has `key`.
    pub fn record(&mut self, key: &ObjectKey) -> Result<()> {
        let path = key.path();
        (&self.file)
            .write_all(format!("{path}\n").as_bytes())
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                what: "writing the copy journal".into(),
                source,
            })?;
        self.stored.insert(path);
        Ok(())
    }
}

/// Whether `line` is a whole object path (a cut line is not).
fn is_object_path(line: &str) -> bool {
    if line == "config" {
        return true;
    }
    let name = |kind: ObjectKind| line.strip_prefix(kind.prefix());
    if let Some(rest) = name(ObjectKind::Pack).or_else(|| name(ObjectKind::FilePack)) {
        return rest
            .split_once('/')
            .is_some_and(|(_, id)| PackId::from_hex(id).is_some());
    }
    if let Some(id) = name(ObjectKind::Index) {
        return ObjectId::from_hex(id).is_some();
    }
    if let Some(seq) = name(ObjectKind::Keys) {
        return crate::format::key_change::parse_object_name(seq).is_some();
    }
    name(ObjectKind::Snapshot).is_some_and(|n| parse_object_name(n).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_a_cut_line_is_skipped_and_another_header_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let pack = ObjectKey::new(ObjectKind::Pack, "ab".repeat(32));
        let snap = ObjectKey::new(
            ObjectKind::Snapshot,
            format!("0011223344556677.{}", "cd".repeat(32)),
        );
        let files = ObjectKey::new(ObjectKind::FilePack, "cd".repeat(32));
        let mut j = Journal::open(&path, "h1").unwrap();
        assert!(!j.has(&pack) && !j.has(&files));
        j.record(&pack).unwrap();
        j.record(&files).unwrap();
        j.record(&ObjectKey::config()).unwrap();
        assert!(
            Journal::open(&path, "h1").is_err(),
            "a second holder is refused"
        );
        drop(j);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&snap.path().as_bytes()[..40])
            .unwrap();
        let mut j = Journal::open(&path, "h1").unwrap();
        assert!(j.has(&pack) && j.has(&files) && j.has(&ObjectKey::config()));
        assert_eq!(j.len(), 3);
        j.record(&snap).unwrap();
        drop(j);
        // The cut line was ended on opening: the record after it counts.
        let j = Journal::open(&path, "h1").unwrap();
        assert!(j.has(&snap));
        assert_eq!(j.len(), 4);
        drop(j);
        let j = Journal::open(&path, "h2").unwrap();
        assert!(j.is_empty());
    }
}
