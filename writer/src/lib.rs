//! coffer-writer: makes backups on hosts that can write but never read.
//!
//! [`backup`] walks the sources (or reads a stream), chunks with FastCDC,
//! names chunks by keyed BLAKE3, skips what this host stored before (its
//! state remembers), compresses with zstd, encrypts to the repository's
//! recipients, packs and stores. It only ever calls
//! [`WriteBackend::put_new`](coffer_core::backend::WriteBackend::put_new): no
//! read, no list, no overwrite, no delete. The snapshot is stored last, after
//! every pack and index it needs, so a crash leaves earlier snapshots intact.
//!
//! The modules, in the order a file travels:
//! - `walk`: the sources (each a `walk::Source`: the local tree, a stream,
//!   buckets) into entries, files into chunks, directories into pending
//!   trees; `source_file`: how a source file is opened (also by
//!   `readahead`, which starts the disk on the next files); `bucket`: an S3
//!   bucket source's keys as a tree, its objects fetched ahead; `owner`: user
//!   and group names; `xattrs`: an entry's extended attributes; `sparse`:
//!   where a sparse file's data lies;
//! - `pipeline`: the threads that compress, encrypt, pack and upload, and
//!   the trees; `pack`: one pack being filled;
//! - `state`: what this host stored before (SQLite, its lock, its row
//!   format), for dedup; `bloom`: which blob ids its table may hold;
//!   `horizon`: until when a stored blob is reused, and new packs' ids;
//! - [`backup`] here: one run, from options to a stored snapshot.
//!
//! `walk` uses `pipeline`, `readahead`, `source_file`, `bucket`, `owner`,
//! `xattrs`, `sparse` and `state`; `pipeline` uses `pack`, `horizon` and `state`;
//! `state` uses `bloom`; the leaves use none of the others. From coffer-core it
//! uses `format`, `chunker`, `crypto`, the write half of `backend` and the bucket source
//! reader (`backend::s3::source`: a source, not the repository), never the
//! repository's read path.
#![deny(missing_docs)]

mod bloom;
mod bucket;
use coffer_core::chunker;
mod horizon;
mod owner;
mod pack;
mod pipeline;
mod readahead;
mod source_file;
mod sparse;
mod state;
mod walk;
mod xattrs;

use coffer_core::backend::s3::source::S3Source;
use coffer_core::backend::s3::S3Access;
use coffer_core::backend::{ObjectKey, ObjectKind, WriteBackend};
use coffer_core::crypto::WriterKey;
use coffer_core::crypto::{self, Recipients};
use coffer_core::format::id::ObjectId;
use coffer_core::format::snapshot::{self, Snapshot};
use coffer_core::progress::Progress;
use pipeline::{Pipeline, Shared};
pub use state::StateError;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
pub use walk::{CACHEDIR_TAG, READ_AHEAD_THREADS};

