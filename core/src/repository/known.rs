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
use crate::format::key_change::object_name;
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
    /// What was pinned before.
    Same,
    /// The config pinned before, and key changes beyond the pinned ones
    /// (pinned now).
    Extended,
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

    /// Checks `digest` (of the config stored at `location`) and `keys`
    /// (the digests of its key changes, in order) against what is pinned
    /// for `location`, pinning them if nothing is. Key changes only ever
    /// extend the pin: the pinned ones must still be there, unchanged.
    pub fn check(&self, location: &str, digest: &ObjectId, keys: &[ObjectId]) -> Result<Pin> {
        let Some(pinned) = self.pinned(location)? else {
            self.pin(location, digest, keys)?;
            return Ok(Pin::New);
        };
        if pinned.config != *digest {
            return Err(Error::Config(format!(
                "the config of {location} is not the one this host saw first (SHA-256 {} \
                 then, {} now; pinned in {}): someone who can write to the store may have \
                 replaced it, and with it the keys that make snapshots genuine. If you \
                 re-created the repository there on purpose, remove its line from that file",
                pinned.config.to_hex(),
                digest.to_hex(),
                self.path.display()
            )));
        }
        let seen = pinned.keys.map_or(0, |(seq, _)| seq);
        if let Some((seq, head)) = pinned.keys {
            let now = usize::try_from(seq - 1).ok().and_then(|i| keys.get(i));
            if now != Some(&head) {
                let what = match now {
                    None => format!("holds {} key changes, this host saw {seq}", keys.len()),
                    Some(_) => format!("holds a different keys/{}", object_name(seq)),
                };
                return Err(Error::Config(format!(
                    "{location} {what} (pinned in {}): someone who can write to the store may \
                     have removed or replaced a key change, such as a writer's revocation. \
                     Nothing is read until it is back",
                    self.path.display()
                )));
            }
        }
        if keys.len() as u64 > seen {
            self.remove(location)?;
            self.pin(location, digest, keys)?;
            return Ok(Pin::Extended);
        }
        Ok(Pin::Same)
    }

    /// Pins `digest` for `location`, replacing any earlier pin: for `init`,
    /// which has just made a new repository there (the old one's config
    /// was gone, or init would have failed).
    pub fn replace(&self, location: &str, digest: &ObjectId) -> Result<()> {
        self.remove(location)?;
        self.pin(location, digest, &[])
    }

    /// Rewrites the file without the pin of `location` (and the comment
    /// written above a pin of key changes).
    fn remove(&self, location: &str) -> Result<()> {
        let text = self.read()?;
        let comment = keys_comment(location);
        let others: Vec<&str> = text
            .lines()
            .filter(|line| !matches!(parse_line(line), Line::Pin(_, at) if at == location))
            .filter(|line| *line != comment)
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
        Ok(())
    }

    /// What is pinned for `location` (the first line for it).
    fn pinned(&self, location: &str) -> Result<Option<Pinned>> {
        for (n, line) in self.read()?.lines().enumerate() {
            match parse_line(line) {
                Line::Pin(field, at) if at == location => {
                    return Pinned::parse(field)
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
            "{} line {}: expected `<sha256-hex>[+<seq>.<sha256-hex>] <repository>`; fix or remove the line",
            self.path.display(),
            line + 1
        ))
    }

    /// Appends the pin (directory 0700, file 0600, both made if missing);
    /// one with key changes goes under a comment that says why a coffer
    /// from before key changes stops at it.
    fn pin(&self, location: &str, digest: &ObjectId, keys: &[ObjectId]) -> Result<()> {
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
        let line = match keys.last() {
            None => format!("{} {location}", digest.to_hex()),
            Some(head) => format!(
                "{}\n{}+{}.{} {location}",
                keys_comment(location),
                digest.to_hex(),
                object_name(keys.len() as u64),
                head.to_hex()
            ),
        };
        writeln!(file, "{line}")
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&self.path, "pinning a repository", e))
    }
}

/// What a line pins: the config's digest, and the number of key changes
/// with the last one's digest.
struct Pinned {
    config: ObjectId,
    keys: Option<(u64, ObjectId)>,
}

impl Pinned {
    /// `<config hex>` or `<config hex>+<8-digit seq>.<head hex>`.
    fn parse(field: &str) -> Option<Self> {
        let (config, keys) = match field.split_once('+') {
            None => (field, None),
            Some((config, keys)) => {
                let (seq, head) = keys.split_once('.')?;
                let seq = crate::format::key_change::parse_object_name(seq)?;
                (config, Some((seq, ObjectId::from_hex(head)?)))
            }
        };
        Some(Self {
            config: ObjectId::from_hex(config)?,
            keys,
        })
    }
}

