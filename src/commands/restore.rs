//! Getting data out: `restore` into a directory, `cat` to standard output,
//! `export` as one archive.

use super::{mib, open_repo_cached, selection, split_spec, Outcome};
use crate::args::{CatArgs, ExportArgs, OverwriteArg, RestoreArgs};
use crate::progress::{Display, Reporter};
use anyhow::{bail, Context, Result};
use coffer_core::format::index::PackKind;
use coffer_core::format::snapshot::Snapshot;
use coffer_core::format::tree::Kind;
use coffer_core::ops::restore::{self, Action, Overwrite, ReportTo, RestoreOptions};
use coffer_core::ops::warm_up::{self, PackState};
use coffer_core::patterns::Patterns;
use coffer_core::repository::Repository;
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use tokio::runtime::Runtime;

pub fn restore(rt: &Runtime, a: &RestoreArgs, verbose: bool) -> Result<Outcome> {
    let repo = std::sync::Arc::new(open_repo_cached(rt, &a.repo, &a.key, &a.cache)?);
    let (snap, path) = split_spec(&a.snapshot);
    // The data packs' listing (on a store that may archive them) is asked
    // for while the snapshot is found: a round trip fewer across a WAN.
    let live = a.overwrite.is_some() || a.delete;
    let listing = (repo.backend().keeps_archives() && (!live || a.warm_up)).then(|| {
        let repo = repo.clone();
        rt.spawn(async move { warm_up::Listed::of(&repo).await })
    });
    let info = rt.block_on(repo.find_snapshot_in(snap, &selection(&a.select)))?;
    if let Some(stop) = before_cold_reads(rt, &repo, &info.snapshot, path, a, listing)? {
        return Ok(stop);
    }
    let reporter = Reporter::start("restore", Display::choose(a.json && !a.dry_run));
    let opts = RestoreOptions {
        target: a.target.clone(),
        overwrite: overwrite_mode(a),
        delete: a.delete,
        dry_run: a.dry_run,
        verify: a.verify,
        report: (a.dry_run || verbose).then(|| report_actions(a.json)),
        include: patterns(&a.include, "--include pattern")?,
        exclude: patterns(&a.exclude, "--exclude pattern")?,
        sparse: !a.no_sparse,
        progress: reporter.progress(),
    };
    let stats = rt.block_on(restore::restore(&repo, &info.snapshot, path, &opts))?;
    reporter.finish();
    if a.json {
        let line = serde_json::json!({
            "type": "summary",
            "snapshot": info.id.to_hex(),
            "target": a.target,
            "dry_run": a.dry_run,
            "files": stats.files,
            "dirs": stats.dirs,
            "others": stats.others,
            "bytes": stats.bytes,
            "updated": stats.updated,
            "unchanged": stats.unchanged,
            "metadata": stats.metadata,
            "kept": stats.kept,
            "deleted": stats.deleted,
            "reused_bytes": stats.reused_bytes,
            "fetch_bytes": stats.fetch_bytes,
            "warnings": stats.warnings,
            "damaged": stats.damaged,
        });
        println!("{line}");
    } else if a.dry_run {
        println!(
            "dry run: would write {} files ({} over files that differ: {:.1} MiB kept from \
             them, {:.1} MiB read from the repository), {} others; leave {} unchanged \
             ({} with their metadata set again), keep {}, delete {}",
            stats.files,
            stats.updated,
            mib(stats.reused_bytes),
            mib(stats.fetch_bytes),
            stats.others,
            stats.unchanged,
            stats.metadata,
            stats.kept,
            stats.deleted
        );
    }
    for w in &stats.warnings {
        eprintln!("coffer: warning: {w}");
    }
    for d in &stats.damaged {
        eprintln!("coffer: not restored: {d}");
    }
    if verbose && !a.dry_run {
        eprintln!(
            "restored snapshot {} to {}: {} files ({} updated, {:.1} MiB of them kept), {} dirs, \
             {} others, {:.1} MiB written; {} unchanged ({} metadata set), {} kept, {} deleted",
            &info.id.to_hex()[..8],
            a.target.display(),
            stats.files,
            stats.updated,
            mib(stats.reused_bytes),
            stats.dirs,
            stats.others,
            mib(stats.bytes),
            stats.unchanged,
            stats.metadata,
            stats.kept,
            stats.deleted
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
        Outcome::Partial(format!(
            "{} entries were not restored (listed on stderr)",
            stats.warnings.len()
        ))
    })
}

