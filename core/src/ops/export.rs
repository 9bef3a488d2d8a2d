//! `coffer export`: a snapshot, or a path in it, as one zip or tar archive,
//! streamed.
//!
//! An async walker goes through the trees depth first and lists what to
//! write (entries, and each file's chunks by location); a reader fetches
//! the chunks in that order, [`READS`] at once across files (a walk over
//! many small files pays a round trip per [`READS`] files, not per file);
//! a blocking thread writes the archive. They meet in bounded channels, so
//! memory holds at most [`READS`] + [`QUEUE`] chunks (each at most 8 MiB)
//! whatever the snapshot's size. Modes and mtimes are kept
//! (zip: permission bits, and the mtime both as DOS time, in UTC, and as
//! an Info-ZIP extended timestamp; tar: everything, owners and devices
//! too). Zip has no place for fifos, devices or sockets: they are left out
//! and counted.

use crate::error::{Error, Result};
use crate::format::index::PackKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{
    is_safe_name, nested_too_deep, Entry, Extent, Kind, Location, MAX_DEPTH,
};
use crate::repository::Repository;
use futures_util::stream::{self, StreamExt};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use tokio::sync::mpsc;

mod tar_pax;

/// Items between reader and writer; each `Data` holds one chunk.
const QUEUE: usize = 8;
/// Chunk reads in flight, across files.
const READS: usize = 16;
/// Steps the walker lists ahead of the reader (small: entries and
/// locations, no data).
const STEPS: usize = 4096;

/// Which archive to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Zip, deflated (or stored, with `deflate: false`).
    Zip {
        /// Compress with deflate.
        deflate: bool,
    },
    /// POSIX tar (GNU long names).
    Tar,
}

/// What went into the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Regular files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub links: u64,
    /// Entries the format cannot hold (zip: fifos, devices, sockets),
    /// by path.
    pub skipped: Vec<String>,
    /// Entries whose extended attributes (ACLs, capabilities) the archive
    /// does not hold (zip has no place for them; tar keeps them).
    pub without_xattrs: u64,
    /// Later names of hard-linked files written as copies (zip has no hard
    /// links; tar writes link entries).
    pub links_copied: u64,
}

/// A path in the archive: raw name bytes joined by `/`.
type ArchivePath = Vec<u8>;

/// One step of the walk, from reader to writer.
enum Item {
    Dir(ArchivePath, Entry),
    /// A file; its chunks follow as `Data` (and its holes as `Hole`), then
    /// `End`.
    File(ArchivePath, Entry),
    Data(Vec<u8>),
    /// This many zero bytes of a sparse file, not stored.
    Hole(u64),
    End,
    Other(ArchivePath, Entry),
    /// Another name of a hard-linked file already in the archive (tar):
    /// its path, entry, and the path it was first written under.
    HardLink(ArchivePath, Entry, ArchivePath),
}

/// One step of the walk, from walker to reader: an item as it is, or a
/// chunk to read (with the file's path, for errors) or a hole.
enum Step {
    Item(Box<Item>),
    Data(Location, std::sync::Arc<str>),
    Hole(u64),
}

/// A path as text, for messages and for zip (whose names are UTF-8).
fn text(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Where the archive goes.
pub enum Output {
    /// A file (zip goes back to fill in each entry's sizes).
    File(std::fs::File),
    /// A pipe or anything else that cannot seek (zip then writes each
    /// entry's sizes after its data).
    Stream(Box<dyn Write + Send>),
}

/// Writes `path` of `snapshot` to `out` as `format`.
pub async fn export(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    format: Format,
    out: Output,
) -> Result<ExportReport> {
    let top = repo.resolve(snapshot, path).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let writer = tokio::task::spawn_blocking(move || write_archive(format, out, rx));
    let (steps_tx, steps_rx) = mpsc::channel(STEPS);
    let walking = async move { walk(repo, top, format == Format::Tar, &steps_tx).await };
    let (walked, read) = futures_util::future::join(walking, read(repo, steps_rx, &tx)).await;
    // A read that failed is the cause; else the walk's own stop.
    let walked = read.and(walked);
    drop(tx);
    let written = writer.await.unwrap_or_else(|e| {
        Err(Error::Internal(format!(
            "export: the archive writer failed: {e}"
        )))
    });
    match walked {
        Ok(()) => written,
        // A read failed: that is the cause (the writer saw only the end).
        Err(Stop::Read(e)) => Err(e),
        Err(Stop::WriterGone) => Err(written
            .err()
            .unwrap_or_else(|| Error::Internal("export: the archive writer stopped early".into()))),
    }
}

/// Why the walk stopped early.
enum Stop {
    Read(Error),
    /// The writer thread ended (its result says why).
    WriterGone,
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Read(e)
    }
}

