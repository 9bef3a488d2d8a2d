//! The mount across a WAN (issue 37): the store 40 ms away through the
//! test proxy, requests counted there. A walk over many small files reads
//! them with a few ranged GETs per pack, not one per file; a reader that
//! jumps around gets no read-ahead it does not use; a stream reads ahead;
//! and a store that fails requests mid-walk still gives identical bytes.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use util::mount::Mounted;
use util::proxy::{header, Proxy};
use util::s3::server;
use util::*;

/// Small files in `many/` (500 of 1-8 KiB) and a 24 MiB `big.bin`.
fn wan_tree(root: &Path) {
    for i in 0..500u64 {
        let len = 1024 + (i as usize * 7919) % 7168;
        write(&root.join(format!("many/f{i:03}")), &random_bytes(i, len));
    }
    write(&root.join("big.bin"), &random_bytes(1000, 24 << 20));
}

/// A repository in a new bucket behind a proxy 40 ms (round trip) away,
/// with one backup of [`wan_tree`]: the proxy, the environment, the source.
fn far_repository(bucket: &str) -> (Proxy, Env, PathBuf) {
    let s3 = server();
    s3.create_bucket(bucket, false);
    let proxy = Proxy::start(&s3.endpoint, 0);
    let env = Env::on_s3_as_admin(s3, &proxy.endpoint, &format!("s3://{bucket}/r"), &[]);
    let src = env.path("src");
    wan_tree(&src);
    env.backup(&[&src], &[]);
    proxy.delay_ms.store(20, Ordering::Relaxed);
    (proxy, env, src)
}

/// The ranged GETs of data packs (`files/`) the proxy saw from `from` on:
/// (pack path, first byte, length) each.
fn data_reads(proxy: &Proxy, bucket: &str, from: usize) -> Vec<(String, u64, u64)> {
    proxy.requests("GET", &format!("/{bucket}/r/files/"))[from..]
        .iter()
        .map(|head| {
            let path = head.split(' ').nth(1).unwrap().to_string();
            let range = header(head, "range").expect("a ranged GET");
            let (a, b) = range.trim_start_matches("bytes=").split_once('-').unwrap();
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            (path, a, b - a + 1)
        })
        .collect()
}

/// A mount of `env` without the chunk cache on disk (each test reads from
/// the store), metadata cached as usual.
fn mount(env: &Env) -> Mounted {
    Mounted::new(env, &["--chunk-cache-size", "0"])
}

