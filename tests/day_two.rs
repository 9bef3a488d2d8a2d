//! Day two with a fleet: `find` and `ls` across snapshots, restore over a
//! live tree, and snapshot selection (`--host`, `--tag`, `--path`) on the
//! commands that take a snapshot. Real binary, a local repository written by two writers.
#![allow(clippy::unwrap_used)] // tests/util is shared test code

mod util;

use std::path::Path;
use util::mount::Mounted;
use util::{text, write, Env};

/// `find --json` output: one object a line.
fn find_json(env: &Env, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = env.admin_ok("find", &all);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A repository with a second writer, `web-3` (its key in w3.key).
fn fleet() -> Env {
    let env = Env::new();
    let repo = env.repo.clone();
    env.ok(&[
        "writer",
        "add",
        "web-3",
        "--repo",
        &repo,
        "--key",
        "admin.key",
        "--writer-key-out",
        "w3.key",
    ]);
    env
}

/// `backup --host HOST PATH` with writer key `key`.
fn backup_as(env: &Env, key: &str, host: &str, path: &Path, extra: &[&str]) {
    let repo = env.repo.clone();
    let path = path.display().to_string();
    let mut args = vec![
        "backup",
        "--repo",
        &repo,
        "--writer-key",
        key,
        "--host",
        host,
        "--state-dir",
    ];
    let state = format!("state-{host}");
    args.push(&state);
    args.extend_from_slice(extra);
    args.push(&path);
    env.ok(&args);
}

/// web-1's a.conf added, kept, changed, removed, added again; web-3's own
/// a.conf beside it. `find` gives each path's history as runs per host.
#[test]
fn find_gives_each_paths_history_as_runs_per_host() {
    let env = fleet();
    let (one, three) = (env.path("web1"), env.path("web3"));
    write(&one.join("etc/a.conf"), b"v1\n");
    write(&one.join("etc/other"), b"x\n");
    write(&three.join("etc/a.conf"), b"three\n");
    backup_as(&env, "writer.key", "web-1", &one, &[]);
    backup_as(&env, "w3.key", "web-3", &three, &[]);
    backup_as(&env, "writer.key", "web-1", &one, &[]);
    write(&one.join("etc/a.conf"), b"v2, longer\n");
    backup_as(&env, "writer.key", "web-1", &one, &[]);
    std::fs::remove_file(one.join("etc/a.conf")).unwrap();
    backup_as(&env, "writer.key", "web-1", &one, &[]);
    backup_as(&env, "w3.key", "web-3", &three, &[]);
    write(&one.join("etc/a.conf"), b"v2, longer\n");
    backup_as(&env, "writer.key", "web-1", &one, &["--tag", "readded"]);

    let runs = find_json(&env, &["a.conf"]);
    let ours = format!("{}/etc/a.conf", one.display());
    let web1: Vec<(u64, u64)> = runs
        .iter()
        .filter(|r| r["path"] == ours.as_str())
        .map(|r| {
            assert_eq!(r["host"], "web-1", "{r}");
            (
                r["snapshots"].as_u64().unwrap(),
                r["size"].as_u64().unwrap(),
            )
        })
        .collect();
    // Added (two snapshots), changed (one), removed, added again (one).
    assert_eq!(web1, [(2, 3), (1, 11), (1, 11)], "{runs:?}");
    let theirs = format!("{}/etc/a.conf", three.display());
    let web3: Vec<&serde_json::Value> = runs
        .iter()
        .filter(|r| r["path"] == theirs.as_str())
        .collect();
    assert_eq!(web3.len(), 1, "{runs:?}");
    assert_eq!(
        (web3[0]["host"].as_str(), web3[0]["snapshots"].as_u64()),
        (Some("web-3"), Some(2))
    );
    assert_ne!(web3[0]["first"]["id"], web3[0]["last"]["id"]);

    // Selection: one host, one tag, the newest snapshot only.
    let only3 = find_json(&env, &["a.conf", "--host", "web-3"]);
    assert!(
        only3.iter().all(|r| r["host"] == "web-3") && only3.len() == 1,
        "{only3:?}"
    );
    let tagged = find_json(&env, &["a.conf", "--tag", "readded"]);
    assert_eq!(tagged.len(), 1, "{tagged:?}");
    assert_eq!(find_json(&env, &["a.conf", "--newest", "1"]).len(), 1);
    // A pattern with `/` matches the whole path; `*` stays in a component.
    let by_path = find_json(&env, &[&format!("{}/*/a.conf", three.display())]);
    assert!(by_path.iter().all(|r| r["path"] == theirs.as_str()) && !by_path.is_empty());
    assert!(find_json(&env, &[&format!("{}/*.conf", three.display())]).is_empty());

    // The table names both ends of each run; verbose says what it read.
    let table = env.admin_ok("find", &["a.conf"]);
    let said = text(&table);
    assert_eq!(said.matches(&ours).count(), 3, "{said}");
    assert!(said.contains("web-3"), "{said}");

    // A pattern that does not parse is named; exit 2.
    let bad = env.admin("find", &["a["]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("\"a[\""), "{}", text(&bad));
}

/// `latest` is the newest of the selection; an ambiguous id says which
/// hosts; `ls` lists a directory, all below it, or one entry long.
#[test]
fn selection_and_ls_answer_per_host() {
    let env = fleet();
    let (one, three) = (env.path("web1"), env.path("web3"));
    write(&one.join("d/f1"), b"one\n");
    write(&three.join("d/f3"), b"three!\n");
    backup_as(&env, "writer.key", "web-1", &one, &["--tag", "prod"]);
    backup_as(&env, "w3.key", "web-3", &three, &[]);
    backup_as(&env, "writer.key", "web-1", &one, &[]);

    // snapshots --host/--tag/--path
    let listed = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = env.admin_ok("snapshots", &all);
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        list.iter()
            .map(|s| s["host"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&[]).len(), 3);
    assert_eq!(listed(&["--host", "web-3"]), ["web-3"]);
    assert_eq!(listed(&["--tag", "prod"]), ["web-1"]);
    let three_path = three.display().to_string();
    assert_eq!(listed(&["--path", &three_path]), ["web-3"]);
    assert_eq!(listed(&["--host", "web-1", "--host", "web-3"]).len(), 3);

    // latest of web-3 is web-3's, though web-1 wrote after it.
    let target = env.path("t3");
    env.admin_ok(
        "restore",
        &[
            "latest",
            "--host",
            "web-3",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert!(util::under(&target, &three).join("d/f3").is_file());
    let out = env.admin_ok(
        "cat",
        &[
            &format!("latest:{}/d/f3", three.display()),
            "--host",
            "web-3",
        ],
    );
    assert_eq!(out.stdout, b"three!\n");

    // Nothing selected, or an id prefix several hosts' snapshots share.
    let none = env.admin("restore", &["latest", "--host", "nosuch", "--target", "x"]);
    assert!(!none.status.success());
    assert!(
        text(&none).contains("no snapshot is selected by --host nosuch"),
        "{}",
        text(&none)
    );
    let ambiguous = env.admin("ls", &[""]);
    assert!(!ambiguous.status.success());
    let said = text(&ambiguous);
    assert!(
        said.contains("3 snapshots match") && said.contains("of hosts web-1, web-3"),
        "{said}"
    );

    // ls: a directory, everything below it, one entry long, JSON lines.
    let spec = format!("latest:{}", one.display());
    let out = env.admin_ok("ls", &[&spec, "--host", "web-1"]);
    assert_eq!(text(&out).trim(), format!("{}/d", one.display()));
    let out = env.admin_ok("ls", &[&spec, "--host", "web-1", "--recursive"]);
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        lines,
        [
            format!("{}/d", one.display()),
            format!("{}/d/f1", one.display())
        ]
    );
    let out = env.admin_ok("ls", &[&format!("{spec}/d/f1"), "--host", "web-1", "-l"]);
    let line = text(&out);
    assert!(
        line.starts_with("-rw") && line.contains(" 4 ") && line.contains("/d/f1"),
        "{line}"
    );
    let out = env.admin_ok("ls", &[&spec, "--host", "web-1", "-R", "--json"]);
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["type"], "dir");
    let missing = env.admin("ls", &[&format!("{spec}/nope"), "--host", "web-1"]);
    assert!(
        !missing.status.success() && text(&missing).contains("nope"),
        "{}",
        text(&missing)
    );
}

/// The mount shows only what `--host` selects; `hosts/<host>/latest` and
/// `tags/<tag>/latest` link to the newest of their group.
#[test]
fn the_mount_selects_and_links_each_groups_latest() {
    let env = fleet();
    let (one, three) = (env.path("web1"), env.path("web3"));
    write(&one.join("f"), b"one\n");
    write(&three.join("f"), b"three\n");
    backup_as(&env, "writer.key", "web-1", &one, &["--tag", "nightly"]);
    backup_as(&env, "w3.key", "web-3", &three, &["--tag", "nightly"]);
    write(&one.join("f"), b"one, again\n");
    backup_as(&env, "writer.key", "web-1", &one, &[]);

    let m = Mounted::new(&env, &[]);
    let names = m.snapshot_names();
    assert_eq!(names.len(), 3, "{names:?}");
    let link = |rel: &str| std::fs::read_link(m.path(rel)).unwrap();
    let newest_of = |host: &str| {
        let mut of: Vec<String> = std::fs::read_dir(m.path(&format!("hosts/{host}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "latest")
            .collect();
        of.sort();
        of.pop().unwrap()
    };
    assert_eq!(link("hosts/web-1/latest"), Path::new(&newest_of("web-1")));
    assert_eq!(link("hosts/web-3/latest"), Path::new(&newest_of("web-3")));
    let in_one = util::under(&m.path("hosts/web-1/latest"), &one).join("f");
    assert_eq!(std::fs::read(in_one).unwrap(), b"one, again\n");
    let tagged = util::under(&m.path("tags/nightly/latest"), &three).join("f");
    assert_eq!(std::fs::read(tagged).unwrap(), b"three\n");
    drop(m);

    let m = Mounted::new(&env, &["--host", "web-3"]);
    let names = m.snapshot_names();
    assert_eq!(names.len(), 1, "{names:?}");
    let hosts: Vec<String> = std::fs::read_dir(m.path("hosts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(hosts, ["web-3"]);
}

/// `ls -R --json` of the newest snapshot: the paths below `root`, relative.
fn stored_below(env: &Env, root: &Path) -> Vec<String> {
    let spec = format!("latest:{}", root.display());
    let out = env.admin_ok("ls", &[&spec, "-R", "--json"]);
    let prefix = format!("{}/", root.display());
    let mut paths: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .filter_map(|p| p.strip_prefix(&prefix).map(String::from))
        .collect();
    paths.sort();
    paths
}

/// --files-from (lines, verbatim, NUL), --exclude-file, --exclude-caches,
/// --exclude-if-present and --exclude-larger-than each leave out what they
/// name; a listed path that does not exist, or a bad size, stops the run
/// before anything is stored, naming it.
#[test]
fn backup_selection_options_leave_out_what_they_name() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("keep.txt"), b"k");
    write(&src.join("big.bin"), &[7u8; 2000]);
    write(&src.join("a.log"), b"l");
    write(
        &src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    );
    write(&src.join("cache/junk"), b"j");
    write(&src.join("fakecache/CACHEDIR.TAG"), b"not the signature\n");
    write(&src.join("fakecache/kept"), b"x");
    write(&src.join("tmp/.nobackup"), b"");
    write(&src.join("tmp/t"), b"t");
    write(&src.join("other/o.txt"), b"o");
    let s = src.display().to_string();
    write(
        &env.path("list"),
        format!("# what to back up\n\n  {s}/keep.txt  \n{s}/cache\n{s}/fakecache\n{s}/tmp\n")
            .as_bytes(),
    );
    write(
        &env.path("list0"),
        format!("{s}/big.bin\0{s}/a.log\0").as_bytes(),
    );
    write(&env.path("excludes"), b"# logs\n\n*.log\n");
    let args = [
        "--files-from",
        "list",
        "--files-from-raw",
        "list0",
        "--exclude-file",
        "excludes",
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-larger-than",
        "1KiB",
    ];
    env.backup(&[], &args);
    assert_eq!(
        stored_below(&env, &src),
        [
            "cache",
            "cache/CACHEDIR.TAG",
            "fakecache",
            "fakecache/CACHEDIR.TAG",
            "fakecache/kept",
            "keep.txt",
            "tmp",
            "tmp/.nobackup",
        ]
    );

    // Verbatim keeps a line's spaces: a path that does not exist, named.
    write(&env.path("verbatim"), format!("{s}/keep.txt \n").as_bytes());
    let out = env
        .writer_cmd(&["--files-from-verbatim", "verbatim"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("keep.txt "), "{}", text(&out));
    let missing = env.writer_cmd(&["--files-from", "nope"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        text(&missing).contains("nope: cannot read the list of paths"),
        "{}",
        text(&missing)
    );
    let bad = env
        .writer_cmd(&["--exclude-larger-than", "12XB", &s])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("12XB"), "{}", text(&bad));
    assert_eq!(env.snapshots().len(), 1);
}

/// `stats` against a hand count: files and bytes as a restore writes them,
/// distinct blobs (a duplicate file stored once), what only the newest
/// snapshot holds, and the packs.
#[test]
fn stats_match_a_hand_count() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha");
    write(&src.join("c.txt"), b"alpha");
    write(&src.join("b.bin"), &util::random_bytes(3, 300_000));
    env.backup(&[&src], &[]);
    write(&src.join("d.txt"), b"delta!");
    env.backup(&[&src], &[]);
    let stats = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_slice(&env.admin_ok("stats", &all).stdout).unwrap()
    };
    let newest = stats(&["latest"]);
    let s = &newest["snapshots"];
    let dirs = src.ancestors().count() as u64 - 1; // each directory down to src
    assert_eq!(s["restored"]["files"], 4, "{newest}");
    assert_eq!(s["restored"]["dirs"], dirs, "{newest}");
    assert_eq!(s["restored"]["bytes"], 5 + 5 + 300_000 + 6, "{newest}");
    // Chunks: alpha (once), b.bin, delta; trees: the root and each directory.
    assert_eq!(s["blobs"]["count"], 3 + dirs + 1, "{newest}");
    assert!(
        s["blobs"]["raw_bytes"].as_u64().unwrap() > 300_011,
        "{newest}"
    );
    // Only the newest holds delta and the trees on src's path (all changed).
    assert_eq!(s["unique"]["count"], 1 + dirs + 1, "{newest}");
    let both = stats(&[]);
    let s = &both["snapshots"];
    assert_eq!(
        (s["snapshots"].as_u64(), s["restored"]["files"].as_u64()),
        (Some(2), Some(7))
    );
    assert_eq!(s["unique"], s["blobs"], "{both}");
    let packs = env.packs().len() as u64;
    assert_eq!(
        both["repository"]["packs_by_class"]["STANDARD"][0], packs,
        "{both}"
    );
    assert_eq!(both["repository"]["snapshots"], 2);
    // A dedup ratio above 1: alpha twice, stored once (and the text form says it).
    assert!(both["dedup_ratio"].as_f64().unwrap() > 1.0, "{both}");
    let text = text(&env.admin_ok("stats", &["latest"]));
    assert!(
        text.contains("dedup ratio") && text.contains("packs, STANDARD"),
        "{text}"
    );
}

/// `restore --overwrite --delete` over a tree in use: `--dry-run` prints
/// the plan (a word and a path a line) and changes nothing; the run makes
/// the tree the snapshot's; `--overwrite MODE` takes the mode after a
/// space too.
#[test]
fn restore_over_a_live_tree_plans_then_syncs_it() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("etc/app.conf"), b"listen 80\n");
    write(&src.join("etc/other.conf"), b"unchanged\n");
    write(&src.join("data/blob"), &util::random_bytes(5, 2_000_000));
    env.backup(&[&src], &[]);
    let spec = format!("latest:{}", src.display());
    let target = env.path("live");
    env.restore(&spec, &target);

    write(&target.join("etc/app.conf"), b"listen 8080\n");
    write(&target.join("etc/local.conf"), b"added since\n");
    std::fs::remove_file(target.join("data/blob")).unwrap();
    let t = target.display().to_string();
    let before = util::listing(&target);
    let plan = env.admin_ok("restore", &[&spec, "--target", &t, "--delete", "--dry-run"]);
    let plan = String::from_utf8(plan.stdout).unwrap();
    let lines: Vec<&str> = plan.lines().collect();
    let (app, local, blob) = (
        target.join("etc/app.conf"),
        target.join("etc/local.conf"),
        target.join("data/blob"),
    );
    assert!(
        lines.contains(&format!("update    {}", app.display()).as_str()),
        "{plan}"
    );
    assert!(
        lines.contains(&format!("delete    {}", local.display()).as_str()),
        "{plan}"
    );
    assert!(
        lines.contains(&format!("new       {}", blob.display()).as_str()),
        "{plan}"
    );
    assert!(!plan.contains("other.conf"), "{plan}");
    assert!(
        plan.contains("dry run: would write 2 files (1 over files that differ"),
        "{plan}"
    );
    assert_eq!(util::listing(&target), before);
    assert_eq!(std::fs::read(&app).unwrap(), b"listen 8080\n");

    // restic's spelling: the mode after a space. The file edited since is
    // newer than the snapshot's: kept; the missing one is restored.
    env.admin_ok(
        "restore",
        &[&spec, "--target", &t, "--overwrite", "if-newer"],
    );
    assert_eq!(std::fs::read(&app).unwrap(), b"listen 8080\n");
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        util::random_bytes(5, 2_000_000)
    );

    env.admin_ok("restore", &[&spec, "--target", &t, "--delete", "--verify"]);
    assert_eq!(std::fs::read(&app).unwrap(), b"listen 80\n");
    assert!(!local.exists());
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        util::random_bytes(5, 2_000_000)
    );
    let out = std::process::Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&src)
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// `--limit-upload` and `--limit-download`: 6 MiB at 2 MiB/s take about
/// three seconds each way (the bytes after the first object wait their
/// turn), the result is whole, and a rate without a unit is refused.
#[test]
fn limits_pace_backup_and_restore_and_a_rate_needs_a_unit() {
    let env = Env::new();
    let src = env.path("src");
    let data = util::random_bytes(11, 6 << 20);
    write(&src.join("six.bin"), &data);
    let started = std::time::Instant::now();
    env.backup(&[&src], &["--limit-upload", "2MiB"]);
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(2500),
        "backup took {took:?}"
    );

    let target = env.path("restored");
    let t = target.display().to_string();
    let spec = format!("latest:{}", src.display());
    let started = std::time::Instant::now();
    env.admin_ok(
        "restore",
        &[&spec, "--target", &t, "--limit-download", "2MiB"],
    );
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(2500),
        "restore took {took:?}"
    );
    assert!(std::fs::read(target.join("six.bin")).unwrap() == data);

    let out = env.admin(
        "restore",
        &[&spec, "--target", &t, "--limit-download", "10"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("give a unit"), "{}", text(&out));
}
