//! The writer's local state: a cache in SQLite, one file per repository.
//!
//! It remembers where every blob this host stored lives (so chunks are not
//! stored twice) and, for every backed-up path, its (size, mtime, ctime,
//! inode) and chunk locations (so an unchanged file is not read again). A
//! writer cannot read the repository, so this is all it knows; losing it
//! costs one slower run, never a wrong one.
//!
//! A blob is recorded, and committed, once its pack is stored
//! ([`State::checkpoint`]): an interrupted run leaves the blobs it stored
//! known, and the next run uploads only the rest. Blob ids are random, so a
//! table keyed by id takes each new blob on a random page: the blobs a run
//! stores are appended to `recent` instead (in store order: a pack's commit
//! writes a few pages), found through an in-memory map, and merged into
//! `blobs` in id order every [`MERGE_ROWS`] and when the run ends; lookups
//! of ids `blobs` cannot hold are answered by a Bloom filter
//! ([`BlobFilter`]) without reading it. A file's record waits in a
//! temporary table until the snapshot is stored ([`State::commit`]): its
//! chunks may be in packs still being uploaded, and a record must never
//! point at a pack that was not fully stored. A crash drops the temporary
//! table with the connection. One run at a time uses a state directory
//! ([`StateLock`], in `lock`); `rows` holds the row format of a file's
//! chunks.

mod lock;
mod rows;

pub(crate) use lock::StateLock;

use crate::bloom::{id_head, BlobFilter};
use coffer_core::format::id::{BlobId, PackId};
use coffer_core::format::tree::{Hole, Location, Xattr};
use rows::{decode_chunks, encode_chunks};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const SCHEMA_VERSION: &str = "1";

/// SQLite's page cache for the state, in KiB (its default is 2 MiB). Blob
/// ids are random, so every lookup and insert lands on a random page of the
/// blob table (~110 bytes a blob); once the table outgrows the cache, each
/// is a read of the OS's copy and each dirty page spilled is rewritten in
/// the WAL. At 1M files (a 366 MB state) 64 MiB took a first backup from
/// 74 to 45 s (system time 66 to 29 s), now ~x10 the 100k run's.
const STATE_CACHE_KIB: u32 = 64 * 1024;

/// Rows `recent` holds before they are merged into `blobs`. Its map costs
/// ~32 bytes a row (32 MiB at most); a merge rewrites every page of `blobs`
/// its ids land on, which past ~30M rows is all of them.
const MERGE_ROWS: usize = 1 << 20;

/// Lookups answered by `blobs` itself before the Bloom filter is built
/// from it, as a fraction of its rows: building reads every id once, which
/// costs about as much as that many lookups of random ones. A run that
/// looks up only its trees (nothing changed) never builds it.
const FILTER_AFTER_FRACTION: u64 = 64;

/// The WAL is cut back to this after a checkpoint: a merge writes much of
/// the blob table into it once, which need not stay on disk.
const WAL_KEEP_BYTES: u64 = 64 << 20;

/// Reads the ids `sql` yields into the filter's newest layer.
fn add_ids(conn: &Connection, sql: &str, filter: &mut BlobFilter) -> rusqlite::Result<()> {
    let mut st = conn.prepare(sql)?;
    let mut rows = st.query([])?;
    while let Some(row) = rows.next()? {
        let id = row.get_ref(0)?.as_blob()?;
        if let Ok(id) = <[u8; 32]>::try_from(id) {
            filter.insert(&BlobId(id));
        }
    }
    Ok(())
}

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
    /// When the first of its chunks comes due (see `horizon`): until
    /// then an unchanged file is not read again.
    pub due: i64,
    /// Attributes kept with the record: an S3 object's headers, which an
    /// unchanged object is not fetched for (empty for local files, whose
    /// attributes are read every run).
    pub xattrs: Vec<Xattr>,
}

