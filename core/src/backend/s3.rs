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

mod retry;
pub mod source;

use super::{
    Backend, Carried, DeleteBackend, ObjectInfo, ObjectKey, ObjectKind, ReadBackend, Spooled,
    WriteBackend,
};
use crate::error::{Error, Result};
use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ObjectCannedAcl, ObjectLockEnabled, ObjectLockMode, StorageClass};
use aws_sdk_s3::Client;
use base64::Engine;
use md5::Digest;
use retry::{classify, storage_error, Failure, Retry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// How long one request is retried before it fails (override with
/// `COFFER_S3_RETRY_SECONDS`).
pub const RETRY_FOR: Duration = Duration::from_secs(120);
/// How long a request may wait for the response before it counts as a
/// timeout and is retried (override with `COFFER_S3_READ_TIMEOUT_SECONDS`).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// `var` as whole seconds, or `default` when unset or not a number.
fn seconds_from_env(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(default, Duration::from_secs)
}

/// Object Lock retention sent with every object a writer stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// Retain for this many days from the upload.
    pub days: u32,
    /// Compliance or governance.
    pub mode: LockMode,
}

/// An Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Nobody can shorten or remove the retention, not even the root user.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can.
    Governance,
}

/// How a writer stores objects.
#[derive(Debug, Clone, Default)]
pub struct S3WriteOptions {
    /// Retention headers on every object; `None` relies on the bucket's
    /// default retention, if any.
    pub object_lock: Option<ObjectLock>,
    /// Storage class for data packs (metadata stays in the default class).
    pub storage_class: Option<String>,
    /// Uploads at once; `None` is [`DEFAULT_UPLOADS`].
    pub uploads: Option<usize>,
    /// The AWS profile to take credentials, region and endpoint from
    /// (`coffer copy --from-profile/--to-profile`: two accounts in one
    /// process); `None` follows the standard chain (`AWS_PROFILE` too).
    pub profile: Option<String>,
    /// A copy to a store without conditional writes sends plain PUTs
    /// (`coffer copy --allow-unconditional-puts`); without it such a copy
    /// stops at its first PUT (see [`S3Backend::put`]).
    pub unconditional_copy: bool,
}

/// Where a client takes its credentials, region and endpoint from: the
/// standard AWS chain, with what is set here taking precedence.
#[derive(Debug, Clone, Default)]
pub struct S3Access {
    /// An AWS profile (credentials, region, endpoint); `None` follows the
    /// standard chain (`AWS_PROFILE` too).
    pub profile: Option<String>,
    /// Keys given outright (`COFFER_SOURCE_ACCESS_KEY_ID`...): they win
    /// over the profile's and the chain's.
    pub keys: Option<AccessKeys>,
    /// An S3-compatible endpoint (path-style addressing).
    pub endpoint: Option<String>,
    /// The region; with none anywhere, `us-east-1`.
    pub region: Option<String>,
}

/// An access key, its secret and an optional session token.
#[derive(Clone)]
pub struct AccessKeys {
    /// The access key id (not secret: it names the key).
    pub id: String,
    /// The secret access key.
    pub secret: String,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeys")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// An S3 client for `access`, with coffer's settings: no SDK retries
/// (callers retry, see [`Retry`]), a connect and a read timeout, checksums
/// only where required, path-style addressing for any endpoint set.
/// Sends no request.
async fn client(access: &S3Access) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http.clone());
    if let Some(profile) = &access.profile {
        // The profile's credentials, not the chain's: environment
        // credentials would otherwise win, and a copy between two
        // accounts would use one account for both ends.
        let provider = aws_config::provider_config::ProviderConfig::without_region()
            .with_http_client(http.clone());
        let creds = aws_config::profile::ProfileFileCredentialsProvider::builder()
            .configure(&provider)
            .profile_name(profile)
            .build();
        loader = loader.profile_name(profile).credentials_provider(creds);
    }
    if let Some(keys) = &access.keys {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            &keys.id,
            &keys.secret,
            keys.session_token.clone(),
            None,
            "coffer",
        ));
    }
    let shared = loader.load().await;
    let mut conf = aws_sdk_s3::config::Builder::from(&shared)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(seconds_from_env(
                    "COFFER_S3_READ_TIMEOUT_SECONDS",
                    READ_TIMEOUT,
                ))
                .build(),
        )
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(region) = &access.region {
        conf = conf.region(Region::new(region.clone()));
    } else if shared.region().is_none() {
        // S3-compatible servers accept any region; AWS redirects.
        conf = conf.region(Region::from_static("us-east-1"));
    }
    // An endpoint from the environment or the profile: an
    // S3-compatible server, which expects path-style addressing.
    let endpoint_var = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if let Some(endpoint) = &access.endpoint {
        conf = conf.endpoint_url(endpoint).force_path_style(true);
    } else if endpoint_var || shared.endpoint_url().is_some() {
        conf = conf.force_path_style(true);
    }
    Client::from_conf(conf.build())
}

