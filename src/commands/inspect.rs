//! What is in a repository, without writing anything: `snapshots`,
//! `status`, `check`, `diff`, and `cache` (the local metadata cache).

use super::{mib, open_repo, open_repo_cached, selection, Outcome};
use crate::args::{CacheCommandArgs, CheckArgs, DiffArgs, SnapshotsArgs, StatusArgs};
use anyhow::{bail, Context, Result};
use coffer_core::backend;
use coffer_core::format::encoding::display_time;
use coffer_core::format::snapshot::SnapshotInfo;
use coffer_core::format::tree::Kind;
use coffer_core::repository::metadata_cache::MetadataCache;
use std::io::Write;
use tokio::runtime::Runtime;

pub fn snapshots(rt: &Runtime, a: &SnapshotsArgs) -> Result<Outcome> {
    let repo = open_repo_cached(rt, &a.repo, &a.key, &a.cache)?;
    let all = rt.block_on(repo.selected_snapshots(&selection(&a.select)))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let state = &repo.key_chain().state;
        let writer = |s: &SnapshotInfo| {
            let signer = s.signer.as_deref()?;
            Some(state.writer_by_fingerprint(signer)?.name.clone())
        };
        let list: Vec<_> = all.iter().map(|s| snapshot_json(s, writer(s))).collect();
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

/// A snapshot as `snapshots --json` prints it; `writer` is the name of
/// the writer that signed it.
fn snapshot_json(s: &SnapshotInfo, writer: Option<String>) -> serde_json::Value {
    let snap = &s.snapshot;
    serde_json::json!({
        "writer": writer,
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

pub fn status(rt: &Runtime, a: &StatusArgs) -> Result<Outcome> {
    use coffer_core::ops::status::{format_age, format_time, freshness};
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
        Outcome::Reported("no snapshot newer than --max-age".into())
    })
}

/// `coffer cache`: where the repository's metadata and chunk caches are,
/// how big; or clears them.
pub fn cache(rt: &Runtime, a: &CacheCommandArgs) -> Result<Outcome> {
    let backend = rt.block_on(backend::open(&a.repo.repo, Default::default()))?;
    let config = rt.block_on(coffer_core::repository::read_config(backend.as_ref()))?;
    let home = super::cache_home()?;
    let dirs = [
        super::metadata_cache_dir(&home, &config.id),
        super::chunk_cache_dir(&home, &config.id),
    ];
    if backend.is_local() {
        println!(
            "{}: a local repository, read without a metadata cache",
            a.repo.repo
        );
    }
    for dir in &dirs {
        if a.clear {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => println!("cleared {}", dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("{}: nothing cached", dir.display())
                }
                Err(e) => return Err(e).with_context(|| format!("clearing {}", dir.display())),
            }
        } else {
            // Both are sized the same way (files under <2 hex>/).
            let size = MetadataCache::new(dir.clone(), u64::MAX).size();
            println!("{}\t{:.1} MiB ({size} bytes)", dir.display(), mib(size));
        }
    }
    Ok(Outcome::Success)
}

pub fn check(rt: &Runtime, a: &CheckArgs) -> Result<Outcome> {
    let repo = open_repo(rt, &a.repo, &a.key)?;
    let read_data = if a.read_data {
        Some(1.0)
    } else {
        a.read_data_subset
    };
    let opts = coffer_core::ops::check::CheckOptions { read_data };
    let report = rt.block_on(coffer_core::ops::check::check(&repo, opts))?;
    for d in &report.damage {
        match (d.snapshot.is_empty(), d.path.is_empty()) {
            (true, _) => println!("{}: {}", d.path, d.problem),
            (false, true) => println!("snapshot {}: {}", d.snapshot, d.problem),
            (false, false) => println!("snapshot {} {}: {}", d.snapshot, d.path, d.problem),
        }
    }
    for (writer, seq, snapshot) in &report.kept_from_revoked {
        println!(
            "snapshot {snapshot}: by writer {writer}, stored before keys/{} revoked it: kept",
            coffer_core::format::key_change::object_name(*seq)
        );
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
    if report.cold_packs > 0 {
        println!(
            "{} chunks in {} packs archived in cold storage were not read (not damage; \
             `coffer warm-up` them to read them too)",
            report.chunks_cold, report.cold_packs
        );
    }
    println!(
        "checked {} snapshots: {} trees, {} chunk references in {} packs, {} index objects{read}: {verdict}",
        report.snapshots, report.trees, report.chunks, report.packs, report.indexes
    );
    Ok(if report.damage.is_empty() {
        Outcome::Success
    } else {
        Outcome::Reported(format!("check found {verdict} (listed on stdout)"))
    })
}

pub fn diff(rt: &Runtime, a: &DiffArgs, verbose: bool) -> Result<Outcome> {
    let repo = open_repo_cached(rt, &a.repo, &a.key, &a.cache)?;
    let (sa, sb) = (
        rt.block_on(repo.find_snapshot_in(&a.snapshot_a, &selection(&a.select)))?,
        rt.block_on(repo.find_snapshot_in(&a.snapshot_b, &selection(&a.select)))?,
    );
    let ea = rt.block_on(repo.resolve(&sa.snapshot, &a.path))?;
    let eb = rt.block_on(repo.resolve(&sb.snapshot, &a.path))?;
    if ea.kind != Kind::Dir || eb.kind != Kind::Dir {
        bail!("{} is not a directory in both snapshots", a.path);
    }
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let mut changes = 0u64;
    let mut print = |change: coffer_core::ops::diff::Change, path: &str| {
        changes += 1;
        if failed.is_none() {
            if let Err(e) = writeln!(out, "{}    {path}", change.symbol()) {
                failed = Some(e);
            }
        }
    };
    let base = a.path.trim_end_matches('/');
    let stats = rt.block_on(coffer_core::ops::diff::diff(
        &repo, &ea, &eb, base, &mut print,
    ))?;
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