/// The writer's state database.
///
/// Deadlines are kept as they were before the horizon was spread: a blob's
/// `uploaded_at` and a file's `oldest_upload` hold its due time minus H, the
/// upload time it is reused as, so the old rule (reuse while younger than H)
/// and the new one (reuse until due) read the same rows the same way.
pub struct State {
    conn: Connection,
    path: PathBuf,
    /// H, in seconds.
    horizon: i64,
    /// The rows of `recent` by the first 8 bytes of their blob id. Two ids
    /// alike in 8 bytes keep the later: the earlier is then not found, and
    /// stored again (a chance of 1 in 2^44 per merge of 2^20 rows).
    recent: HashMap<u64, i64>,
    /// Which ids `blobs` may hold, once built (see [`FILTER_AFTER_FRACTION`]).
    filter: Option<BlobFilter>,
    /// About how many rows `blobs` has (meta `blob_rows`; ids stored again
    /// count twice).
    blob_rows: u64,
    /// Lookups `blobs` answered while there was no filter.
    table_lookups: u64,
    /// [`MERGE_ROWS`], smaller in tests.
    merge_rows: usize,
}

/// A blob row's columns after its id: pack, offset, length, raw length,
/// uploaded_at.
type BlobRow = (Vec<u8>, i64, i64, i64, i64);

fn blob_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<BlobRow> {
    Ok((
        r.get(first)?,
        r.get(first + 1)?,
        r.get(first + 2)?,
        r.get(first + 3)?,
        r.get(first + 4)?,
    ))
}

