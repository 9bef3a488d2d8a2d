//! The read path: a repository opened with the admin's secret key.
//!
//! Opening reads `config`, checks it against this host's pin ([`known`]:
//! trust on first use) and unseals the chunk-id key. Snapshots are listed
//! on demand; trees and chunks are fetched by location, one ranged read
//! each, and verified. Every operation (`crate::ops`), the mount and the
//! CLI read through here.

pub mod key_chain;
pub mod known;
pub mod metadata_cache;
pub mod opened_cache;
pub mod tree_memo;

use crate::backend::ranged::RangedReader;
use crate::backend::{Backend, ObjectInfo, ObjectKey, ObjectKind};
use crate::crypto::blob;
use crate::crypto::{Opener, SecretKeys};
use crate::error::{Error, Result};
use crate::format;
use crate::format::chunk_key::ChunkIdKey;
use crate::format::config::RepoConfig;
use crate::format::id::{ObjectId, PackId};
use crate::format::index::PackSummary;
use crate::format::key_change::{self, KeyState};
use crate::format::snapshot::{host_tag, parse_object_name, Snapshot, SnapshotInfo};
use crate::format::tree::{Entry, Kind, Location, Tree};
use crate::sync::{self, blocking};
use key_chain::KeyChain;
use known::{KnownRepositories, Pin};
use metadata_cache::{ChunkCache, MetadataCache};
use opened_cache::OpenedCache;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tree_memo::TreeMemo;

/// Snapshot objects fetched at once when listing them.
const SNAPSHOT_LOADS: usize = 32;
/// Stored bytes of snapshot objects fetched and opened as one batch.
const SNAPSHOT_BATCH_BYTES: u64 = 64 << 20;

/// A repository opened for reading.
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: RepoConfig,
    chunk_key: ChunkIdKey,
    opener: Arc<Opener>,
    /// The writers and recipients after the key changes under `keys/`
    /// (read again by [`Repository::refresh_key_chain`]).
    keys: RwLock<Arc<KeyChain>>,
    /// This host's pins, which a key change read later extends.
    pins: Option<KnownRepositories>,
    /// SHA-256 of the `config` object as read.
    config_digest: ObjectId,
    /// Tree packs kept on local disk (readers of a remote repository).
    cache: Option<MetadataCache>,
    /// Snapshots opened before, sealed on local disk.
    opened: Option<OpenedCache>,
    /// Chunks kept on local disk (a mount of a remote repository).
    chunks: Option<ChunkCache>,
    /// Trees read lately by the walks that meet one tree from many paths.
    trees: TreeMemo,
}

impl Repository {
    /// Reads `config`, checks it against the pin `pins` holds for the
    /// backend's location (pinning it on first use), and unseals the
    /// chunk-id key with `keys`. `pins` is this host's file
    /// ([`KnownRepositories::of_this_host`]); `None` only where the host
    /// has none (that function has warned).
    pub async fn open(
        backend: Arc<dyn Backend>,
        keys: SecretKeys,
        pins: Option<&KnownRepositories>,
    ) -> Result<Self> {
        let (config, config_digest) = read_config_and_digest(backend.as_ref()).await?;
        let chain = key_chain::read(backend.as_ref(), &config, config_digest).await?;
        if let Some(known) = pins {
            let location = backend.location();
            match known.check(&location, &config_digest, &chain.digests())? {
                Pin::New => tracing::info!(
                    "pinned the config of {location} in {}",
                    known.path().display()
                ),
                Pin::Extended => tracing::info!(
                    "pinned {location}'s key changes to keys/{} in {}",
                    key_change::object_name(chain.state.seq),
                    known.path().display()
                ),
                Pin::Same => {}
            }
        }
        let opener = Opener::new(keys);
        let chunk_key = unseal_chunk_key(&chain.state, &opener)?;
        if chain.writers.is_empty() {
            tracing::warn!(
                "this repository predates signed snapshots: a snapshot forged by someone \
                 with write access cannot be told from a real one"
            );
        }
        Ok(Self {
            backend,
            config,
            chunk_key,
            opener: Arc::new(opener),
            keys: RwLock::new(Arc::new(chain)),
            pins: pins.cloned(),
            config_digest,
            cache: None,
            opened: None,
            chunks: None,
            trees: TreeMemo::default(),
        })
    }

