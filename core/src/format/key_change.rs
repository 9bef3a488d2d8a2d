//! Key changes: the documents admins store under `keys/`, one per change,
//! each signed by an admin (docs/format.md §10). Read in order from
//! `keys/00000001`, they turn the writers and recipients `config` lists
//! into the repository's current ones ([`KeyState`]).
//!
//! This module holds the documents and the rules that apply them; checking
//! signatures and reading the store are `crate::repository::key_chain`'s.

use crate::error::{Error, Result};
use crate::format::config::RepoConfig;
use crate::format::encoding::parse_rfc3339;
use crate::format::id::ObjectId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// `format` of every key change.
pub const KEY_CHANGE_FORMAT: &str = "coffer-key-change";

/// Digits of the sequence number in a change's object name.
const SEQ_DIGITS: usize = 8;

/// The name of the change with sequence number `seq` (from 1) under `keys/`.
pub fn object_name(seq: u64) -> String {
    format!("{seq:0width$}", width = SEQ_DIGITS)
}

/// The sequence number an object name under `keys/` stands for, if it is
/// one coffer writes.
pub fn parse_object_name(name: &str) -> Option<u64> {
    if name.len() != SEQ_DIGITS || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|&seq| seq > 0)
}

/// One key change, as signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyChange {
    /// Always [`KEY_CHANGE_FORMAT`].
    pub format: String,
    /// The repository id (config's `id`).
    pub repository: String,
    /// Its place in the chain, from 1; its object is `keys/<seq, 8 digits>`.
    pub seq: u64,
    /// SHA-256 (hex) of the object before it: `config` for the first
    /// change, `keys/<seq - 1>` after that.
    pub previous: String,
    /// When the admin made it (RFC 3339 UTC): shown, never trusted.
    pub time: String,
    /// The signing admin's certificate (armored, public): it must be that
    /// of a recipient before the change, and it carries the signing key.
    pub signer_cert: String,
    /// What changes.
    pub change: Change,
}

/// What one key change does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Change {
    /// A new writer (one backup host's key), with its signing certificate.
    WriterAdd {
        /// Its name (unique for the repository's life).
        name: String,
        /// Its signing certificate, armored.
        cert: String,
    },
    /// A further signing certificate for a writer that is not revoked (its
    /// key file was made again, e.g. after the recipients changed); its
    /// earlier certificates stay valid until it is revoked.
    WriterReissue {
        /// The writer.
        name: String,
        /// The new signing certificate, armored.
        cert: String,
    },
    /// A writer revoked: every certificate it had. Its snapshots named in
    /// `kept` (object names under `snapshots/`, stored before the
    /// revocation) stay; every other snapshot it signs is left out.
    WriterRevoke {
        /// The writer.
        name: String,
        /// Its snapshots that stay.
        kept: BTreeSet<String>,
    },
    /// A new recipient (an admin): what is written after reaches them.
    RecipientAdd {
        /// Its certificate, armored (with an encryption key).
        cert: String,
        /// The chunk-id key, sealed to every recipient after the change.
        chunk_id_key_sealed: String,
    },
    /// A recipient removed: key files issued after it no longer encrypt
    /// to it.
    RecipientRemove {
        /// Its certificate's fingerprint.
        fingerprint: String,
        /// The chunk-id key, sealed to every recipient after the change.
        chunk_id_key_sealed: String,
    },
}

