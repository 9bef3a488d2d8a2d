//! Key changes an admin makes (docs/DESIGN.md "Keys over a repository's
//! life"): writers added, reissued and revoked; recipients added and
//! removed. Each is one signed object `keys/<seq>` stored after the last,
//! never replacing one; readers apply them in order
//! ([`crate::repository::key_chain`]).

use crate::backend::{ObjectKey, ObjectKind};
use crate::crypto::keys::{generate_signing_key, normalize_certs, CertParser, Recipients};
use crate::crypto::seal::seal_message;
use crate::crypto::signed::AdminSigner;
use crate::crypto::WriterKey;
use crate::error::{Error, Result};
use crate::format::chunk_key::ChunkIdKey;
use crate::format::encoding::{base64_encode, now_rfc3339, parse_rfc3339};
use crate::format::id::ObjectId;
use crate::format::key_change::{self, Change, KeyChange, KEY_CHANGE_FORMAT};
use crate::repository::known::KnownRepositories;
use crate::repository::Repository;
use std::collections::BTreeMap;
use std::path::Path;
use zeroize::Zeroizing;

/// One writer, as `coffer writer list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WriterRow {
    /// Its name.
    pub name: String,
    /// Its signing certificates' fingerprints, oldest first.
    pub fingerprints: Vec<String>,
    /// The key change that added it (0: `config`).
    pub added_by: u64,
    /// When (as the change or `config` says).
    pub added: String,
    /// The key change that revoked it, and when, if it is revoked.
    pub revoked_by: Option<u64>,
    /// When it was revoked (as the change says).
    pub revoked: Option<String>,
    /// Its snapshots readers take (for a revoked writer: those it made
    /// before).
    pub snapshots: u64,
    /// The time of the newest of them.
    pub last_snapshot: Option<String>,
}

/// Every writer of `repo`, with its snapshots counted.
pub async fn writer_list(repo: &Repository) -> Result<Vec<WriterRow>> {
    let state = &repo.key_chain().state;
    let mut per_writer: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
    for info in repo.snapshots().await? {
        let Some(writer) = info
            .signer
            .as_deref()
            .and_then(|s| state.writer_by_fingerprint(s))
        else {
            continue;
        };
        let entry = per_writer.entry(writer.name.clone()).or_default();
        entry.0 += 1;
        let newer = entry
            .1
            .as_deref()
            .is_none_or(|t| parse_rfc3339(t) < parse_rfc3339(&info.snapshot.time));
        if newer {
            entry.1 = Some(info.snapshot.time.clone());
        }
    }
    Ok(state
        .writers
        .iter()
        .map(|w| {
            let (snapshots, last_snapshot) = per_writer.remove(&w.name).unwrap_or_default();
            WriterRow {
                name: w.name.clone(),
                fingerprints: w.certs.iter().map(|(_, f)| f.clone()).collect(),
                added_by: w.added,
                added: w.added_time.clone(),
                revoked_by: w.revoked.as_ref().map(|r| r.seq),
                revoked: w.revoked.as_ref().map(|r| r.time.clone()),
                snapshots,
                last_snapshot,
            }
        })
        .collect())
}

/// Adds writer `name` with a new signing key, and writes its key file to
/// `key_out` (mode 0600; it must not exist). Returns the change's number.
pub async fn writer_add(
    repo: &Repository,
    signer: &AdminSigner,
    pins: Option<&KnownRepositories>,
    name: &str,
    key_out: &Path,
) -> Result<u64> {
    key_change::check_writer_name(name).map_err(Error::Config)?;
    if repo.config().writers.is_empty() {
        return Err(Error::Config(
            "this repository predates signed snapshots (its config lists no writer): its \
             snapshots cannot be told from forged ones, so a signing writer would make readers \
             refuse them all. Make a new repository for signing writers"
                .into(),
        ));
    }
    if repo.key_chain().state.writer(name).is_some() {
        return Err(Error::Config(format!(
            "there is a writer {name:?} already (names are never reused; `coffer writer \
             reissue {name}` makes it a new key file)"
        )));
    }
    with_new_writer_key(repo, signer, pins, name, key_out, |cert| {
        Change::WriterAdd {
            name: name.to_string(),
            cert,
        }
    })
    .await
}