/// The comment above a pin of key changes. A coffer from before key
/// changes reads the pin below it as malformed and stops: that is meant,
/// as it would not see a revocation.
fn keys_comment(location: &str) -> String {
    format!(
        "# {location}: key changes pinned below; a coffer without key changes stops at that \
         line (it would miss a revocation): upgrade it, do not edit the line"
    )
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
        assert_eq!(
            known.check("s3://bucket/r", &a, &[]).expect("pin"),
            Pin::New
        );
        assert_eq!(
            known.check("/srv/repo with space", &b, &[]).expect("pin"),
            Pin::New
        );
        assert_eq!(
            known.check("s3://bucket/r", &a, &[]).expect("same"),
            Pin::Same
        );
        assert_eq!(
            known.check("/srv/repo with space", &b, &[]).expect("same"),
            Pin::Same
        );
        let err = known.check("s3://bucket/r", &b, &[]).expect_err("replaced");
        let said = err.to_string();
        assert!(said.contains("s3://bucket/r"), "{said}");
        assert!(said.contains("known_repositories"), "{said}");
        // The refused digest is not pinned.
        assert_eq!(
            known.check("s3://bucket/r", &a, &[]).expect("same"),
            Pin::Same
        );
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
        known.check("/srv/two", &a, &[]).expect("other");
        known.replace("/srv/one", &b).expect("re-created");
        assert_eq!(
            known.check("/srv/one", &b, &[]).expect("new pin"),
            Pin::Same
        );
        assert!(known.check("/srv/one", &a, &[]).is_err());
        assert_eq!(known.check("/srv/two", &a, &[]).expect("kept"), Pin::Same);
        let text = std::fs::read_to_string(known.path()).expect("read");
        assert_eq!(text.lines().count(), 2, "{text}");
        // A line edited by hand (trailing blank) is the same pin to both.
        std::fs::write(known.path(), format!("{} /srv/one \n", a.to_hex())).expect("write");
        known.replace("/srv/one", &b).expect("re-created");
        assert_eq!(
            known.check("/srv/one", &b, &[]).expect("new pin"),
            Pin::Same
        );
    }

    #[test]
    fn key_changes_extend_the_pin_and_none_may_go_or_change() {
        let dir = tempfile::tempdir().expect("temp dir");
        let known = KnownRepositories::new(dir.path().join("known"));
        let (config, other) = two_digests();
        let k1 = ObjectId::of_bytes(b"keys 1");
        let k2 = ObjectId::of_bytes(b"keys 2");
        assert_eq!(known.check("/r", &config, &[]).expect("pin"), Pin::New);
        // A pin from before key changes is the plain line a coffer without
        // them reads.
        let text = std::fs::read_to_string(known.path()).expect("read");
        assert_eq!(text, format!("{} /r\n", config.to_hex()));
        assert_eq!(
            known.check("/r", &config, &[k1]).expect("extend"),
            Pin::Extended
        );
        assert_eq!(known.check("/r", &config, &[k1]).expect("same"), Pin::Same);
        assert_eq!(
            known.check("/r", &config, &[k1, k2]).expect("extend"),
            Pin::Extended
        );
        let text = std::fs::read_to_string(known.path()).expect("read");
        assert_eq!(text.lines().count(), 2, "one comment, one pin: {text}");
        assert!(
            text.contains(&format!("+00000002.{} /r", k2.to_hex())),
            "{text}"
        );
        // A change gone (a revocation deleted) or replaced: refused.
        let err = known.check("/r", &config, &[k1]).expect_err("gone");
        assert!(
            err.to_string()
                .contains("holds 1 key changes, this host saw 2"),
            "{err}"
        );
        let err = known
            .check("/r", &config, &[k1, other])
            .expect_err("replaced");
        assert!(err.to_string().contains("different keys/00000002"), "{err}");
        assert!(known.check("/r", &config, &[]).is_err());
        // init on the location starts over, comment and all.
        known.replace("/r", &other).expect("re-created");
        let text = std::fs::read_to_string(known.path()).expect("read");
        assert_eq!(text, format!("{} /r\n", other.to_hex()));
    }

    #[test]
    fn a_malformed_line_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("known");
        std::fs::write(&path, "# pins\n\nnot-a-pin\n").expect("write");
        let err = KnownRepositories::new(&path)
            .check("x", &ObjectId::of_bytes(b"c"), &[])
            .expect_err("malformed");
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}
