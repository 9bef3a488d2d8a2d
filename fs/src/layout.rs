//! How snapshots are named and grouped in a mounted repository.
//!
//! ```text
//! snapshots/<time>         every snapshot, by its time to the second (RFC 3339 UTC);
//!                          a second one in the same second gets "-2", and so on
//! snapshots/latest         symlink to the newest
//! hosts/<host>/<time>      the same snapshots grouped by host
//! hosts/<host>/latest      symlink to the host's newest
//! tags/<tag>/<time>        ... and by tag (tags/<tag>/latest too)
//! ids/<first 8 hex of id>  ... and by id
//! ```

use coffer_core::format::encoding::display_time;
use coffer_core::format::snapshot::SnapshotInfo;
use std::collections::BTreeMap;

/// The names of a list of snapshots.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `snapshots/<name>` → index into the list, in time order.
    pub by_time: Vec<(String, usize)>,
    /// host → its snapshots' names and indexes.
    pub by_host: BTreeMap<String, Vec<(String, usize)>>,
    /// tag → its snapshots' names and indexes.
    pub by_tag: BTreeMap<String, Vec<(String, usize)>>,
    /// short id → index.
    pub by_id: Vec<(String, usize)>,
}

impl Layout {
    /// Names `snapshots` (sorted oldest first, as `Repository::snapshots`
    /// returns them).
    pub fn new(snapshots: &[SnapshotInfo]) -> Self {
        let mut layout = Layout::default();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, s) in snapshots.iter().enumerate() {
            let base = s
                .snapshot
                .time()
                .map(display_time)
                .unwrap_or_else(|| s.snapshot.time.clone());
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            let name = if *n == 1 { base } else { format!("{base}-{n}") };
            layout.by_time.push((name.clone(), i));
            if is_component(&s.snapshot.host) {
                layout
                    .by_host
                    .entry(s.snapshot.host.clone())
                    .or_default()
                    .push((name.clone(), i));
            }
            for tag in s.snapshot.tags.iter().filter(|t| is_component(t)) {
                layout
                    .by_tag
                    .entry(tag.clone())
                    .or_default()
                    .push((name.clone(), i));
            }
            layout.by_id.push((s.id.to_hex()[..8].to_string(), i));
        }
        layout
    }

    /// The name of the newest snapshot.
    pub fn latest(&self) -> Option<&str> {
        self.by_time.last().map(|(n, _)| n.as_str())
    }
}

/// Whether `s` can be a single path component.
fn is_component(s: &str) -> bool {
    coffer_core::format::tree::is_safe_name(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::format::id::{BlobId, ObjectId, PackId};
    use coffer_core::format::snapshot::{Snapshot, SnapshotStats};
    use coffer_core::format::tree::Location;

    fn snap(n: u8, time: &str, host: &str, tags: &[&str]) -> SnapshotInfo {
        SnapshotInfo {
            name: ObjectId([n; 32]).to_hex(),
            id: ObjectId([n; 32]),
            snapshot: Snapshot {
                time: time.into(),
                host: host.into(),
                user: "u".into(),
                paths: vec![],
                tags: tags.iter().map(|t| t.to_string()).collect(),
                tree: Location {
                    id: BlobId([0; 32]),
                    pack: PackId([0; 32]),
                    offset: 0,
                    length: 0,
                    raw_length: 0,
                },
                program: String::new(),
                stats: SnapshotStats::default(),
            },
            signer: None,
        }
    }

    #[test]
    fn same_second_gets_a_suffix_and_groups_hold_names() {
        let list = [
            snap(1, "2026-11-23T03:00:00.1Z", "db", &["nightly"]),
            snap(2, "2026-11-23T03:00:00.7Z", "web", &["nightly", "a/b"]),
            snap(3, "2026-11-24T03:00:00Z", "db", &[]),
        ];
        let l = Layout::new(&list);
        let names: Vec<&str> = l.by_time.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "2026-11-23T03:00:00Z",
                "2026-11-23T03:00:00Z-2",
                "2026-11-24T03:00:00Z"
            ]
        );
        assert_eq!(l.latest(), Some("2026-11-24T03:00:00Z"));
        assert_eq!(l.by_host["db"].len(), 2);
        assert_eq!(l.by_tag["nightly"][1].0, "2026-11-23T03:00:00Z-2");
        assert!(
            !l.by_tag.contains_key("a/b"),
            "a tag with / is not a directory name"
        );
        assert_eq!(l.by_id[0].0, "01010101");
    }
}
