//! The secrets a repository's `config` carries, and the backup hosts'
//! `writer.key`: making a new repository's keys (the chunk-id key sealed to
//! the recipients, the writers' signing key), unsealing the chunk-id key
//! with the admin's key, and reading and writing `writer.key`.
//!
//! `writer.key` (mode 0600, on backup hosts) holds a copy of `config`, the
//! chunk-id key in the clear and the writers' secret signing key: enough to
//! write (and sign snapshots), never to read.

use crate::crypto::keys::{generate_signing_key, Recipients, SnapshotSigner, Writers};
use crate::crypto::open::Opener;
use crate::crypto::seal::seal_message;
use crate::error::{Error, Result};
use crate::format::chunk_key::ChunkIdKey;
use crate::format::config::{ChunkerParams, RepoConfig, RepoSettings, FORMAT_VERSION, ZSTD_LEVELS};
use crate::format::encoding::{base64_decode, base64_encode, now_rfc3339};
use crate::format::id::ObjectId;
use serde::{Deserialize, Serialize};
use std::path::Path;
use zeroize::Zeroizing;

impl RepoConfig {
    /// A new configuration for `recipients` (armored certificates), with a
    /// fresh repository id, chunk-id key and writers' signing key; returns
    /// it with the writer key that holds those secrets.
    pub fn create(
        recipients: Vec<String>,
        settings: RepoSettings,
        writer_name: &str,
    ) -> Result<(Self, WriterKey)> {
        crate::format::key_change::check_writer_name(writer_name).map_err(Error::Config)?;
        if !ZSTD_LEVELS.contains(&settings.zstd_level) {
            return Err(Error::Config(format!(
                "zstd level {} is out of range; choose {} to {}",
                settings.zstd_level,
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end()
            )));
        }
        let key = ChunkIdKey::generate();
        let sealed = seal_message(&Recipients::from_armored(&recipients)?, key.expose())?;
        let id = hex::encode(rand::random::<[u8; 16]>());
        let signing = generate_signing_key(&format!("coffer writer (repository {id})"))?;
        let config = Self {
            format: "coffer-repository".into(),
            version: FORMAT_VERSION,
            id,
            created: now_rfc3339(),
            chunker: ChunkerParams::default(),
            zstd_level: settings.zstd_level,
            pack_size: 16 * 1024 * 1024,
            dedup_horizon_days: settings.dedup_horizon_days,
            recipients,
            chunk_id_key_sealed: base64_encode(&sealed),
            writers: vec![String::from_utf8_lossy(&signing.cert_armored).into_owned()],
            writer_names: vec![writer_name.to_string()],
        };
        let secret = Zeroizing::new(String::from_utf8_lossy(&signing.secret_armored).into_owned());
        let writer_key = WriterKey::new(config.clone(), key, Some(secret))?.issued(
            writer_name,
            config.recipients.clone(),
            0,
        );
        Ok((config, writer_key))
    }

    /// Unseals the chunk-id key with the admin's secret key.
    pub fn unseal_chunk_key(&self, opener: &Opener) -> Result<ChunkIdKey> {
        unseal_chunk_key(&self.chunk_id_key_sealed, opener)
    }
}

/// Unseals a chunk-id key sealed as config's `chunk_id_key_sealed` is (a
/// key change carries one too) with the admin's secret key.
pub fn unseal_chunk_key(sealed: &str, opener: &Opener) -> Result<ChunkIdKey> {
    let sealed = base64_decode(sealed)
        .ok_or_else(|| Error::damaged("config", "chunk_id_key_sealed is not base64"))?;
    let raw = opener.open("config (chunk_id_key_sealed)", &sealed)?;
    ChunkIdKey::from_slice(&raw)
        .ok_or_else(|| Error::damaged("config", "sealed chunk-id key is not 32 bytes"))
}

/// What a backup host holds: the repository's config, the chunk-id key and
/// the writers' signing key.
pub struct WriterKey {
    /// The repository's configuration (a copy of `config`).
    pub config: RepoConfig,
    chunk_key: ChunkIdKey,
    /// The armored secret signing key (`None` for a repository made before
    /// snapshots were signed), and the key it holds.
    signing: Option<(Zeroizing<String>, SnapshotSigner)>,
    /// Who the admin issued it to, in a key file made since key changes.
    issued: Option<Issued>,
}

/// What a key file made since key changes says besides the config: the
/// writer's name and the recipients as they were when it was issued.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Issued {
    name: String,
    recipients: Vec<String>,
    /// The key changes the repository had then.
    keys_seq: u64,
}

/// The `version` of a key file without a writer name (before key changes).
const KEY_FILE_UNNAMED: u32 = 1;
/// The `version` of a key file with a writer name and its recipients: a
/// build that reads only 1 refuses it rather than encrypt to the config's
/// recipients.
const KEY_FILE_NAMED: u32 = 2;

#[derive(Serialize, Deserialize)]
struct WriterKeyFile {
    format: String,
    version: u32,
    repo_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writer_name: Option<String>,
    chunk_id_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signing_key: Option<String>,
    /// The recipients to encrypt to (version 2); version 1 takes config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recipients: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keys_seq: Option<u64>,
    config: RepoConfig,
}

