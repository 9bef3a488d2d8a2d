//! `forget` and `prune` on a local repository, through the real binary:
//! policies per host, dry runs, the horizon + margin rule (pack ages are
//! faked by moving the pack files' mtimes back), what is freed, and that
//! everything kept still restores and checks.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use std::path::{Path, PathBuf};
use util::*;

/// Every file below `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Moves the mtime of every pack back by `days`: the local backend's
/// stand-in for an old S3 LastModified.
fn age_packs(env: &Env, days: u64) {
    backdate(packs(&env.path("repo")), days);
}

/// N in prune's "deleted N (" or "would delete N (".
fn deleted(t: &str) -> usize {
    let rest = t
        .split_once("deleted ")
        .or_else(|| t.split_once("would delete "))
        .unwrap_or_else(|| panic!("no deletion count in {t}"))
        .1;
    rest.split(' ').next().unwrap().parse().unwrap()
}

/// Every pack of the repository at `repo`: trees under `data/`, file
/// contents under `files/`, sorted.
fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut out = files(&repo.join("data"));
    out.extend(files(&repo.join("files")));
    out.sort();
    out
}

/// The bytes of [`packs`].
fn pack_bytes(repo: &Path) -> u64 {
    packs(repo)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn forget_keeps_what_the_policy_says_and_prune_frees_the_rest_after_the_horizon() {
    let env = Env::new();
    let src = env.path("src");
    let other = env.path("other");
    write(&other.join("o"), &random_bytes(99, 200_000));
    let mut ids = Vec::new();
    // Three versions of one 3 MB file on host h1, one snapshot on host h2.
    for seed in 1..=3 {
        write(&src.join("f"), &random_bytes(seed, 3_000_000));
        let snap = env.backup(&[&src], &["--host", "h1"]);
        ids.push(snap["id"].as_str().unwrap().to_string());
    }
    env.backup(&[&other], &["--host", "h2"]);
    let short = |id: &str| id[..8].to_string();

    let none = env.admin("forget", &[]);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
    assert!(text(&none).contains("--keep-daily 7"), "{}", text(&none));

    let dry = env.admin_ok("forget", &["--keep-last", "1", "--dry-run"]);
    let t = text(&dry);
    assert!(
        t.contains("host h1, paths ") && t.contains(": keep 1 of 3"),
        "{t}"
    );
    assert!(
        t.contains("host h2, paths ") && t.contains(": keep 1 of 1"),
        "{t}"
    );
    assert!(t.contains(&format!("keep    {}", short(&ids[2]))), "{t}");
    assert!(t.contains(&format!("remove  {}", short(&ids[0]))), "{t}");
    assert!(t.contains("dry run: would remove 2 snapshots"), "{t}");
    assert_eq!(env.snapshots().len(), 4);

    // Only h1's snapshots are considered; from cron (no terminal, no -v)
    // forget prints nothing.
    let out = env.admin_ok("forget", &["--keep-last", "1", "--host", "h1"]);
    assert_eq!(text(&out), "");
    let left: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&ids[2]) && !left.contains(&ids[0]) && !left.contains(&ids[1]));

    // Nothing is old enough yet: prune keeps every pack.
    let packs_before = packs(&env.path("repo"));
    let out = env.admin_ok("prune", &["-v"]);
    let t = text(&out);
    assert!(t.contains("deleted 0 (0.0 MiB) unreferenced packs"), "{t}");
    assert!(
        t.contains("younger than the dedup horizon plus margin"),
        "{t}"
    );
    assert_eq!(packs(&env.path("repo")), packs_before);

    // 31 days later: older than the 30-day horizon, not than horizon + 2d.
    age_packs(&env, 31);
    let t = text(&env.admin_ok("prune", &["-v"]));
    assert!(t.contains("deleted 0 (0.0 MiB)"), "{t}");
    let data = env.path("repo");
    let (count, bytes) = (packs(&data).len(), pack_bytes(&data));
    let t = text(&env.admin_ok("prune", &["-v", "--margin", "12h"]));
    // Two runs' packs: at least one data and one tree pack each.
    let n = deleted(&t);
    assert!(n >= 4 && packs(&data).len() == count - n, "{t}");
    assert!(t.contains("deleted 2 index objects"), "{t}");
    let freed = bytes - pack_bytes(&data);
    assert!(
        (6_000_000..6_400_000).contains(&freed),
        "freed {freed}: {t}"
    );

    // A tree that cannot be read stops prune before it deletes anything:
    // what it references is unknown. (The new run's smallest pack is its
    // tree pack; its data pack holds the 3 MB file.)
    let packs_then = packs(&data);
    write(&src.join("f"), &random_bytes(4, 3_000_000));
    env.backup(&[&src], &["--host", "h1"]);
    env.admin_ok("forget", &["--keep-last", "1", "--host", "h1"]);
    age_packs(&env, 40);
    let tree_pack = packs(&data)
        .into_iter()
        .filter(|p| !packs_then.contains(p))
        .min_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let good = std::fs::read(&tree_pack).unwrap();
    std::fs::write(&tree_pack, &good[..good.len() / 2]).unwrap();
    let packs_before = packs(&data);
    let out = env.admin("prune", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("so prune deleted nothing"),
        "{}",
        text(&out)
    );
    assert_eq!(packs(&data), packs_before);
    std::fs::write(&tree_pack, &good).unwrap();

    // A snapshot object no reader takes (junk that a put-only credential
    // could store) is left out with a warning and stops nothing.
    let junk = env.path("repo/snapshots").join("0".repeat(64));
    std::fs::write(&junk, b"garbage").unwrap();
    let t = text(&env.admin_ok("prune", &["--dry-run"]));
    assert!(t.contains("prune leaves it out"), "{t}");
    assert!(t.contains(&format!("snapshots/{}", "0".repeat(64))), "{t}");
    std::fs::remove_file(&junk).unwrap();
    age_packs(&env, 40);

    // The dry run deletes nothing; the real one frees the forgotten 3 MB.
    let t = text(&env.admin_ok("prune", &["--dry-run"]));
    let would = deleted(&t);
    assert!(would >= 2, "{t}");
    assert_eq!(packs(&data), packs_before);
    let bytes = pack_bytes(&data);
    let t = text(&env.admin_ok("prune", &["-v"]));
    assert!(t.contains("2 snapshots reference"), "{t}");
    assert_eq!(deleted(&t), would, "{t}");
    assert!(t.contains("deleted 1 index objects"), "{t}");
    let freed = bytes - pack_bytes(&data);
    assert!(
        (3_000_000..3_200_000).contains(&freed),
        "freed {freed}: {t}"
    );
    assert_eq!(packs(&data).len(), packs_before.len() - would);
    assert_eq!(files(&env.path("repo/index")).len(), 2);

    // Everything kept restores and checks, and backups go on.
    let out = env.path("out");
    env.restore("latest", &out);
    assert_eq!(
        std::fs::read(under(&out, &src).join("f")).unwrap(),
        random_bytes(4, 3_000_000)
    );
    let t = text(&env.admin_ok("check", &["--read-data"]));
    assert!(
        t.contains("checked 2 snapshots") && t.contains("no damage"),
        "{t}"
    );
    write(&src.join("g"), b"after prune");
    env.backup(&[&src], &["--host", "h1"]);
    let out2 = env.path("out2");
    env.restore("latest", &out2);
    assert_same_tree(&src, &under(&out2, &src));
}

