//! `coffer ls`: a path of a snapshot, a directory's entries, or everything
//! below it (depth first, as `ls -R` and `restic ls` print), streamed: what
//! is held is the directories on the current path, whatever the snapshot.

use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{nested_too_deep, Entry, Kind, Tree, MAX_DEPTH};
use crate::repository::Repository;
use std::sync::Arc;

/// What `ls` could not list, each with its path.
#[derive(Debug, Default)]
pub struct LsReport {
    /// Entries printed.
    pub entries: u64,
    /// Directories that could not be read (damage, nesting), each with why.
    pub problems: Vec<String>,
}

/// Calls `each(path, entry)` for `path` in `snapshot` if it is not a
/// directory, else for each entry of it (with `recursive`, of everything
/// below it). Paths are absolute inside the snapshot.
pub async fn ls(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    recursive: bool,
    mut each: impl FnMut(&str, &Entry) -> std::io::Result<()>,
) -> Result<LsReport> {
    let top = repo.resolve(snapshot, path).await?;
    let base = format!("/{}", path.trim_matches('/'));
    let mut report = LsReport::default();
    let (Kind::Dir, Some(loc)) = (top.kind, top.subtree) else {
        each(&base, &top).map_err(io)?;
        report.entries = 1;
        return Ok(report);
    };
    let dir = if base == "/" { String::new() } else { base };
    // The directories being listed: each with its path and how far.
    let mut stack: Vec<(String, Arc<Tree>, usize)> = vec![(dir, repo.shared_tree(&loc).await?, 0)];
    while let Some((dir, tree, next)) = stack.last_mut() {
        let Some(entry) = tree.entries.get(*next) else {
            stack.pop();
            continue;
        };
        *next += 1;
        let path = format!("{dir}/{}", String::from_utf8_lossy(&entry.name));
        each(&path, entry).map_err(io)?;
        report.entries += 1;
        let (true, Kind::Dir, Some(sub)) = (recursive, entry.kind, entry.subtree) else {
            continue;
        };
        if stack.len() >= MAX_DEPTH {
            report
                .problems
                .push(format!("{path}: {}", nested_too_deep()));
            continue;
        }
        match repo.shared_tree(&sub).await {
            Ok(tree) => stack.push((path, tree, 0)),
            Err(e) => report.problems.push(format!("{path}: {e}")),
        }
    }
    Ok(report)
}

fn io(e: std::io::Error) -> crate::Error {
    crate::Error::Io {
        path: "standard output".into(),
        what: "writing the listing".into(),
        source: e,
    }
}