/// Before a restore into an empty target reads anything from a store that
/// may keep packs archived: the data packs the path needs and where they
/// stand (warm-up's plan). With any archived or restoring, it stops before
/// writing anything, naming the command that fixes it; with `--warm-up`
/// it asks for them (and with `--wait` waits, then the restore goes on).
/// A restore over a live tree is not planned: it reads only what differs,
/// which is known only as it compares, and a cold read stops it with each
/// file it replaced whole. `listing`: the data packs' listing, started by
/// the caller when a check is due. `None`: go on.
fn before_cold_reads(
    rt: &Runtime,
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    a: &RestoreArgs,
    listing: Option<tokio::task::JoinHandle<coffer_core::Result<warm_up::Listed>>>,
) -> Result<Option<Outcome>> {
    // Started only on a store that may archive packs, and for a restore
    // into an empty target or with --warm-up.
    let Some(listing) = listing else {
        return Ok(None);
    };
    // One listing says whether any data pack may be archived at all; only
    // then are the trees walked for the packs this restore reads.
    let listed = rt.block_on(listing).context("listing the data packs")??;
    if !listed.any_may_be_archived() {
        return Ok(None);
    }
    let mut needed = warm_up::Needed::default();
    rt.block_on(warm_up::add_needed(
        repo,
        snapshot,
        path,
        &mut HashSet::new(),
        &mut needed,
    ))?;
    let mut plan = rt.block_on(warm_up::plan_listed(repo, &needed, &listed))?;
    let before = warm_up::totals(&plan);
    if before.archived + before.restoring == 0 {
        return Ok(None);
    }
    let warm_up_command = format!("coffer warm-up {} --wait", a.snapshot);
    if !a.warm_up {
        let first = plan
            .iter()
            .find(|p| !matches!(p.state, PackState::Readable(_) | PackState::Missing))
            .map(|p| repo.pack_key(&p.id, PackKind::Data).path())
            .unwrap_or_default();
        let what = format!(
            "{} of the {} data packs this restore reads are archived in cold storage and not \
             restored ({} restoring; the first: {first})",
            before.archived + before.restoring,
            before.packs,
            before.restoring
        );
        if a.dry_run {
            eprintln!(
                "coffer: warning: {what}: a restore would stop; run `{warm_up_command}` first"
            );
            return Ok(None);
        }
        bail!(
            "{what}; nothing was written. Run `{warm_up_command}` first (it says what that \
             costs), or `coffer restore --warm-up --wait ...`"
        );
    }
    let asked = super::warm_up::ask(rt, repo, &mut plan, &before, &a.thaw, None, a.dry_run)?;
    for line in asked.lines(&before) {
        eprintln!("warm-up: {line}");
    }
    if a.dry_run {
        return Ok(None);
    }
    if !a.wait {
        let why = format!(
            "nothing restored yet: the store is restoring {} packs; run this command again \
             once they are readable, or with --wait",
            before.archived + before.restoring
        );
        eprintln!("coffer: {why}");
        return Ok(Some(Outcome::Reported(why)));
    }
    super::warm_up::wait_until_readable(rt, repo, &mut plan)?;
    Ok(None)
}

/// The patterns given, if any.
fn patterns(given: &[String], what: &str) -> Result<Option<Patterns>> {
    if given.is_empty() {
        return Ok(None);
    }
    Ok(Some(Patterns::new(given, what)?))
}

