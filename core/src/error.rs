//! Errors of coffer-core.
//!
//! Rules every variant follows:
//! - it names what failed: the object key, the path or the snapshot, never a
//!   secret (no key material, passphrase or credential is ever formatted);
//! - it keeps its cause as `source` so the CLI prints the whole chain;
//! - damage to one object is an error about that object, never wrong bytes;
//! - each variant means one thing, and says which exit code the CLI gives
//!   it ([`Error::exit_code`]).

use std::path::PathBuf;

/// Everything that can go wrong in coffer-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A storage operation on one object failed.
    #[error("storage: {op} {key}")]
    Storage {
        /// What was attempted: "get", "put", "list"...
        op: &'static str,
        /// The object key (or prefix) it was attempted on.
        key: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The object asked for does not exist.
    #[error("object {0} does not exist")]
    NotFound(String),
    /// The object is archived (S3 `InvalidObjectState`: GLACIER or
    /// DEEP_ARCHIVE not restored, or an archive tier of
    /// Intelligent-Tiering): its bytes cannot be read until the store has
    /// restored it.
    #[error(
        "{0}: archived in cold storage and not restored (S3 answered InvalidObjectState): \
         run `coffer warm-up SNAPSHOT[:PATH] --wait` for what you read (it asks S3 to \
         restore the packs that needs, says what that costs, and waits), then read again"
    )]
    Cold(String),
    /// A write-once object already exists.
    #[error("object {0} already exists and is never overwritten")]
    AlreadyExists(String),
    /// A local file could not be read or written.
    #[error("{path}: {what}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An object was read but is not what it should be (corrupt, truncated,
    /// tampered with, or swapped for another).
    #[error("damaged object {key}: {what}")]
    Damaged {
        /// The object key.
        key: String,
        /// What is wrong with it.
        what: String,
    },
    /// An object that must be signed by a writer of the repository is not:
    /// someone who is not one of its writers stored it.
    #[error("forged object {key}: {what}")]
    Forged {
        /// The object key.
        key: String,
        /// What is missing.
        what: String,
    },
    /// OpenPGP processing failed (message, key or certificate).
    #[error("OpenPGP: {what}")]
    OpenPgp {
        /// What was being done, and on what.
        what: String,
        /// The cause, as sequoia reports it.
        #[source]
        source: anyhow_like::BoxError,
    },
    /// A configuration or key file is unusable.
    #[error("{0}")]
    Config(String),
    /// What was asked cannot be done as asked (a non-empty restore target
    /// without `--overwrite`, say); nothing was changed for it.
    #[error("{0}")]
    Usage(String),
    /// A snapshot argument matched nothing, or more than one snapshot.
    #[error("{0}")]
    Snapshot(String),
    /// An operation on one path failed; the path says where.
    #[error("{path}: {source}")]
    At {
        /// The path (local, or inside a snapshot).
        path: String,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// A path inside a snapshot does not exist or has the wrong kind.
    #[error("{0}")]
    Path(String),
    /// Something inside coffer broke that should not (a task panicked, a
    /// queue closed early, a read returned less than it promised): a bug,
    /// never the user's input.
    #[error("internal error: {0} (a bug in coffer; please report it)")]
    Internal(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed cause, for libraries (sequoia) whose errors are `anyhow::Error`.
pub mod anyhow_like {
    /// A boxed error that is `Send + Sync`.
    pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
}

impl Error {
    /// The exit code the CLI gives this error: 2 for bad usage or
    /// configuration (the command was wrong, the repository untouched), 1
    /// for every failure of the repository, the storage, the target or
    /// coffer itself.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Usage(_) | Error::Snapshot(_) | Error::Path(_) => 2,
            Error::At { source, .. } => source.exit_code(),
            Error::Storage { .. }
            | Error::NotFound(_)
            | Error::Cold(_)
            | Error::AlreadyExists(_)
            | Error::Io { .. }
            | Error::Damaged { .. }
            | Error::Forged { .. }
            | Error::OpenPgp { .. }
            | Error::Internal(_) => 1,
        }
    }

    /// Wraps a sequoia error with a description of what was being done.
    pub fn pgp(what: impl Into<String>, source: impl Into<anyhow_like::BoxError>) -> Self {
        Error::OpenPgp {
            what: what.into(),
            source: source.into(),
        }
    }

    /// Wraps a local I/O error with the path and what was being done.
    pub fn io(path: impl Into<PathBuf>, what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            what: what.into(),
            source,
        }
    }

    /// Whether this is a message that opened with none of the given keys:
    /// not damage, but encrypted to other recipients (a snapshot from
    /// before this admin was added, or after it was removed).
    pub fn is_not_for_this_key(&self) -> bool {
        matches!(self, Error::Damaged { what, .. } if what.contains(crate::crypto::open::NO_KEY_FITS))
    }

    /// Says that the object `key` is damaged.
    pub fn damaged(key: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Damaged {
            key: key.into(),
            what: what.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_and_configuration_exit_2_failures_1_whatever_the_path() {
        let at = |e| Error::At {
            path: "/t/f".into(),
            source: Box::new(e),
        };
        assert_eq!(Error::Usage("target not empty".into()).exit_code(), 2);
        assert_eq!(at(Error::Path("no such path".into())).exit_code(), 2);
        assert_eq!(at(Error::Internal("a task panicked".into())).exit_code(), 1);
        assert_eq!(Error::damaged("data/ab/cd", "bad MDC").exit_code(), 1);
        let internal = Error::Internal("the file writer stopped".into()).to_string();
        assert!(internal.contains("a bug in coffer"), "{internal}");
    }
}
