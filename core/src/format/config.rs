//! The repository's `config` object: the document and its checks.
//!
//! `config` is unencrypted JSON: anyone may read the parameters, the
//! recipients' certificates and the writers' signing certificates. The
//! chunk-id key inside it is sealed to the recipients. Making a new one,
//! unsealing its chunk-id key and the backup hosts' `writer.key` need
//! OpenPGP: they are in [`crate::crypto::writer_key`].

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The format version of the repositories this build makes: 3, whose
/// data packs (file contents) are stored apart from tree packs
/// ([`FILES_APART_VERSION`]). A build that reads only up to 2 refuses it
/// with "upgrade coffer" rather than look for file contents where they
/// are not.
pub const FORMAT_VERSION: u32 = 3;

/// The format versions this build reads: 1 (made before key changes; it
/// may have gained some since), 2 (whose readers apply the key changes
/// under `keys/`) and 3.
pub const READ_VERSIONS: std::ops::RangeInclusive<u32> = 1..=FORMAT_VERSION;

/// From this version on, data packs are stored under `files/` and tree
/// packs alone under `data/` (before it, both under `data/`).
pub const FILES_APART_VERSION: u32 = 3;

/// Content-defined chunking parameters (FastCDC 2020).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Always "fastcdc-2020".
    pub algorithm: String,
    /// Smallest chunk, bytes; a file below it is one chunk.
    pub min_size: u32,
    /// Target average chunk, bytes.
    pub avg_size: u32,
    /// Largest chunk, bytes.
    pub max_size: u32,
    /// FastCDC normalization level.
    pub normalization: u8,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self {
            algorithm: "fastcdc-2020".into(),
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
            normalization: 1,
        }
    }
}

/// zstd levels `init` accepts; a config outside them is refused as damaged.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;

/// The zstd level of a new repository unless `init` is told otherwise.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// What `init` may choose for a new repository.
#[derive(Debug, Clone, Copy)]
pub struct RepoSettings {
    /// Writers reuse a stored blob only if its pack is younger than this.
    pub dedup_horizon_days: u32,
    /// zstd level writers compress with; any level decompresses the same way.
    pub zstd_level: i32,
}

