//! Looking into snapshots without restoring: `ls` (a directory, or all
//! below it), `find` (entries by name or path across snapshots, each
//! path's history as runs) and `stats` (sizes, dedup, compression).

use super::{open_repo_cached, selection, split_spec, warn_all, Outcome};
use crate::args::{FindArgs, LsArgs, StatsArgs};
use anyhow::Result;
use coffer_core::format::encoding::{display_time, display_time_ns};
use coffer_core::format::snapshot::SnapshotInfo;
use coffer_core::format::tree::{Entry, Kind};
use coffer_core::ops::find::{self, Pattern, Run};
use coffer_core::ops::ls;
use coffer_core::ops::stats;
use std::io::Write;
use tokio::runtime::Runtime;

pub fn ls(rt: &Runtime, a: &LsArgs) -> Result<Outcome> {
    let repo = open_repo_cached(rt, &a.repo, &a.key, &a.cache)?;
    let (snap, path) = split_spec(&a.snapshot);
    let info = rt.block_on(repo.find_snapshot_in(snap, &selection(&a.select)))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let print = |path: &str, e: &Entry| {
        if a.json {
            writeln!(out, "{}", entry_json(path, e))
        } else if a.long {
            writeln!(out, "{}  {path}{}", long_columns(e), link_suffix(e))
        } else {
            writeln!(out, "{path}")
        }
    };
    let report = rt.block_on(ls::ls(&repo, &info.snapshot, path, a.recursive, print))?;
    warn_all(&report.problems, "not listed");
    Ok(if report.problems.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial(format!(
            "{} directories could not be listed (on stderr)",
            report.problems.len()
        ))
    })
}

pub fn find(rt: &Runtime, a: &FindArgs, verbose: bool) -> Result<Outcome> {
    let pattern = Pattern::new(&a.patterns)?;
    let repo = open_repo_cached(rt, &a.repo, &a.key, &a.cache)?;
    let select = selection(&a.select);
    let mut snapshots = if a.snapshots.is_empty() {
        rt.block_on(repo.selected_snapshots(&select))?
    } else {
        let mut chosen = Vec::new();
        for spec in &a.snapshots {
            chosen.push(rt.block_on(repo.find_snapshot_in(spec, &select))?);
        }
        chosen.sort_by_key(|s| (s.snapshot.time(), s.id));
        chosen.dedup_by_key(|s| s.id);
        chosen
    };
    if let Some(n) = a.newest {
        let skip = snapshots.len().saturating_sub(n);
        snapshots.drain(..skip);
    }
    let report = rt.block_on(find::find(&repo, &snapshots, &pattern))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !a.json && !report.runs.is_empty() {
        writeln!(
            out,
            "{:<31}  {:<31}  {:>5}  {:<12}  {:>10}  {:<20}  path",
            "first", "last", "snaps", "host", "size", "modified"
        )?;
    }
    for run in &report.runs {
        let (first, last) = (&snapshots[run.first], &snapshots[run.last]);
        if a.json {
            writeln!(out, "{}", run_json(run, first, last))?;
        } else {
            writeln!(
                out,
                "{:<31}  {:<31}  {:>5}  {:<12}  {:>10}  {:<20}  {}",
                snapshot_label(first),
                snapshot_label(last),
                run.snapshots,
                run.host,
                size_of(run),
                time_of(run.found.mtime_ns),
                run.path
            )?;
        }
    }
    out.flush()?;
    if verbose {
        eprintln!(
            "{} snapshots searched, {} runs; {} trees read, {} subtrees known from an earlier one",
            snapshots.len(),
            report.runs.len(),
            report.trees_read,
            report.trees_skipped
        );
    }
    warn_all(&report.problems, "not searched");
    warn_all(&report.cut, "search cut short");
    let trouble = report.problems.len() + report.cut.len();
    Ok(if trouble == 0 {
        Outcome::Success
    } else {
        Outcome::Partial(format!("{trouble} parts were not searched (on stderr)"))
    })
}

