//! An S3 bucket prefix as a backup source (`coffer backup s3://BUCKET/PREFIX`):
//! its listing, and each object read as a stream. It needs ListBucket and
//! GetObject, nothing else, with credentials of its own ([`S3Access`]), so
//! the source may be in another account or on another endpoint than the
//! repository.
//!
//! Every GET carries `If-Match` with the ETag the listing gave: an object
//! replaced after the listing is refused (`412`), not stored as a mix, and
//! reported as changed; one deleted is reported as gone. A stream that
//! breaks is resumed from where it broke with a ranged GET, under the same
//! condition, up to [`RESUMES`] times.

use super::client::{client, seconds_from_env};
use super::list::list_objects;
use super::retry::{cause_chain, classify, storage_error, Retry};
use super::{parse_url, S3Access, RETRY_FOR};
use crate::error::{Error, Result};
use aws_sdk_s3::Client;
use bytes::Bytes;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Times a broken object stream is picked up again before it is given up.
pub const RESUMES: u32 = 3;

/// Frames of one object's body buffered ahead of its reader (a frame is
/// one read of the HTTP body: tens of KiB).
const FRAMES_AHEAD: usize = 16;

/// A bucket prefix to back up.
pub struct S3Source {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    retry_for: Duration,
}

/// One object as the listing gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceObject {
    /// Its whole key (prefix included).
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// The ETag as S3 sends it (quoted).
    pub etag: String,
    /// `LastModified`, ns since the epoch.
    pub modified_ns: i64,
}

/// What a GET tells about an object besides its bytes, as (name, value):
/// `content-type`, `content-encoding`, `content-disposition`,
/// `content-language`, `cache-control`, and `meta.NAME` for each user
/// metadata entry (`x-amz-meta-NAME`); sorted by name.
pub type ObjectHeaders = Vec<(String, String)>;

/// What the background reader sends its [`ObjectReader`].
enum Frame {
    Headers(ObjectHeaders),
    Data(Bytes),
    Failed(io::Error),
}

/// Why a GET gave no body.
enum Refused {
    /// 404: deleted since the listing.
    Gone,
    /// 412: replaced since the listing (another ETag).
    Changed,
    Failed(Error),
}

