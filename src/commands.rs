//! One function per subcommand: validate arguments, call the library, print.

use crate::args::*;
use crate::command_output::CommandOutput;
use crate::progress::{Display, Reporter};
use anyhow::{bail, Context, Result};
use coffer_core::backend::s3::{LockMode, ObjectLock, S3WriteOptions};
use coffer_core::backend::{self, ObjectKey};
use coffer_core::config::{RepoConfig, RepoSettings, WriterKey};
use coffer_core::id::ObjectId;
use coffer_core::keyfile::{self, ModeCheck};
use coffer_core::known::{KnownRepositories, Pin};
use coffer_core::openpgp::{self, SecretKeys};
use coffer_core::repository::Repository;
use coffer_core::restore::{self, RestoreOptions};
use coffer_core::snapshot::{display_time, SnapshotInfo};
use coffer_core::tree::Kind;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::runtime::Runtime;

/// What a command wants the process to exit with, when it did not fail.
pub enum Outcome {
    /// Everything worked.
    Success,
    /// The snapshot was written, but some sources could not be read.
    Partial,
    /// A problem already reported on standard output (`status`: no recent
    /// snapshot; `check`: damage): exit 1.
    Reported,
}

pub fn key_generate(a: &KeyGenerateArgs) -> Result<Outcome> {
    let key = openpgp::generate_key(&a.name)?;
    write_new_file(&a.secret_out, &key.secret_armored, 0o600).context("writing the secret key")?;
    write_new_file(&a.cert_out, &key.cert_armored, 0o644).context("writing the certificate")?;
    eprintln!(
        "key {} written: secret {} (keep it off backup hosts), certificate {}",
        key.fingerprint,
        a.secret_out.display(),
        a.cert_out.display()
    );
    Ok(Outcome::Success)
}

fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("{}: cannot create (it must not exist yet)", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))
}

pub fn init(rt: &Runtime, a: &InitArgs) -> Result<Outcome> {
    let mut certs = Vec::new();
    for path in &a.recipients {
        let bytes = std::fs::read(path)
            .with_context(|| format!("{}: cannot read the certificate", path.display()))?;
        certs.extend(openpgp::normalize_certs(
            &bytes,
            &path.display().to_string(),
        )?);
    }
    let backend = rt.block_on(backend::open(&a.repo.repo, Default::default()))?;
    let (config, writer_key) = RepoConfig::create(
        certs,
        RepoSettings {
            dedup_horizon_days: a.dedup_horizon_days,
            zstd_level: a.zstd_level,
        },
    )?;
    writer_key.write_new(&a.writer_key_out)?;
    let config_bytes = config.to_json();
    let digest = ObjectId::of_bytes(&config_bytes);
    let stored = rt.block_on(backend.put_new(&ObjectKey::config(), config_bytes));
    if let Err(e) = stored {
        let _ = std::fs::remove_file(&a.writer_key_out);
        return Err(match e {
            coffer_core::Error::AlreadyExists(_) => anyhow::anyhow!(
                "{} already holds a repository; choose another location",
                a.repo.repo
            ),
            e => anyhow::Error::new(e).context("storing the repository config"),
        });
    }
    // This host made it: the surest first use there is (and a pin left by
    // a repository this host had there before is void).
    if let Some(known) = known_repositories() {
        known.replace(&repo_location(&a.repo.repo), &digest)?;
    }
    eprintln!(
        "repository {} created at {}; give {} to backup hosts (it can write, never read)",
        config.id,
        a.repo.repo,
        a.writer_key_out.display()
    );
    Ok(Outcome::Success)
}

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

pub fn backup(rt: &Runtime, a: &BackupArgs, verbose: bool) -> Result<Outcome> {
    let result = run_backup(rt, a, verbose);
    if let Some(path) = &a.metrics_file {
        let run = crate::metrics::Run {
            repo: &a.repo.repo,
            finished: std::time::SystemTime::now(),
            stats: result.as_ref().ok().map(|(_, stats)| stats),
        };
        if let Err(e) = crate::metrics::write(path, &run) {
            eprintln!(
                "coffer: warning: {}: cannot write the metrics: {e}",
                path.display()
            );
        }
    }
    result.map(|(outcome, _)| outcome)
}

