//! What is already at the target when restoring over a live tree: a file
//! compared with its entry (hashes at the entry's chunk offsets, then the
//! repository's chunker for chunks that moved), its chunks copied into the
//! new version, metadata compared, and the entries a snapshot lacks
//! (`--delete`).
//!
//! Every read here opens with `O_NOFOLLOW` and every removal stays inside
//! the directory walked: names come from `read_dir` of a directory below
//! the target, and `remove_dir_all` does not follow symlinks.

use super::target::mode_to_set;
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::format::chunk_key::ChunkIdKey;
use crate::format::id::BlobId;
use crate::format::tree::{Entry, Kind, Tree};
use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file at the target measured against its entry.
pub(super) struct Compared {
    /// Its content is the entry's (size, every chunk, zeros in the holes).
    pub(super) same: bool,
    /// For each of the entry's chunks, where the file holds it (`None`:
    /// nowhere; it is read from the repository).
    pub(super) reuse: Vec<Option<u64>>,
}

/// Opens a file at the target for reading, never through a symlink.
pub(super) fn open_existing(path: &Path) -> std::io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Compares the regular file at `path` with `entry`: each chunk is looked
/// for where the entry has it (an edit in place or an append keeps the
/// rest there), and, if some are not, the file is cut with the
/// repository's chunker to find chunks that moved (an insertion).
pub(super) fn compare(
    path: &Path,
    entry: &Entry,
    key: &ChunkIdKey,
    chunker: &Chunker,
) -> std::io::Result<Compared> {
    let file = open_existing(path)?;
    let len = file.metadata()?.len();
    let mut reuse = chunks_in_place(&file, len, entry, key)?;
    let in_place = reuse.iter().all(Option::is_some);
    if len == entry.size && in_place && holes_are_zeros(&file, entry)? {
        return Ok(Compared { same: true, reuse });
    }
    if !in_place && len > 0 {
        find_moved_chunks(&file, len, entry, key, chunker, &mut reuse)?;
    }
    Ok(Compared { same: false, reuse })
}

/// For each of the entry's chunks, its offset if `file` (`len` bytes)
/// holds it there, hashed with the chunk-id key.
fn chunks_in_place(
    file: &File,
    len: u64,
    entry: &Entry,
    key: &ChunkIdKey,
) -> std::io::Result<Vec<Option<u64>>> {
    let mut found = vec![None; entry.chunks.len()];
    let mut buf = Vec::new();
    for ((slot, loc), start) in found
        .iter_mut()
        .zip(&entry.chunks)
        .zip(entry.chunk_starts())
    {
        if start.saturating_add(loc.raw_length) > len {
            continue;
        }
        buf.resize(loc.raw_length as usize, 0);
        file.read_exact_at(&mut buf, start)?;
        if key.blob_id(&buf) == loc.id {
            *slot = Some(start);
        }
    }
    Ok(found)
}

/// Cuts `file` with the chunker and notes where it holds the entry's
/// chunks that [`compare`] did not find in place.
fn find_moved_chunks(
    file: &File,
    len: u64,
    entry: &Entry,
    key: &ChunkIdKey,
    chunker: &Chunker,
    reuse: &mut [Option<u64>],
) -> std::io::Result<()> {
    let mut wanted: HashMap<BlobId, Vec<usize>> = HashMap::new();
    for (i, loc) in entry.chunks.iter().enumerate() {
        if reuse[i].is_none() {
            wanted.entry(loc.id).or_default().push(i);
        }
    }
    let mut at = 0u64;
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    chunker.chunk(reader, Some(len), |chunk| {
        if let Some(indexes) = wanted.remove(&key.blob_id(&chunk)) {
            for i in indexes {
                reuse[i] = Some(at);
            }
        }
        at += chunk.len() as u64;
        Ok(())
    })
}

