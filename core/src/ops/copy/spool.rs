//! Large objects carried through a file: read from the source a range at
//! a time into a private temporary file beside the copy's journal (its
//! SHA-256 and MD5 computed on the way), stored from there, removed. A
//! copy then holds one range of each such object in memory, however large
//! the object: a pack may be 3 GiB, and anyone who may write to the source
//! can store one.

use super::Moved;
use crate::backend::{Backend, Carried, ObjectKey, Spooled};
use crate::error::{Error, Result};
use crate::format::id::ObjectId;
use crate::sync::blocking;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Objects larger than this (listed size) are carried through a file.
pub(super) const SPOOL_OVER: u64 = 32 << 20;
/// Bytes read from the source at once.
const RANGE: u64 = 8 << 20;

/// Copies `key` (`size` bytes as listed) from `from` to `to` through a
/// file in `dir`. A non-pack object's SHA-256 must be its name before it
/// is stored; the file is removed whatever happens.
pub(super) async fn move_spooled(
    from: &dyn Backend,
    to: &dyn Backend,
    key: &ObjectKey,
    size: u64,
    dir: &Path,
    takes_class: bool,
) -> Result<Moved> {
    let path = dir.join(format!(
        "spool-{}.{}",
        hex::encode(rand::random::<[u8; 8]>()),
        std::process::id()
    ));
    let moved = carry(from, to, key, size, &path, takes_class).await;
    let _ = std::fs::remove_file(&path);
    moved
}

/// Removes spool files in `dir` left by copies no longer running (killed
/// before they could remove them): their names end in the copy's PID.
pub(super) fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.starts_with("spool-"))
            .and_then(|n| n.rsplit('.').next())
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

async fn carry(
    from: &dyn Backend,
    to: &dyn Backend,
    key: &ObjectKey,
    size: u64,
    path: &Path,
    takes_class: bool,
) -> Result<Moved> {
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            path,
            what: what.into(),
            source,
        }
    };
    let mut file =
        Some(crate::private_dir::create_new(path).map_err(io("creating a copy's spool file"))?);
    let (mut sha256, mut md5) = (Sha256::new(), <md5::Md5 as md5::Digest>::new());
    let mut carried = Carried::default();
    let mut at = 0;
    while at < size {
        let length = RANGE.min(size - at);
        let range = match from.get_range_carried(key, at, length).await {
            Ok((range, first)) => {
                if at == 0 {
                    carried = first;
                }
                range
            }
            Err(e) => return super::unread(e),
        };
        sha256.update(&range);
        md5::Digest::update(&mut md5, &range);
        let mut f = file
            .take()
            .ok_or_else(|| Error::Internal("copy: spool file lost".into()))?;
        let write = io("writing a copy's spool file");
        file = Some(
            blocking("writing a copy's spool file", move || {
                f.write_all(&range).map_err(write)?;
                Ok(f)
            })
            .await?,
        );
        at += length;
    }
    if let Some(f) = file {
        let sync = io("syncing a copy's spool file");
        blocking("syncing a copy's spool file", move || {
            f.sync_all().map_err(sync)
        })
        .await?;
    }
    if let Some(damaged) = super::misnamed(from, key, || ObjectId(sha256.finalize().into())) {
        return Ok(damaged);
    }
    carried.takes_class = takes_class;
    let spooled = Spooled {
        path: PathBuf::from(path),
        md5: md5::Digest::finalize(md5).into(),
    };
    super::stored(to.put_new_spooled(key, &spooled, &carried).await, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_files_of_copies_no_longer_running_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join(format!("spool-00.{}", std::process::id()));
        // PID 2^22 + 1 is past Linux's pid_max: no such process.
        let stale = dir.path().join(format!("spool-01.{}", (1 << 22) + 1));
        let other = dir.path().join("journal");
        for f in [&mine, &stale, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        remove_stale(dir.path());
        assert!(mine.exists() && other.exists());
        assert!(!stale.exists());
    }
}
