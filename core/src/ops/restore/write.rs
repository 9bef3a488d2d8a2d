//! Writing files: the reads the walk queued run several at once; each is
//! decoded on the blocking pool and its chunks written into their files at
//! their offsets, so files are written in parallel. The part that completes
//! a file closes it and applies its metadata. [`Unfinished`] lists the files
//! being written, so a restore that stops removes them: a partly written
//! file is never left looking restored.

use super::existing::reads_back;
use super::plan::{Fetch, MAX_FETCH};
use super::target::{apply_metadata, create_file};
use super::{at, is_damage, RestoreStats};
use crate::error::{Error, Result};
use crate::format::chunk_key::ChunkIdKey;
use crate::format::index::PackKind;
use crate::format::tree::Entry;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::sync::lock;
use futures_util::stream::StreamExt;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Ranged reads in flight while writing files from a local repository
/// (the disk and the cores are the limit)...
const FETCHES_IN_FLIGHT: usize = 8;
/// ...and from a remote one, where each read waits a round trip first:
/// more in flight fill it (at 40 ms, 8 left a restore at 1.8x restic's
/// time). Over a live tree the reads are small and scattered (the changed
/// chunks): 439 of them 32 at a time took 14 round trips; so many may be
/// in flight, as long as their bytes stay within
/// [`REMOTE_BYTES_IN_FLIGHT`].
const REMOTE_FETCHES_IN_FLIGHT: usize = 128;
/// The bytes the remote reads in flight may span, in KiB: as many as 32
/// reads of the largest size ([`MAX_FETCH`]).
const REMOTE_BYTES_IN_FLIGHT: u32 = (32 * MAX_FETCH / 1024) as u32;

/// A regular file to write. Its chunks may be written by several decode
/// tasks at once, each at its own offset; the one that writes the last
/// closes the file and applies its metadata.
pub(super) struct FileJob {
    pub(super) entry: Entry,
    pub(super) dest: PathBuf,
    /// Where a file that replaces one at `dest` is built, renamed over it
    /// once complete (the old one stays whole until then).
    temp: Option<PathBuf>,
    /// With `--verify`: the key to check the written file's chunks with
    /// before it counts as restored.
    check: Option<Arc<ChunkIdKey>>,
    /// Where each chunk goes in the file.
    offsets: Vec<u64>,
    /// Leave holes where the data is zeros (and where the snapshot has
    /// holes), rather than writing zeros.
    sparse: bool,
    /// Created by the first part written.
    out: Mutex<Option<Arc<std::fs::File>>>,
    /// Parts not written yet (an empty file has one part, no chunk).
    parts_left: AtomicUsize,
    /// A part's data was damaged: the file is removed once all parts are
    /// through.
    failed: AtomicBool,
    /// Where the file is listed while it is being written.
    unfinished: Arc<Unfinished>,
    /// Its place among the files the walk may have queued at once
    /// (`super::walk::FILES_AHEAD`), given back when the job is dropped.
    _ahead: OwnedSemaphorePermit,
}

impl FileJob {
    pub(super) fn new(
        entry: Entry,
        dest: PathBuf,
        sparse: bool,
        unfinished: Arc<Unfinished>,
        ahead: OwnedSemaphorePermit,
    ) -> Self {
        let offsets = entry.chunk_starts().collect();
        let parts = entry.chunks.len().max(1);
        Self {
            entry,
            dest,
            temp: None,
            check: None,
            offsets,
            sparse,
            out: Mutex::new(None),
            parts_left: AtomicUsize::new(parts),
            failed: AtomicBool::new(false),
            unfinished,
            _ahead: ahead,
        }
    }

    /// The job of a file that replaces the one at `dest`: built in `file`
    /// at `temp` (made by [`Unfinished::create`], holding what was reused),
    /// with `parts` chunks still to write.
    pub(super) fn replacing(mut self, temp: PathBuf, file: std::fs::File, parts: usize) -> Self {
        self.temp = Some(temp);
        self.out = Mutex::new(Some(Arc::new(file)));
        self.parts_left = AtomicUsize::new(parts);
        self
    }

    /// Checks the file against the snapshot once it is written.
    pub(super) fn verified_with(mut self, key: Option<Arc<ChunkIdKey>>) -> Self {
        self.check = key;
        self
    }

    /// Where the file is being written.
    fn writing_to(&self) -> &Path {
        self.temp.as_deref().unwrap_or(&self.dest)
    }

