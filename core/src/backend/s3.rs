//! A repository in an S3 bucket (`s3://BUCKET/PREFIX`), through aws-sdk-s3.
//!
//! - Credentials, region and endpoint come from the standard AWS chain, or
//!   a named profile ([`S3WriteOptions::profile`]); with an endpoint set
//!   (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, a profile's
//!   `endpoint_url`), path-style addressing is used, as S3-compatible servers expect.
//! - Writes are `PutObject` only, each with `If-None-Match: *` (never
//!   replace; a store that answers `501 NotImplemented` to it gets plain
//!   PUTs from then on, see [`S3Backend::put`]), `Content-MD5` (required by Object Lock buckets, and it makes
//!   the store reject a body damaged on the way) and
//!   `x-amz-acl: bucket-owner-full-control` (so objects written by a
//!   separate writer user belong to, and are readable by, the bucket owner).
//! - Every request is retried here, not in the SDK: transient failures (5xx,
//!   throttling, resets, timeouts) with capped exponential backoff and full
//!   jitter, up to [`RETRY_FOR`]. A `412 Precondition Failed` after an attempt
//!   whose outcome is unknown means that attempt stored the object: keys
//!   are random (packs) or content hashes (everything else), so the stored
//!   object is ours.
//! - Errors name the object (`s3://bucket/key`) and the S3 error code;
//!   credentials are never formatted.

//!
//! The rooms: `client.rs` (credentials, region, endpoint; the client's
//! settings), `write_options.rs` (Object Lock, storage class, uploads),
//! `list.rs` (ListObjectsV2 and what a listing names), `retry.rs`
//! (transient failures, backoff), `source.rs` (a bucket as a backup
//! source); the backend proper here: PUT, GET, HEAD, DELETE.

mod archive;
mod client;
mod list;
mod retry;
pub mod source;
mod write_options;

pub use client::{AccessKeys, S3Access, READ_TIMEOUT};
pub use write_options::{LockMode, ObjectLock, S3WriteOptions, DEFAULT_UPLOADS};

