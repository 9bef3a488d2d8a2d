//! Directories and files on this host that only their owner may read: the
//! writer's state (it lists every backed-up path, with sizes and times),
//! the caches and the copy journals. Directories are made 0700 and files
//! 0600 whatever the umask (a backup run as root from a shell has 0022),
//! and a directory an earlier coffer made with looser bits is closed when
//! it is used again.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Makes `dir` and its missing parents (mode 0700); `dir` itself, if it
/// exists with group or other bits and belongs to this user, is set to 0700.
pub fn create(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    let me = crate::user::euid();
    if meta.is_dir() && meta.mode() & 0o077 != 0 && meta.uid() == me {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// `options` for a file only its owner may read: created 0600, never
/// opened through a symlink at its name.
fn options(options: &mut OpenOptions) -> &mut OpenOptions {
    options.mode(0o600).custom_flags(libc::O_NOFOLLOW)
}

/// Creates (or opens) the file `path` 0600, appending, readable: for
/// journals.
pub fn open_append(path: &Path) -> io::Result<File> {
    options(OpenOptions::new().read(true).append(true).create(true)).open(path)
}

/// Creates (or opens, never truncating) the file `path` 0600 for writing:
/// for lock files, and a database made before its library opens it.
pub fn open_write(path: &Path) -> io::Result<File> {
    options(OpenOptions::new().write(true).create(true).truncate(false)).open(path)
}

/// Creates the new file `path` 0600 for reading and writing (it must not
/// exist): for temporaries, such as a large object a copy carries.
pub fn create_new(path: &Path) -> io::Result<File> {
    options(OpenOptions::new().read(true).write(true).create_new(true)).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_0700_and_files_0600_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b/state");
        create(&state).unwrap();
        for d in [dir.path().join("a"), dir.path().join("a/b"), state.clone()] {
            let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        // One an earlier version made open is closed.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        create(&state).unwrap();
        assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        let file = state.join("journal");
        open_append(&file).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        // Never through a symlink.
        std::os::unix::fs::symlink(&file, state.join("link")).unwrap();
        assert!(open_append(&state.join("link")).is_err());
    }
}
