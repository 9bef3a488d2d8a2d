//! Storage backends: where objects live.
//!
//! A backend stores immutable objects under keys (see [`ObjectKey::path`]).
//! It is split in a read half and a write half: a writer needs only
//! [`WriteBackend::put_new`], and must never need to read, list, overwrite
//! or delete; [`DeleteBackend`] is for retention (`forget`, `prune`). All
//! methods are async; the local backend does its file I/O on
//! tokio's blocking pool; S3 (`s3.rs`) goes through aws-sdk-s3. What a
//! copy carries besides an object's bytes (S3 retention and storage class)
//! is `carry.rs`'s own trait, [`Carry`].

use crate::error::{Error, Result};
use crate::format::tree::MAX_BLOB_LEN;
use async_trait::async_trait;
use std::io::Read;
use std::sync::Arc;

pub use carry::{Carried, Carry, Spooled};
pub use cold::{Thaw, Tier};
pub use places::PackPlaces;

mod carry;
pub mod cold;
mod direct;
pub mod limit;
pub mod local;
pub mod memory;
mod places;
pub mod ranged;
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
    /// `data/<2 hex>/<pack id>`: every pack of a version 1 or 2
    /// repository; a version 3 repository's tree packs.
    Pack,
    /// `files/<2 hex>/<pack id>`: a version 3 repository's data packs
    /// (file contents), apart so a lifecycle rule can move them alone to
    /// an archive class ([`PackPlaces`]).
    FilePack,
    /// `keys/<8 digits>`: an admin's signed key change.
    Keys,
}

/// Largest `config` a reader takes: JSON with the recipients' and writers'
/// certificates (a few KiB each; a GnuPG key with many signatures, tens).
pub const CONFIG_MAX: u64 = 4 << 20;
/// Largest snapshot object a reader takes. Its JSON holds the backed-up
/// paths, tags and counts: a few KiB ([`crate::format::snapshot`]); the
/// writer refuses to store one over it.
pub const SNAPSHOT_MAX: u64 = 16 << 20;
/// Largest index object a reader takes. A writer now stores one per 64
/// packs or 100,000 blobs (~12 MiB); before that, one per run (a run of
/// 1M new blobs: ~120 MiB).
pub const INDEX_MAX: u64 = 256 << 20;
/// Largest key change a reader takes: a certificate or two and, for a
/// revocation, the names of the writer's snapshots that stay (~90 bytes
/// each: 16 MiB is some 180,000).
pub const KEYS_MAX: u64 = 16 << 20;
/// Largest pack: a pack is sealed before a blob would take it past the
/// pack size (at most 1 GiB, [`crate::format::config`]), so it is at most
/// that plus one blob (stored, at most twice [`MAX_BLOB_LEN`]).
pub const PACK_MAX: u64 = (1 << 30) + 2 * MAX_BLOB_LEN;

impl ObjectKind {
    /// The largest object of this kind a reader takes, in stored bytes. A
    /// bigger one is damage: refused from its size (stat, Content-Length)
    /// before it is read, and while it streams, so what a put-only
    /// credential stores cannot make a reader allocate more than this.
    pub fn max_size(self) -> u64 {
        match self {
            ObjectKind::Config => CONFIG_MAX,
            ObjectKind::Snapshot => SNAPSHOT_MAX,
            ObjectKind::Index => INDEX_MAX,
            ObjectKind::Pack | ObjectKind::FilePack => PACK_MAX,
            ObjectKind::Keys => KEYS_MAX,
        }
    }

    /// Whether objects of this kind sit one directory below their prefix,
    /// in a directory named by their first 2 hex digits (packs).
    pub fn is_fanned(self) -> bool {
        matches!(self, ObjectKind::Pack | ObjectKind::FilePack)
    }

    /// The prefix objects of this kind are listed under.
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectKind::Config => "",
            ObjectKind::Snapshot => "snapshots/",
            ObjectKind::Index => "index/",
            ObjectKind::Pack => "data/",
            ObjectKind::FilePack => "files/",
            ObjectKind::Keys => "keys/",
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
            ObjectKind::Pack | ObjectKind::FilePack => {
                let fan = self.name.get(..2).unwrap_or("00");
                format!("{}{fan}/{}", self.kind.prefix(), self.name)
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

/// One listed object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// The object's name (as in [`ObjectKey::name`]).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was stored (file mtime, S3 LastModified), if the store says.
    pub modified: Option<std::time::SystemTime>,
    /// Its storage class, where the store has them and the listing says
    /// (S3's `StorageClass`).
    pub storage_class: Option<String>,
}

/// Reading objects: what readers (restore, mount, check) need.
#[async_trait]
pub trait ReadBackend: Send + Sync {
    /// The whole object, if it is at most `limit` bytes (else
    /// [`Error::Damaged`], decided before its bytes are read where the
    /// store tells the size, and enforced while they arrive).
    /// [`Error::NotFound`] if it does not exist.
    async fn get(&self, key: &ObjectKey, limit: u64) -> Result<Vec<u8>>;

