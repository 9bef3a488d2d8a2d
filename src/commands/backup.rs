//! `backup`: options into the writer's, the run, its summary.

use super::{mib, mode_check, Outcome};
use crate::args::{BackupArgs, SourceArgs};
use crate::command_output::CommandOutput;
use crate::hooks::RunFacts;
use crate::progress::{Display, Reporter};
use anyhow::{Context, Result};
use coffer_core::backend;
use coffer_core::backend::limit::Pacing;
use coffer_core::backend::s3::{AccessKeys, S3Access, S3WriteOptions};
use coffer_core::crypto::WriterKey;
use coffer_core::format::id::ObjectId;
use coffer_core::format::snapshot::SnapshotStats;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
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

/// How a list file separates and marks up its paths.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ListForm {
    /// One a line, trimmed; blank lines and `#` comments skipped.
    Lines,
    /// One a line, as it stands.
    Verbatim,
    /// Separated by NUL bytes.
    Raw,
}

/// The entries of list file `path` (`-`: standard input) in `form`.
fn read_list(path: &Path, form: ListForm, what: &str) -> Result<Vec<Vec<u8>>> {
    let bytes = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
            .with_context(|| format!("reading {what} from standard input"))?;
        bytes
    } else {
        std::fs::read(path).with_context(|| format!("{}: cannot read {what}", path.display()))?
    };
    let sep = if form == ListForm::Raw { b'\0' } else { b'\n' };
    Ok(bytes
        .split(|&b| b == sep)
        .filter_map(|item| match form {
            ListForm::Lines => {
                let item = item.trim_ascii();
                (!item.is_empty() && !item.starts_with(b"#")).then(|| item.to_vec())
            }
            ListForm::Verbatim | ListForm::Raw => (!item.is_empty()).then(|| item.to_vec()),
        })
        .collect())
}

/// The PATH arguments and the paths of the --files-from lists.
fn source_paths(a: &BackupArgs) -> Result<Vec<PathBuf>> {
    let lists = (a.files_from.iter().map(|p| (p, ListForm::Lines)))
        .chain(
            a.files_from_verbatim
                .iter()
                .map(|p| (p, ListForm::Verbatim)),
        )
        .chain(a.files_from_raw.iter().map(|p| (p, ListForm::Raw)));
    let mut paths = a.paths.clone();
    for (list, form) in lists {
        if list == Path::new("-") && (a.stdin || a.stdin_from_command) {
            anyhow::bail!(
                "--files-from - reads standard input, which --stdin backs up: use a file"
            );
        }
        let items = read_list(list, form, "the list of paths")?;
        paths.extend(
            items
                .into_iter()
                .map(|p| PathBuf::from(std::ffi::OsString::from_vec(p))),
        );
    }
    Ok(paths)
}

/// The --exclude patterns and those of the --exclude-file files.
fn exclude_patterns(a: &BackupArgs) -> Result<Vec<String>> {
    let mut patterns = a.excludes.clone();
    for file in &a.exclude_files {
        for line in read_list(file, ListForm::Lines, "the exclude patterns")? {
            let line = String::from_utf8(line).map_err(|_| {
                anyhow::anyhow!("{}: an exclude pattern is not UTF-8", file.display())
            })?;
            patterns.push(line);
        }
    }
    Ok(patterns)
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
    let horizon = key.config.dedup_horizon_days;
    if let Some(why) = a
        .storage_class
        .as_deref()
        .and_then(|class| coffer_core::backend::cold::horizon_warning(class, horizon))
    {
        eprintln!("coffer: warning: {why}");
    }
    let s3 = S3WriteOptions {
        object_lock: super::object_lock(&a.object_lock),
        storage_class: a.storage_class.clone(),
        uploads: a.uploads.map(usize::from),
        profile: None,
        unconditional_copy: false,
    };
    let pacing = Pacing::new(a.limit_upload, None);
    let backend = rt.block_on(backend::open_paced(&a.repo.repo, s3, pacing))?;
    let state_dir = match &a.state_dir {
        Some(d) => d.clone(),
        None => super::cache_home()
            .context("cannot choose a state directory: set --state-dir, COFFER_STATE_DIR or HOME")?
            .join(&key.config.id),
    };
    let reporter = Reporter::start("backup", Display::choose(a.json));
    let (paths, excludes) = (source_paths(a)?, exclude_patterns(a)?);
    let mut exclude_if_present = a.exclude_if_present.clone();
    if a.exclude_caches {
        exclude_if_present.push(coffer_writer::CACHEDIR_TAG.to_string());
    }
    let opts = coffer_writer::BackupOptions {
        paths,
        source_access: source_access(&a.source)?,
        stdin_name: stream_name(a)?,
        host: a.host.clone(),
        tags: a.tags.clone(),
        excludes,
        exclude_if_present,
        exclude_larger_than: a.exclude_larger_than,
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
