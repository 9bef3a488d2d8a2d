//! Storage backends: where objects live.
//!
//! A backend stores immutable objects under keys (see [`ObjectKey::path`]).
//! It is split in a read half and a write half: a writer needs only
//! [`WriteBackend::put_new`], and must never need to read, list, overwrite
//! or delete; [`DeleteBackend`] is for retention (`forget`, `prune`). All
//! methods are async; the local backend does its file I/O on
//! tokio's blocking pool; S3 (`s3.rs`) goes through aws-sdk-s3.

use crate::error::{Error, Result};
use async_trait::async_trait;
use std::sync::Arc;

mod direct;
pub mod local;
pub mod memory;
pub mod s3;

/// The kinds of stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// `config`
    Config,
    /// `snapshots/<id>`
    Snapshot,
    /// `index/<id>`
    Index,
    /// `data/<2 hex>/<pack id>`
    Pack,
}

impl ObjectKind {
    /// The prefix objects of this kind are listed under.
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectKind::Config => "",
            ObjectKind::Snapshot => "snapshots/",
            ObjectKind::Index => "index/",
            ObjectKind::Pack => "data/",
        }
    }
}

/// The key of one stored object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// What the object is.
    pub kind: ObjectKind,
    /// Its name: 64 hex digits (empty for `config`).
    pub name: String,
}

impl ObjectKey {
    /// The `config` object.
    pub fn config() -> Self {
        Self {
            kind: ObjectKind::Config,
            name: String::new(),
        }
    }

    /// An object of `kind` named `name`.
    pub fn new(kind: ObjectKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }

    /// The object's path relative to the repository root.
    pub fn path(&self) -> String {
        match self.kind {
            ObjectKind::Config => "config".into(),
            ObjectKind::Pack => {
                let fan = self.name.get(..2).unwrap_or("00");
                format!("data/{fan}/{}", self.name)
            }
            kind => format!("{}{}", kind.prefix(), self.name),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path())
    }
}

/// A number of stored objects and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Objects.
    pub count: u64,
    /// Their stored bytes.
    pub bytes: u64,
}

impl Tally {
    /// One more object of `bytes`.
    pub fn add(&mut self, bytes: u64) {
        self.count += 1;
        self.bytes += bytes;
    }
}

/// One listed object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// The object's name (as in [`ObjectKey::name`]).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was stored (file mtime, S3 LastModified), if the store says.
    pub modified: Option<std::time::SystemTime>,
}

/// What `coffer copy` carries from one store to another besides an
/// object's bytes: on S3, its Object Lock retention and storage class, as
/// the source's GET reports them (nothing elsewhere).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// Locked until then, in that mode.
    pub retention: Option<(std::time::SystemTime, s3::LockMode)>,
    /// Its storage class, if not the default one.
    pub storage_class: Option<String>,
}

/// Reading objects: what readers (restore, mount, check) need.
#[async_trait]
pub trait ReadBackend: Send + Sync {
    /// The whole object. [`Error::NotFound`] if it does not exist.
    async fn get(&self, key: &ObjectKey) -> Result<Vec<u8>>;

    /// `length` bytes from `offset`. Fails with [`Error::Damaged`] if the
    /// object is shorter: a short read is never returned as data.
    async fn get_range(&self, key: &ObjectKey, offset: u64, length: u64) -> Result<Vec<u8>>;

    /// Every object of `kind`, in no particular order.
    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>>;

    /// [`ReadBackend::get`], with what a copy carries to the destination.
    async fn get_carried(&self, key: &ObjectKey) -> Result<(Vec<u8>, Carried)> {
        Ok((self.get(key).await?, Carried::default()))
    }
}

/// Writing objects: all a writer may do.
#[async_trait]
pub trait WriteBackend: Send + Sync {
    /// Stores a new object, durably, all or nothing. Never replaces an
    /// existing object: if `key` exists, returns [`Error::AlreadyExists`]
    /// and leaves it untouched.
    async fn put_new(&self, key: &ObjectKey, data: Vec<u8>) -> Result<()>;

    /// [`WriteBackend::put_new`] for a data pack: backends with storage
    /// classes may put it in a colder one (metadata stays hot). Hands the
    /// buffer back once stored, emptied (or a new empty one if the backend
    /// kept it), so the writer fills the next pack in memory it already has.
    async fn put_new_data_pack(&self, key: &ObjectKey, data: Vec<u8>) -> Result<Vec<u8>> {
        self.put_new(key, data).await.map(|()| Vec::new())
    }

    /// [`WriteBackend::put_new`] for a copied object: with the source's
    /// retention (the later of it and this backend's own, if both) and
    /// storage class (for a pack, this backend's own class wins: a copy
    /// cannot tell data packs from tree packs). Stores without either
    /// ignore `carried`.
    async fn put_new_carried(
        &self,
        key: &ObjectKey,
        data: Vec<u8>,
        carried: &Carried,
    ) -> Result<()> {
        let _ = carried;
        self.put_new(key, data).await
    }

    /// How many uploads are worth running at once.
    fn upload_concurrency(&self) -> usize {
        2
    }
}

/// Deleting objects: only `forget` and `prune` (run by the admin) do it.
#[async_trait]
pub trait DeleteBackend: Send + Sync {
    /// Removes an object. Removing one that is already gone succeeds (two
    /// prunes may race). On a versioned S3 bucket this adds a delete
    /// marker; the bytes go when the bucket's lifecycle expires the old
    /// version.
    async fn delete(&self, key: &ObjectKey) -> Result<()>;

    /// Until when Object Lock forbids deleting `key`, if it does (S3 only;
    /// `None` when the bucket has no Object Lock or the object no retention).
    async fn retained_until(&self, _key: &ObjectKey) -> Result<Option<std::time::SystemTime>> {
        Ok(None)
    }
}

/// A backend that reads, writes and deletes.
pub trait Backend: ReadBackend + WriteBackend + DeleteBackend {
    /// Where this backend stores, for messages (never holds credentials).
    fn describe(&self) -> String;

    /// Where the repository is, as a host pins its config
    /// ([`crate::repository::known`]): a local directory's canonical path,
    /// an S3 URL as given (without trailing slashes).
    fn location(&self) -> String;

    /// Whether it is on this machine's disks (a local directory), where a
    /// metadata cache would only copy what is already at hand.
    fn is_local(&self) -> bool {
        false
    }
}

/// Opens the backend a `--repo` argument names: `s3://BUCKET/PREFIX` or a
/// local directory. `s3` only matters to writers of an S3 repository.
pub async fn open(repo: &str, s3: s3::S3WriteOptions) -> Result<Arc<dyn Backend>> {
    if repo.is_empty() {
        return Err(Error::Config(
            "no repository given: pass --repo DIR or set COFFER_REPO".into(),
        ));
    }
    if repo.starts_with("s3://") {
        return Ok(Arc::new(s3::S3Backend::open(repo, s3).await?));
    }
    if s3.object_lock.is_some() || s3.storage_class.is_some() || s3.uploads.is_some() {
        return Err(Error::Config(format!(
            "{repo}: --object-lock-days, --storage-class and --uploads apply to S3 repositories only"
        )));
    }
    if s3.profile.is_some() {
        return Err(Error::Config(format!(
            "{repo}: an AWS profile applies to S3 repositories only"
        )));
    }
    Ok(Arc::new(local::LocalBackend::new(repo)))
}
