//! Fidelity: everything a file is comes back. Extended attributes (user.,
//! trusted., file capabilities, POSIX ACLs) through backup and restore,
//! checked with the real tools (rsync -AX, getfacl, getcap) and byte by
//! byte; `--no-xattrs`; a restore as non-root that the kernel refuses a
//! capability warns, names it and exits 3; `--one-file-system`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use util::*;

/// A value no text tool would keep: NUL and high bytes.
const BINARY: &[u8] = b"coffer\0\xff\x01value";

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a value buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr {name} on {}", path.display());
}

/// A tree with a binary `user.` attribute, a `trusted.` one, a directory
/// with an access and a default ACL, and a program with a capability.
fn server_tree(src: &Path) {
    write(&src.join("plain.txt"), b"no attributes");
    write(&src.join("tagged.txt"), b"tagged");
    set_xattr(&src.join("tagged.txt"), "user.origin", BINARY);
    set_xattr(&src.join("tagged.txt"), "trusted.secret", b"root only");
    let shared = src.join("shared");
    std::fs::create_dir(&shared).unwrap();
    write(&shared.join("inside.txt"), b"inside");
    run_tool("setfacl", &["-m", "u:nobody:r", shared.to_str().unwrap()]);
    run_tool(
        "setfacl",
        &["-d", "-m", "u:nobody:rx", shared.to_str().unwrap()],
    );
    let ping = src.join("ping");
    std::fs::copy("/bin/true", &ping).unwrap();
    run_tool("setcap", &["cap_net_raw+ep", ping.to_str().unwrap()]);
    std::os::unix::fs::symlink("plain.txt", src.join("link")).unwrap();
    // One file under three names, two directories apart.
    let linked = src.join("linked");
    std::fs::create_dir(&linked).unwrap();
    write(&linked.join("a.txt"), b"one file, three names");
    std::fs::hard_link(linked.join("a.txt"), linked.join("b.txt")).unwrap();
    std::fs::hard_link(linked.join("a.txt"), src.join("c.txt")).unwrap();
    // 1 GiB holding a few bytes.
    sparse_file(&src.join("sparse.img"));
}

/// A sparse file of [`SPARSE_SIZE`] bytes with data only at its start and
/// in its middle (a hole before the middle and one to the end).
fn sparse_file(path: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(&[7u8; 100_000], SPARSE_SIZE / 2).unwrap();
    f.set_len(SPARSE_SIZE).unwrap();
}

const SPARSE_SIZE: u64 = 1 << 30;

/// Bytes a file takes on disk (`du --block-size=1`).
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().blocks() * 512
}

/// `stat -c '%h %i'` of the three names of `linked/a.txt` in `root`, as
/// (link counts, whether they share one inode).
fn link_group(root: &Path) -> (Vec<u64>, bool) {
    use std::os::unix::fs::MetadataExt;
    let names = ["linked/a.txt", "linked/b.txt", "c.txt"];
    let metas: Vec<_> = names
        .iter()
        .map(|n| std::fs::symlink_metadata(root.join(n)).unwrap())
        .collect();
    let counts = metas.iter().map(|m| m.nlink()).collect();
    let one = metas
        .iter()
        .all(|m| m.ino() == metas[0].ino() && m.dev() == metas[0].dev());
    (counts, one)
}

/// [`rsync_differences`] shows nothing below the top directory of `copy`
/// (which the tool that made it owns: a recover.py target, tar's `-C`).
fn assert_same_below_top(src: &Path, copy: &Path) {
    let differences = rsync_differences(src, copy);
    let below: Vec<&str> = differences
        .lines()
        .filter(|l| !l.ends_with(" ./"))
        .collect();
    assert!(below.is_empty(), "{differences}");
}

/// What the restored sparse file and hard links must be, like the source's.
fn assert_links_and_holes(src: &Path, restored: &Path) {
    assert_eq!(
        link_group(restored),
        (vec![3, 3, 3], true),
        "{}",
        restored.display()
    );
    let (source, copy) = (src.join("sparse.img"), restored.join("sparse.img"));
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), SPARSE_SIZE);
    let (used, original) = (disk_usage(&copy), disk_usage(&source));
    assert!(
        used.abs_diff(original) < 1 << 20,
        "{}: {used} bytes on disk, the original {original}",
        copy.display()
    );
}

