//! A file's entry, whatever the source: its content chunked into the
//! pipeline (all of it, or a sparse file's data ranges), or reused (known
//! to the state, or another name of a file this run read); and the one
//! place files are counted.

use super::Walker;
use crate::pipeline::{PendingEntry, Ref};
use crate::sparse;
use crate::state::FileRecord;
use crate::BackupError;
use coffer_core::format::tree::{Entry, Hole};
use std::fs::Metadata;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// A file's content as read (or known from the state): its chunks and holes.
#[derive(Clone)]
pub(super) struct ReadFile {
    pub chunks: Vec<Ref>,
    /// Bytes of data read (holes left out; 0 when reused).
    pub data: u64,
    pub holes: Vec<Hole>,
    /// Its length: data and holes.
    pub size: u64,
    /// When the first of its known chunks comes due (`i64::MAX` if none:
    /// the new ones' due times come with their locations).
    pub due: i64,
}

impl ReadFile {
    /// What the state remembers of an unchanged file: nothing to read.
    pub fn known(rec: FileRecord) -> Self {
        ReadFile {
            chunks: rec.chunks.into_iter().map(Ref::Known).collect(),
            data: 0,
            holes: rec.holes,
            size: rec.size,
            due: rec.due,
        }
    }
}

/// How a file's content came to the walk.
pub(super) enum Came {
    /// Read in this run, with what the state should remember of it (its
    /// key and record) unless it changed while it was read.
    Read(Option<(Vec<u8>, FileRecord)>),
    /// Not read: known to the state, or another name of a file this run read.
    Reused,
}

impl Walker<'_> {
    /// What this run read of another name of `entry`'s file (a hard link).
    pub(super) fn linked(&self, entry: &Entry) -> Option<ReadFile> {
        let link = entry.link?;
        self.links.get(&(link.dev, link.ino)).cloned()
    }

    /// A file's entry with what was read (or reused) of it, counted in the
    /// stats and the progress; a hard-linked file is remembered for its
    /// other names.
    pub(super) fn file_entry(
        &mut self,
        mut entry: Entry,
        read: ReadFile,
        came: Came,
    ) -> PendingEntry {
        let progress = &self.pipe.shared.progress;
        self.stats.files += 1;
        self.stats.bytes += read.size;
        let record = match came {
            Came::Read(record) => {
                self.stats.files_read += 1;
                self.stats.bytes_read += read.data;
                record
            }
            Came::Reused => {
                progress.add_bytes(read.size);
                None
            }
        };
        progress.file_done();
        entry.size = read.size;
        entry.holes = read.holes.clone();
        if let Some(link) = entry.link {
            self.links
                .entry((link.dev, link.ino))
                .or_insert_with(|| read.clone());
        }
        PendingEntry {
            entry,
            chunks: read.chunks,
            subtree: None,
            record,
        }
    }

    /// Reads an open source file into chunks: all of it, or for a sparse
    /// file only its data ranges (each chunked on its own, so a chunk never
    /// spans a hole), the holes between them noted.
    pub(super) fn read_file(
        &mut self,
        file: &std::fs::File,
        meta: &Metadata,
    ) -> Result<ReadFile, BackupError> {
        let source = |source| BackupError::Source {
            path: PathBuf::new(),
            source,
        };
        let Some(ranges) = sparse::data_ranges(file, meta.size(), meta.blocks()).map_err(source)?
        else {
            return self.read_chunks(file, Some(meta.size()));
        };
        let mut read = ReadFile {
            chunks: Vec::new(),
            data: 0,
            holes: Vec::new(),
            size: 0,
            due: i64::MAX,
        };
        let hole = |read: &mut ReadFile, upto: u64| {
            if upto > read.size {
                read.holes.push(Hole {
                    offset: read.size,
                    length: upto - read.size,
                });
                self.pipe.shared.progress.add_bytes(upto - read.size);
                read.size = upto;
            }
        };
        let mut whole = true;
        for &(start, end) in &ranges {
            hole(&mut read, start);
            let mut input = file;
            input.seek(SeekFrom::Start(start)).map_err(source)?;
            let want = end - start;
            let range = self.read_chunks(input.take(want), Some(want))?;
            read.chunks.extend(range.chunks);
            read.data += range.data;
            read.size += range.data;
            read.due = read.due.min(range.due);
            if range.data < want {
                whole = false; // it shrank while we read: it ends here
                break;
            }
        }
        if whole {
            hole(&mut read, meta.size());
        }
        Ok(read)
    }

    /// Chunks all of `input` into the pipeline (no holes).
    /// A read error is `BackupError::Source`; a pipeline error is fatal.
    pub(super) fn read_chunks(
        &mut self,
        input: impl Read,
        size_hint: Option<u64>,
    ) -> Result<ReadFile, BackupError> {
        let pipe = self.pipe;
        let mut chunks = Vec::new();
        let mut total = 0u64;
        let mut due = i64::MAX;
        let mut fatal = None;
        let read = self.chunker.chunk(input, size_hint, |data| {
            total += data.len() as u64;
            pipe.shared.progress.add_bytes(data.len() as u64);
            let id = pipe.shared.key.blob_id(&data);
            match pipe.store_chunk(id, data) {
                Ok((r, chunk_due)) => {
                    chunks.push(r);
                    due = due.min(chunk_due);
                    Ok(())
                }
                Err(e) => {
                    fatal = Some(e);
                    Err(std::io::Error::other("the backup pipeline failed"))
                }
            }
        });
        if let Some(e) = fatal {
            return Err(e);
        }
        read.map_err(|source| BackupError::Source {
            path: PathBuf::new(),
            source,
        })?;
        Ok(ReadFile {
            chunks,
            data: total,
            holes: Vec::new(),
            size: total,
            due,
        })
    }
}
