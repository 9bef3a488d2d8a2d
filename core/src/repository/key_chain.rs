//! Reading the key changes under `keys/` (docs/format.md §10): each one in
//! order, its signature checked against an admin of the state before it,
//! applied to the state `config` gives. Every reader opens a repository
//! through here, and admins read it before they add a change.
//!
//! Strict by design: a change that is not signed by an admin, does not
//! follow the one before it, is missing from the sequence or does not
//! apply stops the reader, as a swapped `config` does. Only admins can
//! store under `keys/` (writers' S3 policy allows data/, index/ and
//! snapshots/), and a change left out could be a revocation.

use crate::backend::{Backend, ObjectKey, ObjectKind};
use crate::crypto::keys::{signer_cert, CertParser};
use crate::crypto::signed::{unverified_payload, verify_signed};
use crate::crypto::Writers;
use crate::error::{Error, Result};
use crate::format::config::RepoConfig;
use crate::format::id::ObjectId;
use crate::format::key_change::{self, KeyChange, KeyState};
use futures_util::stream::{self, StreamExt};

/// The key state of a repository and what it was built from.
pub struct KeyChain {
    /// The writers and recipients now.
    pub state: KeyState,
    /// Every change applied, in order, with whose admin key signed it.
    pub changes: Vec<Applied>,
    /// Every writer's certificate, revoked ones too (their kept snapshots
    /// still verify), parsed: a snapshot signed by none of them is forged.
    pub writers: Writers,
}

/// One change as applied.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The change.
    pub change: KeyChange,
    /// SHA-256 of its object.
    pub digest: ObjectId,
    /// The fingerprint of the admin who signed it.
    pub signer: String,
}

impl KeyChain {
    /// The digests of the changes, in order (what a host pins).
    pub fn digests(&self) -> Vec<ObjectId> {
        self.changes.iter().map(|a| a.digest).collect()
    }
}

/// Reads every change under `keys/` of `backend` and applies it to the
/// state `config` (whose object hashes to `config_digest`) gives.
pub async fn read(
    backend: &dyn Backend,
    config: &RepoConfig,
    config_digest: ObjectId,
) -> Result<KeyChain> {
    let listed = backend.list(ObjectKind::Keys).await?;
    read_listed(backend, config, config_digest, listed).await
}

/// [`read`], from a listing of `keys/` made already (beside other
/// requests: over a WAN each is a round trip).
pub async fn read_listed(
    backend: &dyn Backend,
    config: &RepoConfig,
    config_digest: ObjectId,
    listing: Vec<crate::backend::ObjectInfo>,
) -> Result<KeyChain> {
    let mut state = KeyState::from_config(config, config_digest, &CertParser)?;
    let mut seqs = Vec::new();
    for listed in listing {
        match key_change::parse_object_name(&listed.name) {
            Some(seq) => seqs.push(seq),
            None => tracing::warn!(
                "keys/{}: not a key change's name (coffer writes keys/<8 digits>); ignored",
                listed.name.chars().take(80).collect::<String>()
            ),
        }
    }
    seqs.sort_unstable();
    for (i, &seq) in seqs.iter().enumerate() {
        let expected = i as u64 + 1;
        if seq != expected {
            return Err(refused(Error::damaged(
                format!("keys/{}", key_change::object_name(expected)),
                format!(
                    "missing, yet keys/{} is stored: a key change was removed",
                    key_change::object_name(seq)
                ),
            )));
        }
    }
    // Fetched several at once (over a WAN each is a round trip), applied
    // in order.
    let mut fetched = stream::iter(seqs)
        .map(|seq| async move {
            let key = ObjectKey::new(ObjectKind::Keys, key_change::object_name(seq));
            let bytes = backend.get(&key, ObjectKind::Keys.max_size()).await;
            (key.path(), bytes)
        })
        .buffered(FETCHES);
    let mut changes = Vec::new();
    while let Some((object, bytes)) = fetched.next().await {
        let applied = bytes
            .and_then(|bytes| apply_one(&mut state, &config.id, &object, &bytes))
            .map_err(refused)?;
        changes.push(applied);
    }
    let writers = Writers::from_armored(&state.writer_certs())?;
    Ok(KeyChain {
        state,
        changes,
        writers,
    })
}

/// Key changes fetched at once.
const FETCHES: usize = 16;

/// Checks the change `object`, stored as `bytes`, and applies it to `state`.
fn apply_one(
    state: &mut KeyState,
    repository: &str,
    object: &str,
    bytes: &[u8],
) -> Result<Applied> {
    let object = object.to_string();
    let digest = ObjectId::of_bytes(bytes);
    // Which certificate to check it with is in it: read it unverified
    // first, believe nothing of it until the signature holds.
    let claimed = KeyChange::from_json(&unverified_payload(&object, bytes)?, &object)?;
    let cert = signer_cert(&claimed.signer_cert, &object)?;
    let fingerprint = cert.fingerprint().to_hex();
    if !state.is_admin(&fingerprint) {
        return Err(Error::Forged {
            key: object,
            what: format!("signed by {fingerprint}, who is not an admin (a recipient) here"),
        });
    }
    let (json, signer) = verify_signed(&object, bytes, vec![cert])?;
    let change = KeyChange::from_json(&json, &object)?;
    state.apply(&change, &object, digest, &signer, repository, &CertParser)?;
    Ok(Applied {
        change,
        digest,
        signer,
    })
}

/// A key change that does not hold, as the error that stops a reader.
fn refused(e: Error) -> Error {
    match e {
        e @ (Error::Damaged { .. } | Error::Forged { .. } | Error::OpenPgp { .. }) => {
            Error::Config(format!(
                "{e}. The repository's key changes (keys/) do not hold together, so no \
                 reader can tell which writers and recipients are real: every reader refuses \
                 it. Someone who can write to the store may have tampered with it; if an \
                 admin made this change, report it"
            ))
        }
        e => e,
    }
}
