//! `warm-up`: restore requests for the archived data packs a selection
//! needs, the plan printed (or as JSON), and `--wait` until all are readable.

use super::{mib, open_repo_cached, selection, split_spec, warn_all, Outcome};
use crate::args::{TierArg, WarmUpArgs};
use anyhow::Result;
use coffer_core::backend::Tier;
use coffer_core::ops::warm_up::{self, Needed, PackPlan, Totals};
use std::collections::HashSet;
use std::time::Duration;
use tokio::runtime::Runtime;

/// Seconds between two looks at restores under way (`--wait`).
const POLL: Duration = Duration::from_secs(60);

pub fn warm_up(rt: &Runtime, a: &WarmUpArgs) -> Result<Outcome> {
    let repo = open_repo_cached(rt, &a.repo, &a.key, &a.cache)?;
    let select = selection(&a.select);
    let tier = tier_of(a.tier);
    let mut needed = Needed::default();
    let mut seen = HashSet::new();
    for spec in &a.snapshots {
        let (snap, path) = split_spec(spec);
        let info = rt.block_on(repo.find_snapshot_in(snap, &select))?;
        rt.block_on(warm_up::add_needed(
            &repo,
            &info.snapshot,
            path,
            &mut seen,
            &mut needed,
        ))?;
    }
    let mut plan = rt.block_on(warm_up::plan(&repo, &needed))?;
    let before = warm_up::totals(&plan);
    let prices = prices_of(a.price_per_gb, a.price_per_1000);
    let estimate = offered(&plan, &before, tier, prices)?;
    let asked = if a.dry_run {
        0
    } else {
        rt.block_on(warm_up::request(&repo, &mut plan, a.days, tier))?
    };
    if a.json {
        println!(
            "{}",
            plan_json(&plan, &before, asked, a, tier, estimate.as_ref())
        );
    } else {
        let said = Asked {
            count: asked,
            dry_run: a.dry_run,
            days: a.days,
            tier,
            prices_given: prices.is_some(),
        };
        for line in plan_lines(&before, &said, estimate.as_ref()) {
            println!("{line}");
        }
    }
    warn_all(&needed.problems, "not planned");
    if before.missing > 0 {
        return Ok(Outcome::Reported(format!(
            "{} packs the selection needs are not in the store (run `coffer check`)",
            before.missing
        )));
    }
    if a.wait && !a.dry_run {
        wait_until_readable(rt, &repo, &mut plan)?;
    }
    Ok(if needed.problems.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial(format!(
            "{} directories could not be read (on stderr)",
            needed.problems.len()
        ))
    })
}

/// The retrieval prices given (`--price-per-gb`, `--price-per-1000`), if
/// any: one alone keeps the other at 0.
pub(super) fn prices_of(per_gb: Option<f64>, per_1000: Option<f64>) -> Option<warm_up::Prices> {
    (per_gb.is_some() || per_1000.is_some()).then(|| warm_up::Prices {
        per_gb: per_gb.unwrap_or(0.0),
        per_1000: per_1000.unwrap_or(0.0),
    })
}

/// The tier asked for.
pub(super) fn tier_of(arg: TierArg) -> Tier {
    match arg {
        TierArg::Expedited => Tier::Expedited,
        TierArg::Standard => Tier::Standard,
        TierArg::Bulk => Tier::Bulk,
    }
}

/// The estimate of restoring `plan`'s archived packs at `tier`; a usage
/// error if their class does not offer it.
pub(super) fn offered(
    plan: &[PackPlan],
    totals: &Totals,
    tier: Tier,
    prices: Option<warm_up::Prices>,
) -> Result<Option<(f64, Vec<&'static str>)>> {
    let estimate = warm_up::estimate(plan, tier, prices);
    if totals.archived > 0 && estimate.is_none() {
        return Err(coffer_core::Error::Usage(format!(
            "tier {} is not offered for these packs' storage class (DEEP_ARCHIVE has no \
             Expedited): pass --tier standard or --tier bulk",
            tier.as_str()
        ))
        .into());
    }
    Ok(estimate)
}

