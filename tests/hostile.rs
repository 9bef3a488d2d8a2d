//! Malicious trees: what a compromised writer (one holding writer.key: the
//! chunk-id key and the signing key) can store. Names with `..`, `/`, NUL or
//! an absolute path, duplicate or unsorted names, sizes that do not add up,
//! claims of huge blobs, a symlink pointing out of the target; one subtree
//! named 2^40 times, directories nested past any path; a message that made
//! the OpenPGP parser panic. Restore must never write outside its target, no
//! reader may panic or show such a directory, and check must not blow up;
//! what is well-formed still restores, over a live tree too. (An object
//! stored in an archive class where a snapshot goes is tests/cold.rs's: it
//! needs the cold-storage server, and a binary of its own keeps that
//! server's start-up apart from the memory measured here.)
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use coffer_core::crypto::blob;
use coffer_core::crypto::keyfile::ModeCheck;
use coffer_core::crypto::WriterKey;
use coffer_core::crypto::{self, PackSealer, Recipients};
use coffer_core::format::id::{ObjectId, PackId};
use coffer_core::format::index::PackKind;
use coffer_core::format::snapshot::{self, Snapshot, SnapshotStats};
use coffer_core::format::tree::{Entry, Kind, Location, Tree};
use std::path::Path;
use util::mount::Mounted;
use util::*;

/// Writes blobs into packs of a local repository as a writer would, but
/// with whatever trees the test makes.
struct Forge<'a> {
    env: &'a Env,
    key: WriterKey,
    sealer: PackSealer,
    recipients: Recipients,
}

impl<'a> Forge<'a> {
    fn new(env: &'a Env) -> Self {
        let key = WriterKey::read(&env.path("writer.key"), ModeCheck::Private).unwrap();
        let recipients = Recipients::from_armored(&key.config.recipients).unwrap();
        let sealer = PackSealer::new(&recipients).unwrap();
        Self {
            env,
            key,
            sealer,
            recipients,
        }
    }

    /// Stores `plain` as the only blob of a new pack of `kind`; its
    /// location.
    fn blob(&self, plain: &[u8], kind: PackKind) -> Location {
        self.blob_in(PackId::random(), plain, kind)
    }

    /// Stores `plain` as the only blob of pack `pack`, of `kind`; its
    /// location.
    fn blob_in(&self, pack: PackId, plain: &[u8], kind: PackKind) -> Location {
        let stored = blob::encode(&self.sealer, 3, plain).unwrap();
        let path = self
            .env
            .path(&format!("repo/{}", pack_rel(&pack.to_hex(), kind)));
        write(&path, &stored);
        Location {
            id: self.key.chunk_key().blob_id(plain),
            pack,
            offset: 0,
            length: stored.len() as u64,
            raw_length: plain.len() as u64,
        }
    }

    /// Stores a tree's JSON as given (not sorted, not checked).
    fn tree_json(&self, json: &serde_json::Value) -> Location {
        self.blob(&serde_json::to_vec(json).unwrap(), PackKind::Tree)
    }

    fn tree(&self, entries: Vec<Entry>) -> Location {
        self.tree_json(&serde_json::to_value(Tree { entries }).unwrap())
    }

    /// Signs and stores a snapshot of `root`; its id.
    fn snapshot(&self, root: Location) -> String {
        let snap = Snapshot {
            time: coffer_core::format::encoding::now_rfc3339(),
            host: "compromised".into(),
            user: "root".into(),
            paths: vec!["/".into()],
            tags: vec![],
            tree: root,
            program: "not coffer".into(),
            stats: SnapshotStats::default(),
        };
        let signer = self.key.signer().unwrap();
        let sealed = crypto::seal_signed(&self.recipients, signer, &snap.to_json()).unwrap();
        let id = ObjectId::of_bytes(&sealed);
        let name = snapshot::object_name(&self.key.config.id, &snap.host, &id);
        write(&self.env.path(&format!("repo/snapshots/{name}")), &sealed);
        id.to_hex()
    }
}

fn entry(name: &[u8], kind: Kind) -> Entry {
    Entry {
        mtime_ns: 1_700_000_000_000_000_000,
        ..Entry::new(name.to_vec(), kind, 0o644)
    }
}

fn file(forge: &Forge, name: &[u8], content: &[u8]) -> Entry {
    let mut e = entry(name, Kind::File);
    e.size = content.len() as u64;
    e.chunks = vec![forge.blob(content, PackKind::Data)];
    e
}

fn dir(name: &[u8], subtree: Location) -> Entry {
    let mut e = entry(name, Kind::Dir);
    e.mode = 0o755;
    e.subtree = Some(subtree);
    e
}

