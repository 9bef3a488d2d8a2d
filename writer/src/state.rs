//! The writer's local state: a cache in SQLite, one file per repository.
//!
//! It remembers where every blob this host stored lives (so chunks are not
//! stored twice) and, for every backed-up path, its (size, mtime, ctime,
//! inode) and chunk locations (so an unchanged file is not read again). A
//! writer cannot read the repository, so this is all it knows; losing it
//! costs one slower run, never a wrong one.
//!
//! A run holds one transaction ([`State::begin`]) that is committed only when
//! the snapshot is stored: a crash or an error rolls back, so the state never
//! points at a pack that was not fully stored.

use coffer_core::format::id::{BlobId, PackId};
use coffer_core::format::tree::{Hole, Location};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};

const SCHEMA_VERSION: &str = "1";

/// Errors of the state database.
#[derive(Debug, thiserror::Error)]
#[error("writer state {path}: {what}")]
pub struct StateError {
    path: PathBuf,
    what: String,
    #[source]
    source: rusqlite::Error,
}

type Result<T> = std::result::Result<T, StateError>;

/// What the state knows about a file from an earlier run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns.
    pub mtime_ns: i64,
    /// Status change time, ns.
    pub ctime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Where its chunks are.
    pub chunks: Vec<Location>,
    /// Its holes, for a sparse file.
    pub holes: Vec<Hole>,
    /// Upload time (Unix seconds) of its oldest chunk's pack.
    pub oldest_upload: i64,
}

/// A file's row keeps its chunks as JSON: a list of locations, as ever, or
/// for a sparse file the locations with its holes.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum StoredChunks {
    Plain(Vec<Location>),
    Sparse {
        chunks: Vec<Location>,
        holes: Vec<Hole>,
    },
}

/// The writer's state database.
pub struct State {
    conn: Connection,
    path: PathBuf,
}