impl KeyChange {
    /// Parses a change's JSON; `object` names it in errors. A change of a
    /// type this build does not know asks for a newer coffer.
    pub fn from_json(bytes: &[u8], object: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::damaged(object, format!("not a key change: {e}")))?;
        let known = [
            "writer-add",
            "writer-reissue",
            "writer-revoke",
            "recipient-add",
            "recipient-remove",
        ];
        if let Some(kind) = value
            .get("change")
            .and_then(|c| c.get("type"))
            .and_then(|t| t.as_str())
        {
            if !known.contains(&kind) {
                return Err(Error::Config(format!(
                    "{object}: a key change of type {:?}, which this coffer does not know; \
                     upgrade coffer",
                    kind.chars().take(40).collect::<String>()
                )));
            }
        }
        let change: Self = serde_json::from_value(value)
            .map_err(|e| Error::damaged(object, format!("not a key change: {e}")))?;
        if change.format != KEY_CHANGE_FORMAT {
            return Err(Error::damaged(object, "not a key change"));
        }
        parse_rfc3339(&change.time)
            .ok_or_else(|| Error::damaged(object, format!("bad time {:?}", change.time)))?;
        Ok(change)
    }

    /// Serializes for signing.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// A writer: a name and the signing certificates it has had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterState {
    /// Its name (`default` for the one a repository's `config` lists).
    pub name: String,
    /// Its signing certificates (armored) and their fingerprints, oldest
    /// first.
    pub certs: Vec<(String, String)>,
    /// The change that added it (0: listed in `config`).
    pub added: u64,
    /// When it was added (config's `created`, or the change's time).
    pub added_time: String,
    /// Its revocation, if it is revoked.
    pub revoked: Option<Revocation>,
}

/// A writer's revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The change that revoked it.
    pub seq: u64,
    /// The time that change claims.
    pub time: String,
    /// Its snapshots (object names) that stay.
    pub kept: BTreeSet<String>,
}

/// The writers and recipients of a repository after its key changes.
#[derive(Debug, Clone)]
pub struct KeyState {
    /// Every writer, revoked or not, in the order they were added.
    pub writers: Vec<WriterState>,
    /// The recipients' certificates (armored): the admins.
    pub recipients: Vec<String>,
    /// Their fingerprints, in the same order.
    pub recipient_fingerprints: Vec<String>,
    /// The chunk-id key sealed to the current recipients (config's, or the
    /// latest recipient change's).
    pub chunk_id_key_sealed: String,
    /// Every sealed chunk-id key the repository has held, newest first:
    /// an admin added later finds theirs in a change, one from the start
    /// in `config`.
    pub sealed_chunk_keys: Vec<String>,
    /// The number of changes applied.
    pub seq: u64,
    /// SHA-256 of the last object applied (`config` before any change).
    pub head: ObjectId,
}

/// What a [`KeyState`] needs of a certificate, from the layer that parses
/// OpenPGP: its fingerprint (primary key), checked usable for its role.
pub trait CertCheck {
    /// The fingerprint of a writer's signing certificate (it must sign).
    fn writer_fingerprint(&self, armored: &str, source: &str) -> Result<String>;
    /// The fingerprint of a recipient's certificate (it must encrypt).
    fn recipient_fingerprint(&self, armored: &str, source: &str) -> Result<String>;
}

impl KeyState {
    /// The state `config` alone gives: its recipients, and its writers
    /// (one, `default`, in what `init` makes; `writer_names` names them).
    pub fn from_config(
        config: &RepoConfig,
        digest: ObjectId,
        certs: &dyn CertCheck,
    ) -> Result<Self> {
        let mut writers = Vec::new();
        for (i, armored) in config.writers.iter().enumerate() {
            let name = match config.writer_names.get(i) {
                Some(name) => name.clone(),
                None if config.writers.len() == 1 => "default".to_string(),
                None => format!("config-{}", i + 1),
            };
            let fpr = certs.writer_fingerprint(armored, &format!("config: writer #{}", i + 1))?;
            writers.push(WriterState {
                name,
                certs: vec![(armored.clone(), fpr)],
                added: 0,
                added_time: config.created.clone(),
                revoked: None,
            });
        }
        let recipient_fingerprints = config
            .recipients
            .iter()
            .enumerate()
            .map(|(i, c)| certs.recipient_fingerprint(c, &format!("config: recipient #{}", i + 1)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            writers,
            recipients: config.recipients.clone(),
            recipient_fingerprints,
            chunk_id_key_sealed: config.chunk_id_key_sealed.clone(),
            sealed_chunk_keys: vec![config.chunk_id_key_sealed.clone()],
            seq: 0,
            head: digest,
        })
    }