/// How long a run waits for another one that uses its state directory.
const STATE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Why a backup failed (no snapshot was written).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// A source could not be read at all.
    #[error("{}: {source}", path.display())]
    Source {
        /// The source path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Storing an object failed.
    #[error("storing to the repository failed")]
    Store(#[source] coffer_core::Error),
    /// Encryption or another core operation failed.
    #[error(transparent)]
    Core(#[from] coffer_core::Error),
    /// The local state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A bucket source could not be listed.
    #[error("cannot list the source {url}")]
    SourceBucket {
        /// `s3://BUCKET/PREFIX` as given.
        url: String,
        /// The cause.
        #[source]
        source: coffer_core::Error,
    },
    /// The pipeline broke down.
    #[error("backup pipeline: {0}")]
    Pipeline(String),
}

impl BackupError {
    /// The exit code the CLI gives this error: 2 for bad options or
    /// configuration, else 1 (no snapshot was written either way).
    pub fn exit_code(&self) -> u8 {
        match self {
            BackupError::Usage(_) => 2,
            BackupError::Store(e) | BackupError::Core(e) => e.exit_code(),
            BackupError::Source { .. }
            | BackupError::SourceBucket { .. }
            | BackupError::State(_)
            | BackupError::Pipeline(_) => 1,
        }
    }
}

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Source paths (made absolute here), and bucket prefixes
    /// (`s3://BUCKET/PREFIX`, stored under `/s3/BUCKET`).
    pub paths: Vec<PathBuf>,
    /// How bucket sources are reached: their own credentials, region and
    /// endpoint (`--source-profile`, `COFFER_SOURCE_*`).
    pub source_access: S3Access,
    /// Back up standard input as one file with this name instead of paths.
    pub stdin_name: Option<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    pub host: Option<String>,
    /// Tags recorded in the snapshot.
    pub tags: Vec<String>,
    /// `--exclude` glob patterns.
    pub excludes: Vec<String>,
    /// Directories holding one of these files (`NAME`, or `NAME:HEADER`
    /// for a file that must start with HEADER) keep only that file
    /// (`--exclude-if-present`; `--exclude-caches` is [`CACHEDIR_TAG`]).
    pub exclude_if_present: Vec<String>,
    /// Regular files larger than this many bytes are left out
    /// (`--exclude-larger-than`).
    pub exclude_larger_than: Option<u64>,
    /// Store each entry's extended attributes (ACLs and capabilities
    /// included); `backup --no-xattrs` turns it off.
    pub xattrs: bool,
    /// Stay on each source's file system: a directory where another one is
    /// mounted is stored empty (`backup --one-file-system`, `-x`).
    pub one_file_system: bool,
    /// Where the state database lives.
    pub state_dir: PathBuf,
    /// Compress/encrypt threads (default: one per core).
    pub workers: Option<usize>,
    /// Counters for a progress display; with them, the sources are also
    /// scanned for totals beside the run.
    pub progress: Option<Arc<Progress>>,
    /// The run's start as recorded in the snapshot and counted from by the
    /// dedup horizon; `None` is now (a simulation of many days sets it).
    pub start_time: Option<time::OffsetDateTime>,
}

/// A stored snapshot and what the run could not read.
#[derive(Debug)]
pub struct BackupSummary {
    /// The new snapshot's id.
    pub id: ObjectId,
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Sources that could not be read, each with path and reason.
    pub warnings: Vec<String>,
}

/// Makes one backup. Call from outside the tokio runtime `rt` belongs to.
pub fn backup(
    backend: Arc<dyn WriteBackend>,
    key: &WriterKey,
    opts: &BackupOptions,
    rt: &tokio::runtime::Handle,
    stdin: impl Read,
) -> Result<BackupSummary, BackupError> {
    let started = Instant::now();
    let start_time = opts
        .start_time
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let (paths, bucket_urls) = absolute_sources(opts)?;
    let buckets = list_buckets(&bucket_urls, &opts.source_access, rt)?;
    let excludes = walk::Excludes::new(
        &opts.excludes,
        &opts.exclude_if_present,
        opts.exclude_larger_than,
    )?;
    let config = &key.config;
    // The recipients the key file was issued for (config's, in a key file
    // from before key changes).
    let recipients = Recipients::from_armored(key.recipients())?;

    coffer_core::private_dir::create(&opts.state_dir).map_err(|source| BackupError::Source {
        path: opts.state_dir.clone(),
        source,
    })?;
    // One run at a time per state directory; held until this returns.
    let _held = state::StateLock::acquire(&opts.state_dir, STATE_LOCK_WAIT).map_err(|source| {
        BackupError::Source {
            path: opts.state_dir.join("state.lock"),
            source,
        }
    })?;
    let horizon = horizon::seconds(config.dedup_horizon_days);
    let state = state::State::open(
        &opts.state_dir.join("state.sqlite"),
        &key.state_scope(),
        horizon,
    )?;
    state.begin()?;
    let shared = Arc::new(
        Shared::new(
            key.chunk_key().clone(),
            recipients,
            config,
            backend.clone(),
            rt.clone(),
            state,
            start_time.unix_timestamp(),
        )
        .with_progress(opts.progress.clone().unwrap_or_default()),
    );
    let sources = sources(opts, &paths, buckets, excludes, stdin)?;
    // Totals for the progress display: a count of the sources beside the run.
    if let Some(progress) = &opts.progress {
        walk::start_scan(&sources, progress.clone());
    }
    let snapshot_paths = match &opts.stdin_name {
        Some(name) => vec![name.clone()],
        None => (paths.iter().map(|p| p.display().to_string()))
            .chain(bucket_urls)
            .collect(),
    };
    let result = run(
        &shared,
        key,
        opts,
        sources,
        snapshot_paths,
        start_time,
        started,
    );
    shared.progress.stop();
    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(summary) => {
            state.commit()?;
            Ok(summary)
        }
        Err(e) => {
            state.end_failed();
            Err(e)
        }
    }
}