/// A backup run: its outcome and what it stored.
fn run_backup(
    rt: &Runtime,
    a: &BackupArgs,
    verbose: bool,
) -> Result<(Outcome, coffer_core::snapshot::SnapshotStats)> {
    let key = WriterKey::read(&a.writer_key, mode_check(a.insecure_key_permissions))?;
    let s3 = S3WriteOptions {
        object_lock: a.object_lock_days.map(|days| ObjectLock {
            days,
            mode: match a.object_lock_mode {
                LockModeArg::Compliance => LockMode::Compliance,
                LockModeArg::Governance => LockMode::Governance,
            },
        }),
        storage_class: a.storage_class.clone(),
        uploads: a.uploads.map(usize::from),
    };
    let backend = rt.block_on(backend::open(&a.repo.repo, s3))?;
    let state_dir = match &a.state_dir {
        Some(d) => d.clone(),
        None => default_state_dir()?.join(&key.config.id),
    };
    let reporter = Reporter::start("backup", Display::choose(a.json));
    let opts = coffer_writer::BackupOptions {
        paths: a.paths.clone(),
        stdin_name: stream_name(a)?,
        host: a.host.clone(),
        tags: a.tags.clone(),
        excludes: a.excludes.clone(),
        state_dir,
        workers: None,
        progress: reporter.progress(),
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
        Ok((Outcome::Success, summary.snapshot.stats))
    } else {
        eprintln!(
            "coffer: snapshot {} saved, but {} source entries could not be read (listed above)",
            &summary.id.to_hex()[..8],
            summary.warnings.len()
        );
        Ok((Outcome::Partial, summary.snapshot.stats))
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn default_state_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("coffer"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache/coffer")),
        None => bail!("cannot choose a state directory: set --state-dir, COFFER_STATE_DIR or HOME"),
    }
}

/// Whether `--insecure-key-permissions` lifts the check of secret files' modes.
fn mode_check(insecure: bool) -> ModeCheck {
    if insecure {
        ModeCheck::Skip
    } else {
        ModeCheck::Private
    }
}

pub fn open_repo(rt: &Runtime, repo: &RepoArg, key: &SecretKeyArgs) -> Result<Repository> {
    let passphrase = read_passphrase(key)?;
    let check = mode_check(key.insecure_key_permissions);
    let keys = SecretKeys::from_file(&key.key, passphrase.as_deref(), check)?;
    let backend = rt.block_on(backend::open(&repo.repo, Default::default()))?;
    let opened = rt.block_on(Repository::open(backend, keys))?;
    pin_config(&repo.repo, opened.config_digest())?;
    Ok(opened)
}

/// Checks the repository's config against this host's pin for its
/// location, pinning it on first use (core/src/known.rs).
fn pin_config(repo: &str, digest: &ObjectId) -> Result<()> {
    let Some(known) = known_repositories() else {
        return Ok(());
    };
    if known.check(&repo_location(repo), digest)? == Pin::New {
        tracing::info!("pinned the config of {repo} in {}", known.path().display());
    }
    Ok(())
}

/// This host's pins: COFFER_KNOWN_REPOSITORIES, else
/// `$XDG_CONFIG_HOME/coffer/known_repositories`, else
/// `~/.config/coffer/known_repositories`; none (with a warning) without
/// any of those variables.
fn known_repositories() -> Option<KnownRepositories> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(file) = var("COFFER_KNOWN_REPOSITORIES") {
        return Some(KnownRepositories::new(file));
    }
    let dir = match (var("XDG_CONFIG_HOME"), var("HOME")) {
        (Some(d), _) => PathBuf::from(d),
        (None, Some(home)) => PathBuf::from(home).join(".config"),
        (None, None) => {
            tracing::warn!("neither COFFER_KNOWN_REPOSITORIES nor HOME is set: config not pinned");
            return None;
        }
    };
    Some(KnownRepositories::new(
        dir.join("coffer/known_repositories"),
    ))
}

/// A repository's location as pinned: an S3 URL as given, a local
/// directory by its canonical path.
fn repo_location(repo: &str) -> String {
    if repo.starts_with("s3://") {
        return repo.trim_end_matches('/').to_string();
    }
    std::fs::canonicalize(repo)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| repo.to_string())
}

