//! `coffer copy`, through the real binary and a real S3 server (radosgw):
//! its two users stand for two AWS accounts, the admin's (who reads) and a
//! put-only one (who may only PutObject on the destination bucket). A copy
//! goes local -> S3 and S3 -> S3, is read back (restore, mount, `check
//! --read-data`) identical, a re-run stores nothing, and a copy killed at
//! random moments leaves only whole snapshots and completes when re-run.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use std::sync::atomic::Ordering;
use std::time::Duration;
use util::mount::Mounted;
use util::proxy::Proxy;
use util::s3::{put_only_policy, server, with_profiles, S3Server};
use util::*;

/// A bucket the put-only user may only PutObject into (config included).
fn put_only_bucket(s3: &S3Server, bucket: &str) {
    s3.create_bucket(bucket, false);
    s3.set_policy(bucket, &put_only_policy(bucket, &s3.writer_user, &["*"]));
}

/// `coffer copy --json ARGS`, asserting success; its report.
fn copy(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["copy", "--json"];
    all.extend_from_slice(args);
    let out = env.ok(&all);
    last_json_line(&out.stdout)["report"].clone()
}

/// Objects and bytes of the local repository `repo/` (not its `tmp/`).
fn local_objects(env: &Env) -> (u64, u64) {
    env.repo_files()
        .iter()
        .filter(|(p, _)| !p.starts_with(env.path("repo/tmp")))
        .fold((0, 0), |(n, b), (_, bytes)| (n + 1, b + bytes.len() as u64))
}

/// Every request made with the put-only user's access key was a PUT.
fn put_only_user_only_put(proxy: &Proxy, s3: &S3Server) {
    let key = format!("Credential={}/", s3.writer.access_key);
    let heads = proxy.heads.lock().unwrap();
    let by_user: Vec<&String> = heads.iter().filter(|h| h.contains(&key)).collect();
    assert!(!by_user.is_empty(), "the put-only user made no request");
    for h in by_user {
        assert!(h.starts_with("PUT "), "{}", h.lines().next().unwrap_or(""));
    }
}