    /// The file, created (new) on first use.
    fn file(&self) -> Result<Arc<std::fs::File>> {
        let mut out = lock(&self.out);
        if let Some(file) = &*out {
            return Ok(file.clone());
        }
        let file = Arc::new(self.unfinished.create(&self.dest)?);
        *out = Some(file.clone());
        Ok(file)
    }
}

/// The files created and not finished yet. A restore that stops on an
/// error (the target is full, the repository unreachable) removes them:
/// a file whose later part was written first has its full size, and must
/// not be left looking restored.
#[derive(Default)]
pub(super) struct Unfinished {
    inner: Mutex<UnfinishedFiles>,
}

#[derive(Default)]
struct UnfinishedFiles {
    /// The restore stopped: no file may be created any more (a decode
    /// task still running would otherwise make one after the cleanup).
    stopped: bool,
    paths: HashSet<PathBuf>,
}

impl Unfinished {
    /// Creates `dest` (new) and lists it.
    pub(super) fn create(&self, dest: &Path) -> Result<std::fs::File> {
        let mut files = lock(&self.inner);
        if files.stopped {
            return Err(Error::Internal(format!(
                "{}: not created, the restore stopped",
                dest.display()
            )));
        }
        let file = create_file(dest)?;
        files.paths.insert(dest.to_path_buf());
        Ok(file)
    }

    /// `dest` is complete (or removed).
    fn finished(&self, dest: &Path) {
        lock(&self.inner).paths.remove(dest);
    }

    /// Stops all creating and removes every file listed; how many.
    pub(super) fn remove_all(&self) -> usize {
        let mut files = lock(&self.inner);
        files.stopped = true;
        let paths = std::mem::take(&mut files.paths);
        for path in &paths {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(
                    "{}: could not remove the unfinished file: {e}",
                    path.display()
                );
            }
        }
        paths.len()
    }
}

/// A file's chunk (`Some(index)` into its entry's chunks) or, for an empty
/// file, just the file: what a [`Fetch`] of the restore carries.
pub(super) struct Part {
    pub(super) file: Arc<FileJob>,
    pub(super) chunk: Option<usize>,
}

/// One ranged read and the file parts it holds.
pub(super) type FileFetch = Fetch<Part>;

/// The writing half: runs the queued reads, [`FETCHES_IN_FLIGHT`] at once
/// ([`REMOTE_FETCHES_IN_FLIGHT`] from a remote repository);
/// each is decoded and its files written on the blocking pool (all cores),
/// every chunk at its offset, so files are written in parallel.
pub(super) struct FileWriter {
    pub(super) progress: Option<Arc<Progress>>,
    pub(super) repo: Arc<Repository>,
    pub(super) is_root: bool,
    pub(super) stats: RestoreStats,
}

impl FileWriter {
    /// Runs every read the walk queues until it closes the queue.
    pub(super) async fn run(&mut self, rx: mpsc::Receiver<FileFetch>) -> Result<()> {
        let (repo, progress, is_root) = (self.repo.clone(), self.progress.clone(), self.is_root);
        let (in_flight, budget) = if repo.backend().is_local() {
            (FETCHES_IN_FLIGHT, None)
        } else {
            let budget = Arc::new(Semaphore::new(REMOTE_BYTES_IN_FLIGHT as usize));
            (REMOTE_FETCHES_IN_FLIGHT, Some(budget))
        };
        let written = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|fetch| (fetch, rx))
        })
        .map(move |fetch| {
            let (repo, progress, budget) = (repo.clone(), progress.clone(), budget.clone());
            async move {
                let _bytes = match budget {
                    Some(budget) => {
                        let kib = fetch.span.as_ref().map_or(0, |s| s.len() / 1024);
                        let kib = kib.clamp(1, u64::from(REMOTE_BYTES_IN_FLIGHT)) as u32;
                        Some(budget.acquire_many_owned(kib).await.map_err(|_| {
                            Error::Internal("restore: the read budget closed".into())
                        })?)
                    }
                    None => None,
                };
                read_and_write(repo, fetch, progress, is_root).await
            }
        })
        .buffer_unordered(in_flight);
        let mut written = std::pin::pin!(written);
        while let Some(result) = written.next().await {
            self.stats.absorb(result?);
        }
        Ok(())
    }
}