/// What a run reads: standard input alone, or the local tree and the
/// buckets (those there are).
fn sources<'a>(
    opts: &BackupOptions,
    paths: &[PathBuf],
    buckets: Vec<bucket::Bucket>,
    excludes: walk::Excludes,
    stdin: impl Read + 'a,
) -> Result<Vec<Box<dyn walk::Source + 'a>>, BackupError> {
    if let Some(name) = &opts.stdin_name {
        return Ok(vec![Box::new(walk::Stream::new(name, stdin))]);
    }
    let mut sources: Vec<Box<dyn walk::Source + 'a>> = Vec::new();
    if !paths.is_empty() {
        let tree = walk::LocalTree::new(paths, excludes, opts.one_file_system);
        sources.push(Box::new(tree));
    }
    if !buckets.is_empty() {
        sources.push(Box::new(walk::Buckets::new(buckets)));
    }
    Ok(sources)
}

fn run(
    shared: &Arc<Shared>,
    key: &WriterKey,
    opts: &BackupOptions,
    mut sources: Vec<Box<dyn walk::Source + '_>>,
    snapshot_paths: Vec<String>,
    start_time: time::OffsetDateTime,
    started: Instant,
) -> Result<BackupSummary, BackupError> {
    let workers = opts
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let pipe = Pipeline::start(shared.clone(), workers);
    let chunker = chunker::Chunker::new(key.config.chunker.clone(), key.chunk_key().chunker_seed());
    let mut walker = walk::Walker::new(&pipe, chunker, opts.xattrs);
    let walked = walker.walk(&mut sources);
    drop(sources); // the local tree's read-ahead threads end
                   // A pipeline thread's error is the cause; the walker's is its echo.
    let root = walked.map_err(|e| shared.take_failure().unwrap_or(e))?;
    let (mut stats, warnings) = walker.into_report();
    let tree = pipe.finish(root)?;
    shared.write_index(shared.take_index_rest())?;

    let c = &shared.counters;
    stats.new_blobs = c.new_blobs.load(Ordering::Relaxed);
    stats.new_bytes = c.new_bytes.load(Ordering::Relaxed);
    stats.stored_bytes = c.stored_bytes.load(Ordering::Relaxed);
    stats.new_packs = c.new_packs.load(Ordering::Relaxed);
    stats.duration_ms = started.elapsed().as_millis() as u64;
    let snapshot = Snapshot {
        time: coffer_core::format::encoding::format_rfc3339(start_time),
        host: opts.host.clone().unwrap_or_else(owner::host_name),
        user: owner::current_user(),
        paths: snapshot_paths,
        tags: opts.tags.clone(),
        tree,
        program: format!("coffer {}", env!("CARGO_PKG_VERSION")),
        stats,
    };
    let id = store_snapshot(shared, key.signer(), &snapshot)?;
    Ok(BackupSummary {
        id,
        snapshot,
        warnings,
    })
}