/// Whether the entry's holes read as zeros in `file` (what the file
/// system knows to be a hole is not read).
fn holes_are_zeros(file: &File, entry: &Entry) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 1 << 20];
    for hole in &entry.holes {
        let end = hole.offset.saturating_add(hole.length);
        // SAFETY: lseek on an open descriptor has no memory effects.
        let data = unsafe {
            libc::lseek(
                file.as_raw_fd(),
                hole.offset as libc::off_t,
                libc::SEEK_DATA,
            )
        };
        let mut at = match data {
            d if d < 0 => continue, // no data from there to the end
            d => (d as u64).max(hole.offset),
        };
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], at)?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
    }
    Ok(true)
}

/// What [`copy_reused`] did.
pub(super) struct Copied {
    /// The entry's chunks still to read from the repository.
    pub(super) missing: Vec<usize>,
    /// Bytes taken from the old file.
    pub(super) bytes: u64,
}

/// Copies the chunks `reuse` found in `old` into `new` at the entry's
/// offsets, each hashed again as it is copied (a live file may change
/// after it was compared): a chunk that no longer matches is read from the
/// repository instead.
pub(super) fn copy_reused(
    old: &File,
    new: &File,
    entry: &Entry,
    reuse: &[Option<u64>],
    key: &ChunkIdKey,
    mut write_at: impl FnMut(&File, &[u8], u64) -> std::io::Result<()>,
) -> std::io::Result<Copied> {
    let mut copied = Copied {
        missing: Vec::new(),
        bytes: 0,
    };
    let mut buf = Vec::new();
    let chunks = entry.chunks.iter().zip(entry.chunk_starts()).zip(reuse);
    for (i, ((loc, start), from)) in chunks.enumerate() {
        let Some(from) = *from else {
            copied.missing.push(i);
            continue;
        };
        buf.resize(loc.raw_length as usize, 0);
        match old.read_exact_at(&mut buf, from) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                copied.missing.push(i);
                continue;
            }
            other => other?,
        }
        if key.blob_id(&buf) != loc.id {
            copied.missing.push(i);
            continue;
        }
        write_at(new, &buf, start)?;
        copied.bytes += loc.raw_length;
    }
    Ok(copied)
}

/// Whether the file written at `path` reads back as `entry` holds it
/// (`--verify`): its size, every chunk's hash at its offset, zeros in the
/// holes.
pub(super) fn reads_back(path: &Path, entry: &Entry, key: &ChunkIdKey) -> std::io::Result<bool> {
    let file = open_existing(path)?;
    let len = file.metadata()?.len();
    if len != entry.size {
        return Ok(false);
    }
    let in_place = chunks_in_place(&file, len, entry, key)?;
    Ok(in_place.iter().all(Option::is_some) && holes_are_zeros(&file, entry)?)
}

/// An entry's mtime in nanoseconds, as `meta` has it.
pub(super) fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Whether what is at `dest` (`meta`) has other metadata than `entry`
/// would get from restore: mtime, permission bits, owner (as root), or
/// one of its extended attributes.
pub(super) fn metadata_differs(entry: &Entry, meta: &Metadata, dest: &Path, is_root: bool) -> bool {
    if mtime_ns(meta) != entry.mtime_ns {
        return true;
    }
    if entry.kind != Kind::Symlink && meta.mode() & 0o7777 != mode_to_set(entry, is_root) {
        return true;
    }
    if is_root && (meta.uid(), meta.gid()) != (entry.uid, entry.gid) {
        return true;
    }
    entry
        .xattrs
        .iter()
        .any(|x| xattr(dest, &x.name).as_deref() != Some(x.value.as_slice()))
}

/// The value of extended attribute `name` of `path` (not following a
/// symlink), if it has one that can be read.
fn xattr(path: &Path, name: &[u8]) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let name = CString::new(name).ok()?;
    let mut value = vec![0u8; 64 << 10];
    // SAFETY: valid C strings and a buffer of the length given.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    value.truncate(n);
    Some(value)
}

