//! One run at a time per state directory: an exclusive `flock` on its
//! `state.lock`.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// A state directory held by one run: an exclusive `flock` on its
/// `state.lock`, released when dropped (or when the process dies). The
/// state commits as packs are stored, so a transaction no longer keeps a
/// second run out.
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    /// Takes `dir`'s lock, waiting up to `wait` for a run that holds it.
    pub fn acquire(dir: &Path, wait: Duration) -> std::io::Result<Self> {
        let path = dir.join("state.lock");
        let file = coffer_core::private_dir::open_write(&path)?;
        let start = Instant::now();
        let mut told = false;
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(e);
            }
            if start.elapsed() >= wait {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "another backup has used this state directory for {} s; \
                         give each concurrent backup its own --state-dir",
                        wait.as_secs()
                    ),
                ));
            }
            if !told {
                tracing::info!("waiting for another backup that uses {}", dir.display());
                told = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_waits_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let held = StateLock::acquire(dir.path(), Duration::ZERO).unwrap();
        let err = StateLock::acquire(dir.path(), Duration::from_millis(120))
            .err()
            .unwrap();
        assert!(err.to_string().contains("--state-dir"), "{err}");
        drop(held);
        StateLock::acquire(dir.path(), Duration::ZERO).unwrap();
    }
}