/// Signs (unless the repository predates signed snapshots), encrypts and
/// stores the snapshot: the run's last object.
fn store_snapshot(
    shared: &Shared,
    signer: Option<&crypto::SnapshotSigner>,
    snapshot: &Snapshot,
) -> Result<ObjectId, BackupError> {
    let json = snapshot.to_json();
    let sealed = match signer {
        Some(signer) => crypto::seal_signed(&shared.recipients, signer, &json)?,
        None => crypto::seal_message(&shared.recipients, &json)?,
    };
    // Readers refuse a larger snapshot object (what a put-only credential
    // stores must not cost them memory): never store one they refuse.
    let cap = ObjectKind::Snapshot.max_size();
    if sealed.len() as u64 > cap {
        return Err(BackupError::Usage(format!(
            "the snapshot would be {} bytes, more than the {cap} readers take: fewer \
             source paths or tags; nothing was stored as a snapshot",
            sealed.len()
        )));
    }
    let id = ObjectId::of_bytes(&sealed);
    let name = snapshot::object_name(&shared.repo_id, &snapshot.host, &id);
    let key = ObjectKey::new(ObjectKind::Snapshot, name);
    shared
        .rt
        .block_on(shared.backend.put_new(&key, sealed))
        .map_err(BackupError::Store)?;
    Ok(id)
}

/// Source paths made absolute and lexically clean, each of which must
/// exist; and the bucket sources (`s3://...`), trimmed of trailing `/`.
fn absolute_sources(opts: &BackupOptions) -> Result<(Vec<PathBuf>, Vec<String>), BackupError> {
    if opts.stdin_name.is_some() {
        if !opts.paths.is_empty() {
            return Err(BackupError::Usage("--stdin takes no paths".into()));
        }
        return Ok((Vec::new(), Vec::new()));
    }
    if opts.paths.is_empty() {
        return Err(BackupError::Usage(
            "nothing to back up: give paths, s3://BUCKET/PREFIX or --stdin".into(),
        ));
    }
    let mut out = Vec::new();
    let mut urls: Vec<String> = Vec::new();
    for p in &opts.paths {
        if let Some(url) = p.to_str().filter(|s| s.starts_with("s3://")) {
            coffer_core::backend::s3::parse_url(url)
                .map_err(|e| BackupError::Usage(e.to_string()))?;
            urls.push(url.trim_end_matches('/').to_string());
            continue;
        }
        let abs = std::path::absolute(p).map_err(|source| BackupError::Source {
            path: p.clone(),
            source,
        })?;
        let clean = lexical_clean(&abs);
        std::fs::symlink_metadata(&clean).map_err(|source| BackupError::Source {
            path: clean.clone(),
            source,
        })?;
        out.push(clean);
    }
    urls.sort();
    urls.dedup();
    check_beside_buckets(&out, &urls)?;
    Ok((out, urls))
}