/// Whether the symlink or special file at `dest` is what `entry` makes:
/// a symlink to the same target, a node of the same kind and device.
pub(super) fn same_other(entry: &Entry, meta: &Metadata, dest: &Path) -> bool {
    let kind = meta.file_type();
    match entry.kind {
        Kind::Symlink => {
            kind.is_symlink()
                && std::fs::read_link(dest).is_ok_and(|t| {
                    t.as_os_str().as_bytes() == entry.target.as_deref().unwrap_or_default()
                })
        }
        Kind::Fifo => kind.is_fifo(),
        Kind::Socket => kind.is_socket(),
        Kind::Char => kind.is_char_device() && Some(meta.rdev()) == entry.rdev,
        Kind::Block => kind.is_block_device() && Some(meta.rdev()) == entry.rdev,
        Kind::File | Kind::Dir => false,
    }
}

/// The entries of directory `dir` that `tree` does not name (none if
/// `dir` is not there).
pub(super) fn extras(dir: &Path, tree: &Tree) -> Result<Vec<PathBuf>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, "listing a directory (--delete)", e)),
    };
    let mut names = Vec::new();
    for item in listing {
        let item = item.map_err(|e| Error::io(dir, "listing a directory (--delete)", e))?;
        names.push(item.file_name());
    }
    Ok(extras_of(
        dir,
        tree,
        names.iter().map(|n| n.as_bytes()).collect(),
    ))
}

/// Of `names` (what directory `dir` holds), the paths of those `tree`
/// does not name, in order.
pub(super) fn extras_of(dir: &Path, tree: &Tree, names: Vec<&[u8]>) -> Vec<PathBuf> {
    let named: HashSet<&[u8]> = tree.entries.iter().map(|e| e.name.as_slice()).collect();
    let mut out: Vec<PathBuf> = names
        .into_iter()
        .filter(|n| !named.contains(n))
        .map(|n| dir.join(std::ffi::OsStr::from_bytes(n)))
        .collect();
    out.sort();
    out
}

/// Removes `path`: a directory with everything in it (symlinks inside are
/// removed, never followed), anything else alone.
pub(super) fn remove(path: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| Error::io(path, "removing what the snapshot lacks (--delete)", e))?;
    if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
    .map_err(|e| Error::io(path, "removing what the snapshot lacks (--delete)", e))
}

