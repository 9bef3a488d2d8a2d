//! Retrying S3 requests: which failures are transient (5xx, throttling,
//! resets, timeouts), capped exponential backoff with full jitter, and the
//! error a request that gave up becomes.

use crate::error::{Error, Result};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::time::Duration;

/// First backoff; doubles per attempt up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// What kind of failure a request had.
#[derive(Debug, Clone, Copy)]
pub(super) struct Failure {
    pub(super) transient: bool,
    pub(super) status: Option<u16>,
}

/// Whether the failure of a request is worth another attempt.
pub(super) fn classify<E: ProvideErrorMetadata>(e: &SdkError<E>) -> Failure {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let transient = match e {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(d) => !d.is_user(),
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("");
            matches!(status, Some(408 | 409 | 429 | 500..=599))
                || matches!(
                    code,
                    "SlowDown"
                        | "Throttling"
                        | "ThrottlingException"
                        | "RequestTimeout"
                        | "RequestTimeTooSkewed"
                        | "InternalError"
                        | "ServiceUnavailable"
                )
        }
        _ => false,
    };
    Failure { transient, status }
}

/// The error a failed request becomes: the object, the HTTP status and
/// the S3 error code (never a credential).
pub(super) fn storage_error<E>(op: &'static str, url: String, e: &SdkError<E>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let status = e
        .raw_response()
        .map(|r| format!("HTTP {}: ", r.status().as_u16()))
        .unwrap_or_default();
    let message = e.message().filter(|m| !m.trim().is_empty());
    let mut what = match (e.code(), message) {
        (Some(code), Some(msg)) => format!("{status}{code}: {msg}"),
        (Some(code), None) => format!("{status}{code}"),
        _ => format!("{status}{}", cause_chain(e)),
    };
    if let Some(hint) = e.code().and_then(hint_for) {
        what.push_str(" (");
        what.push_str(hint);
        what.push(')');
    }
    Error::Storage {
        op,
        key: url,
        source: std::io::Error::other(what),
    }
}

/// What to do about an S3 error code that says more than its words.
fn hint_for(code: &str) -> Option<&'static str> {
    match code {
        // radosgw's (and MinIO's "XMinioAdminBucketQuotaExceeded") answer to a
        // PUT past a user or bucket quota.
        "QuotaExceeded" | "XMinioAdminBucketQuotaExceeded" => Some(
            "the store's quota for this bucket or user is full: nothing more can be \
             stored until it is raised or space is freed; what was stored stays, a backup \
             stopped here wrote no snapshot, and the next one sends only what is missing",
        ),
        _ => None,
    }
}

/// An error and its causes, joined by ": " (the SDK's own rendering adds a
/// Debug dump).
pub(super) fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// Backoff state of one request.
pub(super) struct Retry {
    /// Attempts that failed so far.
    pub(super) attempts: u32,
    deadline: tokio::time::Instant,
}

impl Retry {
    pub(super) fn new(limit: Duration) -> Self {
        Self {
            attempts: 0,
            deadline: tokio::time::Instant::now() + limit,
        }
    }

    /// Sleeps before the next attempt if `failure` is transient and time is
    /// left; otherwise returns the error `make_err` builds.
    pub(super) async fn after(
        &mut self,
        failure: Failure,
        make_err: impl FnOnce() -> Error,
    ) -> Result<()> {
        let delay = backoff(self.attempts);
        let now = tokio::time::Instant::now();
        if !failure.transient || now + delay > self.deadline {
            let err = make_err();
            return Err(match err {
                Error::Storage { op, key, source } if failure.transient => Error::Storage {
                    op,
                    key,
                    source: std::io::Error::other(format!(
                        "gave up after {} attempts: {source}",
                        self.attempts + 1
                    )),
                },
                other => other,
            });
        }
        tracing::debug!(
            attempt = self.attempts + 1,
            ?delay,
            "S3 request failed; retrying"
        );
        self.attempts += 1;
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Full jitter: a random delay up to min(cap, base * 2^attempt).
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    ceiling.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_refusal_says_what_it_means_and_other_codes_say_nothing_more() {
        let hint = hint_for("QuotaExceeded").expect("a hint");
        assert!(hint.contains("quota") && hint.contains("only what is missing"));
        assert!(hint_for("AccessDenied").is_none());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..40 {
            let d = backoff(attempt);
            assert!(d <= BACKOFF_CAP);
            assert!(d <= BACKOFF_BASE * 2u32.pow(attempt.min(16)));
        }
    }
}
