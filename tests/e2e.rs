//! End-to-end tests: the real `coffer` binary on real trees, a real
//! repository directory, and the real `gpg` and `zstd` binaries.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

// The command line's contract (secrets, usage errors, progress, metrics,
// status) is a module of this binary, not a binary of its own.
#[path = "e2e/cli.rs"]
mod cli;
// Config profiles, completions and man pages.
#[path = "e2e/config.rs"]
mod config;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use util::*;

#[test]
fn two_versions_restore_identical_in_bytes_and_metadata() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    let v1 = env.backup(&[&src], &["--tag", "v1"]);
    let v1_copy = env.path("v1-copy");
    cp_a(&src, &v1_copy);
    change_tree(&src);
    let v2 = env.backup(&[&src], &["--tag", "v2"]);

    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["id"], v1["id"]);
    assert_eq!(snaps[1]["id"], v2["id"]);
    assert_eq!(snaps[0]["tags"], serde_json::json!(["v1"]));
    assert_eq!(
        snaps[1]["paths"],
        serde_json::json!([src.display().to_string()])
    );
    for key in ["id", "time", "host", "paths", "tags"] {
        assert!(!snaps[0][key].is_null(), "snapshots --json lacks {key}");
    }

    let id1 = v1["id"].as_str().unwrap();
    let out1 = env.path("out1");
    env.restore(&id1[..10], &out1);
    assert_same_tree(&v1_copy, &under(&out1, &src));

    let out2 = env.path("out2");
    env.restore("latest", &out2);
    assert_same_tree(&src, &under(&out2, &src));

    // A subdirectory, and a single file, by path.
    let out3 = env.path("out3");
    env.restore(&format!("latest:{}/gen", src.display()), &out3);
    assert_same_tree(&src.join("gen"), &out3);
    let out4 = env.path("out4");
    env.restore(
        &format!("{}:{}/gen/small.txt", &id1[..8], src.display()),
        &out4,
    );
    assert_eq!(
        std::fs::read(out4.join("small.txt")).unwrap(),
        b"hello coffer\n"
    );
}

#[test]
fn rerun_reads_and_stores_nothing_and_one_byte_stores_about_one_chunk() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("big.bin"), &random_bytes(7, 50_000_000));
    for i in 0..200 {
        write(
            &src.join(format!("small/{i}.txt")),
            format!("file {i}").as_bytes(),
        );
    }
    let first = env.backup(&[&src], &[]);
    assert_eq!(first["stats"]["files_read"], 201);

    let again = env.backup(&[&src], &[]);
    assert_eq!(again["stats"]["files_read"], 0, "{again}");
    assert_eq!(again["stats"]["bytes_read"], 0, "{again}");
    // No file data is stored again. Trees above the source may be: tests
    // running in parallel change /tmp's mtime, which the root tree records.
    let new_bytes = again["stats"]["new_bytes"].as_u64().unwrap();
    assert!(
        new_bytes < 4096,
        "a no-change run stored {new_bytes} bytes: {again}"
    );
    assert_ne!(again["id"], first["id"]);

    let mut big = std::fs::read(src.join("big.bin")).unwrap();
    big[30_000_000] ^= 1;
    write(&src.join("big.bin"), &big);
    let changed = env.backup(&[&src], &[]);
    assert_eq!(changed["stats"]["files_read"], 1, "{changed}");
    let new_bytes = changed["stats"]["new_bytes"].as_u64().unwrap();
    // One changed byte changes one chunk (at most two near a boundary);
    // chunks are 8 MiB at most, plus a few tree blobs.
    assert!(
        new_bytes < 17 << 20,
        "stored {new_bytes} new bytes for one changed byte"
    );
    assert!(new_bytes > 0);

    let out = env.path("out");
    env.restore("latest", &out);
    assert_eq!(
        std::fs::read(under(&out, &src).join("big.bin")).unwrap(),
        big
    );
}

#[test]
fn repository_reveals_no_names_or_contents() {
    let env = Env::new();
    let src = env.path("src");
    let name = "name-that-must-not-leak-q7x";
    let content = "content-that-must-not-leak-z9k ".repeat(1000);
    write(
        &src.join(format!("dir-that-must-not-leak-w3v/{name}.txt")),
        content.as_bytes(),
    );
    env.backup(&[&src], &[]);
    let files = env.repo_files();
    assert!(
        files.len() >= 4,
        "expected config, snapshot, index and packs"
    );
    for (path, bytes) in files {
        for needle in [
            name,
            "content-that-must-not-leak",
            "dir-that-must-not-leak",
            "coffer-e2e",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} contains {needle:?}",
                path.display()
            );
        }
    }
}

