//! `--exclude` patterns: one without `/` matches an entry's name, one with
//! `/` its absolute path (`*` stays within one path component).

use crate::BackupError;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::Path;

/// The run's exclude patterns, split by what they match.
#[derive(Clone)]
pub(crate) struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self, BackupError> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| BackupError::Usage(format!("bad --exclude pattern {p:?}: {e}")))?;
            if p.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| BackupError::Usage(format!("bad --exclude patterns: {e}")))
        };
        Ok(Self {
            names: build(names)?,
            paths: build(paths)?,
        })
    }

    /// Whether the entry at absolute `path` is left out.
    pub fn excluded(&self, path: &Path) -> bool {
        let name = path.file_name().map(Path::new);
        name.is_some_and(|n| self.names.is_match(n)) || self.paths.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_match_names_or_paths() {
        let ex = Excludes::new(&["*.tmp".into(), "/srv/*/cache".into()]).unwrap();
        assert!(ex.excluded(Path::new("/a/b.tmp")));
        assert!(ex.excluded(Path::new("/srv/app/cache")));
        assert!(!ex.excluded(Path::new("/srv/app/x/cache")));
        assert!(!ex.excluded(Path::new("/a/b.txt")));
    }
}
