//! coffer over S3, end to end, against a real radosgw on 127.0.0.1 (started
//! once for this test binary by scripts/s3-server.sh, stopped by PID when it
//! ends): the whole flow, a write-only writer, Object Lock, and a proxy that
//! fails a share of requests.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::ObjectLockRetentionMode;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use util::mount::{diff_r, wait_until, Mounted};
use util::proxy::Proxy;
use util::s3::{aws_vars, rt, server};
use util::*;

/// Two versions of a tree `make` makes (the second after `change_tree`);
/// returns (source, copy of version 1, snapshot ids).
fn two_versions(
    env: &Env,
    make: fn(&Path),
) -> (std::path::PathBuf, std::path::PathBuf, [String; 2]) {
    let src = env.path("src");
    make(&src);
    let a = env.backup(&[&src], &["--tag", "first"]);
    let v1 = env.path("v1");
    cp_a(&src, &v1);
    change_tree(&src);
    let b = env.backup(&[&src], &[]);
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap().to_string();
    (src, v1, [id(&a), id(&b)])
}

/// Restores both snapshots and mounts the repository, checking each
/// version against its original.
fn assert_readable(env: &Env, src: &Path, v1: &Path, ids: &[String; 2]) {
    for (id, original) in [(&ids[0], v1), (&ids[1], src)] {
        let out = env.path(&format!("restored-{id}"));
        env.restore(id, &out);
        assert_same_tree(original, &under(&out, src));
    }
    let m = Mounted::new(env, &[]);
    let names = m.snapshot_names();
    assert_eq!(names.len(), 2, "{names:?}");
    let m1 = under(&m.path(&format!("snapshots/{}", names[0])), src);
    let m2 = under(&m.path(&format!("snapshots/{}", names[1])), src);
    assert_eq!(diff_r(v1, &m1), Vec::<String>::new());
    assert_eq!(diff_r(src, &m2), Vec::<String>::new());
    assert_eq!(diff_r(&m1, &m2), diff_r(v1, src));
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "mount log: {log}");
}

#[test]
fn backup_snapshots_restore_mount_and_diff_over_s3() {
    let s3 = server();
    s3.create_bucket("flow", false);
    let env = Env::on_s3(s3, "flow", "team/repo");
    // The writer may do anything in this bucket here; see the next test for
    // a write-only one.
    let mut env = env;
    env.writer_vars = env.vars.clone();
    let (src, v1, ids) = two_versions(&env, make_tree);
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    // Monitoring needs no key: the listing's LastModified says how fresh.
    let out = env.ok(&["status", "--repo", &env.repo, "--max-age", "1h", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["snapshots"], 2, "{status}");
    assert_readable(&env, &src, &v1, &ids);

    let out = env.admin_ok("diff", &[&ids[0], &ids[1]]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("gen/new-file"), "{text}");
    assert!(text.lines().any(|l| l.starts_with('-')), "{text}");

    // Everything lives below the prefix.
    let c = s3.admin_client();
    let listed = rt()
        .block_on(c.list_objects_v2().bucket("flow").send())
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert!(keys.contains(&"team/repo/config"), "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("team/repo/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("team/repo/data/")));
    assert!(keys.iter().any(|k| k.starts_with("team/repo/files/")));
    assert!(keys.iter().any(|k| k.starts_with("team/repo/snapshots/")));

    // A second init of the same place refuses, and leaves config alone.
    let again = env.init_repo("writer2.key");
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already holds a repository"), "{stderr}");
    assert_eq!(env.snapshots().len(), 2);
}

fn access_denied<T, E: ProvideErrorMetadata + std::fmt::Debug>(
    what: &str,
    r: Result<T, aws_sdk_s3::error::SdkError<E>>,
) {
    match r {
        Ok(_) => panic!("the writer could {what}"),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            assert_eq!(status, Some(403), "{what}: {e:?}");
        }
    }
}