/// Reads the chunks the walker lists, [`READS`] at once, and sends the
/// items to the writer in the walker's order.
async fn read(
    repo: &Repository,
    steps: mpsc::Receiver<Step>,
    tx: &mpsc::Sender<Item>,
) -> Result<(), Stop> {
    let steps = stream::unfold(
        steps,
        |mut rx| async move { rx.recv().await.map(|s| (s, rx)) },
    );
    let items = steps
        .map(|step| async move {
            match step {
                Step::Item(item) => Ok(*item),
                Step::Hole(length) => Ok(Item::Hole(length)),
                Step::Data(loc, path) => repo
                    .read_blob(&loc, PackKind::Data)
                    .await
                    .map(Item::Data)
                    .map_err(|e| Error::At {
                        path: path.to_string(),
                        source: Box::new(e),
                    }),
            }
        })
        .buffered(READS);
    let mut items = std::pin::pin!(items);
    while let Some(item) = items.next().await {
        tx.send(item?).await?;
    }
    Ok(())
}

impl<T> From<mpsc::error::SendError<T>> for Stop {
    fn from(_: mpsc::error::SendError<T>) -> Self {
        Stop::WriterGone
    }
}

/// Lists every entry below (and including, unless it is the walk's root
/// directory) `top`, with each file's chunks. With `hard_links`, a later
/// name of a hard-linked file goes as a link to its first, without its
/// data.
async fn walk(
    repo: &Repository,
    top: Entry,
    hard_links: bool,
    tx: &mpsc::Sender<Step>,
) -> Result<(), Stop> {
    // Each entry with the depth of the directory it is in.
    let mut stack: Vec<(ArchivePath, Entry, usize)> = Vec::new();
    let mut first_names: HashMap<(u64, u64), ArchivePath> = HashMap::new();
    let item = |item| Step::Item(Box::new(item));
    match top.kind {
        // A directory's contents go at the archive's top level.
        Kind::Dir => push_children(repo, &top, b"", 0, &mut stack).await?,
        _ => stack.push((top.name.clone(), top, 0)),
    }
    while let Some((name, entry, depth)) = stack.pop() {
        if let Some(link) = entry.link.filter(|_| hard_links) {
            match first_names.get(&(link.dev, link.ino)) {
                Some(first) => {
                    tx.send(item(Item::HardLink(name, entry, first.clone())))
                        .await?;
                    continue;
                }
                None => {
                    first_names.insert((link.dev, link.ino), name.clone());
                }
            }
        }
        match entry.kind {
            Kind::Dir => {
                push_children(repo, &entry, &name, depth + 1, &mut stack).await?;
                tx.send(item(Item::Dir(name, entry))).await?;
            }
            Kind::File => {
                let extents = entry.extents();
                let path: std::sync::Arc<str> = text(&name).into();
                tx.send(item(Item::File(name, entry))).await?;
                for extent in extents {
                    tx.send(match extent {
                        Extent::Data(loc) => Step::Data(loc, path.clone()),
                        Extent::Hole(length) => Step::Hole(length),
                    })
                    .await?;
                }
                tx.send(item(Item::End)).await?;
            }
            _ => tx.send(item(Item::Other(name, entry))).await?,
        }
    }
    Ok(())
}