#[test]
fn copies_local_to_s3_and_s3_to_s3_with_put_only_credentials_and_reruns_store_nothing() {
    let s3 = server();
    let proxy = Proxy::start(&s3.endpoint, 0);
    let mut env = Env::new();
    with_profiles(&mut env, s3, &proxy.endpoint);
    let src = env.path("src");
    make_tree(&src);
    let v1 = env.path("v1");
    cp_a(&src, &v1);
    let first = env.backup(&[&src], &[]);
    change_tree(&src);
    env.backup(&[&src], &[]);
    // A pack over the spool threshold (40 MiB; made-up bytes, which copy
    // cannot tell from a pack's): carried through a file 8 MiB at a time
    // and sent from it, never held whole.
    let big = random_bytes(77, 40 << 20);
    let big_id = "b1".repeat(32);
    let big_rel = format!("data/{}/{big_id}", &big_id[..2]);
    write(&env.path(&format!("repo/{big_rel}")), &big);

    put_only_bucket(s3, "copy-a");
    let to_a = "s3://copy-a/r";
    let report = copy(
        &env,
        &["--from", "repo", "--to", to_a, "--to-profile", "putonly"],
    );
    let (objects, bytes) = local_objects(&env);
    assert_eq!(report["copied"]["count"], objects, "{report}");
    assert_eq!(report["copied"]["bytes"], bytes, "{report}");
    assert_eq!(report["snapshots"], 2);
    put_only_user_only_put(&proxy, s3);

    // Nothing new: no PUT at all, from the journal alone.
    let puts = proxy.puts("").len();
    let report = copy(
        &env,
        &["--from", "repo", "--to", to_a, "--to-profile", "putonly"],
    );
    assert_eq!(report["copied"]["bytes"], 0, "{report}");
    assert_eq!(report["known"]["count"], objects, "{report}");
    assert_eq!(proxy.puts("").len(), puts);
    // Without the journal: one PUT per object, each answered "exists".
    std::fs::remove_dir_all(env.path("cache/coffer/copies")).unwrap();
    let report = copy(
        &env,
        &["--from", "repo", "--to", to_a, "--to-profile", "putonly"],
    );
    assert_eq!(report["copied"]["count"], 0, "{report}");
    assert_eq!(report["present"]["count"], objects, "{report}");

    // A third backup: only its objects go.
    let before: Vec<_> = env.repo_files().into_iter().map(|(p, _)| p).collect();
    write(&src.join("third.bin"), &random_bytes(33, 3_000_000));
    env.backup(&[&src], &[]);
    let new: u64 = env
        .repo_files()
        .iter()
        .filter(|(p, _)| !before.contains(p) && !p.starts_with(env.path("repo/tmp")))
        .map(|(_, b)| b.len() as u64)
        .sum();
    let report = copy(
        &env,
        &[
            "--from",
            "repo",
            "--to",
            to_a,
            "-v",
            "--to-profile",
            "putonly",
        ],
    );
    assert_eq!(report["copied"]["bytes"], new, "{report}");
    assert_eq!(report["snapshots"], 3);

    // S3 -> S3, another "account" writing, then read back as the admin.
    put_only_bucket(s3, "copy-b");
    let to_b = "s3://copy-b/r";
    let report = copy(
        &env,
        &[
            "--from",
            to_a,
            "--from-profile",
            "admin",
            "--to",
            to_b,
            "--to-profile",
            "putonly",
        ],
    );
    let (objects, bytes) = local_objects(&env);
    assert_eq!(report["copied"]["count"], objects, "{report}");
    assert_eq!(report["copied"]["bytes"], bytes, "{report}");
    put_only_user_only_put(&proxy, s3);
    // The large one: read from copy-a in 8 MiB ranges, stored in copy-b
    // with one conditional PUT carrying its MD5, byte for byte.
    let ranged = proxy.requests("GET", &format!("/copy-a/r/{big_rel}"));
    assert_eq!(ranged.len(), 5, "{ranged:?}");
    let put = proxy.puts(&format!("/copy-b/r/{big_rel}"));
    assert_eq!(put.len(), 1, "{put:?}");
    assert_eq!(util::proxy::header(&put[0], "if-none-match"), Some("*"));
    assert!(util::proxy::header(&put[0], "content-md5").is_some());
    let stored = util::s3::rt().block_on(async {
        let got = s3
            .admin_client()
            .get_object()
            .bucket("copy-b")
            .key(format!("r/{big_rel}"))
            .send()
            .await
            .unwrap();
        got.body.collect().await.unwrap().into_bytes()
    });
    assert!(stored[..] == big[..], "the large object differs");
    env.repo = to_b.into();

    // The copy pinned copy-b's location to the original's config before
    // any reader opened it: another repository's config put there (by
    // someone with wider access) is refused on this host.
    let put_config = |bytes: Vec<u8>| {
        util::s3::rt()
            .block_on(
                s3.admin_client()
                    .put_object()
                    .bucket("copy-b")
                    .key("r/config")
                    .body(bytes.into())
                    .send(),
            )
            .unwrap();
    };
    let other = env.init_other_repo("other");
    put_config(std::fs::read(other.join("config")).unwrap());
    let out = env.admin("snapshots", &["--no-cache"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("not the one this host saw first"),
        "{}",
        text(&out)
    );
    put_config(std::fs::read(env.path("repo/config")).unwrap());
    env.admin_ok("check", &["--read-data"]);
    assert_eq!(env.snapshots().len(), 3);
    let id = first["id"].as_str().unwrap();
    env.restore(id, &env.path("out-v1"));
    assert_same_tree(&v1, &under(&env.path("out-v1"), &src));
    env.restore("latest", &env.path("out-latest"));
    assert_same_tree(&src, &under(&env.path("out-latest"), &src));
    let mounted = Mounted::new(&env, &[]);
    let through = mounted.path(&format!("snapshots/latest{}", src.display()));
    assert_same_tree(&src, &through);
    drop(mounted);
}

/// Kills copies at growing moments; after each, every snapshot the
/// destination lists is whole (`check --read-data`), and the last run
/// completes with all of them.
#[test]
fn a_copy_killed_at_random_moments_leaves_only_whole_snapshots_and_completes() {
    let s3 = server();
    let proxy = Proxy::start(&s3.endpoint, 0);
    // Slow enough that the kills land among the PUTs.
    proxy
        .delay_ms
        .store(30, std::sync::atomic::Ordering::Relaxed);
    let mut env = Env::new();
    with_profiles(&mut env, s3, &proxy.endpoint);
    let src = env.path("src");
    for i in 0..4u64 {
        write(
            &src.join(format!("f{i}.bin")),
            &random_bytes(40 + i, 20_000_000),
        );
        write(&src.join("changes"), &random_bytes(50 + i, 1000));
        env.backup(&[&src], &[]);
    }
    put_only_bucket(s3, "copy-kill");
    let to = "s3://copy-kill/r";
    let args = [
        "copy",
        "--from",
        "repo",
        "--to",
        to,
        "--to-profile",
        "putonly",
    ];
    let mut reader = Env::bare();
    reader.repo = to.into();
    reader.vars = env.vars.clone();
    for name in ["admin.key", "admin.cert"] {
        std::fs::copy(env.path(name), reader.path(name)).unwrap();
    }
    std::fs::write(reader.path("aws-config"), "").unwrap();
    let (mut killed, mut checked) = (0, 0);
    for k in 0..8 {
        let at = Duration::from_millis(150).mul_f64(1.6f64.powi(k));
        if !kill_after(&mut env.cmd(&args), at) {
            break;
        }
        killed += 1;
        // Whatever is listed is whole (config may not be there yet).
        let listed = reader.run(&[
            "snapshots",
            "--repo",
            to,
            "--key",
            "admin.key",
            "--no-cache",
        ]);
        if listed.status.success() {
            let check = reader.admin("check", &["--read-data"]);
            assert!(
                check.status.success(),
                "kill {killed} at {at:?}: {}",
                text(&check)
            );
            checked += 1;
        }
    }
    eprintln!("{killed} kills, {checked} left a repository to check");
    assert!(
        killed >= 2 && checked >= 1,
        "the copy ended before the kills mattered"
    );
    copy(
        &env,
        &["--from", "repo", "--to", to, "--to-profile", "putonly"],
    );
    reader.admin_ok("check", &["--read-data"]);
    assert_eq!(reader.snapshots().len(), 4);
    reader.restore("latest", &reader.path("out"));
    assert_same_tree(&src, &under(&reader.path("out"), &src));
    let report = copy(
        &env,
        &["--from", "repo", "--to", to, "--to-profile", "putonly"],
    );
    assert_eq!(report["copied"]["bytes"], 0, "{report}");
}

/// Each object's Object Lock retention (mode, until), by key; ("none", 0)
/// for an object without.
fn retentions(s3: &S3Server, bucket: &str) -> std::collections::BTreeMap<String, (String, i64)> {
    let admin = s3.admin_client();
    let rt = util::s3::rt();
    let listed = rt
        .block_on(admin.list_objects_v2().bucket(bucket).send())
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for o in listed.contents() {
        let key = o.key().unwrap().to_string();
        let asked = rt.block_on(admin.get_object_retention().bucket(bucket).key(&key).send());
        // `init` wrote config without retention (no default in these buckets).
        let seen = match asked.ok().and_then(|r| r.retention().cloned()) {
            Some(r) => (
                r.mode().unwrap().as_str().to_string(),
                r.retain_until_date().unwrap().secs(),
            ),
            None => ("none".to_string(), 0),
        };
        out.insert(key, seen);
    }
    out
}

/// From an Object Lock repository into Object Lock buckets: every object
/// keeps its mode and retain-until date, or gets --object-lock-days when
/// that is later; --storage-class goes on packs only.
#[test]
fn a_copy_keeps_each_objects_retention_and_puts_the_storage_class_on_packs() {
    let s3 = server();
    for bucket in ["lock-src", "lock-dst", "lock-dst2"] {
        s3.create_bucket(bucket, true);
    }
    let proxy = Proxy::start(&s3.endpoint, 0);
    let env = Env::on_s3_as_admin(s3, &proxy.endpoint, "s3://lock-src/r", &[]);
    let src = env.path("src");
    make_tree(&src);
    let lock = [
        "--object-lock-days",
        "2",
        "--object-lock-mode",
        "governance",
    ];
    env.backup(&[&src], &lock);
    // A pack over the spool threshold (carried through a file, its
    // retention from the first ranged GET) keeps its own as well.
    let in_three_days = std::time::SystemTime::now() + Duration::from_secs(3 * 86_400);
    util::s3::rt()
        .block_on(
            s3.admin_client()
                .put_object()
                .bucket("lock-src")
                .key(format!("r/data/b1/{}", "b1".repeat(32)))
                .body(random_bytes(5, 40 << 20).into())
                .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Governance)
                .object_lock_retain_until_date(in_three_days.into())
                .send(),
        )
        .unwrap();
    let source = retentions(s3, "lock-src");
    assert!(source.len() > 3, "{source:?}");

    let from = ["--from", "s3://lock-src/r"];
    let mut args = from.to_vec();
    args.extend(["--to", "s3://lock-dst/r", "--storage-class", "STANDARD"]);
    copy(&env, &args);
    assert_eq!(retentions(s3, "lock-dst"), source);
    let class = |h: &String| util::proxy::header(h, "x-amz-storage-class").map(String::from);
    // The class is for data packs (files/); tree packs (data/, with the
    // made-up pack there) keep the source's, the default.
    let packs = proxy.puts("/lock-dst/r/files/");
    assert!(!packs.is_empty());
    assert!(packs
        .iter()
        .all(|h| class(h).as_deref() == Some("STANDARD")));
    let trees = proxy.puts("/lock-dst/r/data/");
    assert!(
        trees.len() >= 2 && trees.iter().all(|h| class(h).is_none()),
        "{trees:?}"
    );
    let meta: Vec<String> = [
        "/lock-dst/r/snapshots/",
        "/lock-dst/r/index/",
        "/lock-dst/r/config",
    ]
    .iter()
    .flat_map(|p| proxy.puts(p))
    .collect();
    assert!(
        meta.len() >= 3 && meta.iter().all(|h| class(h).is_none()),
        "{meta:?}"
    );

    // Five days of compliance from now outlast the source's two days.
    let mut args = from.to_vec();
    args.extend(["--to", "s3://lock-dst2/r", "--object-lock-days", "5"]);
    copy(&env, &args);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let longer = retentions(s3, "lock-dst2");
    assert_eq!(longer.len(), source.len());
    for (key, (mode, until)) in longer {
        assert_eq!(mode, "COMPLIANCE", "{key}");
        assert!(until > now + 5 * 86_400 - 600, "{key}: {until}");
    }
}

