//! Bandwidth limits (`--limit-upload`, `--limit-download`): one pacer per
//! direction for the whole process, shared by every connection.
//!
//! The pacer keeps a clock of when the link is free: bytes are booked
//! after those booked before, an upload waits until its turn starts
//! (`take`), a download until, at the rate, it would have arrived
//! (`took`), so over any stretch the rate is the limit (no burst is saved
//! up while idle). The S3 backend paces inside each request, in pieces of
//! [`PACED_PIECE`] bytes (a PUT's body is sent piece by piece as turns
//! come, a GET's body read piece by piece, the socket's back-pressure
//! slowing the sender), so even a one-second window holds the rate.
//! Other backends (a local directory) go through [`Limited`], which paces
//! each object whole, before its write or after its read.

use super::carry::{Carried, Carry, Spooled};
use super::{
    Backend, DeleteBackend, ObjectInfo, ObjectKey, ObjectKind, ReadBackend, Thaw, Tier,
    WriteBackend,
};
use crate::error::Result;
use crate::sync::lock;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A rate in bytes per second, paced for everyone who shares it.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_second: u64,
    /// When the bytes booked so far have gone through.
    free_at: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// A pacer at `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(1),
            free_at: Mutex::new(None),
        }
    }

    /// Books `n` bytes after those booked before; their slot's start and
    /// end.
    fn book(&self, n: u64) -> (Instant, Instant) {
        let mut free_at = lock(&self.free_at);
        let now = Instant::now();
        let start = free_at.map_or(now, |f| f.max(now));
        let end = start + Duration::from_secs_f64(n as f64 / self.bytes_per_second as f64);
        *free_at = Some(end);
        (start, end)
    }

    /// Books `n` bytes about to be sent and waits for their turn to start.
    pub async fn take(&self, n: u64) {
        let (start, _) = self.book(n);
        tokio::time::sleep_until(start).await;
    }

    /// Books `n` bytes just received and waits until, at the rate, they
    /// would have arrived (so even a first read waits its time).
    pub async fn took(&self, n: u64) {
        let (_, end) = self.book(n);
        tokio::time::sleep_until(end).await;
    }
}

/// The pacers a backend's transfers go through; a direction without one
/// is not limited.
#[derive(Clone, Debug, Default)]
pub struct Pacing {
    /// What is sent to the store (`--limit-upload`).
    pub upload: Option<Arc<RateLimit>>,
    /// What is read from it (`--limit-download`).
    pub download: Option<Arc<RateLimit>>,
}

impl Pacing {
    /// Pacers at the rates given (bytes per second), each new.
    pub fn new(upload: Option<u64>, download: Option<u64>) -> Self {
        Self {
            upload: upload.map(|rate| Arc::new(RateLimit::new(rate))),
            download: download.map(|rate| Arc::new(RateLimit::new(rate))),
        }
    }

    /// Whether neither direction is limited.
    pub fn is_none(&self) -> bool {
        self.upload.is_none() && self.download.is_none()
    }
}

/// Bytes a paced transfer moves between two turns at its pacer: at
/// 10 MiB/s a turn each 6 ms.
pub const PACED_PIECE: usize = 64 << 10;

/// `data` as a stream of pieces, each given out when `limit` gives it its
/// turn.
pub fn paced_bytes(
    data: Bytes,
    limit: Arc<RateLimit>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static {
    futures_util::stream::unfold((data, limit), |(mut rest, limit)| async move {
        if rest.is_empty() {
            return None;
        }
        let piece = rest.split_to(PACED_PIECE.min(rest.len()));
        limit.take(piece.len() as u64).await;
        Some((Ok(piece), (rest, limit)))
    })
}

/// The file at `path`, read in pieces as [`paced_bytes`] gives them.
pub async fn paced_file(
    path: PathBuf,
    limit: Arc<RateLimit>,
) -> std::io::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(&path).await?;
    Ok(futures_util::stream::unfold(
        Some((file, limit)),
        |state| async move {
            let (mut file, limit) = state?;
            let mut piece = vec![0; PACED_PIECE];
            match file.read(&mut piece).await {
                Ok(0) => None,
                Ok(n) => {
                    piece.truncate(n);
                    limit.take(n as u64).await;
                    Some((Ok(Bytes::from(piece)), Some((file, limit))))
                }
                Err(e) => Some((Err(e), None)),
            }
        },
    ))
}

/// Parses a rate as the flags take it: a number and a unit, per second
/// (`10MiB`, `500KiB`, `2.5MB`, `1GiB`; `B`, `k`/`K`, `M`, `G` alone are
/// binary, as restic's KiB/s). A bare number is refused: `10` could mean
/// bytes, KiB (restic) or Mbit (a link's speed).
pub fn parse_rate(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?}: give a unit, e.g. 10MiB (per second) or 500KiB"))?;
    let (number, unit) = text.split_at(split);
    let unit = unit.trim().trim_end_matches("/s");
    let factor: f64 = match unit {
        "B" => 1.0,
        "k" | "K" | "KiB" | "kiB" => 1024.0,
        "M" | "MiB" => 1024.0 * 1024.0,
        "G" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (B, KiB, MiB, GiB, kB, MB, GB)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: not a number before the unit"))?;
    let rate = (value * factor).round();
    if !(rate >= 1.0 && rate < u64::MAX as f64) {
        return Err(format!(
            "{text:?}: a rate must be at least 1 byte per second"
        ));
    }
    Ok(rate as u64)
}

