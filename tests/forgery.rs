//! Forged snapshots: someone with the recipients' public certificate and
//! write access to the repository, but not writer.key, stores snapshot
//! objects. Readers (coffer and scripts/recover.py) must never take them for
//! real ones: not in listings, not as `latest`, not in retention.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use sha2::Digest;
use util::*;

/// Stores `message` as a snapshot object named like a real one of `tag`.
fn store_snapshot(env: &Env, tag: &str, message: &[u8]) -> String {
    let id = hex::encode(sha2::Sha256::digest(message));
    let name = format!("{tag}.{id}");
    std::fs::write(env.path(&format!("repo/snapshots/{name}")), message).unwrap();
    name
}

#[test]
fn snapshots_stored_without_the_writer_key_are_rejected_everywhere() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"version one\n");
    let v1 = env.backup(&[&src], &[]);
    write(&src.join("a.txt"), b"version two\n");
    let v2 = env.backup(&[&src], &[]);
    let (id1, id2) = (v1["id"].as_str().unwrap(), v2["id"].as_str().unwrap());

    // The strongest forger: one who knows a real snapshot's plaintext (the
    // test decrypts v1 as the admin to learn it) and replays it as the
    // newest, to be what `latest` and retention pick.
    let gnupg = env.gnupg_home();
    let admin_key = env.path("admin.key").display().to_string();
    assert!(gpg(&gnupg, &["--import", &admin_key], b"").status.success());
    let v1_name = std::fs::read_dir(env.path("repo/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(id1))
        .unwrap();
    let tag = v1_name.split('.').next().unwrap().to_string();
    let v1_object = std::fs::read(env.path(&format!("repo/snapshots/{v1_name}"))).unwrap();
    let plain = gpg(&gnupg, &["--decrypt"], &v1_object).stdout;
    let mut forged: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    forged["time"] = "2099-01-01T00:00:00Z".into();
    forged["tags"] = serde_json::json!(["forged"]);
    let forged = serde_json::to_vec(&forged).unwrap();

    // 1: encrypted to the recipient, unsigned: anyone can make it.
    let cert = env.path("admin.cert").display().to_string();
    // Without compression (gpg compresses by default): a compressed message
    // is refused before its signature is looked at (tests/hostile.rs), and
    // this test is about the signature.
    let encrypt = [
        "--trust-model",
        "always",
        "--compress-algo",
        "none",
        "--recipient-file",
        &cert,
    ];
    let unsigned = gpg(&gnupg, &[&encrypt[..], &["--encrypt"]].concat(), &forged);
    assert!(unsigned.status.success(), "{}", text(&unsigned));
    let unsigned_name = store_snapshot(&env, &tag, &unsigned.stdout);
    // 2: signed too, by a key config does not list.
    let made = gpg(
        &gnupg,
        &[
            "--passphrase",
            "",
            "--quick-gen-key",
            "stranger",
            "ed25519",
            "sign",
        ],
        b"",
    );
    assert!(made.status.success(), "{}", text(&made));
    let signed = gpg(
        &gnupg,
        &[&encrypt[..], &["-u", "stranger", "--sign", "--encrypt"]].concat(),
        &forged,
    );
    assert!(signed.status.success(), "{}", text(&signed));
    let signed_name = store_snapshot(&env, &tag, &signed.stdout);
    let forged_names = [&unsigned_name, &signed_name];

    // Listing: the two real snapshots only, and a warning naming each forgery.
    let out = env.admin_ok("snapshots", &["--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id1, id2]);
    let said = String::from_utf8_lossy(&out.stderr);
    for name in forged_names {
        assert!(
            said.contains(&format!("forged object snapshots/{name}")),
            "{said}"
        );
    }

    // `latest` is the newest real snapshot.
    let target = env.path("restored");
    env.restore("latest", &target);
    assert_eq!(
        std::fs::read(under(&target, &src).join("a.txt")).unwrap(),
        b"version two\n"
    );
    // A forged snapshot cannot be picked by its id either.
    let by_id = env.admin(
        "restore",
        &[
            &unsigned_name[17..25],
            "--target",
            &env.path("r2").display().to_string(),
        ],
    );
    assert!(!by_id.status.success(), "{}", text(&by_id));

    // check: a problem per forgery, and it says which.
    let out = env.admin("check", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("2 problems"), "{said}");
    assert!(
        said.contains("not signed") || said.contains("no valid signature"),
        "{said}"
    );

    // Retention: keep-last 1 keeps v2 (not the forgery dated 2099) and
    // prune, undisturbed by the forgeries, keeps v2 whole.
    env.admin_ok("forget", &["--keep-last", "1"]);
    env.admin_ok("prune", &[]);
    let after: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(after, [id2]);
    let target = env.path("after-prune");
    env.restore(id2, &target);
    assert_eq!(
        std::fs::read(under(&target, &src).join("a.txt")).unwrap(),
        b"version two\n"
    );

    // recover.py: the same verdicts with gpg alone.
    let out = recover_py(&env, &gnupg, &["--list"]);
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(listing.starts_with(&id2[..8]), "{listing}");
    let said = String::from_utf8_lossy(&out.stderr);
    for name in forged_names {
        assert!(said.contains(&format!("snapshots/{name}")), "{said}");
    }
}

/// A config replaced after this host first used the repository (by
/// someone who can write to the store: it lists the keys that make
/// snapshots genuine) stops every reader; init pinned it already.
#[test]
fn a_replaced_config_is_refused_by_a_host_that_used_the_repository() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"genuine\n");
    env.backup(&[&src], &[]);
    let known = env.path("xdg-config/coffer/known_repositories");
    let pins = std::fs::read_to_string(&known).unwrap();
    assert_eq!(pins.lines().count(), 1, "init pins: {pins}");
    env.admin_ok("snapshots", &[]);

    // Another repository's config, keys and all, put in its place.
    let other = env.init_other_repo("other");
    std::fs::copy(other.join("config"), env.path("repo/config")).unwrap();
    for (cmd, args) in [
        ("snapshots", vec![]),
        ("check", vec![]),
        ("restore", vec!["latest", "--target", "out"]),
    ] {
        let out = env.admin(cmd, &args);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {said}");
        assert!(said.contains("not the one this host saw first"), "{said}");
        assert!(said.contains(known.to_str().unwrap()), "{said}");
    }
    assert!(!env.path("out").exists());

    // A host that never used it has nothing to compare with: it pins what
    // it finds, and then only the forgery check stands between.
    let out = env
        .admin_cmd("snapshots", &["--json"])
        .env("COFFER_KNOWN_REPOSITORIES", env.path("fresh-host"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    assert!(text(&out).contains("forged"), "{}", text(&out));

    // Re-created at the same place by this host's own init: the pin
    // follows, and the new repository opens.
    std::fs::remove_dir_all(env.path("repo")).unwrap();
    let made = env.init_repo("writer2.key");
    assert!(made.status.success(), "{}", text(&made));
    env.admin_ok("snapshots", &[]);
    let pins = std::fs::read_to_string(&known).unwrap();
    assert_eq!(pins.lines().count(), 2, "repo and other: {pins}");
}
