//! Reading secret files (admin keys, writer keys, passphrase files): refused
//! when other users may read or change them, as ssh refuses an open private
//! key. A readable key leaks; a writable writer key lets another user swap
//! the recipients its backups are encrypted to.

use crate::error::{Error, Result};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use zeroize::Zeroizing;

/// Whether to check a secret file's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeCheck {
    /// Refuse a file any group or other user may read, write or execute.
    Private,
    /// Read it whatever its mode (`--insecure-key-permissions`).
    Skip,
}

/// Reads the secret file at `path`; `what` names it in errors ("the admin
/// key"). Its contents never appear in an error.
pub fn read_secret(path: &Path, what: &str, check: ModeCheck) -> Result<Zeroizing<Vec<u8>>> {
    let mut file =
        std::fs::File::open(path).map_err(|e| Error::io(path, format!("reading {what}"), e))?;
    let mode = file
        .metadata()
        .map_err(|e| Error::io(path, format!("reading {what}"), e))?
        .permissions()
        .mode();
    if check == ModeCheck::Private && mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "{path}: {what} has mode {mode:04o}, so other users may read or change it; \
             run `chmod 600 {path}` (or pass --insecure-key-permissions to use it anyway)",
            path = path.display(),
            mode = mode & 0o7777,
        )));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, format!("reading {what}"), e))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_modes_are_refused_unless_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.key");
        std::fs::write(&path, b"secret").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o620, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let got = read_secret(&path, "the admin key", ModeCheck::Private);
            match got {
                Ok(bytes) => assert!(ok, "mode {mode:o} accepted: {:?}", &bytes[..]),
                Err(e) => {
                    assert!(!ok, "mode {mode:o} refused: {e}");
                    let e = e.to_string();
                    assert!(e.contains("chmod 600") && e.contains("admin.key"), "{e}");
                    assert!(!e.contains("secret"), "{e}");
                }
            }
            let skipped = read_secret(&path, "the admin key", ModeCheck::Skip).unwrap();
            assert_eq!(&skipped[..], b"secret");
        }
    }
}
