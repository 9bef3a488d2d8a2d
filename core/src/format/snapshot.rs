//! Snapshots: the last object a backup writes, pointing at its root tree.

use crate::error::{Error, Result};
use crate::format::encoding::parse_rfc3339;
use crate::format::id::ObjectId;
use crate::format::tree::Location;
use serde::{Deserialize, Serialize};

/// Counts a backup run reports, stored in its snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Other entries (symlinks, devices, fifos, sockets).
    pub others: u64,
    /// Total size of the files' contents.
    pub bytes: u64,
    /// Files whose contents were read (the rest were unchanged).
    pub files_read: u64,
    /// Bytes read from files.
    pub bytes_read: u64,
    /// Blobs this run stored (chunks and trees).
    pub new_blobs: u64,
    /// Plaintext bytes of those blobs.
    pub new_bytes: u64,
    /// Bytes of packs this run stored.
    pub stored_bytes: u64,
    /// Packs this run stored.
    pub new_packs: u64,
    /// Source entries that could not be read (and are missing or partial).
    pub errors: u64,
    /// Wall time of the run, milliseconds.
    pub duration_ms: u64,
}

/// One backup version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup started, RFC 3339 UTC with nanoseconds.
    pub time: String,
    /// The host that made it.
    pub host: String,
    /// The user that ran the writer.
    pub user: String,
    /// The source paths (absolute), or the stdin name.
    pub paths: Vec<String>,
    /// Tags given with `--tag`.
    pub tags: Vec<String>,
    /// The root tree.
    pub tree: Location,
    /// The program that wrote it, e.g. "coffer 0.1.0".
    pub program: String,
    /// What the run did.
    pub stats: SnapshotStats,
}

/// A snapshot with the id of the object it was read from.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// The object's name under `snapshots/` (see [`object_name`]).
    pub name: String,
    /// SHA-256 of the stored object.
    pub id: ObjectId,
    /// Its contents.
    pub snapshot: Snapshot,
    /// The fingerprint of the writer certificate that signed it (`None`
    /// in a repository from before signed snapshots).
    pub signer: Option<String>,
}

/// Which snapshots a command works on (`--host`, `--tag`, `--path`): all
/// when empty. Several values of one flag are alternatives (any of the
/// hosts, any of the tags); a `--path` must be one of the snapshot's
/// source paths, each given one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only these hosts (empty: all).
    pub hosts: Vec<String>,
    /// Only snapshots with one of these tags (empty: all).
    pub tags: Vec<String>,
    /// Only snapshots that back up every one of these paths (empty: all),
    /// compared without trailing slashes.
    pub paths: Vec<String>,
}

impl Selection {
    /// Whether `s` is selected.
    pub fn matches(&self, s: &SnapshotInfo) -> bool {
        let snap = &s.snapshot;
        let trimmed = |p: &str| p.trim_end_matches('/').to_string();
        (self.hosts.is_empty() || self.hosts.contains(&snap.host))
            && (self.tags.is_empty() || snap.tags.iter().any(|t| self.tags.contains(t)))
            && self
                .paths
                .iter()
                .all(|want| snap.paths.iter().any(|p| trimmed(p) == trimmed(want)))
    }

    /// Whether every snapshot is selected.
    pub fn is_all(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.paths.is_empty()
    }

    /// The selection as its flags read, for messages ("" when all).
    pub fn describe(&self) -> String {
        let flags = (self.hosts.iter().map(|h| format!("--host {h}")))
            .chain(self.tags.iter().map(|t| format!("--tag {t}")))
            .chain(self.paths.iter().map(|p| format!("--path {p}")));
        flags.collect::<Vec<_>>().join(" ")
    }
}

impl Snapshot {
    /// Parses a snapshot's JSON; `object` names it in errors.
    pub fn from_json(bytes: &[u8], object: &str) -> Result<Self> {
        let snap: Snapshot = serde_json::from_slice(bytes)
            .map_err(|e| Error::damaged(object, format!("not a snapshot: {e}")))?;
        parse_rfc3339(&snap.time)
            .ok_or_else(|| Error::damaged(object, format!("bad time {:?}", snap.time)))?;
        if !snap.tree.is_plausible() {
            return Err(Error::damaged(
                object,
                "its root tree reference is out of range",
            ));
        }
        Ok(snap)
    }

    /// Serializes for storage.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The time, parsed.
    pub fn time(&self) -> Option<time::OffsetDateTime> {
        parse_rfc3339(&self.time)
    }
}

/// The host tag of `host` in repository `repo_id`: 16 hex digits of
/// SHA-256("coffer host\0" || repo id || "\0" || host). It lets a key-less
/// monitor pick one host's snapshots from a listing without the host names
/// being readable there (a guessed name can be confirmed, nothing more).
pub fn host_tag(repo_id: &str, host: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"coffer host\0");
    h.update(repo_id.as_bytes());
    h.update(b"\0");
    h.update(host.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// The name of a snapshot object: `<host tag>.<id>`, id = SHA-256 of the
/// object's bytes.
pub fn object_name(repo_id: &str, host: &str, id: &ObjectId) -> String {
    format!("{}.{}", host_tag(repo_id, host), id.to_hex())
}

/// Splits a snapshot object's name into its host tag and id. A bare `<id>`
/// (written before host tags existed) has no tag.
pub fn parse_object_name(name: &str) -> Option<(Option<&str>, ObjectId)> {
    match name.split_once('.') {
        Some((tag, id)) if tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some((Some(tag), ObjectId::from_hex(id)?))
        }
        Some(_) => None,
        None => Some((None, ObjectId::from_hex(name)?)),
    }
}

/// How messages name a snapshot object: the first 8 hex digits of its id
/// (what `coffer snapshots` shows), or the name itself if it is not one.
pub fn short_name(name: &str) -> String {
    match parse_object_name(name) {
        Some((_, id)) => id.to_hex()[..8].to_string(),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_carry_a_host_tag_per_repository() {
        let id = ObjectId::of_bytes(b"x");
        let name = object_name("repo1", "db1", &id);
        let (tag, parsed) = parse_object_name(&name).unwrap();
        assert_eq!(tag, Some(host_tag("repo1", "db1").as_str()));
        assert_eq!(parsed, id);
        assert_ne!(host_tag("repo1", "db1"), host_tag("repo2", "db1"));
        assert_ne!(host_tag("repo1", "db1"), host_tag("repo1", "db2"));
        assert_eq!(parse_object_name(&id.to_hex()), Some((None, id)));
        assert_eq!(short_name(&name), id.to_hex()[..8]);
        assert_eq!(short_name("odd"), "odd");
        assert!(parse_object_name("xyz.abc").is_none());
        assert!(parse_object_name(&format!("{}.x", "0".repeat(16))).is_none());
        assert!(parse_object_name(&format!("short.{}", id.to_hex())).is_none());
    }
}
