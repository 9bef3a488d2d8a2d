//! A damaged repository: bytes flipped, objects truncated, deleted or
//! swapped, in packs (data and trees), snapshots, index objects and config.
//! Every command names the object (and the path) affected, never panics,
//! never writes or prints wrong bytes, and everything undamaged still
//! restores.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use util::*;

/// Files of the source, by path relative to it.
fn source(src: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for d in 0..4u64 {
        files.insert(format!("d{d}/big"), random_bytes(10 + d, 6_000_000));
        files.insert(
            format!("d{d}/small"),
            format!("small file {d}\n").into_bytes(),
        );
        files.insert(format!("d{d}/sub/leaf"), format!("leaf {d}\n").into_bytes());
    }
    for (rel, bytes) in &files {
        write(&src.join(rel), bytes);
    }
    files
}

/// The damage a case does to one object.
#[derive(Debug, Clone, Copy)]
enum Harm {
    Flip,
    Truncate,
    Delete,
}

fn harm(path: &Path, how: Harm) {
    match how {
        Harm::Flip => {
            let mut bytes = std::fs::read(path).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x20;
            std::fs::write(path, bytes).unwrap();
        }
        Harm::Truncate => {
            let bytes = std::fs::read(path).unwrap();
            std::fs::write(path, &bytes[..bytes.len() / 3]).unwrap();
        }
        Harm::Delete => std::fs::remove_file(path).unwrap(),
    }
}

/// Swaps the contents of two objects (each keeps the other's name).
fn swap(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    std::fs::write(a, y).unwrap();
    std::fs::write(b, x).unwrap();
}