/// Reads `dir`'s tree (`depth` directories below the export's top) and
/// pushes its entries so that they pop in name order, named below
/// `prefix`. A tree met before comes from the repository's memo of trees,
/// so a subtree many paths share is read once.
async fn push_children(
    repo: &Repository,
    dir: &Entry,
    prefix: &[u8],
    depth: usize,
    stack: &mut Vec<(ArchivePath, Entry, usize)>,
) -> Result<()> {
    let Some(loc) = dir.subtree else {
        return Ok(());
    };
    let within = |e: Error| Error::At {
        path: format!("{}/", text(prefix)),
        source: Box::new(e),
    };
    if depth >= MAX_DEPTH {
        return Err(within(Error::damaged(
            format!("tree {}", loc.id),
            nested_too_deep(),
        )));
    }
    let tree = repo.shared_tree(&loc).await.map_err(within)?;
    for entry in tree.entries.iter().rev() {
        if !is_safe_name(&entry.name) {
            return Err(Error::damaged(
                format!("tree {}", loc.id),
                format!(
                    "unsafe name {:?} in {}/",
                    entry.display_name(),
                    text(prefix)
                ),
            ));
        }
        let mut name = prefix.to_vec();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(&entry.name);
        stack.push((name, entry.clone(), depth));
    }
    Ok(())
}

/// The archive formats, as the writer thread drives them.
trait Archive {
    fn dir(&mut self, path: &[u8], e: &Entry) -> std::io::Result<()>;
    fn file(&mut self, path: &[u8], e: &Entry, data: &mut dyn Read) -> std::io::Result<()>;
    /// A symlink or special file; false if the format cannot hold it.
    fn other(&mut self, path: &[u8], e: &Entry) -> std::io::Result<bool>;
    /// Another name of the file written at `first` (tar only: the walk
    /// sends zip every name with its data).
    fn hard_link(&mut self, path: &[u8], e: &Entry, first: &[u8]) -> std::io::Result<()>;
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

fn write_archive(
    format: Format,
    out: Output,
    mut rx: mpsc::Receiver<Item>,
) -> Result<ExportReport> {
    let mut archive: Box<dyn Archive> = match (format, out) {
        (Format::Zip { deflate }, Output::File(f)) => {
            Box::new(ZipOut::new(zip::ZipWriter::new(f), deflate))
        }
        (Format::Zip { deflate }, Output::Stream(w)) => {
            Box::new(ZipOut::new(zip::ZipWriter::new_stream(w), deflate))
        }
        (Format::Tar, Output::File(f)) => Box::new(TarOut(tar::Builder::new(f))),
        (Format::Tar, Output::Stream(w)) => Box::new(TarOut(tar::Builder::new(w))),
    };
    let mut report = ExportReport::default();
    let io = |path: &[u8], e: std::io::Error| Error::io(text(path), "writing the archive", e);
    // Tar keeps holes (GNU sparse), hard links and extended attributes.
    let tar = format == Format::Tar;
    let mut linked: HashSet<(u64, u64)> = HashSet::new();
    while let Some(item) = rx.blocking_recv() {
        if let Item::Dir(_, e) | Item::File(_, e) | Item::Other(_, e) = &item {
            report.without_xattrs += u64::from(!tar && !e.xattrs.is_empty());
            if let Some(link) = e.link.filter(|_| e.kind != Kind::Dir) {
                report.links_copied += u64::from(!linked.insert((link.dev, link.ino)));
            }
        }
        match item {
            Item::Dir(path, e) => {
                archive.dir(&path, &e).map_err(|err| io(&path, err))?;
                report.dirs += 1;
            }
            Item::File(path, e) => {
                let mut data = ChunkReader {
                    rx: &mut rx,
                    chunk: Vec::new(),
                    at: 0,
                    zeros: 0,
                    skip_holes: tar,
                    read: 0,
                    size: e.size,
                };
                archive
                    .file(&path, &e, &mut data)
                    .map_err(|err| io(&path, err))?;
                if data.read != e.size {
                    return Err(io(
                        &path,
                        std::io::Error::other("the file ended early: its chunks were not all read"),
                    ));
                }
                report.files += 1;
                report.bytes += e.size;
            }
            Item::Other(path, e) => {
                if archive.other(&path, &e).map_err(|err| io(&path, err))? {
                    if e.kind == Kind::Symlink {
                        report.links += 1;
                    }
                } else {
                    report.skipped.push(text(&path));
                }
            }
            Item::HardLink(path, e, first) => {
                archive
                    .hard_link(&path, &e, &first)
                    .map_err(|err| io(&path, err))?;
                report.files += u64::from(e.kind == Kind::File);
            }
            Item::Data(_) | Item::Hole(_) | Item::End => {
                return Err(io(
                    b"export",
                    std::io::Error::other("file data out of place"),
                ))
            }
        }
    }
    archive
        .finish()
        .map_err(|err| io(b"the archive's end", err))?;
    Ok(report)
}

/// One file's contents, as the reader sends them chunk by chunk.
struct ChunkReader<'a> {
    rx: &'a mut mpsc::Receiver<Item>,
    chunk: Vec<u8>,
    at: usize,
    /// Zeros of a hole still to hand out (before the next chunk).
    zeros: u64,
    /// Hand out the data only, holes left out (tar's sparse entries).
    skip_holes: bool,
    /// Bytes handed out so far.
    read: u64,
    /// What the tree says the file holds: more data is an error.
    size: u64,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() && self.zeros == 0 {
            match self.rx.blocking_recv() {
                Some(Item::Data(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Some(Item::Hole(length)) if self.skip_holes => self.read += length,
                Some(Item::Hole(length)) => self.zeros = length,
                Some(Item::End) => {
                    // Put nothing back: End is consumed, the file is done.
                    self.chunk.clear();
                    self.at = 0;
                    return Ok(0);
                }
                // The reader failed (its error is reported) or is confused.
                _ => {
                    return Err(std::io::Error::other(
                        "reading stopped in the middle of a file",
                    ))
                }
            }
        }
        let n = if self.zeros > 0 {
            let n = buf
                .len()
                .min(usize::try_from(self.zeros).unwrap_or(usize::MAX));
            buf[..n].fill(0);
            self.zeros -= n as u64;
            n
        } else {
            let n = buf.len().min(self.chunk.len() - self.at);
            buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
            self.at += n;
            n
        };
        self.read += n as u64;
        if self.read > self.size {
            return Err(std::io::Error::other(
                "the chunks hold more than the file's size",
            ));
        }
        Ok(n)
    }
}

/// Seconds since the epoch of an entry's mtime.
fn mtime_secs(e: &Entry) -> i64 {
    e.mtime_ns.div_euclid(1_000_000_000)
}

struct ZipOut<W: Write + Seek> {
    zip: zip::ZipWriter<W>,
    method: zip::CompressionMethod,
}

impl<W: Write + Seek> ZipOut<W> {
    fn new(zip: zip::ZipWriter<W>, deflate: bool) -> Self {
        Self {
            zip,
            method: if deflate {
                zip::CompressionMethod::Deflated
            } else {
                zip::CompressionMethod::Stored
            },
        }
    }

