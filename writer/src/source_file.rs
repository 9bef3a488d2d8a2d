//! How the writer opens a source file it is about to read: the walker to
//! chunk it, the read-ahead threads to start the disk on it. One function,
//! so both open exactly the same way (never blocking, never following a
//! link, regular files only).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens the regular file listed at `path` for reading, without updating its
/// atime where allowed (owner or root), with O_NOFOLLOW and O_NONBLOCK: if
/// it was replaced since it was listed by a FIFO (which would block a plain
/// open forever, a cron job hung), a device or a directory, this fails
/// instead. A regular file renamed over it is read: its content is the
/// newer version of the file. The walker reads files through it, the read-ahead threads open them
/// with it too.
pub(crate) fn open_for_reading(path: &Path) -> std::io::Result<std::fs::File> {
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
    let open = |extra: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags | extra)
            .open(path)
    };
    let file = match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0)?,
        other => other?,
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(
            "it is no longer a regular file (replaced while the backup ran)",
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn a_file_replaced_by_a_fifo_is_refused_at_once_and_by_a_file_read() {
        use std::io::Read;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"listed").expect("write");
        let other = dir.path().join("other");
        std::fs::write(&other, b"newer").expect("write");
        std::fs::rename(&other, &path).expect("rename over it");
        let mut read = String::new();
        open_for_reading(&path)
            .expect("a regular file opens")
            .read_to_string(&mut read)
            .expect("read");
        assert_eq!(read, "newer");

        std::fs::remove_file(&path).expect("remove");
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
        // SAFETY: a valid C path; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(open_for_reading(&path).is_err());
        });
        let refused = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(
            refused,
            Ok(true),
            "a FIFO must be refused at once, not block"
        );
    }
}
