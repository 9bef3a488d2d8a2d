//! `coffer warm-up`: the data packs that the files below some paths of some
//! snapshots read, found from their (hot) trees, each tree read once; which
//! of them the store keeps archived (a listing's storage class, then a HEAD
//! of those that may be: see `backend/cold.rs`); restore requests for the
//! archived ones; and, for `--wait`, the same question again until every
//! pack is readable. What a retrieval costs and how long it takes, by class
//! and tier, is [`retrieval`]'s table.

use crate::backend::cold::may_be_archived;
use crate::backend::{Thaw, Tier};
use crate::error::{Error, Result};
use crate::format::id::PackId;
use crate::format::index::PackKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{nested_too_deep, Kind, Location, MAX_DEPTH};
use crate::repository::Repository;
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashSet};

/// HEADs and restore requests at once.
const REQUESTS_AT_ONCE: usize = 16;

/// The data packs a selection reads: for each, the stored bytes of its
/// chunks the selection needs.
#[derive(Debug, Default)]
pub struct Needed {
    /// Pack id -> bytes of it the files read.
    pub packs: BTreeMap<PackId, u64>,
    /// Directories that could not be read (damage, nesting), each with why.
    pub problems: Vec<String>,
}

/// Adds the data packs the files at or below `path` of `snapshot` read to
/// `needed`. A tree shared by several directories (or snapshots) is read
/// once.
pub async fn add_needed(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    seen: &mut HashSet<Location>,
    needed: &mut Needed,
) -> Result<()> {
    let top = repo.resolve(snapshot, path).await?;
    for chunk in &top.chunks {
        *needed.packs.entry(chunk.pack).or_default() += chunk.length;
    }
    let (Kind::Dir, Some(root)) = (top.kind, top.subtree) else {
        return Ok(());
    };
    let mut todo = vec![(root, format!("/{}", path.trim_matches('/')), 0)];
    while let Some((loc, dir, depth)) = todo.pop() {
        if !seen.insert(loc) {
            continue;
        }
        if depth >= MAX_DEPTH {
            needed
                .problems
                .push(format!("{dir}: {}", nested_too_deep()));
            continue;
        }
        let tree = match repo.shared_tree(&loc).await {
            Ok(tree) => tree,
            Err(e @ (Error::Damaged { .. } | Error::Forged { .. } | Error::NotFound(_))) => {
                needed.problems.push(format!("{dir}: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        for entry in &tree.entries {
            for chunk in &entry.chunks {
                *needed.packs.entry(chunk.pack).or_default() += chunk.length;
            }
            if let (Kind::Dir, Some(sub)) = (entry.kind, entry.subtree) {
                let name = String::from_utf8_lossy(&entry.name);
                let below = format!("{}/{name}", dir.trim_end_matches('/'));
                todo.push((sub, below, depth + 1));
            }
        }
    }
    Ok(())
}

/// Where one needed pack stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackState {
    /// Readable now (never archived, or restored).
    Readable(Thaw),
    /// Archived, a restore under way.
    Restoring(String),
    /// Archived, nothing asked.
    Archived(String),
    /// Not in the store.
    Missing,
}

impl PackState {
    fn of(thaw: Thaw) -> Self {
        match thaw {
            Thaw::Restoring { class } => PackState::Restoring(class),
            Thaw::Archived { class } => PackState::Archived(class),
            readable => PackState::Readable(readable),
        }
    }

    /// Readable as a restored copy of an archived pack (until it expires).
    pub fn is_restored(&self) -> bool {
        matches!(
            self,
            PackState::Readable(Thaw::Readable {
                restored_until: Some(_),
                ..
            })
        )
    }

    /// A word for it, as `--json` and the summary say it.
    pub fn word(&self) -> &'static str {
        match self {
            PackState::Readable(_) if self.is_restored() => "restored",
            PackState::Readable(_) => "readable",
            PackState::Restoring(_) => "restoring",
            PackState::Archived(_) => "archived",
            PackState::Missing => "missing",
        }
    }
}

/// One needed pack and where it stands.
#[derive(Debug, Clone)]
pub struct PackPlan {
    /// The pack.
    pub id: PackId,
    /// Its stored size (what a restore of it retrieves), from the listing.
    pub size: u64,
    /// The bytes of it the selection reads.
    pub needed: u64,
    /// Where it stands.
    pub state: PackState,
}

/// The data packs as one listing gives them: size and storage class.
#[derive(Debug, Default)]
pub struct Listed(BTreeMap<PackId, (u64, Option<String>)>);

impl Listed {
    /// Lists the repository's data packs.
    pub async fn of(repo: &Repository) -> Result<Self> {
        let kind = repo.places().object_kind(PackKind::Data);
        Ok(Self(
            repo.backend()
                .list(kind)
                .await?
                .into_iter()
                .filter_map(|o| Some((PackId::from_hex(&o.name)?, (o.size, o.storage_class))))
                .collect(),
        ))
    }

    /// Whether any listed pack is in a class that may be archived (if
    /// none is, nothing needs a plan: every pack reads).
    pub fn any_may_be_archived(&self) -> bool {
        self.0
            .values()
            .any(|(_, class)| may_be_archived(class.as_deref()))
    }
}

/// Where each needed pack stands: listed once, and a HEAD for those a
/// listing says may be archived.
pub async fn plan(repo: &Repository, needed: &Needed) -> Result<Vec<PackPlan>> {
    plan_listed(repo, needed, &Listed::of(repo).await?).await
}

/// [`plan`], from a listing already made.
pub async fn plan_listed(
    repo: &Repository,
    needed: &Needed,
    listed: &Listed,
) -> Result<Vec<PackPlan>> {
    let listed = &listed.0;
    let plans = needed.packs.iter().map(|(&id, &bytes)| {
        let listing = listed.get(&id).cloned();
        async move {
            let state = match &listing {
                None => PackState::Missing,
                Some((_, class)) if !may_be_archived(class.as_deref()) => {
                    PackState::Readable(Thaw::Readable {
                        class: class.clone(),
                        restored_until: None,
                    })
                }
                Some(_) => match repo
                    .backend()
                    .thaw_state(&repo.pack_key(&id, PackKind::Data))
                    .await
                {
                    Ok(thaw) => PackState::of(thaw),
                    Err(Error::NotFound(_)) => PackState::Missing,
                    Err(e) => return Err(e),
                },
            };
            Ok(PackPlan {
                id,
                size: listing.map_or(0, |(size, _)| size),
                needed: bytes,
                state,
            })
        }
    });
    stream::iter(plans)
        .buffered(REQUESTS_AT_ONCE)
        .collect::<Vec<Result<PackPlan>>>()
        .await
        .into_iter()
        .collect()
}

/// Asks the store to restore every archived pack of `plan` for `days` at
/// `tier`; they are restoring then. How many were asked for.
pub async fn request(
    repo: &Repository,
    plan: &mut [PackPlan],
    days: u32,
    tier: Tier,
) -> Result<usize> {
    let asks = plan.iter_mut().filter_map(|p| {
        let PackState::Archived(class) = &p.state else {
            return None;
        };
        let class = class.clone();
        Some((p, class))
    });
    let asked = stream::iter(asks)
        .map(|(p, class)| async move {
            repo.backend()
                .request_thaw(&repo.pack_key(&p.id, PackKind::Data), &class, days, tier)
                .await?;
            p.state = PackState::Restoring(class);
            Ok::<_, Error>(())
        })
        .buffer_unordered(REQUESTS_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    let count = asked.len();
    asked.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(count)
}

/// Asks again where each restoring pack of `plan` stands.
pub async fn refresh(repo: &Repository, plan: &mut [PackPlan]) -> Result<()> {
    let asks = plan
        .iter_mut()
        .filter(|p| matches!(p.state, PackState::Restoring(_)));
    let asked = stream::iter(asks)
        .map(|p| async move {
            p.state = PackState::of(
                repo.backend()
                    .thaw_state(&repo.pack_key(&p.id, PackKind::Data))
                    .await?,
            );
            Ok::<_, Error>(())
        })
        .buffer_unordered(REQUESTS_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    asked.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(())
}

/// Counts and bytes of a plan, by state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    /// Packs needed.
    pub packs: usize,
    /// Their stored bytes.
    pub bytes: u64,
    /// Readable now (restored ones included).
    pub readable: usize,
    /// Of those, restored copies of archived packs.
    pub restored: usize,
    /// Restores under way.
    pub restoring: usize,
    /// Archived with nothing asked.
    pub archived: usize,
    /// Stored bytes of the archived and restoring ones (what a retrieval
    /// brings back).
    pub cold_bytes: u64,
    /// Not in the store.
    pub missing: usize,
}

/// The totals of `plan`.
pub fn totals(plan: &[PackPlan]) -> Totals {
    let mut t = Totals {
        packs: plan.len(),
        ..Totals::default()
    };
    for p in plan {
        t.bytes += p.size;
        match &p.state {
            PackState::Readable(_) => {
                t.readable += 1;
                t.restored += usize::from(p.state.is_restored());
            }
            PackState::Restoring(_) => {
                t.restoring += 1;
                t.cold_bytes += p.size;
            }
            PackState::Archived(_) => {
                t.archived += 1;
                t.cold_bytes += p.size;
            }
            PackState::Missing => t.missing += 1,
        }
    }
    t
}

/// What retrieving from `class` at `tier` costs and how long it takes, as
/// AWS's S3 pricing page gives it for us-east-1 (2026): dollars per GB
/// retrieved, dollars per 1,000 restore requests, and the wait. `None`
/// where the class offers no such tier (DEEP_ARCHIVE has no Expedited).
pub fn retrieval(class: &str, tier: Tier) -> Option<(f64, f64, &'static str)> {
    Some(match (class, tier) {
        ("GLACIER", Tier::Expedited) => (0.03, 10.0, "1-5 minutes"),
        ("GLACIER", Tier::Standard) => (0.01, 0.05, "3-5 hours"),
        ("GLACIER", Tier::Bulk) => (0.0, 0.0, "5-12 hours"),
        ("DEEP_ARCHIVE", Tier::Standard) => (0.02, 0.10, "within 12 hours"),
        ("DEEP_ARCHIVE", Tier::Bulk) => (0.0025, 0.025, "within 48 hours"),
        // Restores from Intelligent-Tiering's archive tiers cost nothing;
        // the wait is that of the tier the object sits in (Archive Access
        // as GLACIER, Deep Archive Access as DEEP_ARCHIVE).
        ("INTELLIGENT_TIERING", Tier::Expedited) => (0.0, 0.0, "1-5 minutes (Archive Access)"),
        ("INTELLIGENT_TIERING", Tier::Standard) => (0.0, 0.0, "3-12 hours"),
        ("INTELLIGENT_TIERING", Tier::Bulk) => (0.0, 0.0, "5-48 hours"),
        _ => return None,
    })
}

/// Retrieval prices that replace [`retrieval`]'s for every class (another
/// region's, a negotiated rate): dollars per GB, per 1,000 requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// Dollars per GB retrieved.
    pub per_gb: f64,
    /// Dollars per 1,000 restore requests.
    pub per_1000: f64,
}

/// The estimated cost of restoring the archived packs of `plan` at `tier`
/// (dollars; at `prices` if given, else [`retrieval`]'s), and the longest
/// wait; `None` if a class has no such tier.
pub fn estimate(
    plan: &[PackPlan],
    tier: Tier,
    prices: Option<Prices>,
) -> Option<(f64, Vec<&'static str>)> {
    let mut dollars = 0.0;
    let mut waits = Vec::new();
    for p in plan {
        let PackState::Archived(class) = &p.state else {
            continue;
        };
        let (mut per_gb, mut per_1000, wait) = retrieval(class, tier)?;
        if let Some(given) = prices {
            (per_gb, per_1000) = (given.per_gb, given.per_1000);
        }
        dollars += per_gb * p.size as f64 / 1e9 + per_1000 / 1000.0;
        if !waits.contains(&wait) {
            waits.push(wait);
        }
    }
    Some((dollars, waits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u8, size: u64, state: PackState) -> PackPlan {
        PackPlan {
            id: PackId::from_hex(&format!("{n:02x}").repeat(32)).unwrap(),
            size,
            needed: size / 2,
            state,
        }
    }

    #[test]
    fn totals_and_estimates_follow_the_states_and_the_price_table() {
        let restored = PackState::Readable(Thaw::Readable {
            class: Some("DEEP_ARCHIVE".into()),
            restored_until: Some(std::time::SystemTime::UNIX_EPOCH),
        });
        let hot = PackState::Readable(Thaw::Readable {
            class: None,
            restored_until: None,
        });
        let plan = vec![
            pack(
                1,
                16_000_000_000,
                PackState::Archived("DEEP_ARCHIVE".into()),
            ),
            pack(2, 1_000, PackState::Restoring("DEEP_ARCHIVE".into())),
            pack(3, 10, restored),
            pack(4, 10, hot),
            pack(5, 0, PackState::Missing),
        ];
        let t = totals(&plan);
        assert_eq!(
            (
                t.packs,
                t.readable,
                t.restored,
                t.restoring,
                t.archived,
                t.missing
            ),
            (5, 2, 1, 1, 1, 1)
        );
        assert_eq!(t.cold_bytes, 16_000_001_000);
        // 16 GB from DEEP_ARCHIVE, Standard: 16 x $0.02 + one request.
        let (dollars, waits) = estimate(&plan, Tier::Standard, None).unwrap();
        assert!((dollars - (0.32 + 0.0001)).abs() < 1e-9, "{dollars}");
        assert_eq!(waits, vec!["within 12 hours"]);
        assert!(estimate(&plan, Tier::Expedited, None).is_none());
        // Given prices replace the table's: 16 x $0.05 + $1 / 1,000.
        let prices = Prices {
            per_gb: 0.05,
            per_1000: 1.0,
        };
        let (dollars, _) = estimate(&plan, Tier::Bulk, Some(prices)).unwrap();
        assert!((dollars - (0.8 + 0.001)).abs() < 1e-9, "{dollars}");
    }
}