    /// Applies `change`, read from `object` whose bytes hash to `digest`
    /// and whose signature by the admin `signer` (a fingerprint) has been
    /// checked: it must be the next in the chain, link to the head, and
    /// make sense here (no writer added twice, none revoked twice, at least
    /// one recipient left).
    pub fn apply(
        &mut self,
        change: &KeyChange,
        object: &str,
        digest: ObjectId,
        signer: &str,
        config_id: &str,
        certs: &dyn CertCheck,
    ) -> Result<()> {
        let forged = |what: String| Error::Forged {
            key: object.to_string(),
            what,
        };
        if change.repository != config_id {
            return Err(forged(format!(
                "it is a change to repository {:?}, not this one",
                change.repository.chars().take(40).collect::<String>()
            )));
        }
        if change.seq != self.seq + 1 {
            return Err(forged(format!(
                "it says it is change {}, but it is stored as change {}",
                change.seq,
                self.seq + 1
            )));
        }
        if !change.previous.eq_ignore_ascii_case(&self.head.to_hex()) {
            return Err(forged(
                "it does not follow the change before it (its `previous` is not that object's SHA-256)"
                    .into(),
            ));
        }
        if !self.is_admin(signer) {
            return Err(forged(format!(
                "signed by {signer}, who is not an admin here"
            )));
        }
        let refuse = |what: String| Error::damaged(object, what);
        match &change.change {
            Change::WriterAdd { name, cert } => {
                check_writer_name(name).map_err(refuse)?;
                if self.writer(name).is_some() {
                    return Err(refuse(format!("writer {name:?} exists already")));
                }
                let fpr = self.new_writer_cert(cert, object, certs)?;
                self.writers.push(WriterState {
                    name: name.clone(),
                    certs: vec![(cert.clone(), fpr)],
                    added: change.seq,
                    added_time: change.time.clone(),
                    revoked: None,
                });
            }
            Change::WriterReissue { name, cert } => {
                let fpr = self.new_writer_cert(cert, object, certs)?;
                let writer = self.live_writer_mut(name).map_err(refuse)?;
                writer.certs.push((cert.clone(), fpr));
            }
            Change::WriterRevoke { name, kept } => {
                let writer = self.live_writer_mut(name).map_err(refuse)?;
                writer.revoked = Some(Revocation {
                    seq: change.seq,
                    time: change.time.clone(),
                    kept: kept.clone(),
                });
            }
            Change::RecipientAdd {
                cert,
                chunk_id_key_sealed,
            } => {
                let fpr = certs.recipient_fingerprint(cert, object)?;
                if self.is_admin(&fpr) {
                    return Err(refuse(format!("{fpr} is a recipient already")));
                }
                self.recipients.push(cert.clone());
                self.recipient_fingerprints.push(fpr);
                self.set_sealed(chunk_id_key_sealed);
            }
            Change::RecipientRemove {
                fingerprint,
                chunk_id_key_sealed,
            } => {
                let Some(at) = self
                    .recipient_fingerprints
                    .iter()
                    .position(|f| f.eq_ignore_ascii_case(fingerprint))
                else {
                    return Err(refuse(format!("{fingerprint} is not a recipient")));
                };
                if self.recipients.len() == 1 {
                    return Err(refuse("it removes the last recipient".into()));
                }
                self.recipients.remove(at);
                self.recipient_fingerprints.remove(at);
                self.set_sealed(chunk_id_key_sealed);
            }
        }
        self.seq = change.seq;
        self.head = digest;
        Ok(())
    }

