//! The mount, end to end: a real FUSE mount of a real repository, checked
//! with standard tools (diff -r, cp -a, ls) against the original trees.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use util::mount::{diff_r, wait_until, Mounted};
use util::*;

#[test]
fn mounted_versions_match_the_originals_for_standard_tools() {
    let env = Env::new();
    let src = env.path("src");
    make_tree(&src);
    env.backup(&[&src], &["--tag", "first"]);
    let v1 = env.path("v1");
    cp_a(&src, &v1);
    change_tree(&src);
    env.backup(&[&src], &[]);

    let m = Mounted::new(&env, &[]);
    let names = m.snapshot_names();
    assert_eq!(names.len(), 2, "{names:?}");
    let (m1, m2) = (
        under(&m.path(&format!("snapshots/{}", names[0])), &src),
        under(&m.path(&format!("snapshots/{}", names[1])), &src),
    );

    // diff -r between each mounted version and its original is empty.
    assert_eq!(diff_r(&v1, &m1), Vec::<String>::new());
    assert_eq!(diff_r(&src, &m2), Vec::<String>::new());
    // diff -r between the mounted versions says what it says of the originals.
    let expected = diff_r(&v1, &src);
    assert!(
        expected.len() >= 4,
        "the versions should differ: {expected:?}"
    );
    assert_eq!(diff_r(&m1, &m2), expected);

    // cp -a out of the mount gives identical bytes and metadata.
    let copy = env.path("copy");
    cp_a(&m2, &copy);
    assert_same_tree(&src, &copy);

    // rsync -a out of the mount gives the original too, and find -newer
    // selects the same files in the mount as in the original.
    let synced = env.path("synced");
    let st = Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", m2.display()))
        .arg(&synced)
        .status()
        .unwrap();
    assert!(st.success(), "rsync -a failed");
    assert_same_tree(&src, &synced);
    let newer = |root: &Path| {
        let out = Command::new("find")
            .arg(".")
            .arg("-newer")
            .arg("gen/small.txt")
            .current_dir(root)
            .output()
            .unwrap();
        assert!(out.status.success());
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        lines
    };
    let found = newer(&src);
    assert!(!found.is_empty());
    assert_eq!(newer(&m2), found);

    // latest, hosts/, tags/ and ids/ lead to the same snapshots.
    assert_eq!(
        std::fs::read_link(m.path("snapshots/latest")).unwrap(),
        PathBuf::from(&names[1])
    );
    let small = |root: PathBuf| std::fs::read(under(&root, &src).join("gen/small.txt")).unwrap();
    assert_eq!(
        small(m.path("snapshots/latest")),
        b"hello coffer, version two\n"
    );
    assert_eq!(
        small(m.path(&format!("tags/first/{}", names[0]))),
        b"hello coffer\n"
    );
    // Count only: a kept DirEntry holds its directory open and the mount busy.
    assert_eq!(std::fs::read_dir(m.path("hosts")).unwrap().count(), 1);
    let ids: Vec<_> = std::fs::read_dir(m.path("ids"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(ids.len(), 2);

    // Read-only.
    let err = std::fs::write(m.path("snapshots/latest/new-file"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    let err = std::fs::remove_file(m2.join("gen/small.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    // A snapshot made after mounting appears without remounting.
    write(&src.join("gen/after-mount"), b"new");
    env.backup(&[&src], &[]);
    wait_until(Duration::from_secs(15), || m.snapshot_names().len() == 3);
    let names = m.snapshot_names();
    assert_eq!(
        std::fs::read(
            under(&m.path(&format!("snapshots/{}", names[2])), &src).join("gen/after-mount")
        )
        .unwrap(),
        b"new"
    );
    // The kernel keeps directory listings (no OPENDIR round trips): the
    // virtual ones must still follow the list, when snapshots go too.
    let listed = |dir: &str| std::fs::read_dir(m.path(dir)).unwrap().count();
    let ids_before = listed("ids");
    env.admin_ok("forget", &["--keep-last", "1"]);
    wait_until(Duration::from_secs(15), || m.snapshot_names().len() == 1);
    assert_eq!(m.snapshot_names(), vec![names[2].clone()]);
    wait_until(Duration::from_secs(15), || listed("ids") == 1);
    assert!(ids_before > 1, "ids/ listed {ids_before}");

    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "mount log: {log}");
    assert!(log.is_empty(), "the mount printed without -v: {log}");
}

#[test]
fn a_damaged_pack_fails_only_its_files_with_eio() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("victim.bin"), &random_bytes(5, 3_000_000));
    env.backup(&[&src], &[]);
    let first_packs = env.packs();
    write(&src.join("bystander.txt"), b"still fine");
    env.backup(&[&src], &[]);
    // The victim's data is the largest pack of the first run.
    let victim_pack = first_packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(victim_pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(victim_pack, &bytes).unwrap();

    let m = Mounted::new(&env, &[]);
    let dir = under(&m.path("snapshots/latest"), &src);
    let err = std::fs::read(dir.join("victim.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(
        std::fs::read(dir.join("bystander.txt")).unwrap(),
        b"still fine"
    );
    // The size is still known; only the content fails.
    assert_eq!(
        std::fs::metadata(dir.join("victim.bin")).unwrap().len(),
        3_000_000
    );
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0));
    let name = victim_pack
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(
        log.contains(&name),
        "the log does not name the damaged pack {name}: {log}"
    );
    assert_eq!(
        log.matches(&name).count(),
        1,
        "logged more than once: {log}"
    );
}

/// `cat PATH` as user nobody.
fn cat_as_nobody(path: &Path) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg("cat")
        .arg(path)
        .output()
        .expect("run setpriv")
}

#[test]
fn allow_other_lets_other_users_read_what_modes_allow() {
    let env = Env::new();
    // nobody must be able to reach the mount point, and the snapshot holds
    // the source's parent directories with their modes.
    std::fs::set_permissions(env.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let src = env.path("src");
    write(&src.join("public.txt"), b"for everyone");
    write(&src.join("private.txt"), b"owner only");
    std::fs::set_permissions(src.join("public.txt"), PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::set_permissions(src.join("private.txt"), PermissionsExt::from_mode(0o600)).unwrap();
    env.backup(&[&src], &[]);
    let file = |m: &Mounted, name: &str| under(&m.path("snapshots/latest"), &src).join(name);

    // Without --allow-other, FUSE keeps every other user out.
    let m = Mounted::new(&env, &[]);
    assert_eq!(
        std::fs::read(file(&m, "public.txt")).unwrap(),
        b"for everyone"
    );
    let out = cat_as_nobody(&file(&m, "public.txt"));
    assert!(
        !out.status.success(),
        "nobody read a mount without --allow-other"
    );
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "mount log: {log}");

    // With it, other users read what the stored modes allow, and no more.
    let m = Mounted::new(&env, &["--allow-other"]);
    let out = cat_as_nobody(&file(&m, "public.txt"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"for everyone");
    let out = cat_as_nobody(&file(&m, "private.txt"));
    assert!(!out.status.success(), "nobody read a 0600 file");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "mount log: {log}");
}

#[test]
fn diff_lists_changes_like_restic() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("same/a"), b"a");
    write(&src.join("edit.txt"), b"one");
    write(&src.join("gone/x"), b"x");
    write(&src.join("meta.txt"), b"m");
    let a = env.backup(&[&src], &[]);
    write(&src.join("edit.txt"), b"two");
    std::fs::remove_dir_all(src.join("gone")).unwrap();
    write(&src.join("added.txt"), b"new");
    std::fs::set_permissions(
        src.join("meta.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let b = env.backup(&[&src], &[]);
    let out = env.admin_ok(
        "diff",
        &[
            a["id"].as_str().unwrap(),
            b["id"].as_str().unwrap(),
            &src.display().to_string(),
            "-v",
        ],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // same/ has the same tree id in both: skipped, not fetched.
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("5 changes; 3 trees read, 1 identical subtrees skipped"),
        "{summary}"
    );
    let s = src.display();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let expected = [
        format!("+    {s}/added.txt"),
        format!("-    {s}/gone/"),
        format!("-    {s}/gone/x"),
        format!("M    {s}/edit.txt"),
        format!("U    {s}/meta.txt"),
    ];
    assert_eq!(
        lines,
        expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "{text}"
    );
}
