//! Which entries a restore takes (`--include`, `--exclude`): patterns as
//! `backup --exclude` and `find` read them, matched against each entry's
//! name or its path in the snapshot (the path the target stands for, joined
//! with the entry's place below the target).
//!
//! An excluded entry is neither restored nor, with `--delete`, removed,
//! and nothing below an excluded directory is read. With `--include`, a
//! file is restored if it or a directory above it matches; directories on
//! the way to one are made, and those left empty are removed at the end.

use crate::patterns::Patterns;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The patterns, and where the target stands in the snapshot.
#[derive(Debug, Default)]
pub(super) struct Select {
    include: Option<Patterns>,
    exclude: Option<Patterns>,
    target: PathBuf,
    /// The snapshot path the target stands for.
    root: PathBuf,
}

impl Select {
    pub(super) fn new(
        include: Option<Patterns>,
        exclude: Option<Patterns>,
        target: &Path,
        root: &Path,
    ) -> Self {
        Self {
            include,
            exclude,
            target: target.to_path_buf(),
            root: root.to_path_buf(),
        }
    }

    /// Whether every entry is included (no `--include`).
    pub(super) fn takes_all(&self) -> bool {
        self.include.is_none()
    }

    /// The path in the snapshot of what goes to `dest`.
    fn snapshot_path(&self, dest: &Path) -> PathBuf {
        match dest.strip_prefix(&self.target) {
            Ok(rel) => self.root.join(rel),
            Err(_) => dest.to_path_buf(),
        }
    }

    fn matches(patterns: &Option<Patterns>, dest: &Path, snapshot_path: &Path) -> bool {
        let name = dest.file_name().unwrap_or(OsStr::new(""));
        patterns
            .as_ref()
            .is_some_and(|p| p.matches(name.as_bytes(), snapshot_path.as_os_str().as_bytes()))
    }

    /// Whether what goes to `dest` is excluded.
    pub(super) fn excluded(&self, dest: &Path) -> bool {
        self.exclude.is_some() && Self::matches(&self.exclude, dest, &self.snapshot_path(dest))
    }

    /// Whether what goes to `dest` matches an `--include` pattern (true
    /// when there is none).
    pub(super) fn included(&self, dest: &Path) -> bool {
        self.include.is_none() || Self::matches(&self.include, dest, &self.snapshot_path(dest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(p: &[&str]) -> Option<Patterns> {
        let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        Some(Patterns::new(&p, "pattern").unwrap())
    }

    #[test]
    fn entries_match_by_name_or_by_their_path_in_the_snapshot() {
        let s = Select::new(
            patterns(&["*.conf", "/srv/app/keep"]),
            patterns(&["*.tmp", "/srv/app/cache"]),
            Path::new("/restore/here"),
            Path::new("/srv/app"),
        );
        let t = Path::new("/restore/here");
        assert!(s.included(&t.join("sub/x.conf")));
        assert!(s.included(&t.join("keep")));
        assert!(!s.included(&t.join("sub/keep")));
        assert!(s.excluded(&t.join("cache")));
        assert!(s.excluded(&t.join("deep/a.tmp")));
        assert!(!s.excluded(&t.join("deep/cache")));
        let all = Select::default();
        assert!(all.takes_all() && all.included(t) && !all.excluded(t));
    }
}