    /// Whether `fingerprint` is a recipient's (an admin's).
    pub fn is_admin(&self, fingerprint: &str) -> bool {
        self.recipient_fingerprints
            .iter()
            .any(|f| f.eq_ignore_ascii_case(fingerprint))
    }

    /// The writer named `name`.
    pub fn writer(&self, name: &str) -> Option<&WriterState> {
        self.writers.iter().find(|w| w.name == name)
    }

    /// The writer one of whose certificates has this fingerprint.
    pub fn writer_by_fingerprint(&self, fingerprint: &str) -> Option<&WriterState> {
        self.writers.iter().find(|w| {
            w.certs
                .iter()
                .any(|(_, f)| f.eq_ignore_ascii_case(fingerprint))
        })
    }

    /// Every writer's certificates (revoked ones too: their kept
    /// snapshots still verify), armored.
    pub fn writer_certs(&self) -> Vec<String> {
        self.writers
            .iter()
            .flat_map(|w| w.certs.iter().map(|(c, _)| c.clone()))
            .collect()
    }

    fn live_writer_mut(&mut self, name: &str) -> std::result::Result<&mut WriterState, String> {
        match self.writers.iter_mut().find(|w| w.name == name) {
            None => Err(format!("there is no writer {name:?}")),
            Some(w) if w.revoked.is_some() => Err(format!("writer {name:?} is revoked")),
            Some(w) => Ok(w),
        }
    }

    /// A writer certificate's fingerprint; one any writer has had is
    /// refused (a revoked key must never come back).
    fn new_writer_cert(&self, cert: &str, object: &str, certs: &dyn CertCheck) -> Result<String> {
        let fpr = certs.writer_fingerprint(cert, object)?;
        if self.writer_by_fingerprint(&fpr).is_some() {
            return Err(Error::damaged(
                object,
                format!("the writer certificate {fpr} was added before"),
            ));
        }
        Ok(fpr)
    }

    fn set_sealed(&mut self, sealed: &str) {
        self.chunk_id_key_sealed = sealed.to_string();
        self.sealed_chunk_keys.insert(0, sealed.to_string());
    }
}

/// A writer name: 1-64 characters of letters, digits, `.`, `-`, `_`,
/// not starting with `.` or `-` (it appears in file names and commands).
pub fn check_writer_name(name: &str) -> std::result::Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "writer name {:?} is not 1-64 letters, digits, '.', '-' or '_' (not starting with '.' or '-')",
            name.chars().take(80).collect::<String>()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_eight_digit_sequence_numbers_from_one() {
        assert_eq!(object_name(1), "00000001");
        assert_eq!(parse_object_name("00000012"), Some(12));
        for bad in ["00000000", "1", "0000001a", "000000001", "", "../00001"] {
            assert_eq!(parse_object_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_unknown_change_type_asks_for_a_newer_coffer() {
        let json = br#"{"format":"coffer-key-change","repository":"r","seq":1,"previous":"p",
            "time":"2026-12-07T00:00:00Z","signer_cert":"c","change":{"type":"quorum-set","n":2}}"#;
        let err = KeyChange::from_json(json, "keys/00000001").unwrap_err();
        assert!(err.to_string().contains("upgrade coffer"), "{err}");
        let json = String::from_utf8_lossy(json).replace(
            r#"{"type":"quorum-set","n":2}"#,
            r#"{"type":"writer-revoke","name":"db1","kept":[]}"#,
        );
        let change = KeyChange::from_json(json.as_bytes(), "keys/00000001").unwrap();
        assert_eq!(
            change.change,
            Change::WriterRevoke {
                name: "db1".into(),
                kept: BTreeSet::new()
            }
        );
    }

    #[test]
    fn writer_names_are_safe_in_files_and_commands() {
        for good in ["default", "db1", "web-2.example.com", "host_3"] {
            assert!(check_writer_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(check_writer_name(bad).is_err(), "{bad}");
        }
    }
}