#[test]
fn a_put_only_writer_backs_up_and_the_admin_reads_everything() {
    let s3 = server();
    s3.create_bucket("writeonly", false);
    s3.allow_writer_put_only("writeonly");
    let env = Env::on_s3(s3, "writeonly", "");
    let (src, v1, ids) = two_versions(&env, make_tree);
    assert_eq!(env.snapshots().len(), 2);
    assert_readable(&env, &src, &v1, &ids);

    // The writer's key can't Get, Head, List or Delete, even what it wrote.
    let w = s3.writer_client();
    let rt = rt();
    access_denied(
        "get config",
        rt.block_on(w.get_object().bucket("writeonly").key("config").send()),
    );
    access_denied(
        "head config",
        rt.block_on(w.head_object().bucket("writeonly").key("config").send()),
    );
    access_denied(
        "list the bucket",
        rt.block_on(w.list_objects_v2().bucket("writeonly").send()),
    );
    let snap_key = format!("snapshots/{}", ids[0]);
    access_denied(
        "delete a snapshot",
        rt.block_on(w.delete_object().bucket("writeonly").key(&snap_key).send()),
    );
    access_denied(
        "delete config",
        rt.block_on(w.delete_object().bucket("writeonly").key("config").send()),
    );
    // Nor replace config (a plain PUT, no If-None-Match): only `init`
    // writes it, so a leaked writer credential cannot swap the recipients,
    // the chunk-id key or the writers' certificates readers trust.
    access_denied(
        "overwrite config",
        rt.block_on(
            w.put_object()
                .bucket("writeonly")
                .key("config")
                .body(b"{}".to_vec().into())
                .send(),
        ),
    );
    // The refused deletes did nothing.
    assert_eq!(env.snapshots().len(), 2);
}

#[test]
fn object_lock_protects_every_object_coffer_writes() {
    let s3 = server();
    s3.create_bucket("locked", true);
    let admin = s3.admin_client();
    let rt = rt();
    let rule = aws_sdk_s3::types::ObjectLockConfiguration::builder()
        .object_lock_enabled(aws_sdk_s3::types::ObjectLockEnabled::Enabled)
        .rule(
            aws_sdk_s3::types::ObjectLockRule::builder()
                .default_retention(
                    aws_sdk_s3::types::DefaultRetention::builder()
                        .mode(ObjectLockRetentionMode::Compliance)
                        .days(1)
                        .build(),
                )
                .build(),
        )
        .build();
    rt.block_on(
        admin
            .put_object_lock_configuration()
            .bucket("locked")
            .object_lock_configuration(rule)
            .send(),
    )
    .unwrap();
    let mut env = Env::on_s3(s3, "locked", "r");
    env.writer_vars = env.vars.clone();
    let src = env.path("src");
    make_tree(&src);
    env.backup(&[&src], &[]);
    // Explicit retention from the writer: governance, 3 days.
    write(&src.join("gen/extra"), b"governed");
    env.backup(
        &[&src],
        &[
            "--object-lock-days",
            "3",
            "--object-lock-mode",
            "governance",
        ],
    );

    let versions = rt
        .block_on(admin.list_object_versions().bucket("locked").send())
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut governed = 0;
    let objects = versions.versions();
    assert!(objects.len() > 4, "{objects:?}");
    for v in objects {
        let (key, version) = (v.key().unwrap(), v.version_id().unwrap());
        let ret = rt
            .block_on(
                admin
                    .get_object_retention()
                    .bucket("locked")
                    .key(key)
                    .version_id(version)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("{key} has no retention: {e:?}"));
        let ret = ret.retention().unwrap();
        let until = ret.retain_until_date().unwrap().secs();
        match ret.mode().unwrap() {
            ObjectLockRetentionMode::Compliance => {
                assert!(until > now + 23 * 3600, "{key}: {until}")
            }
            ObjectLockRetentionMode::Governance => {
                assert!(until > now + 71 * 3600, "{key}: {until}");
                governed += 1;
            }
            other => panic!("{key}: {other:?}"),
        }
        // Deleting the version fails, for the bucket owner too.
        let del = rt.block_on(
            admin
                .delete_object()
                .bucket("locked")
                .key(key)
                .version_id(version)
                .send(),
        );
        assert!(del.is_err(), "deleted {key} version {version}");
    }
    assert!(governed >= 2, "the second run's new objects are governed");
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&src, &under(&out, &src));
}

/// What change_tree expects, and 300 small files: enough requests to meet
/// every kind of fault many times, few enough to stay quick.
fn small_tree(root: &Path) {
    let g = root.join("gen");
    write(&g.join("empty"), b"");
    write(&g.join("small.txt"), b"hello coffer\n");
    write(&g.join("big.bin"), &random_bytes(7, 30_000_000));
    write(&g.join("deep/level0/level1/level2/x"), b"x");
    for i in 0..300u64 {
        let len = (i as usize * 997) % 20_000;
        write(
            &root.join(format!("d{}/f{i}", i % 10)),
            &random_bytes(i, len),
        );
    }
}

