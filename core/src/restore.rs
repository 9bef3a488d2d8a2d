//! `restore`: recreate a snapshot (or a part of it) in a local directory.
//!
//! Everything is created below the target only: names come from verified
//! trees (single components, unique), directories are made by restore itself
//! and files are opened with `O_EXCL | O_NOFOLLOW`, so nothing a snapshot
//! holds can make restore write elsewhere. Directory metadata is applied after
//! the directory's contents, so mtimes survive.

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{Entry, Kind};
use std::ffi::{CString, OsStr};
use std::future::Future;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures_util::StreamExt;

/// Blobs fetched ahead of the file being written (at most 8 MiB each).
const FETCH_AHEAD: usize = 8;

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The directory to restore into (created if missing).
    pub target: PathBuf,
    /// Restore into a non-empty target, replacing what is in the way.
    pub overwrite: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreStats {
    /// Regular files written.
    pub files: u64,
    /// Directories made.
    pub dirs: u64,
    /// Symlinks and special files made.
    pub others: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries restored incompletely (e.g. a device node without root), each
    /// with the path and the reason.
    pub warnings: Vec<String>,
}

/// Restores `path` of `snapshot` into `opts.target`. A directory's contents
/// go into the target; a single file or link goes into it under its name.
pub async fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    path: &str,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    let entry = repo.resolve(snapshot, path).await?;
    prepare_target(&opts.target, opts.overwrite)?;
    let mut r = Restorer {
        repo,
        overwrite: opts.overwrite,
        is_root: unsafe { libc::geteuid() } == 0,
        stats: RestoreStats::default(),
    };
    let is_snapshot_root = path.split('/').all(|p| p.is_empty() || p == ".");
    if entry.kind == Kind::Dir {
        r.restore_children(&entry, &opts.target).await?;
        if !is_snapshot_root {
            r.apply_metadata(&entry, &opts.target)?;
        }
    } else {
        let dest = opts.target.join(OsStr::from_bytes(&entry.name));
        r.restore_entry(&entry, &dest).await?;
    }
    Ok(r.stats)
}

