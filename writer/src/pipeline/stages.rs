//! The pipeline's threads, each a loop over its channel: a worker
//! compresses and encrypts chunks into its own data pack, the tree builder
//! writes each directory's tree once its chunks have locations (and the
//! file records with them), an uploader stores sealed packs.

use super::{DataJob, Lookup, PendingDir, PendingEntry, Ref, Shared, Slot};
use crate::pack::{Packer, SealedPack};
use crate::BackupError;
use coffer_core::format::index::PackKind;
use coffer_core::format::tree::{Location, Tree, MAX_BLOB_LEN};
use coffer_core::sync::lock;
use crossbeam_channel::{Receiver, Sender};

/// The open pack of `kind`, after sending it off and opening a new one if
/// a blob of `plain_len` bytes might not fit in it.
pub(super) fn packer_with_room<'a>(
    s: &Shared,
    kind: PackKind,
    packer: &'a mut Option<Packer>,
    plain_len: usize,
    packs: &Sender<SealedPack>,
) -> Result<&'a mut Packer, BackupError> {
    if let Some(full) = packer.take_if(|p| !p.has_room(plain_len, s.pack_size)) {
        send_pack(packs, full)?;
    }
    match packer {
        Some(p) => Ok(p),
        None => {
            let buffer = s.buffers.take(s.pack_size as usize);
            let id = s.horizon.pack_id();
            Ok(packer.insert(Packer::new(id, &s.recipients, kind, s.level, buffer)?))
        }
    }
}

pub(super) fn worker(s: &Shared, batches: Receiver<Vec<DataJob>>, packs: Sender<SealedPack>) {
    let mut packer: Option<Packer> = None;
    for job in batches.into_iter().flatten() {
        if s.failed() {
            job.slot.set(None);
            continue;
        }
        let added = (|| {
            let p = packer_with_room(s, PackKind::Data, &mut packer, job.data.len(), &packs)?;
            let due = s.horizon.due(p.id(), job.again);
            let loc = p.add(job.id, &job.data, due)?;
            job.slot.set(Some((loc, due)));
            Ok::<_, BackupError>(())
        })();
        if let Err(e) = added {
            job.slot.set(None);
            s.fail(e);
        }
    }
    if let Some(p) = packer.filter(|p| !p.is_empty()) {
        if let Err(e) = send_pack(&packs, p) {
            s.fail(e);
        }
    }
}

pub(super) fn send_pack(tx: &Sender<SealedPack>, packer: Packer) -> Result<(), BackupError> {
    tx.send(packer.seal())
        .map_err(|_| BackupError::Pipeline("the upload threads stopped".into()))
}

pub(super) fn tree_builder(s: &Shared, dirs: Receiver<PendingDir>, packs: Sender<SealedPack>) {
    let mut packer: Option<Packer> = None;
    for dir in dirs {
        if s.failed() {
            dir.slot.set(None);
            continue;
        }
        match build_tree(s, dir.entries, &mut packer, &packs) {
            Ok(placed) => dir.slot.set(Some(placed)),
            Err(e) => {
                dir.slot.set(None);
                s.fail(e);
            }
        }
    }
    if let Some(p) = packer.filter(|p| !p.is_empty()) {
        if let Err(e) = send_pack(&packs, p) {
            s.fail(e);
        }
    }
}

/// Writes one directory's tree; where it is and when it comes due.
pub(super) fn build_tree(
    s: &Shared,
    entries: Vec<PendingEntry>,
    packer: &mut Option<Packer>,
    packs: &Sender<SealedPack>,
) -> Result<(Location, i64), BackupError> {
    let unplaced = || BackupError::Pipeline("a blob could not be stored".into());
    let mut tree = Tree {
        entries: Vec::with_capacity(entries.len()),
    };
    for pe in entries {
        let mut entry = pe.entry;
        entry.chunks = pe
            .chunks
            .iter()
            .map(Ref::resolve)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(unplaced)?;
        entry.subtree = match pe.subtree {
            Some(r) => Some(r.resolve().ok_or_else(unplaced)?),
            None => None,
        };
        if let Some((path, mut record)) = pe.record {
            record.chunks = entry.chunks.clone();
            // The walker counted the known chunks; the new ones are due
            // when the packs they went into say.
            record.due = pe
                .chunks
                .iter()
                .filter_map(Ref::pending_due)
                .fold(record.due, i64::min);
            lock(&s.state).set_file(&path, &record)?;
        }
        tree.entries.push(entry);
    }
    let json = tree.to_json();
    fits_readers(json.len(), tree.entries.len())?;
    let id = s.key.blob_id(&json);
    // Before taking the map: sending a pack waits for an uploader, and
    // uploaders take the map.
    let p = packer_with_room(s, PackKind::Tree, packer, json.len(), packs)?;
    let mut pending = lock(&s.pending);
    let again = match s.lookup(&pending, &id)? {
        Lookup::Reuse(Ref::Known(loc), due) => return Ok((loc, due)),
        Lookup::Reuse(Ref::Pending(slot), _) => {
            drop(pending); // never wait on a slot while holding the map
            return slot.wait().ok_or_else(unplaced);
        }
        Lookup::Due => true,
        Lookup::New => false,
    };
    let due = s.horizon.due(p.id(), again);
    let loc = p.add(id, &json, due)?;
    pending.insert(id, Slot::filled(loc, due));
    Ok((loc, due))
}

/// Fails the run when a directory's tree (of `entries` entries) would be
/// `len` bytes, more than readers take ([`MAX_BLOB_LEN`]): a snapshot
/// holding it would never restore, so none is written.
pub(super) fn fits_readers(len: usize, entries: usize) -> Result<(), BackupError> {
    if len as u64 > MAX_BLOB_LEN {
        return Err(BackupError::Pipeline(format!(
            "a directory of {entries} entries makes a tree of {len} bytes, more than the \
             {MAX_BLOB_LEN} readers take; split it or exclude part of it"
        )));
    }
    Ok(())
}

pub(super) fn uploader(s: &Shared, packs: Receiver<SealedPack>) {
    for pack in packs {
        if s.failed() {
            continue;
        }
        if let Err(e) = s.store_pack(pack) {
            s.fail(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree readers would refuse (over MAX_BLOB_LEN) fails the run; one
    /// at the limit is stored.
    #[test]
    fn a_tree_over_the_readers_limit_fails_the_run() {
        let limit = MAX_BLOB_LEN as usize;
        assert!(fits_readers(limit, 5).is_ok());
        let err = fits_readers(limit + 1, 5_000_000).unwrap_err().to_string();
        assert!(
            err.contains("5000000 entries") && err.contains("readers take"),
            "{err}"
        );
    }
}