fn read_passphrase(key: &SecretKeyArgs) -> Result<Option<String>> {
    if let Some(path) = &key.passphrase_file {
        let check = mode_check(key.insecure_key_permissions);
        let bytes = keyfile::read_secret(path, "the passphrase file", check)?;
        let text = std::str::from_utf8(&bytes)
            .with_context(|| format!("{}: the passphrase is not UTF-8", path.display()))?;
        return Ok(Some(text.lines().next().unwrap_or("").to_string()));
    }
    Ok(std::env::var("COFFER_KEY_PASSPHRASE").ok())
}

pub fn snapshots(rt: &Runtime, a: &SnapshotsArgs) -> Result<Outcome> {
    let repo = open_repo(rt, &a.repo, &a.key)?;
    let all = rt.block_on(repo.snapshots())?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let list: Vec<_> = all.iter().map(snapshot_json).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(Outcome::Success);
    }
    writeln!(
        out,
        "{:<8}  {:<20}  {:<16}  {:<12}  paths",
        "id", "time", "host", "tags"
    )?;
    for s in &all {
        let snap = &s.snapshot;
        let time = snap
            .time()
            .map(display_time)
            .unwrap_or_else(|| snap.time.clone());
        writeln!(
            out,
            "{:<8}  {:<20}  {:<16}  {:<12}  {}",
            &s.id.to_hex()[..8],
            time,
            snap.host,
            snap.tags.join(","),
            snap.paths.join(" ")
        )?;
    }
    writeln!(out, "{} snapshots", all.len())?;
    Ok(Outcome::Success)
}

fn snapshot_json(s: &SnapshotInfo) -> serde_json::Value {
    let snap = &s.snapshot;
    serde_json::json!({
        "id": s.id.to_hex(),
        "short_id": &s.id.to_hex()[..8],
        "time": snap.time,
        "host": snap.host,
        "user": snap.user,
        "paths": snap.paths,
        "tags": snap.tags,
        "tree": snap.tree.id.to_hex(),
        "program": snap.program,
        "stats": snap.stats,
    })
}

/// Splits `SNAPSHOT[:PATH]`.
fn split_spec(spec: &str) -> (&str, &str) {
    match spec.split_once(':') {
        Some((snap, path)) => (snap, path),
        None => (spec, ""),
    }
}

pub fn status(rt: &Runtime, a: &StatusArgs) -> Result<Outcome> {
    use coffer_core::status::{format_age, format_time, freshness};
    let backend = rt.block_on(backend::open(&a.repo.repo, Default::default()))?;
    let f = rt.block_on(freshness(backend.as_ref(), a.host.as_deref()))?;
    let now = std::time::SystemTime::now();
    let fresh = f.is_fresh(now, a.max_age);
    if a.json {
        let line = serde_json::json!({
            "ok": fresh,
            "repo": a.repo.repo,
            "host": a.host,
            "snapshots": f.snapshots,
            "newest": f.newest.map(format_time),
            "age_seconds": f.age(now).map(|d| d.as_secs()),
            "max_age_seconds": a.max_age.as_secs(),
        });
        println!("{line}");
    } else {
        let verdict = if fresh { "OK" } else { "STALE" };
        let of_host = match &a.host {
            Some(host) => format!(" of host {host}"),
            None => String::new(),
        };
        match (f.newest, f.age(now)) {
            (Some(t), Some(age)) => println!(
                "{verdict}: newest of {} snapshots{of_host} stored {} ({} ago; limit {})",
                f.snapshots,
                format_time(t),
                format_age(age),
                format_age(a.max_age)
            ),
            _ => println!("{verdict}: no snapshot{of_host} in {}", a.repo.repo),
        }
    }
    Ok(if fresh {
        Outcome::Success
    } else {
        Outcome::Reported
    })
}

