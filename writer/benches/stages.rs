//! Each stage of the backup and restore paths alone, on the same data, so the
//! distance between coffer's end-to-end rates and the hardware is visible.
//!
//!   cargo bench -p coffer-writer --bench stages -- DIR [THREADS]
//!
//! Reads every regular file below DIR once (the "read" stage, from whatever
//! state the page cache is in: scripts/bench.sh drops it first), then runs
//! chunk, hash, compress, encrypt, decrypt and decompress over the chunks in
//! memory, each on one thread and on THREADS threads (default: the cores).
//! Prints one line per stage, and the slowest stage's rate on all threads.

use coffer_core::chunker::Chunker;
use coffer_core::crypto::blob;
use coffer_core::crypto::{self, Opener, PackSealer, Recipients, SecretKeys};
use coffer_core::format::config::RepoConfig;
use coffer_core::format::id::PackId;
use coffer_core::format::tree::Location;
use coffer_writer::READ_AHEAD_THREADS;
use sequoia_openpgp::crypto::SessionKey;
use sequoia_openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
use sequoia_openpgp::types::{AEADAlgorithm, SymmetricAlgorithm};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Failure> {
    // `cargo bench` passes `--bench`; skip flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(dir) = args.first().map(PathBuf::from) else {
        return Err("usage: stages DIR [THREADS]".into());
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match args.get(1) {
        Some(t) => t.parse().map_err(|e| format!("THREADS {t:?}: {e}"))?,
        None => cores,
    };
    let generated = crypto::generate_key("bench")?;
    let certs = crypto::normalize_certs(&generated.cert_armored, "bench")?;
    // The defaults `coffer init` writes.
    let (config, writer_key) = RepoConfig::create(certs.clone(), Default::default(), "default")?;
    let key = writer_key.chunk_key();
    let chunker = Chunker::new(config.chunker.clone(), key.chunker_seed());
    let sealer = PackSealer::new(&Recipients::from_armored(&certs)?)?;
    let opener = Opener::new(SecretKeys::from_bytes(
        &generated.secret_armored,
        "bench",
        None,
    )?);

    let paths = list_files(&dir)?;
    let (read_one, files) = timed(|| read_files(&paths, 1));
    let files = files?;
    // The backup reads with read-ahead threads beside the walker: measure
    // reading on as many, from a cold page cache again when allowed (root).
    let cold = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    let (read_many, _) = timed(|| read_files(&paths, 1 + READ_AHEAD_THREADS));
    let bytes: u64 = files.iter().map(|f| f.len() as u64).sum();
    println!(
        "{} files, {} MiB; stage rates in MiB/s of input, 1 thread and {threads} threads",
        files.len(),
        bytes >> 20
    );
    let mut report = Report::new(threads);
    let read_label = format!(
        "read (1 and {} threads{})",
        1 + READ_AHEAD_THREADS,
        if cold { ", cold" } else { "" }
    );
    report.line(&read_label, bytes, read_one, Some(read_many));

    let chunk_one = |f: &Vec<u8>| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let _ = chunker.chunk(&f[..], Some(f.len() as u64), |c| {
            out.push(c);
            Ok(())
        });
        out
    };
    // Timed: cutting and copying each chunk out, as the walker does, but not
    // keeping them (that would measure the kernel clearing fresh pages).
    let chunk_count = |f: &Vec<u8>| -> usize {
        let mut n = 0;
        let _ = chunker.chunk(&f[..], Some(f.len() as u64), |c| {
            n += 1;
            drop(c);
            Ok(())
        });
        n
    };
    let chunks: Vec<Vec<u8>> = files.iter().flat_map(chunk_one).collect();
    let (one, _) = timed(|| parallel(&files, 1, chunk_count));
    let (all, _) = timed(|| parallel(&files, threads, chunk_count));
    drop(files);
    report.line("chunk (FastCDC)", bytes, one, Some(all));

    let stage = |report: &mut Report,
                 name: &str,
                 input: &[Vec<u8>],
                 f: &(dyn Fn(&[u8]) -> Vec<u8> + Sync)| {
        let input_bytes: u64 = input.iter().map(|c| c.len() as u64).sum();
        // Outputs for the next stage, untimed: the timed runs below then
        // measure the work, not the first touch of fresh memory.
        let out = input.iter().map(|c| f(c)).collect::<Vec<_>>();
        let (one, _) = timed(|| parallel(input, 1, |c| f(c).len()));
        let (all, _) = timed(|| parallel(input, threads, |c| f(c).len()));
        report.line(name, input_bytes, one, Some(all));
        out
    };
    stage(&mut report, "hash (keyed BLAKE3)", &chunks, &|c| {
        key.blob_id(c).to_hex().into_bytes()
    });
    let compressed = stage(&mut report, "compress (zstd)", &chunks, &|c| {
        blob::compress(config.zstd_level, c).unwrap_or_default()
    });
    let sealed = stage(&mut report, "encrypt (OpenPGP)", &compressed, &|c| {
        sealer.seal(c).unwrap_or_default()
    });
    // For comparison (docs/DESIGN.md, Performance): sequoia's own streaming
    // writer, SEIPD v1 as before core/src/crypto/seipd.rs, and SEIPD v2 (AEAD),
    // which GnuPG 2.2 cannot read.
    let session_key = SessionKey::new(32)?;
    report.comparing = true;
    for (name, aead) in [
        ("encrypt (sequoia SEIPD v1, before)", None),
        (
            "encrypt (sequoia SEIPD v2 AES-OCB)",
            Some(AEADAlgorithm::OCB),
        ),
        (
            "encrypt (sequoia SEIPD v2 AES-GCM)",
            Some(AEADAlgorithm::GCM),
        ),
    ] {
        let seal = |c: &[u8]| sequoia_seal(&session_key, aead, c).unwrap_or_default();
        if seal(b"probe").is_empty() {
            println!("stage {name:<42} not supported by this crypto backend");
            continue;
        }
        stage(&mut report, name, &compressed, &seal);
    }
    report.comparing = false;
    let opened = stage(&mut report, "decrypt (OpenPGP)", &sealed, &|c| {
        opener.open("bench", c).unwrap_or_default()
    });
    stage(&mut report, "decompress (zstd)", &opened, &|c| {
        blob::decompress(c, blob_capacity()).unwrap_or_default()
    });
    // The whole per-blob encode and decode, as backup and restore run them.
    let locations: Vec<Location> = chunks
        .iter()
        .map(|c| Location {
            id: key.blob_id(c),
            pack: PackId::random(),
            offset: 0,
            length: 0,
            raw_length: c.len() as u64,
        })
        .collect();
    let encoded = stage(
        &mut report,
        "compress+encrypt (blob::encode)",
        &chunks,
        &|c| blob::encode(&sealer, config.zstd_level, c).unwrap_or_default(),
    );
    let decode = |b: &Vec<u8>, l: &Location| {
        blob::decode(&opener, key, l, "bench", b).map_or(0, |p| p.len())
    };
    let blobs: Vec<(&Vec<u8>, &Location)> = encoded.iter().zip(&locations).collect();
    let (one, _) = timed(|| parallel(&blobs, 1, |(b, l)| decode(b, l)));
    let (all, decoded) = timed(|| parallel(&blobs, threads, |(b, l)| decode(b, l)));
    if decoded as u64 != bytes {
        return Err(format!("blob::decode gave {decoded} bytes of {bytes}").into());
    }
    report.line(
        "decrypt+decompress+verify (blob::decode)",
        bytes,
        one,
        Some(all),
    );
    report.slowest();
    Ok(())
}

