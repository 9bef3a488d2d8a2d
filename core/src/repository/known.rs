//! Known repositories: the admin host remembers each repository's `config`
//! (its SHA-256) the first time it uses the repository, and refuses a
//! different one later: trust on first use, as ssh's `known_hosts`.
//!
//! What it guards: `config` lists the recipients and the writers whose
//! signatures make a snapshot genuine, so whoever can replace it can have
//! forged snapshots accepted. Writers cannot (the S3 policy lets them put
//! only under data/, index/, snapshots/; Object Lock keeps it), but an
//! attacker with wider access to the store could. A pin turns that into
//! an error on every host that has used the repository before.
//!
//! The file holds one line per repository location, `<sha256-hex>
//! <location>`; lines starting with `#` are comments. Opening a repository
//! only appends; `init` on this host replaces the line of its location (it
//! has just made the repository there). A repository re-created elsewhere
//! and met again here needs its line removed by hand.

use crate::error::{Error, Result};
use crate::format::id::ObjectId;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The pins of one host.
#[derive(Debug, Clone)]
pub struct KnownRepositories {
    path: PathBuf,
}

/// What [`KnownRepositories::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// First use: the digest is pinned now.
    New,
    /// The digest pinned before.
    Same,
}

impl KnownRepositories {
    /// The pins in the file at `path` (made on first pin).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// This host's pins: `COFFER_KNOWN_REPOSITORIES`, else
    /// `$XDG_CONFIG_HOME/coffer/known_repositories`, else
    /// `~/.config/coffer/known_repositories`; `None` (with a warning)
    /// without any of those variables.
    pub fn of_this_host() -> Option<Self> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(file) = var("COFFER_KNOWN_REPOSITORIES") {
            return Some(Self::new(file));
        }
        let Some(dir) = user_config_dir() else {
            tracing::warn!("neither COFFER_KNOWN_REPOSITORIES nor HOME is set: config not pinned");
            return None;
        };
        Some(Self::new(dir.join("coffer/known_repositories")))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks `digest` (of the config stored at `location`) against the
    /// one pinned for `location`, pinning it if there is none.
    pub fn check(&self, location: &str, digest: &ObjectId) -> Result<Pin> {
        match self.pinned(location)? {
            Some(pinned) if pinned == *digest => Ok(Pin::Same),
            Some(pinned) => Err(Error::Config(format!(
                "the config of {location} is not the one this host saw first (SHA-256 {} \
                 then, {} now; pinned in {}): someone who can write to the store may have \
                 replaced it, and with it the keys that make snapshots genuine. If you \
                 re-created the repository there on purpose, remove its line from that file",
                pinned.to_hex(),
                digest.to_hex(),
                self.path.display()
            ))),
            None => {
                self.pin(location, digest)?;
                Ok(Pin::New)
            }
        }
    }

    /// Pins `digest` for `location`, replacing any earlier pin: for `init`,
    /// which has just made a new repository there (the old one's config
    /// was gone, or init would have failed).
    pub fn replace(&self, location: &str, digest: &ObjectId) -> Result<()> {
        let text = self.read()?;
        let others: Vec<&str> = text
            .lines()
            .filter(|line| !matches!(parse_line(line), Line::Pin(_, at) if at == location))
            .collect();
        if others.len() < text.lines().count() {
            let tmp = self.path.with_extension("new");
            let _ = std::fs::remove_file(&tmp);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, "rewriting the known repositories", e))?;
            others
                .iter()
                .try_for_each(|line| writeln!(file, "{line}"))
                .and_then(|()| file.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &self.path))
                .map_err(|e| Error::io(&self.path, "rewriting the known repositories", e))?;
        }
        self.pin(location, digest)
    }

    /// The digest pinned for `location` (the first line for it).
    fn pinned(&self, location: &str) -> Result<Option<ObjectId>> {
        for (n, line) in self.read()?.lines().enumerate() {
            match parse_line(line) {
                Line::Pin(hex, at) if at == location => {
                    return ObjectId::from_hex(hex)
                        .map(Some)
                        .ok_or_else(|| self.malformed(n));
                }
                Line::Malformed => return Err(self.malformed(n)),
                _ => {}
            }
        }
        Ok(None)
    }

    /// The file's text; empty if there is no file yet.
    fn read(&self) -> Result<String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(Error::io(&self.path, "reading the known repositories", e)),
        }
    }

    fn malformed(&self, line: usize) -> Error {
        Error::Config(format!(
            "{} line {}: expected `<sha256-hex> <repository>`; fix or remove the line",
            self.path.display(),
            line + 1
        ))
    }

    /// Appends the pin (directory 0700, file 0600, both made if missing).
    fn pin(&self, location: &str, digest: &ObjectId) -> Result<()> {
        if location.contains('\n') {
            return Err(Error::Config(format!(
                "cannot pin a repository location with a line break: {location:?}"
            )));
        }
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(dir, "making the directory of known repositories", e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, "opening the known repositories", e))?;
        writeln!(file, "{} {location}", digest.to_hex())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&self.path, "pinning a repository", e))
    }
}