    /// `length` bytes from `offset`. Fails with [`Error::Damaged`] if the
    /// object is shorter: a short read is never returned as data.
    async fn get_range(&self, key: &ObjectKey, offset: u64, length: u64) -> Result<Vec<u8>>;

    /// Every object of `kind`, in no particular order.
    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>>;

    /// Whether this store may keep objects archived (S3's archive
    /// classes), so that readers ask before reading many ([`Thaw`]).
    fn keeps_archives(&self) -> bool {
        false
    }

    /// Whether `key` can be read now or is archived (see `cold.rs`). A
    /// store without archive classes: always readable.
    async fn thaw_state(&self, _key: &ObjectKey) -> Result<Thaw> {
        Ok(Thaw::Readable {
            class: None,
            restored_until: None,
        })
    }

    /// Asks the store to restore archived object `key` (of storage class
    /// `class`, as [`ReadBackend::thaw_state`] said) for `days` at `tier`
    /// (one already under way, or a readable object, is no error).
    async fn request_thaw(
        &self,
        key: &ObjectKey,
        _class: &str,
        _days: u32,
        _tier: Tier,
    ) -> Result<()> {
        Err(Error::Config(format!(
            "{}: this store keeps no archived objects to restore",
            key.path()
        )))
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

/// A backend that reads, writes and deletes, and carries what a copy
/// carries.
pub trait Backend: ReadBackend + WriteBackend + DeleteBackend + Carry {
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

/// The name a listing gives the object at `relative` (its path below
/// `data/`): the pack id when it stands where [`ObjectKey::path`] puts
/// that id (`<first 2 hex>/<id>`), else the whole relative path, which is
/// no pack id, so readers leave it alone and `check` names it as it is
/// stored.
pub(crate) fn pack_name(relative: &str) -> &str {
    match relative.split_once('/') {
        Some((fan, name))
            if name.get(..2) == Some(fan)
                && crate::format::id::PackId::from_hex(name).is_some() =>
        {
            name
        }
        _ => relative,
    }
}

/// Refuses object `key` (as messages name it) when `size`, its size as
/// the store reports it, passes `limit`.
pub(crate) fn check_size(key: &str, size: u64, limit: u64) -> Result<()> {
    if size > limit {
        return Err(oversized(key, Some(size), limit));
    }
    Ok(())
}

/// The error for an object over its kind's cap.
pub(crate) fn oversized(key: &str, size: Option<u64>, limit: u64) -> Error {
    let size = size.map_or_else(
        || "more than".to_string(),
        |s| format!("{s} bytes, more than"),
    );
    Error::damaged(
        key,
        format!(
            "{size} the {limit} bytes an object of its kind may have (never written by coffer; \
             left unread)"
        ),
    )
}

/// Reads `reader` to its end, but never more than `limit` bytes: one byte
/// more is [`oversized`] damage to `key`; a read error goes through
/// `on_io`. `expected` (a size the store gave) only sizes the first
/// allocation.
pub(crate) fn read_capped(
    reader: impl Read,
    key: &str,
    limit: u64,
    expected: u64,
    on_io: impl FnOnce(std::io::Error) -> Error,
) -> Result<Vec<u8>> {
    let first = usize::try_from(expected.min(limit)).unwrap_or(0);
    let mut out = Vec::with_capacity(first);
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(on_io)?;
    if out.len() as u64 > limit {
        return Err(oversized(key, None, limit));
    }
    Ok(out)
}

/// Opens the backend a `--repo` argument names: `s3://BUCKET/PREFIX` or a
/// local directory. `s3` only matters to writers of an S3 repository.
pub async fn open(repo: &str, s3: s3::S3WriteOptions) -> Result<Arc<dyn Backend>> {
    open_paced(repo, s3, limit::Pacing::default()).await
}

/// [`open`], its transfers paced by `pacing` (`--limit-upload`,
/// `--limit-download`): inside each request on S3, object by object on a
/// local directory.
pub async fn open_paced(
    repo: &str,
    s3: s3::S3WriteOptions,
    pacing: limit::Pacing,
) -> Result<Arc<dyn Backend>> {
    if repo.is_empty() {
        return Err(Error::Config(
            "no repository given: pass --repo DIR or set COFFER_REPO".into(),
        ));
    }
    if repo.starts_with("s3://") {
        return Ok(Arc::new(s3::S3Backend::open(repo, s3).await?.paced(pacing)));
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
    let local: Arc<dyn Backend> = Arc::new(local::LocalBackend::new(repo));
    Ok(limit::Limited::wrap(local, pacing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_pack_is_named_by_its_id_only_where_readers_look_for_it() {
        let id = "ab".repeat(32);
        assert_eq!(pack_name(&format!("ab/{id}")), id);
        // Elsewhere, or not an id: the path as stored, which is no pack id.
        for junk in [
            format!("cd/{id}"),
            format!("ab/x/{id}"),
            "ab/abfoo".into(),
            "junk".into(),
        ] {
            assert_eq!(pack_name(&junk), junk);
        }
    }
}
