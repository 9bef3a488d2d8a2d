//! Keys over a repository's life (issue 33): one writer key per host,
//! revoked without touching the others; recipients added and removed;
//! every change an admin's signed object under keys/, which readers
//! (coffer and scripts/recover.py) apply in order and refuse when it does
//! not hold.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use sha2::Digest;
use std::path::{Path, PathBuf};
use util::s3::server;
use util::*;

/// `backup --json` of `paths` with writer key `key`, as host `host`.
fn backup_as(env: &Env, key: &str, host: &str, paths: &[&Path]) -> serde_json::Value {
    let mut args = vec![
        "backup",
        "--repo",
        &env.repo,
        "--writer-key",
        key,
        "--host",
        host,
        "--json",
    ];
    let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let out = env
        .cmd(&args)
        .envs(env.writer_vars.iter().map(|(k, v)| (k, v)))
        .env("COFFER_STATE_DIR", env.path(&format!("state-{host}")))
        .output()
        .unwrap();
    assert!(out.status.success(), "backup as {key}: {}", text(&out));
    last_json_line(&out.stdout)
}

/// `coffer GROUP SUB --repo REPO --key admin.key ARGS` (`writer add`...).
fn admin_sub(env: &Env, group: &str, sub: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec![group, sub, "--repo", &env.repo, "--key", "admin.key"];
    all.extend_from_slice(args);
    env.run(&all)
}

/// [`admin_sub`], asserting exit 0.
fn admin_sub_ok(env: &Env, group: &str, sub: &str, args: &[&str]) -> std::process::Output {
    let out = admin_sub(env, group, sub, args);
    assert!(
        out.status.success(),
        "{group} {sub} {args:?}: {}",
        text(&out)
    );
    out
}