#[test]
fn a_walk_over_small_files_reads_each_pack_with_a_few_gets() {
    let (proxy, env, src) = far_repository("walk");
    let m = mount(&env);
    let inside = under(&m.path("snapshots/latest"), &src);
    let before = proxy.requests("GET", "/walk/r/files/").len();
    let out = env.path("out");
    let started = std::time::Instant::now();
    cp_a(&inside.join("many"), &out);
    let took = started.elapsed();
    let reads = data_reads(&proxy, "walk", before);
    let packs: BTreeSet<&str> = reads.iter().map(|r| r.0.as_str()).collect();
    eprintln!(
        "cp -a of 500 small files at 40 ms: {:.2} s, {} GETs of {} packs",
        took.as_secs_f64(),
        reads.len(),
        packs.len()
    );
    assert_same_tree(&src.join("many"), &out);
    // The first files go one GET each until the walk is seen (three), then
    // the rest a span of up to 4 MiB at a time.
    assert!(
        reads.len() <= 3 + 3 * packs.len(),
        "{} GETs for 500 files in {} packs: {reads:?}",
        reads.len(),
        packs.len()
    );
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_reader_that_jumps_around_gets_no_read_ahead_it_does_not_use() {
    let (proxy, env, src) = far_repository("jumps");
    let m = mount(&env);
    let inside = under(&m.path("snapshots/latest"), &src);

    // 40 of the small files, in an order no walk takes (each one far from
    // the one before), each read whole.
    let order: Vec<u64> = (0..40).map(|i| (i * 211 + 37) % 500).collect();
    let before = proxy.requests("GET", "/jumps/r/files/").len();
    let mut read = 0;
    for i in &order {
        let name = format!("many/f{i:03}");
        let got = std::fs::read(inside.join(&name)).unwrap();
        assert_eq!(got, std::fs::read(src.join(&name)).unwrap(), "{name}");
        read += got.len() as u64;
    }
    let fetched: u64 = data_reads(&proxy, "jumps", before)
        .iter()
        .map(|r| r.2)
        .sum();
    eprintln!("40 files read out of order: {read} bytes read, {fetched} fetched");
    // Each file is a chunk, stored compressed... or not (random bytes):
    // fetched is about read, plus each blob's envelope.
    assert!(fetched >= read / 2, "{fetched} fetched for {read} read");
    assert!(
        fetched <= read + 40 * 1024,
        "{fetched} fetched for {read} read"
    );

    // Reads of 4 KiB at offsets far apart in the big file: a chunk each,
    // no window after a jump.
    let big = inside.join("big.bin");
    let expected = std::fs::read(src.join("big.bin")).unwrap();
    let before = proxy.requests("GET", "/jumps/r/files/").len();
    let offsets: Vec<u64> = (0..6).map(|i| ((i * 7 + 3) % 23) << 20).collect();
    let file = std::fs::File::open(&big).unwrap();
    for &at in &offsets {
        let mut buf = vec![0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, at).unwrap();
        assert_eq!(buf, expected[at as usize..at as usize + 4096], "at {at}");
    }
    drop(file);
    let jumps = data_reads(&proxy, "jumps", before);
    eprintln!("6 reads of 4 KiB far apart: {} GETs", jumps.len());
    // The kernel reads up to 128 KiB around each, which may touch a
    // second chunk: never the window of chunks a stream gets.
    assert!(jumps.len() <= 2 * offsets.len(), "{jumps:?}");

    // Read in order from the start, the same file is read ahead: the
    // chunks come in parallel, many GETs in flight (the proxy sees them
    // all), each chunk once.
    let before = proxy.requests("GET", "/jumps/r/files/").len();
    let started = std::time::Instant::now();
    let whole = std::fs::read(&big).unwrap();
    let took = started.elapsed();
    assert!(whole == expected, "big.bin differs");
    let stream = data_reads(&proxy, "jumps", before);
    let starts: BTreeSet<(String, u64)> = stream.iter().map(|r| (r.0.clone(), r.1)).collect();
    assert_eq!(starts.len(), stream.len(), "a chunk fetched twice");
    eprintln!(
        "cat of 24 MiB at 40 ms: {:.2} s ({:.0} MiB/s), {} GETs",
        took.as_secs_f64(),
        24.0 / took.as_secs_f64(),
        stream.len()
    );
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_walk_through_a_store_that_fails_requests_gives_identical_bytes() {
    let (proxy, env, src) = far_repository("walkfaults");
    proxy.fail_percent.store(20, Ordering::Relaxed);
    let m = mount(&env);
    let inside = under(&m.path("snapshots/latest"), &src);
    let out = env.path("out");
    cp_a(&inside, &out);
    assert_same_tree(&src, &out);
    eprintln!("proxy: {}", proxy.counts.summary());
    assert!(proxy.counts.faults() >= 3, "{}", proxy.counts.summary());
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
}

/// Version 1: 150 directories of three small files each (as /usr/share/doc
/// holds them), version 2 with every tenth file changed.
fn doc_like(root: &Path, version: u64) {
    for d in 0..150u64 {
        for (f, name) in ["changelog.gz", "copyright", "README"].iter().enumerate() {
            let i = d * 3 + f as u64;
            let len = 500 + (i as usize * 7919) % 6000;
            let mut bytes = random_bytes(i, len);
            if version == 2 && i % 10 == 0 {
                bytes.extend_from_slice(b"changed");
            }
            write(&root.join(format!("doc/pkg{d:03}/{name}")), &bytes);
        }
    }
}

#[test]
fn diff_r_of_two_versions_reads_both_walks_ahead() {
    let s3 = server();
    s3.create_bucket("diffwalk", false);
    let proxy = Proxy::start(&s3.endpoint, 0);
    let env = Env::on_s3_as_admin(s3, &proxy.endpoint, "s3://diffwalk/r", &[]);
    let src = env.path("src");
    doc_like(&src, 1);
    env.backup(&[&src], &[]);
    let v1 = env.path("v1");
    cp_a(&src, &v1);
    doc_like(&src, 2);
    env.backup(&[&src], &[]);
    proxy.delay_ms.store(20, Ordering::Relaxed);

    let m = mount(&env);
    let names = m.snapshot_names();
    let side = |i: usize| under(&m.path(&format!("snapshots/{}", names[i])), &src);
    let before = proxy.requests("GET", "/diffwalk/r/files/").len();
    let started = std::time::Instant::now();
    let through_mount = util::mount::diff_r(&side(0), &side(1));
    let took = started.elapsed();
    let reads = data_reads(&proxy, "diffwalk", before);
    eprintln!(
        "diff -r of 2 x 450 small files in 150 directories at 40 ms: {:.2} s, {} GETs",
        took.as_secs_f64(),
        reads.len()
    );
    assert_eq!(through_mount, util::mount::diff_r(&v1, &src));
    assert_eq!(through_mount.len(), 45, "{through_mount:?}");
    // A few GETs while each side's walk is found, then spans.
    assert!(reads.len() <= 30, "{} GETs: {reads:?}", reads.len());
    let (code, log) = m.unmount();
    assert_eq!(code, Some(0), "{log}");
}
