//! Cold storage, against moto's S3 server (scripts/cold-server.sh), which
//! keeps GLACIER and DEEP_ARCHIVE as AWS does: a GET of such an object
//! answers `403 InvalidObjectState` until the object is restored. Data
//! packs go into the cold class (`backup --storage-class`), trees, indexes
//! and snapshots stay in the default class. And a compromised writer's
//! archived object where a snapshot goes (the hostile case).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use util::mount::diff_r;
use util::proxy::Proxy;
use util::s3::cold_server;
use util::*;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A repository whose data packs are in DEEP_ARCHIVE (two runs, each its
/// own pack: `a/` in the first, `b/` in the second): snapshots, ls, find,
/// diff and check answer from the hot metadata; a restore stops on the
/// first archived pack with an error that names `coffer warm-up` and
/// leaves no file behind. `warm-up --dry-run` of `b/` plans exactly its
/// pack, of the whole snapshot both; `warm-up b --wait` restores only
/// that one (so `a/` still cannot be read), a second warm-up asks for
/// nothing, and the whole snapshot, once warmed up, restores
/// byte-identical.
#[test]
fn warm_up_restores_exactly_the_packs_a_path_needs_and_then_it_reads() {
    let s3 = cold_server();
    s3.create_bucket("cold", false);
    let mut env = Env::on_s3(s3, "cold", "r");
    env.vars
        .push(("COFFER_WARM_UP_POLL_SECONDS".into(), "0.1".into()));
    let src = env.path("src");
    write(&src.join("a/one.bin"), &random_bytes(1, 300_000));
    let deep = ["--storage-class", "DEEP_ARCHIVE"];
    let first = env.backup(&[&src], &deep);
    let first = first["id"].as_str().unwrap().to_string();
    write(&src.join("b/two.bin"), &random_bytes(2, 300_000));
    // DEEP_ARCHIVE bills 180 days; the default horizon is 30: said.
    let mut args = deep.to_vec();
    let path = src.display().to_string();
    args.extend(["--json", &path]);
    let out = env.writer_cmd(&args).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("billed for at least 180 days"), "{said}");
    let second: serde_json::Value = serde_json::from_slice(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let second = second["id"].as_str().unwrap().to_string();

    assert_eq!(env.snapshots().len(), 2);
    let root = format!("{second}:{}", src.display());
    let (path_a, path_b) = (format!("{root}/a"), format!("{root}/b"));
    let listed = env.admin_ok("ls", &[&root, "--recursive"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("two.bin"));
    env.admin_ok("find", &["one.bin"]);
    env.admin_ok("diff", &[&first, &second]);
    env.admin_ok("check", &[]);

    let target = env.path("restored");
    let t = target.display().to_string();
    let out = env.admin("restore", &[&root, "--target", &t]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("archived in cold storage"), "{said}");
    assert!(said.contains("coffer warm-up"), "{said}");
    assert!(said.contains("files/"), "the error names no object: {said}");
    assert!(said.contains("nothing was written"), "{said}");
    let files = walk_files(&target);
    assert!(files.is_empty(), "left behind: {files:?}");

    let plan_b = json(&env.admin_ok("warm-up", &[&path_b, "--dry-run", "--json"]));
    assert_eq!(plan_b["totals"]["archived"], 1, "{plan_b}");
    assert_eq!(plan_b["requested"], 0, "{plan_b}");
    let plan_all = json(&env.admin_ok("warm-up", &[&root, "--dry-run", "--json"]));
    assert_eq!(plan_all["totals"]["archived"], 2, "{plan_all}");
    assert!(
        plan_all["estimated_cost_usd"].as_f64().is_some(),
        "{plan_all}"
    );
    // Prices given replace the table's: $1 a request, $1 a GB.
    let given = [&root, "--dry-run", "--json", "--price-per-gb", "1"];
    let mut given = given.to_vec();
    given.extend(["--price-per-1000", "1000"]);
    let priced = json(&env.admin_ok("warm-up", &given));
    let bytes = priced["totals"]["archived_bytes"].as_f64().unwrap();
    let dollars = priced["estimated_cost_usd"].as_f64().unwrap();
    assert!((dollars - (2.0 + bytes / 1e9)).abs() < 1e-9, "{priced}");
    assert_eq!(priced["prices"], "given", "{priced}");

    let warmed = json(&env.admin_ok("warm-up", &[&path_b, "--wait", "--json"]));
    assert_eq!(warmed["requested"], 1, "{warmed}");
    let out_b = env.path("b");
    env.admin_ok("restore", &[&path_b, "--target", out_b.to_str().unwrap()]);
    assert_eq!(diff_r(&src.join("b"), &out_b), Vec::<String>::new());
    let out_a = env.path("a");
    let refused = env.admin("restore", &[&path_a, "--target", out_a.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "a/ was readable unwarmed");

    let again = json(&env.admin_ok("warm-up", &[&path_b, "--json"]));
    assert_eq!(again["requested"], 0, "{again}");
    assert_eq!(again["totals"]["restored"], 1, "{again}");
    let rest = json(&env.admin_ok("warm-up", &[&root, "--wait", "--json"]));
    assert_eq!(rest["requested"], 1, "{rest}");
    assert!(!target.exists(), "the refused restore made its target");
    env.admin_ok("restore", &[&root, "--target", &t]);
    assert_eq!(diff_r(&src, &target), Vec::<String>::new());
}

/// The regular files below `root` (none if it is not there).
fn walk_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(listing) = std::fs::read_dir(&dir) else {
            continue;
        };
        for item in listing.flatten() {
            let path = item.path();
            match item.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out
}

/// A put-only credential can store an object in any storage class: a
/// "snapshot" planted in DEEP_ARCHIVE (on moto, which keeps cold classes
/// as AWS does) is left out of the listing with a warning rather than
/// failing it; prune, which must know every snapshot before it deletes
/// anything, stops on it and names it, and works again once it is gone.
#[test]
fn an_archived_object_planted_as_a_snapshot_is_left_out_and_prune_names_it() {
    let s3 = cold_server();
    s3.create_bucket("planted-cold", false);
    let env = Env::on_s3(s3, "planted-cold", "r");
    let src = env.path("src");
    make_tree(&src);
    env.backup(&[&src], &[]);
    let key = format!("r/snapshots/{}", "ab".repeat(32));
    let client = s3.admin_client();
    let rt = util::s3::rt();
    rt.block_on(
        client
            .put_object()
            .bucket("planted-cold")
            .key(&key)
            .storage_class(aws_sdk_s3::types::StorageClass::DeepArchive)
            .body(b"not a snapshot".to_vec().into())
            .send(),
    )
    .unwrap();

    let out = env.admin_ok("snapshots", &["--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains("archived in cold storage"), "{warned}");

    let out = env.admin("prune", &[]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&"ab".repeat(32)), "{said}");
    rt.block_on(
        client
            .delete_object()
            .bucket("planted-cold")
            .key(&key)
            .send(),
    )
    .unwrap();
    env.admin_ok("prune", &[]);
}

/// What a bucket lifecycle rule filtered on `files/` does to a version 3
/// repository, done at once (moto runs no lifecycle rules): every object
/// under `r/files/` copied onto itself into DEEP_ARCHIVE, as a transition
/// does. Only file contents are there: every other object stays in the
/// default class, so snapshots, ls, diff, check and the mount's listing
/// answer, a restore refuses naming warm-up, and after `warm-up --wait`
/// it restores byte-identical.
#[test]
fn a_lifecycle_rule_on_files_makes_file_contents_alone_cold() {
    let s3 = cold_server();
    s3.create_bucket("rule", false);
    let mut env = Env::on_s3(s3, "rule", "r");
    env.vars
        .push(("COFFER_WARM_UP_POLL_SECONDS".into(), "0.1".into()));
    let src = env.path("src");
    write(&src.join("a/one.bin"), &random_bytes(3, 300_000));
    write(&src.join("b/two.txt"), b"two\n");
    let first = env.backup(&[&src], &[]);
    write(&src.join("b/two.txt"), b"two, changed\n");
    let second = env.backup(&[&src], &[]);
    let id = |s: &serde_json::Value| s["id"].as_str().unwrap().to_string();

    let client = s3.admin_client();
    let rt = util::s3::rt();
    let listed = || {
        let page = rt
            .block_on(client.list_objects_v2().bucket("rule").prefix("r/").send())
            .unwrap();
        assert_ne!(page.is_truncated(), Some(true));
        page.contents()
            .iter()
            .map(|o| {
                let class = o.storage_class().map_or("STANDARD", |c| c.as_str());
                (o.key().unwrap().to_string(), class.to_string())
            })
            .collect::<Vec<_>>()
    };
    let moved: Vec<String> = listed()
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| key.starts_with("r/files/"))
        .collect();
    assert!(moved.len() >= 2, "{moved:?}");
    for key in &moved {
        rt.block_on(
            client
                .copy_object()
                .bucket("rule")
                .key(key)
                .copy_source(format!("rule/{key}"))
                .storage_class(aws_sdk_s3::types::StorageClass::DeepArchive)
                .send(),
        )
        .unwrap_or_else(|e| panic!("{key}: {e:?}"));
    }
    for (key, class) in listed() {
        let cold = key.starts_with("r/files/");
        assert_eq!(class == "DEEP_ARCHIVE", cold, "{key} in {class}");
    }

    let root = format!("{}:{}", id(&second), src.display());
    assert_eq!(env.snapshots().len(), 2);
    let ls = env.admin_ok("ls", &[&root, "--recursive"]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("one.bin"));
    let diff = env.admin_ok("diff", &[&id(&first), &id(&second)]);
    assert!(String::from_utf8_lossy(&diff.stdout).contains("two.txt"));
    env.admin_ok("check", &[]);
    // Reading the data skips what is archived (one GET each), says so, and
    // finds no damage.
    let checked = env.admin_ok("check", &["--read-data"]);
    let said = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(
        said.contains(&format!("in {} packs archived", moved.len())),
        "{said}"
    );
    assert!(said.contains("no damage"), "{said}");
    // The mount lists everything; a cold file reads as EIO (twice: the
    // warm-up command is logged once), and the same file reads, without a
    // remount, once warmed up below.
    let m = util::mount::Mounted::new(&env, &[]);
    let names = m.snapshot_names();
    assert_eq!(names.len(), 2, "{names:?}");
    let in_mount = under(&m.path("snapshots/latest"), &src).join("a/one.bin");
    for _ in 0..2 {
        let err = std::fs::read(&in_mount).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    }

    let target = env.path("restored");
    let t = target.display().to_string();
    let refused = env.admin("restore", &[&root, "--target", &t]);
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains("coffer warm-up") && said.contains("files/"),
        "{said}"
    );
    assert!(said.contains("nothing was written"), "{said}");
    assert!(!target.exists(), "the refused restore made its target");

    // `restore --warm-up` asks, says so, and stops before writing; with
    // --wait it waits, then restores.
    let asked = env.admin("restore", &[&root, "--target", &t, "--warm-up"]);
    let said = String::from_utf8_lossy(&asked.stderr).into_owned();
    assert_eq!(asked.status.code(), Some(1), "{said}");
    assert!(said.contains("asked S3 to restore"), "{said}");
    assert!(said.contains("nothing restored yet"), "{said}");
    assert!(!target.exists(), "restore --warm-up without --wait wrote");
    // (moto restores at once: this run finds them readable and asks
    // for nothing.)
    env.admin_ok("restore", &[&root, "--target", &t, "--warm-up", "--wait"]);
    assert_eq!(diff_r(&src, &target), Vec::<String>::new());
    assert_eq!(std::fs::read(&in_mount).unwrap(), random_bytes(3, 300_000));
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
    let logged = log.matches("coffer warm-up").count();
    assert_eq!(logged, 1, "{log}");
    // Warm (the first snapshot's own packs too), every chunk is read.
    env.admin_ok("warm-up", &[&id(&first), "--wait"]);
    let checked = env.admin_ok("check", &["--read-data"]);
    let said = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(!said.contains("archived"), "{said}");
}

/// Restores that take time, as on S3 (the test proxy in front of moto holds
/// each for 3 s after its `POST ?restore`, its HEAD saying
/// `ongoing-request="true"` and its GET `InvalidObjectState` meanwhile): a
/// second warm-up finds the packs restoring and asks for nothing; a
/// restore refuses, saying they are restoring; `warm-up --wait` prints its
/// progress until every pack is readable; then the restore is right.
#[test]
fn a_restore_that_takes_time_is_waited_for_with_progress_and_asked_once() {
    let s3 = cold_server();
    s3.create_bucket("slow", false);
    let proxy = Proxy::start(&s3.endpoint, 0);
    proxy
        .thaw_ms
        .store(3000, std::sync::atomic::Ordering::Relaxed);
    let mut env = Env::on_s3_as_admin(s3, &proxy.endpoint, "s3://slow/r", &[]);
    env.vars
        .push(("COFFER_WARM_UP_POLL_SECONDS".into(), "0.5".into()));
    let src = env.path("src");
    write(&src.join("one.bin"), &random_bytes(5, 300_000));
    write(&src.join("two.txt"), b"two\n");
    env.backup(&[&src], &["--storage-class", "DEEP_ARCHIVE"]);
    let root = format!("latest:{}", src.display());

    let asked = json(&env.admin_ok("warm-up", &[&root, "--json"]));
    let packs = asked["totals"]["packs"].as_u64().unwrap();
    assert!(packs >= 1, "{asked}");
    assert_eq!(asked["requested"].as_u64(), Some(packs), "{asked}");
    let again = json(&env.admin_ok("warm-up", &[&root, "--json"]));
    assert_eq!(again["requested"], 0, "{again}");
    assert_eq!(
        again["totals"]["restoring"].as_u64(),
        Some(packs),
        "{again}"
    );

    let target = env.path("out");
    let t = target.display().to_string();
    let refused = env.admin("restore", &[&root, "--target", &t]);
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("({packs} restoring")), "{said}");

    let waited = env.admin_ok("warm-up", &[&root, "--wait"]);
    let said = String::from_utf8_lossy(&waited.stderr).into_owned();
    assert!(
        said.contains(&format!("0 of {packs} packs readable, {packs} restoring")),
        "{said}"
    );
    assert!(
        said.contains(&format!("{packs} of {packs} packs readable, 0 restoring")),
        "{said}"
    );
    env.admin_ok("restore", &[&root, "--target", &t]);
    assert_eq!(diff_r(&src, &target), Vec::<String>::new());
    // One restore request per pack, however often asked about.
    let posts = proxy
        .heads
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.starts_with("POST ") && h.contains("?restore"))
        .count();
    assert_eq!(posts as u64, packs);
}