pub fn check(rt: &Runtime, a: &CheckArgs) -> Result<Outcome> {
    let repo = open_repo(rt, &a.repo, &a.key)?;
    let read_data = if a.read_data {
        Some(1.0)
    } else {
        a.read_data_subset
    };
    let opts = coffer_core::check::CheckOptions { read_data };
    let report = rt.block_on(coffer_core::check::check(&repo, opts))?;
    for d in &report.damage {
        match (d.snapshot.is_empty(), d.path.is_empty()) {
            (true, _) => println!("{}: {}", d.path, d.problem),
            (false, true) => println!("snapshot {}: {}", d.snapshot, d.problem),
            (false, false) => println!("snapshot {} {}: {}", d.snapshot, d.path, d.problem),
        }
    }
    let verdict = match report.damage.len() {
        0 => "no damage".to_string(),
        1 => "1 problem".to_string(),
        n => format!("{n} problems"),
    };
    let read = match read_data {
        Some(_) => format!(
            ", {} chunks ({:.1} MiB) read and verified",
            report.chunks_read,
            report.bytes_read as f64 / 1_048_576.0
        ),
        None => String::new(),
    };
    println!(
        "checked {} snapshots: {} trees, {} chunk references in {} packs, {} index objects{read}: {verdict}",
        report.snapshots, report.trees, report.chunks, report.packs, report.indexes
    );
    Ok(if report.damage.is_empty() {
        Outcome::Success
    } else {
        Outcome::Reported
    })
}

pub fn restore(rt: &Runtime, a: &RestoreArgs, verbose: bool) -> Result<Outcome> {
    let repo = std::sync::Arc::new(open_repo(rt, &a.repo, &a.key)?);
    let (snap, path) = split_spec(&a.snapshot);
    let info = rt.block_on(repo.find_snapshot(snap))?;
    let reporter = Reporter::start("restore", Display::choose(a.json));
    let opts = RestoreOptions {
        target: a.target.clone(),
        overwrite: a.overwrite,
        progress: reporter.progress(),
    };
    let stats = rt.block_on(restore::restore(&repo, &info.snapshot, path, &opts))?;
    reporter.finish();
    if a.json {
        let line = serde_json::json!({
            "type": "summary",
            "snapshot": info.id.to_hex(),
            "target": a.target,
            "files": stats.files,
            "dirs": stats.dirs,
            "others": stats.others,
            "bytes": stats.bytes,
            "warnings": stats.warnings,
            "damaged": stats.damaged,
        });
        println!("{line}");
    }
    for w in &stats.warnings {
        eprintln!("coffer: warning: {w}");
    }
    for d in &stats.damaged {
        eprintln!("coffer: not restored: {d}");
    }
    if verbose {
        eprintln!(
            "restored snapshot {} to {}: {} files, {} dirs, {} others, {:.1} MiB",
            &info.id.to_hex()[..8],
            a.target.display(),
            stats.files,
            stats.dirs,
            stats.others,
            mib(stats.bytes)
        );
    }
    if !stats.damaged.is_empty() {
        bail!(
            "{} files or directories were not restored because their data in the repository \
             is damaged or missing (listed above); everything else was restored to {}. \
             Run `coffer check --read-data` to see all damage",
            stats.damaged.len(),
            a.target.display()
        );
    }
    Ok(if stats.warnings.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial
    })
}

pub fn cat(rt: &Runtime, a: &CatArgs) -> Result<Outcome> {
    let repo = open_repo(rt, &a.repo, &a.key)?;
    let (snap, path) = split_spec(&a.spec);
    if path.trim_matches('/').is_empty() {
        bail!("give a file: SNAPSHOT:PATH, e.g. latest:/etc/hosts");
    }
    let info = rt.block_on(repo.find_snapshot(snap))?;
    let entry = rt.block_on(repo.resolve(&info.snapshot, path))?;
    if entry.kind != Kind::File {
        bail!(
            "{path} is not a regular file in snapshot {}",
            &info.id.to_hex()[..8]
        );
    }
    let mut out = std::io::stdout().lock();
    for chunk in &entry.chunks {
        let data = rt
            .block_on(repo.read_blob(chunk))
            .with_context(|| format!("reading {path}"))?;
        out.write_all(&data)?;
    }
    out.flush()?;
    Ok(Outcome::Success)
}

