//! scripts/recover.py restores snapshots with nothing but python3, gpg and
//! zstd, byte- and metadata-identical to the source.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use util::*;

fn recover(env: &Env, gnupg: &Path, args: &[&str]) -> Output {
    recover_py(env, gnupg, args)
}

#[test]
fn recover_py_restores_snapshots_with_gpg_and_zstd_only() {
    let env = Env::new();
    let src = env.path("src");
    let g = src.join("gen");
    write(&g.join("big.bin"), &random_bytes(3, 6_000_000));
    write(&g.join("zeros"), &vec![0u8; 2_000_000]);
    write(&g.join("empty"), b"");
    write(&g.join("small.txt"), b"hello coffer\n");
    write(&src.join(os(b"gen/name-\xff\xfe-not-utf8")), b"raw name");
    write(&g.join("deep/a/b/c/bottom.txt"), b"deep down");
    std::os::unix::fs::symlink("small.txt", g.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", g.join("link-dangling")).unwrap();
    let fifo = std::ffi::CString::new(g.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    write(&g.join("setuid"), b"#!/bin/sh\n");
    std::fs::set_permissions(g.join("setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(g.join("deep/a"), std::fs::Permissions::from_mode(0o750)).unwrap();
    set_mtime(&g.join("small.txt"), 1_234_567_890_123_456_789);
    set_mtime(&g.join("link-rel"), 1_000_000_001_000_000_001);
    set_mtime(&g.join("deep/a"), 1_500_000_000_000_000_007);
    let v1 = env.backup(&[&src], &[]);
    let v1_copy = env.path("v1");
    cp_a(&src, &v1_copy);
    write(&g.join("small.txt"), b"hello coffer, version two\n");
    std::fs::remove_file(g.join("empty")).unwrap();
    write(&g.join("new-file"), b"added in v2");
    let mut big = std::fs::read(g.join("big.bin")).unwrap();
    big[3_000_000] ^= 0xff;
    write(&g.join("big.bin"), &big);
    env.backup(&[&src], &[]);

    let gnupg = env.gnupg_home();
    let import = Command::new("gpg")
        .env("GNUPGHOME", &gnupg)
        .args(["--batch", "--quiet", "--import"])
        .arg(env.path("admin.key"))
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    let listed = recover(&env, &gnupg, &["--list"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    let id1 = v1["id"].as_str().unwrap();
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert!(
        listing.lines().next().unwrap().starts_with(&id1[..8]),
        "{listing}"
    );

    // The older snapshot by id prefix, the newer as latest.
    for (spec, expected, out) in [(&id1[..8], &v1_copy, "out1"), ("latest", &src, "out2")] {
        let target = env.path(out);
        let done = recover(
            &env,
            &gnupg,
            &[
                "--snapshot",
                spec,
                "--target",
                &target.display().to_string(),
            ],
        );
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        assert_same_tree(expected, &under(&target, &src));
    }

    // A path inside; a non-empty target is refused.
    let sub = env.path("out3");
    let path = format!("{}/gen/deep", src.display());
    let done = recover(
        &env,
        &gnupg,
        &["--path", &path, "--target", &sub.display().to_string()],
    );
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        std::fs::read(sub.join("a/b/c/bottom.txt")).unwrap(),
        b"deep down"
    );
    let again = recover(
        &env,
        &gnupg,
        &["--path", &path, "--target", &sub.display().to_string()],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // A damaged pack is named, not restored as wrong bytes. The biggest
    // pack holds the first run's chunks, which only the first snapshot
    // needs all of.
    let biggest = env.biggest_pack();
    let mut bytes = std::fs::read(&biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&biggest, &bytes).unwrap();
    let bad = env.path("out4");
    let done = recover(
        &env,
        &gnupg,
        &[
            "--snapshot",
            &id1[..8],
            "--target",
            &bad.display().to_string(),
        ],
    );
    assert!(!done.status.success());
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(stderr.contains("recover.py: gpg failed"), "{stderr}");
}
