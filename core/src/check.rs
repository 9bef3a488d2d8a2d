//! `coffer check`: proves that every snapshot's trees and chunks are
//! present and well-formed, reading only snapshots, trees and the pack
//! listing (object sizes). With [`CheckOptions::read_data`] it also reads,
//! decrypts and verifies (a share of) the file chunks. Damage is reported
//! per snapshot and path; the check goes on past it.

use crate::error::Result;
use crate::id::{BlobId, PackId};
use crate::repository::{root_entry, Repository};
use crate::tree::{Kind, Location};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The snapshot (8 hex digits) it was found under.
    pub snapshot: String,
    /// The path in the snapshot (empty: the snapshot object itself).
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// How much to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Read and verify file chunks too: `Some(share)` with share in
    /// (0, 1]; each distinct chunk is picked (or not) by its id, so the same
    /// share of a repository picks the same chunks every time.
    pub read_data: Option<f64>,
}

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Snapshot objects checked.
    pub snapshots: usize,
    /// Distinct trees read.
    pub trees: u64,
    /// Chunk references checked against the packs.
    pub chunks: u64,
    /// Packs listed.
    pub packs: usize,
    /// Distinct chunks read and verified (with `read_data`).
    pub chunks_read: u64,
    /// Their stored bytes.
    pub bytes_read: u64,
    /// Everything wrong, in the order found.
    pub damage: Vec<Damage>,
}

/// Checks every snapshot of `repo`. Fails only when the repository cannot
/// be listed; anything damaged is in the report.
pub async fn check(repo: &Repository, opts: CheckOptions) -> Result<CheckReport> {
    let packs = repo.pack_sizes().await?;
    let mut checker = Checker {
        repo,
        packs: &packs,
        read_share: opts
            .read_data
            .map(|s| (s.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u32),
        verified: HashSet::new(),
        clean: HashSet::new(),
        report: CheckReport {
            packs: packs.len(),
            ..CheckReport::default()
        },
        snapshot: String::new(),
    };
    for name in repo.snapshot_names().await? {
        checker.snapshot = crate::snapshot::short_name(&name);
        checker.report.snapshots += 1;
        match repo.load_snapshot(&name).await {
            Ok(info) => {
                let root = root_entry(&info.snapshot);
                if let Some(loc) = root.subtree {
                    checker.tree(loc, String::from("/")).await;
                }
            }
            Err(e) => checker.damaged(String::new(), e.to_string()),
        }
    }
    Ok(checker.report)
}

struct Checker<'a> {
    repo: &'a Repository,
    packs: &'a HashMap<PackId, u64>,
    /// With read-data: chunks whose id's first 4 bytes are at most this
    /// are read.
    read_share: Option<u32>,
    /// Chunks read and found whole.
    verified: HashSet<BlobId>,
    /// Trees whose whole subtree was found whole: not read again.
    clean: HashSet<BlobId>,
    report: CheckReport,
    /// The snapshot being checked.
    snapshot: String,
}

impl Checker<'_> {
    fn damaged(&mut self, path: String, problem: String) {
        self.report.damage.push(Damage {
            snapshot: self.snapshot.clone(),
            path,
            problem,
        });
    }

    /// Whether `loc` lies inside a stored pack; the problem if not.
    fn stored(&self, loc: &Location) -> std::result::Result<(), String> {
        let Some(&size) = self.packs.get(&loc.pack) else {
            return Err(format!("pack {} is missing", loc.pack));
        };
        match loc.offset.checked_add(loc.length) {
            Some(end) if end <= size => Ok(()),
            _ => Err(format!(
                "pack {} is {size} bytes, too short for a blob at {}+{}",
                loc.pack, loc.offset, loc.length
            )),
        }
    }

    /// Checks a file's chunks: stored, and with read-data the picked ones
    /// read and verified.
    async fn file(&mut self, chunks: &[Location]) -> std::result::Result<(), String> {
        for (i, chunk) in chunks.iter().enumerate() {
            self.report.chunks += 1;
            self.stored(chunk)?;
            let picked = self.read_share.is_some_and(|share| {
                u32::from_be_bytes([chunk.id.0[0], chunk.id.0[1], chunk.id.0[2], chunk.id.0[3]])
                    <= share
            });
            if !picked || self.verified.contains(&chunk.id) {
                continue;
            }
            self.repo
                .read_blob(chunk)
                .await
                .map_err(|e| format!("chunk {} of {}: {e}", i + 1, chunks.len()))?;
            self.verified.insert(chunk.id);
            self.report.chunks_read += 1;
            self.report.bytes_read += chunk.length;
        }
        Ok(())
    }

    /// Checks the tree at `loc` (the directory `path`) and everything below
    /// it; returns whether all of it is whole.
    fn tree(&mut self, loc: Location, path: String) -> Pin<Box<dyn Future<Output = bool> + '_>> {
        Box::pin(async move {
            if self.clean.contains(&loc.id) {
                return true;
            }
            if let Err(problem) = self.stored(&loc) {
                self.damaged(path, format!("directory listing lost: {problem}"));
                return false;
            }
            let tree = match self.repo.read_tree(&loc).await {
                Ok(t) => t,
                Err(e) => {
                    self.damaged(path, format!("directory listing unreadable: {e}"));
                    return false;
                }
            };
            self.report.trees += 1;
            let mut whole = true;
            for entry in tree.entries {
                let child = format!(
                    "{}{}{}",
                    path,
                    if path.ends_with('/') { "" } else { "/" },
                    String::from_utf8_lossy(&entry.name)
                );
                match (entry.kind, entry.subtree) {
                    (Kind::Dir, Some(sub)) => whole &= self.tree(sub, child).await,
                    (Kind::File, _) => {
                        if let Err(problem) = self.file(&entry.chunks).await {
                            self.damaged(child, problem);
                            whole = false;
                        }
                    }
                    _ => {}
                }
            }
            if whole {
                self.clean.insert(loc.id);
            }
            whole
        })
    }
}
