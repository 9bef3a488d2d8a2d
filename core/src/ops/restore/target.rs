//! Everything that touches the restore target: making it, clearing the way
//! (`--overwrite`), creating directories, files, links and nodes, and
//! applying metadata. All of restore's libc calls are here.
//!
//! Nothing is created outside the target: names come from verified trees
//! (single components), files are opened with `O_EXCL | O_NOFOLLOW`.

use super::RestoreStats;
use crate::error::{Error, Result};
use crate::format::tree::{Entry, Kind};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Makes the target if it is missing (unless this is a dry run); refuses
/// a non-empty one without `overwrite`.
pub(super) fn prepare_target(target: &Path, overwrite: bool, dry_run: bool) -> Result<()> {
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() && !overwrite {
                return Err(Error::Usage(format!(
                    "target {} is not empty; choose an empty directory, or pass --overwrite \
                     to restore over what is there (only files that differ are written)",
                    target.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dry_run => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(target)
            .map_err(|e| Error::io(target, "creating the restore target", e)),
        Err(e) => Err(Error::io(target, "opening the restore target", e)),
    }
}

/// With --overwrite, removes whatever stands where `entry` goes (but keeps
/// an existing real directory for a directory entry).
pub(super) fn clear_way(overwrite: bool, entry: &Entry, dest: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(dest) else {
        return Ok(());
    };
    if !overwrite {
        return Err(Error::Usage(format!(
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

/// Makes directory `dest` unless a real directory is already there.
pub(super) fn make_dir(dest: &Path) -> Result<()> {
    if !dest.is_dir() {
        std::fs::create_dir(dest).map_err(|e| Error::io(dest, "creating a directory", e))?;
    }
    Ok(())
}

/// A symlink at `dest` pointing to the entry's target.
pub(super) fn make_symlink(entry: &Entry, dest: &Path) -> Result<()> {
    let target = entry.target.as_deref().unwrap_or_default();
    std::os::unix::fs::symlink(OsStr::from_bytes(target), dest)
        .map_err(|e| Error::io(dest, "creating a symlink", e))
}

/// Creates a new regular file for writing (mode 0600 until its metadata is
/// applied); never follows a link, never opens an existing file.
pub(super) fn create_file(dest: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(dest)
        .map_err(|e| Error::io(dest, "creating a file", e))
}

/// Owner (as root), extended attributes, mode and mtime of `entry` on
/// `dest`, in that order: a change of owner clears file capabilities, and
/// the mode set after an ACL keeps its mask as it was. A refused owner or
/// attribute is a warning; a refused mode or mtime an error.
pub(super) fn apply_metadata(
    entry: &Entry,
    dest: &Path,
    is_root: bool,
    stats: &mut RestoreStats,
) -> Result<()> {
    let c = cpath(dest)?;
    let mut owner_restored = false;
    if is_root {
        // SAFETY: `c` is a valid NUL-terminated path.
        if unsafe { libc::lchown(c.as_ptr(), entry.uid, entry.gid) } != 0 {
            stats.warnings.push(format!(
                "{}: cannot set owner: {}",
                dest.display(),
                std::io::Error::last_os_error()
            ));
        } else {
            owner_restored = true;
        }
    }
    set_xattrs(entry, dest, &c, stats);
    if entry.kind != Kind::Symlink {
        let mode = mode_to_set(entry, owner_restored);
        if mode != entry.mode & 0o7777 {
            stats.setid_dropped += 1;
        }
        // SAFETY: as above.
        if unsafe { libc::chmod(c.as_ptr(), mode as libc::mode_t) } != 0 {
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

/// The permission bits to give `entry`: its own, but set-uid and set-gid
/// only where its owner was restored (as GNU tar does): otherwise the
/// file would run as whoever restored it, with bits the snapshot chose.
/// A directory keeps set-gid (it only makes new entries take its group).
pub(super) fn mode_to_set(entry: &Entry, owner_restored: bool) -> u32 {
    let mode = entry.mode & 0o7777;
    match (owner_restored, entry.kind) {
        (true, _) => mode,
        (false, Kind::Dir) => mode & !0o4000,
        (false, _) => mode & !0o6000,
    }
}

/// Sets each extended attribute of `entry` on `dest` (not following a
/// symlink). What the kernel refuses (capabilities or `trusted.` without
/// root) is a warning naming the file and the attribute; a target file
/// system without extended attributes is counted, and said once at the end.
fn set_xattrs(entry: &Entry, dest: &Path, c: &CString, stats: &mut RestoreStats) {
    for x in &entry.xattrs {
        let Ok(name) = CString::new(x.name.as_slice()) else {
            continue; // a verified tree holds no NUL in a name
        };
        // SAFETY: valid C strings and a value buffer of the given length.
        let rc = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                name.as_ptr(),
                x.value.as_ptr().cast(),
                x.value.len(),
                0,
            )
        };
        if rc == 0 {
            continue;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            stats.xattrs_unsupported += 1;
        } else {
            stats.warnings.push(format!(
                "{}: cannot set extended attribute {}: {e}",
                dest.display(),
                String::from_utf8_lossy(&x.name)
            ));
        }
    }
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Internal(format!("{}: path contains a NUL byte", path.display())))
}

/// A fifo, device or socket node.
pub(super) fn make_node(entry: &Entry, dest: &Path) -> std::io::Result<()> {
    let kind = match entry.kind {
        Kind::Fifo => libc::S_IFIFO,
        Kind::Char => libc::S_IFCHR,
        Kind::Block => libc::S_IFBLK,
        _ => libc::S_IFSOCK,
    };
    let c = CString::new(dest.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains a NUL byte"))?;
    // Set-uid and set-gid come with the owner (apply_metadata), never here.
    let mode = kind | (entry.mode & 0o1777) as libc::mode_t;
    // SAFETY: valid path; mknod has no other preconditions.
    if unsafe { libc::mknod(c.as_ptr(), mode, entry.rdev.unwrap_or(0) as libc::dev_t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, mode: u32) -> Entry {
        Entry::new(b"x".to_vec(), kind, mode)
    }

    /// Set-uid and set-gid come only with the owner; a directory keeps
    /// set-gid (new entries take its group), the sticky bit always stays.
    #[test]
    fn set_id_bits_only_where_the_owner_was_restored() {
        let file = entry(Kind::File, 0o106_755 | 0o1000);
        assert_eq!(mode_to_set(&file, true), 0o7755);
        assert_eq!(mode_to_set(&file, false), 0o1755);
        let dir = entry(Kind::Dir, 0o040_000 | 0o3775);
        assert_eq!(mode_to_set(&dir, true), 0o3775);
        assert_eq!(mode_to_set(&dir, false), 0o3775);
        assert_eq!(mode_to_set(&entry(Kind::Dir, 0o4755), false), 0o755);
    }
}
