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

/// What `--key` needs, as [`read_key`] says it.
pub const ADMIN_KEY_NEEDED: &str = "--key needs an OpenPGP secret key (the admin key: what \
    `coffer key generate --secret-out` or `gpg --export-secret-keys` wrote)";
/// What `--writer-key` needs, as [`read_key`] says it.
pub const WRITER_KEY_NEEDED: &str = "--writer-key needs a coffer writer key (what `coffer init \
    --writer-key-out` or `coffer writer add` wrote)";

/// What a key file holds, told from its first bytes: enough to say what a
/// mixed-up option was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFileKind {
    /// An OpenPGP secret key (an admin key; armored or binary).
    SecretKey,
    /// An OpenPGP certificate: a public key, which cannot decrypt.
    Certificate,
    /// A coffer writer key (JSON, `"format": "coffer-writer-key"`).
    WriterKey,
    /// Nothing at all.
    Empty,
    /// None of these.
    Other,
}

impl KeyFileKind {
    /// Tells `bytes` apart. Only the first bytes (an armor header, an
    /// OpenPGP packet tag, a JSON format field) are looked at.
    pub fn of(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return KeyFileKind::Empty;
        }
        // (A writer key is JSON that holds an armored signing key: first.)
        if text.trim_start().starts_with('{') && text.contains("\"coffer-writer-key\"") {
            return KeyFileKind::WriterKey;
        }
        // (Anywhere in the first bytes: an armored file may start with notes.)
        if text.contains("-----BEGIN PGP PRIVATE KEY BLOCK-----") {
            return KeyFileKind::SecretKey;
        }
        if text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
            return KeyFileKind::Certificate;
        }
        // A binary OpenPGP packet: bit 7 set; the tag in bits 5-0 (new
        // format) or 5-2 (old format). 5 is a secret key, 6 a public key.
        match bytes.first() {
            Some(&b) if b & 0x80 != 0 => {
                let tag = if b & 0x40 != 0 {
                    b & 0x3f
                } else {
                    (b >> 2) & 0x0f
                };
                match tag {
                    5 => KeyFileKind::SecretKey,
                    6 => KeyFileKind::Certificate,
                    _ => KeyFileKind::Other,
                }
            }
            _ => KeyFileKind::Other,
        }
    }

    /// What it is, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            KeyFileKind::SecretKey => "an OpenPGP secret key (an admin key, for --key)",
            KeyFileKind::Certificate => {
                "an OpenPGP certificate (a public key: it encrypts to an admin, it cannot decrypt)"
            }
            KeyFileKind::WriterKey => "a coffer writer key (for `backup --writer-key`)",
            KeyFileKind::Empty => "nothing (the file is empty)",
            KeyFileKind::Other => "neither an OpenPGP key nor a coffer writer key",
        }
    }
}

/// Reads the key file at `path`, which an option needs to hold `want`
/// (`needs` says which option and what, for the message): a file of
/// another kind is named for what it is, before anything is said of its
/// mode (a certificate holds no secret). Then as [`read_secret`].
pub fn read_key(
    path: &Path,
    want: KeyFileKind,
    needs: &str,
    check: ModeCheck,
) -> Result<Zeroizing<Vec<u8>>> {
    let (bytes, mode) = read_with_mode(path, needs)?;
    let got = KeyFileKind::of(&bytes);
    if got != want {
        return Err(Error::Config(format!(
            "{}: {needs}, but this file holds {}",
            path.display(),
            got.describe()
        )));
    }
    refuse_open_mode(path, needs, mode, check)?;
    Ok(bytes)
}

/// Reads the secret file at `path`; `what` names it in errors ("the admin
/// key"). Its contents never appear in an error.
pub fn read_secret(path: &Path, what: &str, check: ModeCheck) -> Result<Zeroizing<Vec<u8>>> {
    let (bytes, mode) = read_with_mode(path, what)?;
    refuse_open_mode(path, what, mode, check)?;
    Ok(bytes)
}

/// The file's bytes and the mode of the file they were read from.
fn read_with_mode(path: &Path, what: &str) -> Result<(Zeroizing<Vec<u8>>, u32)> {
    let failed = |e| Error::io(path, format!("reading {what}"), e);
    let mut file = std::fs::File::open(path).map_err(failed)?;
    let mode = file.metadata().map_err(failed)?.permissions().mode();
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes).map_err(failed)?;
    Ok((bytes, mode))
}

/// Refuses a file of `mode` that any group or other user may read, write
/// or execute, unless `check` says to skip it.
fn refuse_open_mode(path: &Path, what: &str, mode: u32, check: ModeCheck) -> Result<()> {
    if check == ModeCheck::Private && mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "{path}: {what} has mode {mode:04o}, so other users may read or change it; \
             run `chmod 600 {path}` (or pass --insecure-key-permissions to use it anyway)",
            path = path.display(),
            mode = mode & 0o7777,
        )));
    }
    Ok(())
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

    #[test]
    fn key_files_are_told_apart_by_their_first_bytes() {
        let key = crate::crypto::generate_key("t").unwrap();
        assert_eq!(KeyFileKind::of(&key.secret_armored), KeyFileKind::SecretKey);
        assert_eq!(KeyFileKind::of(&key.cert_armored), KeyFileKind::Certificate);
        // Binary: an old-format secret-key packet (0x95), a new-format
        // public-key packet (0xc6).
        assert_eq!(KeyFileKind::of(&[0x95, 0x01, 0xd8]), KeyFileKind::SecretKey);
        assert_eq!(KeyFileKind::of(&[0xc6, 0x33]), KeyFileKind::Certificate);
        let writer = br#"{"format":"coffer-writer-key","version":2}"#;
        assert_eq!(KeyFileKind::of(writer), KeyFileKind::WriterKey);
        assert_eq!(KeyFileKind::of(b" \n"), KeyFileKind::Empty);
        assert_eq!(KeyFileKind::of(b"hunter2\n"), KeyFileKind::Other);

        // A certificate given for a secret key is named as one, whatever
        // its mode (it holds no secret).
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("admin.cert");
        std::fs::write(&cert, &key.cert_armored).unwrap();
        std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
        let needs = "--key needs an OpenPGP secret key";
        let err = read_key(&cert, KeyFileKind::SecretKey, needs, ModeCheck::Private)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("admin.cert") && err.contains("OpenPGP certificate"),
            "{err}"
        );
        assert!(!err.contains("chmod"), "{err}");
    }
}