#[test]
fn stdin_stream_is_stored_as_one_file() {
    let env = Env::new();
    let data = random_bytes(3, 3_000_000);
    let mut child = env
        .cmd(&[
            "backup",
            "--repo",
            "repo",
            "--writer-key",
            "writer.key",
            "--stdin",
            "--stdin-name",
            "db.sql",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&data).unwrap();
    }
    assert!(child.wait().unwrap().success());
    let out = env.admin_ok("cat", &["latest:db.sql"]);
    assert!(out.stdout == data, "cat returned other bytes");
    assert_eq!(env.snapshots()[0]["paths"], serde_json::json!(["db.sql"]));
}

/// `--stdin-from-command`: the command's output is the stream; a command
/// that fails (even after writing output) fails the backup with no snapshot.
#[test]
fn stream_from_a_command_is_stored_only_if_the_command_succeeds() {
    let env = Env::new();
    let backup = |args: &[&str]| {
        let mut all = vec!["backup", "--repo", "repo", "--writer-key", "writer.key"];
        all.extend_from_slice(args);
        env.run(&all)
    };
    let data = random_bytes(5, 2_000_000);
    let dump = env.path("dump.bin");
    write(&dump, &data);
    let dump = dump.display().to_string();
    let ok = backup(&["--stdin-from-command", "--", "cat", &dump]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Stored under the program's name unless --stdin-name says otherwise.
    let out = env.admin_ok("cat", &["latest:cat"]);
    assert!(out.stdout == data, "cat returned other bytes");

    let script = format!("cat {dump}; echo 'pg_dump: error: connection lost' >&2; exit 7");
    let failed = backup(&[
        "--stdin-from-command",
        "--stdin-name",
        "db.sql",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("connection lost"),
        "the command's stderr is shown: {stderr}"
    );
    assert!(stderr.contains("exit status: 7"), "{stderr}");
    assert!(stderr.contains("no snapshot was written"), "{stderr}");
    assert_eq!(
        env.snapshots().len(),
        1,
        "a failed dump must not become a snapshot"
    );

    let missing = backup(&["--stdin-from-command", "--", "/nonexistent/pg_dump"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(stderr.contains("/nonexistent/pg_dump"), "{stderr}");
    assert_eq!(env.snapshots().len(), 1);
}

/// `check` reads only metadata and pack sizes: a whole repository passes;
/// a cut or missing pack is reported per snapshot and path, exit 1.
#[test]
fn check_reports_missing_and_cut_packs_per_snapshot_and_path() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("big/victim"), &random_bytes(11, 3_000_000));
    env.backup(&[&src], &[]);
    // In the second run's packs: never in a pack with the victim's chunks
    // (within one run, a small file may share a pack with them).
    write(&src.join("small/keep"), b"small");
    env.backup(&[&src], &[]);
    let check = |args: &[&str]| {
        let out = env.admin("check", args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = check(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("checked 2 snapshots") && text.ends_with("no damage\n"),
        "{text}"
    );

    // The largest pack holds the 3 MB file.
    let biggest = env.biggest_pack();
    let mut bytes = std::fs::read(&biggest).unwrap();
    let victim = format!("{}/big/victim: ", src.display());

    // A flipped byte keeps every size: only reading the data finds it.
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&biggest, &bytes).unwrap();
    assert_eq!(check(&[]).0, Some(0));
    for read in [&["--read-data"][..], &["--read-data-subset", "100%"]] {
        let (code, text) = check(read);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains(&victim) && text.contains("chunk "), "{text}");
        assert!(text.contains("read and verified: 2 problems"), "{text}");
    }
    bytes[mid] ^= 1;
    let (code, text) = check(&["--read-data"]);
    assert_eq!(code, Some(1), "the file on disk is still flipped: {text}");
    std::fs::write(&biggest, &bytes).unwrap();
    let (code, text) = check(&["--read-data"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        env.admin("check", &["--read-data-subset", "0%"])
            .status
            .code(),
        Some(2)
    );

    std::fs::write(&biggest, &bytes[..bytes.len() / 2]).unwrap();
    let (code, text) = check(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("{victim}pack ")) && text.contains("too short"),
        "{text}"
    );
    // The index that lists the pack says how long it was.
    assert!(
        text.lines()
            .any(|l| l.starts_with("index/") && l.contains("; the index says ")),
        "{text}"
    );

    std::fs::remove_file(&biggest).unwrap();
    let (code, text) = check(&[]);
    assert_eq!(code, Some(1), "{text}");
    for snap in env.snapshots() {
        let id = &snap["id"].as_str().unwrap()[..8];
        let line = format!("snapshot {id} {victim}pack ");
        assert!(
            text.contains(&line) && text.contains("is missing"),
            "{line} not in {text}"
        );
    }
    assert!(
        !text.contains("keep"),
        "an intact file was reported: {text}"
    );
}

#[test]
fn writer_needs_nothing_from_the_repository() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"first");
    env.backup(&[&src], &[]);
    // Take every object away: a writer that read anything would fail.
    let full = env.path("repo-full");
    std::fs::rename(env.path("repo"), &full).unwrap();
    std::fs::create_dir(env.path("repo")).unwrap();
    write(&src.join("b"), b"second");
    env.backup(&[&src], &[]);
    let written: Vec<PathBuf> = env.repo_files().into_iter().map(|(p, _)| p).collect();
    assert!(
        written.iter().all(|p| !p.ends_with("config")),
        "the writer wrote config"
    );
    assert!(written
        .iter()
        .any(|p| p.to_string_lossy().contains("/snapshots/")));
    // Merge back: the admin sees both snapshots, and the second restores whole.
    Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", env.path("repo").display()))
        .arg(&full)
        .status()
        .unwrap();
    std::fs::remove_dir_all(env.path("repo")).unwrap();
    std::fs::rename(&full, env.path("repo")).unwrap();
    assert_eq!(env.snapshots().len(), 2);
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&src, &under(&out, &src));
}