/// Uploads a writer runs at once unless told otherwise: enough to hide
/// the latency of one request on a LAN or nearby region. Each holds one
/// pack (up to 24 MiB) in memory.
pub const DEFAULT_UPLOADS: usize = 4;

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
        })
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
        let retention = self.retention_for(carried);
        let class = match carried {
            Some(c) if key.kind == ObjectKind::Pack => {
                self.opts.storage_class.clone().or(c.storage_class.clone())
            }
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
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&s3_key)
                .body(body.stream(key).await?)
                .content_md5(&md5)
                .acl(ObjectCannedAcl::BucketOwnerFullControl);
            if conditional {
                req = req.if_none_match("*");
            }
            if let Some((until, mode)) = retention {
                req = req
                    .object_lock_mode(match mode {
                        LockMode::Compliance => ObjectLockMode::Compliance,
                        LockMode::Governance => ObjectLockMode::Governance,
                    })
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

    /// The retention a PUT sends: `--object-lock-days` from now, a copied
    /// object's own (if not over yet), the later of the two if both.
    fn retention_for(&self, carried: Option<&Carried>) -> Option<(SystemTime, LockMode)> {
        let own = self.opts.object_lock.map(|lock| {
            let days = Duration::from_secs(u64::from(lock.days) * 86_400);
            (SystemTime::now() + days, lock.mode)
        });
        // An expired retention is not sent: S3 refuses a date in the past.
        let theirs = carried
            .and_then(|c| c.retention)
            .filter(|(until, _)| *until > SystemTime::now());
        match (own, theirs) {
            (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    fn error<E>(&self, op: &'static str, key: &ObjectKey, e: &SdkError<E>) -> Error
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        storage_error(op, self.url_of(key), e)
    }

    /// Sends the request `send` makes until it succeeds, `settle` decides
    /// a failure (`Some(result)`), or [`Retry`] gives up on it.
    async fn request<T, E, Fut>(
        &self,
        op: &'static str,
        key: &ObjectKey,
        mut send: impl FnMut() -> Fut,
        settle: impl Fn(Failure) -> Option<Result<T>>,
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
            if let Some(result) = settle(failure) {
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
        self.request("head", key, head, |f| {
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
                    .zip(resp.object_lock_mode().and_then(|m| match m {
                        ObjectLockMode::Compliance => Some(LockMode::Compliance),
                        ObjectLockMode::Governance => Some(LockMode::Governance),
                        _ => None,
                    })),
                storage_class: resp
                    .storage_class()
                    .map(|c| c.as_str().to_string())
                    .filter(|c| c != "STANDARD"),
            };
            let expected = resp.content_length().and_then(|n| u64::try_from(n).ok());
            if let Some(size) = expected {
                super::check_size(&self.url_of(key), size, limit)?;
            }
            match collect_capped(resp.body, expected.unwrap_or(0), limit).await {
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

/// What a PUT sends: bytes in memory, or a file read as it is sent (a
/// large object a copy spooled).
enum PutBody {
    Bytes(bytes::Bytes),
    File(std::path::PathBuf),
}

impl PutBody {
    /// A fresh body for one attempt.
    async fn stream(&self, key: &ObjectKey) -> Result<ByteStream> {
        match self {
            PutBody::Bytes(bytes) => Ok(ByteStream::from(bytes.clone())),
            PutBody::File(path) => ByteStream::from_path(path)
                .await
                .map_err(|e| Error::Storage {
                    op: "put",
                    key: key.path(),
                    source: std::io::Error::other(format!("{}: {e}", path.display())),
                }),
        }
    }
}

/// A response body, read to its end unless it passes `limit` bytes
/// (`None` then: the rest is left unread). `expected`, the length the
/// response announced, sizes the first allocation.
async fn collect_capped(
    mut body: aws_sdk_s3::primitives::ByteStream,
    expected: u64,
    limit: u64,
) -> std::result::Result<Option<Vec<u8>>, aws_sdk_s3::primitives::ByteStreamError> {
    let mut data = Vec::with_capacity(usize::try_from(expected.min(limit)).unwrap_or(0));
    while let Some(part) = body.try_next().await? {
        if (data.len() + part.len()) as u64 > limit {
            return Ok(None);
        }
        data.extend_from_slice(&part);
    }
    Ok(Some(data))
}

#[async_trait]
impl ReadBackend for S3Backend {
    async fn get(&self, key: &ObjectKey, limit: u64) -> Result<Vec<u8>> {
        Ok(self.get_bytes(key, None, limit).await?.0)
    }

    async fn get_carried(&self, key: &ObjectKey, limit: u64) -> Result<(Vec<u8>, Carried)> {
        self.get_bytes(key, None, limit).await
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, length: u64) -> Result<Vec<u8>> {
        Ok(self.get_range_carried(key, offset, length).await?.0)
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

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        let prefix = format!("{}{}", self.prefix, kind.prefix());
        let mut out = Vec::new();
        list_objects(&self.client, &self.bucket, &prefix, self.retry_for, |obj| {
            let Some(full) = obj.key() else { return };
            let Some(rest) = full.strip_prefix(&prefix) else {
                return;
            };
            let name = match kind {
                ObjectKind::Config if rest != "config" => return,
                ObjectKind::Pack => super::pack_name(rest),
                _ if rest.contains('/') => return,
                _ => rest,
            };
            out.push(ObjectInfo {
                name: name.to_string(),
                size: obj.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                modified: obj
                    .last_modified()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
            });
        })
        .await?;
        Ok(out)
    }
}

/// Calls `each` on every object under `prefix` of `bucket`, a page of
/// ListObjectsV2 (up to 1,000 objects) at a time, each page retried.
async fn list_objects(
    client: &Client,
    bucket: &str,
    prefix: &str,
    retry_for: Duration,
    mut each: impl FnMut(&aws_sdk_s3::types::Object),
) -> Result<()> {
    let mut token: Option<String> = None;
    loop {
        let mut retry = Retry::new(retry_for);
        let page = loop {
            let req = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone());
            match req.send().await {
                Ok(page) => break page,
                Err(e) => {
                    let url = format!("s3://{bucket}/{prefix}");
                    retry
                        .after(classify(&e), || storage_error("list", url, &e))
                        .await?;
                }
            }
        };
        page.contents().iter().for_each(&mut each);
        token = page.next_continuation_token().map(String::from);
        if token.is_none() || page.is_truncated() != Some(true) {
            return Ok(());
        }
    }
}

#[async_trait]
impl WriteBackend for S3Backend {
    async fn put_new(&self, key: &ObjectKey, data: Vec<u8>) -> Result<()> {
        let md5 = md5::Md5::digest(&data);
        let body = PutBody::Bytes(bytes::Bytes::from(data));
        self.put(key, &body, &md5, false, None).await
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
        self.request("delete", key, delete, |f| {
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
        self.request("head", key, head, |f| {
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
