//! `writer add|list|revoke|reissue` and `recipient add|remove|list`: the
//! key changes an admin signs (core's `ops::keys`).

use super::{mode_check, object_lock, opened_snapshots_cached, read_passphrase, Outcome};
use crate::args::{
    KeyListArgs, ObjectLockArgs, RecipientAddArgs, RecipientRemoveArgs, RepoArg, SecretKeyArgs,
    WriterKeyArgs, WriterRevokeArgs,
};
use anyhow::{Context, Result};
use coffer_core::backend::{self, s3::S3WriteOptions};
use coffer_core::crypto::keys::cert_user_id;
use coffer_core::crypto::signed::AdminSigner;
use coffer_core::crypto::{keyfile, SecretKeys};
use coffer_core::format::encoding::{display_time, parse_rfc3339};
use coffer_core::format::key_change::object_name;
use coffer_core::ops::keys;
use coffer_core::repository::known::KnownRepositories;
use coffer_core::repository::Repository;
use std::io::Write;
use tokio::runtime::Runtime;

/// The repository opened with the admin's key, the admin's signing key,
/// and this host's pins (which each change extends).
struct Admin {
    repo: Repository,
    signer: AdminSigner,
    pins: Option<KnownRepositories>,
}

fn open_admin(
    rt: &Runtime,
    repo: &RepoArg,
    key: &SecretKeyArgs,
    lock: &ObjectLockArgs,
) -> Result<Admin> {
    let passphrase = read_passphrase(key)?;
    let check = mode_check(key.insecure_key_permissions);
    // Read once: its decryption keys open the repository, its signing key
    // signs the change.
    let secret = keyfile::read_key(
        &key.key,
        keyfile::KeyFileKind::SecretKey,
        keyfile::ADMIN_KEY_NEEDED,
        check,
    )?;
    let source = key.key.display().to_string();
    let keys = SecretKeys::from_bytes(&secret, &source, passphrase.as_deref())?;
    let s3 = S3WriteOptions {
        object_lock: object_lock(lock),
        ..Default::default()
    };
    let backend = rt.block_on(backend::open(&repo.repo, s3))?;
    let pins = KnownRepositories::of_this_host();
    let repo = rt.block_on(Repository::open(backend, keys, pins.as_ref()))?;
    let admins = &repo.key_chain().state.recipient_fingerprints;
    let signer = AdminSigner::from_bytes(&secret, &source, passphrase.as_deref(), admins)?;
    Ok(Admin { repo, signer, pins })
}

pub fn writer_add(rt: &Runtime, a: &WriterKeyArgs) -> Result<Outcome> {
    let admin = open_admin(rt, &a.repo, &a.key, &a.object_lock)?;
    let seq = rt
        .block_on(keys::writer_add(
            &admin.repo,
            &admin.signer,
            admin.pins.as_ref(),
            &a.name,
            &a.writer_key_out,
        ))
        .with_context(|| format!("adding writer {}", a.name))?;
    eprintln!(
        "writer {} added (keys/{}); give {} to its host (mode 0600): it can write, never read",
        a.name,
        object_name(seq),
        a.writer_key_out.display()
    );
    Ok(Outcome::Success)
}

pub fn writer_reissue(rt: &Runtime, a: &WriterKeyArgs) -> Result<Outcome> {
    let admin = open_admin(rt, &a.repo, &a.key, &a.object_lock)?;
    let seq = rt
        .block_on(keys::writer_reissue(
            &admin.repo,
            &admin.signer,
            admin.pins.as_ref(),
            &a.name,
            &a.writer_key_out,
        ))
        .with_context(|| format!("reissuing writer {}", a.name))?;
    eprintln!(
        "writer {} reissued (keys/{}): replace its host's key file with {}; its next backup \
         stores everything anew for the recipients as they are now",
        a.name,
        object_name(seq),
        a.writer_key_out.display()
    );
    Ok(Outcome::Success)
}