/// A new name beside `dest` to build its next version under; renamed
/// over `dest` once complete, removed if the restore stops.
pub(super) fn temp_path(dest: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!(".coffer-restore.{}.{n}", std::process::id());
    dest.with_file_name(OsStr::new(&name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::config::ChunkerParams;
    use crate::format::id::PackId;
    use crate::format::tree::Location;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// An entry for `data` as the writer would cut it.
    fn entry_for(data: &[u8], key: &ChunkIdKey, chunker: &Chunker) -> Entry {
        let mut chunks = Vec::new();
        chunker
            .chunk(data, Some(data.len() as u64), |c| {
                chunks.push(Location {
                    id: key.blob_id(&c),
                    pack: PackId([0; 32]),
                    offset: 0,
                    length: c.len() as u64,
                    raw_length: c.len() as u64,
                });
                Ok(())
            })
            .expect("chunk");
        Entry {
            size: data.len() as u64,
            chunks,
            ..Entry::new(b"f".to_vec(), Kind::File, 0o644)
        }
    }

    #[test]
    fn an_edit_in_place_an_append_and_an_insertion_keep_the_other_chunks() {
        let key = ChunkIdKey::generate();
        let params = ChunkerParams {
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
            ..ChunkerParams::default()
        };
        let chunker = Chunker::new(params, key.chunker_seed());
        let dir = tempfile::tempdir().expect("temp dir");
        let data = pseudo_random(1 << 20, 7);
        let entry = entry_for(&data, &key, &chunker);
        let n = entry.chunks.len();
        assert!(n > 20, "{n} chunks");
        let path = dir.path().join("f");
        let found = |bytes: &[u8]| {
            std::fs::write(&path, bytes).expect("write");
            let c = compare(&path, &entry, &key, &chunker).expect("compare");
            (c.same, c.reuse.iter().filter(|r| r.is_some()).count())
        };
        assert_eq!(found(&data), (true, n));
        let mut edited = data.clone();
        edited[500_000] ^= 1;
        let (same, kept) = found(&edited);
        assert!(!same && kept == n - 1, "{kept} of {n} after an edit");
        let mut inserted = data[..300_000].to_vec();
        inserted.extend(b"a few inserted bytes");
        inserted.extend(&data[300_000..]);
        let (same, kept) = found(&inserted);
        assert!(!same && kept >= n - 2, "{kept} of {n} after an insertion");
        let (same, kept) = found(&data[..600_000]);
        assert!(!same && kept >= n / 2, "{kept} of {n} after a truncation");
        assert_eq!(found(b""), (false, 0));

        // What is found is copied, checked again, into the new version.
        std::fs::write(&path, &inserted).expect("write");
        let c = compare(&path, &entry, &key, &chunker).expect("compare");
        let old = open_existing(&path).expect("open");
        let new_path = dir.path().join("new");
        let new = File::create(&new_path).expect("create");
        let copied = copy_reused(&old, &new, &entry, &c.reuse, &key, |f, d, at| {
            f.write_all_at(d, at)
        })
        .expect("copy");
        let missing_bytes: u64 = copied
            .missing
            .iter()
            .map(|&i| entry.chunks[i].raw_length)
            .sum();
        assert_eq!(copied.bytes + missing_bytes, entry.size);
        let back = std::fs::read(&new_path).expect("read");
        let starts: Vec<u64> = entry.chunk_starts().collect();
        for (i, loc) in entry.chunks.iter().enumerate() {
            let at = starts[i] as usize;
            if !copied.missing.contains(&i) {
                assert_eq!(
                    &back[at..at + loc.raw_length as usize],
                    &data[at..at + loc.raw_length as usize]
                );
            }
        }
    }

    #[test]
    fn a_chunk_that_changed_after_the_comparison_is_read_from_the_repository() {
        let key = ChunkIdKey::generate();
        let chunker = Chunker::new(ChunkerParams::default(), key.chunker_seed());
        let dir = tempfile::tempdir().expect("temp dir");
        let data = pseudo_random(4000, 3);
        let entry = entry_for(&data, &key, &chunker);
        let path = dir.path().join("f");
        std::fs::write(&path, &data).expect("write");
        let c = compare(&path, &entry, &key, &chunker).expect("compare");
        assert!(c.same);
        let mut changed = data.clone();
        changed[0] ^= 1;
        std::fs::write(&path, &changed).expect("write");
        let old = open_existing(&path).expect("open");
        let new = File::create(dir.path().join("new")).expect("create");
        let copied = copy_reused(&old, &new, &entry, &c.reuse, &key, |f, d, at| {
            f.write_all_at(d, at)
        })
        .expect("copy");
        assert_eq!(
            (copied.missing.len(), copied.bytes),
            (entry.chunks.len(), 0)
        );
        assert!(!reads_back(&path, &entry, &key).expect("read back"));
        std::fs::write(&path, &data).expect("write");
        assert!(reads_back(&path, &entry, &key).expect("read back"));
    }

    #[test]
    fn extras_are_what_the_tree_does_not_name_and_a_missing_directory_has_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        let outside = tempfile::tempdir().expect("temp dir");
        std::fs::write(outside.path().join("theirs"), b"x").expect("write");
        for name in ["keep", "extra", "gone"] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).expect("symlink");
        let tree = Tree {
            entries: vec![Entry::new(b"keep".to_vec(), Kind::File, 0o644)],
        };
        let found = extras(dir.path(), &tree).expect("extras");
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["extra", "gone", "link"]);
        for p in &found {
            remove(p).expect("remove");
        }
        assert!(
            outside.path().join("theirs").exists(),
            "removed through a symlink"
        );
        assert!(dir.path().join("keep").exists());
        assert!(extras(&dir.path().join("none"), &tree)
            .expect("none")
            .is_empty());
    }
}
