//! The progress display's totals for the local tree: its regular files and
//! their bytes, counted as the walk will see them, on a thread beside the
//! backup.

use super::Excludes;
use coffer_core::progress::Progress;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Counts the regular files below `paths` and their bytes into
/// `progress`'s totals. Stops early when the backup ends.
pub(super) fn scan(
    paths: &[PathBuf],
    excludes: &Excludes,
    one_file_system: bool,
    progress: &Progress,
) {
    // Each path with the device of its source (with one_file_system).
    let mut stack: Vec<(PathBuf, Option<u64>)> = paths.iter().map(|p| (p.clone(), None)).collect();
    while let Some((path, source_dev)) = stack.pop() {
        if progress.stopped() {
            return;
        }
        if excludes.excluded(&path) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            if !excludes.too_large(&meta) {
                progress.add_total(meta.len());
            }
        } else if meta.is_dir() {
            let dev = one_file_system.then(|| source_dev.unwrap_or(meta.dev()));
            if dev.is_some_and(|d| d != meta.dev()) {
                continue; // another file system: the walk stores it empty
            }
            if excludes.marker_in(&path).is_some() {
                continue; // only its marker is stored
            }
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| (e.path(), dev)));
            }
        }
    }
}
