//! A stream source: standard input (`backup --stdin NAME`) stored as one
//! file in an otherwise empty root, owned by the user running the backup.

use super::file_entry::Came;
use super::{Scanner, Source, Walker};
use crate::pipeline::PendingEntry;
use crate::BackupError;
use coffer_core::format::tree::Kind;
use std::io::Read;
use std::path::PathBuf;

/// One stream, stored as the file `name`.
pub(crate) struct Stream<R> {
    name: String,
    input: R,
}

impl<R: Read> Stream<R> {
    pub fn new(name: &str, input: R) -> Self {
        Self {
            name: name.to_string(),
            input,
        }
    }
}

impl<R: Read> Source for Stream<R> {
    /// A stream's length is known once it ends.
    fn scanner(&self) -> Option<Scanner> {
        None
    }

    fn root_entries(&mut self, w: &mut Walker<'_>) -> Result<Vec<PendingEntry>, BackupError> {
        let (uid, gid) = (coffer_core::user::uid(), coffer_core::user::gid());
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
        let entry = w.entry(
            self.name.as_bytes().to_vec(),
            Kind::File,
            0o600,
            uid,
            gid,
            now,
        );
        // Unlike a file that cannot be read, a stream that cannot be read
        // fails the run: it is all there is.
        let read = w.read_chunks(&mut self.input, None).map_err(|e| match e {
            BackupError::Source { source, .. } => BackupError::Source {
                path: PathBuf::from(&self.name),
                source,
            },
            e => e,
        })?;
        Ok(vec![w.file_entry(entry, read, Came::Read(None))])
    }
}
