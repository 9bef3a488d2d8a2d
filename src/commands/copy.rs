//! `copy`: a repository's objects into another store; its summary.

use super::{mib, Outcome};
use crate::args::CopyArgs;
use crate::hooks::RunFacts;
use crate::progress::{Display, Reporter};
use anyhow::{Context, Result};
use coffer_core::backend::{self, limit::Pacing, s3::S3WriteOptions};
use coffer_core::ops::copy::{self, CopyOptions};
use coffer_core::repository::known::KnownRepositories;
use tokio::runtime::Runtime;

/// Runs a copy; tells `facts` what it stored, for the hooks.
pub fn copy(rt: &Runtime, a: &CopyArgs, verbose: bool, facts: &mut RunFacts) -> Result<Outcome> {
    let from = rt.block_on(backend::open_paced(
        &a.from,
        S3WriteOptions {
            profile: a.from_profile.clone(),
            ..Default::default()
        },
        Pacing::new(None, a.limit_download),
    ))?;
    let to = rt.block_on(backend::open_paced(
        &a.to,
        S3WriteOptions {
            profile: a.to_profile.clone(),
            uploads: a.uploads.map(usize::from),
            object_lock: super::object_lock(&a.object_lock),
            storage_class: a.storage_class.clone(),
            unconditional_copy: a.allow_unconditional_puts,
        },
        Pacing::new(a.limit_upload, None),
    ))?;
    if from.location() == to.location() {
        return Err(coffer_core::Error::Usage(format!(
            "--from and --to are the same repository ({})",
            a.from
        ))
        .into());
    }
    let journal_dir = match &a.state_dir {
        Some(d) => d.clone(),
        None => super::cache_home()
            .context("cannot choose where the copy's journal goes: set --state-dir or HOME")?
            .join("copies"),
    };
    let opts = CopyOptions {
        snapshots: a.snapshots.clone(),
        concurrency: a.uploads.map_or(to.upload_concurrency(), usize::from),
    };
    let reporter = Reporter::start("copy", Display::choose(a.json));
    let progress = reporter.progress().unwrap_or_default();
    let report = rt
        .block_on(copy::copy(
            from.as_ref(),
            to.as_ref(),
            &journal_dir,
            KnownRepositories::of_this_host().as_ref(),
            &opts,
            &progress,
        ))
        .with_context(|| format!("copy from {} to {} failed", a.from, a.to))?;
    reporter.finish();
    facts.files = Some(report.copied.count);
    facts.bytes = Some(report.copied.bytes);
    for d in &report.damaged {
        eprintln!("coffer: warning: {d}");
    }
    if verbose && report.gone > 0 {
        eprintln!(
            "{} objects were deleted from the source (forget, prune) before they were read; \
             not copied",
            report.gone
        );
    }
    if a.json {
        let line = serde_json::json!({"type": "summary", "report": report});
        println!("{line}");
    }
    if verbose {
        eprintln!(
            "copied {} objects ({:.1} MiB); {} ({:.1} MiB) were there already ({} known from \
             the journal); {} snapshots at {}",
            report.copied.count,
            mib(report.copied.bytes),
            report.known.count + report.present.count,
            mib(report.known.bytes + report.present.bytes),
            report.known.count,
            report.snapshots,
            a.to
        );
    }
    Ok(if report.damaged.is_empty() {
        Outcome::Success
    } else {
        let why = format!(
            "{} damaged objects were not copied (listed above); everything else was",
            report.damaged.len()
        );
        eprintln!("coffer: {why}");
        Outcome::Partial(why)
    })
}