/// Runs one read, then on the blocking pool decodes its blobs and writes
/// each into its file; returns what it wrote.
async fn read_and_write(
    repo: Arc<Repository>,
    fetch: FileFetch,
    progress: Option<Arc<Progress>>,
    is_root: bool,
) -> Result<RestoreStats> {
    let fetched = match &fetch.span {
        Some(span) => match span.read(&repo, PackKind::Data).await {
            Ok(data) => Fetched::Span(data),
            Err(e) if is_damage(&e) => Fetched::Each(read_each(&repo, &fetch.parts).await),
            Err(e) => {
                return Err(match fetch.parts.first() {
                    Some(part) => at(&part.file.dest, e),
                    None => e,
                })
            }
        },
        None => Fetched::Span(Vec::new()),
    };
    tokio::task::spawn_blocking(move || {
        let mut stats = RestoreStats::default();
        let progress = progress.as_deref();
        match fetched {
            Fetched::Span(data) => {
                for part in &fetch.parts {
                    let plain = match (part.chunk, &fetch.span) {
                        (Some(index), Some(span)) => {
                            let loc = &part.file.entry.chunks[index];
                            span.blob(&data, loc)
                                .and_then(|stored| repo.decode_blob(loc, PackKind::Data, stored))
                                .map_err(|e| e.to_string())
                        }
                        _ => Ok(Vec::new()),
                    };
                    write_part(part, plain, is_root, progress, &mut stats)?;
                }
            }
            Fetched::Each(each) => {
                for (part, plain) in fetch.parts.iter().zip(each) {
                    write_part(part, plain, is_root, progress, &mut stats)?;
                }
            }
        }
        Ok(stats)
    })
    .await
    .map_err(|e| Error::Internal(format!("restore: a task writing files failed: {e}")))?
}

/// What one read brought.
enum Fetched {
    /// The span's stored bytes, decoded part by part as they are written.
    Span(Vec<u8>),
    /// Its pack is damaged or missing there: each part's plaintext read on
    /// its own (a cut pack still holds the blobs before the cut), or why
    /// it could not be read.
    Each(Vec<std::result::Result<Vec<u8>, String>>),
}

/// Each part's plaintext read on its own, or why it could not be read.
async fn read_each(repo: &Repository, parts: &[Part]) -> Vec<std::result::Result<Vec<u8>, String>> {
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        out.push(match part.chunk {
            Some(index) => repo
                .read_blob(&part.file.entry.chunks[index], PackKind::Data)
                .await
                .map_err(|e| e.to_string()),
            None => Ok(Vec::new()),
        });
    }
    out
}

/// Writes one part of a file at its offset (or, if its data was lost,
/// marks the file failed); the last part through closes the file and
/// applies its metadata, or removes it if any part failed.
fn write_part(
    part: &Part,
    plain: std::result::Result<Vec<u8>, String>,
    is_root: bool,
    progress: Option<&Progress>,
    stats: &mut RestoreStats,
) -> Result<()> {
    let job = &part.file;
    match plain {
        Err(lost) => {
            if !job.failed.swap(true, Ordering::AcqRel) {
                stats
                    .damaged
                    .push(format!("{}: {lost}", job.dest.display()));
            }
        }
        Ok(_) if job.failed.load(Ordering::Acquire) => {}
        Ok(plain) => {
            let file = job.file()?;
            if let Some(index) = part.chunk {
                let offset = job.offsets.get(index).copied().unwrap_or_default();
                write_at(&file, &plain, offset, job.sparse)
                    .map_err(|e| Error::io(&job.dest, "writing a file", e))?;
                stats.bytes += plain.len() as u64;
                if let Some(p) = progress {
                    p.add_bytes(plain.len() as u64);
                }
            }
        } // this part's handle is dropped before it counts as written
    }
    if job.parts_left.fetch_sub(1, Ordering::AcqRel) != 1 {
        return Ok(());
    }
    finish(job, is_root, progress, stats)
}