/// A scratch repository holding one backup (with `extra` options) of
/// [`server_tree`] in `src`; `None`, said, when not root: capabilities,
/// `trusted.` and mounts need it (CI runs as root).
fn backed_up_server_tree(extra: &[&str]) -> Option<(Env, std::path::PathBuf)> {
    if !is_root() {
        eprintln!("needs root (capabilities, trusted., mount): skipped");
        return None;
    }
    let env = Env::new();
    let src = env.path("src");
    server_tree(&src);
    env.backup(&[&src], extra);
    Some((env, src))
}

/// What rsync sees differ in hard links, ACLs, xattrs and everything `-a`
/// compares: nothing when the trees are the same.
fn rsync_differences(src: &Path, restored: &Path) -> String {
    let from = format!("{}/", src.display());
    let to = format!("{}/", restored.display());
    run_tool(
        "rsync",
        &["-naHAX", "--numeric-ids", "--itemize-changes", &from, &to],
    )
}

#[test]
fn xattrs_acls_and_capabilities_come_back_from_a_restore() {
    let Some((env, src)) = backed_up_server_tree(&[]) else {
        return;
    };
    let out = env.path("out");
    env.restore(&format!("latest:{}", src.display()), &out);

    assert_eq!(rsync_differences(&src, &out), "");
    assert_links_and_holes(&src, &out);
    assert_eq!(
        get_xattr(&out.join("tagged.txt"), "user.origin").as_deref(),
        Some(BINARY)
    );
    assert_eq!(
        get_xattr(&out.join("tagged.txt"), "trusted.secret").as_deref(),
        Some(&b"root only"[..])
    );
    let cap = run_tool("getcap", &[out.join("ping").to_str().unwrap()]);
    assert!(cap.contains("cap_net_raw=ep"), "{cap}");
    let acl = |p: &Path| {
        run_tool("getfacl", &["-p", "-n", p.to_str().unwrap()])
            .lines()
            .filter(|l| !l.starts_with("# file:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let restored_acl = acl(&out.join("shared"));
    assert_eq!(restored_acl, acl(&src.join("shared")));
    assert!(
        restored_acl.contains("default:user:65534:r-x"),
        "{restored_acl}"
    );
    assert_eq!(get_xattr(&out.join("plain.txt"), "user.origin"), None);

    // recover.py (python3, gpg and zstd only) gives back the same.
    let gnupg = env.gnupg_with_admin_key();
    let recovered = env.path("recovered");
    let rec = recover_py(
        &env,
        &gnupg,
        &[
            "--path",
            &src.display().to_string(),
            "--target",
            &recovered.display().to_string(),
        ],
    );
    assert!(
        rec.status.success(),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    // (The target directory itself is recover.py's, not the snapshot's.)
    assert_same_below_top(&src, &recovered);
    assert_links_and_holes(&src, &recovered);

    // diff sees an attribute-only change as a metadata change.
    set_xattr(&src.join("plain.txt"), "user.note", b"added later");
    env.backup(&[&src], &[]);
    let snaps = env.snapshots();
    let ids: Vec<String> = snaps
        .iter()
        .map(|s| s["id"].as_str().unwrap()[..8].to_string())
        .collect();
    let diff = env.admin_ok("diff", &[&ids[0], &ids[1], &src.display().to_string()]);
    let diff = text(&diff);
    assert!(diff.contains("U ") && diff.contains("plain.txt"), "{diff}");
    assert!(!diff.contains("tagged.txt"), "{diff}");

    // The second run took the unchanged sparse file and the hard links
    // from its state: restored, they are still sparse and linked.
    let again = env.path("again");
    env.restore(&format!("latest:{}", src.display()), &again);
    assert_links_and_holes(&src, &again);

    // --no-sparse writes the zeros.
    let dense = env.path("dense");
    let spec = format!("latest:{}", src.join("sparse.img").display());
    env.admin_ok(
        "restore",
        &[&spec, "--target", dense.to_str().unwrap(), "--no-sparse"],
    );
    let used = disk_usage(&dense.join("sparse.img"));
    assert!(used >= SPARSE_SIZE, "--no-sparse: {used} bytes on disk");
    std::fs::remove_dir_all(&dense).unwrap();
    // `cat` streams it, holes as zeros, in order.
    let out = env.admin_ok("cat", &[&spec]);
    assert!(
        out.stdout == std::fs::read(src.join("sparse.img")).unwrap(),
        "cat of the sparse file differs"
    );

    // A name whose other names lie outside the restored path is a file;
    // the names inside it stay linked.
    let part = env.path("part");
    env.restore(&format!("latest:{}", src.join("linked").display()), &part);
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(part.join("a.txt")).unwrap(),
        std::fs::metadata(part.join("b.txt")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink(), b.nlink()), (b.ino(), 2, 2));
    let single = env.path("single");
    env.restore(&format!("latest:{}", src.join("c.txt").display()), &single);
    let c = std::fs::metadata(single.join("c.txt")).unwrap();
    assert_eq!(c.nlink(), 1);
    assert_eq!(
        std::fs::read(single.join("c.txt")).unwrap(),
        b"one file, three names"
    );

    // diff sees a name that stopped being a hard link (same bytes, same
    // mtime) as a metadata change.
    std::fs::remove_file(src.join("c.txt")).unwrap();
    std::fs::copy(src.join("linked/a.txt"), src.join("c.txt")).unwrap();
    let mtime = std::fs::metadata(src.join("linked/a.txt"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(src.join("c.txt"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    env.backup(&[&src], &[]);
    let last = env.snapshots();
    let newest = last.last().unwrap()["id"].as_str().unwrap()[..8].to_string();
    let diff = env.admin_ok("diff", &[&ids[1], &newest, &src.display().to_string()]);
    let diff = text(&diff);
    assert!(
        diff.lines()
            .any(|l| l.starts_with("U ") && l.ends_with("/c.txt")),
        "{diff}"
    );
    // Its former other names lost a link count only: not a change of them.
    assert_eq!(diff.lines().count(), 1, "{diff}");
}

#[test]
fn no_xattrs_leaves_them_out() {
    let Some((env, src)) = backed_up_server_tree(&["--no-xattrs"]) else {
        return;
    };
    let out = env.path("out");
    env.restore(&format!("latest:{}", src.display()), &out);
    assert_eq!(std::fs::read(out.join("tagged.txt")).unwrap(), b"tagged");
    assert_eq!(get_xattr(&out.join("tagged.txt"), "user.origin"), None);
    assert_eq!(get_xattr(&out.join("ping"), "security.capability"), None);
    assert_eq!(
        get_xattr(&out.join("shared"), "system.posix_acl_access"),
        None
    );
}

#[test]
fn a_restore_as_non_root_names_the_refused_capability_exits_3_and_keeps_the_rest() {
    let Some((env, src)) = backed_up_server_tree(&[]) else {
        return;
    };

    // The unprivileged admin: its own key, pin file and target.
    let home = env.path("nobody-home");
    std::fs::create_dir(&home).unwrap();
    std::fs::copy(env.path("admin.key"), home.join("admin.key")).unwrap();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&home)
        .status()
        .unwrap();
    assert!(chown.success());
    let target = home.join("out");
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_coffer"))
        .args(["restore", "--repo"])
        .arg(env.path("repo"))
        .args(["--key", "admin.key"])
        .arg(format!("latest:{}", src.display()))
        .arg("--target")
        .arg(&target)
        .current_dir(&home)
        .env_clear()
        .env("HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(
        stderr.contains("ping") && stderr.contains("security.capability"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tagged.txt") && stderr.contains("trusted.secret"),
        "{stderr}"
    );
    // Everything the kernel allows an owner came back.
    assert_eq!(
        get_xattr(&target.join("tagged.txt"), "user.origin").as_deref(),
        Some(BINARY)
    );
    assert_eq!(
        std::fs::read(target.join("ping")).unwrap(),
        std::fs::read(src.join("ping")).unwrap()
    );
    let acl = run_tool(
        "getfacl",
        &["-p", "-n", target.join("shared").to_str().unwrap()],
    );
    assert!(acl.contains("user:65534:r--"), "{acl}");
}

#[test]
fn a_target_without_xattrs_is_said_once_with_the_count_and_the_rest_restored() {
    let Some((env, src)) = backed_up_server_tree(&[]) else {
        return;
    };
    let target = env.path("ramfs");
    let _ramfs = FsMount::mount("ramfs", &[], &target);
    let out = env.admin(
        "restore",
        &[
            &format!("latest:{}", src.display()),
            "--target",
            &target.display().to_string(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("extended attribute"))
        .collect();
    // tagged.txt 2, shared 2 (access and default ACL), ping 1.
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(said[0].contains("5 were not restored"), "{stderr}");
    assert_eq!(std::fs::read(target.join("tagged.txt")).unwrap(), b"tagged");
    assert_eq!(
        std::fs::read(target.join("shared/inside.txt")).unwrap(),
        b"inside"
    );
}

#[test]
fn the_mount_serves_xattrs_acls_and_capabilities_as_stored() {
    let Some((env, src)) = backed_up_server_tree(&[]) else {
        return;
    };
    let m = util::mount::Mounted::new(&env, &[]);
    let inside = under(&m.path("snapshots/latest"), &src);
    assert_eq!(rsync_differences(&src, &inside), "");
    // One inode for the three names, the source's link count; the sparse
    // file's blocks are its data.
    assert_eq!(link_group(&inside), (vec![3, 3, 3], true));
    let used = disk_usage(&inside.join("sparse.img"));
    assert!(used <= 1 << 20, "the mount says {used} bytes allocated");
    assert_eq!(
        get_xattr(&inside.join("tagged.txt"), "user.origin").as_deref(),
        Some(BINARY)
    );
    assert_eq!(get_xattr(&inside.join("plain.txt"), "user.origin"), None);
    let cap = run_tool("getcap", &[inside.join("ping").to_str().unwrap()]);
    assert!(cap.contains("cap_net_raw=ep"), "{cap}");
    let acl = run_tool(
        "getfacl",
        &["-p", "-n", inside.join("shared").to_str().unwrap()],
    );
    assert!(acl.contains("default:user:65534:r-x"), "{acl}");
    // `cp -a` out of the mount keeps them.
    let copy = env.path("copy");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&inside)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    assert_eq!(
        get_xattr(&copy.join("tagged.txt"), "user.origin").as_deref(),
        Some(BINARY)
    );
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
}

/// What the fixture's source held: path, mode, mtime (ns) and content (a
/// symlink: its target).
fn pre_xattrs_source() -> Vec<(&'static str, u32, i64, Vec<u8>)> {
    let t = 1_600_000_000_123_456_789;
    let data: Vec<u8> = (0..300_000u32).map(|i| ((i * 7) % 251) as u8).collect();
    vec![
        (
            "hello.txt",
            0o644,
            t,
            b"hello from before xattrs\n".to_vec(),
        ),
        ("bin/data.bin", 0o600, t, data),
        ("bin/run.sh", 0o755, t, b"#!/bin/sh\necho hi\n".to_vec()),
        ("empty", 0o640, t, Vec::new()),
        ("sub/deeper/note.txt", 0o644, t, b"deep note\n".to_vec()),
        (
            "link",
            0o777,
            1_609_556_645_000_000_000,
            b"hello.txt".to_vec(),
        ),
        ("sub", 0o750, t, Vec::new()),
    ]
}

/// Asserts `root` holds the fixture's source, byte for byte, with modes,
/// mtimes and no extended attribute.
fn assert_pre_xattrs_source(root: &Path) {
    use std::os::unix::fs::MetadataExt;
    for (rel, mode, mtime_ns, content) in pre_xattrs_source() {
        let path = root.join(rel);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let got_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        assert_eq!((meta.mode() & 0o7777, got_ns), (mode, mtime_ns), "{rel}");
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            assert_eq!(target.as_os_str().as_bytes(), content, "{rel}");
        } else if meta.is_file() {
            assert_eq!(std::fs::read(&path).unwrap(), content, "{rel}");
        }
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path; a null buffer of size 0 asks for the size.
        let names = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        assert!(names <= 0, "{rel} has extended attributes");
    }
}

#[test]
fn a_repository_from_before_xattrs_checks_restores_and_mounts_byte_identical() {
    let env = Env::from_fixture("pre-xattrs");
    env.admin_ok("check", &["--read-data"]);
    let src = "/tmp/coffer-pre-xattrs/src";
    let out = env.path("out");
    env.restore(&format!("latest:{src}"), &out);
    assert_pre_xattrs_source(&out);

    let m = util::mount::Mounted::new(&env, &[]);
    assert_pre_xattrs_source(&m.path(&format!("snapshots/latest{src}")));
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
}

/// The source of the version 2 fixture (tests/fixtures/v2), made again in
/// `root`: as at its first snapshot (`first`), else as at its second.
fn v2_fixture_source(root: &Path, first: bool) {
    let t = 1_796_119_200_000_000_000; // 2026-12-01T10:00:00Z
    let chmod = |rel: &str, mode: u32| {
        std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    write(
        &root.join("hello.txt"),
        b"hello from a version 2 repository\n",
    );
    write(&root.join("bin/random.bin"), &random_bytes(2, 1_572_864));
    if first {
        write(&root.join("bin/run.sh"), b"#!/bin/sh\necho hi\n");
        chmod("bin/run.sh", 0o755);
    }
    write(&root.join("empty"), b"");
    chmod("empty", 0o640);
    let note: &[u8] = match first {
        true => b"deep note\n",
        false => b"deep note\na line added\n",
    };
    write(&root.join("sub/deeper/note.txt"), note);
    std::os::unix::fs::symlink("hello.txt", root.join("link")).unwrap();
    std::fs::hard_link(root.join("hello.txt"), root.join("sub/hard.txt")).unwrap();
    let sparse = std::fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(3 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"middle", 1 << 20).unwrap();
    drop(sparse);
    set_xattr(&root.join("hello.txt"), "user.origin", b"fixture");
    chmod("sub", 0o750);
    for rel in [
        "hello.txt",
        "bin/random.bin",
        "bin/run.sh",
        "empty",
        "sub/deeper/note.txt",
        "link",
        "sparse.img",
        "sub/deeper",
        "sub",
        "bin",
        "",
    ] {
        let path = root.join(rel);
        if std::fs::symlink_metadata(&path).is_ok() {
            set_mtime(&path, t);
        }
    }
    if !first {
        set_mtime(&root.join("sub/deeper/note.txt"), t + 86_400_000_000_000);
    }
}

/// A version 2 repository (data and tree packs together under `data/`,
/// from before version 3 kept file contents under `files/`) restores,
/// checks, mounts and diffs byte-identical.
#[test]
fn a_version_2_repository_checks_restores_and_mounts_byte_identical() {
    if !is_root() {
        eprintln!("needs root (the fixture's files are root's): skipped");
        return;
    }
    let env = Env::from_fixture("v2");
    let config = std::fs::read_to_string(env.path("repo/config")).unwrap();
    assert!(config.contains("\"version\": 2"), "{config}");
    assert!(!env.path("repo/files").exists());
    env.admin_ok("check", &["--read-data"]);
    let src = "/tmp/coffer-v2-fixture/src";
    let mut expected = Vec::new();
    for (id, first) in [("22af9c5a", true), ("73c17913", false)] {
        let want = env.path(&format!("expected-{id}"));
        v2_fixture_source(&want, first);
        let out = env.path(&format!("out-{id}"));
        env.restore(&format!("{id}:{src}"), &out);
        assert_same_below_top(&want, &out);
        assert_eq!(
            std::fs::read(out.join("bin/random.bin")).unwrap(),
            random_bytes(2, 1_572_864)
        );
        assert!(disk_usage(&out.join("sparse.img")) < 1 << 20, "holes lost");
        expected.push((id, want));
    }
    // recover.py reads it too: file contents under data/, as before.
    let gnupg = env.gnupg_with_admin_key();
    let by_hand = env.path("by-hand");
    let out = recover_py(
        &env,
        &gnupg,
        &[
            "--snapshot",
            "73c17913",
            "--path",
            src,
            "--target",
            by_hand.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, second) = &expected[1];
    assert_eq!(
        std::fs::read(by_hand.join("sub/deeper/note.txt")).unwrap(),
        std::fs::read(second.join("sub/deeper/note.txt")).unwrap()
    );
    assert_eq!(
        std::fs::read(by_hand.join("bin/random.bin")).unwrap(),
        random_bytes(2, 1_572_864)
    );
    let diff = env.admin_ok("diff", &["22af9c5a", "73c17913"]);
    let said = String::from_utf8_lossy(&diff.stdout);
    assert!(
        said.contains("bin/run.sh") && said.contains("note.txt"),
        "{said}"
    );

    let m = util::mount::Mounted::new(&env, &[]);
    for (id, want) in &expected {
        let named: Vec<PathBuf> = std::fs::read_dir(m.path("ids"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let snapshot = named
            .iter()
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(id))
            .unwrap_or_else(|| panic!("{id} not in ids/: {named:?}"));
        let mounted = under(snapshot, Path::new(src));
        for rel in [
            "hello.txt",
            "bin/random.bin",
            "sub/deeper/note.txt",
            "sparse.img",
        ] {
            assert_eq!(
                std::fs::read(mounted.join(rel)).unwrap(),
                std::fs::read(want.join(rel)).unwrap(),
                "{id}: {rel}"
            );
        }
    }
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn one_file_system_stores_a_mount_point_empty() {
    if !is_root() {
        eprintln!("needs root (mount): skipped");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("here.txt"), b"on the source's file system");
    let _tmpfs = FsMount::mount("tmpfs", &[], &src.join("mnt"));
    write(&src.join("mnt/inside.txt"), b"on another file system");
    write(&src.join("mnt/sub/deep.txt"), b"deeper");
    let spec = format!("latest:{}", src.display());

    env.backup(&[&src], &["--one-file-system"]);
    let out = env.path("out");
    env.restore(&spec, &out);
    assert_eq!(
        std::fs::read(out.join("here.txt")).unwrap(),
        b"on the source's file system"
    );
    assert!(out.join("mnt").is_dir(), "the mount point itself is kept");
    assert_eq!(std::fs::read_dir(out.join("mnt")).unwrap().count(), 0);

    env.backup(&[&src], &[]);
    let all = env.path("all");
    env.restore(&spec, &all);
    assert_eq!(
        std::fs::read(all.join("mnt/sub/deep.txt")).unwrap(),
        b"deeper"
    );
}

#[test]
fn a_tar_export_extracted_by_gnu_tar_is_the_source() {
    let Some((env, src)) = backed_up_server_tree(&[]) else {
        return;
    };
    let spec = format!("latest:{}", src.display());
    let archive = env.path("a.tar");
    let out = env.admin_ok("export", &[&spec, "--tar", archive.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
    let extracted = env.path("extracted");
    std::fs::create_dir(&extracted).unwrap();
    run_tool(
        "tar",
        &[
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "-xpf",
            archive.to_str().unwrap(),
            "-C",
            extracted.to_str().unwrap(),
        ],
    );
    // (The top directory is tar's, not the snapshot's.)
    assert_same_below_top(&src, &extracted);
    assert_links_and_holes(&src, &extracted);
    // The sparse file is stored as its data: the archive is small.
    let size = std::fs::metadata(&archive).unwrap().len();
    assert!(size < 1 << 20, "the archive is {size} bytes");
}

#[test]
fn export_says_once_what_a_zip_leaves_out() {
    let Some((env, src)) = backed_up_server_tree(&[]) else {
        return;
    };
    let spec = format!("latest:{}", src.display());
    let out = env.admin_ok("export", &[&spec, "--zip", "a.zip"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = |what: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.contains(what))
            .map(str::to_string)
            .collect()
    };
    // tagged.txt, shared and ping.
    let xattrs = said("extended attributes");
    assert_eq!(xattrs.len(), 1, "{stderr}");
    assert!(xattrs[0].contains("3 entries"), "{stderr}");
    // linked/b.txt and c.txt are copies of linked/a.txt.
    let links = said("hard-linked");
    assert_eq!(links.len(), 1, "{stderr}");
    assert!(links[0].contains("2 names"), "{stderr}");
    let listing = run_tool("unzip", &["-l", env.path("a.zip").to_str().unwrap()]);
    assert!(
        listing.contains("sparse.img") && listing.contains("1073741824"),
        "{listing}"
    );
}