impl State {
    /// Opens (or creates) the state at `path` for repository `repo_id`
    /// (with the key file's recipients where they are not config's:
    /// `WriterKey::state_scope`), whose dedup horizon is `horizon`
    /// seconds. A state of another schema version, repository or set of
    /// recipients is discarded.
    pub fn open(path: &Path, repo_id: &str, horizon: i64) -> Result<Self> {
        let err = |what: &str| {
            let what = what.to_string();
            let path = path.to_path_buf();
            move |source| StateError { path, what, source }
        };
        // Made 0600 before SQLite opens it (SQLite makes its -wal and -shm
        // files with the database's mode): it lists every backed-up path.
        let _ = coffer_core::private_dir::open_write(path); // if this fails, so does the open below
        let conn = Connection::open(path).map_err(err("opening"))?;
        // The run's file records (`temp.run_files`, a row per file walked)
        // go to a temporary file (SQLite puts it in SQLITE_TMPDIR, TMPDIR
        // or /var/tmp, unlinked at once), not to memory, where the bundled
        // SQLite keeps temporary tables by default: they grow with the
        // number of files.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=600000;
             PRAGMA cache_size=-{STATE_CACHE_KIB}; PRAGMA temp_store=FILE;
             PRAGMA journal_size_limit={WAL_KEEP_BYTES};
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        ))
        .map_err(err("setting up"))?;
        let mut state = Self {
            conn,
            path: path.to_path_buf(),
            horizon,
            recent: HashMap::new(),
            filter: None,
            blob_rows: 0,
            table_lookups: 0,
            merge_rows: MERGE_ROWS,
        };
        let version = state.meta("schema_version")?;
        let repo = state.meta("repo_id")?;
        if version.as_deref() != Some(SCHEMA_VERSION) || repo.as_deref() != Some(repo_id) {
            state
                .conn
                .execute_batch(
                    "DROP TABLE IF EXISTS blobs; DROP TABLE IF EXISTS files;
                     DROP TABLE IF EXISTS recent; DELETE FROM meta WHERE key = 'blob_rows';
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
        // Added after schema 1's first release: created where missing.
        state
            .conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS recent (seq INTEGER PRIMARY KEY, id BLOB NOT NULL,
                    pack BLOB NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
                    raw_length INTEGER NOT NULL, uploaded_at INTEGER NOT NULL);",
            )
            .map_err(err("creating tables"))?;
        state.blob_rows = match state.meta("blob_rows")? {
            Some(n) => n.parse().unwrap_or(0),
            // A state from before the count was kept: counted once.
            None => state
                .conn
                .query_row("SELECT count(*) FROM blobs", [], |r| r.get::<_, i64>(0))
                .map_err(state.err("counting blobs"))? as u64,
        };
        // What a killed run stored: merged now, so the map starts empty.
        state
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(state.err("starting a transaction"))?;
        state.merge_recent()?;
        state
            .conn
            .execute_batch("COMMIT")
            .map_err(state.err("committing merged blobs"))?;
        Ok(state)
    }

    /// Moves `recent`'s rows into `blobs` in id order (a later row of an id
    /// replaces an earlier one) and into the filter, if built. Runs inside
    /// the caller's transaction.
    fn merge_recent(&mut self) -> Result<()> {
        let started = Instant::now();
        let ids = self
            .conn
            .query_row("SELECT count(*) FROM recent", [], |r| r.get::<_, i64>(0))
            .map_err(self.err("counting recent blobs"))? as u64;
        if ids > 0 {
            self.conn
                .execute_batch(
                    "INSERT OR REPLACE INTO blobs (id, pack, offset, length, raw_length, uploaded_at)
                     SELECT id, pack, offset, length, raw_length, uploaded_at FROM recent
                     ORDER BY id, seq;",
                )
                .map_err(self.err("merging recent blobs"))?;
            let err = self.err("reading recent blob ids");
            if let Some(filter) = &mut self.filter {
                filter.add_layer(ids as usize);
                add_ids(&self.conn, "SELECT id FROM recent", filter).map_err(err)?;
            }
            self.conn
                .execute_batch("DELETE FROM recent")
                .map_err(self.err("emptying recent blobs"))?;
            tracing::debug!(
                rows = ids,
                table = self.blob_rows + ids,
                ms = started.elapsed().as_millis() as u64,
                "merged recent blobs"
            );
        }
        self.recent.clear();
        self.blob_rows += ids;
        let rows = self.blob_rows.to_string();
        self.set_meta("blob_rows", &rows)
    }

    /// Builds the filter from every id in `blobs`.
    fn build_filter(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut filter = BlobFilter::default();
        filter.add_layer(self.blob_rows as usize);
        add_ids(&self.conn, "SELECT id FROM blobs", &mut filter)
            .map_err(self.err("reading blob ids"))?;
        tracing::debug!(
            rows = self.blob_rows,
            bytes = filter.bytes(),
            ms = started.elapsed().as_millis() as u64,
            "built the blob filter"
        );
        self.filter = Some(filter);
        Ok(())
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

    /// Starts a run: its transaction, and an empty table for the records of
    /// the files it reads.
    pub fn begin(&self) -> Result<()> {
        self.conn
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS run_files (path BLOB PRIMARY KEY,
                    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                    ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,
                    chunks BLOB NOT NULL, oldest_upload INTEGER NOT NULL) WITHOUT ROWID;
                 DELETE FROM temp.run_files;
                 BEGIN IMMEDIATE",
            )
            .map_err(self.err("starting a transaction"))
    }

    /// Commits what is recorded so far (blobs of stored packs) and goes on in
    /// a new transaction; file records stay pending.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .execute_batch("COMMIT; BEGIN IMMEDIATE")
            .map_err(self.err("committing stored blobs"))
    }

    /// Ends a run whose snapshot is stored: its file records join the
    /// state, its blobs the table.
    pub fn commit(&mut self) -> Result<()> {
        self.conn
            .execute_batch(
                "INSERT OR REPLACE INTO main.files SELECT * FROM temp.run_files;
                 DELETE FROM temp.run_files;",
            )
            .map_err(self.err("committing"))?;
        self.merge_recent()?;
        self.conn
            .execute_batch("COMMIT")
            .map_err(self.err("committing"))
    }

    /// Ends a failed run: the blobs of the packs it stored stay known (the
    /// next run reuses them), its file records are dropped.
    pub fn end_failed(&self) {
        let _ = self
            .conn
            .execute_batch("DELETE FROM temp.run_files; COMMIT");
    }

    /// Where this host stored blob `id`, and when it comes due (Unix
    /// seconds; a blob past due is not reused, see `horizon`).
    pub fn blob(&mut self, id: &BlobId) -> Result<Option<(Location, i64)>> {
        if let Some(&seq) = self.recent.get(&id_head(id)) {
            let row = self
                .conn
                .prepare_cached(
                    "SELECT id, pack, offset, length, raw_length, uploaded_at FROM recent WHERE seq = ?1",
                )
                .and_then(|mut st| {
                    st.query_row([seq], |r| Ok((r.get::<_, Vec<u8>>(0)?, blob_row(r, 1)?)))
                        .optional()
                })
                .map_err(self.err("looking up a recent blob"))?;
            if let Some((found, row)) = row {
                if found[..] == id.0[..] {
                    return Ok(self.location(id, row));
                }
            }
        }
        if !self.table_may_hold(id)? {
            return Ok(None);
        }
        let row = self
            .conn
            .prepare_cached(
                "SELECT pack, offset, length, raw_length, uploaded_at FROM blobs WHERE id = ?1",
            )
            .and_then(|mut st| {
                st.query_row(params![&id.0[..]], |r| blob_row(r, 0))
                    .optional()
            })
            .map_err(self.err("looking up a blob"))?;
        Ok(row.and_then(|row| self.location(id, row)))
    }

    /// Whether `blobs` may hold `id`: the filter says, once built.
    fn table_may_hold(&mut self, id: &BlobId) -> Result<bool> {
        if self.filter.is_none() {
            self.table_lookups += 1;
            if self.table_lookups > self.blob_rows / FILTER_AFTER_FRACTION {
                self.build_filter()?;
            }
        }
        Ok(self.filter.as_ref().is_none_or(|f| f.may_contain(id)))
    }

    fn location(&self, id: &BlobId, row: BlobRow) -> Option<(Location, i64)> {
        let (pack, offset, length, raw_length, at) = row;
        Some((
            Location {
                id: *id,
                pack: PackId(pack.try_into().ok()?),
                offset: offset as u64,
                length: length as u64,
                raw_length: raw_length as u64,
            },
            at + self.horizon,
        ))
    }

    /// Records that the blob at `loc` is stored and comes due at `due`.
    pub fn add_blob(&mut self, loc: &Location, due: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO recent (id, pack, offset, length, raw_length, uploaded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    &loc.id.0[..],
                    &loc.pack.0[..],
                    loc.offset as i64,
                    loc.length as i64,
                    loc.raw_length as i64,
                    due - self.horizon
                ])
            })
            .map_err(self.err("recording a blob"))?;
        let seq = self.conn.last_insert_rowid();
        self.recent.insert(id_head(&loc.id), seq);
        if self.recent.len() >= self.merge_rows {
            self.merge_recent()?;
        }
        Ok(())
    }

    /// What an earlier, completed run stored for the file at `path`.
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
                let (chunks, holes, xattrs) = decode_chunks(&chunks)?;
                Some(FileRecord {
                    size: size as u64,
                    mtime_ns,
                    ctime_ns,
                    inode: inode as u64,
                    chunks,
                    holes,
                    due: oldest_upload + self.horizon,
                    xattrs,
                })
            }),
        )
    }

    /// Records a file's identity and chunks, for when the run completes.
    pub fn set_file(&self, path: &[u8], rec: &FileRecord) -> Result<()> {
        let chunks = encode_chunks(&rec.chunks, &rec.holes, &rec.xattrs);
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO temp.run_files (path, size, mtime_ns, ctime_ns, inode, chunks, oldest_upload)
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
                    rec.due - self.horizon
                ])
            })
            .map(|_| ())
            .map_err(self.err("recording a file"))
    }
}

