//! Listing a bucket: ListObjectsV2 a page at a time, and the names a
//! repository listing gives what it finds.

use super::retry::{classify, storage_error, Retry};
use crate::backend::{ObjectInfo, ObjectKind};
use crate::error::Result;
use aws_sdk_s3::Client;
use std::time::Duration;

/// Calls `each` on every object under `prefix` of `bucket`, a page of
/// ListObjectsV2 (up to 1,000 objects) at a time, each page retried.
pub(super) async fn list_objects(
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

/// What a repository listing of `kind` (under `prefix`) makes of `obj`:
/// its name, size and time, or `None` for an object of no such kind.
pub(super) fn listed(
    kind: ObjectKind,
    prefix: &str,
    obj: &aws_sdk_s3::types::Object,
) -> Option<ObjectInfo> {
    let rest = obj.key()?.strip_prefix(prefix)?;
    let name = match kind {
        ObjectKind::Config if rest != "config" => return None,
        _ if kind.is_fanned() => crate::backend::pack_name(rest),
        _ if rest.contains('/') => return None,
        _ => rest,
    };
    Some(ObjectInfo {
        name: name.to_string(),
        size: obj.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        modified: obj
            .last_modified()
            .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
        storage_class: obj.storage_class().map(|c| c.as_str().to_string()),
    })
}
