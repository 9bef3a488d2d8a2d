//! `backup`: options into the writer's, the run, its summary.

use super::{mib, mode_check, Outcome};
use crate::args::{BackupArgs, SourceArgs};
use crate::command_output::CommandOutput;
use crate::hooks::RunFacts;
use crate::progress::{Display, Reporter};
use anyhow::{Context, Result};
use coffer_core::backend;
use coffer_core::backend::s3::{AccessKeys, S3Access, S3WriteOptions};
use coffer_core::crypto::WriterKey;
use coffer_core::format::id::ObjectId;
use coffer_core::format::snapshot::SnapshotStats;
use tokio::runtime::Runtime;

/// The name a backed-up stream is stored under, if this is a stream backup.
fn stream_name(a: &BackupArgs) -> Result<Option<String>> {
    match (&a.stdin_name, a.stdin, a.stdin_from_command) {
        (Some(name), true, _) | (Some(name), _, true) => Ok(Some(name.clone())),
        (None, _, true) => Ok(Some(CommandOutput::default_name(&a.command))),
        (Some(_), false, false) => Err(coffer_writer::BackupError::Usage(
            "--stdin-name goes with --stdin or --stdin-from-command".into(),
        )
        .into()),
        _ => Ok(None),
    }
}

/// Runs a backup; tells `facts` the snapshot it wrote, for the hooks.
pub fn backup(
    rt: &Runtime,
    a: &BackupArgs,
    verbose: bool,
    facts: &mut RunFacts,
) -> Result<Outcome> {
    let result = run_backup(rt, a, verbose);
    if let Ok((_, stats, id)) = &result {
        facts.snapshot = Some(id.to_hex());
        facts.files = Some(stats.files);
        facts.bytes = Some(stats.bytes);
    }
    if let Some(path) = &a.metrics_file {
        let run = crate::metrics::Run {
            repo: &a.repo.repo,
            finished: std::time::SystemTime::now(),
            stats: result.as_ref().ok().map(|(_, stats, _)| stats),
        };
        if let Err(e) = crate::metrics::write(path, &run) {
            eprintln!(
                "coffer: warning: {}: cannot write the metrics: {e}",
                path.display()
            );
        }
    }
    result.map(|(outcome, _, _)| outcome)
}

/// How bucket sources are reached: flags, then `COFFER_SOURCE_*` keys.
fn source_access(a: &SourceArgs) -> Result<S3Access> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let keys = match (
        var("COFFER_SOURCE_ACCESS_KEY_ID"),
        var("COFFER_SOURCE_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => Some(AccessKeys {
            id,
            secret,
            session_token: var("COFFER_SOURCE_SESSION_TOKEN"),
        }),
        (None, None) => None,
        _ => anyhow::bail!(
            "set both COFFER_SOURCE_ACCESS_KEY_ID and COFFER_SOURCE_SECRET_ACCESS_KEY, or neither"
        ),
    };
    Ok(S3Access {
        profile: a.source_profile.clone(),
        keys,
        endpoint: a.source_endpoint.clone(),
        region: a.source_region.clone(),
    })
}

/// A backup run: its outcome, what it stored and the snapshot's id.
fn run_backup(
    rt: &Runtime,
    a: &BackupArgs,
    verbose: bool,
) -> Result<(Outcome, SnapshotStats, ObjectId)> {
    let key = WriterKey::read(&a.writer_key, mode_check(a.insecure_key_permissions))?;
    let s3 = S3WriteOptions {
        object_lock: super::object_lock(&a.object_lock),
        storage_class: a.storage_class.clone(),
        uploads: a.uploads.map(usize::from),
        profile: None,
        unconditional_copy: false,
    };
    let backend = rt.block_on(backend::open(&a.repo.repo, s3))?;
    let state_dir = match &a.state_dir {
        Some(d) => d.clone(),
        None => super::cache_home()
            .context("cannot choose a state directory: set --state-dir, COFFER_STATE_DIR or HOME")?
            .join(&key.config.id),
    };
    let reporter = Reporter::start("backup", Display::choose(a.json));
    let opts = coffer_writer::BackupOptions {
        paths: a.paths.clone(),
        source_access: source_access(&a.source)?,
        stdin_name: stream_name(a)?,
        host: a.host.clone(),
        tags: a.tags.clone(),
        excludes: a.excludes.clone(),
        xattrs: !a.no_xattrs,
        one_file_system: a.one_file_system,
        state_dir,
        workers: None,
        progress: reporter.progress(),
        start_time: None,
    };
    let summary = if a.stdin_from_command {
        let output = CommandOutput::spawn(&a.command)?;
        coffer_writer::backup(backend, &key, &opts, rt.handle(), output)
    } else {
        coffer_writer::backup(backend, &key, &opts, rt.handle(), std::io::stdin().lock())
    }
    .context("backup failed; no snapshot was written")?;
    reporter.finish();
    for w in &summary.warnings {
        eprintln!("coffer: warning: {w}");
    }
    let s = &summary.snapshot.stats;
    if a.json {
        let line = serde_json::json!({
            "type": "summary",
            "id": summary.id.to_hex(),
            "time": summary.snapshot.time,
            "host": summary.snapshot.host,
            "paths": summary.snapshot.paths,
            "tags": summary.snapshot.tags,
            "stats": s,
            "warnings": summary.warnings,
        });
        println!("{line}");
    }
    if verbose {
        eprintln!(
            "snapshot {} saved: {} files, {} dirs, {:.1} MiB ({} files read, {:.1} MiB new, {:.1} MiB stored in {} packs) in {:.1} s",
            &summary.id.to_hex()[..8],
            s.files,
            s.dirs,
            mib(s.bytes),
            s.files_read,
            mib(s.new_bytes),
            mib(s.stored_bytes),
            s.new_packs,
            s.duration_ms as f64 / 1000.0
        );
    }
    if summary.warnings.is_empty() {
        Ok((Outcome::Success, summary.snapshot.stats, summary.id))
    } else {
        let why = format!(
            "snapshot {} saved, but {} source entries could not be read (listed above)",
            &summary.id.to_hex()[..8],
            summary.warnings.len()
        );
        eprintln!("coffer: {why}");
        Ok((Outcome::Partial(why), summary.snapshot.stats, summary.id))
    }
}