    fn options(&self, e: &Entry) -> std::io::Result<zip::write::FullFileOptions<'static>> {
        let secs = mtime_secs(e);
        let dos = time::OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .and_then(|t| zip::DateTime::try_from(t).ok())
            .unwrap_or_default();
        let mut opts = zip::write::FullFileOptions::default()
            .compression_method(self.method)
            .unix_permissions(e.mode)
            .last_modified_time(dos)
            .large_file(e.size >= u64::from(u32::MAX));
        // Info-ZIP's extended timestamp (0x5455): the exact UTC mtime, which
        // `unzip` restores (DOS time has no zone and 2 s steps).
        if let Ok(secs) = i32::try_from(secs) {
            let mut ut = vec![1u8];
            ut.extend_from_slice(&secs.to_le_bytes());
            opts.add_extra_data(0x5455, ut, false)
                .map_err(std::io::Error::other)?;
        }
        Ok(opts)
    }
}

impl<W: Write + Seek> Archive for ZipOut<W> {
    fn dir(&mut self, path: &[u8], e: &Entry) -> std::io::Result<()> {
        let opts = self.options(e)?;
        self.zip
            .add_directory(format!("{}/", text(path)), opts)
            .map_err(std::io::Error::other)
    }

    fn file(&mut self, path: &[u8], e: &Entry, data: &mut dyn Read) -> std::io::Result<()> {
        let opts = self.options(e)?;
        self.zip
            .start_file(text(path), opts)
            .map_err(std::io::Error::other)?;
        std::io::copy(data, &mut self.zip)?;
        Ok(())
    }

    fn other(&mut self, path: &[u8], e: &Entry) -> std::io::Result<bool> {
        if e.kind != Kind::Symlink {
            return Ok(false);
        }
        let target = String::from_utf8_lossy(e.target.as_deref().unwrap_or_default()).into_owned();
        let opts = self.options(e)?;
        self.zip
            .add_symlink(text(path), target, opts)
            .map_err(std::io::Error::other)?;
        Ok(true)
    }