#[test]
fn unreadable_files_give_exit_3_and_a_snapshot() {
    if !is_root() {
        eprintln!("needs root to run the writer as another user; CI runs as root");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("readable.txt"), b"fine");
    write(&src.join("locked.txt"), b"root only");
    std::fs::set_permissions(
        src.join("locked.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::create_dir(src.join("locked-dir")).unwrap();
    std::fs::set_permissions(
        src.join("locked-dir"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    // The unprivileged writer needs its files and the repository to be its own.
    for p in [env.dir.path().to_path_buf(), env.path("repo"), src.clone()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let chown = Command::new("chown")
        .args(["-R", "nobody"])
        .arg(env.path("repo"))
        .arg(env.path("writer.key"))
        .status()
        .unwrap();
    assert!(chown.success());
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_coffer"))
        .args([
            "backup",
            "--repo",
            "repo",
            "--writer-key",
            "writer.key",
            "--state-dir",
            "state-nobody",
        ])
        .arg(&src)
        .current_dir(env.dir.path())
        .env("HOME", env.dir.path())
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(stderr.contains("locked.txt"), "{stderr}");
    assert!(stderr.contains("locked-dir"), "{stderr}");
    assert!(!stderr.contains("readable.txt"), "{stderr}");
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["stats"]["errors"], 2);
    let out = env.path("out");
    env.restore("latest", &out);
    assert_eq!(
        std::fs::read(under(&out, &src).join("readable.txt")).unwrap(),
        b"fine"
    );
    assert!(!under(&out, &src).join("locked.txt").exists());
}

#[test]
fn restore_refuses_non_empty_target_unless_overwrite() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f"), b"from backup");
    env.backup(&[&src], &[]);
    let target = env.path("target");
    let dest = under(&target, &src).join("f");
    write(&dest, b"in the way");
    let spec = "latest";
    let t = target.display().to_string();
    let refused = env.admin("restore", &[spec, "--target", &t]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));
    assert_eq!(std::fs::read(&dest).unwrap(), b"in the way");
    env.admin_ok("restore", &[spec, "--target", &t, "--overwrite"]);
    assert_eq!(std::fs::read(&dest).unwrap(), b"from backup");
}

#[test]
fn excludes_leave_out_names_and_paths() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("keep.txt"), b"k");
    write(&src.join("drop.tmp"), b"d");
    write(&src.join("cache/x"), b"c");
    write(&src.join("sub/cache/y"), b"kept: pattern is anchored");
    let pattern = format!("{}/cache", src.display());
    env.backup(&[&src], &["--exclude", "*.tmp", "--exclude", &pattern]);
    let out = env.path("out");
    env.restore("latest", &out);
    let r = under(&out, &src);
    assert!(r.join("keep.txt").exists());
    assert!(!r.join("drop.tmp").exists());
    assert!(!r.join("cache").exists());
    assert!(r.join("sub/cache/y").exists());
}