impl State {
    /// Opens (or creates) the state at `path` for repository `repo_id`.
    /// A state of another schema version or repository is discarded.
    pub fn open(path: &Path, repo_id: &str) -> Result<Self> {
        let err = |what: &str| {
            let what = what.to_string();
            let path = path.to_path_buf();
            move |source| StateError { path, what, source }
        };
        let conn = Connection::open(path).map_err(err("opening"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=600000;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )
        .map_err(err("setting up"))?;
        let state = Self {
            conn,
            path: path.to_path_buf(),
        };
        let version = state.meta("schema_version")?;
        let repo = state.meta("repo_id")?;
        if version.as_deref() != Some(SCHEMA_VERSION) || repo.as_deref() != Some(repo_id) {
            state
                .conn
                .execute_batch(
                    "DROP TABLE IF EXISTS blobs; DROP TABLE IF EXISTS files;
                     CREATE TABLE blobs (id BLOB PRIMARY KEY, pack BLOB NOT NULL,
                        offset INTEGER NOT NULL, length INTEGER NOT NULL,
                        raw_length INTEGER NOT NULL, uploaded_at INTEGER NOT NULL) WITHOUT ROWID;
                     CREATE TABLE files (path BLOB PRIMARY KEY, size INTEGER NOT NULL,
                        mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
                        inode INTEGER NOT NULL, chunks BLOB NOT NULL,
                        oldest_upload INTEGER NOT NULL) WITHOUT ROWID;",
                )
                .map_err(err("creating tables"))?;
            state.set_meta("schema_version", SCHEMA_VERSION)?;
            state.set_meta("repo_id", repo_id)?;
        }
        Ok(state)
    }

    fn err(&self, what: &str) -> impl FnOnce(rusqlite::Error) -> StateError {
        let what = what.to_string();
        let path = self.path.clone();
        move |source| StateError { path, what, source }
    }

    fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.err("reading meta"))
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map(|_| ())
            .map_err(self.err("writing meta"))
    }

    /// Starts the run's transaction.
    pub fn begin(&self) -> Result<()> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(self.err("starting a transaction"))
    }

    /// Commits the run's transaction.
    pub fn commit(&self) -> Result<()> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(self.err("committing"))
    }

    /// Rolls the run's transaction back (after a failed run).
    pub fn rollback(&self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    /// Where blob `id` is stored, if its pack was uploaded at or after
    /// `not_before` (Unix seconds): older blobs are beyond the dedup horizon.
    pub fn blob(&self, id: &BlobId, not_before: i64) -> Result<Option<(Location, i64)>> {
        self.conn
            .prepare_cached(
                "SELECT pack, offset, length, raw_length, uploaded_at FROM blobs
                 WHERE id = ?1 AND uploaded_at >= ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![&id.0[..], not_before], |r| {
                    let pack: Vec<u8> = r.get(0)?;
                    Ok((
                        pack,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .optional()
            })
            .map_err(self.err("looking up a blob"))
            .map(|row| {
                row.and_then(|(pack, offset, length, raw_length, at)| {
                    Some((
                        Location {
                            id: *id,
                            pack: PackId(pack.try_into().ok()?),
                            offset: offset as u64,
                            length: length as u64,
                            raw_length: raw_length as u64,
                        },
                        at,
                    ))
                })
            })
    }

    /// Records that the blob at `loc` was stored at `uploaded_at`.
    pub fn add_blob(&self, loc: &Location, uploaded_at: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO blobs (id, pack, offset, length, raw_length, uploaded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    &loc.id.0[..],
                    &loc.pack.0[..],
                    loc.offset as i64,
                    loc.length as i64,
                    loc.raw_length as i64,
                    uploaded_at
                ])
            })
            .map(|_| ())
            .map_err(self.err("recording a blob"))
    }

    /// What an earlier run stored for the file at `path`.
    pub fn file(&self, path: &[u8]) -> Result<Option<FileRecord>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT size, mtime_ns, ctime_ns, inode, chunks, oldest_upload FROM files WHERE path = ?1",
            )
            .and_then(|mut st| {
                st.query_row([path], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .optional()
            })
            .map_err(self.err("looking up a file"))?;
        Ok(
            row.and_then(|(size, mtime_ns, ctime_ns, inode, chunks, oldest_upload)| {
                // A row that does not parse is treated as absent: re-read.
                let (chunks, holes) = match serde_json::from_slice(&chunks).ok()? {
                    StoredChunks::Plain(chunks) => (chunks, Vec::new()),
                    StoredChunks::Sparse { chunks, holes } => (chunks, holes),
                };
                Some(FileRecord {
                    size: size as u64,
                    mtime_ns,
                    ctime_ns,
                    inode: inode as u64,
                    chunks,
                    holes,
                    oldest_upload,
                })
            }),
        )
    }

    /// Records a file's identity and chunks.
    pub fn set_file(&self, path: &[u8], rec: &FileRecord) -> Result<()> {
        let chunks = if rec.holes.is_empty() {
            serde_json::to_vec(&rec.chunks)
        } else {
            serde_json::to_vec(&StoredChunks::Sparse {
                chunks: rec.chunks.clone(),
                holes: rec.holes.clone(),
            })
        }
        .unwrap_or_default();
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, ctime_ns, inode, chunks, oldest_upload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    path,
                    rec.size as i64,
                    rec.mtime_ns,
                    rec.ctime_ns,
                    rec.inode as i64,
                    chunks,
                    rec.oldest_upload
                ])
            })
            .map(|_| ())
            .map_err(self.err("recording a file"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(n: u8) -> Location {
        Location {
            id: BlobId([n; 32]),
            pack: PackId([n + 1; 32]),
            offset: 10,
            length: 20,
            raw_length: 30,
        }
    }

    #[test]
    fn horizon_hides_old_blobs_and_rollback_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let s = State::open(&path, "repo").unwrap();
        s.begin().unwrap();
        s.add_blob(&loc(1), 1000).unwrap();
        assert_eq!(s.blob(&loc(1).id, 999).unwrap().unwrap().0, loc(1));
        assert!(s.blob(&loc(1).id, 1001).unwrap().is_none());
        s.commit().unwrap();
        s.begin().unwrap();
        s.add_blob(&loc(2), 1000).unwrap();
        s.rollback();
        assert!(s.blob(&loc(2).id, 0).unwrap().is_none());
        assert!(s.blob(&loc(1).id, 0).unwrap().is_some());
        drop(s);
        // Another repository id discards the state.
        let s = State::open(&path, "other").unwrap();
        assert!(s.blob(&loc(1).id, 0).unwrap().is_none());
    }

    #[test]
    fn file_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(&dir.path().join("s"), "r").unwrap();
        let rec = FileRecord {
            size: 30,
            mtime_ns: 5,
            ctime_ns: 6,
            inode: 7,
            chunks: vec![loc(3)],
            holes: Vec::new(),
            oldest_upload: 8,
        };
        s.set_file(b"/a/\xffb", &rec).unwrap();
        assert_eq!(s.file(b"/a/\xffb").unwrap(), Some(rec.clone()));
        assert_eq!(s.file(b"/a/b").unwrap(), None);
        let sparse = FileRecord {
            size: 4096 + 30,
            holes: vec![Hole {
                offset: 0,
                length: 4096,
            }],
            ..rec
        };
        s.set_file(b"/sparse", &sparse).unwrap();
        assert_eq!(s.file(b"/sparse").unwrap(), Some(sparse));
    }
}
