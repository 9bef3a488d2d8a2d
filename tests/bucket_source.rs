//! `coffer backup s3://BUCKET/PREFIX`: an S3 bucket as a source, through the
//! real binary and a real S3 server (radosgw). Its two users stand for two
//! accounts: the admin's owns the source bucket; the other may only List
//! and Get it, and only PutObject into the repository's bucket, and the
//! backups run as that one. The objects come back from restore and mount
//! byte-identical with their ETag, content type and user metadata as
//! `user.s3.*` attributes; an unchanged bucket is not read again; objects
//! changed or deleted between the listing and their GET are reported.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use util::mount::{diff_r, Mounted};
use util::proxy::Proxy;
use util::s3::{put_only_policy, rt, server, with_profiles, S3Server};
use util::*;

/// A policy letting `user` list `bucket` and get its objects, nothing else.
fn read_only_policy(bucket: &str, user: &str) -> String {
    format!(
        r#"{{"Version": "2012-10-17", "Statement": [{{
  "Sid": "SourceReadOnly", "Effect": "Allow",
  "Principal": {{"AWS": ["arn:aws:iam:::user/{user}"]}},
  "Action": ["s3:ListBucket", "s3:GetObject"],
  "Resource": ["arn:aws:s3:::{bucket}", "arn:aws:s3:::{bucket}/*"]}}]}}"#
    )
}

/// An object to put: its bytes, content type and user metadata.
#[derive(Clone)]
struct Obj {
    bytes: Vec<u8>,
    content_type: Option<&'static str>,
    meta: Vec<(&'static str, &'static str)>,
}

fn plain(bytes: Vec<u8>) -> Obj {
    Obj {
        bytes,
        content_type: None,
        meta: Vec::new(),
    }
}

/// Puts `objects` into `bucket` as the admin, 32 at a time.
fn put_objects(s3: &S3Server, bucket: &str, objects: &BTreeMap<String, Obj>) {
    let client = s3.admin_client();
    rt().block_on(async {
        let all: Vec<_> = objects.iter().collect();
        for batch in all.chunks(32) {
            let mut set = tokio::task::JoinSet::new();
            for (key, obj) in batch {
                let mut req = client
                    .put_object()
                    .bucket(bucket)
                    .key(key.as_str())
                    .body(obj.bytes.clone().into());
                if let Some(t) = obj.content_type {
                    req = req.content_type(t);
                }
                for (k, v) in &obj.meta {
                    req = req.metadata(*k, *v);
                }
                let key = key.to_string();
                set.spawn(async move { req.send().await.map_err(|e| format!("{key}: {e:?}")) });
            }
            while let Some(done) = set.join_next().await {
                done.unwrap().unwrap();
            }
        }
    });
}

fn delete_object(s3: &S3Server, bucket: &str, key: &str) {
    let c = s3.admin_client();
    rt().block_on(c.delete_object().bucket(bucket).key(key).send())
        .unwrap();
}

/// The object's ETag (unquoted) and LastModified (Unix seconds).
fn head(s3: &S3Server, bucket: &str, key: &str) -> (String, i64) {
    let c = s3.admin_client();
    let out = rt()
        .block_on(c.head_object().bucket(bucket).key(key).send())
        .unwrap();
    (
        out.e_tag().unwrap().trim_matches('"').to_string(),
        out.last_modified().unwrap().secs(),
    )
}