use super::limit::{self, Pacing, RateLimit};
use super::{
    Backend, Carried, Carry, DeleteBackend, ObjectInfo, ObjectKey, ObjectKind, ReadBackend,
    Spooled, Thaw, Tier, WriteBackend,
};
use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ObjectCannedAcl, ObjectLockEnabled, StorageClass};
use aws_sdk_s3::Client;
use base64::Engine;
use bytes::Bytes;
use client::{client, seconds_from_env};
use list::{list_objects, listed};
use md5::Digest;
use retry::{classify, storage_error, Failure, Retry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long one request is retried before it fails (override with
/// `COFFER_S3_RETRY_SECONDS`).
pub const RETRY_FOR: Duration = Duration::from_secs(120);

/// An S3 bucket and key prefix.
pub struct S3Backend {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    /// The URL as given, without trailing slashes: where this host pins
    /// the repository's config.
    url: String,
    opts: S3WriteOptions,
    retry_for: Duration,
    /// Whether PUTs carry `If-None-Match: *`; cleared the first time the
    /// store answers it with `501 NotImplemented`.
    conditional_put: AtomicBool,
    /// Whether the bucket has Object Lock (asked once, by `prune`).
    lock_enabled: tokio::sync::OnceCell<bool>,
    /// `--limit-upload` and `--limit-download`, applied inside requests.
    pacing: Pacing,
}

/// Splits `s3://BUCKET/PREFIX` into bucket and prefix (empty, or ending
/// with `/`).
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        Error::Config(format!(
            "{url}: an S3 repository is written s3://BUCKET/PREFIX"
        ))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.len() < 3 {
        return Err(Error::Config(format!(
            "{url}: the bucket name is missing or too short (s3://BUCKET/PREFIX)"
        )));
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}

impl S3Backend {
    /// Connects to `s3://BUCKET/PREFIX` with the standard AWS configuration
    /// chain. Sends no request.
    pub async fn open(url: &str, opts: S3WriteOptions) -> Result<Self> {
        let (bucket, prefix) = parse_url(url)?;
        let access = S3Access {
            profile: opts.profile.clone(),
            ..S3Access::default()
        };
        let retry_for = seconds_from_env("COFFER_S3_RETRY_SECONDS", RETRY_FOR);
        Ok(Self {
            client: client(&access).await,
            bucket,
            prefix,
            url: url.trim_end_matches('/').to_string(),
            opts,
            retry_for,
            conditional_put: AtomicBool::new(true),
            lock_enabled: tokio::sync::OnceCell::new(),
            pacing: Pacing::default(),
        })
    }

    /// This backend with its transfers paced by `pacing`, piece by piece
    /// inside each request.
    pub fn paced(mut self, pacing: Pacing) -> Self {
        self.pacing = pacing;
        self
    }

    fn key_of(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.prefix, key.path())
    }

    fn url_of(&self, key: &ObjectKey) -> String {
        format!("s3://{}/{}", self.bucket, self.key_of(key))
    }

    /// Stores a new object. Sent with `If-None-Match: *`, so an existing
    /// object is never replaced. Stores without conditional writes answer
    /// that with `501 NotImplemented`; from then on this backend sends plain
    /// PUTs, which is still safe because no two writes share a key (packs
    /// have random names, every other object is named by its content's
    /// hash) -- except `config` and key changes, whose absence is checked
    /// first (only admins write them, with their credentials). A copy (`carried`)
    /// is different: it stores what another store holds under names this
    /// store may hold already, and a plain PUT would replace them, so it
    /// stops with a [`Error::Config`] unless
    /// [`S3WriteOptions::unconditional_copy`].
    /// Stores `body` (whose MD5 is `md5`). `data_pack` puts it in
    /// `--storage-class`; `carried` is what a copy brings from its source
    /// ([`WriteBackend::put_new_carried`]).
    async fn put(
        &self,
        key: &ObjectKey,
        body: &PutBody,
        md5: &[u8],
        data_pack: bool,
        carried: Option<&Carried>,
    ) -> Result<()> {
        let retention = write_options::retention(self.opts.object_lock, carried);
        let class = match carried {
            Some(c) if c.takes_class => self.opts.storage_class.clone().or(c.storage_class.clone()),
            Some(c) => c.storage_class.clone(),
            None if data_pack => self.opts.storage_class.clone(),
            None => None,
        };
        let s3_key = self.key_of(key);
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5);
        let mut retry = Retry::new(self.retry_for);
        loop {
            let conditional = self.conditional_put.load(Ordering::Relaxed);
            // (Not for a copy told to send plain PUTs: its destination may
            // allow nothing but PutObject, and the copy's config is the one
            // pinned for it.)
            // (Key changes too: `keys/<seq>` is named by its place, and
            // two admins at once must not both take it.)
            let init =
                matches!(key.kind, ObjectKind::Config | ObjectKind::Keys) && carried.is_none();
            if !conditional && init && self.exists(key).await? {
                return if retry.attempts > 0 {
                    Ok(())
                } else {
                    Err(Error::AlreadyExists(self.url_of(key)))
                };
            }
            let (stream, paced_length) = body.stream(key, self.pacing.upload.as_ref()).await?;
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&s3_key)
                .body(stream)
                .set_content_length(paced_length)
                .content_md5(&md5)
                .acl(ObjectCannedAcl::BucketOwnerFullControl);
            if conditional {
                req = req.if_none_match("*");
            }
            if let Some((until, mode)) = retention {
                req = req
                    .object_lock_mode(mode.to_sdk())
                    .object_lock_retain_until_date(DateTime::from(until));
            }
            if let Some(class) = &class {
                req = req.storage_class(StorageClass::from(class.as_str()));
            }
            let err = match req.send().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let failure = classify(&err);
            if conditional && (failure.status == Some(501) || err.code() == Some("NotImplemented"))
            {
                if carried.is_some() && !self.opts.unconditional_copy {
                    return Err(Error::Config(format!(
                        "{}: the store does not support conditional writes (If-None-Match), so \
                         a copy could replace objects it already holds (after a lost journal, \
                         or from a source whose packs were swapped); nothing was replaced. \
                         To copy with plain PUTs anyway, pass --allow-unconditional-puts",
                        self.describe()
                    )));
                }
                if self.conditional_put.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        repo = %self.describe(),
                        "the store does not support conditional writes (If-None-Match); \
                         writing without them"
                    );
                }
                continue;
            }
            if failure.status == Some(412) {
                return if retry.attempts > 0 {
                    // An earlier attempt of ours stored it.
                    Ok(())
                } else {
                    Err(Error::AlreadyExists(self.url_of(key)))
                };
            }
            retry
                .after(failure, || self.error("put", key, &err))
                .await?;
        }
    }

    fn error<E>(&self, op: &'static str, key: &ObjectKey, e: &SdkError<E>) -> Error
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        storage_error(op, self.url_of(key), e)
    }

    /// Sends the request `send` makes until it succeeds, `settle` decides
    /// a failure from its kind and S3 error code (`Some(result)`), or
    /// [`Retry`] gives up on it.
    async fn request<T, E, Fut>(
        &self,
        op: &'static str,
        key: &ObjectKey,
        mut send: impl FnMut() -> Fut,
        settle: impl Fn(Failure, Option<&str>) -> Option<Result<T>>,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = std::result::Result<T, SdkError<E>>>,
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        let mut retry = Retry::new(self.retry_for);
        loop {
            let err = match send().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let failure = classify(&err);
            if let Some(result) = settle(failure, err.code()) {
                return result;
            }
            retry.after(failure, || self.error(op, key, &err)).await?;
        }
    }

    /// Whether `key` exists (HeadObject).
    async fn exists(&self, key: &ObjectKey) -> Result<bool> {
        let s3_key = self.key_of(key);
        let head = || async {
            let req = self.client.head_object().bucket(&self.bucket).key(&s3_key);
            req.send().await.map(|_| true)
        };
        self.request("head", key, head, |f, _| {
            (f.status == Some(404)).then_some(Ok(false))
        })
        .await
    }

    /// Whether the bucket has Object Lock enabled (asked once; a refused
    /// question counts as yes, so retention is then asked per object).
    async fn bucket_locks(&self) -> bool {
        *self
            .lock_enabled
            .get_or_init(|| async {
                let req = self
                    .client
                    .get_object_lock_configuration()
                    .bucket(&self.bucket);
                match req.send().await {
                    Ok(out) => out
                        .object_lock_configuration()
                        .and_then(|c| c.object_lock_enabled())
                        .is_some_and(|e| *e == ObjectLockEnabled::Enabled),
                    Err(e) => {
                        let not_configured = e.code()
                            == Some("ObjectLockConfigurationNotFoundError")
                            || classify(&e).status == Some(404);
                        !not_configured
                    }
                }
            })
            .await
    }

    /// The object (or `range` of it), with its retention and storage class;
    /// one of more than `limit` bytes is damage, refused from its
    /// Content-Length before the body is read, and cut off while it streams.
    async fn get_bytes(
        &self,
        key: &ObjectKey,
        range: Option<(u64, u64)>,
        limit: u64,
    ) -> Result<(Vec<u8>, Carried)> {
        let s3_key = self.key_of(key);
        let mut retry = Retry::new(self.retry_for);
        let started = std::time::Instant::now();
        loop {
            let mut req = self.client.get_object().bucket(&self.bucket).key(&s3_key);
            if let Some((offset, length)) = range {
                req = req.range(format!(
                    "bytes={offset}-{}",
                    offset.saturating_add(length - 1)
                ));
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let failure = classify(&e);
                    if e.code() == Some("InvalidObjectState") {
                        return Err(Error::Cold(self.url_of(key)));
                    }
                    match failure.status {
                        Some(404) => return Err(Error::NotFound(self.url_of(key))),
                        Some(416) => {
                            return Err(Error::damaged(
                                self.url_of(key),
                                "truncated: the range asked for is past its end",
                            ))
                        }
                        _ => {}
                    }
                    retry.after(failure, || self.error("get", key, &e)).await?;
                    continue;
                }
            };
            let carried = Carried {
                retention: resp
                    .object_lock_retain_until_date()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .zip(resp.object_lock_mode().and_then(LockMode::from_sdk)),
                storage_class: resp
                    .storage_class()
                    .map(|c| c.as_str().to_string())
                    .filter(|c| c != "STANDARD"),
                takes_class: false,
            };
            let expected = resp.content_length().and_then(|n| u64::try_from(n).ok());
            if let Some(size) = expected {
                super::check_size(&self.url_of(key), size, limit)?;
            }
            let pace = self.pacing.download.as_deref();
            match collect_capped(resp.body, expected.unwrap_or(0), limit, pace).await {
                Ok(Some(data)) => {
                    tracing::debug!(
                        key = %s3_key,
                        offset = range.map_or(0, |r| r.0),
                        bytes = data.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "GET"
                    );
                    return Ok((data, carried));
                }
                Ok(None) => return Err(super::oversized(&self.url_of(key), None, limit)),
                Err(e) => {
                    // The connection broke mid-body: transient.
                    let failure = Failure {
                        transient: true,
                        status: None,
                    };
                    let url = self.url_of(key);
                    retry
                        .after(failure, || Error::Storage {
                            op: "get",
                            key: url,
                            source: std::io::Error::other(format!("reading the body: {e}")),
                        })
                        .await?;
                }
            }
        }
    }
}

