//! `coffer forget`: removes the snapshot objects a retention policy does
//! not keep. Snapshots are grouped by host and paths (the policy applies to
//! each group alone); `--host` and `--tag` narrow which snapshots are
//! considered at all, the rest are left alone. Deleting a snapshot object
//! frees no data: `prune` does that.

pub mod retention;

use crate::backend::{ObjectKey, ObjectKind};
use crate::error::Result;
use crate::format::snapshot::SnapshotInfo;
use crate::repository::Repository;
use retention::{Policy, Verdict};

pub use crate::format::snapshot::Selection;

/// One group's snapshots (oldest first) and what the policy says of each.
#[derive(Debug, Clone)]
pub struct Group {
    /// The host the group's snapshots came from.
    pub host: String,
    /// Their source paths.
    pub paths: Vec<String>,
    /// Each snapshot with its verdict.
    pub snapshots: Vec<(SnapshotInfo, Verdict)>,
}

/// Applies `policy` to each group of the selected snapshots. Deletes
/// nothing.
pub async fn plan(repo: &Repository, policy: &Policy, select: &Selection) -> Result<Vec<Group>> {
    let mut groups: Vec<Group> = Vec::new();
    for s in repo.snapshots().await? {
        if !select.matches(&s) {
            continue;
        }
        let (host, paths) = (&s.snapshot.host, &s.snapshot.paths);
        match groups
            .iter_mut()
            .find(|g| &g.host == host && &g.paths == paths)
        {
            Some(g) => g.snapshots.push((s, Verdict::default())),
            None => groups.push(Group {
                host: host.clone(),
                paths: paths.clone(),
                snapshots: vec![(s, Verdict::default())],
            }),
        }
    }
    for g in &mut groups {
        let times: Vec<_> = g
            .snapshots
            .iter()
            .map(|(s, _)| {
                s.snapshot
                    .time()
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            })
            .collect();
        for ((_, verdict), v) in g.snapshots.iter_mut().zip(retention::apply(policy, &times)) {
            *verdict = v;
        }
    }
    groups.sort_by(|a, b| (&a.host, &a.paths).cmp(&(&b.host, &b.paths)));
    Ok(groups)
}

/// The snapshots of `groups` that their verdict does not keep.
pub fn doomed(groups: &[Group]) -> impl Iterator<Item = &SnapshotInfo> {
    groups
        .iter()
        .flat_map(|g| &g.snapshots)
        .filter(|(_, v)| !v.keep())
        .map(|(s, _)| s)
}

/// Deletes the snapshot objects of `groups` that their verdict does not
/// keep; returns how many.
pub async fn forget(repo: &Repository, groups: &[Group]) -> Result<usize> {
    let mut removed = 0;
    for s in doomed(groups) {
        repo.backend()
            .delete(&ObjectKey::new(ObjectKind::Snapshot, s.name.as_str()))
            .await?;
        repo.uncache_snapshot(&s.name);
        removed += 1;
    }
    Ok(removed)
}
