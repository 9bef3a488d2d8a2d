//! What a backup leaves out of the local tree: `--exclude` patterns
//! ([`Patterns`]: one without `/` matches an entry's name, one with `/` its
//! absolute path), directories marked by a file (`--exclude-if-present`,
//! `--exclude-caches`: their contents but the marker), and files over a
//! size (`--exclude-larger-than`).

use crate::BackupError;
use coffer_core::patterns::Patterns;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A file whose presence marks a directory as left out: its name, and the
/// bytes it must start with, if any (`CACHEDIR.TAG` and its signature).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Marker {
    name: Vec<u8>,
    header: Option<Vec<u8>>,
}

/// The run's exclusions.
#[derive(Clone)]
pub(crate) struct Excludes {
    patterns: Patterns,
    markers: Vec<Marker>,
    larger_than: Option<u64>,
}

impl Excludes {
    /// `patterns` as `--exclude` gives them, `markers` as
    /// `--exclude-if-present` does (`NAME` or `NAME:HEADER`), and the size
    /// over which a file is left out.
    pub fn new(
        patterns: &[String],
        markers: &[String],
        larger_than: Option<u64>,
    ) -> Result<Self, BackupError> {
        let patterns = Patterns::new(patterns, "--exclude pattern")
            .map_err(|e| BackupError::Usage(e.to_string()))?;
        let markers = markers
            .iter()
            .map(|m| {
                let (name, header) = match m.split_once(':') {
                    Some((name, header)) => (name, Some(header.as_bytes().to_vec())),
                    None => (m.as_str(), None),
                };
                if !coffer_core::format::tree::is_safe_name(name.as_bytes()) {
                    return Err(BackupError::Usage(format!(
                        "--exclude-if-present {m:?}: give a file name (NAME or NAME:HEADER), not a path"
                    )));
                }
                Ok(Marker {
                    name: name.as_bytes().to_vec(),
                    header,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            patterns,
            markers,
            larger_than,
        })
    }

    /// Whether the entry at absolute `path` is left out by a pattern.
    pub fn excluded(&self, path: &Path) -> bool {
        self.patterns.matches_path(path)
    }

    /// Whether an entry of `meta` is a regular file over the size limit.
    pub fn too_large(&self, meta: &Metadata) -> bool {
        meta.is_file() && self.larger_than.is_some_and(|limit| meta.len() > limit)
    }

    /// The marker file that leaves directory `dir`'s contents out, if one
    /// is there (a regular file, starting with its header if it has one).
    pub fn marker_in(&self, dir: &Path) -> Option<&[u8]> {
        self.markers.iter().find_map(|m| {
            let path = dir.join(std::ffi::OsStr::from_bytes(&m.name));
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if !meta.is_file() {
                return None;
            }
            if let Some(header) = &m.header {
                let mut start = vec![0u8; header.len()];
                std::fs::File::open(&path)
                    .ok()?
                    .read_exact(&mut start)
                    .ok()?;
                if &start != header {
                    return None;
                }
            }
            Some(m.name.as_slice())
        })
    }
}

/// The marker of a cache directory (<https://bford.info/cachedir/>): what
/// `--exclude-caches` looks for, as restic, borg and tar do.
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_match_names_or_paths() {
        let ex = Excludes::new(&["*.tmp".into(), "/srv/*/cache".into()], &[], None).unwrap();
        assert!(ex.excluded(Path::new("/a/b.tmp")));
        assert!(ex.excluded(Path::new("/srv/app/cache")));
        assert!(!ex.excluded(Path::new("/srv/app/x/cache")));
        assert!(!ex.excluded(Path::new("/a/b.txt")));
        let err = Excludes::new(&["a[".into()], &[], None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("bad --exclude pattern \"a[\""), "{err}");
    }

    #[test]
    fn markers_need_their_header_and_sizes_their_limit() {
        let dir = tempfile::tempdir().unwrap();
        let ex = Excludes::new(&[], &[CACHEDIR_TAG.into(), ".nobackup".into()], Some(10)).unwrap();
        assert_eq!(ex.marker_in(dir.path()), None);
        std::fs::write(dir.path().join("CACHEDIR.TAG"), b"no signature").unwrap();
        assert_eq!(ex.marker_in(dir.path()), None);
        std::fs::write(
            dir.path().join("CACHEDIR.TAG"),
            b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
        )
        .unwrap();
        assert_eq!(ex.marker_in(dir.path()), Some(&b"CACHEDIR.TAG"[..]));
        std::fs::write(dir.path().join("big"), [0u8; 11]).unwrap();
        std::fs::write(dir.path().join("small"), [0u8; 10]).unwrap();
        let meta = |n: &str| std::fs::metadata(dir.path().join(n)).unwrap();
        assert!(ex.too_large(&meta("big")) && !ex.too_large(&meta("small")));
        assert!(!ex.too_large(&std::fs::metadata(dir.path()).unwrap()));
        let err = Excludes::new(&[], &["a/b".into()], None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a path"), "{err}");
    }
}