/// Once every part of `job` is through: the holes, then closing the file,
/// checking it (`--verify`), its metadata, and renaming it over the file
/// it replaces. A file with a lost part is removed (one it was to replace
/// stays as it was).
pub(super) fn finish(
    job: &FileJob,
    is_root: bool,
    progress: Option<&Progress>,
    stats: &mut RestoreStats,
) -> Result<()> {
    let path = job.writing_to();
    if !job.failed.load(Ordering::Acquire) {
        let file = job.file()?;
        finish_holes(&file, &job.entry, job.sparse)
            .map_err(|e| Error::io(&job.dest, "writing a file", e))?;
    }
    drop(lock(&job.out).take());
    if job.failed.load(Ordering::Acquire) {
        job.unfinished.finished(path);
        // Never leave a file with holes where its data should be.
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(path, "removing a file whose data is damaged", e))
            }
            _ => Ok(()),
        };
    }
    if let Some(key) = &job.check {
        let good = reads_back(path, &job.entry, key)
            .map_err(|e| Error::io(path, "reading a restored file back (--verify)", e))?;
        if !good {
            return Err(Error::io(
                &job.dest,
                "checking a restored file (--verify)",
                std::io::Error::other(
                    "it does not read back as written: the target's disk or file system \
                     lost or changed data",
                ),
            ));
        }
    }
    apply_metadata(&job.entry, path, is_root, stats)?;
    if let Some(temp) = &job.temp {
        std::fs::rename(temp, &job.dest)
            .map_err(|e| Error::io(&job.dest, "replacing it with its restored version", e))?;
    }
    job.unfinished.finished(path);
    stats.files += 1;
    if let Some(p) = progress {
        p.file_done();
    }
    Ok(())
}

/// Blocks of this size that hold only zeros are left as holes.
const SPARSE_BLOCK: u64 = 4096;

/// Writes `data` at `offset`; with `sparse`, the blocks of it (aligned to
/// the file's [`SPARSE_BLOCK`]s) that are all zeros are skipped, so the
/// file system leaves them unallocated, as `cp --sparse=always` does.
pub(super) fn write_at(
    file: &std::fs::File,
    data: &[u8],
    offset: u64,
    sparse: bool,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    if !sparse {
        return file.write_all_at(data, offset);
    }
    let mut at = 0usize;
    // A run of non-zero blocks being gathered: its start in `data`.
    let mut run: Option<usize> = None;
    while at < data.len() {
        let block_end = (offset + at as u64) / SPARSE_BLOCK * SPARSE_BLOCK + SPARSE_BLOCK;
        let end = data.len().min((block_end - offset) as usize);
        let zero = data[at..end].iter().all(|&b| b == 0);
        match (zero, run) {
            (true, Some(start)) => {
                file.write_all_at(&data[start..at], offset + start as u64)?;
                run = None;
            }
            (false, None) => run = Some(at),
            _ => {}
        }
        at = end;
    }
    if let Some(start) = run {
        file.write_all_at(&data[start..], offset + start as u64)?;
    }
    Ok(())
}