pub fn writer_revoke(rt: &Runtime, a: &WriterRevokeArgs) -> Result<Outcome> {
    let admin = open_admin(rt, &a.repo, &a.key, &a.object_lock)?;
    if admin.repo.config().version == 1 {
        eprintln!(
            "coffer: warning: this repository is format version 1 (made before key changes): \
             a coffer from before key changes, on a host where no newer one has pinned them, \
             does not see this revocation. Upgrade coffer on every admin host"
        );
    }
    let (seq, kept) = rt
        .block_on(keys::writer_revoke(
            &admin.repo,
            &admin.signer,
            admin.pins.as_ref(),
            &a.name,
            a.keep_stored_before,
        ))
        .with_context(|| format!("revoking writer {}", a.name))?;
    eprintln!(
        "writer {} revoked (keys/{}): {kept} of its snapshots stay; any other it \
         signs from now on is left out by every reader",
        a.name,
        object_name(seq)
    );
    Ok(Outcome::Success)
}

pub fn writer_list(rt: &Runtime, a: &KeyListArgs) -> Result<Outcome> {
    let repo = opened_snapshots_cached(super::open_repo(rt, &a.repo, &a.key)?, &a.cache);
    let rows = rt.block_on(keys::writer_list(&repo))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(Outcome::Success);
    }
    let when = |t: &str| {
        parse_rfc3339(t)
            .map(display_time)
            .unwrap_or_else(|| t.to_string())
    };
    writeln!(
        out,
        "{:<16}  {:<16}  {:<20}  {:<20}  {:>9}  last snapshot",
        "name", "key", "added", "revoked", "snapshots"
    )?;
    for w in &rows {
        let key = w.fingerprints.last().map_or("", |f| &f[..16.min(f.len())]);
        let revoked = match (&w.revoked, w.revoked_by) {
            (Some(t), Some(seq)) => format!("{} (keys/{})", when(t), object_name(seq)),
            _ => "-".into(),
        };
        writeln!(
            out,
            "{:<16}  {:<16}  {:<20}  {:<20}  {:>9}  {}",
            w.name,
            key,
            when(&w.added),
            revoked,
            w.snapshots,
            w.last_snapshot.as_deref().map_or("-".to_string(), when)
        )?;
    }
    Ok(Outcome::Success)
}

pub fn recipient_add(rt: &Runtime, a: &RecipientAddArgs) -> Result<Outcome> {
    let bytes = std::fs::read(&a.cert)
        .with_context(|| format!("{}: cannot read the certificate", a.cert.display()))?;
    let admin = open_admin(rt, &a.repo, &a.key, &a.object_lock)?;
    let seq = rt.block_on(keys::recipient_add(
        &admin.repo,
        &admin.signer,
        admin.pins.as_ref(),
        &bytes,
        &a.cert.display().to_string(),
    ))?;
    eprintln!(
        "recipient added (keys/{}): reissue each writer's key file (`coffer writer reissue \
         NAME`) so that what they write next reaches it",
        object_name(seq)
    );
    Ok(Outcome::Success)
}

pub fn recipient_remove(rt: &Runtime, a: &RecipientRemoveArgs) -> Result<Outcome> {
    let admin = open_admin(rt, &a.repo, &a.key, &a.object_lock)?;
    let seq = rt.block_on(keys::recipient_remove(
        &admin.repo,
        &admin.signer,
        admin.pins.as_ref(),
        &a.fingerprint,
    ))?;
    eprintln!(
        "recipient {} removed (keys/{}): reissue each writer's key file (`coffer writer \
         reissue NAME`); what was written before stays readable with its key",
        a.fingerprint,
        object_name(seq)
    );
    Ok(Outcome::Success)
}

pub fn recipient_list(rt: &Runtime, a: &KeyListArgs) -> Result<Outcome> {
    let repo = super::open_repo(rt, &a.repo, &a.key)?;
    let state = &repo.key_chain().state;
    let rows: Vec<_> = state
        .recipients
        .iter()
        .zip(&state.recipient_fingerprints)
        .map(|(cert, fpr)| serde_json::json!({"fingerprint": fpr, "user_id": cert_user_id(cert)}))
        .collect();
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(Outcome::Success);
    }
    for (cert, fpr) in state.recipients.iter().zip(&state.recipient_fingerprints) {
        writeln!(out, "{fpr}  {}", cert_user_id(cert).unwrap_or_default())?;
    }
    Ok(Outcome::Success)
}
