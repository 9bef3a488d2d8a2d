//! The command line's contract, through the real binary: secret files and
//! keys (GnuPG's included), exit codes and messages of bad usage, progress
//! output, the metrics file, `status` for monitoring and the --on-success /
//! --on-failure hooks.
use super::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// `status`: exit 0 only when a snapshot younger than --max-age exists;
/// needs no key, only the listing; `--json` for machines.
#[test]
fn status_says_whether_the_newest_snapshot_is_recent_enough() {
    let env = Env::new();
    let status = |max_age: &str, json: bool| {
        let mut args = vec!["status", "--repo", "repo", "--max-age", max_age];
        if json {
            args.push("--json");
        }
        let out = env.run(&args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = status("26h", false);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.starts_with("STALE: no snapshot in repo"), "{text}");

    let src = env.path("src");
    write(&src.join("a"), b"data");
    env.backup(&[&src], &[]);
    let (code, text) = status("26h", false);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with("OK: newest of 1 snapshots stored 20"),
        "{text}"
    );

    // Age the snapshot object by two days: now too old for 26h, fine for 3d.
    let snap = std::fs::read_dir(env.path("repo/snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&snap)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let (code, text) = status("26h", false);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.starts_with("STALE: newest of 1 snapshots"), "{text}");
    assert!(text.contains("(2d 0h ago; limit 1d 2h)"), "{text}");
    assert_eq!(status("3d", false).0, Some(0));

    let (code, text) = status("1d12h", true);
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["snapshots"], 1);
    assert_eq!(v["max_age_seconds"], 36 * 3600);
    let age = v["age_seconds"].as_u64().unwrap();
    assert!((2 * 86_400..2 * 86_400 + 60).contains(&age), "{v}");

    // --host counts only that host's snapshots, by the tag in their names.
    let host = |h: &str| {
        let out = env.run(&["status", "--repo", "repo", "--max-age", "1h", "--host", h]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = host("db1");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.starts_with("STALE: no snapshot of host db1 in repo"),
        "{text}"
    );
    env.backup(&[&src], &["--host", "db1"]);
    let (code, text) = host("db1");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with("OK: newest of 1 snapshots of host db1 stored"),
        "{text}"
    );
    assert_eq!(host("db2").0, Some(1));
    assert_eq!(status("1h", false).0, Some(0));

    let out = env.run(&["status", "--repo", "repo", "--max-age", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("26h"));
}

/// `chmod 600`: secret files must be private to be used.
fn private(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A key file given to the wrong option is named for what it is and what
/// the option needs, before its mode is looked at (a certificate holds no
/// secret); nothing is read from or written to the repository for it.
#[test]
fn mixed_up_key_files_say_what_they_are_and_what_was_needed() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("f.txt"), b"x");
    let said = |out: &std::process::Output| {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let swap = |option: &str, file: &str| {
        let mut args = vec!["snapshots", "--repo", "repo"];
        if option == "--writer-key" {
            args = vec!["backup", "--repo", "repo", "--state-dir", "st"];
        }
        args.extend([option, file]);
        if option == "--writer-key" {
            args.push(src.to_str().unwrap());
        }
        said(&env.run(&args))
    };
    let got = swap("--key", "writer.key");
    assert!(
        got.contains("writer.key: --key needs an OpenPGP secret key"),
        "{got}"
    );
    assert!(got.contains("holds a coffer writer key"), "{got}");
    let got = swap("--writer-key", "admin.key");
    assert!(
        got.contains("admin.key: --writer-key needs a coffer writer key"),
        "{got}"
    );
    assert!(got.contains("holds an OpenPGP secret key"), "{got}");
    // admin.cert is 0644: its kind is named, not its mode.
    let got = swap("--key", "admin.cert");
    assert!(got.contains("holds an OpenPGP certificate"), "{got}");
    assert!(!got.contains("chmod"), "{got}");
    write(&env.path("notes.txt"), b"my passphrase is not here\n");
    private(&env.path("notes.txt"));
    let got = swap("--key", "notes.txt");
    assert!(
        got.contains("neither an OpenPGP key nor a coffer writer key"),
        "{got}"
    );
    assert!(env.snapshots().is_empty());
}

#[test]
fn secret_files_are_made_private_and_refused_when_others_may_read_them() {
    let env = Env::new();
    assert_eq!(mode(&env.path("admin.key")), 0o600);
    assert_eq!(mode(&env.path("writer.key")), 0o600);
    assert_eq!(mode(&env.path("admin.cert")) & 0o600, 0o600);
    let src = env.path("src");
    write(&src.join("f.txt"), b"private");

    let chmod = |name: &str, mode: u32| {
        std::fs::set_permissions(env.path(name), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let refused = |out: &std::process::Output, name: &str| {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(name) && said.contains("chmod 600"), "{said}");
        assert!(said.contains("--insecure-key-permissions"), "{said}");
        assert!(
            !said.contains("PRIVATE KEY") && !said.contains("chunk_id_key"),
            "{said}"
        );
    };
    chmod("writer.key", 0o644);
    refused(
        &env.writer_cmd(&[src.to_str().unwrap()]).output().unwrap(),
        "writer.key",
    );
    // A writer key others may change could be swapped for one that encrypts
    // to someone else's key: group-writable is refused too.
    chmod("writer.key", 0o620);
    refused(
        &env.writer_cmd(&[src.to_str().unwrap()]).output().unwrap(),
        "writer.key",
    );
    env.backup(&[&src], &["--insecure-key-permissions"]);
    chmod("writer.key", 0o600);
    env.backup(&[&src], &[]);

    chmod("admin.key", 0o640);
    refused(&env.admin("snapshots", &[]), "admin.key");
    assert_eq!(
        env.admin_ok("snapshots", &["--json", "--insecure-key-permissions"])
            .status
            .code(),
        Some(0)
    );
    chmod("admin.key", 0o400);
    assert_eq!(env.snapshots().len(), 2);

    // The passphrase file is a secret too.
    std::fs::write(env.path("pw"), "unused\n").unwrap();
    chmod("pw", 0o604);
    refused(&env.admin("snapshots", &["--passphrase-file", "pw"]), "pw");
}

#[test]
fn keys_made_by_gnupg_work_including_a_passphrase() {
    let env = Env::bare();
    let gnupg = env.gnupg_home();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &gnupg)
            .args([
                "--batch",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "hunter2",
            ])
            .args(args)
            .output()
            .expect("run gpg");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    // future-default: an ed25519 primary key with a cv25519 encryption subkey.
    gpg(&[
        "--quick-gen-key",
        "Backup Admin <admin@example.org>",
        "future-default",
        "default",
        "never",
    ]);
    std::fs::write(
        env.path("gpg.cert"),
        gpg(&["--export", "--armor", "admin@example.org"]),
    )
    .unwrap();
    std::fs::write(
        env.path("gpg-secret.bin"),
        gpg(&["--export-secret-keys", "admin@example.org"]),
    )
    .unwrap();
    private(&env.path("gpg-secret.bin"));
    env.ok(&[
        "init",
        "--repo",
        "repo",
        "--recipient",
        "gpg.cert",
        "--writer-key-out",
        "writer.key",
    ]);
    let src = env.path("src");
    write(&src.join("f.txt"), b"for a gnupg key");
    env.backup(&[&src], &[]);
    let spec = format!("latest:{}/f.txt", src.display());
    let locked = env.run(&["cat", "--repo", "repo", "--key", "gpg-secret.bin", &spec]);
    assert_eq!(locked.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&locked.stderr).contains("passphrase"));
    let out = env
        .cmd(&["cat", "--repo", "repo", "--key", "gpg-secret.bin", &spec])
        .env("COFFER_KEY_PASSPHRASE", "hunter2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"for a gnupg key");
    std::fs::write(env.path("pw"), "hunter2\n").unwrap();
    private(&env.path("pw"));
    let out = env.ok(&[
        "cat",
        "--repo",
        "repo",
        "--key",
        "gpg-secret.bin",
        "--passphrase-file",
        "pw",
        &spec,
    ]);
    assert_eq!(out.stdout, b"for a gnupg key");
    let wrong = env
        .cmd(&["cat", "--repo", "repo", "--key", "gpg-secret.bin", &spec])
        .env("COFFER_KEY_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        !String::from_utf8_lossy(&wrong.stderr).contains("wrong\""),
        "passphrase echoed"
    );
    // Its [SC] primary key signs key changes, unlocked with the passphrase.
    let out = env
        .cmd(&[
            "writer",
            "add",
            "--repo",
            "repo",
            "--key",
            "gpg-secret.bin",
            "host2",
            "--writer-key-out",
            "host2.key",
        ])
        .env("COFFER_KEY_PASSPHRASE", "hunter2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.path("repo/keys/00000001").is_file());
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let env = Env::new();
    let out = env.run(&[
        "backup",
        "--repo",
        "repo",
        "--writer-key",
        "writer.key",
        "/does/not/exist",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/does/not/exist"));
    let out = env.run(&[
        "backup",
        "--repo",
        "typo",
        "--writer-key",
        "writer.key",
        "writer.key",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.path("typo").exists(), "a writer created a repository");
    let out = env.run(&["snapshots", "--repo", "nowhere", "--key", "admin.key"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("coffer init"));
    let out = env.run(&["snapshots", "--repo", "repo", "--key", "admin.cert"]);
    assert_eq!(out.status.code(), Some(2));
    let again = env.run(&[
        "init",
        "--repo",
        "repo",
        "--recipient",
        "admin.cert",
        "--writer-key-out",
        "w2.key",
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        !env.path("w2.key").exists(),
        "a failed init left a writer key"
    );
    let out = env.admin("restore", &["latest", "--target", "x"]);
    assert_eq!(out.status.code(), Some(2), "no snapshot yet");
}

/// Progress: JSON lines with --json (the summary last), a bar on a terminal
/// (via `script`, which gives the command a pty), and nothing at all from
/// cron (no terminal, no -v) -- for backup and restore alike.
#[test]
fn progress_is_a_bar_on_a_terminal_json_lines_with_json_and_silent_from_cron() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("big"), &random_bytes(21, 40_000_000));
    for i in 0..200 {
        write(&src.join(format!("small/{i}")), &random_bytes(i, 5_000));
    }
    let mut cmd = env.writer_cmd(&["--json", &src.display().to_string()]);
    cmd.env("COFFER_PROGRESS_INTERVAL_MS", "20");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (summary, progress) = lines.split_last().unwrap();
    assert_eq!(summary["type"], "summary", "{text}");
    assert_eq!(summary["stats"]["files"], 201);
    assert!(!progress.is_empty(), "no progress line in {text}");
    let mut last = 0;
    for p in progress {
        assert_eq!(
            (&p["type"], &p["command"]),
            (&"progress".into(), &"backup".into())
        );
        let bytes = p["bytes"].as_u64().unwrap();
        assert!(
            bytes >= last && bytes <= p["total_bytes"].as_u64().unwrap(),
            "{p}"
        );
        last = bytes;
    }

    // From cron: nothing on either stream.
    write(&src.join("changed"), b"x");
    let out = env
        .writer_cmd(&[&src.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!((out.stdout.len(), out.stderr.len()), (0, 0), "{out:?}");
    let target = env.path("quiet");
    let out = env.admin_ok(
        "restore",
        &["latest", "--target", &target.display().to_string()],
    );
    assert_eq!((out.stdout.len(), out.stderr.len()), (0, 0), "{out:?}");

    // restore --json: progress lines, then the summary.
    let target = env.path("json");
    let mut cmd = env.admin_cmd(
        "restore",
        &[
            "latest",
            "--json",
            "--target",
            &target.display().to_string(),
        ],
    );
    cmd.env("COFFER_PROGRESS_INTERVAL_MS", "10");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = last_json_line(&out.stdout);
    assert_eq!(
        (summary["type"].as_str(), summary["files"].as_u64()),
        (Some("summary"), Some(202))
    );

    // On a terminal: a bar with bytes, rate, ETA and files, cleared at the end.
    let coffer = env!("CARGO_BIN_EXE_coffer");
    let on_tty = |args: String| {
        let out = Command::new("script")
            .args(["-qec", &args, "/dev/null"])
            .current_dir(env.path(""))
            .env("HOME", env.path(""))
            .env("XDG_CACHE_HOME", env.path("cache"))
            .env("COFFER_PROGRESS_INTERVAL_MS", "10")
            .output()
            .expect("run script (util-linux)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    write(&src.join("big"), &random_bytes(22, 40_000_000));
    let shown = on_tty(format!(
        "{coffer} backup --repo repo --writer-key writer.key {}",
        src.display()
    ));
    assert!(
        shown.contains("ETA") && shown.contains("/202 files"),
        "{shown}"
    );
    let shown = on_tty(format!(
        "{coffer} restore --repo repo --key admin.key latest --target {}",
        env.path("tty").display()
    ));
    assert!(shown.contains("ETA") && shown.contains("files"), "{shown}");
}

/// `--metrics-file`: Prometheus text after every run; a failed run says so
/// and keeps the time of the last success.
#[test]
fn metrics_file_records_each_run_and_keeps_the_last_success_through_failures() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), &random_bytes(1, 100_000));
    write(&src.join("b"), b"bee");
    let metrics = env.path("coffer.prom");
    let m = metrics.display().to_string();
    env.backup(&[&src], &["--metrics-file", &m]);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let value = |text: &str, name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{repo=\"repo\"}} ")))
            .unwrap_or_else(|| panic!("{name} not in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value(&text, "coffer_backup_success"), 1.0);
    assert_eq!(value(&text, "coffer_backup_files"), 2.0);
    assert_eq!(value(&text, "coffer_backup_bytes"), 100_003.0);
    assert!(
        text.contains("# TYPE coffer_backup_success gauge"),
        "{text}"
    );
    let success = value(&text, "coffer_backup_last_success_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - success).abs() < 60.0, "{text}");

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = env
        .writer_cmd(&["--metrics-file", &m, "--stdin-from-command", "--", "false"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(value(&text, "coffer_backup_success"), 0.0);
    assert_eq!(
        value(&text, "coffer_backup_last_success_timestamp_seconds"),
        success
    );
    assert!(value(&text, "coffer_backup_last_run_timestamp_seconds") > success + 1.0);
    assert!(!text.contains("coffer_backup_files"), "{text}");
}

/// The COFFER_* variables a hook that ran `env` into `file` saw.
fn hook_env(file: &Path) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: the hook did not run: {e}", file.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("COFFER_"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `--on-success` / `--on-failure`: the hooks of the outcome run, in order,
/// with the outcome in COFFER_*; a failing hook is reported without its
/// text and leaves the exit code alone.
#[test]
fn hooks_run_on_success_and_on_failure_with_the_outcome_in_the_environment() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), &random_bytes(2, 100_000));
    write(&src.join("b"), b"bee");
    let hook = |name: &str| format!("env > {name}");
    let (ok, never) = (hook("ok.env"), hook("never.env"));
    let snap = env.backup(&[&src], &["--on-success", &ok, "--on-failure", &never]);
    let seen = hook_env(&env.path("ok.env"));
    let want = |k: &str| seen.get(k).map(String::as_str);
    assert_eq!(want("COFFER_COMMAND"), Some("backup"));
    assert_eq!(want("COFFER_EXIT_CODE"), Some("0"));
    assert_eq!(want("COFFER_SNAPSHOT"), snap["id"].as_str());
    assert_eq!(want("COFFER_FILES"), Some("2"));
    assert_eq!(want("COFFER_BYTES"), Some("100003"));
    assert_eq!(want("COFFER_ERROR"), Some(""));
    let secs: u64 = want("COFFER_DURATION_S").unwrap().parse().unwrap();
    assert!(secs < 60, "{seen:?}");
    assert!(!env.path("never.env").exists());

    // A failed backup: its hooks in order, the second failing (reported
    // without its text), the exit code still the backup's.
    let failed = hook("failed.env");
    let out = env
        .writer_cmd(&[
            "--on-success",
            &never,
            "--on-failure",
            "exit 7 # token-s3cr3t",
            "--on-failure",
            &failed,
            "--stdin-from-command",
            "--",
            "false",
        ])
        .output()
        .unwrap();
    let stderr = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--on-failure hook 1 of 2 exited with 7; coffer's exit code stays 1"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
    let seen = hook_env(&env.path("failed.env"));
    assert_eq!(seen["COFFER_EXIT_CODE"], "1");
    assert_eq!(seen["COFFER_SNAPSHOT"], "");
    assert_eq!(seen["COFFER_FILES"], "");
    assert!(
        seen["COFFER_ERROR"].starts_with("backup failed; no snapshot was written"),
        "{seen:?}"
    );
    assert!(!env.path("never.env").exists());

    // check: damage found is a failure (exit 1) with its reason.
    let checked = hook("checked.env");
    env.admin_ok("check", &["--on-success", &checked]);
    assert_eq!(
        hook_env(&env.path("checked.env"))["COFFER_COMMAND"],
        "check"
    );
    let forgot = hook("forgot.env");
    env.admin_ok(
        "forget",
        &["--keep-last", "1", "--dry-run", "--on-success", &forgot],
    );
    assert_eq!(
        hook_env(&env.path("forgot.env"))["COFFER_COMMAND"],
        "forget"
    );
    std::fs::remove_file(env.biggest_pack()).unwrap();
    let damaged = hook("damaged.env");
    let out = env.admin("check", &["--on-failure", &damaged]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let seen = hook_env(&env.path("damaged.env"));
    assert_eq!(seen["COFFER_EXIT_CODE"], "1");
    assert!(seen["COFFER_ERROR"].starts_with("check found "), "{seen:?}");
}