fn prepare_target(target: &Path, overwrite: bool) -> Result<()> {
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() && !overwrite {
                return Err(Error::Path(format!(
                    "target {} is not empty; choose an empty directory or pass --overwrite",
                    target.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(target)
            .map_err(|e| Error::io(target, "creating the restore target", e)),
        Err(e) => Err(Error::io(target, "opening the restore target", e)),
    }
}

struct Restorer<'a> {
    repo: &'a Repository,
    overwrite: bool,
    is_root: bool,
    stats: RestoreStats,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

impl Restorer<'_> {
    /// Restores the contents of directory `dir` into `path`: first what
    /// needs no data (subdirectories made, links, special files), then the
    /// files' contents, fetched several blobs at once, then each
    /// subdirectory, depth first.
    fn restore_children<'s>(
        &'s mut self,
        dir: &'s Entry,
        path: &'s Path,
    ) -> BoxFuture<'s, Result<()>> {
        Box::pin(async move {
            let Some(loc) = dir.subtree else {
                return Ok(());
            };
            let tree = self.repo.read_tree(&loc).await?;
            let mut files = Vec::new();
            let mut dirs = Vec::new();
            for child in &tree.entries {
                let dest = path.join(OsStr::from_bytes(&child.name));
                self.clear_way(child, &dest)?;
                match child.kind {
                    Kind::File => files.push((child, dest)),
                    Kind::Dir => {
                        self.make_dir(&dest)?;
                        dirs.push((child, dest));
                    }
                    _ => self.restore_other(child, &dest)?,
                }
            }
            self.write_files(&files).await?;
            for (child, dest) in dirs {
                self.restore_children(child, &dest).await?;
                self.apply_metadata(child, &dest)?;
            }
            Ok(())
        })
    }

    /// Restores one entry (the top of what was asked for) at `dest`.
    async fn restore_entry(&mut self, entry: &Entry, dest: &Path) -> Result<()> {
        self.clear_way(entry, dest)?;
        match entry.kind {
            Kind::Dir => {
                self.make_dir(dest)?;
                self.restore_children(entry, dest).await?;
                self.apply_metadata(entry, dest)
            }
            Kind::File => self.write_files(&[(entry, dest.to_path_buf())]).await,
            _ => self.restore_other(entry, dest),
        }
    }

    fn make_dir(&mut self, dest: &Path) -> Result<()> {
        if !dest.is_dir() {
            std::fs::create_dir(dest).map_err(|e| Error::io(dest, "creating a directory", e))?;
        }
        self.stats.dirs += 1;
        Ok(())
    }

    /// A symlink or special file, with its metadata.
    fn restore_other(&mut self, entry: &Entry, dest: &Path) -> Result<()> {
        if entry.kind == Kind::Symlink {
            let target = entry.target.as_deref().unwrap_or_default();
            std::os::unix::fs::symlink(OsStr::from_bytes(target), dest)
                .map_err(|e| Error::io(dest, "creating a symlink", e))?;
        } else if let Err(e) = make_node(entry, dest) {
            self.stats
                .warnings
                .push(format!("{}: not restored: {e}", dest.display()));
            return Ok(());
        }
        self.stats.others += 1;
        self.apply_metadata(entry, dest)
    }

    /// With --overwrite, removes whatever stands where `entry` goes (but keeps
    /// an existing real directory for a directory entry).
    fn clear_way(&self, entry: &Entry, dest: &Path) -> Result<()> {
        let Ok(meta) = std::fs::symlink_metadata(dest) else {
            return Ok(());
        };
        if !self.overwrite {
            return Err(Error::Path(format!(
                "{} already exists; pass --overwrite to replace it",
                dest.display()
            )));
        }
        if meta.is_dir() {
            if entry.kind == Kind::Dir {
                return Ok(());
            }
            std::fs::remove_dir_all(dest)
        } else {
            std::fs::remove_file(dest)
        }
        .map_err(|e| Error::io(dest, "removing what is in the way (--overwrite)", e))
    }

    /// Writes `files` (each created new) with their metadata. Their blobs
    /// are fetched in order, [`FETCH_AHEAD`] at a time, across file
    /// boundaries: many small files cost one round trip's latency, not one
    /// each.
    async fn write_files(&mut self, files: &[(&Entry, PathBuf)]) -> Result<()> {
        let repo = self.repo;
        let chunks = files.iter().flat_map(|(e, _)| e.chunks.iter());
        let mut fetched = futures_util::stream::iter(chunks)
            .map(|loc| repo.fetch_blob(loc))
            .buffered(FETCH_AHEAD);
        for (entry, dest) in files {
            let at = |e: Error| Error::At {
                path: dest.display().to_string(),
                source: Box::new(e),
            };
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(dest)
                .map_err(|e| Error::io(dest, "creating a file", e))?;
            for chunk in &entry.chunks {
                let stored = fetched
                    .next()
                    .await
                    .ok_or_else(|| Error::Path("restore: a fetched blob went missing".into()))?
                    .map_err(at)?;
                let data = repo.decode_blob(chunk, &stored).map_err(at)?;
                file.write_all(&data)
                    .map_err(|e| Error::io(dest, "writing a file", e))?;
                self.stats.bytes += data.len() as u64;
            }
            drop(file);
            self.stats.files += 1;
            self.apply_metadata(entry, dest)?;
        }
        Ok(())
    }

    fn apply_metadata(&mut self, entry: &Entry, dest: &Path) -> Result<()> {
        let c = cpath(dest)?;
        if self.is_root {
            // SAFETY: `c` is a valid NUL-terminated path.
            if unsafe { libc::lchown(c.as_ptr(), entry.uid, entry.gid) } != 0 {
                self.stats.warnings.push(format!(
                    "{}: cannot set owner: {}",
                    dest.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
        if entry.kind != Kind::Symlink {
            // SAFETY: as above.
            if unsafe { libc::chmod(c.as_ptr(), (entry.mode & 0o7777) as libc::mode_t) } != 0 {
                return Err(Error::io(
                    dest,
                    "setting the mode",
                    std::io::Error::last_os_error(),
                ));
            }
        }
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: entry.mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
                tv_nsec: entry.mtime_ns.rem_euclid(1_000_000_000) as libc::c_long,
            },
        ];
        // SAFETY: valid path and a two-element timespec array.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(Error::io(
                dest,
                "setting the mtime",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Path(format!("{}: path contains a NUL byte", path.display())))
}

fn make_node(entry: &Entry, dest: &Path) -> std::io::Result<()> {
    let kind = match entry.kind {
        Kind::Fifo => libc::S_IFIFO,
        Kind::Char => libc::S_IFCHR,
        Kind::Block => libc::S_IFBLK,
        _ => libc::S_IFSOCK,
    };
    let c = CString::new(dest.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    let mode = kind | (entry.mode & 0o7777) as libc::mode_t;
    // SAFETY: valid path; mknod has no other preconditions.
    if unsafe { libc::mknod(c.as_ptr(), mode, entry.rdev.unwrap_or(0) as libc::dev_t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