    /// Reads trees through `cache`: the first tree read from a tree pack
    /// fetches the whole pack and keeps it there.
    pub fn with_metadata_cache(mut self, cache: MetadataCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Keeps every snapshot it opens, sealed, in an [`OpenedCache`] in
    /// `dir` (at most `limit` bytes), and lists them from there after.
    pub fn with_opened_cache(mut self, dir: std::path::PathBuf, limit: u64) -> Self {
        // Keyed by the key state too: a snapshot opened before a writer was
        // revoked is checked again after.
        let head = self.key_chain().state.head;
        let opened = OpenedCache::new(dir, limit, &self.chunk_key, &head);
        self.opened = Some(opened);
        self
    }

    /// Keeps the chunks read through [`Repository::read_chunk`] (the
    /// mount's reads) in `cache`.
    pub fn with_chunk_cache(mut self, cache: ChunkCache) -> Self {
        self.chunks = Some(cache);
        self
    }

    /// The metadata cache, if trees are read through one.
    pub fn metadata_cache(&self) -> Option<&MetadataCache> {
        self.cache.as_ref()
    }

    /// The repository's configuration.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The chunk-id key (an admin seals it to new recipients and puts it
    /// in the key files of new writers).
    pub fn chunk_key(&self) -> &ChunkIdKey {
        &self.chunk_key
    }

    /// The writers and recipients now, and the key changes that made them.
    pub fn key_chain(&self) -> Arc<KeyChain> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the key changes again (a long-running mount, between
    /// listings): if there are new ones, checks them and this host's pin
    /// as opening does, and applies them from now on (the opened-snapshot
    /// cache is re-keyed, so every snapshot is checked again). Whether the
    /// chain changed. On error the chain in use stays.
    pub async fn refresh_key_chain(&self) -> Result<bool> {
        let listed = self.backend.list(ObjectKind::Keys).await?;
        let stored = listed
            .iter()
            .filter(|o| key_change::parse_object_name(&o.name).is_some())
            .count() as u64;
        if stored == self.key_chain().state.seq {
            return Ok(false);
        }
        let chain =
            key_chain::read(self.backend.as_ref(), &self.config, self.config_digest).await?;
        if let Some(known) = &self.pins {
            known.check(
                &self.backend.location(),
                &self.config_digest,
                &chain.digests(),
            )?;
        }
        let head = chain.state.head;
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(chain);
        if let Some(opened) = &self.opened {
            opened.rekey(&self.chunk_key, &head);
        }
        tracing::info!(
            "key changes read again: now keys/{}",
            key_change::object_name(self.key_chain().state.seq)
        );
        Ok(true)
    }

    /// SHA-256 of the `config` object this repository was opened with
    /// (what [`KnownRepositories`] pins).
    pub fn config_digest(&self) -> &ObjectId {
        &self.config_digest
    }

    /// Every genuine snapshot, oldest first. Each object's name is checked
    /// against the SHA-256 of its bytes, and its signature against the
    /// writers `config` lists. A damaged or forged snapshot object is left
    /// out with a warning (`coffer check` reports it), so it hides no other;
    /// failing to read one is an error.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        use futures_util::stream::{self, StreamExt};
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for listed in self.backend.list(ObjectKind::Snapshot).await? {
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

    /// The size of every stored pack, by id (names that are not pack ids
    /// are left out).
    pub async fn pack_sizes(&self) -> Result<HashMap<PackId, u64>> {
        Ok(self
            .backend
            .list(ObjectKind::Pack)
            .await?
            .into_iter()
            .filter_map(|o| Some((PackId::from_hex(&o.name)?, o.size)))
            .collect())
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

    /// The bytes of the object `name` (named by the SHA-256 of its bytes),
    /// checked against the name.
    async fn fetch_named(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        let key = ObjectKey::new(kind, name);
        let id = object_id(&key)?;
        let bytes = self.backend.get(&key, kind.max_size()).await?;
        if ObjectId::of_bytes(&bytes) != id {
            return Err(Error::damaged(
                key.path(),
                "content does not match its name",
            ));
        }
        Ok(bytes)
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

    /// The storage backend (retention deletes through it).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The snapshot `spec` names: `latest`, or a unique prefix of an id.
    pub async fn find_snapshot(&self, spec: &str) -> Result<SnapshotInfo> {
        let all = self.snapshots().await?;
        select_snapshot(all, spec)
    }

    /// Fetches, decrypts and verifies one blob.
    pub async fn read_blob(&self, loc: &Location) -> Result<Vec<u8>> {
        let stored = self.fetch_blob(loc).await?;
        self.decode_blob(loc, &stored)
    }

    /// Fetches one blob's stored bytes (one ranged read), still encrypted.
    pub async fn fetch_blob(&self, loc: &Location) -> Result<Vec<u8>> {
        self.fetch_pack_range(&loc.pack, loc.offset, loc.length)
            .await
    }

    /// `length` stored bytes of `pack` from `offset` (one ranged read): a
    /// run of blobs that lie back to back.
    pub async fn fetch_pack_range(
        &self,
        pack: &PackId,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>> {
        self.backend
            .get_range(&pack_key(pack), offset, length)
            .await
    }

    /// Decrypts, decompresses and verifies bytes [`Repository::fetch_blob`]
    /// returned: CPU work, to run off the async threads when it matters.
    pub fn decode_blob(&self, loc: &Location, stored: &[u8]) -> Result<Vec<u8>> {
        blob::decode(
            &self.opener,
            &self.chunk_key,
            loc,
            &pack_key(&loc.pack).path(),
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
        let stored = self.fetch_blob(&loc).await?;
        let repo = self.clone();
        blocking("decoding a chunk", move || {
            let plain = repo.decode_blob(&loc, &stored)?;
            if let Some(chunks) = &repo.chunks {
                chunks.store(&loc.id, &stored);
            }
            Ok(plain)
        })
        .await
    }

    /// Blob `loc` from the chunk cache, verified as a fetched one is.
    fn chunk_from_disk(&self, loc: &Location) -> Option<Vec<u8>> {
        let chunks = self.chunks.as_ref()?;
        let stored = chunks.read(&loc.id, loc.length)?;
        match self.decode_blob(loc, &stored) {
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
            return self.read_blob(loc).await;
        };
        if let Some(stored) = cache.read(&loc.pack, loc.offset, loc.length) {
            match self.decode_blob(loc, &stored) {
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
        self.decode_blob(loc, &stored)
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
            let pack = match self.backend.get(&pack_key(&loc.pack), limit).await {
                Ok(pack) => pack,
                Err(Error::Damaged { .. }) => return self.fetch_blob(loc).await,
                Err(e) => return Err(e),
            };
            let blob = usize::try_from(loc.offset)
                .ok()
                .zip(usize::try_from(loc.offset.saturating_add(loc.length)).ok())
                .and_then(|(from, to)| pack.get(from..to))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| {
                    Error::damaged(
                        pack_key(&loc.pack).path(),
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
        let json = self.decode_blob(loc, stored)?;
        self.remember_tree(loc, &json)
    }

    /// Parses tree `loc`'s verified plaintext and keeps it in the memo.
    fn remember_tree(&self, loc: &Location, json: &[u8]) -> Result<Arc<Tree>> {
        let tree = Arc::new(Tree::from_json(json, &format!("tree {}", loc.id))?);
        self.trees.keep(*loc, tree.clone(), json.len() as u64);
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

/// The key of a pack object.
pub fn pack_key(pack: &PackId) -> ObjectKey {
    ObjectKey::new(ObjectKind::Pack, pack.to_hex())
}

/// The root of a snapshot as a directory entry.
pub fn root_entry(snapshot: &Snapshot) -> Entry {
    Entry {
        mtime_ns: snapshot
            .time()
            .map(|t| t.unix_timestamp_nanos() as i64)
            .unwrap_or(0),
        subtree: Some(snapshot.tree),
        ..Entry::new(b"/".to_vec(), Kind::Dir, 0o755)
    }
}

/// Stores the `config` of a new repository (never replacing one) and pins
/// it in `pins` for the backend's location, replacing any earlier pin
/// there: this host made it, the surest first use there is.
pub async fn init(
    backend: &dyn Backend,
    config: &RepoConfig,
    pins: Option<&KnownRepositories>,
) -> Result<()> {
    let bytes = config.to_json();
    let digest = ObjectId::of_bytes(&bytes);
    backend.put_new(&ObjectKey::config(), bytes).await?;
    if let Some(known) = pins {
        known.replace(&backend.location(), &digest)?;
    }
    Ok(())
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

/// The chunk-id key, unsealed from the newest sealed copy `opener` can
/// open: an admin added by a key change finds it in that change, one from
/// the start in `config`.
fn unseal_chunk_key(state: &KeyState, opener: &Opener) -> Result<ChunkIdKey> {
    let mut first_error = None;
    for sealed in &state.sealed_chunk_keys {
        match crate::crypto::writer_key::unseal_chunk_key(sealed, opener) {
            Ok(key) => return Ok(key),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| Error::damaged("config", "no sealed chunk-id key")))
}

/// Reads and parses `config`.
pub async fn read_config(backend: &dyn Backend) -> Result<RepoConfig> {
    Ok(read_config_and_digest(backend).await?.0)
}

/// `e`, the error of reading `backend`'s config; a missing one means
/// `backend` holds no repository.
pub(crate) fn config_error(backend: &dyn Backend, e: Error) -> Error {
    match e {
        Error::NotFound(_) => Error::Config(format!(
            "{} is not a coffer repository (no config); run `coffer init` first",
            backend.describe()
        )),
        e => e,
    }
}

/// Reads and parses `config`; also its SHA-256.
async fn read_config_and_digest(backend: &dyn Backend) -> Result<(RepoConfig, ObjectId)> {
    let bytes = backend
        .get(&ObjectKey::config(), ObjectKind::Config.max_size())
        .await
        .map_err(|e| config_error(backend, e))?;
    Ok((
        RepoConfig::from_json(&bytes, "config")?,
        ObjectId::of_bytes(&bytes),
    ))
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

fn select_snapshot(all: Vec<SnapshotInfo>, spec: &str) -> Result<SnapshotInfo> {
    if all.is_empty() {
        return Err(Error::Snapshot("the repository has no snapshot yet".into()));
    }
    if spec == "latest" {
        return all
            .into_iter()
            .last()
            .ok_or_else(|| Error::Snapshot("no snapshot".into()));
    }
    let spec_lc = spec.to_ascii_lowercase();
    let mut matches: Vec<SnapshotInfo> = all
        .into_iter()
        .filter(|s| s.id.to_hex().starts_with(&spec_lc))
        .collect();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(Error::Snapshot(format!(
            "no snapshot matches {spec:?}; `coffer snapshots` lists them"
        ))),
        n => Err(Error::Snapshot(format!(
            "{n} snapshots match {spec:?}; give more digits of the id"
        ))),
    }
}

/// The id an object's name gives (a snapshot's after its host tag).
pub(crate) fn object_id(key: &ObjectKey) -> Result<ObjectId> {
    match key.kind {
        ObjectKind::Snapshot => parse_object_name(&key.name).map(|(_, id)| id),
        _ => ObjectId::from_hex(&key.name),
    }
    .ok_or_else(|| Error::damaged(key.path(), "name is not an object id"))
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
