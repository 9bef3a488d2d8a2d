//! S3 bucket sources: the `/s3` directory, a directory per bucket with the
//! tree of its keys in it (`crate::bucket` makes the tree and fetches the
//! objects ahead, in walk order). An object the state knows unchanged
//! (same size, `LastModified` and ETag) is not fetched again.

use super::file_entry::{Came, ReadFile};
use super::{Scanner, Source, Walker};
use crate::bucket::{self, Bucket, Fetcher, Item, KeyDir};
use crate::pipeline::PendingEntry;
use crate::state::FileRecord;
use crate::BackupError;
use coffer_core::backend::s3::source::{ObjectHeaders, SourceObject};
use coffer_core::format::tree::{Entry, Kind, Xattr};
use coffer_core::sync::lock;
use std::path::Path;

/// The directory of the root that holds the bucket sources.
pub(crate) const BUCKETS_DIR: &str = "s3";

/// The listed buckets of a run, stored under `/s3`.
pub(crate) struct Buckets {
    buckets: Vec<Bucket>,
}

impl Buckets {
    pub fn new(buckets: Vec<Bucket>) -> Self {
        Self { buckets }
    }

    /// A directory of a bucket's keys, with everything below it.
    fn key_dir_entry(
        &self,
        w: &mut Walker<'_>,
        b: &Bucket,
        fetcher: &mut Fetcher,
        name: Vec<u8>,
        dir: &KeyDir,
    ) -> Result<PendingEntry, BackupError> {
        let mut entries = Vec::new();
        for (name, item) in dir.items() {
            match item {
                Item::Dir(sub) => {
                    entries.push(self.key_dir_entry(w, b, fetcher, name.to_vec(), sub)?)
                }
                Item::File(i) => {
                    entries.extend(object(w, b, fetcher, name.to_vec(), &b.objects[i])?)
                }
            }
        }
        w.stats.dirs += 1;
        Ok(PendingEntry {
            entry: synthetic(w, name, Kind::Dir, dir.mtime_ns),
            chunks: Vec::new(),
            subtree: Some(w.pipe.store_dir(entries)?),
            record: None,
        })
    }
}

impl Source for Buckets {
    fn scanner(&self) -> Option<Scanner> {
        let total: u64 = (self.buckets.iter())
            .flat_map(|b| &b.objects)
            .map(|o| o.size)
            .sum();
        Some(Box::new(move |progress| progress.add_total(total)))
    }

    /// The `/s3` directory.
    fn root_entries(&mut self, w: &mut Walker<'_>) -> Result<Vec<PendingEntry>, BackupError> {
        let mut entries = Vec::new();
        let mut newest = 0;
        for b in &self.buckets {
            let mut left_out = Vec::new();
            let tree = bucket::key_tree(&b.objects, |key, why| {
                left_out.push(format!("{}: {why}", b.source.url_of(&key)));
            });
            w.stats.errors += left_out.len() as u64;
            w.warnings.extend(left_out);
            let mut order = Vec::new();
            tree.objects_in_walk_order(&mut order);
            let mut to_read = Vec::new();
            for &i in &order {
                if known_object(w, b, &b.objects[i])?.is_none() {
                    to_read.push(b.objects[i].clone());
                }
            }
            let mut fetcher = Fetcher::new(b.source.clone(), w.pipe.shared.rt.clone(), to_read);
            newest = newest.max(tree.mtime_ns);
            let name = b.source.bucket().as_bytes().to_vec();
            entries.push(self.key_dir_entry(w, b, &mut fetcher, name, &tree)?);
        }
        let entry = synthetic(w, BUCKETS_DIR.as_bytes().to_vec(), Kind::Dir, newest);
        w.stats.dirs += 1;
        Ok(vec![PendingEntry {
            entry,
            chunks: Vec::new(),
            subtree: Some(w.pipe.store_dir(entries)?),
            record: None,
        }])
    }
}

