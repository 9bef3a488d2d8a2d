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
use std::path::Path;
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

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings; `buf` is writable for its length.
    let len =
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    run("setfacl", &["-m", "u:nobody:r", shared.to_str().unwrap()]);
    run(
        "setfacl",
        &["-d", "-m", "u:nobody:rx", shared.to_str().unwrap()],
    );
    let ping = src.join("ping");
    std::fs::copy("/bin/true", &ping).unwrap();
    run("setcap", &["cap_net_raw+ep", ping.to_str().unwrap()]);
    std::os::unix::fs::symlink("plain.txt", src.join("link")).unwrap();
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

/// What rsync sees differ in ACLs, xattrs and everything `-a` compares:
/// nothing when the trees are the same.
fn rsync_differences(src: &Path, restored: &Path) -> String {
    let from = format!("{}/", src.display());
    let to = format!("{}/", restored.display());
    run(
        "rsync",
        &["-naAX", "--numeric-ids", "--itemize-changes", &from, &to],
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
    assert_eq!(
        get_xattr(&out.join("tagged.txt"), "user.origin").as_deref(),
        Some(BINARY)
    );
    assert_eq!(
        get_xattr(&out.join("tagged.txt"), "trusted.secret").as_deref(),
        Some(&b"root only"[..])
    );
    let cap = run("getcap", &[out.join("ping").to_str().unwrap()]);
    assert!(cap.contains("cap_net_raw=ep"), "{cap}");
    let acl = |p: &Path| {
        run("getfacl", &["-p", "-n", p.to_str().unwrap()])
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
    let differences = rsync_differences(&src, &recovered);
    let below: Vec<&str> = differences
        .lines()
        .filter(|l| !l.ends_with(" ./"))
        .collect();
    assert!(below.is_empty(), "{differences}");

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
    let acl = run(
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
    assert_eq!(
        get_xattr(&inside.join("tagged.txt"), "user.origin").as_deref(),
        Some(BINARY)
    );
    assert_eq!(get_xattr(&inside.join("plain.txt"), "user.origin"), None);
    let cap = run("getcap", &[inside.join("ping").to_str().unwrap()]);
    assert!(cap.contains("cap_net_raw=ep"), "{cap}");
    let acl = run(
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
    let env = Env::bare();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pre-xattrs");
    cp_a(&fixture.join("repo"), &env.path("repo"));
    std::fs::copy(fixture.join("admin.key"), env.path("admin.key")).unwrap();
    std::fs::set_permissions(
        env.path("admin.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
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
fn export_says_once_how_many_entries_lose_their_xattrs_in_the_archive() {
    let Some((env, src)) = backed_up_server_tree(&[]) else {
        return;
    };
    for (flag, file) in [("--tar", "a.tar"), ("--zip", "a.zip")] {
        let spec = format!("latest:{}", src.display());
        let out = env.admin_ok("export", &[&spec, flag, file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("extended attributes"))
            .collect();
        // tagged.txt, shared and ping.
        assert_eq!(said.len(), 1, "{flag}: {stderr}");
        assert!(said[0].contains("3 entries"), "{flag}: {stderr}");
    }
}
