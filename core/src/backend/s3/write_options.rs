//! How a writer stores objects on S3: Object Lock retention (its own, or
//! a copied object's), the storage class of data packs, uploads at once.

use crate::backend::Carried;
use aws_sdk_s3::types::ObjectLockMode;
use std::time::{Duration, SystemTime};

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

/// Uploads a writer runs at once unless told otherwise: enough to hide
/// the latency of one request on a LAN or nearby region. Each holds one
/// pack (up to 24 MiB) in memory.
pub const DEFAULT_UPLOADS: usize = 4;

impl LockMode {
    /// The SDK's name for it.
    pub(super) fn to_sdk(self) -> ObjectLockMode {
        match self {
            LockMode::Compliance => ObjectLockMode::Compliance,
            LockMode::Governance => ObjectLockMode::Governance,
        }
    }

    /// A mode the SDK reports, if it is one of the two.
    pub(super) fn from_sdk(mode: &ObjectLockMode) -> Option<Self> {
        match mode {
            ObjectLockMode::Compliance => Some(LockMode::Compliance),
            ObjectLockMode::Governance => Some(LockMode::Governance),
            _ => None,
        }
    }
}

/// The retention a PUT sends: `own` (`--object-lock-days`) from now, a
/// copied object's own (if not over yet), the later of the two if both.
pub(super) fn retention(
    own: Option<ObjectLock>,
    carried: Option<&Carried>,
) -> Option<(SystemTime, LockMode)> {
    let own = own.map(|lock| {
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