/// The ids of the snapshots `snapshots --json` lists, and its stderr. The
/// opened-snapshot cache is the first admin's (both admins share a home
/// here; a cache entry opens for anyone with the chunk-id key).
fn listed(env: &Env, key: &str) -> (Vec<String>, String) {
    let mut args = vec!["snapshots", "--repo", &env.repo, "--key", key, "--json"];
    if key != "admin.key" {
        args.push("--no-cache");
    }
    let out = env.run(&args);
    assert!(out.status.success(), "snapshots: {}", text(&out));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ids = list
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    (ids, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn id(snap: &serde_json::Value) -> String {
    snap["id"].as_str().unwrap().to_string()
}

/// The object name of the snapshot whose id is `id`.
fn snapshot_object(env: &Env, id: &str) -> PathBuf {
    std::fs::read_dir(env.path("repo/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(id))
        .unwrap()
}

/// What a thief of `key`'s host can store: a snapshot signed with the
/// writer's key, claiming `time`, encrypted to the recipients. Made with
/// gpg from a real snapshot of that host (`model`), as the thief could.
fn stolen_key_snapshot(env: &Env, key: &str, model: &str, time: &str) -> String {
    let gnupg = env.gnupg_with_admin_key();
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path(key)).unwrap()).unwrap();
    let signing = file["signing_key"].as_str().unwrap();
    assert!(gpg(&gnupg, &["--import"], signing.as_bytes())
        .status
        .success());
    let object = snapshot_object(env, model);
    let plain = gpg(&gnupg, &["--decrypt"], &std::fs::read(&object).unwrap()).stdout;
    let mut forged: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    forged["time"] = time.into();
    forged["tags"] = serde_json::json!(["stolen"]);
    let signer = gpg(
        &gnupg,
        &["--with-colons", "--list-keys", "coffer writer"],
        b"",
    );
    let signer = String::from_utf8_lossy(&signer.stdout)
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .unwrap()
        .split(':')
        .nth(9)
        .unwrap()
        .to_string();
    let cert = env.path("admin.cert").display().to_string();
    let sealed = gpg(
        &gnupg,
        &[
            "--trust-model",
            "always",
            "--compress-algo",
            "none",
            "--local-user",
            &signer,
            "--recipient-file",
            &cert,
            "--sign",
            "--encrypt",
        ],
        &serde_json::to_vec(&forged).unwrap(),
    );
    assert!(sealed.status.success(), "{}", text(&sealed));
    std::fs::remove_dir_all(&gnupg).unwrap();
    let tag = object
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let id = hex::encode(sha2::Sha256::digest(&sealed.stdout));
    std::fs::write(
        env.path(&format!("repo/snapshots/{tag}.{id}")),
        &sealed.stdout,
    )
    .unwrap();
    id
}

#[test]
fn a_revoked_host_is_left_out_by_every_reader_and_its_earlier_snapshots_stay() {
    let env = Env::new();
    let (src1, src2) = (env.path("src1"), env.path("src2"));
    write(&src1.join("one.txt"), b"host one\n");
    write(&src2.join("two.txt"), b"host two\n");
    write(&src2.join("big.bin"), &random_bytes(2, 3 << 20));
    admin_sub_ok(
        &env,
        "writer",
        "add",
        &["host2", "--writer-key-out", "host2.key"],
    );
    let one = backup_as(&env, "writer.key", "host1", &[&src1]);
    let two = backup_as(&env, "host2.key", "host2", &[&src2]);
    let out = admin_sub_ok(&env, "writer", "list", &["--json"]);
    let writers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(writers.len(), 2, "{writers:?}");
    assert_eq!(writers[0]["name"], "default");
    assert_eq!(writers[1]["name"], "host2");
    assert_eq!(writers[1]["snapshots"], 1);
    let snaps = env.snapshots();
    assert_eq!(snaps[1]["writer"], "host2", "{snaps:?}");

    let out = admin_sub_ok(&env, "writer", "revoke", &["host2"]);
    assert!(
        text(&out).contains("1 of its snapshots stay"),
        "{}",
        text(&out)
    );
    // The host does not know: it backs up again, and a thief with its key
    // stores one that claims a time long before the revocation.
    let src3 = env.path("src3");
    write(&src3.join("three.txt"), b"after the revocation\n");
    let after = backup_as(&env, "host2.key", "host2", &[&src3]);
    let backdated = stolen_key_snapshot(&env, "host2.key", &id(&two), "2001-01-01T00:00:00Z");

    let (ids, said) = listed(&env, "admin.key");
    assert_eq!(ids.len(), 2, "{ids:?}\n{said}");
    assert!(
        ids.contains(&id(&one)) && ids.contains(&id(&two)),
        "{ids:?}"
    );
    assert_eq!(
        said.matches("signed by writer \"host2\"").count(),
        2,
        "{said}"
    );
    // The revoked host's earlier snapshot and the other host's restore.
    for (snap, src) in [(&one, &src1), (&two, &src2)] {
        let out = env.path(&format!("out-{}", &id(snap)[..8]));
        env.restore(&id(snap)[..8], &out);
        assert_same_tree(src, &under(&out, src));
    }
    // Neither left-out snapshot can be named.
    for left_out in [id(&after), backdated.clone()] {
        let out = env.admin("restore", &[&left_out[..8], "--target", "nope"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    }
    // check names both kinds.
    let out = env.admin("check", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "snapshot {}: by writer host2, stored before keys/00000002 revoked it: kept",
            &id(&two)[..8]
        )),
        "{said}"
    );
    for left_out in [&id(&after), &backdated] {
        assert!(
            said.contains(&format!("snapshot {}: forged object", &left_out[..8])),
            "{said}"
        );
    }
    // forget and prune work on, and keep what readers take.
    env.admin_ok("forget", &["--keep-last", "5", "--prune"]);
    let (ids, _) = listed(&env, "admin.key");
    assert_eq!(ids.len(), 2);
    let out = env.path("after-prune");
    env.restore(&id(&two)[..8], &out);
    assert_same_tree(&src2, &under(&out, &src2));
    // The mount shows the two.
    let m = util::mount::Mounted::new(&env, &[]);
    assert_eq!(m.snapshot_names().len(), 2, "{:?}", m.snapshot_names());
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
    // recover.py applies the chain too.
    let gnupg = env.gnupg_with_admin_key();
    let out = recover_py(&env, &gnupg, &["--list"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert_eq!(
        said.lines().filter(|l| l.contains("  host")).count(),
        2,
        "{said}"
    );
    assert_eq!(
        said.matches("signed by writer 'host2' after keys/00000002")
            .count(),
        2,
        "{said}"
    );
    let target = env.path("recovered");
    let out = recover_py(
        &env,
        &gnupg,
        &[
            "--snapshot",
            &id(&two)[..8],
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_same_tree(&src2, &under(&target, &src2));
    // A revoked name is never reused, nor revoked twice.
    let out = admin_sub(
        &env,
        "writer",
        "add",
        &["host2", "--writer-key-out", "again.key"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!env.path("again.key").exists());
    let out = admin_sub(&env, "writer", "revoke", &["host2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// Signs `json` with the admin's key (gpg, not coffer), as an admin's
/// change would be: what a replayed or forked change is made of.
fn admin_signed(env: &Env, gnupg: &Path, json: &serde_json::Value) -> Vec<u8> {
    let _ = env;
    let out = gpg(
        gnupg,
        &["--compress-algo", "none", "--sign"],
        &serde_json::to_vec(json).unwrap(),
    );
    assert!(out.status.success(), "{}", text(&out));
    out.stdout
}

#[test]
fn forged_replayed_forked_and_removed_key_changes_stop_every_reader() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a\n");
    admin_sub_ok(
        &env,
        "writer",
        "add",
        &["host2", "--writer-key-out", "host2.key"],
    );
    env.backup(&[&src], &[]);
    admin_sub_ok(&env, "writer", "revoke", &["host2"]);
    let keys = env.path("repo/keys");
    let k1 = std::fs::read(keys.join("00000001")).unwrap();
    let k2 = std::fs::read(keys.join("00000002")).unwrap();
    let change: serde_json::Value = {
        let gnupg = env.gnupg_with_admin_key();
        let plain = gpg(&gnupg, &["--decrypt"], &k2).stdout;
        std::fs::remove_dir_all(&gnupg).unwrap();
        serde_json::from_slice(&plain).unwrap()
    };
    assert_eq!(change["seq"], 2);
    assert_eq!(change["change"]["type"], "writer-revoke");
    let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));

    // Made with gpg: one by a stranger's key (its certificate inside, as an
    // admin's would be), one by the admin's key but forked from change 1,
    // and change 1 replayed as change 3.
    let stranger = Env::bare();
    stranger.generate_keys();
    let stranger_gnupg = stranger.gnupg_with_admin_key();
    let mut by_stranger = change.clone();
    by_stranger["seq"] = 3.into();
    by_stranger["previous"] = sha(&k2).into();
    by_stranger["signer_cert"] =
        String::from_utf8(std::fs::read(stranger.path("admin.cert")).unwrap())
            .unwrap()
            .into();
    by_stranger["change"] = serde_json::json!({"type": "writer-add", "name": "evil",
        "cert": change["signer_cert"]});
    let forged = admin_signed(&stranger, &stranger_gnupg, &by_stranger);
    // The admin's certificate claimed, the stranger's signature.
    let mut claimed = by_stranger.clone();
    claimed["signer_cert"] = change["signer_cert"].clone();
    let mislabelled = admin_signed(&stranger, &stranger_gnupg, &claimed);
    let gnupg = env.gnupg_with_admin_key();
    let mut fork = change.clone();
    fork["seq"] = 3.into();
    fork["previous"] = sha(&k1).into();
    let forked = admin_signed(&env, &gnupg, &fork);
    // And a well-made one, to show the gpg-signed shape itself is taken.
    let mut fine = change.clone();
    fine["seq"] = 3.into();
    fine["previous"] = sha(&k2).into();
    fine["change"] = serde_json::json!({"type": "recipient-remove",
        "fingerprint": "00", "chunk_id_key_sealed": ""});
    let cases: Vec<(&str, PathBuf, Option<Vec<u8>>, &str)> = vec![
        (
            "a stranger's change",
            keys.join("00000003"),
            Some(forged),
            "not an admin",
        ),
        (
            "the admin's certificate, a stranger's signature",
            keys.join("00000003"),
            Some(mislabelled),
            "no good signature",
        ),
        (
            "a change forked from change 1",
            keys.join("00000003"),
            Some(forked),
            "does not follow",
        ),
        (
            "change 1 replayed as 3",
            keys.join("00000003"),
            Some(k1.clone()),
            "stored as change 3",
        ),
        (
            "change 1 removed",
            keys.join("00000001"),
            None,
            "keys/00000001",
        ),
        (
            "the revocation removed",
            keys.join("00000002"),
            None,
            "this host saw 2",
        ),
        (
            "a change that does not apply",
            keys.join("00000003"),
            Some(admin_signed(&env, &gnupg, &fine)),
            "is not a recipient",
        ),
    ];
    for (case, path, bytes, why) in cases {
        match &bytes {
            Some(b) => std::fs::write(&path, b).unwrap(),
            None => std::fs::remove_file(&path).unwrap(),
        }
        for (cmd, args) in [
            ("snapshots", vec![]),
            ("check", vec![]),
            ("restore", vec!["latest", "--target", "out"]),
            ("prune", vec![]),
        ] {
            let out = env.admin(cmd, &args);
            assert_eq!(out.status.code(), Some(2), "{case}: {cmd}: {}", text(&out));
            assert!(text(&out).contains(why), "{case}: {cmd}: {}", text(&out));
        }
        if bytes.is_some() {
            // recover.py stops too (the removals leave a chain it cannot
            // tell from an old one without coffer's pin).
            let out = recover_py(&env, &gnupg, &["--list"]);
            assert!(!out.status.success(), "{case}: recover.py: {}", text(&out));
        }
        // Put back as it was: readers work again.
        match bytes {
            Some(_) => std::fs::remove_file(&path).unwrap(),
            None => {
                std::fs::write(&path, if path.ends_with("00000001") { &k1 } else { &k2 }).unwrap()
            }
        }
        env.admin_ok("snapshots", &[]);
    }
    // Writers' own objects never reach keys/: a name that is not a change
    // is left alone with a warning.
    std::fs::write(keys.join("notes.txt"), b"junk").unwrap();
    let out = env.admin_ok("snapshots", &[]);
    assert!(
        text(&out).contains("keys/notes.txt: not a key change's name"),
        "{}",
        text(&out)
    );
}

/// The keyid (16 hex digits) of the encryption subkey of `cert`.
fn encryption_keyid(gnupg: &Path, cert: &Path) -> String {
    let out = gpg(
        gnupg,
        &["--with-colons", "--import-options", "show-only", "--import"],
        &std::fs::read(cert).unwrap(),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("sub:") && l.split(':').nth(11).is_some_and(|c| c.contains('e')))
        .unwrap()
        .split(':')
        .nth(4)
        .unwrap()
        .to_string()
}

/// The keyids every PKESK packet in `file` is encrypted to.
fn pkesk_keyids(gnupg: &Path, file: &Path) -> Vec<String> {
    let out = gpg(gnupg, &["--list-packets"], &std::fs::read(file).unwrap());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(":pubkey enc packet:"))
        .filter_map(|l| l.split("keyid ").nth(1).map(|k| k.trim().to_uppercase()))
        .collect()
}

fn all_packs(env: &Env) -> Vec<PathBuf> {
    let mut packs = env.packs();
    packs.sort();
    packs
}

#[test]
fn a_second_admin_reads_new_backups_and_a_removed_one_cannot_open_what_is_written_after() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"before the second admin\n");
    let first = backup_as(&env, "writer.key", "host1", &[&src]);
    env.ok(&[
        "key",
        "generate",
        "--secret-out",
        "admin2.key",
        "--cert-out",
        "admin2.cert",
        "--name",
        "admin two",
    ]);
    admin_sub_ok(&env, "recipient", "add", &["admin2.cert"]);
    let out = admin_sub_ok(&env, "recipient", "list", &["--json"]);
    let recipients: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(recipients.len(), 2);
    assert_eq!(recipients[1]["user_id"], "admin two");
    let admin2 = recipients[1]["fingerprint"].as_str().unwrap().to_string();
    admin_sub_ok(
        &env,
        "writer",
        "reissue",
        &["default", "--writer-key-out", "writer2.key"],
    );
    write(&src.join("b.txt"), b"after the second admin joined\n");
    let second = backup_as(&env, "writer2.key", "host1", &[&src]);
    // The host's state was kept for other recipients: it starts over, so
    // that the new admin can read every file of the new snapshot.
    assert_eq!(second["stats"]["files_read"], 2, "{second}");

    // The second admin reads the new backup, with coffer and with gpg.
    let (ids, said) = listed(&env, "admin2.key");
    assert_eq!(ids, vec![id(&second)], "{said}");
    // The snapshot from before it joined is not damage: said once, so.
    assert!(
        said.contains("1 snapshots are not encrypted to this key"),
        "{said}"
    );
    assert!(!said.contains("damaged"), "{said}");
    let out = env.path("by-admin2");
    env.ok(&[
        "restore",
        "--repo",
        "repo",
        "--key",
        "admin2.key",
        &id(&second)[..8],
        "--target",
        out.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &under(&out, &src));
    let gnupg2 = env.path("gnupg2");
    std::fs::create_dir(&gnupg2).unwrap();
    std::fs::set_permissions(&gnupg2, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    assert!(gpg(
        &gnupg2,
        &["--import", env.path("admin2.key").to_str().unwrap()],
        b""
    )
    .status
    .success());
    let object = std::fs::read(snapshot_object(&env, &id(&second))).unwrap();
    assert_eq!(
        gpg(&gnupg2, &["--skip-verify", "--decrypt"], &object)
            .status
            .code(),
        Some(0)
    );
    let old = std::fs::read(snapshot_object(&env, &id(&first))).unwrap();
    assert_ne!(
        gpg(&gnupg2, &["--skip-verify", "--decrypt"], &old)
            .status
            .code(),
        Some(0),
        "written before it joined"
    );
    let keyid2 = encryption_keyid(&gnupg2, &env.path("admin2.cert"));

    // Removed: key files issued after it no longer encrypt to it.
    let packs_before = all_packs(&env);
    admin_sub_ok(&env, "recipient", "remove", &[&admin2]);
    admin_sub_ok(
        &env,
        "writer",
        "reissue",
        &["default", "--writer-key-out", "writer3.key"],
    );
    write(&src.join("c.txt"), b"after the second admin left\n");
    let third = backup_as(&env, "writer3.key", "host1", &[&src]);
    let object = std::fs::read(snapshot_object(&env, &id(&third))).unwrap();
    assert_ne!(
        gpg(&gnupg2, &["--skip-verify", "--decrypt"], &object)
            .status
            .code(),
        Some(0),
        "written after it left"
    );
    let new_packs: Vec<PathBuf> = all_packs(&env)
        .into_iter()
        .filter(|p| !packs_before.contains(p))
        .collect();
    assert!(!new_packs.is_empty());
    for pack in &new_packs {
        let to = pkesk_keyids(&gnupg2, pack);
        assert!(!to.is_empty(), "{}", pack.display());
        assert!(
            !to.contains(&keyid2),
            "{} is encrypted to the removed admin",
            pack.display()
        );
    }
    // Every file of the new snapshot is in those packs (the writer started
    // its dedup state over for the new recipients): restore with the first
    // admin's key, byte-identical.
    let out = env.path("third");
    env.restore(&id(&third)[..8], &out);
    assert_same_tree(&src, &under(&out, &src));
    assert_eq!(third["stats"]["files_read"], 3, "{third}");
    // The removed admin still opens the repository and what it could read.
    let (ids, _) = listed(&env, "admin2.key");
    assert_eq!(ids, vec![id(&second)]);
    // The last recipient cannot be removed.
    let out = env.admin(
        "recipient",
        &["remove", recipients[0]["fingerprint"].as_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn a_repository_from_before_key_changes_takes_them_and_its_old_snapshots_restore_byte_identical() {
    let env = Env::from_fixture("pre-xattrs");
    let (old, _) = listed(&env, "admin.key");
    assert_eq!(old.len(), 1);
    let before = env.path("before");
    env.restore(&old[0][..8], &before);
    // Its admin key predates key changes: no signing key, and the error
    // says how to add one.
    let out = admin_sub(
        &env,
        "writer",
        "add",
        &["host2", "--writer-key-out", "host2.key"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("coffer key add-signing"),
        "{}",
        text(&out)
    );
    env.ok(&[
        "key",
        "add-signing",
        "--key",
        "admin.key",
        "--secret-out",
        "admin-signing.key",
    ]);
    std::fs::rename(env.path("admin-signing.key"), env.path("admin.key")).unwrap();
    admin_sub_ok(
        &env,
        "writer",
        "add",
        &["host2", "--writer-key-out", "host2.key"],
    );
    let src = env.path("src");
    write(&src.join("new.txt"), b"written by a writer added later\n");
    let new = backup_as(&env, "host2.key", "host2", &[&src]);
    // The config's writer (named `default`) revoked: its snapshot stays.
    admin_sub_ok(&env, "writer", "revoke", &["default"]);
    let (ids, said) = listed(&env, "admin.key");
    assert_eq!(ids.len(), 2, "{said}");
    assert!(ids.contains(&old[0]) && ids.contains(&id(&new)));
    env.admin_ok("check", &["--read-data"]);
    // Byte for byte what it restored before the changes (tests/fidelity.rs
    // checks that against the source, file by file).
    let after = env.path("after");
    env.restore(&old[0][..8], &after);
    assert_same_tree(&before, &after);
    let m = util::mount::Mounted::new(&env, &[]);
    assert_eq!(m.snapshot_names().len(), 2);
    let mounted = m.path("snapshots/latest");
    assert!(mounted.is_dir());
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
    let out = env.path("new-out");
    env.restore(&id(&new)[..8], &out);
    assert_same_tree(&src, &under(&out, &src));
}

#[test]
fn two_hosts_on_s3_with_put_only_credentials_one_revoked_with_object_lock_on_every_change() {
    let s3 = server();
    s3.create_bucket("keys-life", true);
    s3.allow_writer_put_only("keys-life");
    let env = Env::on_s3(s3, "keys-life", "");
    let lock = [
        "--object-lock-days",
        "1",
        "--object-lock-mode",
        "governance",
    ];
    let mut args = vec!["host2", "--writer-key-out", "host2.key"];
    args.extend_from_slice(&lock);
    admin_sub_ok(&env, "writer", "add", &args);
    let (src1, src2) = (env.path("src1"), env.path("src2"));
    write(&src1.join("one.txt"), b"one\n");
    write(&src2.join("two.txt"), b"two\n");
    let one = backup_as(&env, "writer.key", "host1", &[&src1]);
    let two = backup_as(&env, "host2.key", "host2", &[&src2]);
    let mut args = vec!["host2"];
    args.extend_from_slice(&lock);
    admin_sub_ok(&env, "writer", "revoke", &args);
    let src3 = env.path("src3");
    write(&src3.join("three.txt"), b"after\n");
    let after = backup_as(&env, "host2.key", "host2", &[&src3]);
    let (ids, said) = listed(&env, "admin.key");
    assert!(ids.contains(&id(&one)) && ids.contains(&id(&two)), "{said}");
    assert!(!ids.contains(&id(&after)), "{said}");
    assert!(said.contains("signed by writer \"host2\""), "{said}");
    let out = env.path("two");
    env.restore(&id(&two)[..8], &out);
    assert_same_tree(&src2, &under(&out, &src2));
    // Each change carries the retention asked for.
    let client = s3.admin_client();
    for seq in ["00000001", "00000002"] {
        let got = util::s3::rt()
            .block_on(
                client
                    .get_object_retention()
                    .bucket("keys-life")
                    .key(format!("keys/{seq}"))
                    .send(),
            )
            .unwrap();
        assert!(
            got.retention()
                .and_then(|r| r.retain_until_date())
                .is_some(),
            "keys/{seq}"
        );
    }
    // The writers' credentials cannot store a change.
    let put = util::s3::rt().block_on(
        s3.writer_client()
            .put_object()
            .bucket("keys-life")
            .key("keys/00000003")
            .body(b"x".to_vec().into())
            .acl(aws_sdk_s3::types::ObjectCannedAcl::BucketOwnerFullControl)
            .send(),
    );
    assert!(put.is_err(), "a writer stored under keys/");
}

#[test]
fn a_revocation_can_keep_only_what_the_store_received_before_the_key_was_stolen() {
    let env = Env::new();
    admin_sub_ok(
        &env,
        "writer",
        "add",
        &["host2", "--writer-key-out", "host2.key"],
    );
    let src = env.path("src");
    write(&src.join("a.txt"), b"before the theft\n");
    let early = backup_as(&env, "host2.key", "host2", &[&src]);
    write(&src.join("a.txt"), b"by the thief, before anyone knew\n");
    let planted = backup_as(&env, "host2.key", "host2", &[&src]);
    // The store received the first a day ago (a local store's time is the
    // file's mtime; S3's, LastModified).
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    let object = snapshot_object(&env, &id(&early));
    std::fs::File::options()
        .write(true)
        .open(&object)
        .unwrap()
        .set_modified(day_ago)
        .unwrap();
    let cutoff = run_tool("date", &["-u", "-d", "1 hour ago", "+%Y-%m-%dT%H:%M:%SZ"]);
    let cutoff = cutoff.trim();
    let out = admin_sub_ok(
        &env,
        "writer",
        "revoke",
        &["host2", "--keep-stored-before", cutoff],
    );
    assert!(
        text(&out).contains("1 of its snapshots stay"),
        "{}",
        text(&out)
    );
    let (ids, said) = listed(&env, "admin.key");
    assert_eq!(ids, vec![id(&early)], "{said}");
    assert!(said.contains(&id(&planted)), "{said}");
    let out = admin_sub(
        &env,
        "writer",
        "revoke",
        &["default", "--keep-stored-before", "yesterday"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn a_copy_carries_the_key_changes_before_any_snapshot_and_its_readers_honour_them() {
    let env = Env::new();
    admin_sub_ok(
        &env,
        "writer",
        "add",
        &["host2", "--writer-key-out", "host2.key"],
    );
    let src = env.path("src");
    write(&src.join("a.txt"), b"kept\n");
    let kept = backup_as(&env, "host2.key", "host2", &[&src]);
    admin_sub_ok(&env, "writer", "revoke", &["host2"]);
    let other = env.path("other");
    write(&other.join("b.txt"), b"left out\n");
    let after = backup_as(&env, "host2.key", "host2", &[&other]);
    let dest = env.path("copy");
    let out = env.run(&["copy", "--from", "repo", "--to", dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    for seq in ["00000001", "00000002"] {
        assert_eq!(
            std::fs::read(dest.join("keys").join(seq)).unwrap(),
            std::fs::read(env.path("repo/keys").join(seq)).unwrap()
        );
    }
    // Read on a host that never saw the original: the copy's own chain.
    let fresh = Env::bare();
    std::fs::copy(env.path("admin.key"), fresh.path("admin.key")).unwrap();
    std::fs::set_permissions(
        fresh.path("admin.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = fresh.run(&[
        "snapshots",
        "--repo",
        dest.to_str().unwrap(),
        "--key",
        "admin.key",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = list.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![id(&kept).as_str()]);
    assert!(text(&out).contains(&id(&after)), "{}", text(&out));
    // A broken chain is never copied on.
    std::fs::write(env.path("repo/keys/00000003"), b"not a change").unwrap();
    let again = env.path("copy-2");
    let out = env.run(&["copy", "--from", "repo", "--to", again.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("keys/00000003"), "{}", text(&out));
}

#[test]
fn a_mount_running_through_a_revocation_leaves_the_writer_out_from_then_on() {
    let env = Env::new();
    admin_sub_ok(
        &env,
        "writer",
        "add",
        &["host2", "--writer-key-out", "host2.key"],
    );
    let (src1, src2) = (env.path("src1"), env.path("src2"));
    write(&src1.join("one.txt"), b"one\n");
    write(&src2.join("two.txt"), b"two\n");
    backup_as(&env, "writer.key", "host1", &[&src1]);
    backup_as(&env, "host2.key", "host2", &[&src2]);
    let m = util::mount::Mounted::new(&env, &[]);
    assert_eq!(m.snapshot_names().len(), 2);
    admin_sub_ok(&env, "writer", "revoke", &["host2"]);
    write(&src2.join("two.txt"), b"two, after\n");
    backup_as(&env, "host2.key", "host2", &[&src2]);
    // host1's next snapshot shows the mount has listed again since.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write(&src1.join("one.txt"), b"one, after\n");
    backup_as(&env, "writer.key", "host1", &[&src1]);
    util::mount::wait_until(std::time::Duration::from_secs(20), || {
        m.snapshot_names().len() >= 3
    });
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let names = m.snapshot_names();
    assert_eq!(names.len(), 3, "{names:?}");
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("signed by writer \"host2\""), "{log}");
}
