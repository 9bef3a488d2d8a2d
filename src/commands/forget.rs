//! `coffer forget` and `coffer prune`: what they print.
//!
//! Silent on success from cron; on a terminal, with `-v` or with
//! `--dry-run` they list what they decide and sum it up.

use super::{open_repo, opened_snapshots_cached, Outcome};
use crate::args::{ForgetArgs, PruneArgs, PruneOptionArgs};
use anyhow::{bail, Result};
use coffer_core::format::encoding::display_time;
use coffer_core::ops::forget::retention::Policy;
use coffer_core::ops::forget::{self, Group, Selection};
use coffer_core::ops::prune::{self, PruneOptions, PruneReport, Tally};
use coffer_core::ops::status::format_time;
use coffer_core::repository::Repository;
use std::collections::HashSet;
use std::io::IsTerminal;
use tokio::runtime::Runtime;

/// Whether to print what was decided.
fn talkative(verbose: bool, dry_run: bool) -> bool {
    verbose || dry_run || std::io::stdout().is_terminal()
}

pub fn forget(rt: &Runtime, a: &ForgetArgs, verbose: bool) -> Result<Outcome> {
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within,
    };
    if policy.is_empty() {
        bail!(coffer_core::Error::Config(
            "forget: no --keep-* option given; that would remove every snapshot. \
             Say what to keep, e.g. --keep-daily 7 --keep-weekly 5"
                .into()
        ));
    }
    let select = Selection {
        hosts: a.select.hosts.clone(),
        tags: a.select.tags.clone(),
        paths: a.select.paths.clone(),
    };
    let repo = opened_snapshots_cached(open_repo(rt, &a.repo, &a.key)?, &a.cache);
    let groups = rt.block_on(forget::plan(&repo, &policy, &select))?;
    let talk = talkative(verbose, a.dry_run);
    if talk {
        print_plan(&groups);
    }
    // A dry run removes nothing: a prune after it must see the repository
    // as the real run would leave it, without these.
    let gone: HashSet<String> = match a.dry_run {
        true => forget::doomed(&groups).map(|s| s.name.clone()).collect(),
        false => HashSet::new(),
    };
    if a.dry_run {
        println!("dry run: would remove {} snapshots", gone.len());
    } else {
        let removed = rt.block_on(forget::forget(&repo, &groups))?;
        if talk {
            println!("removed {removed} snapshots");
        }
    }
    if a.prune {
        return run_prune(rt, &repo, &a.prune_opts, a.dry_run, gone, talk);
    }
    Ok(Outcome::Success)
}

fn print_plan(groups: &[Group]) {
    for g in groups {
        let kept = g.snapshots.iter().filter(|(_, v)| v.keep()).count();
        println!(
            "host {}, paths {}: keep {kept} of {}",
            g.host,
            g.paths.join(" "),
            g.snapshots.len()
        );
        for (s, verdict) in g.snapshots.iter().rev() {
            let time = s
                .snapshot
                .time()
                .map(display_time)
                .unwrap_or_else(|| s.snapshot.time.clone());
            let action = if verdict.keep() { "keep" } else { "remove" };
            let line = format!(
                "  {action:<6}  {}  {time}  {}",
                &s.id.to_hex()[..8],
                verdict.reasons.join(", ")
            );
            println!("{}", line.trim_end());
        }
    }
}

pub fn prune(rt: &Runtime, a: &PruneArgs, verbose: bool) -> Result<Outcome> {
    let repo = open_repo(rt, &a.repo, &a.key)?;
    let talk = talkative(verbose, a.dry_run);
    run_prune(rt, &repo, &a.opts, a.dry_run, HashSet::new(), talk)
}

fn run_prune(
    rt: &Runtime,
    repo: &Repository,
    opts: &PruneOptionArgs,
    dry_run: bool,
    gone: HashSet<String>,
    talk: bool,
) -> Result<Outcome> {
    let options = PruneOptions {
        margin: opts.margin,
        dry_run,
        gone,
    };
    let report = rt.block_on(prune::prune(repo, options))?;
    for problem in &report.indexes_unreadable {
        eprintln!("warning: index object kept, it cannot be read: {problem}");
    }
    if talk {
        print_report(&report, dry_run);
    }
    Ok(Outcome::Success)
}

fn print_report(r: &PruneReport, dry_run: bool) {
    println!(
        "{} snapshots reference {} of {} packs",
        r.snapshots,
        tally(r.referenced),
        tally(r.packs)
    );
    let deleted = if dry_run { "would delete" } else { "deleted" };
    println!(
        "{deleted} {} unreferenced packs; {deleted} {} index objects",
        tally(r.deleted),
        r.indexes_deleted
    );
    if r.young.count > 0 {
        let after = r.young_until.map(format_time).unwrap_or_default();
        println!(
            "kept {} unreferenced packs younger than the dedup horizon plus margin; \
             the first may go after {after}",
            tally(r.young)
        );
    }
    if r.locked.count > 0 {
        let until = r.locked_until.map(format_time).unwrap_or_default();
        println!(
            "kept {} unreferenced packs under Object Lock retention (until {until} at the latest)",
            tally(r.locked)
        );
    }
    if r.unknown_age.count > 0 {
        println!(
            "kept {} unreferenced packs whose age the store does not give",
            tally(r.unknown_age)
        );
    }
}

fn tally(t: Tally) -> String {
    format!("{} ({:.1} MiB)", t.count, t.bytes as f64 / 1_048_576.0)
}
