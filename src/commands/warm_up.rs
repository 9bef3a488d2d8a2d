//! `warm-up`: restore requests for the archived data packs a selection
//! needs, the plan printed (or as JSON), and `--wait` until all are readable.

use super::{mib, open_repo_cached, selection, split_spec, warn_all, Outcome};
use crate::args::{ThawArgs, WarmUpArgs};
use anyhow::Result;
use coffer_core::backend::Tier;
use coffer_core::ops::warm_up::{self, Needed, PackPlan, Totals};
use coffer_core::repository::Repository;
use std::collections::HashSet;
use std::time::Duration;
use tokio::runtime::Runtime;

/// Seconds between two looks at restores under way (`--wait`).
const POLL: Duration = Duration::from_secs(60);

pub fn warm_up(rt: &Runtime, a: &WarmUpArgs) -> Result<Outcome> {
    let repo = open_repo_cached(rt, &a.repo, &a.key, &a.cache)?;
    let select = selection(&a.select);
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
    let asked = ask(rt, &repo, &mut plan, &before, &a.thaw, prices, a.dry_run)?;
    if a.json {
        println!("{}", plan_json(&plan, &before, &asked));
    } else {
        for line in asked.lines(&before) {
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
fn prices_of(per_gb: Option<f64>, per_1000: Option<f64>) -> Option<warm_up::Prices> {
    (per_gb.is_some() || per_1000.is_some()).then(|| warm_up::Prices {
        per_gb: per_gb.unwrap_or(0.0),
        per_1000: per_1000.unwrap_or(0.0),
    })
}

/// Asks S3 to restore the archived packs of `plan` (`before` its totals)
/// for `thaw.days` at `thaw.tier`, or with `dry_run` asks for nothing;
/// first a usage error if their class does not offer the tier. What was
/// asked, with the estimate (at `prices` if given, else the table's).
pub(super) fn ask(
    rt: &Runtime,
    repo: &Repository,
    plan: &mut [PackPlan],
    before: &Totals,
    thaw: &ThawArgs,
    prices: Option<warm_up::Prices>,
    dry_run: bool,
) -> Result<Asked> {
    let tier = thaw.tier();
    let estimate = warm_up::estimate(plan, tier, prices);
    if before.archived > 0 && estimate.is_none() {
        return Err(coffer_core::Error::Usage(format!(
            "tier {} is not offered for these packs' storage class (DEEP_ARCHIVE has no \
             Expedited): pass --tier standard or --tier bulk",
            tier.as_str()
        ))
        .into());
    }
    let count = match dry_run {
        true => 0,
        false => rt.block_on(warm_up::request(repo, plan, thaw.days, tier))?,
    };
    Ok(Asked {
        count,
        dry_run,
        days: thaw.days,
        tier,
        estimate,
        prices_given: prices.is_some(),
    })
}

/// Asks again every [`POLL`] (`COFFER_WARM_UP_POLL_SECONDS`) until no pack
/// is restoring, with a line on stderr each time.
pub(super) fn wait_until_readable(
    rt: &Runtime,
    repo: &Repository,
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

/// What a warm-up asked for (or, dry, would have), as its report says it.
pub(super) struct Asked {
    /// Restore requests sent.
    count: usize,
    dry_run: bool,
    days: u32,
    tier: Tier,
    /// Dollars and the waits; `None` if a class has no such tier.
    estimate: Option<(f64, Vec<&'static str>)>,
    /// The estimate is at prices given, not the built-in table's.
    prices_given: bool,
}

impl Asked {
    /// The plan (totals `t`) and what was asked, in words, a line each.
    pub(super) fn lines(&self, t: &Totals) -> Vec<String> {
        let mut lines = vec![format!(
            "{} data packs ({:.1} MiB) hold what the selection reads: {} readable ({} of \
             them restored copies), {} restoring, {} archived, {} missing",
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
        let verb = if self.dry_run { "would ask" } else { "asked" };
        let count = if self.dry_run { t.archived } else { self.count };
        lines.push(format!(
            "{verb} S3 to restore {count} packs ({:.1} MiB) for {} days, tier {}",
            mib(t.cold_bytes),
            self.days,
            self.tier.as_str()
        ));
        let source = match self.prices_given {
            true => "the prices given",
            false => "us-east-1 prices",
        };
        if let Some((dollars, waits)) = &self.estimate {
            lines.push(format!(
                "estimated retrieval cost: ${dollars:.4} ({source}); expected wait: {}",
                waits.join(", ")
            ));
        }
        lines
    }
}

fn plan_json(plan: &[PackPlan], t: &Totals, asked: &Asked) -> serde_json::Value {
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
        "dry_run": asked.dry_run,
        "requested": asked.count,
        "tier": asked.tier.as_str(),
        "days": asked.days,
        "estimated_cost_usd": asked.estimate.as_ref().map(|e| e.0),
        "prices": if asked.prices_given { "given" } else { "us-east-1" },
        "expected_wait": asked.estimate.as_ref().map(|e| e.1.clone()),
    })
}
