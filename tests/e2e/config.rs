//! Config profiles, through the real binary: a profile's values run the
//! command; a flag beats its environment variable, which beats the file;
//! every bad file is an exit 2 that names file, line and key; a key file a
//! profile names is checked as on the command line; `config show` says what
//! is in effect and from where; shell completions and man pages.
use super::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Writes the user's config file of `env` (XDG_CONFIG_HOME/coffer/config.toml).
fn user_config(env: &Env, text: &str) -> PathBuf {
    let path = env.path("xdg-config/coffer/config.toml");
    write(&path, text.as_bytes());
    path
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn snapshot_count(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("snapshots")).map_or(0, |d| d.count())
}

#[test]
fn profile_values_run_the_command_and_flags_beat_environment_beat_file() {
    let env = Env::new();
    let other = env.init_other_repo("other");
    let third = env.path("third");
    let init = "init --repo third --recipient admin.cert --writer-key-out third-writer.key";
    env.ok(&init.split(' ').collect::<Vec<_>>());
    let src = env.path("src");
    write(&src.join("a.txt"), b"alpha");
    let dir = env.dir.path().display().to_string();
    user_config(
        &env,
        &format!(
            "[profiles.nightly]\n\
             repo = \"{dir}/repo\"\n\
             writer-key = \"{dir}/writer.key\"\n\
             key = \"{dir}/admin.key\"\n\
             sources = [\"{dir}/src\"]\n\
             tag = [\"nightly\", \"fromfile\"]\n\
             exclude = [\"*.tmp\"]\n\
             keep-last = 1\n"
        ),
    );
    write(&src.join("skip.tmp"), b"left out");

    // The profile alone: repository, key, sources, tags and excludes.
    let out = env.run(&["--profile", "nightly", "backup", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let snap = last_json_line(&out.stdout);
    assert_eq!(snap["tags"], serde_json::json!(["nightly", "fromfile"]));
    let restored = env.path("restored");
    let target = restored.to_str().unwrap();
    env.ok(&[
        "restore",
        "--profile",
        "nightly",
        "latest",
        "--target",
        target,
    ]);
    let src_inside = under(&restored, &src);
    assert_eq!(std::fs::read(src_inside.join("a.txt")).unwrap(), b"alpha");
    assert!(
        !src_inside.join("skip.tmp").exists(),
        "the profile's exclude was not used"
    );

    // The environment beats the file; a flag beats both.
    let backup_with_env = |args: &[&str]| {
        let mut all = vec!["--profile", "nightly", "backup"];
        all.extend_from_slice(args);
        let out = env.cmd(&all).env("COFFER_REPO", &other).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    backup_with_env(&["--writer-key", "other-writer.key"]);
    assert_eq!(
        snapshot_count(&other),
        1,
        "COFFER_REPO did not beat the file"
    );
    backup_with_env(&["--repo", "third", "--writer-key", "third-writer.key"]);
    assert_eq!(snapshot_count(&third), 1, "--repo did not beat COFFER_REPO");
    assert_eq!(snapshot_count(&other), 1);
    assert_eq!(snapshot_count(&env.path("repo")), 1);

    // Paths on the command line replace the profile's sources; a stream
    // backup takes none of them.
    let out = env.run(&[
        "--profile",
        "nightly",
        "backup",
        "--json",
        env.path("src/a.txt").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        last_json_line(&out.stdout)["paths"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let mut c = env.cmd(&[
        "--profile",
        "nightly",
        "backup",
        "--stdin",
        "--stdin-name",
        "s.txt",
    ]);
    c.stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());

    // forget takes keep-last and tag from the same profile: of the two
    // snapshots of the profile's sources (one group: same host and paths),
    // the newer stays; the single-path and stream snapshots are groups of
    // their own.
    let out = env.run(&["--profile", "nightly", "backup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot_count(&env.path("repo")), 4);
    let out = env.run(&["--profile", "nightly", "forget"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot_count(&env.path("repo")), 3);
    assert_eq!(snapshot_count(&third), 1);
}

#[test]
fn bad_config_files_exit_2_naming_file_line_and_key() {
    let env = Env::bare();
    let cases: &[(&str, &str)] = &[
        (
            "[profiles.p]\nrepo = \"r\"\nwriter-keys = \"k\"\n",
            "config.toml:3: writer-keys: unknown key",
        ),
        (
            "[profiles.p]\n\none-file-system = \"yes\"\n",
            "config.toml:3: one-file-system: expected true or false",
        ),
        ("[profiles.p]\nuploads = 100\n", "config.toml:2: uploads: "),
        (
            "[profiles.p]\nkeep-daily = \"many\"\n",
            "config.toml:2: keep-daily: ",
        ),
        (
            "[profiles.p]\nrepo = [\"a\", \"b\"]\n",
            "config.toml:2: repo: ",
        ),
        (
            "[profiles.p]\nrepo = \"r\"\n[profiles.p.backup]\nx = 1\n",
            "config.toml:3: backup: ",
        ),
        ("[profiles.p]\nrepo = \"unterminated\n", "config.toml:2: "),
        (
            "[profiles.p]\nsecret-access-key = \"AKIASECRETVALUE\"\n",
            "config.toml:2: secret-access-key: secrets are not kept",
        ),
    ];
    for (text, expected) in cases {
        let file = user_config(&env, text);
        let out = env.run(&["--profile", "p", "snapshots"]);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {}", stderr(&out));
        let said = stderr(&out);
        assert!(
            said.contains(&file.display().to_string()),
            "{text:?}: {said}"
        );
        assert!(
            said.contains(expected),
            "{text:?}: expected {expected:?} in {said}"
        );
        assert!(!said.contains("AKIASECRETVALUE"), "{said}");
    }

    // A missing --config file, and a profile that is not there.
    let out = env.run(&["--config", "nowhere.toml", "--profile", "p", "snapshots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nowhere.toml: cannot read the config file"),
        "{}",
        stderr(&out)
    );
    user_config(&env, "[profiles.nightly]\nrepo = \"r\"\n");
    let out = env.run(&["--profile", "weekly", "snapshots"]);
    assert_eq!(out.status.code(), Some(2));
    let said = stderr(&out);
    assert!(
        said.contains("profile \"weekly\" is not in") && said.contains("nightly"),
        "{said}"
    );
}

#[test]
fn a_key_file_named_by_a_profile_is_checked_as_on_the_command_line() {
    let env = Env::new();
    let dir = env.dir.path().display().to_string();
    std::fs::set_permissions(
        env.path("admin.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let file = env.path("coffer.toml");
    write(
        &file,
        format!("[profiles.admin]\nrepo = \"{dir}/repo\"\nkey = \"{dir}/admin.key\"\n").as_bytes(),
    );
    let file = file.to_str().unwrap();
    let out = env.run(&["--config", file, "--profile", "admin", "snapshots"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("admin.key") && said.contains("chmod 600"),
        "{said}"
    );
    assert!(!said.contains("PRIVATE KEY"), "{said}");
    std::fs::set_permissions(
        env.path("admin.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    env.ok(&[
        "--config",
        file,
        "--profile",
        "admin",
        "snapshots",
        "--json",
    ]);
}

#[test]
fn config_show_prints_each_value_in_effect_and_where_it_came_from() {
    let env = Env::bare();
    let file = user_config(
        &env,
        "[profiles.nightly]\nrepo = \"/backups/repo\"\n\nwriter-key = \"/etc/coffer/writer.key\"\ntag = [\"a\", \"b c\"]\n\n[profiles.admin]\nkey = \"/root/admin.key\"\n",
    );
    let origin = |line: usize| format!("{}:{line}", file.display());
    let out = env.ok(&["--profile", "nightly", "config", "show"]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains("[profiles.nightly]"), "{shown}");
    assert!(!shown.contains("[profiles.admin]"), "{shown}");
    let line_of = |key: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in {shown}"))
            .to_owned()
    };
    let repo = line_of("repo");
    assert!(
        repo.contains("\"/backups/repo\" ") && repo.ends_with(&format!("# {}", origin(2))),
        "{shown}"
    );
    assert!(line_of("writer-key").ends_with(&origin(4)), "{shown}");
    assert!(line_of("tag").contains("[\"a\", \"b c\"]"), "{shown}");

    // An environment variable over the file, and one the file does not set.
    let mut c = env.cmd(&["--profile", "nightly", "config", "show"]);
    c.env("COFFER_REPO", "/elsewhere")
        .env("COFFER_STATE_DIR", "/var/lib/coffer/x");
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let repo = shown.lines().find(|l| l.starts_with("repo = ")).unwrap();
    assert!(
        repo.contains("\"/elsewhere\"")
            && repo.contains(&format!("env COFFER_REPO (over {})", origin(2))),
        "{shown}"
    );
    let state = shown
        .lines()
        .find(|l| l.starts_with("state-dir = "))
        .unwrap();
    assert!(state.ends_with("# env COFFER_STATE_DIR"), "{shown}");

    // Every profile without --profile; and the file is parsed the same way.
    let out = env.ok(&["config", "show"]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown.contains("[profiles.admin]") && shown.contains("[profiles.nightly]"),
        "{shown}"
    );
    user_config(&env, "[profiles.nightly]\nrepos = 1\n");
    let out = env.run(&["config", "show"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr(&out).contains(":2: repos: unknown key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let env = Env::bare();
    for (shell, marker) in [
        ("bash", "complete -F _coffer"),
        ("zsh", "#compdef coffer"),
        ("fish", "complete -c coffer"),
    ] {
        let out = env.ok(&["completions", shell]);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("writer-key") && script.contains("keep-daily"),
            "{shell}"
        );
    }
    let out = env.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));

    let dir = env.path("man");
    std::fs::create_dir(&dir).unwrap();
    env.ok(&["generate-man", dir.to_str().unwrap()]);
    for page in [
        "coffer.1",
        "coffer-backup.1",
        "coffer-mount.1",
        "coffer-key-generate.1",
        "coffer-config-show.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie \\n(.g .ds Aq") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let backup = std::fs::read_to_string(dir.join("coffer-backup.1")).unwrap();
    assert!(backup.contains("writer\\-key"), "{backup}");
    assert!(
        !dir.join("coffer-generate-man.1").exists(),
        "the hidden command has a page"
    );
}
