//! `export`: a snapshot as zip or tar, unpacked by the standard `unzip` and
//! GNU `tar`, compared with the source (bytes, modes, mtimes to the second,
//! symlinks; tar also fifos and raw names).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use util::*;

/// (kind, mode, mtime in seconds, content or link target) per path.
type Summary = BTreeMap<Vec<u8>, (&'static str, u32, i64, Vec<u8>)>;

/// What an archive can carry of the tree at `root`; symlink mtimes only
/// with `link_times` (unzip does not set them).
fn summary(root: &Path, link_times: bool) -> Summary {
    let mut out = Summary::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_encoded_bytes()
                .to_vec();
            let (kind, what) = if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                ("symlink", t.as_os_str().as_encoded_bytes().to_vec())
            } else if ft.is_dir() {
                dirs.push(p.clone());
                ("dir", Vec::new())
            } else if ft.is_file() {
                ("file", std::fs::read(&p).unwrap())
            } else {
                ("special", Vec::new())
            };
            let mode = if ft.is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            let mtime = if ft.is_symlink() && !link_times {
                0
            } else {
                m.mtime()
            };
            out.insert(rel, (kind, mode, mtime, what));
        }
    }
    out
}

fn assert_same(expected: &Summary, actual: &Summary) {
    let show = |k: &Vec<u8>| String::from_utf8_lossy(k).into_owned();
    for (k, v) in expected {
        let got = actual
            .get(k)
            .unwrap_or_else(|| panic!("{} missing", show(k)));
        assert_eq!(
            (v.0, v.1, v.2, v.3.len()),
            (got.0, got.1, got.2, got.3.len()),
            "{} differs (kind, mode, mtime, length)",
            show(k)
        );
        assert!(v.3 == got.3, "{}: contents differ", show(k));
    }
    let extra: Vec<_> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .map(show)
        .collect();
    assert!(extra.is_empty(), "extra entries: {extra:?}");
}

fn source(root: &Path) {
    write(&root.join("big.bin"), &random_bytes(5, 5_000_000));
    write(&root.join("zeros"), &vec![0u8; 2_000_000]);
    write(&root.join("empty"), b"");
    write(&root.join("sub/deeper/note.txt"), b"deep note\n");
    write(&root.join("sub/run.sh"), b"#!/bin/sh\necho hi\n");
    write(&root.join("private"), b"secret-ish");
    write(&root.join("unicode-ß-名前.txt"), b"unicode");
    let mode = |p: &str, m: u32| {
        std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode("sub/run.sh", 0o755);
    mode("private", 0o600);
    mode("sub/deeper", 0o750);
    std::os::unix::fs::symlink("../big.bin", root.join("sub/link")).unwrap();
    set_mtime(&root.join("sub/deeper/note.txt"), 1_234_567_890_123_456_789);
    set_mtime(&root.join("empty"), 1_000_000_000_000_000_000);
    set_mtime(&root.join("sub/deeper"), 1_500_000_000_000_000_000);
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn zip_and_tar_unpack_with_standard_tools_to_the_same_tree() {
    let env = Env::new();
    let src = env.path("src");
    source(&src);
    env.backup(&[&src], &[]);
    // Only the tar carries these: a fifo and a name that is not UTF-8.
    let with_extras = env.path("src2");
    cp_a(&src, &with_extras);
    write(&with_extras.join(os(b"raw-\xff-name")), b"raw");
    let fifo =
        std::ffi::CString::new(with_extras.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    env.backup(&[&with_extras], &[]);
    let spec = |dir: &Path| format!("latest:{}", dir.display());
    let first = env.snapshots()[0]["id"].as_str().unwrap()[..8].to_string();

    // zip, from the first snapshot: unzip restores bytes, modes, mtimes.
    let zip = env.path("out.zip");
    let out = env.admin_ok(
        "export",
        &[&format!("{first}:{}", src.display()), "--zip", "out.zip"],
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unzipped = env.path("unzipped");
    run(Command::new("unzip")
        .arg("-q")
        .arg(&zip)
        .arg("-d")
        .arg(&unzipped));
    assert_same(&summary(&src, false), &summary(&unzipped, false));

    // tar of the second: GNU tar restores everything, fifo and raw name too.
    env.admin_ok("export", &[&spec(&with_extras), "--tar", "out.tar"]);
    let untarred = env.path("untarred");
    std::fs::create_dir(&untarred).unwrap();
    run(Command::new("tar")
        .arg("-xpf")
        .arg(env.path("out.tar"))
        .arg("-C")
        .arg(&untarred));
    assert_same(&summary(&with_extras, true), &summary(&untarred, true));

    // zip of the second: the fifo is left out, and said so.
    let out = env.admin_ok(
        "export",
        &[&spec(&with_extras), "--zip", "extras.zip", "--store"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fifo: left out"), "{stderr}");

    // To standard output: the same archive as to a file.
    let piped = env.admin_ok("export", &[&spec(&with_extras), "--tar", "-"]);
    assert_eq!(piped.stdout, std::fs::read(env.path("out.tar")).unwrap());
    let piped = env.admin_ok(
        "export",
        &[&format!("{first}:{}", src.display()), "--zip", "-"],
    );
    std::fs::write(env.path("piped.zip"), &piped.stdout).unwrap();
    let unpiped = env.path("unpiped");
    run(Command::new("unzip")
        .arg("-q")
        .arg(env.path("piped.zip"))
        .arg("-d")
        .arg(&unpiped));
    assert_same(&summary(&src, false), &summary(&unpiped, false));

    // One file: the archive holds just it, under its name.
    env.admin_ok(
        "export",
        &[
            &format!("{first}:{}/sub/deeper/note.txt", src.display()),
            "--tar",
            "one.tar",
        ],
    );
    let listing = Command::new("tar")
        .arg("-tvf")
        .arg(env.path("one.tar"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(
        listing.contains(" 2009-02-1") && listing.ends_with(" note.txt\n"),
        "{listing}"
    );

    // An existing file is never replaced; a failed export leaves no file.
    let before = std::fs::read(&zip).unwrap();
    let out = env.admin("export", &["latest", "--zip", "out.zip"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&zip).unwrap(), before);
    let out = env.admin("export", &["latest:/no/such/path", "--zip", "none.zip"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.path("none.zip").exists() && !env.path("none.zip.part").exists());
}
