//! `mount`: serve the repository as a read-only filesystem until unmounted.

use super::{chunk_cache_dir, open_repo_cached, Outcome};
use crate::args::MountArgs;
use anyhow::{Context, Result};
use coffer_core::repository::metadata_cache::ChunkCache;
use tokio::runtime::Runtime;

pub fn mount(rt: Runtime, a: &MountArgs) -> Result<Outcome> {
    let mut repo = open_repo_cached(&rt, &a.repo, &a.key, &a.cache)?;
    // The chunk cache goes with the metadata cache: remote repositories only.
    if repo.metadata_cache().is_some() && a.chunk_cache_size > 0 {
        let dir = chunk_cache_dir(&super::cache_home()?, &repo.config().id);
        repo = repo.with_chunk_cache(ChunkCache::new(dir, a.chunk_cache_size));
    }
    let repo = std::sync::Arc::new(repo);
    let opts = coffer_fs::MountOptions {
        cache_bytes: a.cache_size,
        allow_other: a.allow_other,
        refresh_every: std::time::Duration::from_secs(a.snapshot_refresh),
        selection: super::selection(&a.select),
    };
    let mut mount = coffer_fs::Mount::new(repo, rt.handle().clone(), &a.mountpoint, &opts)?;
    let mut unmounter = mount.unmounter();
    let mountpoint = a.mountpoint.display().to_string();
    rt.spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("unmounting {mountpoint}");
        if let Err(e) = unmounter.unmount() {
            eprintln!("coffer: cannot unmount {mountpoint}: {e}");
        }
    });
    tracing::info!("mounted at {}", a.mountpoint.display());
    mount
        .run()
        .with_context(|| format!("serving the mount at {}", a.mountpoint.display()))?;
    rt.shutdown_background();
    Ok(Outcome::Success)
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