impl WriterKey {
    /// Pairs a config with its chunk-id key and signing key (armored). The
    /// signing key must be the one `config` lists among its writers; a
    /// config that lists writers needs one.
    pub fn new(
        config: RepoConfig,
        chunk_key: ChunkIdKey,
        signing_key: Option<Zeroizing<String>>,
    ) -> Result<Self> {
        let writers = Writers::from_armored(&config.writers)?;
        let signing = match signing_key {
            Some(armored) => {
                let signer = SnapshotSigner::from_armored(armored.as_bytes(), "the writer key")?;
                if !writers.contains(signer.fingerprint()) {
                    return Err(Error::Config(format!(
                        "the writer key's signing key {} is not one the repository's config lists",
                        signer.fingerprint()
                    )));
                }
                Some((armored, signer))
            }
            None if !writers.is_empty() => {
                return Err(Error::Config(
                    "the writer key holds no signing key, but the repository signs its snapshots"
                        .into(),
                ))
            }
            None => None,
        };
        Ok(Self {
            config,
            chunk_key,
            signing,
            issued: None,
        })
    }

    /// The key file an admin issues to writer `name`, encrypting to
    /// `recipients` (the current ones, after `keys_seq` key changes). Its
    /// signing key need not be one `config` lists: a writer added by a key
    /// change is listed there, which a writer never reads.
    pub fn issued(mut self, name: &str, recipients: Vec<String>, keys_seq: u64) -> Self {
        self.issued = Some(Issued {
            name: name.to_string(),
            recipients,
            keys_seq,
        });
        self
    }

    /// A key file for a writer added by a key change: `signing_key`
    /// (armored secret) is its own.
    pub fn for_added_writer(
        config: RepoConfig,
        chunk_key: ChunkIdKey,
        signing_key: Zeroizing<String>,
        name: &str,
        recipients: Vec<String>,
        keys_seq: u64,
    ) -> Result<Self> {
        let signer = SnapshotSigner::from_armored(signing_key.as_bytes(), "the new writer key")?;
        Ok(Self {
            config,
            chunk_key,
            signing: Some((signing_key, signer)),
            issued: Some(Issued {
                name: name.to_string(),
                recipients,
                keys_seq,
            }),
        })
    }

    /// The writer's name (`None` in a key file made before key changes).
    pub fn name(&self) -> Option<&str> {
        self.issued.as_ref().map(|i| i.name.as_str())
    }

    /// The recipients' certificates to encrypt to (armored).
    pub fn recipients(&self) -> &[String] {
        match &self.issued {
            Some(issued) => &issued.recipients,
            None => &self.config.recipients,
        }
    }

    /// What the writer's local state is kept for: the repository id, and
    /// a digest of the recipients where they are not config's. A state
    /// made for other recipients is started over, so that no new snapshot
    /// refers to data sealed to a removed recipient, or that an added one
    /// cannot open.
    pub fn state_scope(&self) -> String {
        let recipients = self.recipients();
        if recipients == self.config.recipients.as_slice() {
            return self.config.id.clone();
        }
        let digest = ObjectId::of_bytes(recipients.join("\0").as_bytes());
        format!("{}/{}", self.config.id, &digest.to_hex()[..16])
    }

    /// The chunk-id key.
    pub fn chunk_key(&self) -> &ChunkIdKey {
        &self.chunk_key
    }

    /// The key snapshots are signed with (`None`: the repository predates
    /// signed snapshots).
    pub fn signer(&self) -> Option<&SnapshotSigner> {
        self.signing.as_ref().map(|(_, signer)| signer)
    }

