//! Archived objects on S3 (see `backend/cold.rs`): what HeadObject says of
//! one (its class, `x-amz-restore`, Intelligent-Tiering's archive status),
//! and RestoreObject.

use super::S3Backend;
use crate::backend::cold::{parse_restore_header, Thaw, Tier};
use crate::backend::ObjectKey;
use crate::error::{Error, Result};
use aws_sdk_s3::types::{GlacierJobParameters, RestoreRequest, Tier as SdkTier};
use futures_util::TryFutureExt;

impl S3Backend {
    /// Whether `key` is readable now, restoring, or archived (HeadObject).
    pub(super) async fn head_thaw(&self, key: &ObjectKey) -> Result<Thaw> {
        let s3_key = self.key_of(key);
        let send = || {
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(&s3_key)
                .send()
        };
        let head = self
            .request("head", key, send, |f, _| {
                (f.status == Some(404)).then(|| Err(Error::NotFound(self.url_of(key))))
            })
            .await?;
        let class = head.storage_class().map(|c| c.as_str().to_string());
        let archived_tier = head.archive_status().is_some();
        let archived =
            archived_tier || matches!(class.as_deref(), Some("GLACIER" | "DEEP_ARCHIVE"));
        if !archived {
            return Ok(Thaw::Readable {
                class,
                restored_until: None,
            });
        }
        let class = class.unwrap_or_else(|| "INTELLIGENT_TIERING".into());
        match head.restore().and_then(parse_restore_header) {
            Some((true, _)) => Ok(Thaw::Restoring { class }),
            // Intelligent-Tiering moves a restored object back to an access
            // tier: no expiry, and no archive status any more.
            Some((false, until)) => Ok(Thaw::Readable {
                class: Some(class),
                restored_until: until,
            }),
            None => Ok(Thaw::Archived { class }),
        }
    }

    /// RestoreObject for `key`: `days` (not for Intelligent-Tiering, whose
    /// restores have none) at `tier`. One under way already, or an object
    /// already readable, is no error.
    pub(super) async fn restore_object(
        &self,
        key: &ObjectKey,
        days: u32,
        tier: Tier,
        intelligent_tiering: bool,
    ) -> Result<()> {
        let s3_key = self.key_of(key);
        let sdk_tier = match tier {
            Tier::Expedited => SdkTier::Expedited,
            Tier::Standard => SdkTier::Standard,
            Tier::Bulk => SdkTier::Bulk,
        };
        let job = GlacierJobParameters::builder()
            .tier(sdk_tier)
            .build()
            .map_err(|e| Error::Internal(format!("a restore request: {e}")))?;
        let mut request = RestoreRequest::builder().glacier_job_parameters(job);
        if !intelligent_tiering {
            request = request.days(i32::try_from(days).unwrap_or(i32::MAX));
        }
        let request = request.build();
        let send = || {
            self.client
                .restore_object()
                .bucket(&self.bucket)
                .key(&s3_key)
                .restore_request(request.clone())
                .send()
                .map_ok(|_| ())
        };
        self.request("restore", key, send, |f, code| match code {
            Some("RestoreAlreadyInProgress" | "ObjectAlreadyInActiveTierError") => Some(Ok(())),
            _ => (f.status == Some(404)).then(|| Err(Error::NotFound(self.url_of(key)))),
        })
        .await
    }
}