/// `forget --dry-run --prune` reports what both would free, and deletes
/// nothing; `--tag` narrows the policy to tagged snapshots.
#[test]
fn forget_dry_run_with_prune_counts_what_both_would_free() {
    let env = Env::new();
    let src = env.path("src");
    for seed in 1..=2 {
        write(&src.join("f"), &random_bytes(seed, 2_000_000));
        env.backup(&[&src], &["--tag", "nightly"]);
    }
    write(&src.join("f"), &random_bytes(3, 2_000_000));
    env.backup(&[&src], &["--tag", "manual"]);
    age_packs(&env, 40);
    let before = files(&env.path("repo"));
    let t = text(&env.admin_ok(
        "forget",
        &[
            "--keep-last",
            "1",
            "--tag",
            "nightly",
            "--dry-run",
            "--prune",
        ],
    ));
    assert!(t.contains(": keep 1 of 2"), "{t}");
    assert!(t.contains("dry run: would remove 1 snapshots"), "{t}");
    assert!(t.contains("2 snapshots reference"), "{t}");
    let would = deleted(&t);
    assert!(would >= 2, "{t}");
    assert_eq!(files(&env.path("repo")), before);

    let data = env.path("repo");
    let count = packs(&data).len();
    env.admin_ok(
        "forget",
        &["--keep-last", "1", "--tag", "nightly", "--prune"],
    );
    assert_eq!(env.snapshots().len(), 2);
    assert_eq!(packs(&data).len(), count - would);
}