pub fn export(rt: &Runtime, a: &ExportArgs, verbose: bool) -> Result<Outcome> {
    use coffer_core::export::{Format, Output};
    let (format, target) = match (&a.zip, &a.tar) {
        (Some(zip), _) => (Format::Zip { deflate: !a.store }, zip),
        (None, Some(tar)) => (Format::Tar, tar),
        (None, None) => bail!("give --zip FILE or --tar FILE"),
    };
    let repo = open_repo(rt, &a.repo, &a.key)?;
    let (snap, path) = split_spec(&a.snapshot);
    let info = rt.block_on(repo.find_snapshot(snap))?;
    let run = |out| {
        rt.block_on(coffer_core::export::export(
            &repo,
            &info.snapshot,
            path,
            format,
            out,
        ))
    };
    let report = if target.as_os_str() == "-" {
        run(Output::Stream(Box::new(std::io::stdout())))?
    } else {
        // Written under a temporary name and linked into place at the end:
        // a failed export leaves no archive that looks whole, and an
        // existing file is never replaced.
        if target.exists() {
            bail!(
                "{}: already exists; coffer does not overwrite it",
                target.display()
            );
        }
        let mut part = target.clone().into_os_string();
        part.push(".part");
        let part = PathBuf::from(part);
        let file = std::fs::File::options()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&part)
            .with_context(|| format!("{}: cannot create it", part.display()))?;
        let finished = run(Output::File(file))
            .map_err(anyhow::Error::from)
            .and_then(|report| {
                std::fs::hard_link(&part, target)
                    .with_context(|| format!("{}: cannot create it", target.display()))?;
                Ok(report)
            });
        let _ = std::fs::remove_file(&part);
        finished?
    };
    for skipped in &report.skipped {
        eprintln!("coffer: {skipped}: left out: zip cannot hold fifos, devices or sockets");
    }
    if verbose {
        eprintln!(
            "exported {} files ({:.1} MiB), {} directories, {} symlinks",
            report.files,
            mib(report.bytes),
            report.dirs,
            report.links
        );
    }
    Ok(Outcome::Success)
}

pub fn mount(rt: Runtime, a: &MountArgs) -> Result<Outcome> {
    let repo = std::sync::Arc::new(open_repo(&rt, &a.repo, &a.key)?);
    let opts = coffer_fs::MountOptions {
        cache_bytes: a.cache_size,
        allow_other: a.allow_other,
        refresh_every: std::time::Duration::from_secs(a.snapshot_refresh),
    };
    let mut mount = coffer_fs::Mount::new(repo, rt.handle().clone(), &a.mountpoint, &opts)?;
    let mut unmounter = mount.unmounter();
    let mountpoint = a.mountpoint.display().to_string();
    rt.spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("unmounting {mountpoint}");
        if let Err(e) = unmounter.unmount() {
            eprintln!("coffer: cannot unmount {mountpoint}: {e}");
        }
    });
    tracing::info!("mounted at {}", a.mountpoint.display());
    mount
        .run()
        .with_context(|| format!("serving the mount at {}", a.mountpoint.display()))?;
    rt.shutdown_background();
    Ok(Outcome::Success)
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

pub fn diff(rt: &Runtime, a: &DiffArgs, verbose: bool) -> Result<Outcome> {
    let repo = open_repo(rt, &a.repo, &a.key)?;
    let (sa, sb) = (
        rt.block_on(repo.find_snapshot(&a.snapshot_a))?,
        rt.block_on(repo.find_snapshot(&a.snapshot_b))?,
    );
    let ea = rt.block_on(repo.resolve(&sa.snapshot, &a.path))?;
    let eb = rt.block_on(repo.resolve(&sb.snapshot, &a.path))?;
    if ea.kind != Kind::Dir || eb.kind != Kind::Dir {
        bail!("{} is not a directory in both snapshots", a.path);
    }
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let mut changes = 0u64;
    let mut print = |change: coffer_core::diff::Change, path: &str| {
        changes += 1;
        if failed.is_none() {
            if let Err(e) = writeln!(out, "{}    {path}", change.symbol()) {
                failed = Some(e);
            }
        }
    };
    let base = a.path.trim_end_matches('/');
    let stats = rt.block_on(coffer_core::diff::diff(&repo, &ea, &eb, base, &mut print))?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    if verbose {
        eprintln!(
            "{changes} changes; {} trees read, {} identical subtrees skipped",
            stats.trees_read, stats.trees_skipped
        );
    }
    Ok(Outcome::Success)
}