/// To a store without conditional writes (it answers `If-None-Match` with
/// 501), a plain PUT would replace what is there: the copy stops at once,
/// having replaced nothing, and says which flag copies anyway.
#[test]
fn a_copy_never_overwrites_on_a_store_without_conditional_writes_unless_told() {
    let s3 = server();
    let proxy = Proxy::start(&s3.endpoint, 0);
    proxy.reject_conditional.store(true, Ordering::Relaxed);
    let mut env = Env::new();
    with_profiles(&mut env, s3, &proxy.endpoint);
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha\n");
    env.backup(&[&src], &[]);
    put_only_bucket(s3, "copy-plain");
    let to = "s3://copy-plain/r";
    let out = env.run(&[
        "copy",
        "--from",
        "repo",
        "--to",
        to,
        "--to-profile",
        "putonly",
    ]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("--allow-unconditional-puts"), "{said}");
    // Only conditional PUTs were sent (each answered 501), no plain one.
    let puts = proxy.puts("/copy-plain/");
    assert!(!puts.is_empty());
    for h in &puts {
        assert!(util::proxy::header(h, "if-none-match").is_some(), "{h}");
    }
    let report = copy(
        &env,
        &[
            "--from",
            "repo",
            "--to",
            to,
            "--to-profile",
            "putonly",
            "--allow-unconditional-puts",
        ],
    );
    let (objects, _) = local_objects(&env);
    assert_eq!(report["copied"]["count"], objects, "{report}");
}