impl Default for RepoSettings {
    fn default() -> Self {
        Self {
            dedup_horizon_days: 30,
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

/// The repository's `config` object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Always "coffer-repository".
    pub format: String,
    /// Format version, [`FORMAT_VERSION`].
    pub version: u32,
    /// Random repository id (32 hex digits).
    pub id: String,
    /// When `init` ran (RFC 3339 UTC).
    pub created: String,
    /// Chunking parameters, fixed for the repository's life.
    pub chunker: ChunkerParams,
    /// zstd level writers compress with.
    pub zstd_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u64,
    /// Writers reuse a stored blob only if its pack is younger than this.
    pub dedup_horizon_days: u32,
    /// Recipients' certificates, armored.
    pub recipients: Vec<String>,
    /// The chunk-id key, as an armored-free binary OpenPGP message in base64,
    /// sealed to the recipients.
    pub chunk_id_key_sealed: String,
    /// The writers' signing certificates, armored: readers accept only
    /// snapshots one of them signed. Empty in a repository made before
    /// snapshots were signed (its snapshots are accepted unsigned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writers: Vec<String>,
    /// The names of `writers`, in their order (`init --writer-name`).
    /// Absent before key changes: a lone writer is then `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writer_names: Vec<String>,
}

impl RepoConfig {
    /// Parses and checks `config` bytes; `source` names them in errors.
    pub fn from_json(bytes: &[u8], source: &str) -> Result<Self> {
        let config: Self = serde_json::from_slice(bytes)
            .map_err(|e| Error::damaged(source, format!("not a coffer config: {e}")))?;
        config.check(source)?;
        Ok(config)
    }

    /// Checks the parameters of a parsed config; `source` names it.
    pub(crate) fn check(&self, source: &str) -> Result<()> {
        if self.format != "coffer-repository" {
            return Err(Error::damaged(source, "not a coffer repository config"));
        }
        if !READ_VERSIONS.contains(&self.version) {
            return Err(Error::Config(format!(
                "{source}: repository format version {} is not supported by this coffer (it reads {} to {}); upgrade coffer",
                self.version,
                READ_VERSIONS.start(),
                READ_VERSIONS.end()
            )));
        }
        if self.writer_names.len() > self.writers.len() {
            return Err(Error::damaged(source, "more writer names than writers"));
        }
        if let Some(bad) = self
            .writer_names
            .iter()
            .find_map(|n| crate::format::key_change::check_writer_name(n).err())
        {
            return Err(Error::damaged(source, bad));
        }
        // The id names cache directories, journals and host tags: it must
        // be what `init` makes, never a path.
        if !is_repository_id(&self.id) {
            return Err(Error::damaged(
                source,
                format!(
                    "repository id {:?} is not 32 lowercase hex digits (coffer never writes that)",
                    self.id.chars().take(80).collect::<String>()
                ),
            ));
        }
        let c = &self.chunker;
        let sane = c.algorithm == "fastcdc-2020"
            && (64..=1 << 20).contains(&c.min_size)
            && c.min_size <= c.avg_size
            && c.avg_size <= c.max_size
            && c.max_size <= 16 << 20
            && c.min_size % 2 == 0
            && c.avg_size % 2 == 0
            && c.max_size % 2 == 0
            && c.normalization <= 3;
        if !sane {
            return Err(Error::damaged(source, "chunker parameters out of range"));
        }
        if !(1 << 20..=1 << 30).contains(&self.pack_size) {
            return Err(Error::damaged(source, "pack size out of range"));
        }
        if !ZSTD_LEVELS.contains(&self.zstd_level) {
            return Err(Error::damaged(source, "zstd level out of range"));
        }
        Ok(())
    }

    /// Serializes for storage.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// Whether `id` is a repository id as `init` makes them: 32 lowercase hex
/// digits (so it is safe as a file name).
pub fn is_repository_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_level_out_of_range_is_refused_when_read() {
        let json = br#"{"format":"coffer-repository","version":1,"id":"0123456789abcdef0123456789abcdef","created":"x",
            "chunker":{"algorithm":"fastcdc-2020","min_size":512,"avg_size":1024,
            "max_size":4096,"normalization":1},"zstd_level":0,"pack_size":16777216,
            "dedup_horizon_days":30,"recipients":[],"chunk_id_key_sealed":""}"#;
        let err = RepoConfig::from_json(json, "config")
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_ref()
                .is_some_and(|e| e.contains("zstd level out of range")),
            "{err:?}"
        );
        let ok = String::from_utf8_lossy(json).replace("\"zstd_level\":0", "\"zstd_level\":1");
        assert!(RepoConfig::from_json(ok.as_bytes(), "config").is_ok());
        // Versions 2 and 3 read; a later one asks for a newer coffer, as
        // this build's version 3 does of a coffer that reads only 1 to 2.
        for version in [2, 3] {
            let json = ok.replace("\"version\":1", &format!("\"version\":{version}"));
            assert!(RepoConfig::from_json(json.as_bytes(), "config").is_ok());
        }
        let v4 = ok.replace("\"version\":1", "\"version\":4");
        let err = RepoConfig::from_json(v4.as_bytes(), "config").unwrap_err();
        assert!(err.to_string().contains("upgrade coffer"), "{err}");
        // An id that is not what init makes (a path, upper case, short) is
        // refused before anything joins it into a path.
        for bad in [
            "/srv/x",
            "../../etc",
            "0123456789ABCDEF0123456789abcdef",
            "00",
            "",
        ] {
            let json = ok.replace("0123456789abcdef0123456789abcdef", bad);
            let err = RepoConfig::from_json(json.as_bytes(), "config").unwrap_err();
            assert!(err.to_string().contains("repository id"), "{bad}: {err}");
        }
    }
}
