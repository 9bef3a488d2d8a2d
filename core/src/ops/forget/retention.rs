//! Retention policies for `coffer forget`: which snapshots of a group to
//! keep.
//!
//! The rules are restic's, so they read the same to people who know it:
//! snapshots are taken newest first; `last N` keeps the N newest; `daily N`
//! keeps the newest snapshot of each of the N most recent days that have
//! one (likewise hourly, weekly (ISO weeks), monthly, yearly); `within D`
//! keeps every snapshot taken less than D before the group's newest one (not
//! before now, so a host that stopped backing up keeps its last ones). A
//! snapshot is kept if any rule keeps it. Calendar periods are in UTC.

use std::time::Duration;
use time::OffsetDateTime;

/// How many snapshots of each kind to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N.
    pub last: usize,
    /// The newest of each of the last N hours that have a snapshot.
    pub hourly: usize,
    /// ... days.
    pub daily: usize,
    /// ... ISO weeks.
    pub weekly: usize,
    /// ... months.
    pub monthly: usize,
    /// ... years.
    pub yearly: usize,
    /// Everything taken less than this before the newest snapshot.
    pub within: Option<Duration>,
}

impl Policy {
    /// Whether the policy keeps nothing at all (forget refuses it: it would
    /// remove every snapshot).
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
    }
}

/// What the policy says about one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Which rules keep it ("last", "daily", "within"...); empty: remove it.
    pub reasons: Vec<&'static str>,
}

impl Verdict {
    /// Whether some rule keeps it.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// A calendar period rule: its name, how many to keep, and the period a
/// time falls in.
type PeriodRule = (&'static str, usize, fn(OffsetDateTime) -> i64);

/// The verdict for each of `times` (one group's snapshots, in any order),
/// in the same order.
pub fn apply(policy: &Policy, times: &[OffsetDateTime]) -> Vec<Verdict> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    // Newest first; ties keep input order.
    order.sort_by(|&a, &b| times[b].cmp(&times[a]).then(a.cmp(&b)));
    let mut verdicts = vec![Verdict::default(); times.len()];
    for (rank, &i) in order.iter().enumerate() {
        if rank < policy.last {
            verdicts[i].reasons.push("last");
        }
    }
    let rules: [PeriodRule; 5] = [
        ("hourly", policy.hourly, |t| {
            t.unix_timestamp().div_euclid(3600)
        }),
        ("daily", policy.daily, |t| i64::from(t.to_julian_day())),
        ("weekly", policy.weekly, |t| {
            let (year, week, _) = t.to_iso_week_date();
            i64::from(year) * 100 + i64::from(week)
        }),
        ("monthly", policy.monthly, |t| {
            i64::from(t.year()) * 100 + i64::from(u8::from(t.month()))
        }),
        ("yearly", policy.yearly, |t| i64::from(t.year())),
    ];
    for (name, count, period) in rules {
        let mut left = count;
        let mut last_period = None;
        for &i in &order {
            if left == 0 {
                break;
            }
            let p = period(times[i].to_offset(time::UtcOffset::UTC));
            if last_period != Some(p) {
                verdicts[i].reasons.push(name);
                last_period = Some(p);
                left -= 1;
            }
        }
    }
    if let (Some(within), Some(&newest)) = (policy.within, order.first()) {
        let since = times[newest] - within;
        for &i in &order {
            if times[i] > since {
                verdicts[i].reasons.push("within");
            }
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn kept(policy: &Policy, times: &[OffsetDateTime]) -> Vec<usize> {
        apply(policy, times)
            .iter()
            .enumerate()
            .filter(|(_, v)| v.keep())
            .map(|(i, _)| i)
            .collect()
    }

    /// Two backups a day (03:00 and 15:00) for 60 days from 2026-01-01.
    fn twice_daily() -> Vec<OffsetDateTime> {
        let start = datetime!(2026-01-01 03:00 UTC);
        (0..120)
            .map(|i| start + time::Duration::hours(12 * i))
            .collect()
    }

    #[test]
    fn an_empty_policy_keeps_nothing_and_says_so() {
        let p = Policy::default();
        assert!(p.is_empty());
        assert!(kept(&p, &twice_daily()).is_empty());
        assert!(apply(&p, &[]).is_empty());
    }

    #[test]
    fn last_keeps_the_newest_whatever_the_input_order() {
        let mut times = twice_daily();
        times.reverse();
        times.swap(3, 50);
        let p = Policy {
            last: 3,
            ..Policy::default()
        };
        let k = kept(&p, &times);
        let mut got: Vec<_> = k.iter().map(|&i| times[i]).collect();
        got.sort();
        let all = twice_daily();
        assert_eq!(got, all[117..].to_vec());
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        let times = twice_daily();
        let p = Policy {
            daily: 7,
            ..Policy::default()
        };
        let k = kept(&p, &times);
        // The 15:00 backups of the last 7 days (odd indices 119, 117, ...).
        assert_eq!(k, vec![107, 109, 111, 113, 115, 117, 119]);
        for &i in &k {
            assert_eq!(times[i].hour(), 15);
        }
    }

    #[test]
    fn weekly_uses_iso_weeks_and_monthly_months() {
        let times = twice_daily();
        let weekly = kept(
            &Policy {
                weekly: 3,
                ..Policy::default()
            },
            &times,
        );
        // 2026-03-01 (the last day) is a Sunday: its week's newest is the
        // last snapshot; the weeks before end on Sundays 02-22 and 02-15.
        let days: Vec<_> = weekly.iter().map(|&i| times[i].date()).collect();
        assert_eq!(
            days,
            vec![
                time::macros::date!(2026 - 02 - 15),
                time::macros::date!(2026 - 02 - 22),
                time::macros::date!(2026 - 03 - 01),
            ]
        );
        let monthly = kept(
            &Policy {
                monthly: 12,
                ..Policy::default()
            },
            &times,
        );
        let days: Vec<_> = monthly.iter().map(|&i| times[i].date()).collect();
        assert_eq!(
            days,
            vec![
                time::macros::date!(2026 - 01 - 31),
                time::macros::date!(2026 - 02 - 28),
                time::macros::date!(2026 - 03 - 01),
            ]
        );
    }

    #[test]
    fn rules_add_up_and_each_reason_is_named() {
        let times = twice_daily();
        let p = Policy {
            last: 2,
            daily: 2,
            yearly: 1,
            within: Some(Duration::from_secs(36 * 3600)),
            ..Policy::default()
        };
        let v = apply(&p, &times);
        assert_eq!(v[119].reasons, vec!["last", "daily", "yearly", "within"]);
        assert_eq!(v[118].reasons, vec!["last", "within"]);
        assert_eq!(v[117].reasons, vec!["daily", "within"]);
        assert_eq!(v[116].reasons, Vec::<&str>::new());
        assert_eq!(kept(&p, &times), vec![117, 118, 119]);
    }

    #[test]
    fn within_counts_from_the_newest_snapshot_not_from_now() {
        // A host that stopped a year ago keeps its last day.
        let times = twice_daily();
        let p = Policy {
            within: Some(Duration::from_secs(24 * 3600)),
            ..Policy::default()
        };
        assert_eq!(kept(&p, &times), vec![118, 119]);
    }
}
