//! Recovery without coffer: the real `gpg` and `zstd` open every stored
//! blob and snapshot, and scripts/recover.py restores snapshots with
//! nothing but python3, gpg and zstd, byte- and metadata-identical to the
//! source.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use coffer_core::format::index::PackKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
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

    let gnupg = env.gnupg_with_admin_key();

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

#[test]
fn gpg_decrypts_stored_blobs_and_snapshots() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("only.txt"), b"plain text that gpg must recover\n");
    env.backup(&[&src], &[]);
    let gnupg = env.gnupg_home();
    let gpg = |args: &[&str]| {
        Command::new("gpg")
            .env("GNUPGHOME", &gnupg)
            .args(["--batch", "--quiet"])
            .args(args)
            .output()
            .expect("run gpg (apt-get install gnupg)")
    };
    assert!(
        gpg(&["--import", &env.path("admin.key").display().to_string()])
            .status
            .success()
    );

    let zstd_d = |frame: &[u8]| {
        let mut zstd = Command::new("zstd")
            .args(["-d", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run zstd (apt-get install zstd)");
        use std::io::Write;
        zstd.stdin.take().unwrap().write_all(frame).unwrap();
        let plain = zstd.wait_with_output().unwrap();
        assert!(plain.status.success(), "zstd failed");
        plain.stdout
    };

    // A pack is its blobs back to back: gpg prints the first blob (and, with
    // more than one blob, complains about the rest and exits non-zero).
    let mut first_blobs = Vec::new();
    for pack in env.packs() {
        let out = gpg(&["--decrypt", &pack.display().to_string()]);
        first_blobs.push(zstd_d(&out.stdout));
    }
    assert!(
        first_blobs
            .iter()
            .any(|p| p == b"plain text that gpg must recover\n"),
        "no pack's first blob decrypted to the file's content"
    );
    assert!(
        first_blobs.iter().any(|p| p.starts_with(b"{\"entries\":[")),
        "no tree pack"
    );

    // Every blob alone is a complete message: cut each out by the offsets of
    // the index (itself decrypted with gpg) and decrypt it, exit status 0.
    let index_dir = env.path("repo/index");
    let mut blobs = 0;
    for index in std::fs::read_dir(index_dir).unwrap() {
        let out = gpg(&["--decrypt", &index.unwrap().path().display().to_string()]);
        assert!(out.status.success());
        let index: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for pack in index["packs"].as_array().unwrap() {
            let id = pack["id"].as_str().unwrap();
            let kind = match pack["kind"].as_str().unwrap() {
                "data" => PackKind::Data,
                _ => PackKind::Tree,
            };
            let bytes = std::fs::read(env.path(&format!("repo/{}", pack_rel(id, kind)))).unwrap();
            for blob in pack["blobs"].as_array().unwrap() {
                let (off, len) = (
                    blob["offset"].as_u64().unwrap() as usize,
                    blob["length"].as_u64().unwrap() as usize,
                );
                let one = env.path("one-blob");
                std::fs::write(&one, &bytes[off..off + len]).unwrap();
                let out = gpg(&["--decrypt", &one.display().to_string()]);
                assert!(
                    out.status.success(),
                    "gpg: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let plain = zstd_d(&out.stdout);
                assert_eq!(plain.len() as u64, blob["raw_length"].as_u64().unwrap());
                blobs += 1;
            }
        }
    }
    assert!(blobs >= 4, "only {blobs} blobs listed in the index");

    let snap_dir = env.path("repo/snapshots");
    let snap = std::fs::read_dir(snap_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // A snapshot is signed by the writers' key, which config lists: gpg
    // decrypts it but cannot check the signature until it has that
    // certificate, then calls the signature good.
    let snap = snap.display().to_string();
    let unchecked = gpg(&["--decrypt", &snap]);
    let said = String::from_utf8_lossy(&unchecked.stderr);
    assert!(said.contains("No public key"), "{said}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("repo/config")).unwrap()).unwrap();
    let writers = env.path("writers.asc");
    std::fs::write(&writers, config["writers"][0].as_str().unwrap()).unwrap();
    assert!(gpg(&["--import", &writers.display().to_string()])
        .status
        .success());
    let out = gpg(&["--status-fd", "2", "--decrypt", &snap]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("[GNUPG:] VALIDSIG "), "{said}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["paths"][0], src.display().to_string());
}
