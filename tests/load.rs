//! Load: writers on two hosts (two state directories) backing up into one
//! repository at the same time, and a mount read by 8 parallel readers
//! while a backup runs. Everything must stay correct, byte for byte.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use util::mount::{wait_until, Mounted};
use util::*;

/// `backup` as host `host` with its own state directory, started now.
fn start_backup(env: &Env, host: &str, src: &Path) -> Child {
    let state = env.path(&format!("state-{host}"));
    env.writer_cmd(&[
        "--json",
        "--host",
        host,
        "--state-dir",
        state.to_str().unwrap(),
        src.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

/// Waits for a backup; its snapshot id.
fn finish(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    last_json_line(&out.stdout)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A source for one host: some files of its own, one shared with the other
/// host (the same bytes: both upload it, neither knows of the other).
fn host_source(src: &Path, host: u64, round: u64) {
    write(&src.join("shared.bin"), &random_bytes(99, 3_000_000));
    for f in 0..6 {
        write(
            &src.join(format!("own/{f}.bin")),
            &random_bytes(host * 1000 + round * 10 + f, 700_000),
        );
    }
}

#[test]
fn two_hosts_back_up_into_one_repository_at_the_same_time() {
    let env = Env::new();
    let mut made: Vec<(String, PathBuf, PathBuf)> = Vec::new();
    for round in 0..3 {
        let mut children = Vec::new();
        for host in [1u64, 2] {
            let src = env.path(&format!("src{host}"));
            host_source(&src, host, round);
            let copy = env.path(&format!("copy{host}-{round}"));
            cp_a(&src, &copy);
            children.push((start_backup(&env, &format!("host{host}"), &src), src, copy));
        }
        for (child, src, copy) in children {
            made.push((finish(child), src, copy));
        }
    }
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 6);
    for host in ["host1", "host2"] {
        assert_eq!(snaps.iter().filter(|s| s["host"] == host).count(), 3);
    }
    env.admin_ok("check", &["--read-data"]);
    for (n, (id, src, copy)) in made.iter().enumerate() {
        let out = env.path(&format!("out{n}"));
        env.restore(id, &out);
        assert_same_tree(copy, &under(&out, src));
    }
}

/// Reads every file below `dir` and compares it with the same path below
/// `expected`; the number of bytes read.
fn read_all_and_compare(dir: &Path, expected: &Path) -> u64 {
    let mut bytes = 0;
    for entry in std::fs::read_dir(expected).unwrap() {
        let entry = entry.unwrap();
        let (want, got) = (entry.path(), dir.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            bytes += read_all_and_compare(&got, &want);
        } else {
            let data = std::fs::read(&got).unwrap_or_else(|e| panic!("{}: {e}", got.display()));
            assert!(
                data == std::fs::read(&want).unwrap(),
                "{} differs",
                got.display()
            );
            bytes += data.len() as u64;
        }
    }
    bytes
}

#[test]
fn a_mount_serves_eight_parallel_readers_while_a_backup_runs() {
    let env = Env::new();
    let src = env.path("src");
    for d in 0..4 {
        for f in 0..8 {
            write(
                &src.join(format!("d{d}/{f}.bin")),
                &random_bytes(d * 100 + f, 400_000 + 10_000 * f as usize),
            );
        }
    }
    env.backup(&[&src], &[]);
    let copy = env.path("copy");
    cp_a(&src, &copy);

    // A cache smaller than the data, so readers also evict each other's.
    let m = Mounted::new(&env, &["--cache-size", "40MiB"]);
    let first = m.snapshot_names()[0].clone();
    let snapshot_dir = under(&m.path(&format!("snapshots/{first}")), &src);

    // The next backup: new data while the readers read.
    let big = env.path("big");
    write(&big.join("new.bin"), &random_bytes(7, 60_000_000));
    let backup = start_backup(&env, "writer", &big);

    let done = Arc::new(AtomicBool::new(false));
    let read = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (done, read) = (done.clone(), read.clone());
            let (dir, copy) = (snapshot_dir.clone(), copy.clone());
            std::thread::spawn(move || {
                let mut passes = 0;
                while !done.load(Ordering::Relaxed) || passes == 0 {
                    read.fetch_add(read_all_and_compare(&dir, &copy), Ordering::Relaxed);
                    passes += 1;
                }
                passes
            })
        })
        .collect();
    // Drop the kernel's page cache now and then (as root), so reads keep
    // going through the mount and its cache rather than the kernel's.
    let dropper = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let id = finish(backup);
    done.store(true, Ordering::Relaxed);
    dropper.join().unwrap();
    let passes: u32 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    eprintln!(
        "8 readers: {passes} passes, {} MB read through the mount during the backup",
        read.load(Ordering::Relaxed) / 1_000_000
    );

    // The new snapshot shows up in the same mount and reads correctly.
    wait_until(Duration::from_secs(20), || m.snapshot_names().len() == 2);
    let second = m.snapshot_names()[1].clone();
    let new = under(&m.path(&format!("snapshots/{second}")), &big).join("new.bin");
    assert!(std::fs::read(&new).unwrap() == std::fs::read(big.join("new.bin")).unwrap());
    assert!(env.snapshots().iter().any(|s| s["id"] == id.as_str()));
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
}