#[test]
fn damaged_pack_is_an_error_naming_the_object_never_wrong_bytes() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("victim"), &random_bytes(9, 100_000));
    env.backup(&[&src], &[]);
    let spec = format!("latest:{}/victim", src.display());
    // Flip one byte in every data pack's middle (trees stay intact in their
    // own pack only if we skip the smallest; flip each in turn).
    for pack in env.packs() {
        let mut bytes = std::fs::read(&pack).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&pack, &bytes).unwrap();
        let out = env.admin("cat", &[&spec]);
        if out.status.success() {
            // This pack held no byte of the file: restore the byte and go on.
            assert_eq!(out.stdout, random_bytes(9, 100_000));
            bytes[mid] ^= 0x40;
            std::fs::write(&pack, &bytes).unwrap();
            continue;
        }
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = pack.file_name().unwrap().to_string_lossy();
        assert!(
            stderr.contains(&*name),
            "error does not name the object: {stderr}"
        );
        assert!(out.stdout.is_empty(), "damaged data reached stdout");
        return;
    }
    panic!("no damaged pack made cat fail");
}

/// No locks: a second writer started while a first one runs corrupts
/// nothing. With its own state (another host) both run at once; sharing the
/// state directory, the second waits for the first's lock on it. The
/// first writer backs up a stream the test feeds, so it is provably still
/// running when the second starts, however fast it is.
#[test]
fn a_second_writer_started_during_a_backup_corrupts_nothing() {
    use std::io::Write;
    let env = Env::new();
    let b = env.path("b");
    write(&b.join("other"), &random_bytes(32, 3_000_000));
    // The same bytes in both sources: each writer stores its own copy.
    write(&b.join("shared"), &random_bytes(33, 2_000_000));
    let stream = |seed: u64| {
        let mut data = random_bytes(seed, 100_000_000);
        data.extend(random_bytes(33, 2_000_000));
        data
    };
    let packs = || env.packs().len();
    let spawn = |cmd: &mut Command| {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_for_a_pack = |before: usize| {
        let start = std::time::Instant::now();
        while packs() == before {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "the first writer stored no pack in 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    let snapshot = |child: std::process::Child| {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        last_json_line(&out.stdout)["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // A writer of the stream `a` (state-a) fed 80% of it, then, once it has
    // stored a pack, a writer of `b` with `second_state`, then the rest of
    // the stream; returns both snapshot ids, the stream's first.
    let overlapping = |second_state: &str, a: &[u8]| {
        let before = packs();
        let mut first = spawn(
            env.writer_cmd(&[
                "--json",
                "--state-dir",
                "state-a",
                "--stdin",
                "--stdin-name",
                "a",
            ])
            .stdin(Stdio::piped()),
        );
        let mut input = first.stdin.take().unwrap();
        let (head, tail) = a.split_at(a.len() * 4 / 5);
        input.write_all(head).unwrap();
        wait_for_a_pack(before);
        let second = spawn(&mut env.writer_cmd(&[
            "--json",
            "--state-dir",
            second_state,
            &b.display().to_string(),
        ]));
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first writer ended early"
        );
        input.write_all(tail).unwrap();
        drop(input);
        let id_second = snapshot(second);
        (snapshot(first), id_second)
    };

    let (id_a, id_b) = overlapping("state-b", &stream(31));
    let a2 = stream(34);
    write(&b.join("other"), &random_bytes(35, 3_000_000));
    let (id_c, id_d) = overlapping("state-a", &a2);

    assert_eq!(env.snapshots().len(), 4);
    let check = env.admin_ok("check", &["--read-data"]);
    assert!(String::from_utf8_lossy(&check.stdout).contains("no damage"));
    for (id, data) in [(&id_a, stream(31)), (&id_c, a2)] {
        let out = env.admin_ok("cat", &[&format!("{}:a", &id[..12])]);
        assert!(
            out.stdout == data,
            "snapshot {id}: the stream reads back other bytes"
        );
    }
    let out = env.path(&format!("out-{id_d}"));
    env.restore(&id_d[..12], &out);
    assert_same_tree(&b, &under(&out, &b));
    let old_b = env.path(&format!("old-{id_b}"));
    env.restore(&id_b[..12], &old_b);
    assert_eq!(
        std::fs::read(under(&old_b, &b).join("shared")).unwrap(),
        random_bytes(33, 2_000_000)
    );
}
