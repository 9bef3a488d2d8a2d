//! Read-ahead for the walk: the files of each directory the walker lists are
//! handed to a few threads that open them and ask the kernel to start
//! reading (`posix_fadvise(WILLNEED)`), so the disk works on the next files
//! while the walker reads, chunks and hashes this one.
//!
//! With a cold page cache the walker otherwise waits on one small read at a
//! time: on the benchmark's data (44,000 files) a backup took 13-19 s cold
//! against 8 s warm. Hints are advice: a full queue drops them, and a file
//! that cannot be opened is skipped (the walker reports what it cannot read).

use crate::source_file::open_for_reading;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread::JoinHandle;

/// Bytes of each file asked for ahead: all of a small file, the start of a
/// large one (the kernel's own read-ahead follows sequential reads).
const AHEAD_BYTES: i64 = 1 << 20;
/// Files queued for read-ahead at most.
const QUEUE: usize = 1024;

/// Threads that start reads of files the walk will soon reach.
pub(crate) struct ReadAhead {
    tx: Option<Sender<PathBuf>>,
    threads: Vec<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts `threads` read-ahead threads (none if 0: hints are dropped).
    pub fn start(threads: usize) -> Self {
        let (tx, rx) = bounded::<PathBuf>(QUEUE);
        let threads = (0..threads)
            .filter_map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("coffer-readahead-{i}"))
                    .spawn(move || run(rx))
                    .ok()
            })
            .collect::<Vec<_>>();
        Self {
            tx: (!threads.is_empty()).then_some(tx),
            threads,
        }
    }

    /// Asks for `path` (a regular file) to be read ahead.
    pub fn hint(&self, path: PathBuf) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(path);
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn run(paths: Receiver<PathBuf>) {
    for path in paths {
        // Opened as the walker will (never blocks, never follows a link,
        // regular files only).
        let Ok(file) = open_for_reading(&path) else {
            continue;
        };
        // SAFETY: the descriptor is open for the duration of the call;
        // posix_fadvise only reads its arguments.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, AHEAD_BYTES, libc::POSIX_FADV_WILLNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_fifo_or_a_missing_file_never_blocks_or_stops_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let file = dir.path().join("file");
        std::fs::write(&file, vec![1u8; 100_000]).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ahead = ReadAhead::start(1);
            ahead.hint(fifo);
            ahead.hint(dir.path().join("missing"));
            ahead.hint(file);
            drop(ahead); // joins the thread: returns once every hint is done
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("read-ahead blocked on a FIFO");
    }
}
