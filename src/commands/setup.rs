//! `key generate` and `init`: making the admin's key and a repository.

use super::Outcome;
use crate::args::{InitArgs, KeyAddSigningArgs, KeyGenerateArgs};
use anyhow::{Context, Result};
use coffer_core::backend;
use coffer_core::crypto;
use coffer_core::format::config::{RepoConfig, RepoSettings};
use coffer_core::repository::{self, known::KnownRepositories};
use std::io::Write;
use std::path::Path;
use tokio::runtime::Runtime;

pub fn key_generate(a: &KeyGenerateArgs) -> Result<Outcome> {
    let key = crypto::generate_key(&a.name)?;
    write_new_file(&a.secret_out, &key.secret_armored, 0o600).context("writing the secret key")?;
    write_new_file(&a.cert_out, &key.cert_armored, 0o644).context("writing the certificate")?;
    eprintln!(
        "key {} written: secret {} (keep it off backup hosts), certificate {}",
        key.fingerprint,
        a.secret_out.display(),
        a.cert_out.display()
    );
    Ok(Outcome::Success)
}

pub fn key_add_signing(a: &KeyAddSigningArgs) -> Result<Outcome> {
    let check = super::mode_check(a.key.insecure_key_permissions);
    let passphrase = super::read_passphrase(&a.key)?;
    let secret = crypto::keyfile::read_key(
        &a.key.key,
        crypto::keyfile::KeyFileKind::SecretKey,
        crypto::keyfile::ADMIN_KEY_NEEDED,
        check,
    )?;
    let key = crypto::keys::add_signing_subkey(
        &secret,
        &a.key.key.display().to_string(),
        passphrase.as_deref(),
    )?;
    write_new_file(&a.secret_out, &key.secret_armored, 0o600).context("writing the secret key")?;
    eprintln!(
        "key {} with a signing subkey written to {}: use it as --key (its certificate in \
         repositories stays valid; each key change carries the new one)",
        key.fingerprint,
        a.secret_out.display()
    );
    Ok(Outcome::Success)
}

fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("{}: cannot create (it must not exist yet)", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))
}

pub fn init(rt: &Runtime, a: &InitArgs) -> Result<Outcome> {
    let mut certs = Vec::new();
    for path in &a.recipients {
        let bytes = std::fs::read(path)
            .with_context(|| format!("{}: cannot read the certificate", path.display()))?;
        certs.extend(crypto::normalize_certs(
            &bytes,
            &path.display().to_string(),
        )?);
    }
    let backend = rt.block_on(backend::open(&a.repo.repo, Default::default()))?;
    let (config, writer_key) = RepoConfig::create(
        certs,
        RepoSettings {
            dedup_horizon_days: a.dedup_horizon_days,
            zstd_level: a.zstd_level,
        },
        &a.writer_name,
    )?;
    writer_key.write_new(&a.writer_key_out)?;
    let pins = KnownRepositories::of_this_host();
    let stored = rt.block_on(repository::init(backend.as_ref(), &config, pins.as_ref()));
    if let Err(e) = stored {
        let _ = std::fs::remove_file(&a.writer_key_out);
        return Err(match e {
            coffer_core::Error::AlreadyExists(_) => anyhow::anyhow!(
                "{} already holds a repository; choose another location",
                a.repo.repo
            ),
            e => anyhow::Error::new(e).context("storing the repository config"),
        });
    }
    eprintln!(
        "repository {} created at {}; give {} to backup hosts (it can write, never read)",
        config.id,
        a.repo.repo,
        a.writer_key_out.display()
    );
    Ok(Outcome::Success)
}