    /// Writes the file with mode 0600; refuses to replace an existing file.
    pub fn write_new(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let file = WriterKeyFile {
            format: "coffer-writer-key".into(),
            version: match self.issued {
                Some(_) => KEY_FILE_NAMED,
                None => KEY_FILE_UNNAMED,
            },
            repo_id: self.config.id.clone(),
            writer_name: self.issued.as_ref().map(|i| i.name.clone()),
            chunk_id_key: hex::encode(self.chunk_key.expose()),
            signing_key: self
                .signing
                .as_ref()
                .map(|(armored, _)| armored.to_string()),
            recipients: self.issued.as_ref().map(|i| i.recipients.clone()),
            keys_seq: self.issued.as_ref().map(|i| i.keys_seq),
            config: self.config.clone(),
        };
        let json = Zeroizing::new(serde_json::to_vec_pretty(&file).unwrap_or_default());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path, "creating the writer key (it must not exist yet)", e))?;
        f.write_all(&json)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(path, "writing the writer key", e))
    }

    /// Reads a writer key file; it must be private to its owner unless
    /// `check` says otherwise.
    pub fn read(path: &Path, check: crate::crypto::keyfile::ModeCheck) -> Result<Self> {
        use crate::crypto::keyfile::{read_key, KeyFileKind, WRITER_KEY_NEEDED};
        let bytes = read_key(path, KeyFileKind::WriterKey, WRITER_KEY_NEEDED, check)?;
        let bad = |what: String| {
            Error::Config(format!(
                "{}: not a usable coffer writer key: {what}",
                path.display()
            ))
        };
        let file: WriterKeyFile =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("{e}")))?;
        if file.format != "coffer-writer-key" {
            return Err(bad("unknown format".into()));
        }
        if !(KEY_FILE_UNNAMED..=KEY_FILE_NAMED).contains(&file.version) {
            return Err(bad(format!(
                "key file version {} is newer than this coffer reads; upgrade coffer",
                file.version
            )));
        }
        file.config.check(&path.display().to_string())?;
        let mut raw = [0u8; 32];
        hex::decode_to_slice(&file.chunk_id_key, &mut raw)
            .map_err(|_| bad("chunk_id_key is not 64 hex digits".into()))?;
        if file.repo_id != file.config.id {
            return Err(bad("repo_id does not match its config".into()));
        }
        let signing = file.signing_key.map(Zeroizing::new);
        let chunk_key = ChunkIdKey::from_bytes(raw);
        if file.version == KEY_FILE_UNNAMED {
            return Self::new(file.config, chunk_key, signing).map_err(|e| bad(e.to_string()));
        }
        let (Some(name), Some(recipients), Some(signing)) =
            (file.writer_name, file.recipients, signing)
        else {
            return Err(bad(
                "a version 2 key file needs writer_name, recipients and signing_key".into(),
            ));
        };
        crate::format::key_change::check_writer_name(&name).map_err(bad)?;
        Recipients::from_armored(&recipients).map_err(|e| bad(e.to_string()))?;
        Self::for_added_writer(
            file.config,
            chunk_key,
            signing,
            &name,
            recipients,
            file.keys_seq.unwrap_or(0),
        )
        .map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::{generate_key, normalize_certs};

    #[test]
    fn writer_key_keeps_the_signing_key_config_lists_and_refuses_another() {
        let admin = generate_key("admin").unwrap();
        let certs = normalize_certs(&admin.cert_armored, "admin").unwrap();
        let (config, key) = RepoConfig::create(certs, RepoSettings::default(), "default").unwrap();
        assert_eq!(config.writers.len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("writer.key");
        key.write_new(&path).unwrap();
        let read = WriterKey::read(&path, crate::crypto::keyfile::ModeCheck::Private).unwrap();
        let signer = read.signer().unwrap();
        assert!(Writers::from_armored(&config.writers)
            .unwrap()
            .contains(signer.fingerprint()));
        // init names its writer and keeps the recipients in the file.
        assert_eq!(read.name(), Some("default"));
        assert_eq!(read.recipients(), config.recipients.as_slice());
        assert_eq!(
            read.state_scope(),
            config.id,
            "config's recipients: the plain id"
        );
        let mut file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(file["version"], 2);
        // A version this build does not know asks for a newer one.
        file["version"] = serde_json::json!(3);
        let newer = dir.path().join("newer.key");
        std::fs::write(&newer, serde_json::to_vec(&file).unwrap()).unwrap();
        let err = WriterKey::read(&newer, crate::crypto::keyfile::ModeCheck::Skip)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("upgrade coffer")));
        // A file from before key changes (version 1, no name): its signing
        // key must be one config lists.
        file["version"] = serde_json::json!(1);
        let file_object = file.as_object_mut().unwrap();
        for field in ["writer_name", "recipients", "keys_seq"] {
            file_object.remove(field);
        }
        let v1 = dir.path().join("v1.key");
        std::fs::write(&v1, serde_json::to_vec(&file).unwrap()).unwrap();
        let read = WriterKey::read(&v1, crate::crypto::keyfile::ModeCheck::Skip).unwrap();
        assert_eq!(read.name(), None);
        assert_eq!(read.recipients(), config.recipients.as_slice());
        // Another repository's writer certificate in the copy of config.
        let other = generate_signing_key("other").unwrap();
        file["config"]["writers"] =
            serde_json::json!([String::from_utf8(other.cert_armored).unwrap()]);
        let swapped = dir.path().join("swapped.key");
        std::fs::write(&swapped, serde_json::to_vec(&file).unwrap()).unwrap();
        let err = WriterKey::read(&swapped, crate::crypto::keyfile::ModeCheck::Skip)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_ref()
                .is_some_and(|e| e.contains("not one the repository's config lists")),
            "{err:?}"
        );
        // A signing repository's writer key without its signing key.
        file["config"]["writers"] = serde_json::json!(config.writers);
        file.as_object_mut().unwrap().remove("signing_key");
        let stripped = dir.path().join("stripped.key");
        std::fs::write(&stripped, serde_json::to_vec(&file).unwrap()).unwrap();
        let err = WriterKey::read(&stripped, crate::crypto::keyfile::ModeCheck::Skip)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_ref()
                .is_some_and(|e| e.contains("holds no signing key")),
            "{err:?}"
        );
    }

    #[test]
    fn zstd_level_out_of_range_is_refused_at_init() {
        let settings = RepoSettings {
            zstd_level: 20,
            ..Default::default()
        };
        let err = RepoConfig::create(Vec::new(), settings, "default")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("zstd level 20")));
    }
}
