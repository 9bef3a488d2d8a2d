//! A full filesystem, under the restore target and under a local
//! repository: the command fails and says so, and leaves nothing that looks
//! whole but is not. Needs root (to mount a small tmpfs); CI runs as root.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use util::*;

#[test]
fn restore_into_a_full_filesystem_fails_and_leaves_only_whole_files() {
    if !is_root() {
        eprintln!("needs root to mount a tmpfs; CI runs as root");
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    for i in 0..40u64 {
        write(&src.join(format!("small{i:02}")), &random_bytes(i, 20_000));
    }
    // Several chunks, more than the target holds: never whole.
    write(&src.join("big"), &random_bytes(99, 6_000_000));
    let snap = env.backup(&[&src], &[]);
    let target = env.path("target");
    let _full = FsMount::mount("tmpfs", &["size=3m"], &target);
    let out = env.admin(
        "restore",
        &[
            snap["id"].as_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
        ],
    );
    let said = text(&out);
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("No space left on device"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    let restored = under(&target, &src);
    let left = listing(&target);
    for rel in listing(&restored) {
        if restored.join(&rel).is_dir() {
            continue;
        }
        assert_eq!(
            std::fs::read(restored.join(&rel)).unwrap(),
            std::fs::read(src.join(&rel)).unwrap(),
            "{rel} is there but not whole"
        );
    }
    assert!(!restored.join("big").exists(), "{left:?}");
    eprintln!("{} whole files before the target filled up", left.len());
}

#[test]
fn backup_into_a_full_repository_fails_and_leaves_every_snapshot_whole() {
    if !is_root() {
        eprintln!("needs root to mount a tmpfs; CI runs as root");
        return;
    }
    let space = tempfile::tempdir().unwrap();
    let full = FsMount::mount("tmpfs", &["size=4m"], space.path());
    let mut env = Env::bare();
    env.repo = space.path().display().to_string();
    let env = env.init();
    let src = env.path("src");
    write(&src.join("first"), &random_bytes(1, 500_000));
    env.backup(&[&src], &[]);
    let kept = env.path("kept");
    cp_a(&src, &kept);

    write(&src.join("big"), &random_bytes(2, 8_000_000));
    let out = env.writer_cmd(&[src.to_str().unwrap()]).output().unwrap();
    let said = text(&out);
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("No space left on device"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    assert_eq!(env.snapshots().len(), 1);
    assert_eq!(
        std::fs::read_dir(space.path().join("tmp")).unwrap().count(),
        0,
        "a partly written object was left in tmp/"
    );
    env.admin_ok("check", &["--read-data"]);

    // Room again (the failed run's complete packs stay until a prune):
    // the next backup, big file and all, completes, and both restore.
    full.remount("size=32m");
    write(&src.join("second"), &random_bytes(3, 300_000));
    env.backup(&[&src], &[]);
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    for (snap, expected) in snaps.iter().zip([&kept, &src]) {
        let out = env.path(&format!("out-{}", snap["id"].as_str().unwrap()));
        env.restore(snap["id"].as_str().unwrap(), &out);
        assert_same_tree(expected, &under(&out, &src));
    }
}