/// A backend whose uploads and downloads go through pacers, each object
/// paced whole (for backends that cannot pace inside a transfer).
pub struct Limited {
    inner: Arc<dyn Backend>,
    pacing: Pacing,
}

impl Limited {
    /// `inner`, paced by `pacing`; `inner` itself if nothing is limited.
    pub fn wrap(inner: Arc<dyn Backend>, pacing: Pacing) -> Arc<dyn Backend> {
        if pacing.is_none() {
            return inner;
        }
        Arc::new(Self { inner, pacing })
    }

    async fn sent(&self, n: usize) {
        if let Some(up) = &self.pacing.upload {
            up.take(n as u64).await;
        }
    }

    async fn received(&self, n: usize) {
        if let Some(down) = &self.pacing.download {
            down.took(n as u64).await;
        }
    }
}

#[async_trait]
impl ReadBackend for Limited {
    async fn get(&self, key: &ObjectKey, limit: u64) -> Result<Vec<u8>> {
        let data = self.inner.get(key, limit).await?;
        self.received(data.len()).await;
        Ok(data)
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, length: u64) -> Result<Vec<u8>> {
        let data = self.inner.get_range(key, offset, length).await?;
        self.received(data.len()).await;
        Ok(data)
    }

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.inner.list(kind).await
    }

    fn keeps_archives(&self) -> bool {
        self.inner.keeps_archives()
    }

    async fn thaw_state(&self, key: &ObjectKey) -> Result<Thaw> {
        self.inner.thaw_state(key).await
    }

    async fn request_thaw(
        &self,
        key: &ObjectKey,
        class: &str,
        days: u32,
        tier: Tier,
    ) -> Result<()> {
        self.inner.request_thaw(key, class, days, tier).await
    }
}

#[async_trait]
impl WriteBackend for Limited {
    async fn put_new(&self, key: &ObjectKey, data: Vec<u8>) -> Result<()> {
        self.sent(data.len()).await;
        self.inner.put_new(key, data).await
    }

    async fn put_new_data_pack(&self, key: &ObjectKey, data: Vec<u8>) -> Result<Vec<u8>> {
        self.sent(data.len()).await;
        self.inner.put_new_data_pack(key, data).await
    }

    fn upload_concurrency(&self) -> usize {
        self.inner.upload_concurrency()
    }
}

#[async_trait]
impl DeleteBackend for Limited {
    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn retained_until(&self, key: &ObjectKey) -> Result<Option<std::time::SystemTime>> {
        self.inner.retained_until(key).await
    }
}

#[async_trait]
impl Carry for Limited {
    async fn get_carried(&self, key: &ObjectKey, limit: u64) -> Result<(Vec<u8>, Carried)> {
        let got = self.inner.get_carried(key, limit).await?;
        self.received(got.0.len()).await;
        Ok(got)
    }

    async fn get_range_carried(
        &self,
        key: &ObjectKey,
        offset: u64,
        length: u64,
    ) -> Result<(Vec<u8>, Carried)> {
        let got = self.inner.get_range_carried(key, offset, length).await?;
        self.received(got.0.len()).await;
        Ok(got)
    }

    async fn put_new_carried(
        &self,
        key: &ObjectKey,
        data: Vec<u8>,
        carried: &Carried,
    ) -> Result<()> {
        self.sent(data.len()).await;
        self.inner.put_new_carried(key, data, carried).await
    }

    async fn put_new_spooled(
        &self,
        key: &ObjectKey,
        spooled: &Spooled,
        carried: &Carried,
    ) -> Result<()> {
        let size = tokio::fs::metadata(&spooled.path)
            .await
            .map_or(0, |m| m.len());
        self.sent(size as usize).await;
        self.inner.put_new_spooled(key, spooled, carried).await
    }
}

impl Backend for Limited {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_need_a_unit_and_read_binary_and_decimal_ones() {
        assert_eq!(parse_rate("10MiB"), Ok(10 << 20));
        assert_eq!(parse_rate("10M"), Ok(10 << 20));
        assert_eq!(parse_rate("500KiB/s"), Ok(500 << 10));
        assert_eq!(parse_rate("2.5MB"), Ok(2_500_000));
        assert_eq!(parse_rate("1GiB"), Ok(1 << 30));
        for bad in ["10", "", "MiB", "10 parsecs", "0MiB", "1.2.3MiB"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} was taken");
        }
        assert!(parse_rate("10").unwrap_err().contains("give a unit"));
    }

    #[test]
    fn the_pacer_holds_the_rate_over_everyone_and_saves_up_no_burst() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let limit = Arc::new(RateLimit::new(10 << 20));
            let start = Instant::now();
            // Four tasks of 1 MiB each (in 256 KiB pieces) share 10 MiB/s:
            // the last piece starts after 15 of the 16 have gone, 0.375 s.
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let limit = limit.clone();
                    tokio::spawn(async move {
                        for _ in 0..4 {
                            limit.take(256 << 10).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(370), "{took:?}");
            assert!(took < Duration::from_millis(1500), "{took:?}");
            // Idle time is not saved up: after a pause, a second piece still
            // waits for the first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let again = Instant::now();
            limit.take(1 << 20).await;
            limit.take(1 << 20).await;
            assert!(
                again.elapsed() >= Duration::from_millis(95),
                "{:?}",
                again.elapsed()
            );
        });
    }
}