/// The pieces of a paced PUT body (the SDK wants a body it can share).
type PacedPieces =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send + Sync>>;

/// What a PUT sends: bytes in memory, or a file read as it is sent (a
/// large object a copy spooled).
enum PutBody {
    Bytes(bytes::Bytes),
    File(std::path::PathBuf),
}

impl PutBody {
    /// A fresh body for one attempt; with `pace`, sent piece by piece as
    /// the pacer gives turns, its length (which the SDK cannot know from a
    /// stream) given beside it.
    async fn stream(
        &self,
        key: &ObjectKey,
        pace: Option<&Arc<RateLimit>>,
    ) -> Result<(ByteStream, Option<i64>)> {
        let file_error = |path: &std::path::Path, e: &dyn std::fmt::Display| Error::Storage {
            op: "put",
            key: key.path(),
            source: std::io::Error::other(format!("{}: {e}", path.display())),
        };
        let Some(pace) = pace else {
            return match self {
                PutBody::Bytes(bytes) => Ok((ByteStream::from(bytes.clone()), None)),
                PutBody::File(path) => match ByteStream::from_path(path).await {
                    Ok(stream) => Ok((stream, None)),
                    Err(e) => Err(file_error(path, &e)),
                },
            };
        };
        use futures_util::TryStreamExt;
        let frames = |pieces: PacedPieces| {
            let body = http_body_util::StreamBody::new(pieces.map_ok(http_body::Frame::data));
            ByteStream::from_body_1_x(body)
        };
        match self {
            PutBody::Bytes(bytes) => {
                let pieces = limit::paced_bytes(bytes.clone(), pace.clone());
                Ok((frames(Box::pin(pieces)), Some(bytes.len() as i64)))
            }
            PutBody::File(path) => {
                let length = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| file_error(path, &e))?
                    .len();
                let pieces = limit::paced_file(path.clone(), pace.clone())
                    .await
                    .map_err(|e| file_error(path, &e))?;
                Ok((frames(Box::pin(pieces)), Some(length as i64)))
            }
        }
    }
}

