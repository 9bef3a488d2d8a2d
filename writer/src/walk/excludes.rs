//! `--exclude` patterns ([`Patterns`]): one without `/` matches an entry's
//! name, one with `/` its absolute path (`*` stays within one path
//! component).

use crate::BackupError;
use coffer_core::patterns::Patterns;
use std::path::Path;

/// The run's exclude patterns.
#[derive(Clone)]
pub(crate) struct Excludes(Patterns);

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self, BackupError> {
        Patterns::new(patterns, "--exclude pattern")
            .map(Self)
            .map_err(|e| BackupError::Usage(e.to_string()))
    }

    /// Whether the entry at absolute `path` is left out.
    pub fn excluded(&self, path: &Path) -> bool {
        self.0.matches_path(path)
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
        let err = Excludes::new(&["a[".into()]).err().unwrap().to_string();
        assert!(err.starts_with("bad --exclude pattern \"a[\""), "{err}");
    }
}