#[cfg(test)]
mod tests {
    use super::rows::tests::{loc, sample};
    use super::rows::JsonChunks;
    use super::*;

    #[test]
    fn blobs_keep_their_due_time_and_a_failed_run_keeps_stored_blobs_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let mut s = State::open(&path, "repo", 100).unwrap();
        s.begin().unwrap();
        s.add_blob(&loc(1), 1000).unwrap();
        assert_eq!(s.blob(&loc(1).id).unwrap(), Some((loc(1), 1000)));
        s.commit().unwrap();
        // Kept as the upload time the old rule (reuse while younger than H)
        // reads the same way.
        let at: i64 = s
            .conn
            .query_row("SELECT uploaded_at FROM blobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(at, 900);
        s.begin().unwrap();
        s.add_blob(&loc(2), 1000).unwrap();
        s.set_file(b"/f", &record(2)).unwrap();
        s.end_failed();
        // A failed run's blobs were in stored packs: kept. Its files: not.
        assert!(s.blob(&loc(2).id).unwrap().is_some());
        assert!(s.file(b"/f").unwrap().is_none());
        assert!(s.blob(&loc(1).id).unwrap().is_some());
        drop(s);
        // Another repository id discards the state.
        let mut s = State::open(&path, "other", 100).unwrap();
        assert!(s.blob(&loc(1).id).unwrap().is_none());
    }