/// Gives writer `name` a new signing key and key file (for the recipients
/// as they are now), written to `key_out`. Its earlier keys stay valid
/// until it is revoked.
pub async fn writer_reissue(
    repo: &Repository,
    signer: &AdminSigner,
    pins: Option<&KnownRepositories>,
    name: &str,
    key_out: &Path,
) -> Result<u64> {
    with_new_writer_key(repo, signer, pins, name, key_out, |cert| {
        Change::WriterReissue {
            name: name.to_string(),
            cert,
        }
    })
    .await
}

/// Makes a signing key, writes the key file, then stores the change
/// `change` makes of its certificate; the key file is removed again if
/// the change cannot be stored.
async fn with_new_writer_key(
    repo: &Repository,
    signer: &AdminSigner,
    pins: Option<&KnownRepositories>,
    name: &str,
    key_out: &Path,
    change: impl FnOnce(String) -> Change,
) -> Result<u64> {
    let state = &repo.key_chain().state;
    let config = repo.config();
    let generated =
        generate_signing_key(&format!("coffer writer {name} (repository {})", config.id))?;
    let cert = String::from_utf8_lossy(&generated.cert_armored).into_owned();
    let secret = Zeroizing::new(String::from_utf8_lossy(&generated.secret_armored).into_owned());
    let change = prepare(repo, signer, change(cert))?;
    let key = WriterKey::for_added_writer(
        config.clone(),
        ChunkIdKey::from_bytes(*repo.chunk_key().expose()),
        secret,
        name,
        state.recipients.clone(),
        change.seq,
    )?;
    key.write_new(key_out)?;
    let stored = store(repo, signer, pins, change).await;
    if stored.is_err() {
        let _ = std::fs::remove_file(key_out);
    }
    stored
}

/// Revokes writer `name`: the snapshots it signed that readers take now
/// stay (with `stored_before`, only those the store says it received
/// before then: a key stolen on Tuesday may have signed some since), every
/// other it signs is left out. Returns the change's number and how many
/// snapshots stay.
pub async fn writer_revoke(
    repo: &Repository,
    signer: &AdminSigner,
    pins: Option<&KnownRepositories>,
    name: &str,
    stored_before: Option<std::time::SystemTime>,
) -> Result<(u64, usize)> {
    let state = &repo.key_chain().state;
    let Some(writer) = state.writer(name) else {
        return Err(Error::Config(format!(
            "there is no writer {name:?} (`coffer writer list` shows them)"
        )));
    };
    // When the store received each snapshot object (S3 LastModified, file
    // mtime): set by the store, not by whoever signed it. Listed only when
    // a cutoff asks for it.
    let mut stored = std::collections::HashMap::new();
    if stored_before.is_some() {
        for o in repo
            .backend()
            .list(crate::backend::ObjectKind::Snapshot)
            .await?
        {
            stored.insert(o.name, o.modified);
        }
    }
    let in_time = |name: &str| match stored_before {
        None => true,
        Some(cutoff) => stored
            .get(name)
            .copied()
            .flatten()
            .is_some_and(|t| t < cutoff),
    };
    let kept: std::collections::BTreeSet<String> = repo
        .snapshots()
        .await?
        .into_iter()
        .filter(|s| {
            s.signer
                .as_deref()
                .is_some_and(|f| writer.certs.iter().any(|(_, c)| c.eq_ignore_ascii_case(f)))
        })
        .filter(|s| in_time(&s.name))
        .map(|s| s.name)
        .collect();
    let count = kept.len();
    let change = prepare(
        repo,
        signer,
        Change::WriterRevoke {
            name: name.to_string(),
            kept,
        },
    )?;
    Ok((store(repo, signer, pins, change).await?, count))
}