/// Runs prune with its deletes logged and SIGKILLs it once it has logged
/// `deletes` of them (0: once it says it starts deleting); where, unless
/// it finished first.
fn kill_after_deletes(env: &Env, deletes: usize) -> Option<String> {
    use std::io::BufRead;
    let mut child = env
        .admin_cmd("prune", &[])
        .env("COFFER_LOG", "warn,coffer_core::ops::prune=debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = 0;
    let mut at = None;
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.contains("deleting up to") || line.contains("deleted ") {
            if seen == deletes {
                let _ = child.kill();
                at = Some(format!("after {deletes} deletes ({line})"));
                break;
            }
            seen += 1;
        }
    }
    let status = child.wait().unwrap();
    at.filter(|_| !status.success())
}

/// prune killed with SIGKILL at random moments: every kept snapshot stays
/// whole (check --read-data, restore), and the next prune finishes the job.
/// COFFER_KILLS sets how many kills (default 8); each round of garbage
/// (30 runs, all but the newest forgotten) gives up to 8 of them.
#[test]
fn prune_killed_at_random_moments_leaves_every_kept_snapshot_whole() {
    let kills: u64 = std::env::var("COFFER_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(8);
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("keep"), &random_bytes(7, 300_000));
    let data = env.path("repo");
    let (mut killed, mut midway, mut round) = (0, 0, 0u64);
    while killed < kills {
        round += 1;
        assert!(round <= kills, "{round} rounds for {killed} kills");
        for seed in 0..30 {
            write(
                &src.join("f"),
                &random_bytes(100 + round * 100 + seed, 50_000),
            );
            env.backup(&[&src], &[]);
        }
        env.admin_ok("forget", &["--keep-last", "1"]);
        age_packs(&env, 40);
        let total = packs(&data).len();
        // How long a whole prune takes, measured on a copy.
        let copy = env.path("copy");
        let _ = std::fs::remove_dir_all(&copy);
        cp_a(&env.path("repo"), &copy);
        let started = std::time::Instant::now();
        env.ok(&["prune", "--repo", "copy", "--key", "admin.key"]);
        let whole = started.elapsed();
        let left_by_full_prune = packs(&env.path("copy")).len();
        assert!(left_by_full_prune < total);

        for attempt in 0..8u64 {
            let before = packs(&data).len();
            if before == left_by_full_prune || killed >= kills {
                break;
            }
            // Even attempts kill at a moment spread over the run (10% ..
            // 90% of its length: mostly the walk, as deletes are quick
            // here); odd ones right after the k-th delete it logs.
            let pick = attempt * 37 % 9;
            let at = if attempt % 2 == 0 {
                let after = whole.mul_f64(0.1 + 0.8 * (pick as f64 / 9.0));
                kill_after(&mut env.admin_cmd("prune", &[]), after)
                    .then(|| format!("after {after:?}"))
            } else {
                kill_after_deletes(&env, pick as usize * (before - left_by_full_prune) / 9)
            };
            if at.is_some() {
                killed += 1;
            }
            let after = packs(&data).len();
            if after != before && after != left_by_full_prune {
                midway += 1;
            }
            let check = env.admin("check", &["--read-data"]);
            let text = String::from_utf8_lossy(&check.stdout);
            assert!(check.status.success(), "after a kill {at:?}: {text}");
            let out = env.path(&format!("out{killed}"));
            env.restore("latest", &out);
            assert_same_tree(&src, &under(&out, &src));
        }
        env.admin_ok("prune", &[]);
        assert_eq!(packs(&data).len(), left_by_full_prune);
        env.admin_ok("check", &["--read-data"]);
    }
    eprintln!(
        "prune killed {killed} times in {round} rounds, mid-way (some packs deleted, \
         not all) {midway} times"
    );
}