    fn record(n: u8) -> FileRecord {
        FileRecord {
            size: 30,
            mtime_ns: 5,
            ctime_ns: 6,
            inode: 7,
            chunks: vec![loc(n)],
            holes: Vec::new(),
            due: 8,
            xattrs: Vec::new(),
        }
    }

    /// JSON rows of earlier versions still read, and a damaged row reads as
    /// absent (the file is read again).
    #[test]
    fn chunk_lists_read_json_rows_and_refuse_damaged_ones() {
        let (chunks, holes) = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let s = State::open(&path, "repo", 100).unwrap();
        let insert = |name: &[u8], json: String| {
            s.conn
                .execute(
                    "INSERT INTO files VALUES (?1, 30, 5, 6, 7, ?2, -92)",
                    params![name, json.into_bytes()],
                )
                .unwrap();
        };
        insert(b"/plain", serde_json::to_string(&vec![loc(2)]).unwrap());
        insert(
            b"/sparse",
            serde_json::to_string(&JsonChunks::Sparse {
                chunks: chunks.clone(),
                holes: holes.clone(),
            })
            .unwrap(),
        );
        insert(b"/damaged", "[{\"id\":".to_string());
        assert_eq!(s.file(b"/plain").unwrap(), Some(record(2)));
        let sparse = s.file(b"/sparse").unwrap().unwrap();
        assert_eq!((sparse.chunks, sparse.holes), (chunks, holes));
        assert!(sparse.xattrs.is_empty());
        assert_eq!(s.file(b"/damaged").unwrap(), None);
    }

    /// What a killed run leaves is what another connection sees while it
    /// runs: the blobs of its checkpoints, none of its files.
    #[test]
    fn a_killed_run_leaves_the_blobs_of_its_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let mut s = State::open(&path, "repo", 100).unwrap();
        s.begin().unwrap();
        s.add_blob(&loc(1), 1000).unwrap();
        s.set_file(b"/f", &record(1)).unwrap();
        s.checkpoint().unwrap();
        s.add_blob(&loc(2), 1000).unwrap();
        let other = Connection::open(&path).unwrap();
        let count = |table: &str| -> i64 {
            other
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!((count("blobs"), count("recent"), count("files")), (0, 1, 0));
        s.commit().unwrap();
        assert_eq!((count("blobs"), count("recent"), count("files")), (2, 0, 1));
        assert_eq!(s.file(b"/f").unwrap(), Some(record(1)));
    }