/// The 1,000 objects of the source: nested prefixes, names with spaces and
/// non-ASCII, two folder markers (empty directories), one of 50 MiB, some
/// with a content type and user metadata.
fn source_objects() -> BTreeMap<String, Obj> {
    let mut objects = BTreeMap::new();
    let mut seed = 0;
    let mut small = |max: u64| {
        seed += 1;
        random_bytes(seed, (seed * 7919 % max) as usize)
    };
    for i in 0..10 {
        for j in 0..10 {
            for k in 0..9 {
                objects.insert(format!("d{i}/e{j}/obj-{k}.txt"), plain(small(3000)));
            }
        }
    }
    for k in 0..40 {
        objects.insert(
            format!("spaces dir/file with spaces {k}.txt"),
            plain(small(500)),
        );
        objects.insert(format!("ünïcødé/файл-{k}.bin"), plain(small(500)));
    }
    for k in 0..16 {
        let obj = Obj {
            content_type: Some("text/csv"),
            ..plain(small(800))
        };
        objects.insert(format!("misc/m{k}.csv"), obj);
    }
    objects.insert("empty/".into(), plain(Vec::new()));
    objects.insert("d0/hollow/".into(), plain(Vec::new()));
    objects.insert(
        "top-level.json".into(),
        Obj {
            bytes: b"{\"hello\": \"world\"}".to_vec(),
            content_type: Some("application/json"),
            meta: vec![("owner", "alice"), ("purpose", "backup test")],
        },
    );
    objects.insert("big/fifty.bin".into(), plain(random_bytes(50, 50 << 20)));
    assert_eq!(objects.len(), 1000);
    objects
}