    fn hard_link(&mut self, path: &[u8], _: &Entry, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other(format!(
            "{}: zip has no hard links",
            text(path)
        )))
    }

    fn finish(self: Box<Self>) -> std::io::Result<()> {
        let mut out = self.zip.finish().map_err(std::io::Error::other)?;
        out.flush()
    }
}

/// Raw name bytes as a path (tar stores bytes as they are).
fn raw(bytes: &[u8]) -> &std::path::Path {
    std::path::Path::new(std::ffi::OsStr::from_bytes(bytes))
}

struct TarOut<W: Write>(tar::Builder<W>);

impl<W: Write> TarOut<W> {
    fn header(e: &Entry, kind: tar::EntryType, size: u64) -> tar::Header {
        Self::header_in(tar::Header::new_gnu(), e, kind, size)
    }

    fn header_in(mut h: tar::Header, e: &Entry, kind: tar::EntryType, size: u64) -> tar::Header {
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(e.mode);
        h.set_uid(u64::from(e.uid));
        h.set_gid(u64::from(e.gid));
        h.set_mtime(u64::try_from(mtime_secs(e)).unwrap_or(0));
        if let Some(user) = &e.user {
            let _ = h.set_username(user);
        }
        if let Some(group) = &e.group {
            let _ = h.set_groupname(group);
        }
        h
    }
}

impl<W: Write> TarOut<W> {
    /// The entry's PAX records (extended attributes and ACLs), then more.
    fn pax(&mut self, e: &Entry, more: Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        let mut records = tar_pax::xattr_records(&e.xattrs);
        records.extend(more);
        self.0.append_pax_extensions(
            records
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_slice())),
        )
    }
}

impl<W: Write> Archive for TarOut<W> {
    fn dir(&mut self, path: &[u8], e: &Entry) -> std::io::Result<()> {
        self.pax(e, Vec::new())?;
        let mut h = Self::header(e, tar::EntryType::Directory, 0);
        self.0.append_data(&mut h, raw(path), std::io::empty())
    }

    fn file(&mut self, path: &[u8], e: &Entry, data: &mut dyn Read) -> std::io::Result<()> {
        if e.holes.is_empty() {
            self.pax(e, Vec::new())?;
            let mut h = Self::header(e, tar::EntryType::Regular, e.size);
            return self.0.append_data(&mut h, raw(path), data);
        }
        // PAX sparse 1.0: the data regions' map, then the data alone.
        let sparse = tar_pax::Sparse::of(e, path);
        self.pax(e, sparse.records)?;
        let size = sparse.map.len() as u64 + e.data_bytes();
        // A POSIX header: GNU tar reads the sparse records only with one.
        let mut h = Self::header_in(tar::Header::new_ustar(), e, tar::EntryType::Regular, size);
        let mut body = std::io::Cursor::new(sparse.map).chain(data);
        self.0
            .append_data(&mut h, raw(&sparse.member_name), &mut body)
    }

    fn hard_link(&mut self, path: &[u8], e: &Entry, first: &[u8]) -> std::io::Result<()> {
        let mut h = Self::header(e, tar::EntryType::Link, 0);
        self.0.append_link(&mut h, raw(path), raw(first))
    }

    fn other(&mut self, path: &[u8], e: &Entry) -> std::io::Result<bool> {
        let path = raw(path);
        let kind = match e.kind {
            Kind::Symlink => tar::EntryType::Symlink,
            Kind::Fifo => tar::EntryType::Fifo,
            Kind::Char => tar::EntryType::Char,
            Kind::Block => tar::EntryType::Block,
            Kind::Socket | Kind::File | Kind::Dir => return Ok(false),
        };
        self.pax(e, Vec::new())?;
        let mut h = Self::header(e, kind, 0);
        if let Some(target) = &e.target {
            self.0.append_link(&mut h, path, raw(target))?;
            return Ok(true);
        }
        if let Some(rdev) = e.rdev {
            h.set_device_major(libc::major(rdev))?;
            h.set_device_minor(libc::minor(rdev))?;
        }
        self.0.append_data(&mut h, path, std::io::empty())?;
        Ok(true)
    }

    fn finish(self: Box<Self>) -> std::io::Result<()> {
        self.0.into_inner()?.flush()
    }
}
