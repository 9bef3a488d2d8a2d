//! Reading by location: blobs (one ranged read each, or a whole tree
//! pack through the metadata cache), chunks (through the chunk cache),
//! trees (remembered while walks meet them again), index objects streamed,
//! and a path resolved in a snapshot.

use super::metadata_cache::MetadataCache;
use super::{object_id, root_entry, Repository};
use crate::backend::ranged::RangedReader;
use crate::backend::{ObjectInfo, ObjectKey, ObjectKind};
use crate::crypto::blob;
use crate::error::{Error, Result};
use crate::format;
use crate::format::id::PackId;
use crate::format::index::{PackKind, PackSummary};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Entry, Kind, Location, Tree};
use crate::sync::{self, blocking};
use std::sync::Arc;

impl Repository {
    /// Reads the index object `info` (as listed) as a stream, a range at a
    /// time, decrypting and parsing on the way, and folds each pack it
    /// lists into `acc` with `f`: memory stays flat however large the index
    /// (one may be 256 MiB, and anyone who may write can store one). Its
    /// hash and integrity are known only at its end: what `f` saw counts
    /// only if this returns `Ok`.
    pub async fn fold_index<T: Send + 'static>(
        &self,
        info: &ObjectInfo,
        acc: T,
        mut f: impl FnMut(&mut T, PackSummary) + Send + 'static,
    ) -> Result<T> {
        let key = ObjectKey::new(ObjectKind::Index, info.name.clone());
        let id = object_id(&key)?;
        let object = key.path();
        crate::backend::check_size(&object, info.size, ObjectKind::Index.max_size())?;
        let (reader, outcome) = RangedReader::new(
            tokio::runtime::Handle::current(),
            self.backend.clone(),
            key,
            info.size,
        );
        let opener = self.opener.clone();
        let limit = info.size;
        let opened = blocking("reading an index", move || {
            let mut acc = acc;
            let parsed = opener.open_streaming(&object, reader, limit, |plain| {
                format::index::each_pack(plain, &object, |pack| f(&mut acc, pack))
            });
            let mut outcome = sync::lock(&outcome);
            if let Some(failed) = outcome.failed.take() {
                return Err(failed); // the store's error, not the parser's
            }
            parsed?;
            if outcome.digest != Some(id) {
                return Err(Error::damaged(&object, "content does not match its name"));
            }
            Ok(acc)
        });
        opened.await
    }

    /// Fetches, decrypts and verifies one blob, of a pack of `kind` (a
    /// file chunk: [`PackKind::Data`]; a tree: [`PackKind::Tree`]).
    pub async fn read_blob(&self, loc: &Location, kind: PackKind) -> Result<Vec<u8>> {
        let stored = self.fetch_blob(loc, kind).await?;
        self.decode_blob(loc, kind, &stored)
    }

    /// Fetches one blob's stored bytes (one ranged read), still encrypted.
    pub async fn fetch_blob(&self, loc: &Location, kind: PackKind) -> Result<Vec<u8>> {
        self.fetch_pack_range(&loc.pack, kind, loc.offset, loc.length)
            .await
    }

    /// `length` stored bytes of `pack`, a pack of `kind`, from `offset`
    /// (one ranged read): a run of blobs that lie back to back.
    pub async fn fetch_pack_range(
        &self,
        pack: &PackId,
        kind: PackKind,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        self.backend
            .get_range(&self.pack_key(pack, kind), offset, length)
            .await
    }

    /// Decrypts, decompresses and verifies bytes [`Repository::fetch_blob`]
    /// returned: CPU work, to run off the async threads when it matters.
    pub fn decode_blob(&self, loc: &Location, kind: PackKind, stored: &[u8]) -> Result<Vec<u8>> {
        blob::decode(
            &self.opener,
            &self.chunk_key,
            loc,
            &self.pack_key(&loc.pack, kind).path(),
            stored,
        )
    }

    /// A file chunk's plaintext, verified, for readers that come back to
    /// the same chunks (the mount): from the chunk cache on disk when it
    /// holds the blob (a copy that fails verification is dropped, with a
    /// warning, and fetched again), else fetched; a fetched blob is kept
    /// there only once it proved genuine. Decryption runs on the blocking
    /// pool. The one place the chunk cache's bytes are read or stored.
    pub async fn read_chunk(self: &Arc<Self>, loc: &Location) -> Result<Vec<u8>> {
        let loc = *loc;
        if self.chunks.is_some() {
            let repo = self.clone();
            let cached = blocking("reading the chunk cache", move || {
                Ok(repo.chunk_from_disk(&loc))
            })
            .await?;
            if let Some(plain) = cached {
                return Ok(plain);
            }
        }
        let stored = self.fetch_blob(&loc, PackKind::Data).await?;
        let repo = self.clone();
        blocking("decoding a chunk", move || {
            let plain = repo.decode_blob(&loc, PackKind::Data, &stored)?;
            if let Some(chunks) = &repo.chunks {
                chunks.store(&loc.id, &stored);
            }
            Ok(plain)
        })
        .await
    }

    /// File chunks that lie near one another in one data pack (a span
    /// [`super::span::joined`] made), for readers that come back to them
    /// (the mount): each one's plaintext, verified, in the order given.
    /// Those the chunk cache on disk holds come from there; the rest with
    /// one ranged read, each kept there once it proved genuine. Decryption
    /// runs on the blocking pool. A failed read fails the whole call (the
    /// caller may then read each on its own); a blob that fails
    /// verification fails alone.
    pub async fn read_chunks(
        self: &Arc<Self>,
        locs: Vec<Location>,
    ) -> Result<Vec<Result<Vec<u8>>>> {
        let repo = self.clone();
        let (locs, mut plain) = blocking("reading the chunk cache", move || {
            let plain: Vec<Option<Vec<u8>>> =
                locs.iter().map(|l| repo.chunk_from_disk(l)).collect();
            Ok((locs, plain))
        })
        .await?;
        let missing: Vec<Location> = locs
            .iter()
            .zip(&plain)
            .filter(|(_, p)| p.is_none())
            .map(|(l, _)| *l)
            .collect();
        let mut fetched = Vec::new();
        // Joined within restore's bounds: blobs a caller passes that lie
        // far apart (or in other packs) are never one huge ranged read.
        let spans = super::span::joined(&missing, super::span::MAX_FETCH, super::span::MAX_GAP);
        for (span, _) in spans {
            fetched.push((span, span.read(self, PackKind::Data).await?));
        }
        let repo = self.clone();
        blocking("decoding chunks", move || {
            let mut out = Vec::with_capacity(locs.len());
            for (loc, cached) in locs.iter().zip(plain.iter_mut()) {
                if let Some(p) = cached.take() {
                    out.push(Ok(p));
                    continue;
                }
                let Some((span, stored)) = fetched.iter().find(|(s, _)| s.holds(loc)) else {
                    out.push(Err(Error::Internal(format!(
                        "chunk {} was not read",
                        loc.id
                    ))));
                    continue;
                };
                let decoded = span.blob(stored, loc).and_then(|stored| {
                    let plain = repo.decode_blob(loc, PackKind::Data, stored)?;
                    if let Some(chunks) = &repo.chunks {
                        chunks.store(&loc.id, stored);
                    }
                    Ok(plain)
                });
                out.push(decoded);
            }
            Ok(out)
        })
        .await
    }

    /// A file's contents in order, for a reader that streams them out
    /// (`cat`): its chunks read ahead, `in_flight` at once, each its own
    /// task (decryption on every core), and `emit` called with each
    /// extent's bytes in order (a hole as its length of zeros). Stops when
    /// `emit` returns false, or at the first chunk that cannot be read.
    pub async fn read_in_order(
        self: &Arc<Self>,
        extents: Vec<crate::format::tree::Extent>,
        in_flight: usize,
        mut emit: impl FnMut(&[u8]) -> bool,
    ) -> Result<()> {
        use crate::format::tree::Extent;
        use futures_util::stream::{self, StreamExt};
        let mut reads = stream::iter(extents)
            .map(|extent| {
                let repo = self.clone();
                async move {
                    match extent {
                        Extent::Data(loc) => {
                            tokio::spawn(async move { repo.read_blob(&loc, PackKind::Data).await })
                                .await
                                .map_err(|e| Error::Internal(format!("a chunk read failed: {e}")))?
                        }
                        Extent::Hole(length) => Ok(vec![0u8; length.min(1 << 20) as usize]),
                    }
                    .map(|data| (data, extent))
                }
            })
            .buffered(in_flight.max(1));
        while let Some(read) = reads.next().await {
            let (data, extent) = read?;
            let keep_on = match extent {
                Extent::Data(_) => emit(&data),
                Extent::Hole(mut length) => {
                    // Zeros a MiB at a time, however long the hole.
                    let mut going = true;
                    while length > 0 && going {
                        let n = length.min(data.len() as u64);
                        going = emit(&data[..n as usize]);
                        length -= n;
                    }
                    going
                }
            };
            if !keep_on {
                break;
            }
        }
        Ok(())
    }

    /// Blob `loc` from the chunk cache, verified as a fetched one is.
    fn chunk_from_disk(&self, loc: &Location) -> Option<Vec<u8>> {
        let chunks = self.chunks.as_ref()?;
        let stored = chunks.read(&loc.id, loc.length)?;
        match self.decode_blob(loc, PackKind::Data, &stored) {
            Ok(plain) => Some(plain),
            Err(e) => {
                tracing::warn!(
                    "chunk cache: blob {} failed verification ({e}); fetching it again",
                    loc.id
                );
                chunks.remove(&loc.id);
                None
            }
        }
    }

    /// Fetches and parses one tree.
    pub async fn read_tree(&self, loc: &Location) -> Result<Tree> {
        let json = self.read_tree_json(loc).await?;
        Tree::from_json(&json, &format!("tree {}", loc.id))
    }

    /// A tree's plaintext (JSON), verified: through the tree cache when
    /// there is one (a cached copy that fails verification is dropped and
    /// its pack fetched again), else with one ranged read.
    pub async fn read_tree_json(&self, loc: &Location) -> Result<Vec<u8>> {
        let Some(cache) = &self.cache else {
            return self.read_blob(loc, PackKind::Tree).await;
        };
        if let Some(stored) = cache.read(&loc.pack, loc.offset, loc.length) {
            match self.decode_blob(loc, PackKind::Tree, &stored) {
                Ok(json) => return Ok(json),
                Err(e) => {
                    tracing::warn!(
                        "metadata cache: tree pack {} failed verification ({e}); fetching it again",
                        loc.pack
                    );
                    cache.remove(&loc.pack);
                }
            }
        }
        let stored = self.fetch_tree_pack(cache, loc).await?;
        self.decode_blob(loc, PackKind::Tree, &stored)
    }

    /// The stored bytes of tree `loc`, its whole pack fetched (by one
    /// reader at a time: the others then find it cached) and kept.
    async fn fetch_tree_pack(&self, cache: &MetadataCache, loc: &Location) -> Result<Vec<u8>> {
        let flight = cache.flight(&loc.pack);
        let fetched = async {
            let _one = flight.lock().await;
            if let Some(stored) = cache.read(&loc.pack, loc.offset, loc.length) {
                return Ok(stored); // another reader just fetched it
            }
            // A pack too large to keep (or refused as over its cap) is
            // not fetched whole: the tree alone, with a ranged read.
            let limit = cache.largest_kept().min(ObjectKind::Pack.max_size());
            let key = self.pack_key(&loc.pack, PackKind::Tree);
            let pack = match self.backend.get(&key, limit).await {
                Ok(pack) => pack,
                Err(Error::Damaged { .. }) => return self.fetch_blob(loc, PackKind::Tree).await,
                Err(e) => return Err(e),
            };
            let blob = usize::try_from(loc.offset)
                .ok()
                .zip(usize::try_from(loc.offset.saturating_add(loc.length)).ok())
                .and_then(|(from, to)| pack.get(from..to))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| {
                    Error::damaged(
                        key.path(),
                        format!(
                            "truncated: {} bytes, tree {} at {}+{}",
                            pack.len(),
                            loc.id,
                            loc.offset,
                            loc.length
                        ),
                    )
                })?;
            cache.store(&loc.pack, &pack);
            Ok(blob)
        }
        .await;
        drop(flight);
        cache.landed(&loc.pack);
        fetched
    }

    /// A tree for a walk that may meet it again from another path
    /// (restore, export, diff): from the [`TreeMemo`] when it was read
    /// lately, else read ([`Repository::read_tree_json`]) and kept there.
    pub async fn shared_tree(&self, loc: &Location) -> Result<Arc<Tree>> {
        if let Some(tree) = self.remembered_tree(loc) {
            return Ok(tree);
        }
        let json = self.read_tree_json(loc).await?;
        self.remember_tree(loc, &json)
    }

    /// Tree `loc` if the [`TreeMemo`] holds it (no I/O).
    pub fn remembered_tree(&self, loc: &Location) -> Option<Arc<Tree>> {
        self.trees.get(loc)
    }

    /// Decrypts, verifies and parses a tree's stored bytes (read without
    /// the tree cache), keeping it as [`Repository::shared_tree`] does.
    pub fn decode_tree(&self, loc: &Location, stored: &[u8]) -> Result<Arc<Tree>> {
        if let Some(tree) = self.remembered_tree(loc) {
            return Ok(tree);
        }
        let json = self.decode_blob(loc, PackKind::Tree, stored)?;
        self.remember_tree(loc, &json)
    }

    /// Parses tree `loc`'s verified plaintext and keeps it in the memo.
    fn remember_tree(&self, loc: &Location, json: &[u8]) -> Result<Arc<Tree>> {
        let tree = Arc::new(Tree::from_json(json, &format!("tree {}", loc.id))?);
        self.trees.keep(*loc, tree.clone(), tree.memory());
        Ok(tree)
    }

    /// The entry at `path` (slash-separated, relative to the snapshot root;
    /// empty or "/" is the root itself, returned as a directory entry).
    pub async fn resolve(&self, snapshot: &Snapshot, path: &str) -> Result<Entry> {
        let mut current = root_entry(snapshot);
        let mut walked = String::new();
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            let subtree = match (current.kind, current.subtree) {
                (Kind::Dir, Some(loc)) => loc,
                _ => {
                    return Err(Error::Path(format!(
                        "{walked} is not a directory in snapshot {}",
                        snapshot.time
                    )))
                }
            };
            let tree = self.shared_tree(&subtree).await?;
            walked.push('/');
            walked.push_str(part);
            current = tree.find(part.as_bytes()).cloned().ok_or_else(|| {
                Error::Path(format!(
                    "{walked} does not exist in snapshot {}",
                    snapshot.time
                ))
            })?;
        }
        Ok(current)
    }
}