/// Buckets are stored under `/s3`: refuses local sources that would take
/// the root or share `/s3` with them.
fn check_beside_buckets(paths: &[PathBuf], urls: &[String]) -> Result<(), BackupError> {
    if urls.is_empty() {
        return Ok(());
    }
    for path in paths {
        let mut names = path.components().filter_map(|c| match c {
            std::path::Component::Normal(name) => Some(name),
            _ => None,
        });
        match names.next() {
            None => {
                return Err(BackupError::Usage(
                    "a bucket is stored under /s3: it cannot go with / as a source".into(),
                ))
            }
            Some(first) if first == walk::BUCKETS_DIR => {
                return Err(BackupError::Usage(format!(
                    "buckets are stored under /{}: a local source there would be mixed with them",
                    walk::BUCKETS_DIR
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Lists every bucket source, one [`bucket::Bucket`] per bucket (prefixes
/// of one bucket share its directory: their listings are merged).
fn list_buckets(
    urls: &[String],
    access: &S3Access,
    rt: &tokio::runtime::Handle,
) -> Result<Vec<bucket::Bucket>, BackupError> {
    let mut buckets: Vec<bucket::Bucket> = Vec::new();
    for url in urls {
        let failed = |source| BackupError::SourceBucket {
            url: url.clone(),
            source,
        };
        let source = rt.block_on(S3Source::open(url, access)).map_err(failed)?;
        let objects = rt.block_on(source.list()).map_err(failed)?;
        tracing::info!(url, objects = objects.len(), "listed the bucket source");
        match buckets
            .iter_mut()
            .find(|b| b.source.bucket() == source.bucket())
        {
            Some(b) => {
                b.objects.extend(objects);
                b.objects.sort_by(|x, y| x.key.cmp(&y.key));
                b.objects.dedup_by(|x, y| x.key == y.key);
            }
            None => buckets.push(bucket::Bucket {
                source: Arc::new(source),
                objects,
            }),
        }
    }
    Ok(buckets)
}

/// Removes `.` and resolves `..` without following symlinks.
fn lexical_clean(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_core::backend::memory::MemoryBackend;
    use coffer_core::format::config::RepoConfig;

    fn writer_key() -> WriterKey {
        let key = coffer_core::crypto::generate_key("t").unwrap();
        let certs = coffer_core::crypto::normalize_certs(&key.cert_armored, "t").unwrap();
        RepoConfig::create(certs, Default::default(), "default")
            .unwrap()
            .1
    }

    /// `count` files of `len` random-looking bytes in `dir` (made).
    fn incompressible_files(dir: &std::path::Path, count: usize, len: usize) {
        std::fs::create_dir(dir).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..count {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            std::fs::write(dir.join(format!("f{i:03}")), data).unwrap();
        }
    }

    fn opts(dir: &std::path::Path) -> BackupOptions {
        BackupOptions {
            paths: vec![dir.join("src")],
            source_access: Default::default(),
            stdin_name: None,
            host: Some("h".into()),
            tags: vec![],
            excludes: vec![],
            exclude_if_present: vec![],
            exclude_larger_than: None,
            xattrs: true,
            one_file_system: false,
            state_dir: dir.join("state"),
            workers: Some(2),
            progress: None,
            start_time: None,
        }
    }

    /// A run that fails after its first pack: no snapshot, and the next run
    /// reuses that pack (it was stored) but reads every file again (their
    /// records wait for a snapshot).
    #[test]
    fn a_failed_upload_stores_no_snapshot_and_the_next_run_reuses_its_stored_pack() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Incompressible, so each worker fills 16 MiB packs before the end.
        incompressible_files(&dir.path().join("src"), 120, 300_000);
        let total = 120 * 300_000;
        let key = writer_key();
        let repo = Arc::new(MemoryBackend::failing_after(1));
        let err = backup(
            repo.clone(),
            &key,
            &opts(dir.path()),
            rt.handle(),
            std::io::empty(),
        )
        .unwrap_err();
        assert!(matches!(err, BackupError::Store(_)), "{err}");
        assert!(format!("{:?}", err).contains("injected fault"), "{err:?}");
        assert!(repo.keys(ObjectKind::Snapshot).is_empty());
        // A data pack, under `files/` (the repository is version 3), and
        // no tree pack: the trees come last.
        assert_eq!(repo.keys(ObjectKind::FilePack).len(), 1);
        assert!(repo.keys(ObjectKind::Pack).is_empty());

        repo.heal();
        let summary = backup(
            repo.clone(),
            &key,
            &opts(dir.path()),
            rt.handle(),
            std::io::empty(),
        )
        .unwrap();
        let stats = &summary.snapshot.stats;
        assert_eq!((stats.files_read, stats.files), (120, 120));
        // The stored pack held about 16 MiB of the 36 MB.
        assert!(
            stats.new_bytes < total - 15_000_000 && stats.new_bytes > 15_000_000,
            "{stats:?}"
        );
        assert_eq!(repo.keys(ObjectKind::Snapshot).len(), 1);
        assert!(!repo.keys(ObjectKind::Index).is_empty());

        // With a snapshot stored, the file records count: nothing is read.
        let again = backup(repo, &key, &opts(dir.path()), rt.handle(), std::io::empty()).unwrap();
        assert_eq!(again.snapshot.stats.files_read, 0);
        // (only trees of ancestors such as /tmp, whose mtimes move, are new)
        assert!(again.snapshot.stats.new_bytes < 10_000);
    }

    #[test]
    fn local_sources_keep_out_of_the_buckets_directory() {
        let urls = ["s3://b/p".to_string()];
        let refused = |path: &str| {
            let err = check_beside_buckets(&[PathBuf::from(path)], &urls).unwrap_err();
            assert!(matches!(err, BackupError::Usage(_)), "{err}");
            err.to_string()
        };
        assert!(refused("/").contains("cannot go with / as a source"));
        assert!(refused("/s3").contains("would be mixed with them"));
        assert!(refused("/s3/x").contains("would be mixed with them"));
        let fine = [PathBuf::from("/s3x"), PathBuf::from("/srv/s3")];
        check_beside_buckets(&fine, &urls).unwrap();
        check_beside_buckets(&[PathBuf::from("/")], &[]).unwrap();
    }

    /// A store that keeps nothing and counts what it is given.
    #[derive(Default)]
    struct CountingStore {
        bytes: std::sync::atomic::AtomicU64,
    }

    #[async_trait::async_trait]
    impl WriteBackend for CountingStore {
        async fn put_new(&self, _: &ObjectKey, data: Vec<u8>) -> coffer_core::Result<()> {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    }

    /// 120 days of daily backups of an unchanged tree, 30-day horizon, with a
    /// test clock: the first upload comes due over the second half of the
    /// horizon, a little every day, and from then on every blob a whole
    /// horizon after it was stored again. So no day uploads more than 10% of
    /// the data, and the total is about one upload per 30 days.
    #[test]
    fn an_unchanged_tree_backed_up_daily_for_120_days_is_refreshed_a_little_each_day() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // 128 single-chunk files, two to a 1 MiB pack: 64 data packs.
        incompressible_files(&dir.path().join("src"), 128, 400 << 10);
        let mut key = writer_key();
        key.config.pack_size = 1 << 20;
        assert_eq!(key.config.dedup_horizon_days, 30);
        let start = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut daily = Vec::new();
        for day in 0..120 {
            let store = Arc::new(CountingStore::default());
            let opts = BackupOptions {
                start_time: Some(start + time::Duration::days(day)),
                ..opts(dir.path())
            };
            backup(store.clone(), &key, &opts, rt.handle(), std::io::empty()).unwrap();
            daily.push(store.bytes.load(Ordering::Relaxed));
        }
        let data = daily[0];
        let percent: Vec<String> = daily
            .iter()
            .enumerate()
            .map(|(day, &b)| format!("{day}:{:.1}", 100.0 * b as f64 / data as f64))
            .collect();
        eprintln!("day:% of the data uploaded that day: {}", percent.join(" "));
        let total: u64 = daily.iter().sum();
        let largest = daily[1..].iter().max().copied().unwrap_or(0);
        eprintln!(
            "total {:.2} x the data, largest day after the first {:.1}%",
            total as f64 / data as f64,
            100.0 * largest as f64 / data as f64
        );
        assert!(largest * 10 <= data, "a day uploaded {largest} of {data}");
        // At most (120/30 + 1.5) x the data in all.
        assert!(total * 2 <= 11 * data, "{total} uploaded for {data}");
        // Nothing comes due in the first half of the horizon; all of the
        // first upload comes due within the second.
        assert!(daily[1..15].iter().all(|&b| b * 100 < data), "{percent:?}");
        let first_refresh: u64 = daily[15..=30].iter().sum();
        assert!(first_refresh * 10 >= data * 9, "{percent:?}");
    }
}