#[test]
fn hostile_trees_never_escape_the_target_or_crash_a_reader() {
    let env = Env::new();
    let forge = Forge::new(&env);
    let good = forge.tree(vec![file(&forge, b"good.txt", b"well formed\n")]);
    // One directory per attack; each one's tree must be refused whole.
    let mut hostile: Vec<(&str, Location)> = Vec::new();
    for (label, name) in [
        ("dotdot", &b".."[..]),
        ("dot", b"."),
        ("slash", b"a/b"),
        ("absolute", b"/tmp/coffer-escaped"),
        ("nul", b"a\0b"),
        ("empty", b""),
    ] {
        hostile.push((label, forge.tree(vec![file(&forge, name, b"escape\n")])));
    }
    let twice = file(&forge, b"x", b"one\n");
    hostile.push(("duplicate", forge.tree(vec![twice.clone(), twice])));
    hostile.push((
        "unsorted",
        forge.tree(vec![file(&forge, b"b", b"b"), file(&forge, b"a", b"a")]),
    ));
    let mut liar = file(&forge, b"liar", b"short");
    liar.size = 1 << 40;
    hostile.push(("size", forge.tree(vec![liar])));
    let mut huge = file(&forge, b"huge", b"tiny");
    huge.chunks[0].raw_length = 1 << 40;
    huge.size = 1 << 40;
    hostile.push(("claim", forge.tree(vec![huge])));
    let mut chunky_dir = dir(b"d", good);
    chunky_dir.chunks = vec![good];
    hostile.push(("dir-with-chunks", forge.tree(vec![chunky_dir])));
    hostile.push((
        "not-json",
        forge.blob(
            b"{\"entries\": [{\"name\": \"x\", \"kind\": \"file\"",
            PackKind::Tree,
        ),
    ));
    // A symlink out of the target is stored as a symlink, never followed.
    let mut link = entry(b"link", Kind::Symlink);
    link.target = Some(b"../../../../../../../tmp/coffer-link-target".to_vec());
    let links = forge.tree(vec![link]);

    let mut root_entries = vec![dir(b"good", good), dir(b"links", links)];
    for (label, loc) in &hostile {
        root_entries.push(dir(label.as_bytes(), *loc));
    }
    root_entries.sort_by(|a, b| a.name.cmp(&b.name));
    let id = forge.snapshot(forge.tree(root_entries));
    let _ = std::fs::remove_file("/tmp/coffer-escaped");
    let _ = std::fs::remove_dir_all("/tmp/coffer-link-target");

    // Restore: the good directory and the link, every hostile directory
    // named, nothing anywhere but below the target.
    let box_dir = env.path("box");
    let target = box_dir.join("target");
    std::fs::create_dir_all(&target).unwrap();
    let out = env.admin("restore", &[&id, "--target", target.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    for (label, _) in &hostile {
        assert!(
            said.contains(&format!("{}: damaged object", target.join(label).display())),
            "{label} not named: {said}"
        );
    }
    assert_eq!(
        std::fs::read(target.join("good/good.txt")).unwrap(),
        b"well formed\n"
    );
    assert_eq!(
        std::fs::read_link(target.join("links/link")).unwrap(),
        Path::new("../../../../../../../tmp/coffer-link-target")
    );
    assert_eq!(
        listing(&box_dir),
        [
            "target",
            "target/good",
            "target/good/good.txt",
            "target/links",
            "target/links/link"
        ]
    );
    assert!(!Path::new("/tmp/coffer-escaped").exists());
    assert!(!Path::new("/tmp/coffer-link-target").exists());

    // check: a problem per hostile directory, no panic.
    let out = env.admin("check", &["--read-data"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("{} problems", hostile.len())),
        "{said}"
    );

    // diff against a real snapshot and export: errors at worst, no panic.
    let src = env.path("src");
    write(&src.join("f"), b"real\n");
    let real = env.backup(&[&src], &[]);
    let out = env.admin("diff", &[real["id"].as_str().unwrap(), &id]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert!(matches!(out.status.code(), Some(0..=2)), "{out:?}");
    let out = env.admin(
        "export",
        &[&id, "--tar", env.path("x.tar").to_str().unwrap()],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert!(matches!(out.status.code(), Some(0..=2)), "{out:?}");

    // The mount: hostile directories fail with EIO, the rest reads.
    let m = Mounted::new(&env, &[]);
    let snap = m
        .snapshot_names()
        .into_iter()
        .map(|n| m.path(&format!("snapshots/{n}")))
        .find(|p| p.join("good").exists())
        .unwrap();
    assert_eq!(
        std::fs::read(snap.join("good/good.txt")).unwrap(),
        b"well formed\n"
    );
    for (label, _) in &hostile {
        let err = std::fs::read_dir(snap.join(label))
            .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{label}: {err}");
    }
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// Restoring a forged snapshot over a live tree with `--delete`: symlinks
/// the target holds where the snapshot has directories are replaced, never
/// followed; what lies below a directory whose tree is damaged is neither
/// restored nor deleted; nothing outside the target changes.
#[test]
fn a_hostile_snapshot_restored_over_a_live_tree_with_delete_stays_inside_it() {
    let env = Env::new();
    let forge = Forge::new(&env);
    let good = forge.tree(vec![file(&forge, b"good.txt", b"well formed\n")]);
    let dotdot = forge.tree(vec![file(&forge, b"..", b"escape\n")]);
    let id = forge.snapshot(forge.tree(vec![
        dir(b"damaged", dotdot),
        dir(b"good", good),
        dir(b"more", good),
    ]));
    let outside = env.path("outside");
    write(&outside.join("good.txt"), b"not the target's\n");
    write(&outside.join("other"), b"not the target's either\n");
    let target = env.path("target");
    std::fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("good")).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("extra-link")).unwrap();
    write(
        &target.join("damaged/mine"),
        b"kept: its tree could not be read\n",
    );
    write(&target.join("more/stale"), b"the snapshot lacks it\n");

    let t = target.display().to_string();
    let out = env.admin("restore", &[&id, "--target", &t, "--overwrite", "--delete"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    assert!(said.contains("damaged"), "{said}");
    assert_eq!(
        listing(&outside),
        ["good.txt", "other"],
        "something outside the target changed"
    );
    assert_eq!(
        std::fs::read(outside.join("good.txt")).unwrap(),
        b"not the target's\n"
    );
    assert_eq!(
        listing(&target),
        [
            "damaged",
            "damaged/mine",
            "good",
            "good/good.txt",
            "more",
            "more/good.txt"
        ]
    );
    assert!(!target.join("good").is_symlink());
    assert_eq!(
        std::fs::read(target.join("good/good.txt")).unwrap(),
        b"well formed\n"
    );
}

/// A snapshot whose trees are shared or deep past reason: `levels` trees
/// of two subdirectories `a` and `b`, both the tree below (2^levels paths
/// to one file), next to a chain of `depth` directories `d`.
fn bomb_and_chain(forge: &Forge, levels: usize, depth: usize, bottom: &[u8]) -> String {
    let mut bomb = forge.tree(vec![file(forge, b"f", b"bomb\n")]);
    for _ in 0..levels {
        bomb = forge.tree(vec![dir(b"a", bomb), dir(b"b", bomb)]);
    }
    let mut chain = forge.tree(vec![file(forge, b"bottom", bottom)]);
    for _ in 0..depth {
        chain = forge.tree(vec![dir(b"d", chain)]);
    }
    forge.snapshot(forge.tree(vec![dir(b"bomb", bomb), dir(b"deep", chain)]))
}

/// `find` over a subtree 2^40 paths share stops at its limit of matches,
/// in bounded time and memory, and names the cut; `stats` counts its 2^40
/// files walking each tree once; trees nested past any writer's depth are
/// named by `find`, `stats` and `ls` (exit 3), not followed.
#[test]
fn find_stats_and_ls_stay_bounded_on_shared_and_deep_trees() {
    let env = Env::new();
    let forge = Forge::new(&env);
    let depth = coffer_core::format::tree::MAX_DEPTH + 10;
    let snap = bomb_and_chain(&forge, 40, depth, b"x\n");
    let run = env.admin_cmd("find", &["f", "bottom", "--snapshot", &snap]);
    let m = util::measured(run, &env.path("find"));
    let limit = coffer_core::ops::find::MAX_HITS;
    eprintln!(
        "find over 2^40 paths: {:?}, peak {} MiB",
        m.took, m.peak_mib
    );
    assert_eq!(
        m.code,
        3,
        "{}",
        &m.text[m.text.len().saturating_sub(2000)..]
    );
    let tail = &m.text[m.text.len().saturating_sub(4000)..];
    assert!(
        tail.contains(&format!("more than {limit} matches")),
        "{tail}"
    );
    assert!(tail.contains("nested deeper than 4096"), "{tail}");
    let rows = m.text.lines().filter(|l| l.ends_with("/f")).count();
    assert_eq!(rows, limit, "{tail}");
    assert!(m.took.as_secs() < 60, "find took {:?}", m.took);
    assert!(m.peak_mib < 300, "find peaked at {} MiB", m.peak_mib);

    // stats walks each tree once: 2^40 files counted, the depth named.
    let out = env.admin("stats", &[&snap, "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["snapshots"]["restored"]["files"], 1u64 << 40, "{json}");
    assert!(text(&out).contains("nested deeper than 4096"));

    let out = env.admin("ls", &[&format!("{snap}:/deep"), "--recursive"]);
    let said = text(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        &said[said.len().saturating_sub(2000)..]
    );
    assert!(
        said.contains("nested deeper than 4096"),
        "{}",
        &said[said.len().saturating_sub(2000)..]
    );
}

#[test]
fn shared_and_deep_trees_cost_check_one_walk_and_break_no_reader() {
    let env = Env::new();
    let forge = Forge::new(&env);
    // 2^40 paths to one file; check walks each distinct tree once.
    let levels = 40;
    let shallow = bomb_and_chain(&forge, levels, 3, b"x\n");
    let started = std::time::Instant::now();
    let out = env.admin_ok("check", &["--read-data"]);
    let took = started.elapsed();
    let said = text(&out);
    let trees = levels + 1 + 3 + 1 + 1;
    assert!(said.contains(&format!("{trees} trees")), "{said}");
    assert!(took.as_secs() < 30, "check took {took:?}: {said}");
    eprintln!("check --read-data of 2^{levels} paths to one file: {took:?}");

    // Nested deeper than any writer can store: one problem at that depth,
    // no stack overflow; diff and restore refuse it and say why.
    let depth = coffer_core::format::tree::MAX_DEPTH + 10;
    let deep = bomb_and_chain(&forge, levels, depth, b"one\n");
    let other = bomb_and_chain(&forge, levels, depth, b"two\n");
    let out = env.admin("check", &["--read-data"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("2 problems"), "{said}");
    assert_eq!(said.matches("nested deeper than 4096").count(), 2, "{said}");

    let out = env.admin("diff", &[&deep, &other]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("nested deeper than 4096"), "{said}");
    let out = env.admin("diff", &[&shallow, &deep]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let target = env.path("target");
    let out = env.admin(
        "restore",
        &[
            &format!("{deep}:/deep"),
            "--target",
            target.to_str().unwrap(),
        ],
    );
    // As deep as a path can reach: a warning where it cannot, the rest
    // restored (exit 3), nothing outside the target.
    let said = text(&out);
    assert!(!said.contains("panicked"), "{said}");
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("not restored: its path is"), "{said}");
    let (mut below, mut depth) = (target.clone(), 0);
    while below.join("d").is_dir() {
        below.push("d");
        depth += 1;
    }
    assert!(depth > 1500, "{depth} levels restored: {said}");

    // Export stops at the depth check uses, naming it.
    let archive = env.path("deep.tar");
    let out = env.admin(
        "export",
        &[&format!("{deep}:/deep"), "--tar", archive.to_str().unwrap()],
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("nested deeper than 4096"), "{said}");

    // A subtree many paths share is read once (the repository's memo of
    // trees): 2^12 paths through 12 shared levels. (At 16 levels: 12 s,
    // 21 s when each path's trees were read again; the rest is the 2^17
    // files and directories it makes.)
    let wide = bomb_and_chain(&forge, 12, 3, b"x\n");
    let target = env.path("wide");
    let started = std::time::Instant::now();
    let out = env.admin(
        "restore",
        &[
            &format!("{wide}:/bomb"),
            "--target",
            target.to_str().unwrap(),
        ],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let far = format!("{}f", "b/a/".repeat(6));
    assert_eq!(std::fs::read(target.join(far)).unwrap(), b"bomb\n");
    eprintln!("restore of 2^12 paths through 12 shared trees: {took:?}");

    // The mount fetches only what is looked at: the file 40 shared levels
    // down reads, and so does the chain as far as a path can reach.
    let m = Mounted::new(&env, &[]);
    let snap = m.path(&format!("ids/{}", &shallow[..8]));
    let bomb = format!("bomb/{}f", "a/b/".repeat(levels / 2));
    assert_eq!(std::fs::read(snap.join(&bomb)).unwrap(), b"bomb\n");
    let snap = m.path(&format!("ids/{}", &deep[..8]));
    let far = format!("deep/{}", "d/".repeat(1000));
    assert!(snap.join(far).is_dir());
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// recover.py keeps the same limits: an entry whose path would pass
/// Linux's 4095 bytes under the target is said and left out (exit 3),
/// the rest restored.
#[test]
fn recover_py_leaves_out_what_the_target_cannot_hold_and_restores_the_rest() {
    let env = Env::new();
    let forge = Forge::new(&env);
    let id = bomb_and_chain(&forge, 3, 3, b"bottom\n");
    // A target 4080 bytes long: `bomb/a/b/a/f` (13 more) fits,
    // `deep/d/d/d/bottom` (18 more) does not.
    let mut target = env.path("t");
    let base = target.as_os_str().len();
    let mut left = 4080 - base;
    while left > 0 {
        let part = (left - 1).min(250);
        target.push("x".repeat(part));
        left -= part + 1;
    }
    assert_eq!(target.as_os_str().len(), 4080);
    std::fs::create_dir_all(&target).unwrap();
    let gnupg = env.gnupg_with_admin_key();
    let t = target.to_str().unwrap();
    let out = recover_py(&env, &gnupg, &["--snapshot", &id[..8], "--target", t]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("not restored: name or path too long"),
        "{said}"
    );
    assert!(said.contains("1 entries were not restored"), "{said}");
    assert_eq!(
        std::fs::read(target.join("bomb/a/b/a/f")).unwrap(),
        b"bomb\n"
    );
    assert!(target.join("deep/d/d/d").is_dir());
    assert!(!target.join("deep/d/d/d/bottom").exists());
}

/// `message` with its SEIPD packet (tag 18, the last) cut to the first `n`
/// bytes of its body: too short for its prefix and MDC, the shape that
/// made sequoia 2.4 panic (found by fuzz/).
fn cut_seipd(message: &[u8], n: u8) -> Vec<u8> {
    let mut at = 0;
    while at + 1 < message.len() {
        assert_eq!(message[at] & 0xc0, 0xc0, "a new-format packet at {at}");
        let (len, header) = match message[at + 1] {
            l @ 0..=191 => (usize::from(l), 2),
            l @ 192..=223 => (
                ((usize::from(l) - 192) << 8) + usize::from(message[at + 2]) + 192,
                3,
            ),
            255 => (
                u32::from_be_bytes(message[at + 2..at + 6].try_into().unwrap()) as usize,
                6,
            ),
            // The first part of a partial body: only the last packet.
            _ => (usize::MAX, 2),
        };
        if message[at] & 0x3f == 18 {
            let body = &message[at + header..];
            let mut out = message[..at].to_vec();
            out.extend_from_slice(&[0xc0 | 18, n]);
            out.extend_from_slice(&body[..usize::from(n)]);
            return out;
        }
        at += header + len;
    }
    panic!("no SEIPD packet");
}

#[test]
fn a_message_that_broke_the_openpgp_parser_is_named_without_a_panic() {
    let env = Env::new();
    let forge = Forge::new(&env);
    let good = forge.snapshot(forge.tree(vec![file(&forge, b"f", b"fine\n")]));
    let dir = env.path("repo/snapshots");
    let stored = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
    // 37..=40 bytes of this message's body make sequoia 2.4 panic.
    let bad = cut_seipd(&std::fs::read(stored.path()).unwrap(), 38);
    let id = ObjectId::of_bytes(&bad);
    let name = snapshot::object_name(&forge.key.config.id, "compromised", &id);
    write(&dir.join(&name), &bad);

    let out = env.admin("check", &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("1 problem"), "{said}");
    assert!(said.contains("malformed OpenPGP message"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    let out = env.admin_ok("snapshots", &[]);
    let said = text(&out);
    assert!(said.contains(&good[..8]), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    // The panic did happen (else this test proves nothing): it is in the
    // debug log.
    let out = env
        .admin_cmd("check", &[])
        .env("COFFER_LOG", "debug")
        .output()
        .unwrap();
    let said = text(&out);
    assert!(
        said.contains("the OpenPGP parser panicked (caught)"),
        "sequoia no longer panics on this message: update the test: {said}"
    );
}

/// A root tree whose directory `loop` points at the root's own bytes: the
/// nearest a writer can come to a cycle, since a tree cannot contain its
/// own keyed id. The pointer claims `claimed`'s id; its pack, offset and
/// lengths are the root's (found by encoding until they agree).
fn pointing_back(forge: &Forge, claimed: Location, good: Location) -> Location {
    let pack = PackId::random();
    let mut back = Location {
        pack,
        offset: 0,
        length: 0,
        raw_length: 0,
        ..claimed
    };
    // The stored length depends on how the digits compress, so the
    // lengths may cycle without agreeing: then vary the loop's mtime.
    for salt in 0..1000 {
        let mut seen = std::collections::HashSet::new();
        while seen.insert((back.length, back.raw_length)) {
            let mut looping = dir(b"loop", back);
            looping.mtime_ns += salt;
            let entries = vec![dir(b"good", good), looping];
            let plain = serde_json::to_vec(&Tree { entries }).unwrap();
            let stored = blob::encode(&forge.sealer, 3, &plain).unwrap();
            if (stored.len() as u64, plain.len() as u64) == (back.length, back.raw_length) {
                return forge.blob_in(pack, &plain, PackKind::Tree);
            }
            back.length = stored.len() as u64;
            back.raw_length = plain.len() as u64;
        }
    }
    panic!("no tree found whose pointer gives its own length");
}

#[test]
fn a_directory_pointing_back_at_its_parent_is_damage_not_a_loop() {
    let env = Env::new();
    let forge = Forge::new(&env);
    let good = forge.tree(vec![file(&forge, b"f", b"fine\n")]);
    let root = pointing_back(&forge, good, good);
    let id = forge.snapshot(root);

    let target = env.path("target");
    let out = env.admin("restore", &[&id, "--target", target.to_str().unwrap()]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "{}: damaged object",
            target.join("loop").display()
        )),
        "{said}"
    );
    assert_eq!(std::fs::read(target.join("good/f")).unwrap(), b"fine\n");
    assert_eq!(listing(&target), ["good", "good/f"]);

    let out = env.admin("check", &["--read-data"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("1 problem"), "{said}");

    // The mount: `loop` is EIO when read from where it points (not the
    // tree its id names), or, once that tree is cached by id (the mount
    // reads sibling trees together), exactly that tree: content
    // addressing, never the root again, never a loop.
    let m = Mounted::new(&env, &[]);
    let snap = m.path(&format!("ids/{}", &id[..8]));
    match std::fs::read_dir(snap.join("loop"))
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
    {
        Err(err) => assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}"),
        Ok(entries) => {
            let names: Vec<_> = entries.iter().map(|e| e.file_name()).collect();
            assert_eq!(names, ["f"]);
            assert_eq!(std::fs::read(snap.join("loop/f")).unwrap(), b"fine\n");
        }
    }
    assert_eq!(std::fs::read(snap.join("good/f")).unwrap(), b"fine\n");
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
}

// ---------------------------------------------------------------------------
// The store's half: objects a stolen put-only credential (or a compromised
// writer host) can store beside the real ones. Every admin command must
// finish, in bounded memory and time, name what it left out, and still
// restore every good snapshot byte for byte.

/// Peak memory any admin command may reach with planted objects present.
const PEAK_MIB: u64 = 256;

/// An OpenPGP message to `admin.cert` of what `feed` writes, encrypted
/// by gpg with `args` (as anyone holding the public certificate can),
/// written to `out` (never held by this process: a command measured
/// later starts with the RSS this process had when it forked).
fn gpg_to_admin(
    env: &Env,
    args: &[&str],
    out: &Path,
    feed: impl FnOnce(&mut std::process::ChildStdin) + Send + 'static,
) {
    let home = env.path("bomb-gnupg");
    if !home.exists() {
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
    }
    let mut child = std::process::Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--quiet", "--yes", "--trust-model", "always"])
        .args(args)
        .arg("--output")
        .arg(out)
        .arg("--encrypt")
        .arg("--recipient-file")
        .arg(env.path("admin.cert"))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("run gpg");
    let mut input = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || feed(&mut input));
    let status = child.wait().unwrap();
    feeder.join().unwrap();
    assert!(status.success(), "gpg could not encrypt");
}

/// An OpenPGP message to `admin.cert` whose Compressed Data packet
/// inflates to `inflated` zero bytes (`gpg -e -z 9 --compress-algo zlib`,
/// as the attack was first tried): about 1/1000 of that stored.
fn compressed_bomb(env: &Env, inflated: usize) -> Vec<u8> {
    use std::io::Write;
    let out = env.path("bomb.gpg");
    let args = ["--compress-algo", "zlib", "-z", "9"];
    gpg_to_admin(env, &args, &out, move |input| {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..inflated / zeros.len() {
            input.write_all(&zeros).unwrap();
        }
    });
    let bomb = std::fs::read(out).unwrap();
    assert!(bomb.len() < inflated / 100, "{}", bomb.len());
    bomb
}

/// Plants a well-formed index object of about `bytes` bytes, as anyone
/// who may write can store one (indexes are not signed): it lists `pack`
/// (a real one, with its real size) with as many made-up blobs as fit.
/// Its name, `index/<SHA-256>`.
fn plant_large_index(env: &Env, pack: &Path, bytes: usize) -> String {
    use sha2::Digest;
    use std::io::Write;
    let id = pack.file_name().unwrap().to_str().unwrap().to_string();
    let size = std::fs::metadata(pack).unwrap().len();
    let blob = format!(
        r#"{{"id":"{}","offset":0,"length":100,"raw_length":100}}"#,
        "ab".repeat(32)
    );
    let made = env.path("large-index.gpg");
    gpg_to_admin(env, &["--compress-algo", "none"], &made, move |input| {
        let head = format!(
            r#"{{"packs":[{{"id":"{id}","kind":"data","size":{size},"time":"2026-12-06T00:00:00Z","blobs":["#
        );
        input.write_all(head.as_bytes()).unwrap();
        let run = vec![blob.as_str(); 10_000].join(",");
        for n in 0..bytes / run.len() {
            if n > 0 {
                input.write_all(b",").unwrap();
            }
            input.write_all(run.as_bytes()).unwrap();
        }
        input.write_all(b"]}]}").unwrap();
    });
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(&made).unwrap(), &mut hasher).unwrap();
    let name = format!("index/{}", hex::encode(hasher.finalize()));
    std::fs::rename(&made, env.path(&format!("repo/{name}"))).unwrap();
    name
}

/// Runs an admin's `cmd` with `planted` objects in the store and checks
/// it stayed within bounds: under [`PEAK_MIB`], under 10 s per planted
/// object, no panic. Prints the figures.
fn within_bounds(env: &Env, label: &str, cmd: std::process::Command, planted: usize) -> Measured {
    let m = measured(cmd, &env.path(&format!("run-{}", label.replace(' ', "-"))));
    eprintln!(
        "{label}: exit {}, peak {} MiB, {:.2} s",
        m.code,
        m.peak_mib,
        m.took.as_secs_f64()
    );
    assert!(
        m.peak_mib < PEAK_MIB,
        "{label}: {} MiB\n{}",
        m.peak_mib,
        m.text
    );
    assert!(
        m.took.as_secs() < 10 * planted as u64,
        "{label}: {:?}",
        m.took
    );
    assert!(!m.text.contains("panicked"), "{label}: {}", m.text);
    m
}

/// Stores `bytes` as `repo/<dir>/<its SHA-256>` (how snapshots and
/// indexes are named); the object's path in the repository.
fn plant_named(env: &Env, dir: &str, bytes: &[u8]) -> String {
    let name = format!("{dir}/{}", ObjectId::of_bytes(bytes).to_hex());
    write(&env.path(&format!("repo/{name}")), bytes);
    name
}

/// A signed snapshot (a compromised writer's) of a tree with a well-formed
/// file `ok.txt`, a file `bomb.bin` whose only chunk is a compressed bomb,
/// and a hard-link group led by a symlink to `secret`: `a-link` (the
/// symlink), `b-file` (a regular file, the same dev and inode).
fn forged_with_bomb_and_links(forge: &Forge, bomb: &[u8], secret: &Path) -> String {
    let pack = PackId::random();
    let rel = pack_rel(&pack.to_hex(), PackKind::Data);
    write(&forge.env.path(&format!("repo/{rel}")), bomb);
    let mut bomb_file = entry(b"bomb.bin", Kind::File);
    bomb_file.size = 1 << 20;
    bomb_file.chunks = vec![Location {
        id: forge.key.chunk_key().blob_id(b"claimed"),
        pack,
        offset: 0,
        length: bomb.len() as u64,
        raw_length: 1 << 20,
    }];
    let group = coffer_core::format::tree::HardLink {
        dev: 7,
        ino: 7,
        nlink: 2,
    };
    let mut lead = entry(b"a-link", Kind::Symlink);
    lead.target = Some(secret.as_os_str().as_encoded_bytes().to_vec());
    lead.link = Some(group);
    let mut later = file(forge, b"b-file", b"");
    later.link = Some(group);
    let ok = file(forge, b"ok.txt", b"fine\n");
    forge.snapshot(forge.tree(vec![lead, later, bomb_file, ok]))
}

#[test]
fn planted_objects_cost_admin_commands_nothing_and_block_nothing() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    write(&src.join("big.bin"), &random_bytes(3, 3_000_000));
    let good = env.backup(&[&src], &[]);
    let good_id = good["id"].as_str().unwrap().to_string();
    let forge = Forge::new(&env);
    let secret = env.path("secret");
    write(&secret, b"not for the target\n");

    // 512 MiB of zeros in ~0.5 MB: before the cap, `snapshots` alone
    // inflated it in memory.
    let bomb = compressed_bomb(&env, 512 << 20);
    let forged = forged_with_bomb_and_links(&forge, &bomb, &secret);
    let mut planted = vec![
        plant_named(&env, "snapshots", &bomb),
        plant_named(&env, "index", &bomb),
    ];
    // Over the snapshot cap (16 MiB): refused from its size, never read.
    let oversized = random_bytes(9, (16 << 20) + 1);
    planted.push(plant_named(&env, "snapshots", &oversized));
    // Names no reader takes.
    for junk in [
        "snapshots/not-a-snapshot",
        "index/junk",
        "data/zz/not-a-pack",
        "files/zz/not-a-pack",
    ] {
        write(&env.path(&format!("repo/{junk}")), b"junk");
        planted.push(junk.to_string());
    }
    // A well-formed index of 120 MiB (indexes are not signed, and may be
    // up to 256 MiB): read whole, it cost check and prune 2.7 times its
    // size (a 232 MiB one: 633 MiB); read as a stream, 43 MiB.
    let pack = std::fs::read_dir(env.path("repo/files"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .next()
        .unwrap();
    let big_index = plant_large_index(&env, &pack, 120 << 20);
    // Two "packs" of 160 MiB under well-formed names (no reader can tell
    // a pack's bytes from junk before it reads them): copy carries each
    // through a file, 8 MiB at a time (whole, it peaked at 177 MiB).
    let mut big_packs = Vec::new();
    for n in [0x5au8, 0xa5] {
        let name = hex::encode([n; 32]);
        let path = env.path(&format!("repo/data/{}/{name}", &name[..2]));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(160 << 20).unwrap();
        big_packs.push(format!("data/{}/{name}", &name[..2]));
    }
    let run = |label: &str, cmd| within_bounds(&env, label, cmd, planted.len() + 3);

    // Listings leave each planted snapshot object out, naming it.
    let m = run("snapshots", env.admin_cmd("snapshots", &["--json"]));
    assert_eq!(m.code, 0, "{}", m.text);
    for name in planted.iter().filter(|n| n.starts_with("snapshots/")) {
        assert!(
            m.text.contains(name.as_str()),
            "{name} not named: {}",
            m.text
        );
    }
    assert!(m.text.contains("Compressed Data"), "{}", m.text);
    assert!(
        m.text.contains(&good_id) && m.text.contains(&forged),
        "{}",
        m.text
    );

    // check lists every planted object and the forged snapshot's damage;
    // the large index is whole (it lists a stored pack at its size).
    let m = run("check", env.admin_cmd("check", &[]));
    assert_eq!(m.code, 1, "{}", m.text);
    assert!(!m.text.contains(&big_index), "{}", m.text);
    for name in &planted {
        assert!(
            m.text.contains(name.as_str()),
            "{name} not listed: {}",
            m.text
        );
    }

    // The good snapshot restores byte for byte; the forged one restores
    // what is whole and names the rest, and never copies `secret`.
    let out = env.path("out-good");
    let m = run(
        "restore-good",
        env.admin_cmd("restore", &[&good_id, "--target", out.to_str().unwrap()]),
    );
    assert_eq!(m.code, 0, "{}", m.text);
    assert_same_tree(&src, &under(&out, &src));
    let out = env.path("out-forged");
    let m = run(
        "restore-forged",
        env.admin_cmd("restore", &[&forged, "--target", out.to_str().unwrap()]),
    );
    assert_eq!(m.code, 1, "{}", m.text);
    assert!(
        m.text
            .contains(&format!("{}: ", out.join("bomb.bin").display())),
        "{}",
        m.text
    );
    assert!(m.text.contains("Compressed Data"), "{}", m.text);
    assert!(
        m.text.contains(&format!(
            "{}: not restored: damaged tree",
            out.join("b-file").display()
        )),
        "{}",
        m.text
    );
    assert_eq!(std::fs::read(out.join("ok.txt")).unwrap(), b"fine\n");
    assert_eq!(std::fs::read_link(out.join("a-link")).unwrap(), secret);
    assert_eq!(listing(&out), ["a-link", "ok.txt"]);

    // The mount lists and reads; the planted objects are not there.
    let m = Mounted::new(&env, &[]);
    let walked = std::process::Command::new("ls")
        .arg("-lR")
        .arg(m.path("snapshots"))
        .output()
        .unwrap();
    assert!(walked.status.success(), "{}", text(&walked));
    assert_eq!(m.snapshot_names().len(), 2);
    let newest = m.path("ids").join(&good_id[..8]);
    assert_eq!(
        std::fs::read(under(&newest, &src).join("a.txt")).unwrap(),
        b"alpha\n"
    );
    let peak = m.peak_rss_mib();
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
    assert!(peak < PEAK_MIB, "mount: {peak} MiB");
    assert!(log.contains(&planted[0]), "{log}");

    // recover.py, gpg and zstd alone: the same objects left out.
    let gnupg = env.gnupg_with_admin_key();
    let listed = recover_py(&env, &gnupg, &["--list"]);
    let said = text(&listed);
    assert!(listed.status.success(), "{said}");
    assert!(
        said.contains(&good_id[..8]) && said.contains(&forged[..8]),
        "{said}"
    );
    assert!(
        said.contains(&planted[0]) && said.contains(&planted[2]),
        "{said}"
    );

    // forget and prune run to the end (nothing of the good is lost).
    let m = run(
        "forget-prune",
        env.admin_cmd("forget", &["--keep-last", "9", "--prune"]),
    );
    assert!(matches!(m.code, 0 | 3), "{}", m.text);
    assert!(m.text.contains(&planted[0]), "{}", m.text);
    let out = env.path("out-after-prune");
    env.restore(&good_id, &out);
    assert_same_tree(&src, &under(&out, &src));

    // copy carries what is well-named and within its caps, and says what
    // it left out; the copy lists the same good snapshots.
    let copy_to = env.path("copy");
    let to = copy_to.to_str().unwrap();
    let m = run("copy", env.cmd(&["copy", "--from", "repo", "--to", to]));
    assert_eq!(m.code, 3, "{}", m.text);
    assert!(m.peak_mib < 100, "copy: {} MiB", m.peak_mib);
    for junk in &planted[2..] {
        assert!(m.text.contains(junk.as_str()), "{junk}: {}", m.text);
    }
    let copied = env
        .cmd(&[
            "snapshots",
            "--repo",
            copy_to.to_str().unwrap(),
            "--key",
            "admin.key",
        ])
        .output()
        .unwrap();
    assert!(text(&copied).contains(&good_id[..8]), "{}", text(&copied));
    for pack in &big_packs {
        let copied = std::fs::metadata(copy_to.join(pack)).unwrap();
        assert_eq!(copied.len(), 160 << 20, "{pack}");
    }

    // Nothing was deleted because it could not be read; the large index
    // lists a pack still stored, so prune kept it.
    for name in planted.iter().chain([&big_index]) {
        assert!(env.path(&format!("repo/{name}")).exists(), "{name} deleted");
    }
}

/// Packs are known by where they are stored and their id together. A
/// put-only credential stores junk under `files/` named as a tree pack and
/// under `data/` named as a data pack: no reader reads them for what their
/// twin holds (check, restore and the mount read the genuine ones), they
/// do not count as referenced, and prune deletes them once old, keeping
/// their twins.
#[test]
fn a_pack_planted_under_the_other_prefix_with_a_real_packs_id_is_pruned_not_read() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    write(&src.join("big.bin"), &random_bytes(4, 2_000_000));
    env.backup(&[&src], &[]);
    let in_dir = |top: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(env.path(&format!("repo/{top}")))
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .map(|f| f.unwrap().path())
            .collect()
    };
    let (trees, data) = (in_dir("data"), in_dir("files"));
    assert!(!trees.is_empty() && !data.is_empty());
    let name = |p: &std::path::PathBuf| p.file_name().unwrap().to_str().unwrap().to_string();
    let mut planted = Vec::new();
    for (pack, kind) in [(&trees[0], PackKind::Data), (&data[0], PackKind::Tree)] {
        let rel = pack_rel(&name(pack), kind);
        write(
            &env.path(&format!("repo/{rel}")),
            b"junk with a real pack's name",
        );
        planted.push(env.path(&format!("repo/{rel}")));
    }

    // Exit 0: no damage (a junk twin read for its pack would be).
    env.admin_ok("check", &["--read-data"]);
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&src, &under(&out, &src));

    // Everything 40 days old: past the 30-day horizon and the margin.
    backdate(in_dir("data").into_iter().chain(in_dir("files")), 40);
    let pruned = env.admin_ok("prune", &["-v"]);
    assert!(text(&pruned).contains("deleted 2 ("), "{}", text(&pruned));
    for p in &planted {
        assert!(!p.exists(), "{} kept", p.display());
    }
    assert!(
        trees.iter().chain(&data).all(|p| p.exists()),
        "a genuine pack was deleted"
    );
    env.admin_ok("check", &["--read-data"]);
    let again = env.path("again");
    env.restore("latest", &again);
    assert_same_tree(&src, &under(&again, &src));
}

/// A `config` whose repository id is a path is refused before the id
/// becomes one: `cache --clear` removes nothing outside the cache.
#[test]
fn a_repository_id_that_is_a_path_is_refused_before_anything_is_touched() {
    let env = Env::new();
    let victim = env.path("victim");
    write(&victim.join("chunks/keep"), b"keep\n");
    write(&victim.join("metadata/keep"), b"keep\n");
    let config = env.path("repo/config");
    let text_of = std::fs::read_to_string(&config).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text_of).unwrap();
    json["id"] = serde_json::Value::String(victim.display().to_string());
    std::fs::remove_file(&config).unwrap();
    write(&config, &serde_json::to_vec_pretty(&json).unwrap());
    for args in [
        &["cache", "--repo", "repo", "--clear"][..],
        &["cache", "--repo", "repo"],
    ] {
        let out = env.run(args);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.contains("repository id") && said.contains("config"),
            "{said}"
        );
    }
    assert!(victim.join("chunks/keep").exists() && victim.join("metadata/keep").exists());
    // Every reader refuses it the same way (this host's pin too).
    let out = env.admin("snapshots", &[]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
}

/// The same attack over S3, as it would come: radosgw, the README's bucket
/// policy, and the planted objects PUT with the writer's put-only
/// credential. Every admin command over S3 finishes in bounded memory and
/// names them.
#[test]
fn objects_planted_with_a_put_only_credential_on_s3_block_nothing() {
    use util::s3::{rt, server};
    let s3 = server();
    s3.create_bucket("planted", false);
    s3.allow_writer_put_only("planted");
    let env = Env::on_s3(s3, "planted", "");
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    let good = env.backup(&[&src], &[]);
    let good_id = good["id"].as_str().unwrap().to_string();

    let bomb = compressed_bomb(&env, 512 << 20);
    let oversized = random_bytes(9, (16 << 20) + 1);
    let named = |dir: &str, bytes: &[u8]| format!("{dir}/{}", ObjectId::of_bytes(bytes).to_hex());
    let planted = [
        (named("snapshots", &bomb), bomb.clone()),
        (named("index", &bomb), bomb.clone()),
        (named("snapshots", &oversized), oversized),
        ("snapshots/not-a-snapshot".to_string(), b"junk".to_vec()),
        ("data/zz/not-a-pack".to_string(), b"junk".to_vec()),
    ];
    let w = s3.writer_client();
    rt().block_on(async {
        for (key, bytes) in &planted {
            w.put_object()
                .bucket("planted")
                .key(key)
                .body(bytes.clone().into())
                .acl(aws_sdk_s3::types::ObjectCannedAcl::BucketOwnerFullControl)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        }
        // Without bucket-owner-full-control the writer would own the object
        // on radosgw and the admin could not even read it: the README's
        // policy refuses such a PUT.
        let err = w
            .put_object()
            .bucket("planted")
            .key("snapshots/unreadable")
            .body(b"junk".to_vec().into())
            .send()
            .await
            .unwrap_err();
        use aws_sdk_s3::error::ProvideErrorMetadata;
        assert_eq!(err.code(), Some("AccessDenied"), "{err:?}");
    });

    let run = |label: &str, cmd| within_bounds(&env, &format!("S3 {label}"), cmd, planted.len());
    let m = run("snapshots", env.admin_cmd("snapshots", &["--json"]));
    assert_eq!(m.code, 0, "{}", m.text);
    for (key, _) in planted.iter().filter(|(k, _)| k.starts_with("snapshots/")) {
        assert!(m.text.contains(key.as_str()), "{key} not named: {}", m.text);
    }
    assert!(m.text.contains(&good_id), "{}", m.text);
    let m = run("check", env.admin_cmd("check", &[]));
    assert_eq!(m.code, 1, "{}", m.text);
    for (key, _) in &planted {
        assert!(
            m.text.contains(key.as_str()),
            "{key} not listed: {}",
            m.text
        );
    }
    let m = run(
        "forget-prune",
        env.admin_cmd("forget", &["--keep-last", "9", "--prune"]),
    );
    assert!(matches!(m.code, 0 | 3), "{}", m.text);
    let out = env.path("restored");
    let m = run(
        "restore",
        env.admin_cmd("restore", &["latest", "--target", out.to_str().unwrap()]),
    );
    assert_eq!(m.code, 0, "{}", m.text);
    assert_same_tree(&src, &under(&out, &src));
}

/// Key changes (issue 33) are stored by admins only (the writers' policy
/// does not cover keys/), but a reader opens them before anything else:
/// one over its cap, or one whose signed literal inflates, is refused
/// before it is read or inflated, naming it, and stops the reader (a
/// change left out could be a revocation).
#[test]
fn key_changes_over_their_cap_or_that_inflate_are_refused_before_they_cost_anything() {
    use std::io::Write;
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a\n");
    env.backup(&[&src], &[]);
    let keys = env.path("repo/keys");
    std::fs::create_dir_all(&keys).unwrap();
    let change = keys.join("00000001");
    // 16 MiB and one byte (a sparse file: nothing held here).
    let f = std::fs::File::create(&change).unwrap();
    f.set_len((16 << 20) + 1).unwrap();
    drop(f);
    let m = within_bounds(&env, "keys over cap", env.admin_cmd("snapshots", &[]), 1);
    assert_eq!(m.code, 2, "{}", m.text);
    assert!(
        m.text.contains("keys/00000001") && m.text.contains("more than"),
        "{}",
        m.text
    );
    // Signed by the admin's own key, compressed: 256 MiB of zeros in a
    // few hundred KiB.
    let gnupg = env.gnupg_with_admin_key();
    let mut child = std::process::Command::new("gpg")
        .env("GNUPGHOME", &gnupg)
        .args([
            "--batch",
            "--quiet",
            "--yes",
            "--compress-algo",
            "zlib",
            "-z",
            "9",
        ])
        .arg("--output")
        .arg(&change)
        .arg("--sign")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        input.write_all(&zeros).unwrap();
    }
    drop(input);
    drop(zeros);
    assert!(child.wait().unwrap().success());
    assert!(std::fs::metadata(&change).unwrap().len() < 2 << 20);
    for cmd in ["snapshots", "check", "prune"] {
        let m = within_bounds(
            &env,
            &format!("keys bomb {cmd}"),
            env.admin_cmd(cmd, &[]),
            1,
        );
        assert_eq!(m.code, 2, "{cmd}: {}", m.text);
        assert!(
            m.text.contains("keys/00000001") && m.text.contains("Compressed Data"),
            "{cmd}: {}",
            m.text
        );
    }
    // Gone again, the repository reads as before.
    std::fs::remove_file(&change).unwrap();
    env.admin_ok("check", &[]);
}