/// One message through sequoia's streaming writer (v1 without `aead`).
fn sequoia_seal(
    key: &SessionKey,
    aead: Option<AEADAlgorithm>,
    payload: &[u8],
) -> sequoia_openpgp::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len() + 128);
    let message = Message::new(&mut out);
    let mut encryptor =
        Encryptor::with_session_key(message, SymmetricAlgorithm::AES256, key.clone())?;
    if let Some(algo) = aead {
        encryptor = encryptor.aead_algo(algo);
    }
    let mut literal = LiteralWriter::new(encryptor.build()?).build()?;
    literal.write_all(payload)?;
    literal.finalize()?;
    Ok(out)
}

fn blob_capacity() -> usize {
    16 << 20
}

/// Every regular file below `dir`, in walk order.
fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.sort();
            stack.extend(entries.into_iter().rev());
        } else if meta.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

/// Reads `paths` on `threads` threads; returns their contents in order.
fn read_files(paths: &[PathBuf], threads: usize) -> std::io::Result<Vec<Vec<u8>>> {
    /// One thread's files: (index, contents).
    type Part = std::io::Result<Vec<(usize, Vec<u8>)>>;
    let parts: Vec<Part> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..paths.len())
                        .step_by(threads)
                        .map(|i| std::fs::read(&paths[i]).map(|d| (i, d)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("reader panicked")))
            })
            .collect()
    });
    let mut files = vec![Vec::new(); paths.len()];
    for part in parts {
        for (i, data) in part? {
            files[i] = data;
        }
    }
    Ok(files)
}

fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed().as_secs_f64(), out)
}

/// Runs `f` over `items` on `threads` threads (item i on thread i % threads).
fn parallel<T: Sync>(items: &[T], threads: usize, f: impl Fn(&T) -> usize + Sync) -> usize {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                s.spawn(move || items.iter().skip(t).step_by(threads).map(f).sum::<usize>())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    })
}

struct Report {
    threads: usize,
    slowest: Option<(String, f64)>,
    /// Lines for comparison only: not coffer's stages, never the slowest.
    comparing: bool,
}

impl Report {
    fn new(threads: usize) -> Self {
        Self {
            threads,
            slowest: None,
            comparing: false,
        }
    }

    fn line(&mut self, name: &str, bytes: u64, one: f64, all: Option<f64>) {
        let rate = |secs: f64| bytes as f64 / 1_048_576.0 / secs.max(1e-9);
        let all_rate = all.map(rate);
        let cell = all_rate.map_or("-".to_string(), |r| format!("{r:.0}"));
        println!("stage {name:<42} {:>8.0} {:>8}", rate(one), cell);
        let best = all_rate.unwrap_or(rate(one)).max(rate(one));
        if !self.comparing && self.slowest.as_ref().is_none_or(|(_, r)| best < *r) {
            self.slowest = Some((name.to_string(), best));
        }
    }

    fn slowest(&self) {
        if let Some((name, rate)) = &self.slowest {
            println!(
                "slowest stage on {} threads: {name}, {rate:.0} MiB/s",
                self.threads
            );
        }
    }
}