/// Adds the recipient (an admin) whose certificate is `cert_bytes`
/// (armored or binary, as `gpg --export` writes it).
pub async fn recipient_add(
    repo: &Repository,
    signer: &AdminSigner,
    pins: Option<&KnownRepositories>,
    cert_bytes: &[u8],
    source: &str,
) -> Result<u64> {
    let certs = normalize_certs(cert_bytes, source)?;
    let [cert] = &certs[..] else {
        return Err(Error::Config(format!(
            "{source} holds {} certificates; add one at a time",
            certs.len()
        )));
    };
    let mut recipients = repo.key_chain().state.recipients.clone();
    recipients.push(cert.clone());
    let change = Change::RecipientAdd {
        cert: cert.clone(),
        chunk_id_key_sealed: sealed_chunk_key(repo, &recipients)?,
    };
    let change = prepare(repo, signer, change)?;
    store(repo, signer, pins, change).await
}

/// Removes the recipient whose certificate's fingerprint is `fingerprint`.
pub async fn recipient_remove(
    repo: &Repository,
    signer: &AdminSigner,
    pins: Option<&KnownRepositories>,
    fingerprint: &str,
) -> Result<u64> {
    let state = &repo.key_chain().state;
    let wanted = fingerprint.replace(' ', "");
    let Some(at) = state
        .recipient_fingerprints
        .iter()
        .position(|f| f.eq_ignore_ascii_case(&wanted))
    else {
        return Err(Error::Config(format!(
            "{fingerprint} is not a recipient of the repository (`coffer recipient list` shows them)"
        )));
    };
    let mut recipients = state.recipients.clone();
    recipients.remove(at);
    let change = Change::RecipientRemove {
        fingerprint: state.recipient_fingerprints[at].clone(),
        chunk_id_key_sealed: sealed_chunk_key(repo, &recipients)?,
    };
    let change = prepare(repo, signer, change)?;
    store(repo, signer, pins, change).await
}

/// The chunk-id key sealed to `recipients` (base64).
fn sealed_chunk_key(repo: &Repository, recipients: &[String]) -> Result<String> {
    if recipients.is_empty() {
        return Err(Error::Config(
            "a repository keeps at least one recipient; add another before removing this one"
                .into(),
        ));
    }
    let sealed = seal_message(
        &Recipients::from_armored(recipients)?,
        repo.chunk_key().expose(),
    )?;
    Ok(base64_encode(&sealed))
}

/// The next change of `repo`'s chain doing `change`, checked by applying
/// it to the current state (what readers will do).
fn prepare(repo: &Repository, signer: &AdminSigner, change: Change) -> Result<KeyChange> {
    let state = &repo.key_chain().state;
    let change = KeyChange {
        format: KEY_CHANGE_FORMAT.into(),
        repository: repo.config().id.clone(),
        seq: state.seq + 1,
        previous: state.head.to_hex(),
        time: now_rfc3339(),
        signer_cert: signer.cert_armored()?,
        change,
    };
    let object = format!("keys/{}", key_change::object_name(change.seq));
    let mut after = state.clone();
    after
        .apply(
            &change,
            &object,
            ObjectId::of_bytes(b""),
            &signer.fingerprint(),
            &repo.config().id,
            &CertParser,
        )
        .map_err(|e| match e {
            Error::Damaged { what, .. } | Error::Forged { what, .. } => {
                Error::Config(format!("cannot make this change: {what}"))
            }
            e => e,
        })?;
    Ok(change)
}

/// Signs `change` and stores it as the next object under `keys/`, then
/// extends this host's pin to it. Returns its number.
async fn store(
    repo: &Repository,
    signer: &AdminSigner,
    pins: Option<&KnownRepositories>,
    change: KeyChange,
) -> Result<u64> {
    let bytes = signer.sign(&change.to_json())?;
    let digest = ObjectId::of_bytes(&bytes);
    let key = ObjectKey::new(ObjectKind::Keys, key_change::object_name(change.seq));
    match repo.backend().put_new(&key, bytes).await {
        Ok(()) => {}
        Err(Error::AlreadyExists(_)) => {
            return Err(Error::Config(format!(
                "{key} was stored by someone else meanwhile (another admin changing keys at \
                 the same time); nothing was changed: run the command again"
            )))
        }
        Err(e) => return Err(e),
    }
    if let Some(known) = pins {
        let mut digests = repo.key_chain().digests();
        digests.push(digest);
        known.check(&repo.backend().location(), repo.config_digest(), &digests)?;
    }
    Ok(change.seq)
}