/// A response body, read to its end unless it passes `limit` bytes
/// (`None` then: the rest is left unread). `expected`, the length the
/// response announced, sizes the first allocation. With `pace`, each part
/// waits until, at the rate, it would have arrived before the next is
/// read, so the socket's back-pressure slows the sender.
async fn collect_capped(
    mut body: aws_sdk_s3::primitives::ByteStream,
    expected: u64,
    limit: u64,
    pace: Option<&RateLimit>,
) -> std::result::Result<Option<Vec<u8>>, aws_sdk_s3::primitives::ByteStreamError> {
    let mut data = Vec::with_capacity(usize::try_from(expected.min(limit)).unwrap_or(0));
    while let Some(part) = body.try_next().await? {
        if (data.len() + part.len()) as u64 > limit {
            return Ok(None);
        }
        data.extend_from_slice(&part);
        if let Some(pace) = pace {
            pace.took(part.len() as u64).await;
        }
    }
    Ok(Some(data))
}

#[async_trait]
impl ReadBackend for S3Backend {
    async fn get(&self, key: &ObjectKey, limit: u64) -> Result<Vec<u8>> {
        Ok(self.get_bytes(key, None, limit).await?.0)
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, length: u64) -> Result<Vec<u8>> {
        Ok(self.get_range_carried(key, offset, length).await?.0)
    }

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        let prefix = format!("{}{}", self.prefix, kind.prefix());
        let mut out = Vec::new();
        list_objects(&self.client, &self.bucket, &prefix, self.retry_for, |obj| {
            out.extend(listed(kind, &prefix, obj));
        })
        .await?;
        Ok(out)
    }

    fn keeps_archives(&self) -> bool {
        true
    }

    async fn thaw_state(&self, key: &ObjectKey) -> Result<Thaw> {
        self.head_thaw(key).await
    }

    async fn request_thaw(
        &self,
        key: &ObjectKey,
        class: &str,
        days: u32,
        tier: Tier,
    ) -> Result<()> {
        self.restore_object(key, days, tier, class == "INTELLIGENT_TIERING")
            .await
    }
}