/// Files (relative path, bytes) and directories below `root`.
fn walk(root: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut files = BTreeMap::new();
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            if p.is_dir() {
                dirs.push(rel);
                stack.push(p);
            } else {
                files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    dirs.sort();
    (files, dirs)
}

/// What a restore of the bucket must hold: every object but the folder
/// markers, by key.
fn expected_files(objects: &BTreeMap<String, Obj>) -> BTreeMap<String, Vec<u8>> {
    objects
        .iter()
        .filter(|(k, _)| !k.ends_with('/'))
        .map(|(k, o)| (k.clone(), o.bytes.clone()))
        .collect()
}

/// Object GETs (not listings) of `bucket` the proxy saw, by key.
fn object_gets(proxy: &Proxy, bucket: &str) -> Vec<String> {
    let prefix = format!("/{bucket}/");
    proxy
        .requests("GET", &prefix)
        .iter()
        .filter_map(|h| {
            let path = h.split(' ').nth(1)?;
            let path = path.split('?').next()?;
            (!h.contains("list-type")).then(|| path[prefix.len()..].to_string())
        })
        .collect()
}

/// A backup of `sources` with `--json`; exit code and last JSON line.
fn backup(env: &Env, sources: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["--json", "--source-profile", "putonly"];
    args.extend_from_slice(sources);
    let out = env.writer_cmd(&args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        last_json_line(&out.stdout),
        text(&out),
    )
}

/// Two accounts: the source bucket is the admin's, read-only to the other
/// user; the repository's bucket takes only that user's PUTs. Every
/// command but backup runs as the admin.
fn two_accounts(s3: &S3Server, proxy: &Proxy, source: &str, repo_bucket: &str) -> Env {
    let mut env = Env::bare();
    with_profiles(&mut env, s3, &proxy.endpoint);
    env.repo = format!("s3://{repo_bucket}/r");
    env.writer_vars = vec![("AWS_PROFILE".into(), "putonly".into())];
    env.generate_keys();
    s3.create_bucket(source, false);
    s3.set_policy(source, &read_only_policy(source, &s3.writer_user));
    s3.create_bucket(repo_bucket, false);
    env.ok(&[
        "init",
        "--repo",
        &env.repo,
        "--recipient",
        "admin.cert",
        "--writer-key-out",
        "writer.key",
    ]);
    s3.set_policy(
        repo_bucket,
        &put_only_policy(repo_bucket, &s3.writer_user, &["*"]),
    );
    env
}

#[test]
fn a_bucket_backs_up_with_read_only_credentials_and_unchanged_objects_are_not_read_again() {
    let s3 = server();
    let proxy = Proxy::start(&s3.endpoint, 0);
    let env = two_accounts(s3, &proxy, "src-objects", "src-repo");
    let mut objects = source_objects();
    put_objects(s3, "src-objects", &objects);

    // First run, through a proxy that fails 5% of requests (503s, resets,
    // bodies cut short: a 50 MiB stream cut short is resumed).
    proxy.fail_percent.store(5, Ordering::Relaxed);
    let (code, first, log) = backup(&env, &["s3://src-objects"]);
    proxy.fail_percent.store(0, Ordering::Relaxed);
    assert_eq!(code, 0, "{log}");
    assert_eq!(first["paths"], serde_json::json!(["s3://src-objects"]));
    assert_eq!(first["stats"]["files"], 998, "{first}");
    assert_eq!(first["stats"]["files_read"], 998);
    let mut gets = object_gets(&proxy, "src-objects");
    gets.sort();
    gets.dedup();
    assert_eq!(gets.len(), 998, "every object fetched");
    // The other user only listed and read the source and only stored into
    // the repository.
    let key = format!("Credential={}/", s3.writer.access_key);
    for h in proxy
        .heads
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.contains(&key))
    {
        let line = h.lines().next().unwrap();
        let ok = line.starts_with("GET /src-objects") || line.starts_with("PUT /src-repo/");
        assert!(ok, "{line}");
    }

    // Restore and mount show the objects as the files they are.
    let out = env.path("restored");
    env.restore("latest", &out);
    let root = out.join("s3/src-objects");
    let (files, dirs) = walk(&root);
    assert_eq!(files.len(), 998);
    assert!(files == expected_files(&objects), "restored bytes differ");
    for empty in ["empty", "d0/hollow"] {
        assert!(dirs.contains(&empty.to_string()), "{empty}: {dirs:?}");
        assert_eq!(std::fs::read_dir(root.join(empty)).unwrap().count(), 0);
    }
    let json = root.join("top-level.json");
    let (etag, modified) = head(s3, "src-objects", "top-level.json");
    let xattr = |name: &str| get_xattr(&json, name).map(|v| String::from_utf8(v).unwrap());
    assert_eq!(xattr("user.s3.etag"), Some(etag));
    assert_eq!(
        xattr("user.s3.content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(xattr("user.s3.meta.owner").as_deref(), Some("alice"));
    assert_eq!(
        xattr("user.s3.meta.purpose").as_deref(),
        Some("backup test")
    );
    let mtime = std::fs::metadata(&json).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::mtime(&mtime), modified);
    let m = Mounted::new(&env, &[]);
    let through = m.path("snapshots/latest/s3/src-objects");
    assert_eq!(diff_r(&root, &through), Vec::<String>::new());
    assert_eq!(
        get_xattr(&through.join("top-level.json"), "user.s3.meta.owner").as_deref(),
        Some(&b"alice"[..])
    );
    drop(m);

    // Nothing changed: nothing downloaded.
    let before = object_gets(&proxy, "src-objects").len();
    let (code, second, log) = backup(&env, &["s3://src-objects"]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(second["stats"]["files_read"], 0, "{second}");
    assert_eq!(second["stats"]["files"], 998);
    assert_eq!(object_gets(&proxy, "src-objects").len(), before);

    // Three changed, two deleted, four added: exactly those seven read.
    let mut changes = BTreeMap::new();
    for (n, key) in ["d1/e1/obj-1.txt", "misc/m3.csv", "ünïcødé/файл-7.bin"]
        .iter()
        .enumerate()
    {
        changes.insert(key.to_string(), plain(random_bytes(900 + n as u64, 1234)));
    }
    for k in 0..4 {
        changes.insert(
            format!("new/added {k}.txt"),
            plain(random_bytes(950 + k, 777)),
        );
    }
    put_objects(s3, "src-objects", &changes);
    for gone in ["d2/e2/obj-2.txt", "spaces dir/file with spaces 3.txt"] {
        delete_object(s3, "src-objects", gone);
        objects.remove(gone);
    }
    objects.extend(changes.clone());
    let (code, third, log) = backup(&env, &["s3://src-objects"]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(third["stats"]["files_read"], 7, "{third}");
    let mut read: Vec<String> = object_gets(&proxy, "src-objects")[before..].to_vec();
    read.sort();
    let mut want: Vec<String> = changes.keys().map(|k| percent_path(k)).collect();
    want.sort();
    assert_eq!(read, want);
    let out = env.path("restored-3");
    env.restore("latest", &out);
    let (files, _) = walk(&out.join("s3/src-objects"));
    assert!(files == expected_files(&objects), "third restore differs");
}

/// A key as it appears in a request path (percent-encoded, `/` kept).
fn percent_path(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[test]
fn objects_changed_or_deleted_after_the_listing_are_reported_and_the_rest_stored() {
    let s3 = server();
    let proxy = Proxy::start(&s3.endpoint, 0);
    let env = two_accounts(s3, &proxy, "src-moving", "src-moving-repo");
    let objects: BTreeMap<String, Obj> = ["a.txt", "b.txt", "c.txt"]
        .iter()
        .enumerate()
        .map(|(n, k)| (k.to_string(), plain(random_bytes(n as u64, 5000))))
        .collect();
    put_objects(s3, "src-moving", &objects);

    // Every request is held 1.5 s at the proxy: once the three GETs have
    // arrived there, the listing is answered and they are not yet sent on.
    proxy.stall_ms.store(1500, Ordering::Relaxed);
    let child = env
        .writer_cmd(&["--json", "--source-profile", "putonly", "s3://src-moving"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    util::mount::wait_until(Duration::from_secs(30), || {
        object_gets(&proxy, "src-moving").len() == 3
    });
    delete_object(s3, "src-moving", "a.txt");
    put_objects(
        s3,
        "src-moving",
        &BTreeMap::from([("b.txt".to_string(), plain(b"replaced".to_vec()))]),
    );
    let out = child.wait_with_output().unwrap();
    proxy.stall_ms.store(0, Ordering::Relaxed);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(
        log.contains("s3://src-moving/a.txt: cannot read: deleted during the backup"),
        "{log}"
    );
    assert!(
        log.contains("s3://src-moving/b.txt: cannot read: changed during the backup"),
        "{log}"
    );
    let summary = last_json_line(&out.stdout);
    assert_eq!(summary["stats"]["files"], 1, "{summary}");
    let restored = env.path("restored");
    env.restore("latest", &restored);
    let (files, _) = walk(&restored.join("s3/src-moving"));
    assert_eq!(files.keys().collect::<Vec<_>>(), ["c.txt"]);
    assert!(files["c.txt"] == objects["c.txt"].bytes);
}

/// An object whose user metadata passes what readers take (S3 allows 2 KiB
/// of metadata; a 1 KiB key makes a `user.s3.meta.*` attribute name past
/// Linux's 255 bytes). radosgw refuses such a key (500), so the proxy adds
/// it to the object's GET answer, as AWS would send it. The attribute is
/// left out with a warning (exit 3), and the object and its neighbours
/// restore: never a success that does not restore.
#[test]
fn a_metadata_key_readers_would_refuse_is_left_out_and_the_object_restores() {
    let s3 = server();
    let proxy = Proxy::start(&s3.endpoint, 0);
    let env = two_accounts(s3, &proxy, "src-longmeta", "src-longmeta-repo");
    let objects: BTreeMap<String, Obj> = ["app/ok.txt", "app/long.txt"]
        .iter()
        .enumerate()
        .map(|(n, k)| (k.to_string(), plain(random_bytes(n as u64 + 40, 3000))))
        .collect();
    put_objects(s3, "src-longmeta", &objects);
    let long_key = "k".repeat(1024);
    *proxy.added_header.lock().unwrap() = Some((
        "/src-longmeta/app/long.txt".into(),
        format!("x-amz-meta-{long_key}: planted"),
    ));
    let (code, summary, log) = backup(&env, &["s3://src-longmeta/app"]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("s3://src-longmeta/app/long.txt: extended attribute left out"),
        "{log}"
    );
    assert_eq!(summary["stats"]["files"], 2, "{summary}");

    let restored = env.path("restored");
    env.restore("latest", &restored);
    let (files, _) = walk(&restored.join("s3/src-longmeta/app"));
    assert_eq!(files.keys().collect::<Vec<_>>(), ["long.txt", "ok.txt"]);
    for (name, file) in &files {
        assert!(file == &objects[&format!("app/{name}")].bytes, "{name}");
    }
    let long = restored.join("s3/src-longmeta/app/long.txt");
    assert!(get_xattr(&long, "user.s3.etag").is_some());
    let out = env.admin("check", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
