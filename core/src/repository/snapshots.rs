//! Snapshots: listed, fetched several at once, opened on every core (or
//! read back from the opened-snapshot cache), their signatures and
//! revocations checked, and one picked by `latest` or an id prefix.

use super::key_chain::KeyChain;
use super::{object_id, Repository};
use crate::backend::{ObjectKey, ObjectKind};
use crate::error::{Error, Result};
use crate::format::key_change;
use crate::format::snapshot::{host_tag, parse_object_name, Selection, Snapshot, SnapshotInfo};

/// Snapshot objects fetched at once when listing them.
const SNAPSHOT_LOADS: usize = 32;
/// Stored bytes of snapshot objects fetched and opened as one batch.
const SNAPSHOT_BATCH_BYTES: u64 = 64 << 20;

impl Repository {
    /// Every genuine snapshot, oldest first. Each object's name is checked
    /// against the SHA-256 of its bytes, and its signature against the
    /// writers `config` lists. A damaged or forged snapshot object is left
    /// out with a warning (`coffer check` reports it), so it hides no other;
    /// failing to read one is an error.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        use futures_util::stream::{self, StreamExt};
        let mut out = Vec::new();
        let mut missing = Vec::new();
        let first = crate::sync::lock(&self.first_listing).take();
        let listing = match first {
            Some(listing) => listing,
            None => self.backend.list(ObjectKind::Snapshot).await?,
        };
        for listed in listing {
            match self.cached_snapshot(&listed.name) {
                Some(info) => out.push(info),
                None => missing.push(listed),
            }
        }
        missing.sort_by(|a, b| a.name.cmp(&b.name));
        let mut not_for_us = 0;
        // Several fetches at once (over a WAN each is a round trip), then
        // the opening (two public-key operations each) on every core; a
        // batch at a time, so what is held at once is bounded by
        // SNAPSHOT_BATCH_BYTES however many (or large) objects are listed.
        for batch in byte_batches(missing, SNAPSHOT_BATCH_BYTES, ObjectKind::Snapshot) {
            let fetched: Vec<(String, Result<Vec<u8>>)> = stream::iter(batch)
                .map(|name| async move {
                    let bytes = self.fetch_named(ObjectKind::Snapshot, &name).await;
                    (name, bytes)
                })
                .buffered(SNAPSHOT_LOADS)
                .collect()
                .await;
            for loaded in self.open_snapshots(fetched) {
                match loaded {
                    Ok(info) => out.push(info),
                    Err(e) if e.is_not_for_this_key() => {
                        tracing::debug!("{e}");
                        not_for_us += 1;
                    }
                    Err(e @ (Error::Damaged { .. } | Error::Forged { .. })) => {
                        tracing::warn!("{e}; left out (run `coffer check`)");
                    }
                    // Archived (a put-only credential can store an object
                    // in any class): listed without it; prune, which must
                    // know every snapshot, stops on it instead.
                    Err(e @ Error::Cold(_)) => tracing::warn!("{e}; left out"),
                    Err(e) => return Err(e),
                }
            }
        }
        if not_for_us > 0 {
            tracing::warn!(
                "{not_for_us} snapshots are not encrypted to this key (written before it became \
                 a recipient, or after it was removed): left out"
            );
        }
        out.sort_by_key(|s| (s.snapshot.time(), s.id));
        Ok(out)
    }

    /// Opens fetched snapshot objects on every core (in their order); a
    /// fetch that failed stays its error.
    fn open_snapshots(&self, fetched: Vec<(String, Result<Vec<u8>>)>) -> Vec<Result<SnapshotInfo>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_thread = fetched.len().div_ceil(threads).max(16);
        let mut parts: Vec<Vec<(String, Result<Vec<u8>>)>> = Vec::new();
        let mut rest = fetched.into_iter().peekable();
        while rest.peek().is_some() {
            parts.push(rest.by_ref().take(per_thread).collect());
        }
        std::thread::scope(|scope| {
            let opening: Vec<_> = parts
                .into_iter()
                .map(|part| {
                    scope.spawn(move || {
                        part.into_iter()
                            .map(|(name, bytes)| bytes.and_then(|b| self.open_snapshot(&name, &b)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            opening
                .into_iter()
                .flat_map(|part| {
                    part.join().unwrap_or_else(|_| {
                        vec![Err(Error::Config(
                            "a thread opening snapshots panicked".into(),
                        ))]
                    })
                })
                .collect()
        })
    }

    /// The names (ids) of every stored snapshot object, sorted.
    pub async fn snapshot_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .backend
            .list(ObjectKind::Snapshot)
            .await?
            .into_iter()
            .map(|o| o.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Reads, checks and decrypts the snapshot object `name`; it must be
    /// signed by a writer `config` lists (unless it lists none), and its
    /// host tag, if any, must match the host inside.
    pub async fn load_snapshot(&self, name: &str) -> Result<SnapshotInfo> {
        if let Some(info) = self.cached_snapshot(name) {
            return Ok(info);
        }
        let bytes = self.fetch_named(ObjectKind::Snapshot, name).await?;
        self.open_snapshot(name, &bytes)
    }

    /// Drops snapshot `name` from the opened-snapshot cache (it was
    /// deleted from the store).
    pub fn uncache_snapshot(&self, name: &str) {
        if let Some(opened) = &self.opened {
            opened.remove(name);
        }
    }

    /// Snapshot `name` from the opened-snapshot cache, if it holds it (an
    /// entry that opens but does not read as this snapshot is dropped).
    fn cached_snapshot(&self, name: &str) -> Option<SnapshotInfo> {
        let opened = self.opened.as_ref()?;
        let (signer, json) = opened.read(name)?;
        let read = self.snapshot_info(name, &json, signer);
        if let Err(e) = &read {
            tracing::warn!("opened-snapshot cache: {e}; opening it again from the store");
            opened.remove(name);
        }
        read.ok()
    }

    /// Decrypts and checks the fetched snapshot object `name` (kept in the
    /// opened-snapshot cache if there is one).
    fn open_snapshot(&self, name: &str, bytes: &[u8]) -> Result<SnapshotInfo> {
        let (json, signer) = self.open_snapshot_object(name, bytes)?;
        let info = self.snapshot_info(name, &json, signer)?;
        if let Some(opened) = &self.opened {
            opened.store(name, info.signer.as_deref(), &json);
        }
        Ok(info)
    }

    /// Snapshot object `name`'s decrypted JSON read, its host tag (if
    /// any) checked against the host inside; `signer` is the fingerprint
    /// of the writer certificate that signed it.
    fn snapshot_info(
        &self,
        name: &str,
        json: &[u8],
        signer: Option<String>,
    ) -> Result<SnapshotInfo> {
        let key = ObjectKey::new(ObjectKind::Snapshot, name);
        let id = object_id(&key)?;
        let object = key.path();
        let snapshot = Snapshot::from_json(json, &object)?;
        if let Some((Some(tag), _)) = parse_object_name(name) {
            if tag != host_tag(&self.config.id, &snapshot.host) {
                return Err(Error::damaged(
                    &object,
                    format!(
                        "its name's host tag is not that of host {:?}",
                        snapshot.host
                    ),
                ));
            }
        }
        Ok(SnapshotInfo {
            name: name.to_string(),
            id,
            snapshot,
            signer,
        })
    }

    /// Decrypts the snapshot object `name`, fetched as `bytes`, and checks
    /// its signature: its JSON, and the fingerprint of the writer
    /// certificate that signed it (`None` in a repository from before
    /// signed snapshots).
    fn open_snapshot_object(&self, name: &str, bytes: &[u8]) -> Result<(Vec<u8>, Option<String>)> {
        let object = ObjectKey::new(ObjectKind::Snapshot, name).path();
        let chain = self.key_chain();
        if chain.writers.is_empty() {
            return Ok((self.opener.open(&object, bytes)?, None));
        }
        let (json, signer) = self.opener.open_signed(&object, bytes, &chain.writers)?;
        check_not_revoked(&chain, &object, name, &signer)?;
        Ok((json, Some(signer)))
    }

    /// The snapshot `spec` names: `latest`, or a unique prefix of an id.
    pub async fn find_snapshot(&self, spec: &str) -> Result<SnapshotInfo> {
        self.find_snapshot_in(spec, &Selection::default()).await
    }

    /// The snapshot `spec` names among those `selection` selects:
    /// `latest` is the newest of them.
    pub async fn find_snapshot_in(
        &self,
        spec: &str,
        selection: &Selection,
    ) -> Result<SnapshotInfo> {
        let all = self.snapshots().await?;
        select_snapshot(all, spec, selection)
    }

    /// The snapshots `selection` selects, oldest first.
    pub async fn selected_snapshots(&self, selection: &Selection) -> Result<Vec<SnapshotInfo>> {
        let mut all = self.snapshots().await?;
        all.retain(|s| selection.matches(s));
        Ok(all)
    }
}

/// Refuses snapshot `name`, signed by the writer certificate `signer`, if
/// that writer was revoked before it was stored: whatever time it claims,
/// only the snapshots the revocation names stay.
fn check_not_revoked(chain: &KeyChain, object: &str, name: &str, signer: &str) -> Result<()> {
    let Some(writer) = chain.state.writer_by_fingerprint(signer) else {
        return Ok(()); // (every certificate `writers` holds is a writer's)
    };
    match &writer.revoked {
        Some(revoked) if !revoked.kept.contains(name) => Err(Error::Forged {
            key: object.to_string(),
            what: format!(
                "signed by writer {:?}, which keys/{} revoked ({}) before this snapshot \
                 was stored",
                writer.name,
                key_change::object_name(revoked.seq),
                revoked.time
            ),
        }),
        _ => Ok(()),
    }
}

/// The names of `listed` objects of `kind` in batches of at most `bytes`
/// stored bytes (an object counted at no more than its kind's cap, which
/// its read enforces), in their order; one object over `bytes` is a batch
/// of its own.
fn byte_batches(
    listed: Vec<crate::backend::ObjectInfo>,
    bytes: u64,
    kind: ObjectKind,
) -> Vec<Vec<String>> {
    let mut batches: Vec<Vec<String>> = Vec::new();
    let mut held = u64::MAX;
    for object in listed {
        let size = object.size.min(kind.max_size());
        if held.saturating_add(size) > bytes {
            batches.push(Vec::new());
            held = 0;
        }
        held += size;
        if let Some(batch) = batches.last_mut() {
            batch.push(object.name);
        }
    }
    batches
}

/// The snapshot `spec` names among `all` (oldest first) that `selection`
/// selects: `latest` (the newest of them) or a unique prefix of an id.
fn select_snapshot(
    all: Vec<SnapshotInfo>,
    spec: &str,
    selection: &Selection,
) -> Result<SnapshotInfo> {
    if all.is_empty() {
        return Err(Error::Snapshot("the repository has no snapshot yet".into()));
    }
    let flags = selection.describe();
    let by = if flags.is_empty() {
        String::new()
    } else {
        format!(" selected by {flags}")
    };
    let mut selected: Vec<SnapshotInfo> =
        all.into_iter().filter(|s| selection.matches(s)).collect();
    if spec == "latest" {
        return selected
            .pop()
            .ok_or_else(|| Error::Snapshot(format!("no snapshot is{by}")));
    }
    let spec_lc = spec.to_ascii_lowercase();
    selected.retain(|s| s.id.to_hex().starts_with(&spec_lc));
    match selected.len() {
        1 => Ok(selected.remove(0)),
        0 => {
            let list = format!("coffer snapshots {flags}");
            Err(Error::Snapshot(format!(
                "no snapshot{by} matches {spec:?}; `{}` lists them",
                list.trim_end()
            )))
        }
        n => {
            let mut hosts: Vec<&str> = selected.iter().map(|s| s.snapshot.host.as_str()).collect();
            hosts.sort_unstable();
            hosts.dedup();
            let hint = if hosts.len() > 1 {
                format!(
                    " (of hosts {}): give more digits of the id, or --host",
                    hosts.join(", ")
                )
            } else {
                ": give more digits of the id".to_string()
            };
            Err(Error::Snapshot(format!(
                "{n} snapshots match {spec:?}{hint}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ObjectInfo;

    fn listed(sizes: &[u64]) -> Vec<ObjectInfo> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| ObjectInfo {
                name: format!("s{i}"),
                size,
                modified: None,
                storage_class: None,
            })
            .collect()
    }

    /// Batches hold at most their bytes (an object counted at no more than
    /// its kind's cap), in order; one larger object is a batch alone.
    #[test]
    fn snapshot_objects_are_opened_in_batches_bounded_in_bytes() {
        let names = |b: &[Vec<String>]| b.iter().map(|v| v.join(",")).collect::<Vec<_>>();
        let b = byte_batches(listed(&[40, 30, 30, 100, 5]), 70, ObjectKind::Snapshot);
        assert_eq!(names(&b), ["s0,s1", "s2", "s3", "s4"]);
        // A listed size past the cap counts as the cap: its read stops there.
        let huge = ObjectKind::Snapshot.max_size();
        let b = byte_batches(listed(&[u64::MAX, 1, 1]), huge + 1, ObjectKind::Snapshot);
        assert_eq!(names(&b), ["s0,s1", "s2"]);
        assert!(byte_batches(Vec::new(), 10, ObjectKind::Snapshot).is_empty());
    }
}