/// Once every chunk is written: gives the file its full size (a trailing
/// hole or zero block was not written) and, without `sparse`, writes the
/// snapshot's holes as zeros.
fn finish_holes(file: &std::fs::File, entry: &Entry, sparse: bool) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    if !sparse {
        let zeros = vec![0u8; 1 << 20];
        for hole in &entry.holes {
            let mut done = 0;
            while done < hole.length {
                let n = (hole.length - done).min(zeros.len() as u64);
                file.write_all_at(&zeros[..n as usize], hole.offset + done)?;
                done += n;
            }
        }
    }
    if file.metadata()?.len() != entry.size {
        file.set_len(entry.size)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::Kind;
    use crate::ops::restore::plan::tests::loc;

    fn three_part_file(dest: &Path, chunks: &[Vec<u8>]) -> Arc<FileJob> {
        let entry = Entry {
            mtime_ns: 1_000_000_000_000_000_000,
            size: 18,
            chunks: chunks.iter().map(|c| loc(1, 0, c.len() as u64)).collect(),
            ..Entry::new(b"f".to_vec(), Kind::File, 0o640)
        };
        let ahead = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("a free permit");
        Arc::new(FileJob::new(
            entry,
            dest.to_path_buf(),
            true,
            Arc::default(),
            ahead,
        ))
    }

    #[test]
    fn parts_written_out_of_order_make_the_file_and_the_last_sets_its_mtime() {
        let dir = tempfile::tempdir().expect("temp dir");
        let chunks = [b"first ".to_vec(), b"second ".to_vec(), b"third".to_vec()];
        let dest = dir.path().join("f");
        let file = three_part_file(&dest, &chunks);
        let mut stats = RestoreStats::default();
        for index in [2, 0, 1] {
            let part = Part {
                file: file.clone(),
                chunk: Some(index),
            };
            write_part(&part, Ok(chunks[index].clone()), false, None, &mut stats).expect("write");
            assert_eq!(
                stats.files,
                u64::from(index == 1),
                "done only after the last"
            );
        }
        assert_eq!(std::fs::read(&dest).expect("read"), b"first second third");
        let meta = std::fs::metadata(&dest).expect("stat");
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.mode() & 0o777, meta.mtime()), (0o640, 1_000_000_000));
        assert!(lock(&file.out).is_none(), "the file was closed");
    }

    #[test]
    fn blocks_of_zeros_become_holes_unless_asked_not_to() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("temp dir");
        // Written at an odd offset: blocks are the file's, not the data's.
        let mut data = vec![1u8; 100];
        data.extend(vec![0u8; 1 << 20]);
        data.extend(vec![2u8; 100]);
        for (sparse, name) in [(true, "sparse"), (false, "dense")] {
            let path = dir.path().join(name);
            let file = std::fs::File::create(&path).expect("create");
            write_at(&file, &data, 4000, sparse).expect("write");
            let mut entry = three_part_file(&path, &[]).entry.clone();
            entry.size = 4000 + data.len() as u64;
            finish_holes(&file, &entry, sparse).expect("finish");
            let back = std::fs::read(&path).expect("read");
            assert_eq!(&back[4000..], &data[..], "{name}");
            assert!(back[..4000].iter().all(|&b| b == 0));
            let allocated = file.metadata().expect("stat").blocks() * 512;
            if sparse {
                assert!(allocated <= 4 * 4096, "{name}: {allocated} bytes allocated");
            } else {
                assert!(allocated >= 1 << 20, "{name}: {allocated} bytes allocated");
            }
        }
    }

    #[test]
    fn a_stopped_restore_removes_its_unfinished_files_and_creates_no_more() {
        let dir = tempfile::tempdir().expect("temp dir");
        let chunks = [b"first ".to_vec(), b"second ".to_vec(), b"third".to_vec()];
        let (done, half, later) = (
            dir.path().join("done"),
            dir.path().join("half"),
            dir.path().join("later"),
        );
        let unfinished = Arc::new(Unfinished::default());
        let job = |dest: &Path| {
            let mut file = three_part_file(dest, &chunks);
            Arc::get_mut(&mut file).expect("one owner").unfinished = unfinished.clone();
            file
        };
        let mut stats = RestoreStats::default();
        let mut write = |file: &Arc<FileJob>, index: usize| {
            let part = Part {
                file: file.clone(),
                chunk: Some(index),
            };
            write_part(&part, Ok(chunks[index].clone()), false, None, &mut stats)
        };
        let done_job = job(&done);
        for index in 0..3 {
            write(&done_job, index).expect("write");
        }
        // The last part first: the file has its full size, holes before.
        let half_job = job(&half);
        write(&half_job, 2).expect("write");
        assert_eq!(std::fs::metadata(&half).expect("stat").len(), 18);

        assert_eq!(unfinished.remove_all(), 1);
        assert!(!half.exists(), "a partly written file was left");
        assert_eq!(std::fs::read(&done).expect("read"), b"first second third");
        let err = write(&job(&later), 0).expect_err("created after the stop");
        assert!(err.to_string().contains("the restore stopped"), "{err}");
        assert!(!later.exists());
    }

    #[test]
    fn a_file_with_a_lost_part_is_removed_and_named_once_whatever_the_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let chunks = [b"first ".to_vec(), b"second ".to_vec(), b"third".to_vec()];
        for (n, order) in [[0, 1, 2], [1, 0, 2], [2, 1, 0], [0, 2, 1]]
            .iter()
            .enumerate()
        {
            let dest = dir.path().join(format!("f{n}"));
            let file = three_part_file(&dest, &chunks);
            let mut stats = RestoreStats::default();
            for &index in order {
                let part = Part {
                    file: file.clone(),
                    chunk: Some(index),
                };
                // The middle chunk's blob is damaged; so is the last one's.
                let plain = match index {
                    0 => Ok(chunks[0].clone()),
                    _ => Err(format!("damaged object data/xx/p{index}")),
                };
                write_part(&part, plain, false, None, &mut stats).expect("write");
            }
            assert!(!dest.exists(), "order {order:?}: a partial file was left");
            assert_eq!(stats.files, 0);
            assert_eq!(stats.damaged.len(), 1, "{:?}", stats.damaged);
            assert!(stats.damaged[0].contains(&format!("f{n}: damaged object")));
            assert!(lock(&file.out).is_none(), "the file was closed");
        }
    }
}