/// An admin command on the repository copy `repo`.
fn on(env: &Env, repo: &str, cmd: &str, args: &[&str]) -> Output {
    let mut all = vec![cmd, "--repo", repo, "--key", "admin.key"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    let said = text(&out);
    assert!(
        !said.contains("panicked") && out.status.code() != Some(101),
        "coffer {all:?} panicked: {said}"
    );
    out
}

/// A fresh copy of the pristine repository, named `case`.
fn copy(env: &Env, case: &str) -> PathBuf {
    let dir = env.path(case);
    let _ = std::fs::remove_dir_all(&dir);
    cp_a(&env.path("repo"), &dir);
    dir
}

/// Every pack: tree packs under `data/`, data packs under `files/`.
fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for top in ["data", "files"] {
        for sub in std::fs::read_dir(repo.join(top)).unwrap() {
            for pack in std::fs::read_dir(sub.unwrap().path()).unwrap() {
                out.push(pack.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

fn object_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Restores latest from `repo` into a new directory; asserts that every
/// file restored is the source's bytes, every file missing is named in the
/// output with `object`, and returns (restored, missing) counts.
fn restore_what_is_whole(
    env: &Env,
    case: &str,
    src: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    object: &str,
) -> (usize, usize) {
    let target = env.path(&format!("{case}-out"));
    let out = on(
        env,
        case,
        "restore",
        &["latest", "--target", target.to_str().unwrap()],
    );
    let said = text(&out);
    let (mut restored, mut missing) = (0, 0);
    for (rel, bytes) in files {
        let path = under(&target, src).join(rel);
        match std::fs::read(&path) {
            Ok(got) => {
                assert!(got == *bytes, "{case}: {rel} restored with wrong bytes");
                restored += 1;
            }
            Err(_) => {
                missing += 1;
                assert!(
                    said.contains(object),
                    "{case}: {rel} missing, {object} not named: {said}"
                );
            }
        }
    }
    if missing > 0 {
        assert_eq!(out.status.code(), Some(1), "{case}: {said}");
        assert!(said.contains("not restored"), "{case}: {said}");
    }
    (restored, missing)
}

#[test]
fn damaged_packs_cost_only_the_files_that_need_them() {
    let env = Env::new();
    let src = env.path("src");
    let files = source(&src);
    env.backup(&[&src], &[]);
    let all = packs(&env.path("repo"));
    let (data, trees): (Vec<_>, Vec<_>) = all
        .iter()
        .partition(|p| std::fs::metadata(p).unwrap().len() > 1 << 20);
    assert!(data.len() >= 2, "{all:?}");
    assert_eq!(trees.len(), 1, "{all:?}");
    let apart = |p: &&PathBuf, top: &str| p.starts_with(env.path("repo").join(top));
    assert!(data.iter().all(|p| apart(p, "files")), "{data:?}");
    assert!(apart(&trees[0], "data"), "{trees:?}");

    let mut restored_without_a_pack = 0;
    for (i, pack) in data.iter().enumerate() {
        for how in [Harm::Flip, Harm::Truncate, Harm::Delete] {
            let case = format!("data{i}-{how:?}");
            let repo = copy(&env, &case);
            let name = object_name(pack);
            harm(
                &repo.join(pack.strip_prefix(env.path("repo")).unwrap()),
                how,
            );
            let (restored, missing) = restore_what_is_whole(&env, &case, &src, &files, &name);
            // One flipped byte is one blob: one file. A cut or deleted pack
            // costs the files with blobs after the cut or in it, no others
            // (restore_what_is_whole checks each): which those are depends
            // on how the workers filled the packs, but some pack's loss
            // leaves files whole.
            match how {
                Harm::Flip => assert_eq!(missing, 1, "{case}"),
                _ => assert!(missing >= 1, "{case}: {restored} / {missing}"),
            }
            if let Harm::Delete = how {
                restored_without_a_pack += restored;
            }
            let check = on(&env, &case, "check", &["--read-data"]);
            assert_eq!(check.status.code(), Some(1), "{case}: {}", text(&check));
            assert!(text(&check).contains(&name), "{case}: {}", text(&check));
        }
    }

    assert!(
        restored_without_a_pack >= 1,
        "no pack's loss left a file whole"
    );

    // Two data packs swapped: every blob is read from the wrong bytes, and
    // each one is caught (MDC or keyed id), never written.
    let repo = copy(&env, "swap");
    let rel = |p: &Path| repo.join(p.strip_prefix(env.path("repo")).unwrap());
    swap(&rel(data[0]), &rel(data[1]));
    let (restored, missing) = restore_what_is_whole(&env, "swap", &src, &files, "files/");
    assert!(missing >= 2, "swap: {restored} / {missing}");

    // The tree pack flipped in the middle: the directories whose trees are
    // damaged are left out, by path; the rest restores.
    for how in [Harm::Flip, Harm::Truncate] {
        let case = format!("tree-{how:?}");
        let repo = copy(&env, &case);
        let name = object_name(trees[0]);
        harm(
            &repo.join(trees[0].strip_prefix(env.path("repo")).unwrap()),
            how,
        );
        restore_what_is_whole(&env, &case, &src, &files, &name);
        let check = on(&env, &case, "check", &[]);
        assert_eq!(check.status.code(), Some(1), "{case}: {}", text(&check));
        assert!(text(&check).contains(&name), "{case}: {}", text(&check));
    }
}

#[test]
fn damaged_snapshots_index_and_config_are_named_and_hide_nothing_else() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"version one\n");
    let v1 = env.backup(&[&src], &[]);
    write(&src.join("f"), b"version two\n");
    let v2 = env.backup(&[&src], &[]);
    let (id1, id2) = (v1["id"].as_str().unwrap(), v2["id"].as_str().unwrap());
    let snapshot_path = |repo: &Path, id: &str| {
        std::fs::read_dir(repo.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| object_name(p).ends_with(id))
            .unwrap()
    };

    // The newest snapshot damaged: it is left out with a warning naming it,
    // and the other one is still listed and restores. (The copies share a
    // repository id, so one case's opened-snapshot cache would answer for
    // the next: these listings read the store, as a first reader does.)
    for how in [Harm::Flip, Harm::Truncate, Harm::Delete] {
        let case = format!("snap-{how:?}");
        let repo = copy(&env, &case);
        let damaged = snapshot_path(&repo, id2);
        let name = object_name(&damaged);
        harm(&damaged, how);
        let out = on(&env, &case, "snapshots", &["--json", "--no-cache"]);
        assert!(out.status.success(), "{case}: {}", text(&out));
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(listed.len(), 1, "{case}");
        assert_eq!(listed[0]["id"], id1, "{case}");
        if !matches!(how, Harm::Delete) {
            assert!(text(&out).contains(&name), "{case}: {}", text(&out));
            let check = on(&env, &case, "check", &[]);
            assert_eq!(check.status.code(), Some(1), "{case}");
            assert!(
                text(&check).contains(&name[17..25]),
                "{case}: {}",
                text(&check)
            );
        }
        let target = env.path(&format!("{case}-out"));
        let out = on(
            &env,
            &case,
            "restore",
            &[id1, "--target", target.to_str().unwrap()],
        );
        assert!(out.status.success(), "{case}: {}", text(&out));
        assert_eq!(
            std::fs::read(under(&target, &src).join("f")).unwrap(),
            b"version one\n"
        );
    }

    // Two snapshots' contents swapped: neither matches its name.
    let repo = copy(&env, "snap-swap");
    swap(&snapshot_path(&repo, id1), &snapshot_path(&repo, id2));
    let out = on(&env, "snap-swap", "snapshots", &["--json", "--no-cache"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).matches("does not match its name").count(),
        2,
        "{}",
        text(&out)
    );

    // An index object damaged: check names it; restore never needs it.
    let repo = copy(&env, "index");
    let index = std::fs::read_dir(repo.join("index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    harm(&index, Harm::Flip);
    let check = on(&env, "index", "check", &[]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        text(&check).contains(&object_name(&index)),
        "{}",
        text(&check)
    );
    let target = env.path("index-out");
    let out = on(
        &env,
        "index",
        "restore",
        &["latest", "--target", target.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));

    // config flipped, cut, deleted, or swapped for another repository's:
    // every reader stops with an error that names config (or, for the
    // other repository's, finds no snapshot of its own), exit 1 or 2.
    let other = env.init_other_repo("other-repo");
    for how in ["flip", "truncate", "delete", "other"] {
        let case = format!("config-{how}");
        let repo = copy(&env, &case);
        let config = repo.join("config");
        match how {
            "flip" => harm(&config, Harm::Flip),
            "truncate" => harm(&config, Harm::Truncate),
            "delete" => harm(&config, Harm::Delete),
            _ => std::fs::copy(other.join("config"), &config)
                .map(|_| ())
                .unwrap(),
        }
        if how == "other" {
            // Its own writer signed nothing here: every snapshot is refused
            // as forged, none is read as this repository's.
            let listed = on(&env, &case, "snapshots", &["--json"]);
            assert!(listed.status.success(), "{case}: {}", text(&listed));
            assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
            assert_eq!(text(&listed).matches("forged object").count(), 2);
            let check = on(&env, &case, "check", &[]);
            assert_eq!(check.status.code(), Some(1), "{case}: {}", text(&check));
            let out = on(
                &env,
                &case,
                "restore",
                &["latest", "--target", "config-out"],
            );
            assert!(
                matches!(out.status.code(), Some(1 | 2)),
                "{case}: {}",
                text(&out)
            );
            continue;
        }
        for (cmd, args) in [
            ("snapshots", vec![]),
            ("check", vec![]),
            ("restore", vec!["latest", "--target", "config-out"]),
        ] {
            let out = on(&env, &case, cmd, &args);
            let said = text(&out);
            assert!(
                matches!(out.status.code(), Some(1 | 2)),
                "{case} {cmd}: {said}"
            );
            assert!(said.contains("config"), "{case} {cmd}: {said}");
            assert!(!env.path("config-out").join("f").exists());
        }
    }
}

/// Every entry of the opened-snapshot cache under `cache` (any repository).
fn opened_entries(cache: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for repo in std::fs::read_dir(cache.join("coffer")).unwrap() {
        let opened = repo.unwrap().path().join("opened");
        for shard in std::fs::read_dir(opened).into_iter().flatten() {
            for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
                let path = file.unwrap().path();
                out.insert(object_name(&path), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn snapshots_opened_before_are_listed_from_their_sealed_copies_and_check_reads_the_store() {
    let env = Env::new();
    let src = env.path("src-with-a-telling-name");
    write(&src.join("f"), b"version one\n");
    env.backup(&[&src], &[]);
    write(&src.join("f"), b"version two\n");
    let v2 = env.backup(&[&src], &[]);
    let id2 = v2["id"].as_str().unwrap();
    let listed = |args: &[&str]| -> Vec<String> {
        let out = on(&env, "repo", "snapshots", &[&["--json"], args].concat());
        assert!(out.status.success(), "{}", text(&out));
        let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        all.iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&[]).len(), 2);
    let cache = env.path("cache");
    let entries = opened_entries(&cache);
    assert_eq!(entries.len(), 2, "one sealed entry per snapshot opened");
    for sealed in entries.values() {
        assert!(
            !sealed.windows(10).any(|w| w == b"telling-na"),
            "the snapshot's plaintext is not on disk"
        );
    }

    // Damaged in the store after it was opened: listed from its sealed
    // copy (no public-key work, no read of the object), while check, which
    // always reads the store, names it.
    let object = std::fs::read_dir(env.path("repo/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| object_name(p).ends_with(id2))
        .unwrap();
    let pristine = std::fs::read(&object).unwrap();
    harm(&object, Harm::Flip);
    assert_eq!(
        listed(&[]).len(),
        2,
        "served from the opened-snapshot cache"
    );
    assert_eq!(
        listed(&["--no-cache"]).len(),
        1,
        "--no-cache reads the store"
    );
    let check = on(&env, "repo", "check", &[]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains(&object_name(&object)[17..25]));
    std::fs::write(&object, &pristine).unwrap();

    // A sealed copy damaged in the cache: dropped, opened again from the
    // store, sealed again.
    let name = object_name(&object);
    let entry = cache
        .join("coffer")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("opened")
        .join(&name[..2])
        .join(&name);
    let mut flipped = std::fs::read(&entry).unwrap();
    let at = flipped.len() / 2;
    flipped[at] ^= 1;
    std::fs::write(&entry, &flipped).unwrap();
    assert_eq!(listed(&[]).len(), 2);
    let resealed = std::fs::read(&entry).unwrap();
    assert_ne!(resealed, flipped, "the damaged entry was replaced");

    // Forgetting a snapshot drops its entry too.
    let out = on(&env, "repo", "forget", &["--keep-last", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(listed(&[]), vec![id2.to_string()]);
    assert_eq!(
        opened_entries(&cache).keys().collect::<Vec<_>>(),
        vec![&name]
    );
}
