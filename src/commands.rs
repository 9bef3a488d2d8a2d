//! One function per subcommand: validate arguments, call the library,
//! print. Grouped by what they do: `setup` (key generate, init), `backup`,
//! `inspect` (snapshots, status, check, diff), `restore` (restore, cat,
//! export), `mount`, `forget` (forget, prune); here, what they share.

mod backup;
mod forget;
mod inspect;
mod mount;
mod restore;
mod setup;

pub use backup::backup;
pub use forget::{forget, prune};
pub use inspect::{check, diff, snapshots, status};
pub use mount::mount;
pub use restore::{cat, export, restore};
pub use setup::{init, key_generate};

use crate::args::{RepoArg, SecretKeyArgs};
use anyhow::{Context, Result};
use coffer_core::backend;
use coffer_core::crypto::keyfile::{self, ModeCheck};
use coffer_core::crypto::SecretKeys;
use coffer_core::repository::known::KnownRepositories;
use coffer_core::repository::Repository;
use tokio::runtime::Runtime;

/// What a command wants the process to exit with, when it did not fail.
pub enum Outcome {
    /// Everything worked.
    Success,
    /// The snapshot was written, but some sources could not be read.
    Partial,
    /// A problem already reported on standard output (`status`: no recent
    /// snapshot; `check`: damage): exit 1.
    Reported,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Whether `--insecure-key-permissions` lifts the check of secret files' modes.
fn mode_check(insecure: bool) -> ModeCheck {
    if insecure {
        ModeCheck::Skip
    } else {
        ModeCheck::Private
    }
}

pub fn open_repo(rt: &Runtime, repo: &RepoArg, key: &SecretKeyArgs) -> Result<Repository> {
    let passphrase = read_passphrase(key)?;
    let check = mode_check(key.insecure_key_permissions);
    let keys = SecretKeys::from_file(&key.key, passphrase.as_deref(), check)?;
    let backend = rt.block_on(backend::open(&repo.repo, Default::default()))?;
    let pins = KnownRepositories::of_this_host();
    Ok(rt.block_on(Repository::open(backend, keys, pins.as_ref()))?)
}

fn read_passphrase(key: &SecretKeyArgs) -> Result<Option<String>> {
    if let Some(path) = &key.passphrase_file {
        let check = mode_check(key.insecure_key_permissions);
        let bytes = keyfile::read_secret(path, "the passphrase file", check)?;
        let text = std::str::from_utf8(&bytes)
            .with_context(|| format!("{}: the passphrase is not UTF-8", path.display()))?;
        return Ok(Some(text.lines().next().unwrap_or("").to_string()));
    }
    Ok(std::env::var("COFFER_KEY_PASSPHRASE").ok())
}

/// Splits `SNAPSHOT[:PATH]`.
fn split_spec(spec: &str) -> (&str, &str) {
    match spec.split_once(':') {
        Some((snap, path)) => (snap, path),
        None => (spec, ""),
    }
}
