//! Glob patterns as `backup --exclude` and `find` read them: one without
//! `/` matches an entry's name, one with `/` its absolute path (`*` stays
//! within one path component, `**` crosses them, `\` escapes).

use crate::error::{Error, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Patterns, split by what they match.
#[derive(Clone, Debug)]
pub struct Patterns {
    names: GlobSet,
    paths: GlobSet,
}

impl Patterns {
    /// The patterns; `what` names one in errors ("--exclude pattern"): a
    /// bad one is a usage error that quotes it.
    pub fn new(patterns: &[String], what: &str) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Usage(format!("bad {what} {p:?}: {e}")))?;
            if p.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Usage(format!("bad {what}s: {e}")))
        };
        Ok(Self {
            names: build(names)?,
            paths: build(paths)?,
        })
    }

    /// Whether an entry named `name` at absolute `path` matches.
    pub fn matches(&self, name: &[u8], path: &[u8]) -> bool {
        self.names.is_match(Path::new(OsStr::from_bytes(name)))
            || self.paths.is_match(Path::new(OsStr::from_bytes(path)))
    }

    /// Whether the entry at absolute `path` matches (its name is the last
    /// component).
    pub fn matches_path(&self, path: &Path) -> bool {
        let name = path.file_name().map(Path::new);
        name.is_some_and(|n| self.names.is_match(n)) || self.paths.is_match(path)
    }

    /// Whether some pattern matches whole paths (so a match depends on
    /// where an entry is, not only on its name).
    pub fn by_path(&self) -> bool {
        !self.paths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_or_whole_paths() {
        let p = Patterns::new(&["*.conf".into(), "/etc/*/x".into()], "pattern").unwrap();
        assert!(p.matches(b"shop.conf", b"/etc/nginx/shop.conf"));
        assert!(p.matches(b"x", b"/etc/a/x"));
        assert!(!p.matches(b"x", b"/etc/a/b/x"));
        assert!(!p.matches(b"conf", b"/conf"));
        assert!(p.matches_path(Path::new("/srv/a.conf")));
        let err = Patterns::new(&["a[".into()], "pattern").err().unwrap();
        assert!(
            matches!(err, Error::Usage(_)) && err.to_string().contains("a["),
            "{err}"
        );
    }
}