    fn random_loc(n: u64) -> Location {
        let id = |salt: &str| *blake3::hash(format!("{salt}{n}").as_bytes()).as_bytes();
        Location {
            id: BlobId(id("blob")),
            pack: PackId(id("pack")),
            offset: n,
            length: 7,
            raw_length: 9,
        }
    }

    /// Blobs are found wherever they are: in `recent` (this run's), in
    /// `blobs` (merged every few rows here), behind the filter once built;
    /// an id stored again is found at its new place; a killed run's recent
    /// rows are merged when the state is opened next.
    #[test]
    fn blobs_are_found_across_merges_and_the_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let mut s = State::open(&path, "repo", 100).unwrap();
        s.merge_rows = 64;
        s.begin().unwrap();
        assert_eq!(s.blob(&random_loc(0).id).unwrap(), None);
        assert!(s.filter.is_some(), "an empty table builds it at once");
        for n in 0..1000 {
            s.add_blob(&random_loc(n), 5000).unwrap();
            if n % 100 == 0 {
                s.checkpoint().unwrap();
            }
        }
        assert_eq!(s.blob_rows, 960, "15 merges of 64");
        assert_eq!(s.recent.len(), 40);
        assert_eq!(s.filter.as_ref().map(|f| f.bytes()), Some(64 + 15 * 128));
        for n in 0..1000 {
            assert_eq!(
                s.blob(&random_loc(n).id).unwrap(),
                Some((random_loc(n), 5000))
            );
        }
        assert_eq!(s.blob(&random_loc(1000).id).unwrap(), None);
        // Stored again (past due): the new place wins, before and after the
        // merge.
        let again = Location {
            pack: random_loc(2000).pack,
            ..random_loc(5)
        };
        s.add_blob(&again, 9000).unwrap();
        assert_eq!(s.blob(&again.id).unwrap(), Some((again, 9000)));
        s.commit().unwrap();
        assert_eq!((s.blob_rows, s.recent.len()), (1001, 0));
        assert_eq!(s.blob(&again.id).unwrap(), Some((again, 9000)));
        let rows: i64 = s
            .conn
            .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1000);

        // A killed run: its committed recent rows are merged at the next
        // open; the row count is kept in meta.
        s.begin().unwrap();
        s.add_blob(&random_loc(3000), 5000).unwrap();
        s.checkpoint().unwrap();
        s.add_blob(&random_loc(3001), 5000).unwrap();
        drop(s);
        let mut s = State::open(&path, "repo", 100).unwrap();
        assert_eq!((s.blob_rows, s.recent.len()), (1002, 0));
        assert!(s.filter.is_none());
        // Lookups go to the table until there have been 1002/64 of them.
        for n in 0..15 {
            assert!(s.blob(&random_loc(n).id).unwrap().is_some());
        }
        assert!(s.filter.is_none());
        assert!(s.blob(&random_loc(3000).id).unwrap().is_some());
        assert!(s.filter.is_some());
        assert_eq!(s.blob(&random_loc(3001).id).unwrap(), None, "not committed");
        assert!((0..1000).all(|n| s.blob(&random_loc(n).id).unwrap().is_some()));
    }

    #[test]
    fn file_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("s"), "r", 100).unwrap();
        let rec = record(3);
        s.begin().unwrap();
        s.set_file(b"/a/\xffb", &rec).unwrap();
        s.commit().unwrap();
        s.begin().unwrap();
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
        let object = FileRecord {
            ctime_ns: 0,
            xattrs: vec![Xattr {
                name: b"user.s3.etag".to_vec(),
                value: b"abc".to_vec(),
            }],
            ..record(4)
        };
        s.set_file(b"s3://bucket/key", &object).unwrap();
        s.commit().unwrap();
        assert_eq!(s.file(b"/sparse").unwrap(), Some(sparse));
        assert_eq!(s.file(b"s3://bucket/key").unwrap(), Some(object));
    }
}
