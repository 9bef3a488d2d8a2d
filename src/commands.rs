//! One function per subcommand: validate arguments, call the library,
//! print. Grouped by what they do: `setup` (key generate, init), `backup`,
//! `inspect` (snapshots, status, check, diff, cache), `keys` (writer
//! and recipient changes), `restore` (restore, cat,
//! export), `mount`, `forget` (forget, prune), `copy`, `packaging`
//! (completions, man pages), `profiles` (config show); here, what they share.

mod backup;
mod browse;
mod copy;
mod forget;
mod inspect;
mod keys;
mod mount;
mod packaging;
mod profiles;
mod restore;
mod setup;
mod warm_up;

pub use backup::backup;
pub use browse::{find, ls, stats};
pub use copy::copy;
pub use forget::{forget, prune};
pub use inspect::{cache, check, diff, snapshots, status};
pub use keys::{
    recipient_add, recipient_list, recipient_remove, writer_add, writer_list, writer_reissue,
    writer_revoke,
};
pub use mount::mount;
pub use packaging::{completions, generate_man};
pub use profiles::config_show;
pub use restore::{cat, export, restore};
pub use setup::{init, key_add_signing, key_generate};
pub use warm_up::warm_up;

use crate::args::{CacheArgs, LockModeArg, ObjectLockArgs, RepoArg, SecretKeyArgs, SelectArgs};
use anyhow::{bail, Context, Result};
use coffer_core::backend;
use coffer_core::backend::limit::Pacing;
use coffer_core::backend::s3::{LockMode, ObjectLock};
use coffer_core::crypto::keyfile::{self, ModeCheck};
use coffer_core::crypto::SecretKeys;
use coffer_core::repository::known::KnownRepositories;
use coffer_core::repository::metadata_cache::MetadataCache;
use coffer_core::repository::Repository;
use std::path::PathBuf;
use tokio::runtime::Runtime;

/// What a command wants the process to exit with, when it did not fail.
pub enum Outcome {
    /// Everything worked.
    Success,
    /// The snapshot was written, but some sources could not be read (or a
    /// restore skipped damaged files): exit 3. Says what, in one line.
    Partial(String),
    /// A problem already reported on standard output (`status`: no recent
    /// snapshot; `check`: damage): exit 1. Says what, in one line.
    Reported(String),
}

/// The retention `--object-lock-days/-mode` ask for.
fn object_lock(a: &ObjectLockArgs) -> Option<ObjectLock> {
    a.object_lock_days.map(|days| ObjectLock {
        days,
        mode: match a.object_lock_mode {
            LockModeArg::Compliance => LockMode::Compliance,
            LockModeArg::Governance => LockMode::Governance,
        },
    })
}

/// The snapshots `--host`, `--tag` and `--path` select.
fn selection(a: &SelectArgs) -> coffer_core::format::snapshot::Selection {
    coffer_core::format::snapshot::Selection {
        hosts: a.hosts.clone(),
        tags: a.tags.clone(),
        paths: a.paths.clone(),
    }
}

/// Each of `list` on stderr, as "coffer: WHAT: item".
fn warn_all(list: &[String], what: &str) {
    for p in list {
        eprintln!("coffer: {what}: {p}");
    }
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
    open_repo_paced(rt, repo, key, None)
}

/// [`open_repo`], its reads paced to at most `download` bytes a second
/// (`--limit-download`).
fn open_repo_paced(
    rt: &Runtime,
    repo: &RepoArg,
    key: &SecretKeyArgs,
    download: Option<u64>,
) -> Result<Repository> {
    let passphrase = read_passphrase(key)?;
    let check = mode_check(key.insecure_key_permissions);
    let keys = SecretKeys::from_file(&key.key, passphrase.as_deref(), check)?;
    let pacing = Pacing::new(None, download);
    let backend = rt.block_on(backend::open_paced(&repo.repo, Default::default(), pacing))?;
    let pins = KnownRepositories::of_this_host();
    Ok(rt.block_on(Repository::open(backend, keys, pins.as_ref()))?)
}

/// [`open_repo`] for a command that reads snapshots: they are listed
/// through the opened-snapshot cache ([`opened_snapshots_cached`]), and a
/// remote repository's trees come through the metadata cache, in
/// `$XDG_CACHE_HOME/coffer/<repo id>/metadata` (unless `--no-cache`).
/// `check` and `prune` read the store itself, never a cached copy.
pub fn open_repo_cached(
    rt: &Runtime,
    repo: &RepoArg,
    key: &SecretKeyArgs,
    cache: &CacheArgs,
) -> Result<Repository> {
    let opened =
        opened_snapshots_cached(open_repo_paced(rt, repo, key, cache.limit_download)?, cache);
    // Tree packs of a local repository are already on local disk.
    if cache.no_cache || opened.backend().is_local() {
        return Ok(opened);
    }
    let Ok(home) = cache_home() else {
        tracing::warn!("no metadata cache: set XDG_CACHE_HOME or HOME");
        return Ok(opened);
    };
    let dir = metadata_cache_dir(&home, &opened.config().id);
    Ok(opened.with_metadata_cache(MetadataCache::new(dir, cache.metadata_cache_size)))
}

/// `repo`, keeping the snapshots it opens in the opened-snapshot cache
/// (`<cache home>/<repo id>/opened`) unless `cache` says no cache.
pub fn opened_snapshots_cached(repo: Repository, cache: &CacheArgs) -> Repository {
    match cache_home() {
        Ok(home) if !cache.no_cache => {
            let dir = home.join(&repo.config().id).join("opened");
            repo.with_opened_cache(dir, cache.metadata_cache_size)
        }
        _ => repo,
    }
}

/// Where the metadata cache of repository `id` lives under `home`
/// ([`cache_home`]).
fn metadata_cache_dir(home: &std::path::Path, id: &str) -> PathBuf {
    home.join(id).join("metadata")
}

/// Where the mount's chunk cache of repository `id` lives under `home`.
fn chunk_cache_dir(home: &std::path::Path, id: &str) -> PathBuf {
    home.join(id).join("chunks")
}

/// `$XDG_CACHE_HOME/coffer`, else `$HOME/.cache/coffer`: where the writer's
/// state and the readers' metadata cache live by default.
pub fn cache_home() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("coffer"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache/coffer")),
        None => bail!("cannot choose a cache directory: set XDG_CACHE_HOME or HOME"),
    }
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
