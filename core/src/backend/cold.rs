//! Archived objects: S3's GLACIER and DEEP_ARCHIVE classes (and the archive
//! tiers of INTELLIGENT_TIERING) keep an object's bytes offline; a GET
//! answers `InvalidObjectState` ([`crate::Error::Cold`]) until a restore
//! (RestoreObject) has put a readable copy beside it for some days. What a
//! backend says of one object, and the tiers a restore can ask for.

use std::time::SystemTime;

/// Whether an object can be read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Thaw {
    /// Readable: a class that is not archived, or a restored copy (until
    /// `until`, when the store says).
    Readable {
        /// The storage class, if the store says (`None`: the default).
        class: Option<String>,
        /// Archived, with a restored copy readable until then.
        restored_until: Option<SystemTime>,
    },
    /// Archived, and a restore is under way.
    Restoring {
        /// The storage class.
        class: String,
    },
    /// Archived, and no restore asked for (or the last one expired).
    Archived {
        /// The storage class.
        class: String,
    },
}

/// How fast (and at what price) the store restores an archived object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Minutes (GLACIER only; AWS may refuse it when busy).
    Expedited,
    /// Hours: the default.
    Standard,
    /// The cheapest, the slowest.
    Bulk,
}

impl Tier {
    /// Its name in S3's API.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Expedited => "Expedited",
            Tier::Standard => "Standard",
            Tier::Bulk => "Bulk",
        }
    }
}

/// Whether objects listed in `class` may be archived (a HEAD tells).
pub fn may_be_archived(class: Option<&str>) -> bool {
    matches!(
        class,
        Some("GLACIER" | "DEEP_ARCHIVE" | "INTELLIGENT_TIERING")
    )
}

/// The days S3 bills an object of `class` for at least, however soon it
/// is deleted (AWS's S3 pricing page, 2026); `None` for classes without
/// a minimum (STANDARD, INTELLIGENT_TIERING) or that coffer does not know.
pub fn minimum_storage_days(class: &str) -> Option<u32> {
    match class {
        "STANDARD_IA" | "ONEZONE_IA" => Some(30),
        "GLACIER_IR" | "GLACIER" => Some(90),
        "DEEP_ARCHIVE" => Some(180),
        _ => None,
    }
}

/// Why a dedup horizon of `horizon_days` costs more than it saves with
/// data packs in `class`, if it does: a chunk still in use is uploaded
/// again once its pack is past the horizon, and prune may delete the old
/// pack once no snapshot needs it, each copy billed for the class's
/// minimum days.
pub fn horizon_warning(class: &str, horizon_days: u32) -> Option<String> {
    let minimum = minimum_storage_days(class)?;
    (horizon_days < minimum).then(|| {
        format!(
            "data packs in {class} are billed for at least {minimum} days, but this \
             repository's dedup horizon is {horizon_days} days: a chunk still in use is \
             uploaded again every {horizon_days} days, and each copy is billed {minimum}. \
             For {class}, make the repository with `coffer init --dedup-horizon-days \
             {minimum}` (or more)"
        )
    })
}

/// What S3's `x-amz-restore` header says: `ongoing-request="true"`, or
/// `ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"`.
/// `None` for anything else.
pub fn parse_restore_header(value: &str) -> Option<(bool, Option<SystemTime>)> {
    let ongoing = value
        .split(',')
        .find_map(|part| part.trim().strip_prefix("ongoing-request="))?
        .trim_matches('"');
    let ongoing = match ongoing {
        "true" => true,
        "false" => false,
        _ => return None,
    };
    let expiry = value
        .split_once("expiry-date=")
        .map(|(_, rest)| rest.trim().trim_matches('"'))
        .and_then(httpdate);
    Some((ongoing, expiry))
}

/// An HTTP date (`Fri, 21 Dec 2012 00:00:00 GMT`).
fn httpdate(text: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let parsed = time::PrimitiveDateTime::parse(text, &format).ok()?;
    Some(parsed.assume_utc().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_horizon_shorter_than_the_class_minimum_is_warned_of() {
        let deep = horizon_warning("DEEP_ARCHIVE", 30).unwrap();
        assert!(
            deep.contains("180 days") && deep.contains("--dedup-horizon-days 180"),
            "{deep}"
        );
        assert!(horizon_warning("DEEP_ARCHIVE", 180).is_none());
        assert!(horizon_warning("GLACIER", 89).is_some());
        assert!(horizon_warning("GLACIER", 90).is_none());
        assert!(horizon_warning("STANDARD_IA", 30).is_none());
        assert!(horizon_warning("STANDARD", 1).is_none());
        assert!(horizon_warning("INTELLIGENT_TIERING", 1).is_none());
    }

    #[test]
    fn the_restore_header_reads_as_the_aws_documentation_writes_it() {
        // The two examples of the S3 API reference (HeadObject, x-amz-restore).
        assert_eq!(
            parse_restore_header("ongoing-request=\"true\""),
            Some((true, None))
        );
        let (ongoing, until) = parse_restore_header(
            "ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"",
        )
        .unwrap();
        assert!(!ongoing);
        let until = until.unwrap();
        let since = until.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(since.as_secs(), 1_356_048_000);
        assert_eq!(parse_restore_header("junk"), None);
        assert_eq!(parse_restore_header("ongoing-request=\"maybe\""), None);
        assert!(may_be_archived(Some("DEEP_ARCHIVE")));
        assert!(!may_be_archived(Some("STANDARD_IA")) && !may_be_archived(None));
    }
}