/// The overwrite mode asked for: `--delete` alone means `if-changed`
/// (deleting what a snapshot lacks only makes sense over a live tree).
fn overwrite_mode(a: &RestoreArgs) -> Overwrite {
    match a.overwrite {
        None if a.delete => Overwrite::IfChanged,
        None => Overwrite::Refuse,
        Some(OverwriteArg::Always) => Overwrite::Always,
        Some(OverwriteArg::IfChanged) => Overwrite::IfChanged,
        Some(OverwriteArg::IfNewer) => Overwrite::IfNewer,
        Some(OverwriteArg::Never) => Overwrite::Never,
    }
}

/// Prints each path's action on stdout, one a line: a word and the path,
/// as `rsync --itemize-changes` and `restic restore -vv` do, or JSON.
/// Unchanged paths are left out of the text.
fn report_actions(json: bool) -> ReportTo {
    ReportTo(std::sync::Arc::new(
        move |action: Action, path: &std::path::Path| {
            let (word, fetched, reused) = match action {
                Action::New => ("new", None, None),
                Action::Replaced => ("replace", None, None),
                Action::Updated { fetched, reused } => ("update", Some(fetched), Some(reused)),
                Action::Metadata => ("metadata", None, None),
                Action::Unchanged => ("unchanged", None, None),
                Action::Kept => ("keep", None, None),
                Action::Deleted => ("delete", None, None),
            };
            if json {
                let line = serde_json::json!({
                    "type": "action",
                    "action": word,
                    "path": path.display().to_string(),
                    "fetch_bytes": fetched,
                    "reused_bytes": reused,
                });
                println!("{line}");
            } else if action != Action::Unchanged {
                println!("{word:<9} {}", path.display());
            }
        },
    ))
}

pub fn cat(rt: &Runtime, a: &CatArgs) -> Result<Outcome> {
    let repo = open_repo_cached(rt, &a.repo, &a.key, &a.cache)?;
    let (snap, path) = split_spec(&a.spec);
    if path.trim_matches('/').is_empty() {
        bail!("give a file: SNAPSHOT:PATH, e.g. latest:/etc/hosts");
    }
    let info = rt.block_on(repo.find_snapshot_in(snap, &selection(&a.select)))?;
    let entry = rt.block_on(repo.resolve(&info.snapshot, path))?;
    if entry.kind != Kind::File {
        bail!(
            "{path} is not a regular file in snapshot {}",
            &info.id.to_hex()[..8]
        );
    }
    // Chunks read ahead in parallel (16 at once from a remote store, where
    // each waits a round trip; 4 from a local one, where the cores are the
    // limit), written out in order.
    let in_flight = if repo.backend().is_local() { 4 } else { 16 };
    let repo = std::sync::Arc::new(repo);
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    rt.block_on(repo.read_in_order(
        entry.extents(),
        in_flight,
        |bytes| match out.write_all(bytes) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        },
    ))
    .with_context(|| format!("reading {path}"))?;
    if let Some(e) = failed {
        return Err(e).context("writing to standard output");
    }
    out.flush()?;
    Ok(Outcome::Success)
}

pub fn export(rt: &Runtime, a: &ExportArgs, verbose: bool) -> Result<Outcome> {
    use coffer_core::ops::export::{Format, Output};
    let (format, target) = match (&a.zip, &a.tar) {
        (Some(zip), _) => (Format::Zip { deflate: !a.store }, zip),
        (None, Some(tar)) => (Format::Tar, tar),
        (None, None) => bail!("give --zip FILE or --tar FILE"),
    };
    let repo = open_repo_cached(rt, &a.repo, &a.key, &a.cache)?;
    let (snap, path) = split_spec(&a.snapshot);
    let info = rt.block_on(repo.find_snapshot_in(snap, &selection(&a.select)))?;
    let run = |out| {
        rt.block_on(coffer_core::ops::export::export(
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
    if report.without_xattrs > 0 {
        eprintln!(
            "coffer: warning: {} entries have extended attributes (ACLs, capabilities...) \
             that zip does not hold; --tar, `coffer restore` and the mount keep them",
            report.without_xattrs
        );
    }
    if report.links_copied > 0 {
        eprintln!(
            "coffer: warning: {} names of hard-linked files are separate copies in the zip \
             (zip has no hard links; --tar keeps them)",
            report.links_copied
        );
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
