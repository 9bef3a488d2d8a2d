//! What `coffer copy` carries from one store to another besides an
//! object's bytes (on S3: its Object Lock retention and storage class), and
//! the trait through which it reads and stores them. Only copy uses it;
//! readers and writers never see it.

use super::s3::LockMode;
use super::{ObjectKey, ReadBackend, WriteBackend};
use crate::error::{Error, Result};
use async_trait::async_trait;

/// What `coffer copy` carries from one store to another besides an
/// object's bytes: on S3, its Object Lock retention and storage class, as
/// the source's GET reports them (nothing elsewhere).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// Locked until then, in that mode.
    pub retention: Option<(std::time::SystemTime, LockMode)>,
    /// Its storage class, if not the default one.
    pub storage_class: Option<String>,
    /// Whether the destination's own storage class (a copy's
    /// `--storage-class`) replaces that one: set by the copy for a pack
    /// that may hold file contents (every pack of a repository before
    /// version 3, which keeps tree and data packs together; a version 3
    /// repository's `files/` alone), never for trees and metadata.
    pub takes_class: bool,
}

/// An object a copy has carried into a local file (a large one: read a
/// range at a time, so that its size costs no memory): where, and the MD5
/// of its bytes (S3's `Content-MD5`).
#[derive(Debug, Clone)]
pub struct Spooled {
    /// The file; the store reads it, the copy removes it after.
    pub path: std::path::PathBuf,
    /// MD5 of its bytes.
    pub md5: [u8; 16],
}

/// Reading and storing an object with what a copy carries. Stores
/// without retention or storage classes keep the defaults: they carry
/// nothing, and store what they are given as a new object.
#[async_trait]
pub trait Carry: ReadBackend + WriteBackend {
    /// [`ReadBackend::get`], with what a copy carries to the destination.
    async fn get_carried(&self, key: &ObjectKey, limit: u64) -> Result<(Vec<u8>, Carried)> {
        Ok((self.get(key, limit).await?, Carried::default()))
    }

    /// [`ReadBackend::get_range`], with what a copy carries to the
    /// destination (a large object is copied a range at a time).
    async fn get_range_carried(
        &self,
        key: &ObjectKey,
        offset: u64,
        length: u64,
    ) -> Result<(Vec<u8>, Carried)> {
        Ok((
            self.get_range(key, offset, length).await?,
            Carried::default(),
        ))
    }

    /// [`WriteBackend::put_new`] for a copied object: with the source's
    /// retention (the later of it and this backend's own, if both) and
    /// storage class (this backend's own class wins where
    /// [`Carried::takes_class`]). Stores without either
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

    /// [`Carry::put_new_carried`] from a file a copy spooled: a
    /// store that can read it from disk as it sends (S3) or link it into
    /// place (a local directory) never holds it in memory; this default
    /// reads it whole.
    async fn put_new_spooled(
        &self,
        key: &ObjectKey,
        spooled: &Spooled,
        carried: &Carried,
    ) -> Result<()> {
        let data = tokio::fs::read(&spooled.path)
            .await
            .map_err(|e| Error::Storage {
                op: "put",
                key: key.path(),
                source: e,
            })?;
        self.put_new_carried(key, data, carried).await
    }
}