pub fn stats(rt: &Runtime, a: &StatsArgs) -> Result<Outcome> {
    let repo = open_repo_cached(rt, &a.repo, &a.key, &a.cache)?;
    let all = rt.block_on(repo.snapshots())?;
    let select = selection(&a.select);
    let mut chosen = Vec::new();
    if a.snapshots.is_empty() {
        chosen.extend(all.iter().filter(|s| select.matches(s)).cloned());
    } else {
        for spec in &a.snapshots {
            chosen.push(rt.block_on(repo.find_snapshot_in(spec, &select))?);
        }
        chosen.sort_by_key(|s| (s.snapshot.time(), s.id));
        chosen.dedup_by_key(|s| s.id);
    }
    let others: Vec<_> = all
        .into_iter()
        .filter(|s| !chosen.iter().any(|c| c.id == s.id))
        .collect();
    let report = rt.block_on(stats::snapshots(&repo, &chosen, &others))?;
    let whole = rt.block_on(stats::repository(&repo))?;
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let dedup = ratio(report.restored.bytes, report.blobs.raw_bytes);
    let compression = ratio(report.blobs.raw_bytes, report.blobs.stored_bytes);
    if a.json {
        let json = serde_json::json!({
            "snapshots": report,
            "dedup_ratio": dedup,
            "compression_ratio": compression,
            "repository": whole,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let r = &report.restored;
        let mib = |b: u64| super::mib(b);
        println!("{} snapshots", report.snapshots);
        println!(
            "  restored:        {} files, {} dirs, {} others, {:.1} MiB",
            r.files,
            r.dirs,
            r.others,
            mib(r.bytes)
        );
        println!(
            "  blobs:           {} ({:.1} MiB before compression, {:.1} MiB stored)",
            report.blobs.count,
            mib(report.blobs.raw_bytes),
            mib(report.blobs.stored_bytes)
        );
        println!(
            "  only theirs:     {} blobs, {:.1} MiB stored (what forget + prune of them would free)",
            report.unique.count,
            mib(report.unique.stored_bytes)
        );
        println!("  dedup ratio:     {dedup:.2} (restored bytes / distinct bytes)");
        println!("  compression:     {compression:.2} (bytes / stored bytes)");
        println!(
            "repository: {} snapshots, {} indexes",
            whole.snapshots, whole.indexes
        );
        for (class, (count, bytes)) in &whole.packs_by_class {
            println!("  packs, {class}: {count}, {:.1} MiB", mib(*bytes));
        }
    }
    warn_all(&report.problems, "not counted");
    Ok(if report.problems.is_empty() {
        Outcome::Success
    } else {
        Outcome::Partial(format!(
            "{} trees could not be read (on stderr)",
            report.problems.len()
        ))
    })
}

/// `<time> (<short id>)`.
fn snapshot_label(s: &SnapshotInfo) -> String {
    let time = s.snapshot.time().map(display_time).unwrap_or_default();
    format!("{time} ({})", &s.id.to_hex()[..8])
}

fn size_of(run: &Run) -> String {
    match run.found.kind {
        Kind::Dir => "-".into(),
        _ => run.found.size.to_string(),
    }
}

fn time_of(ns: i64) -> String {
    display_time_ns(ns)
}

fn run_json(run: &Run, first: &SnapshotInfo, last: &SnapshotInfo) -> serde_json::Value {
    let snap = |s: &SnapshotInfo| serde_json::json!({"id": s.id.to_hex(), "time": s.snapshot.time});
    serde_json::json!({
        "path": run.path,
        "host": run.host,
        "type": kind_name(run.found.kind),
        "size": run.found.size,
        "mtime": time_of(run.found.mtime_ns),
        "first": snap(first),
        "last": snap(last),
        "snapshots": run.snapshots,
    })
}

fn entry_json(path: &str, e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "path": path,
        "type": kind_name(e.kind),
        "mode": format!("{:o}", e.mode),
        "uid": e.uid,
        "gid": e.gid,
        "user": e.user,
        "group": e.group,
        "size": e.size,
        "mtime": time_of(e.mtime_ns),
        "target": e.target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
    })
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::Char => "chardev",
        Kind::Block => "blockdev",
        Kind::Socket => "socket",
    }
}

/// `ls -l`'s columns: mode, owner, group, size, time.
fn long_columns(e: &Entry) -> String {
    let owner = e.user.clone().unwrap_or_else(|| e.uid.to_string());
    let group = e.group.clone().unwrap_or_else(|| e.gid.to_string());
    format!(
        "{} {owner:<8} {group:<8} {:>12} {}",
        mode_string(e.kind, e.mode),
        e.size,
        time_of(e.mtime_ns)
    )
}

fn link_suffix(e: &Entry) -> String {
    match &e.target {
        Some(t) if e.kind == Kind::Symlink => format!(" -> {}", String::from_utf8_lossy(t)),
        _ => String::new(),
    }
}

/// `drwxr-xr-x` and the like, with setuid, setgid and sticky bits.
fn mode_string(kind: Kind, mode: u32) -> String {
    let kind = match kind {
        Kind::File => '-',
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::Fifo => 'p',
        Kind::Char => 'c',
        Kind::Block => 'b',
        Kind::Socket => 's',
    };
    let mut out = String::from(kind);
    for (shift, special, on, off) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        out.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => on,
            (false, true) => off,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_ls_shows_them() {
        assert_eq!(mode_string(Kind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(Kind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(Kind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(Kind::File, 0o2640), "-rw-r-S---");
        assert_eq!(mode_string(Kind::Symlink, 0o777), "lrwxrwxrwx");
    }
}
