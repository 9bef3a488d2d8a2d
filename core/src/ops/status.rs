//! `coffer status`: how fresh the newest snapshot is, from the object
//! listing alone. It needs no key and reads no object (but `config`, for
//! `--host`), so a monitoring host with list-only credentials can run it.

use crate::backend::{Backend, ObjectKind};
use crate::error::{Error, Result};
use crate::format::snapshot::host_tag;
use crate::repository::read_config;
use std::time::{Duration, SystemTime};

/// What the listing of `snapshots/` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Snapshot objects stored.
    pub snapshots: usize,
    /// When the newest one was stored (the end of its backup).
    pub newest: Option<SystemTime>,
}

impl Freshness {
    /// How long ago the newest snapshot was stored (zero if its time is in
    /// the future: clocks differ).
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        self.newest
            .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO))
    }

    /// Whether a snapshot younger than `max_age` exists.
    pub fn is_fresh(&self, now: SystemTime, max_age: Duration) -> bool {
        self.age(now).is_some_and(|age| age <= max_age)
    }
}

/// Lists `snapshots/` and finds the newest object's time; with `host`,
/// among that host's snapshots only (picked by the host tag in their names,
/// which takes the repository id from `config`: the one object read).
pub async fn freshness(backend: &dyn Backend, host: Option<&str>) -> Result<Freshness> {
    let mut listed = backend.list(ObjectKind::Snapshot).await?;
    if let Some(host) = host {
        let config = read_config(backend).await?;
        let prefix = format!("{}.", host_tag(&config.id, host));
        listed.retain(|o| o.name.starts_with(&prefix));
    }
    let newest = listed.iter().filter_map(|o| o.modified).max();
    if newest.is_none() && !listed.is_empty() {
        return Err(Error::Config(
            "the store lists snapshots without modification times; use `coffer snapshots`".into(),
        ));
    }
    Ok(Freshness {
        snapshots: listed.len(),
        newest,
    })
}

/// `t` as RFC 3339 UTC, to the second.
pub fn format_time(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    crate::format::encoding::format_rfc3339(t.replace_nanosecond(0).unwrap_or(t))
}

/// A duration as people write it: `2d 3h`, `5h 12m`, `40s`.
pub fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) => format!("{mins}m {secs}s"),
        (0, _, _) => format!("{hours}h {mins}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// Parses `26h`, `90m`, `2d`, `1d12h`, `3600s` or `1w` (units s, m, h, d, w;
/// a bare number is seconds).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("{text:?}: expected a duration such as 26h, 90m, 2d or 1d12h");
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total.checked_add(n).ok_or_else(bad)?;
    }
    if total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_written() {
        assert_eq!(parse_duration("26h"), Ok(Duration::from_secs(26 * 3600)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        for bad in ["", "h", "0s", "12x", "-3h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ages_read_like_people_write_them() {
        assert_eq!(format_age(Duration::from_secs(40)), "40s");
        assert_eq!(format_age(Duration::from_secs(312)), "5m 12s");
        assert_eq!(format_age(Duration::from_secs(5 * 3600 + 60)), "5h 1m");
        assert_eq!(
            format_age(Duration::from_secs(2 * 86_400 + 3 * 3600)),
            "2d 3h"
        );
    }

    #[test]
    fn fresh_means_a_snapshot_within_the_limit() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let f = Freshness {
            snapshots: 2,
            newest: Some(now - Duration::from_secs(3600)),
        };
        assert!(f.is_fresh(now, Duration::from_secs(3600)));
        assert!(!f.is_fresh(now, Duration::from_secs(3599)));
        let none = Freshness {
            snapshots: 0,
            newest: None,
        };
        assert!(!none.is_fresh(now, Duration::from_secs(1 << 40)));
    }
}
