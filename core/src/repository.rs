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
mod reads;
mod snapshots;
pub mod span;
pub mod tree_memo;

use crate::backend::{Backend, ObjectKey, ObjectKind, PackPlaces};
use crate::crypto::{Opener, SecretKeys};
use crate::error::{Error, Result};
use crate::format::chunk_key::ChunkIdKey;
use crate::format::config::RepoConfig;
use crate::format::id::{ObjectId, PackId};
use crate::format::index::PackKind;
use crate::format::key_change::{self, KeyState};
use crate::format::snapshot::{parse_object_name, Snapshot};
use crate::format::tree::{Entry, Kind};
use key_chain::KeyChain;
use known::{KnownRepositories, Pin};
use metadata_cache::{ChunkCache, MetadataCache};
use opened_cache::OpenedCache;
use std::sync::{Arc, RwLock};
use tree_memo::TreeMemo;

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
    /// The listing of `snapshots/` made while opening, for the first
    /// [`Repository::snapshots`] (later ones list again).
    first_listing: std::sync::Mutex<Option<Vec<crate::backend::ObjectInfo>>>,
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
        // The three first requests at once (over a WAN each is a round
        // trip): config, the key changes' listing, and the snapshots'
        // listing, which the first `snapshots()` takes.
        let (config, keys_listed, snapshots) = tokio::join!(
            read_config_and_digest(backend.as_ref()),
            backend.list(ObjectKind::Keys),
            backend.list(ObjectKind::Snapshot),
        );
        let (config, config_digest) = config?;
        let chain =
            key_chain::read_listed(backend.as_ref(), &config, config_digest, keys_listed?).await?;
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
            first_listing: std::sync::Mutex::new(snapshots.ok()),
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

    /// Where this repository keeps its packs.
    pub fn places(&self) -> PackPlaces {
        PackPlaces::of(&self.config)
    }

    /// The key of `pack`, a pack of `kind`, in this repository.
    pub fn pack_key(&self, pack: &PackId, kind: PackKind) -> ObjectKey {
        self.places().key(pack, kind)
    }

    /// Every stored pack object as listed, with the kind it is stored as
    /// (`data/`, and `files/` in a repository that keeps data apart).
    pub async fn list_packs(&self) -> Result<Vec<(ObjectKind, crate::backend::ObjectInfo)>> {
        let mut all = Vec::new();
        for &kind in self.places().object_kinds() {
            let listed = self.backend.list(kind).await?;
            all.extend(listed.into_iter().map(|o| (kind, o)));
        }
        Ok(all)
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

    /// The storage backend (retention deletes through it).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }
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

/// The id an object's name gives (a snapshot's after its host tag).
pub(crate) fn object_id(key: &ObjectKey) -> Result<ObjectId> {
    match key.kind {
        ObjectKind::Snapshot => parse_object_name(&key.name).map(|(_, id)| id),
        _ => ObjectId::from_hex(&key.name),
    }
    .ok_or_else(|| Error::damaged(key.path(), "name is not an object id"))
}