#[async_trait]
impl WriteBackend for S3Backend {
    async fn put_new(&self, key: &ObjectKey, data: Vec<u8>) -> Result<()> {
        let md5 = md5::Md5::digest(&data);
        let body = PutBody::Bytes(bytes::Bytes::from(data));
        self.put(key, &body, &md5, false, None).await
    }

    async fn put_new_data_pack(&self, key: &ObjectKey, data: Vec<u8>) -> Result<Vec<u8>> {
        let md5 = md5::Md5::digest(&data);
        let body = PutBody::Bytes(bytes::Bytes::from(data));
        self.put(key, &body, &md5, true, None).await?;
        // The SDK has dropped its clones of the body by now, so this takes
        // the allocation back without copying (it copies if not).
        let mut buffer = match body {
            PutBody::Bytes(bytes) => Vec::from(bytes),
            PutBody::File(_) => Vec::new(),
        };
        buffer.clear();
        Ok(buffer)
    }

    fn upload_concurrency(&self) -> usize {
        self.opts.uploads.unwrap_or(DEFAULT_UPLOADS).max(1)
    }
}

#[async_trait]
impl Carry for S3Backend {
    async fn get_carried(&self, key: &ObjectKey, limit: u64) -> Result<(Vec<u8>, Carried)> {
        self.get_bytes(key, None, limit).await
    }

    async fn get_range_carried(
        &self,
        key: &ObjectKey,
        offset: u64,
        length: u64,
    ) -> Result<(Vec<u8>, Carried)> {
        if length == 0 {
            return Ok((Vec::new(), Carried::default()));
        }
        let (data, carried) = self.get_bytes(key, Some((offset, length)), length).await?;
        if data.len() as u64 != length {
            return Err(Error::damaged(
                self.url_of(key),
                format!(
                    "truncated: wanted {length} bytes at offset {offset}, got {}",
                    data.len()
                ),
            ));
        }
        Ok((data, carried))
    }

    async fn put_new_carried(
        &self,
        key: &ObjectKey,
        data: Vec<u8>,
        carried: &Carried,
    ) -> Result<()> {
        let md5 = md5::Md5::digest(&data);
        let body = PutBody::Bytes(bytes::Bytes::from(data));
        self.put(key, &body, &md5, false, Some(carried)).await
    }

    /// Sent from the file as it is read: a pack of any size costs no
    /// memory, and each retry reads the file again.
    async fn put_new_spooled(
        &self,
        key: &ObjectKey,
        spooled: &Spooled,
        carried: &Carried,
    ) -> Result<()> {
        let body = PutBody::File(spooled.path.clone());
        self.put(key, &body, &spooled.md5, false, Some(carried))
            .await
    }
}

#[async_trait]
impl DeleteBackend for S3Backend {
    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let s3_key = self.key_of(key);
        let delete = || async {
            let req = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&s3_key);
            req.send().await.map(|_| ())
        };
        self.request("delete", key, delete, |f, _| {
            (f.status == Some(404)).then_some(Ok(()))
        })
        .await
    }

    async fn retained_until(&self, key: &ObjectKey) -> Result<Option<SystemTime>> {
        if !self.bucket_locks().await {
            return Ok(None);
        }
        let s3_key = self.key_of(key);
        let head = || async {
            let req = self.client.head_object().bucket(&self.bucket).key(&s3_key);
            req.send().await.map(|out| {
                out.object_lock_retain_until_date()
                    .and_then(|t| SystemTime::try_from(*t).ok())
            })
        };
        self.request("head", key, head, |f, _| {
            (f.status == Some(404)).then_some(Ok(None))
        })
        .await
    }
}

impl Backend for S3Backend {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn location(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        let p = |u: &str| parse_url(u).unwrap();
        assert_eq!(p("s3://bucket"), ("bucket".into(), String::new()));
        assert_eq!(p("s3://bucket/"), ("bucket".into(), String::new()));
        assert_eq!(p("s3://bucket/a/b/"), ("bucket".into(), "a/b/".into()));
        assert_eq!(p("s3://bucket//a"), ("bucket".into(), "a/".into()));
        assert!(parse_url("s3://").is_err());
        assert!(parse_url("s3://ab/x").is_err());
        assert!(parse_url("/tmp/x").is_err());
    }
}