#[test]
fn backups_and_restores_survive_a_proxy_that_fails_a_quarter_of_requests() {
    let s3 = server();
    s3.create_bucket("faulty", false);
    let proxy = Proxy::start(&s3.endpoint, 25);
    let env = Env::on_s3_as_admin(s3, &proxy.endpoint, "s3://faulty/r", &[]);
    let (src, v1, ids) = two_versions(&env, small_tree);
    let counts = &proxy.counts;
    // Writes met every kind of fault, a PUT that was stored but never
    // answered among them (the first request: init's config).
    eprintln!("proxy, backups: {}", counts.summary());
    assert!(counts.faults() >= 5, "{}", counts.summary());
    assert!(
        counts
            .dropped_after
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    let before = counts.faults();
    assert_readable(&env, &src, &v1, &ids);
    eprintln!("proxy, with reads: {}", counts.summary());
    assert!(counts.faults() >= before + 5, "{}", counts.summary());
}

/// Data packs carry the storage class, nothing else does; and a store that
/// answers `If-None-Match` with `501 NotImplemented` (as stores without
/// conditional writes do) still gets complete backups, and a second init
/// is still refused.
#[test]
fn storage_class_goes_on_data_packs_and_stores_without_conditional_puts_work() {
    let s3 = server();
    s3.create_bucket("plainput", false);
    let proxy = Proxy::start(&s3.endpoint, 0);
    proxy
        .reject_conditional
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let env = Env::on_s3_as_admin(s3, &proxy.endpoint, "s3://plainput/r", &[]);
    let src = env.path("src");
    small_tree(&src);
    let snap = env.backup(&[&src], &["--storage-class", "STANDARD", "--uploads", "2"]);
    let id = snap["id"].as_str().unwrap();
    let out = env.path("out");
    env.restore(id, &out);
    assert_same_tree(&src, &under(&out, &src));

    // A 501 for init's config, then one per upload running when the backup
    // learned it (2), then plain PUTs only.
    let rejected = proxy
        .counts
        .not_implemented
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!((2..=3).contains(&rejected), "{rejected} rejected");
    assert!(proxy.puts("/r/").len() > 5);
    let class = |h: &String| util::proxy::header(h, "x-amz-storage-class").map(String::from);
    // Packs: data packs (the 30 MB file and the rest), under files/, carry
    // the class; tree packs, under data/ and a few kilobytes here, stay in
    // the default class.
    let len = |h: &String| -> u64 {
        util::proxy::header(h, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let classed = proxy.puts("/r/files/");
    let plain = proxy.puts("/r/data/");
    assert!(classed
        .iter()
        .all(|h| class(h).as_deref() == Some("STANDARD")));
    assert!(plain.iter().all(|h| class(h).is_none()), "{plain:?}");
    assert!(
        classed.iter().map(len).sum::<u64>() > 30_000_000,
        "{classed:?}"
    );
    assert!(!plain.is_empty(), "no tree pack seen");
    assert!(plain.iter().map(len).sum::<u64>() < 1_000_000, "{plain:?}");
    let meta: Vec<String> = ["/r/snapshots/", "/r/index/", "/r/config"]
        .iter()
        .flat_map(|p| proxy.puts(p))
        .collect();
    assert!(meta.len() >= 3, "{meta:?}");
    for h in &meta {
        assert_eq!(
            class(h),
            None,
            "metadata must stay in the default class: {h}"
        );
    }

    // Without conditional writes, init still refuses an existing repository.
    let again = env.init_repo("writer2.key");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already holds a repository"), "{stderr}");
    assert_eq!(env.snapshots().len(), 1);
}

#[test]
fn no_secret_reaches_the_output_even_when_tracing() {
    let mut env = Env::bare();
    env.generate_keys();
    let secret = "s3cr3t-Value-that-must-never-be-printed";
    let creds = util::s3::Creds {
        access_key: "AKIATESTKEYID".into(),
        secret_key: secret.into(),
    };
    // Nothing listens on port 1: every attempt fails, and the error is printed.
    env.repo = "s3://bucket/x".into();
    env.vars = aws_vars("http://127.0.0.1:1", &creds);
    env.vars
        .push(("COFFER_S3_RETRY_SECONDS".into(), "1".into()));
    env.vars.push(("COFFER_LOG".into(), "trace".into()));
    let out = env.init_repo("writer.key");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("put s3://bucket/x/config: gave up after"),
        "{stderr}"
    );
    assert!(!stderr.contains(secret), "the secret key was printed");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
    assert!(
        !env.path("writer.key").exists(),
        "a failed init keeps no writer key"
    );
}

/// `forget` + `prune` over S3. A zero-day horizon and a 1 s margin let the
/// forgotten snapshots' packs go at once, except those Object Lock retains:
/// prune asks for their retention, keeps them and says so.
#[test]
fn prune_over_s3_deletes_unreferenced_packs_and_keeps_locked_ones() {
    let s3 = server();
    s3.create_bucket("pruned", true);
    let env = Env::on_s3_as_admin(
        s3,
        &s3.endpoint,
        "s3://pruned/r",
        &["--dedup-horizon-days", "0"],
    );
    let src = env.path("src");
    let lock = [
        "--object-lock-days",
        "1",
        "--object-lock-mode",
        "governance",
    ];
    for (seed, extra) in [(1, &lock[..]), (2, &[][..]), (3, &[][..])] {
        write(&src.join("f"), &random_bytes(seed, 2_000_000));
        env.backup(&[&src], extra);
    }
    env.admin_ok("forget", &["--keep-last", "1"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = env.admin_ok("prune", &["-v", "--margin", "1s"]);
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    let count = |after: &str| -> u64 {
        let rest = t
            .split_once(after)
            .unwrap_or_else(|| panic!("{after:?} not in {t}"));
        rest.1.split(' ').next().unwrap().parse().unwrap()
    };
    // The unlocked run's data and tree packs go; the locked run's stay.
    let (deleted, locked) = (count("deleted "), count("kept "));
    assert!(deleted >= 2 && locked >= 2, "{t}");
    assert!(
        t.contains("unreferenced packs under Object Lock retention"),
        "{t}"
    );
    let out = env.admin_ok("prune", &["-v", "--margin", "1s"]);
    let again = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(again.contains("deleted 0 ("), "{again}");
    assert!(again.contains(&format!("kept {locked} (")), "{again}");

    let restored = env.path("out");
    env.restore("latest", &restored);
    assert_same_tree(&src, &under(&restored, &src));
    env.admin_ok("check", &["--read-data"]);
}

/// The mount over a store that fails every request, then stops answering:
/// what it has not fetched yet fails with EIO once coffer's retries give up,
/// what it has keeps working, and once the store heals the same paths read
/// correctly, without remounting.
#[test]
fn mount_gives_eio_while_the_store_fails_and_recovers_when_it_heals() {
    let s3 = server();
    s3.create_bucket("healing", false);
    let proxy = Proxy::start(&s3.endpoint, 0);
    let mut env = Env::on_s3_as_admin(s3, &proxy.endpoint, "s3://healing/r", &[]);
    // Give up on a request after 2 s of retries, on a response after 1 s.
    for vars in [&mut env.vars, &mut env.writer_vars] {
        vars.push(("COFFER_S3_RETRY_SECONDS".into(), "2".into()));
        vars.push(("COFFER_S3_READ_TIMEOUT_SECONDS".into(), "1".into()));
    }
    let src = env.path("src");
    let files: Vec<Vec<u8>> = (0..4).map(|d| random_bytes(40 + d, 300_000)).collect();
    for (d, bytes) in files.iter().enumerate() {
        write(&src.join(format!("d{d}/f")), bytes);
    }
    env.backup(&[&src], &[]);
    let m = Mounted::new(&env, &[]);
    let root = under(&m.path("snapshots/latest"), &src);
    let file = |d: usize| root.join(format!("d{d}/f"));
    assert_eq!(std::fs::read(file(0)).unwrap(), files[0]);

    // Every request fails (SlowDown, 500, dropped, cut short in turn).
    proxy.fail_percent.store(100, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let err = std::fs::read(file(1)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // What was read before is still there.
    assert_eq!(std::fs::read(file(0)).unwrap(), files[0]);

    // The store stops answering: every request is held for 3 s.
    proxy.fail_percent.store(0, Ordering::Relaxed);
    proxy.stall_ms.store(3000, Ordering::Relaxed);
    let err = std::fs::read(file(2)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    eprintln!("proxy, failing and stalled: {}", proxy.counts.summary());

    // Healed: the same paths read correctly, no remount.
    proxy.stall_ms.store(0, Ordering::Relaxed);
    for (d, bytes) in files.iter().enumerate() {
        assert_eq!(
            &std::fs::read(file(d)).unwrap(),
            bytes,
            "d{d}/f after healing"
        );
    }
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");

    // A backup while the store holds every request: it gives up within
    // its retry budget and names the object; no snapshot; healed, the next
    // backup completes and everything checks.
    write(&src.join("new"), &random_bytes(50, 300_000));
    proxy.stall_ms.store(3000, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let out = env.writer_cmd(&[src.to_str().unwrap()]).output().unwrap();
    let took = started.elapsed();
    proxy.stall_ms.store(0, Ordering::Relaxed);
    let said = text(&out);
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("s3://healing/r/"), "{said}");
    assert!(took < Duration::from_secs(60), "{took:?}: {said}");
    eprintln!("backup against a stalled store failed in {took:?}: {said}");
    assert_eq!(env.snapshots().len(), 1);
    env.backup(&[&src], &[]);
    assert_eq!(env.snapshots().len(), 2);
    env.admin_ok("check", &["--read-data"]);
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&src, &under(&out, &src));
}

/// The GETs of data and tree packs the proxy has seen.
fn pack_gets(proxy: &Proxy, prefix: &str) -> usize {
    ["files", "data"]
        .iter()
        .map(|top| proxy.requests("GET", &format!("{prefix}/{top}/")).len())
        .sum()
}

/// The tree packs in the metadata cache under `env`'s cache directory.
fn cached_tree_packs(env: &Env) -> Vec<std::path::PathBuf> {
    cached_files(env, "metadata")
}

/// The files under `env`'s cache directory in its `area` (`metadata` or
/// `chunks`), leaving out cached snapshot objects.
fn cached_files(env: &Env, area: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![env.path("cache")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.components().any(|c| c.as_os_str() == area)
                && !path.components().any(|c| c.as_os_str() == "snapshots")
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `ls -lR` of `dir`: what it printed.
fn ls_lr(dir: &Path) -> String {
    run_tool("ls", &["-lR", dir.to_str().unwrap()])
}

/// The mount 40 ms (round trip) away from the store, through the proxy's
/// latency mode: it lists a whole tree with one request per tree pack,
/// reads it correctly, and a second mount lists it from the metadata cache
/// without a request for the trees or the snapshot. A cached pack that is damaged (a byte
/// flipped, cut short, replaced by another pack's bytes) is fetched again,
/// never served.
/// A new bucket, a repository `s3://BUCKET/r` reached through a proxy
/// (no delay yet), and one backup of [`small_tree`]: the proxy, the
/// environment and the backed-up directory.
fn small_tree_behind_a_proxy(bucket: &str) -> (Proxy, Env, std::path::PathBuf) {
    let s3 = server();
    s3.create_bucket(bucket, false);
    let proxy = Proxy::start(&s3.endpoint, 0);
    let env = Env::on_s3_as_admin(s3, &proxy.endpoint, &format!("s3://{bucket}/r"), &[]);
    let src = env.path("src");
    small_tree(&src);
    env.backup(&[&src], &[]);
    (proxy, env, src)
}

#[test]
fn a_mount_across_a_wan_lists_from_whole_tree_packs_and_then_from_the_cache() {
    let (proxy, env, src) = small_tree_behind_a_proxy("far");
    proxy.delay_ms.store(20, Ordering::Relaxed);

    let before = pack_gets(&proxy, "/far/r");
    let started = std::time::Instant::now();
    let m = Mounted::new(&env, &[]);
    // Mounting starts fetching the newest snapshots' tree packs: the
    // first look into the snapshot then waits for none.
    wait_until(Duration::from_secs(10), || {
        !cached_tree_packs(&env).is_empty()
    });
    let at_start = pack_gets(&proxy, "/far/r") - before;
    let inside = under(&m.path("snapshots/latest"), &src);
    let listing = ls_lr(&inside);
    let listed = started.elapsed();
    let tree_gets = pack_gets(&proxy, "/far/r") - before;
    let packs = cached_tree_packs(&env);
    assert_eq!(packs.len(), 1, "one backup run, one tree pack");
    assert_eq!(
        (at_start, tree_gets),
        (1, 1),
        "GETs of packs: at mount start, after ls -lR"
    );
    assert_eq!(diff_r(&src, &inside), Vec::<String>::new());
    eprintln!(
        "mount at 40 ms RTT: ls -lR in {:.2} s ({tree_gets} pack GETs), whole diff -r in {:.1} s",
        listed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");

    // A new mount: the trees and the snapshot come from the metadata
    // cache, the files' chunks (read by the diff above) from the chunk cache.
    let before = pack_gets(&proxy, "/far/r");
    let snapshot_gets = || proxy.requests("GET", "/far/r/snapshots/").len();
    let snapshots_before = snapshot_gets();
    let m = Mounted::new(&env, &[]);
    let inside = under(&m.path("snapshots/latest"), &src);
    assert_eq!(ls_lr(&inside), listing);
    assert_eq!(pack_gets(&proxy, "/far/r"), before, "trees fetched again");
    assert_eq!(
        snapshot_gets(),
        snapshots_before,
        "the snapshot fetched again"
    );
    assert_eq!(diff_r(&src, &inside), Vec::<String>::new());
    assert_eq!(pack_gets(&proxy, "/far/r"), before, "chunks fetched again");
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");

    // A damaged cached chunk is fetched again, never served; with the
    // chunk cache off nothing is read from it.
    let chunks = cached_files(&env, "chunks");
    assert!(chunks.len() > 300, "{} chunks cached", chunks.len());
    let (small, _) = chunks
        .iter()
        .map(|p| (p, std::fs::metadata(p).unwrap().len()))
        .filter(|(_, len)| *len > 1000)
        .min_by_key(|(_, len)| *len)
        .unwrap();
    let good = std::fs::read(small).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 1;
    std::fs::write(small, &bad).unwrap();
    let before = pack_gets(&proxy, "/far/r");
    let m = Mounted::new(&env, &[]);
    let inside = under(&m.path("snapshots/latest"), &src);
    assert_eq!(diff_r(&src, &inside), Vec::<String>::new());
    assert_eq!(
        pack_gets(&proxy, "/far/r"),
        before + 1,
        "one chunk refetched"
    );
    assert_eq!(std::fs::read(small).unwrap(), good, "not repaired");
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("failed verification"), "{log}");
    let before = proxy.requests("GET", "/far/r/files/").len();
    let m = Mounted::new(&env, &["--chunk-cache-size", "0"]);
    let inside = under(&m.path("snapshots/latest"), &src);
    assert_eq!(diff_r(&src, &inside), Vec::<String>::new());
    // Every byte came from the store (the walk reads neighbours together:
    // count bytes, not requests).
    let fetched: u64 = proxy.requests("GET", "/far/r/files/")[before..]
        .iter()
        .filter_map(|h| util::proxy::header(h, "range"))
        .filter_map(|r| {
            let (a, b) = r.trim_start_matches("bytes=").split_once('-')?;
            Some(b.parse::<u64>().ok()? + 1 - a.parse::<u64>().ok()?)
        })
        .sum();
    let source_bytes: u64 = util::listing(&src)
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(src.join(p)).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(
        fetched >= source_bytes,
        "read from the cache: {fetched} bytes fetched, {source_bytes} in the files"
    );
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");

    // Damage the cache: every kind is detected and fetched again.
    let first = packs[0].clone();
    let good = std::fs::read(&first).unwrap();
    let flipped = {
        let mut b = good.clone();
        let i = b.len() / 2;
        b[i] ^= 0x40;
        b
    };
    let cut = good[..good.len() / 3].to_vec();
    let other = random_bytes(99, good.len());
    for (what, bad) in [("flipped", flipped), ("cut", cut), ("replaced", other)] {
        std::fs::write(&first, &bad).unwrap();
        let before = pack_gets(&proxy, "/far/r");
        let m = Mounted::new(&env, &[]);
        let inside = under(&m.path("snapshots/latest"), &src);
        assert_eq!(ls_lr(&inside), listing, "{what}");
        assert_eq!(diff_r(&src, &inside), Vec::<String>::new(), "{what}");
        assert!(
            pack_gets(&proxy, "/far/r") > before,
            "{what}: not fetched again"
        );
        assert_eq!(std::fs::read(&first).unwrap(), good, "{what}: not repaired");
        let (code, log) = m.unmount();
        assert_eq!(code, Some(0), "{what}: {log}");
    }

    // A restore reads its trees from the cache too, and is right.
    let before = proxy.requests("GET", "/far/r/data/").len();
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&src, &under(&out, &src));
    let whole_packs = proxy.requests("GET", "/far/r/data/")[before..]
        .iter()
        .filter(|h| util::proxy::header(h, "range").is_none())
        .count();
    assert_eq!(whole_packs, 0, "a restore fetched tree packs again");

    // `coffer cache` says where it is and how big; --clear empties it.
    let shown = env.ok(&["cache", "--repo", &env.repo]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    let metadata = packs[0].parent().unwrap().parent().unwrap().to_path_buf();
    assert!(shown.contains(&metadata.display().to_string()), "{shown}");
    assert!(!shown.contains("(0 bytes)"), "{shown}");
    env.ok(&["cache", "--repo", &env.repo, "--clear"]);
    assert!(!metadata.exists(), "not cleared");

    // A cache that cannot be written: said once, and everything works.
    std::fs::write(&metadata, b"in the way").unwrap();
    let out = env.path("out-uncached");
    let spec = format!("latest:{}", src.display());
    let restored = env.admin_ok("restore", &[&spec, "--target", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&restored.stderr);
    assert_eq!(stderr.matches("metadata cache").count(), 1, "{stderr}");
    assert_same_tree(&src, &out);
}

/// The bytes of object `key` in `bucket`, read straight from the server.
fn stored_object(s3: &util::s3::S3Server, bucket: &str, key: &str) -> Vec<u8> {
    let rt = rt();
    let got = rt
        .block_on(
            s3.admin_client()
                .get_object()
                .bucket(bucket)
                .key(key)
                .send(),
        )
        .unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
    rt.block_on(got.body.collect()).unwrap().to_vec()
}

/// Two mounts and a restore read one repository through one metadata cache
/// at the same time, 40 ms away; one mount is killed (SIGKILL) at a
/// different moment of its fetching in each round. Afterwards every file
/// the cache holds under a pack's name is byte for byte that stored pack
/// (a writer that died left at most a temporary file, never served), and
/// the other mount and the restore are right.
#[test]
fn two_mounts_and_a_restore_share_the_cache_and_a_killed_one_leaves_no_part() {
    let (proxy, env, src) = small_tree_behind_a_proxy("shared");
    write(&src.join("d1/after"), b"version 2");
    env.backup(&[&src], &[]);
    proxy.delay_ms.store(20, Ordering::Relaxed);

    for (round, kill_after_ms) in [60u64, 200, 400].into_iter().enumerate() {
        let _ = std::fs::remove_dir_all(env.path("cache"));
        let a = Mounted::new(&env, &[]);
        let mnt_b = env.path("mnt-b");
        std::fs::create_dir_all(&mnt_b).unwrap();
        let mut b = env
            .admin_cmd("mount", &[])
            .arg(&mnt_b)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = env.path(&format!("out-{round}"));
        let restore = {
            let mut cmd = env.admin_cmd("restore", &["latest", "--target"]);
            cmd.arg(&out);
            std::thread::spawn(move || cmd.output().unwrap())
        };
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        b.kill().unwrap();
        b.wait().unwrap();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&mnt_b)
            .status();

        let inside = under(&a.path("snapshots/latest"), &src);
        assert_eq!(diff_r(&src, &inside), Vec::<String>::new(), "round {round}");
        let restored = restore.join().unwrap();
        assert!(
            restored.status.success(),
            "round {round}: {}",
            text(&restored)
        );
        assert_same_tree(&src, &under(&out, &src));
        let (code, log) = a.unmount();
        assert_eq!(code, Some(0), "round {round}: {log}");

        let packs = cached_tree_packs(&env);
        let mut whole = 0;
        for path in &packs {
            let name = path.file_name().unwrap().to_str().unwrap();
            if name.starts_with(".tmp") {
                continue;
            }
            let key = format!("r/data/{}/{name}", &name[..2]);
            assert!(
                std::fs::read(path).unwrap() == stored_object(server(), "shared", &key),
                "round {round}: {} is not the stored pack",
                path.display()
            );
            whole += 1;
        }
        assert!(whole >= 1, "round {round}: nothing cached");
    }
}

/// Bytes stored in `bucket` (listed as the server's admin).
fn bucket_bytes(s3: &util::s3::S3Server, bucket: &str) -> u64 {
    let c = s3.admin_client();
    let rt = rt();
    let mut total = 0;
    let mut token = None;
    loop {
        let out = rt
            .block_on(
                c.list_objects_v2()
                    .bucket(bucket)
                    .set_continuation_token(token)
                    .send(),
            )
            .unwrap();
        total += out
            .contents()
            .iter()
            .map(|o| o.size().unwrap_or(0) as u64)
            .sum::<u64>();
        token = out.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return total;
        }
    }
}

/// The README's tenant recipe: a bucket of the tenant's own with a quota,
/// a put-only writer and a read-only reader (`tenant_policy`). A backup
/// that meets the quota stops with an error that names it and stores no
/// snapshot; the earlier snapshot restores and `status` (the health check)
/// still answers with the reader's credentials; once the quota is raised
/// the next backup completes and sends only what the stopped one had not.
#[test]
fn a_tenant_over_its_quota_stops_cleanly_and_sends_only_the_rest_once_raised() {
    let s3 = server();
    let bucket = "tenant-a";
    s3.create_bucket(bucket, false);
    let writer = s3.add_user("tenant-a-writer");
    let reader = s3.add_user("tenant-a-reader");
    s3.set_policy(
        bucket,
        &util::s3::tenant_policy(bucket, "tenant-a-writer", "tenant-a-reader"),
    );
    // The operator (the bucket's owner) makes the repository; then the
    // tenant's hosts back up as the writer and its admin reads as the reader.
    let mut env = Env::on_s3(s3, bucket, "");
    env.writer_vars = aws_vars(&s3.endpoint, &writer);
    env.vars = aws_vars(&s3.endpoint, &reader);

    let src = env.path("src");
    write(&src.join("first.bin"), &random_bytes(1, 2_000_000));
    let first = env.backup(&[&src], &[]);
    let first_id = first["id"].as_str().unwrap().to_string();
    let used = bucket_bytes(s3, bucket);
    // Room for two more 16 MiB packs, not for 60 MB. One upload at a
    // time: with several, the refusal of one cancels the others in flight,
    // and what is stored before it would be left to chance.
    s3.set_bucket_quota(bucket, used + (40 << 20));
    for n in 0..15 {
        write(
            &src.join(format!("more-{n:02}.bin")),
            &random_bytes(100 + n, 4_000_000),
        );
    }
    let refused = env
        .writer_cmd(&["--uploads", "1", src.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        !refused.status.success(),
        "a backup past the quota succeeded"
    );
    assert!(said.contains("QuotaExceeded"), "{said}");
    assert!(said.contains("quota"), "{said}");
    let snapshots = env.snapshots();
    assert_eq!(snapshots.len(), 1, "a snapshot was stored past the quota");
    let out = env.path("restored");
    env.restore(&first_id, &out);
    let restored = std::fs::read(under(&out, &src).join("first.bin")).unwrap();
    assert!(
        restored == random_bytes(1, 2_000_000),
        "the earlier snapshot changed"
    );
    let health = env.ok(&["status", "--repo", &env.repo, "--max-age", "1h", "--json"]);
    let health: serde_json::Value = serde_json::from_slice(&health.stdout).unwrap();
    assert_eq!(health["ok"], true, "{health}");

    let stored_when_stopped = bucket_bytes(s3, bucket) - used;
    assert!(
        stored_when_stopped > 24 << 20, // two packs of up to 16 MiB
        "{stored_when_stopped} bytes stored before the quota stopped it"
    );
    // Each credential stays in its lane: the reader deletes nothing, the
    // writer reads nothing, and neither reaches another tenant's bucket.
    s3.create_bucket("tenant-b", false);
    let rt = rt();
    let (w, r) = (
        util::s3::client(&s3.endpoint, &writer),
        util::s3::client(&s3.endpoint, &reader),
    );
    let snap_key = format!("snapshots/{}", snapshots[0]["id"].as_str().unwrap());
    access_denied(
        "delete as the reader",
        rt.block_on(r.delete_object().bucket(bucket).key(&snap_key).send()),
    );
    access_denied(
        "read as the writer",
        rt.block_on(w.get_object().bucket(bucket).key("config").send()),
    );
    access_denied(
        "list another tenant's bucket",
        rt.block_on(r.list_objects_v2().bucket("tenant-b").send()),
    );
    access_denied(
        "write into another tenant's bucket",
        rt.block_on(
            w.put_object()
                .bucket("tenant-b")
                .key("data/00/planted")
                .body(b"x".to_vec().into())
                .send(),
        ),
    );

    s3.set_bucket_quota(bucket, 1 << 30);
    env.backup(&[&src], &[]);
    let sent_after = bucket_bytes(s3, bucket) - used - stored_when_stopped;
    assert!(
        stored_when_stopped + sent_after < 66_000_000,
        "{stored_when_stopped} + {sent_after} bytes stored for 60 MB: the stopped run's packs \
         were sent again"
    );
    assert_eq!(env.snapshots().len(), 2);
}

/// `--limit-upload` paces inside each PUT: 12 MiB of fresh data at 2 MiB/s
/// reach the store over six seconds and no second carries much more than
/// the rate (a pack sent whole at its turn would put 12 MiB into one
/// second); `copy --limit-upload` the same to its destination; and
/// `--limit-download` paces a restore's GETs.
#[test]
fn upload_limits_hold_in_every_second_and_downloads_are_paced_over_s3() {
    let s3 = server();
    s3.create_bucket("paced", false);
    s3.create_bucket("paced-copy", false);
    let proxy = Proxy::start(&s3.endpoint, 0);
    let env = Env::on_s3_as_admin(s3, &proxy.endpoint, "s3://paced/r", &[]);
    let src = env.path("src");
    let data = random_bytes(35, 12 << 20);
    write(&src.join("twelve.bin"), &data);
    let rate = 2 << 20;
    let arrivals = || std::mem::take(&mut *proxy.arrivals.lock().unwrap());
    let held = |what: &str, arrived: Vec<(std::time::Instant, usize)>| {
        let total: usize = arrived.iter().map(|a| a.1).sum();
        let span = arrived[arrived.len() - 1].0 - arrived[0].0;
        let busiest = util::proxy::busiest(&arrived, Duration::from_secs(1));
        eprintln!("{what}: {total} bytes over {span:?}, busiest second {busiest}");
        assert!(total >= 12 << 20, "{what}: {total} bytes sent");
        assert!(
            span >= Duration::from_millis(5000),
            "{what}: {total} bytes in {span:?}"
        );
        assert!(
            busiest <= rate * 5 / 4,
            "{what}: {busiest} bytes in one second at 2 MiB/s"
        );
    };

    arrivals();
    env.backup(&[&src], &["--limit-upload", "2MiB"]);
    held("backup", arrivals());

    env.ok(&[
        "copy",
        "--from",
        &env.repo,
        "--to",
        "s3://paced-copy/r",
        "--limit-upload",
        "2MiB",
    ]);
    held("copy", arrivals());

    let target = env.path("restored");
    let spec = format!("latest:{}", src.display());
    let started = std::time::Instant::now();
    env.admin_ok(
        "restore",
        &[
            &spec,
            "--target",
            target.to_str().unwrap(),
            "--limit-download",
            "4MiB",
        ],
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2500), "restore took {took:?}");
    assert!(std::fs::read(target.join("twelve.bin")).unwrap() == data);
}