impl S3Source {
    /// Connects to `s3://BUCKET/PREFIX` as `access`. Sends no request.
    pub async fn open(url: &str, access: &S3Access) -> Result<Self> {
        let (bucket, prefix) = parse_url(url)?;
        Ok(Self {
            client: client(access).await,
            bucket,
            prefix,
            retry_for: seconds_from_env("COFFER_S3_RETRY_SECONDS", RETRY_FOR),
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://BUCKET/KEY`.
    pub fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Every object under the prefix, in key order.
    pub async fn list(&self) -> Result<Vec<SourceObject>> {
        let mut out = Vec::new();
        list_objects(
            &self.client,
            &self.bucket,
            &self.prefix,
            self.retry_for,
            |obj| {
                let Some(key) = obj.key() else { return };
                let modified_ns = obj
                    .last_modified()
                    .and_then(|t| {
                        let ns =
                            i128::from(t.secs()) * 1_000_000_000 + i128::from(t.subsec_nanos());
                        i64::try_from(ns).ok()
                    })
                    .unwrap_or(0);
                out.push(SourceObject {
                    key: key.to_string(),
                    size: obj.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    etag: obj.e_tag().unwrap_or("").to_string(),
                    modified_ns,
                });
            },
        )
        .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Starts reading `obj` on `rt` (its headers, then its bytes, a few
    /// frames ahead of the reader); the reader blocks until they come.
    pub fn read(self: &Arc<Self>, rt: &tokio::runtime::Handle, obj: SourceObject) -> ObjectReader {
        let (tx, rx) = mpsc::channel(FRAMES_AHEAD);
        let source = Arc::clone(self);
        rt.spawn(async move {
            let last = match source.pump(&obj, &tx).await {
                Ok(()) => return,
                Err(e) => Frame::Failed(e),
            };
            let _ = tx.send(last).await;
        });
        ObjectReader {
            rx,
            headers: None,
            current: Bytes::new(),
            done: false,
        }
    }

    /// Sends `obj`'s headers and bytes into `tx`; resumes a broken stream.
    async fn pump(&self, obj: &SourceObject, tx: &mpsc::Sender<Frame>) -> io::Result<()> {
        let url = self.url_of(&obj.key);
        let mut offset = 0u64;
        let mut resumes = 0;
        loop {
            let mut body = match self.get(obj, offset).await {
                Ok((headers, body)) => {
                    if offset == 0 && tx.send(Frame::Headers(headers)).await.is_err() {
                        return Ok(()); // the reader is gone
                    }
                    body
                }
                Err(Refused::Gone) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "deleted during the backup",
                    ))
                }
                Err(Refused::Changed) => {
                    return Err(io::Error::other(format!(
                        "changed during the backup (its ETag is no longer {})",
                        obj.etag
                    )))
                }
                Err(Refused::Failed(e)) => return Err(io::Error::other(cause_chain(&e))),
            };
            let broken = loop {
                match body.try_next().await {
                    Ok(Some(bytes)) => {
                        offset += bytes.len() as u64;
                        if tx.send(Frame::Data(bytes)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            match broken {
                None if offset == obj.size => return Ok(()),
                None => {
                    return Err(io::Error::other(format!(
                        "{url} ended after {offset} of its {} bytes",
                        obj.size
                    )))
                }
                Some(e) if resumes < RESUMES => {
                    resumes += 1;
                    tracing::debug!(%url, offset, error = %e, "object stream broke; resuming");
                }
                Some(e) => {
                    return Err(io::Error::other(format!(
                        "{url}: the stream broke {} times, last at byte {offset}: {e}",
                        resumes + 1
                    )))
                }
            }
        }
    }

    /// GET `obj` from byte `offset` on, if it is still the one listed.
    async fn get(
        &self,
        obj: &SourceObject,
        offset: u64,
    ) -> std::result::Result<(ObjectHeaders, aws_sdk_s3::primitives::ByteStream), Refused> {
        let mut retry = Retry::new(self.retry_for);
        loop {
            let mut req = self.client.get_object().bucket(&self.bucket).key(&obj.key);
            if !obj.etag.is_empty() {
                req = req.if_match(&obj.etag);
            }
            if offset > 0 {
                req = req.range(format!("bytes={offset}-"));
            }
            let err = match req.send().await {
                Ok(out) => return Ok((headers_of(&out), out.body)),
                Err(e) => e,
            };
            let failure = classify(&err);
            match failure.status {
                Some(404) => return Err(Refused::Gone),
                Some(412) => return Err(Refused::Changed),
                _ => {}
            }
            let url = self.url_of(&obj.key);
            retry
                .after(failure, || storage_error("get", url, &err))
                .await
                .map_err(Refused::Failed)?;
        }
    }
}

fn headers_of(out: &aws_sdk_s3::operation::get_object::GetObjectOutput) -> ObjectHeaders {
    let mut headers: ObjectHeaders = [
        ("content-type", out.content_type()),
        ("content-encoding", out.content_encoding()),
        ("content-disposition", out.content_disposition()),
        ("content-language", out.content_language()),
        ("cache-control", out.cache_control()),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name.to_string(), value?.to_string())))
    .collect();
    if let Some(meta) = out.metadata() {
        headers.extend(meta.iter().map(|(k, v)| (format!("meta.{k}"), v.clone())));
    }
    headers.sort();
    headers
}

/// One object being read: [`headers`](Self::headers) first, then its bytes
/// through [`Read`]. An object deleted or replaced since the listing, or
/// whose stream could not be resumed, is an error of either.
pub struct ObjectReader {
    rx: mpsc::Receiver<Frame>,
    headers: Option<ObjectHeaders>,
    current: Bytes,
    done: bool,
}

impl ObjectReader {
    /// Waits for the object's headers (its GET answered).
    pub fn headers(&mut self) -> io::Result<ObjectHeaders> {
        if self.headers.is_none() {
            match self.rx.blocking_recv() {
                Some(Frame::Headers(h)) => self.headers = Some(h),
                Some(Frame::Failed(e)) => return Err(e),
                Some(Frame::Data(_)) | None => {
                    return Err(io::Error::other("the object's reader stopped"))
                }
            }
        }
        Ok(self.headers.clone().unwrap_or_default())
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.headers()?;
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Frame::Data(bytes)) => self.current = bytes,
                Some(Frame::Failed(e)) => return Err(e),
                Some(Frame::Headers(_)) => {}
                None => self.done = true,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}