/// An entry the walk makes up (for `/s3` and what is below it): owned by
/// the user running the backup, 0755 for a directory, 0644 else.
fn synthetic(w: &mut Walker<'_>, name: Vec<u8>, kind: Kind, mtime_ns: i64) -> Entry {
    let (uid, gid) = (coffer_core::user::uid(), coffer_core::user::gid());
    let mode = if kind == Kind::Dir { 0o755 } else { 0o644 };
    w.entry(name, kind, mode, uid, gid, mtime_ns)
}

/// What the state holds of `obj`, if it is the object stored then (same
/// size, `LastModified` and ETag) and not yet due.
fn known_object(
    w: &Walker<'_>,
    b: &Bucket,
    obj: &SourceObject,
) -> Result<Option<FileRecord>, BackupError> {
    let shared = &w.pipe.shared;
    let url = b.source.url_of(&obj.key);
    Ok(lock(&shared.state).file(url.as_bytes())?.filter(|r| {
        r.size == obj.size
            && r.mtime_ns == obj.modified_ns
            && r.ctime_ns == 0
            && r.inode == bucket::etag_identity(&obj.etag)
            && shared.horizon.reusable(r.due)
    }))
}

/// One object: reused as the state knows it, or read from the bucket (the
/// fetcher's next reader: objects are asked for in walk order). `None`
/// when it could not be read (a warning says why).
fn object(
    w: &mut Walker<'_>,
    b: &Bucket,
    fetcher: &mut Fetcher,
    name: Vec<u8>,
    obj: &SourceObject,
) -> Result<Option<PendingEntry>, BackupError> {
    let url = b.source.url_of(&obj.key);
    let mut entry = synthetic(w, name, Kind::File, obj.modified_ns);
    entry.size = obj.size;
    if let Some(mut rec) = known_object(w, b, obj)? {
        if w.xattrs {
            entry.xattrs = w.storable_xattrs(Path::new(&url), std::mem::take(&mut rec.xattrs));
        }
        return Ok(Some(w.file_entry(
            entry,
            ReadFile::known(rec),
            Came::Reused,
        )));
    }
    let mut reader = fetcher
        .next()
        .ok_or_else(|| BackupError::Pipeline(format!("no reader for {url}")))?;
    let xattrs = match reader.headers() {
        Ok(headers) => w.storable_xattrs(Path::new(&url), object_xattrs(&obj.etag, &headers)),
        Err(e) => {
            w.warn(Path::new(&url), "cannot read", &e);
            return Ok(None);
        }
    };
    let read = match w.read_chunks(reader, Some(obj.size)) {
        Ok(read) => read,
        Err(BackupError::Source { source, .. }) => {
            w.warn(Path::new(&url), "cannot read", &source);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if w.xattrs {
        entry.xattrs = xattrs.clone();
    }
    let record = FileRecord {
        size: read.size,
        mtime_ns: obj.modified_ns,
        ctime_ns: 0,
        inode: bucket::etag_identity(&obj.etag),
        chunks: Vec::new(),
        holes: Vec::new(),
        due: read.due,
        xattrs,
    };
    let record = Some((url.into_bytes(), record));
    Ok(Some(w.file_entry(entry, read, Came::Read(record))))
}

/// An object's ETag (unquoted) and headers as `user.s3.*` attributes,
/// sorted by name.
fn object_xattrs(etag: &str, headers: &ObjectHeaders) -> Vec<Xattr> {
    let mut xattrs: Vec<Xattr> = std::iter::once(("etag", etag.trim_matches('"')))
        .chain(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .map(|(name, value)| Xattr {
            name: format!("user.s3.{name}").into_bytes(),
            value: value.as_bytes().to_vec(),
        })
        .collect();
    xattrs.sort_by(|a, b| a.name.cmp(&b.name));
    xattrs.dedup_by(|a, b| a.name == b.name);
    xattrs
}