/// Asks again every [`POLL`] (`COFFER_WARM_UP_POLL_SECONDS`) until no pack
/// is restoring, with a line on stderr each time.
pub(super) fn wait_until_readable(
    rt: &Runtime,
    repo: &coffer_core::repository::Repository,
    plan: &mut [PackPlan],
) -> Result<()> {
    let poll = std::env::var("COFFER_WARM_UP_POLL_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(POLL, Duration::from_secs_f64);
    let started = std::time::Instant::now();
    loop {
        rt.block_on(warm_up::refresh(repo, plan))?;
        let t = warm_up::totals(plan);
        eprintln!(
            "warm-up: {} of {} packs readable, {} restoring ({:.0} s)",
            t.readable,
            t.packs,
            t.restoring,
            started.elapsed().as_secs_f64()
        );
        if t.restoring == 0 {
            return Ok(());
        }
        std::thread::sleep(poll);
    }
}

/// What a warm-up asked for, as its report says it.
pub(super) struct Asked {
    /// Restore requests sent.
    pub count: usize,
    pub dry_run: bool,
    pub days: u32,
    pub tier: Tier,
    /// The estimate is at prices given, not the built-in table's.
    pub prices_given: bool,
}

/// The plan in words, a line each.
pub(super) fn plan_lines(
    t: &Totals,
    asked: &Asked,
    estimate: Option<&(f64, Vec<&'static str>)>,
) -> Vec<String> {
    let mut lines = vec![format!(
        "{} data packs ({:.1} MiB) hold what the selection reads: {} readable ({} of them \
         restored copies), {} restoring, {} archived, {} missing",
        t.packs,
        mib(t.bytes),
        t.readable,
        t.restored,
        t.restoring,
        t.archived,
        t.missing
    )];
    if t.archived == 0 {
        lines.push("nothing to ask for".into());
        return lines;
    }
    let verb = if asked.dry_run { "would ask" } else { "asked" };
    let count = if asked.dry_run {
        t.archived
    } else {
        asked.count
    };
    lines.push(format!(
        "{verb} S3 to restore {count} packs ({:.1} MiB) for {} days, tier {}",
        mib(t.cold_bytes),
        asked.days,
        asked.tier.as_str()
    ));
    let source = match asked.prices_given {
        true => "the prices given",
        false => "us-east-1 prices",
    };
    if let Some((dollars, waits)) = estimate {
        lines.push(format!(
            "estimated retrieval cost: ${dollars:.4} ({source}); expected wait: {}",
            waits.join(", ")
        ));
    }
    lines
}

fn plan_json(
    plan: &[PackPlan],
    t: &Totals,
    asked: usize,
    a: &WarmUpArgs,
    tier: Tier,
    estimate: Option<&(f64, Vec<&'static str>)>,
) -> serde_json::Value {
    let packs: Vec<serde_json::Value> = plan
        .iter()
        .map(|p| {
            serde_json::json!({
                "id": p.id.to_string(),
                "size": p.size,
                "needed": p.needed,
                "state": p.state.word(),
            })
        })
        .collect();
    serde_json::json!({
        "packs": packs,
        "totals": {
            "packs": t.packs,
            "bytes": t.bytes,
            "readable": t.readable,
            "restored": t.restored,
            "restoring": t.restoring,
            "archived": t.archived,
            "archived_bytes": t.cold_bytes,
            "missing": t.missing,
        },
        "dry_run": a.dry_run,
        "requested": asked,
        "tier": tier.as_str(),
        "days": a.days,
        "estimated_cost_usd": estimate.map(|e| e.0),
        "prices": if prices_of(a.price_per_gb, a.price_per_1000).is_some() {
            "given"
        } else {
            "us-east-1"
        },
        "expected_wait": estimate.map(|e| e.1.clone()),
    })
}