/// One line of the file.
enum Line<'a> {
    /// `<sha256-hex> <location>` (the digest not checked yet).
    Pin(&'a str, &'a str),
    /// Empty, or a `#` comment.
    Blank,
    Malformed,
}

/// How [`KnownRepositories::check`] and [`KnownRepositories::replace`] both
/// read a line, so that a pin one of them sees is the one the other sees.
fn parse_line(line: &str) -> Line<'_> {
    let line = line.trim_end();
    if line.is_empty() || line.starts_with('#') {
        return Line::Blank;
    }
    match line.split_once(' ') {
        Some((hex, at)) => Line::Pin(hex, at),
        None => Line::Malformed,
    }
}

/// The user's configuration directory: `$XDG_CONFIG_HOME`, else
/// `~/.config`; `None` without either variable. Holds `coffer/` (the config
/// pins here, the CLI's `config.toml`).
pub fn user_config_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    match (var("XDG_CONFIG_HOME"), var("HOME")) {
        (Some(d), _) => Some(PathBuf::from(d)),
        (None, Some(home)) => Some(PathBuf::from(home).join(".config")),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_digests() -> (ObjectId, ObjectId) {
        (
            ObjectId::of_bytes(b"config a"),
            ObjectId::of_bytes(b"config b"),
        )
    }

    #[test]
    fn first_use_pins_the_same_passes_another_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let known = KnownRepositories::new(dir.path().join("coffer/known_repositories"));
        let (a, b) = two_digests();
        assert_eq!(known.check("s3://bucket/r", &a).expect("pin"), Pin::New);
        assert_eq!(
            known.check("/srv/repo with space", &b).expect("pin"),
            Pin::New
        );
        assert_eq!(known.check("s3://bucket/r", &a).expect("same"), Pin::Same);
        assert_eq!(
            known.check("/srv/repo with space", &b).expect("same"),
            Pin::Same
        );
        let err = known.check("s3://bucket/r", &b).expect_err("replaced");
        let said = err.to_string();
        assert!(said.contains("s3://bucket/r"), "{said}");
        assert!(said.contains("known_repositories"), "{said}");
        // The refused digest is not pinned.
        assert_eq!(known.check("s3://bucket/r", &a).expect("same"), Pin::Same);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(known.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn init_replaces_the_pin_of_its_location_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let known = KnownRepositories::new(dir.path().join("known"));
        let (a, b) = two_digests();
        known.replace("/srv/one", &a).expect("first");
        known.check("/srv/two", &a).expect("other");
        known.replace("/srv/one", &b).expect("re-created");
        assert_eq!(known.check("/srv/one", &b).expect("new pin"), Pin::Same);
        assert!(known.check("/srv/one", &a).is_err());
        assert_eq!(known.check("/srv/two", &a).expect("kept"), Pin::Same);
        let text = std::fs::read_to_string(known.path()).expect("read");
        assert_eq!(text.lines().count(), 2, "{text}");
        // A line edited by hand (trailing blank) is the same pin to both.
        std::fs::write(known.path(), format!("{} /srv/one \n", a.to_hex())).expect("write");
        known.replace("/srv/one", &b).expect("re-created");
        assert_eq!(known.check("/srv/one", &b).expect("new pin"), Pin::Same);
    }

    #[test]
    fn a_malformed_line_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("known");
        std::fs::write(&path, "# pins\n\nnot-a-pin\n").expect("write");
        let err = KnownRepositories::new(&path)
            .check("x", &ObjectId::of_bytes(b"c"))
            .expect_err("malformed");
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}
