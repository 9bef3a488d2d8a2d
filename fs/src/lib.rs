//! coffer-fs: every snapshot of a repository as a read-only directory tree.
//!
//! ```text
//! MOUNTPOINT/snapshots/<time>/...   MOUNTPOINT/snapshots/latest -> <time>
//! MOUNTPOINT/hosts/<host>/<time>/...
//! MOUNTPOINT/tags/<tag>/<time>/...
//! MOUNTPOINT/ids/<first 8 hex of id>/...
//! ```
//!
//! Mounting reads the snapshot list only. A directory's tree is fetched the
//! first time it is looked at, a file's chunks when read, through one
//! byte-bounded LRU of decrypted blobs ([`crate::cache::BlobCache`]).
//! FUSE callbacks never wait on storage: they hand the work to tokio and
//! reply from there.
//!
//! The modules:
//! - `filesystem`: the `fuser::Filesystem` adapter (resolve, call, reply);
//! - `mounted`: the state a mount shares between the FUSE threads and tokio
//!   (cache, inode table, snapshot list), its fields private: the others
//!   lock through its methods, which keep the lock order;
//! - `dirs`, `read`, `attrs`: what the callbacks call, on that state:
//!   loading and listing directories, reading files (with read-ahead,
//!   its window sized from the `link` as measured), attributes;
//! - `walk`: readers going through a tree's files in order, found and
//!   read ahead of, neighbours in a pack with one ranged read;
//! - `inode`: the inode table; `layout`: the virtual directories' names;
//!   `cache`: the byte-bounded LRU of decrypted blobs;
//! - [`Mount`] here: mounting, serving, unmounting.
//!
//! `filesystem` uses the rest; `dirs`, `read` and `attrs` use `mounted` and
//! `inode` (and `dirs` uses `attrs`), reaching the cache only through
//! `mounted`; `mounted` uses only the leaves `cache`, `inode` and `layout`.
#![deny(missing_docs)]

mod attrs;
mod cache;
mod dirs;
mod filesystem;
mod inode;
mod layout;
mod link;
mod mounted;
mod read;
mod walk;

use coffer_core::repository::Repository;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Threads reading FUSE requests. Measured on a 2-core VM, where waking a
/// thread on the other core costs ~100 us: one thread answered a
/// `getxattr` in 85-320 us and `ls -lR` of 4,400 files took 1.5-2.2 s (two
/// `getxattr` per file, which the kernel never caches); two took 0.4-1.0 s
/// (52-85 us), four 0.7-1.4 s. The FUSE read buffers are never touched
/// beyond a request's size on a read-only mount, so a thread costs little
/// memory.
const FUSE_THREADS: usize = 2;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Bytes of decrypted chunks and trees kept in memory.
    pub cache_bytes: u64,
    /// Let other users see the mount (needs `user_allow_other` for non-root).
    pub allow_other: bool,
    /// Re-read the snapshot list when `snapshots/` is listed, at most this often.
    pub refresh_every: Duration,
    /// Show only these snapshots (`--host`, `--tag`, `--path`).
    pub selection: coffer_core::format::snapshot::Selection,
}

/// A mounted repository; [`Mount::run`] serves it until it is unmounted.
pub struct Mount {
    session: fuser::Session<filesystem::CofferFs>,
}

/// Unmounts a [`Mount`] from another thread (on a signal, say).
pub struct Unmounter(fuser::SessionUnmounter);

impl Unmounter {
    /// Unmounts; [`Mount::run`] then returns.
    pub fn unmount(&mut self) -> std::io::Result<()> {
        self.0.unmount()
    }
}

impl Mount {
    /// Reads the snapshot list and mounts at `mountpoint` (read-only).
    pub fn new(
        repo: Arc<Repository>,
        rt: tokio::runtime::Handle,
        mountpoint: &Path,
        opts: &MountOptions,
    ) -> Result<Self, MountError> {
        let snapshots = rt.block_on(repo.selected_snapshots(&opts.selection))?;
        let fs = filesystem::CofferFs::new(repo, snapshots, rt, opts);
        let mut config = fuser::Config::default();
        config.n_threads = Some(FUSE_THREADS);
        config.clone_fd = true;
        config.mount_options = vec![
            fuser::MountOption::RO,
            fuser::MountOption::FSName("coffer".into()),
            fuser::MountOption::Subtype("coffer".into()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
        ];
        if opts.allow_other {
            config.acl = fuser::SessionACL::All;
        }
        let session =
            fuser::Session::new(fs, mountpoint, &config).map_err(|source| MountError::Mount {
                path: mountpoint.display().to_string(),
                source,
            })?;
        Ok(Self { session })
    }

    /// Something that unmounts this mount from another thread.
    pub fn unmounter(&mut self) -> Unmounter {
        Unmounter(self.session.unmount_callable())
    }

    /// Serves requests until the filesystem is unmounted.
    pub fn run(self) -> std::io::Result<()> {
        self.session.run()
    }
}

/// Why mounting failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Reading the repository failed.
    #[error(transparent)]
    Repository(#[from] coffer_core::Error),
    /// The kernel mount failed.
    #[error("cannot mount at {path} (does it exist? is /dev/fuse there? is fuse3 installed?)")]
    Mount {
        /// The mountpoint.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl MountError {
    /// The exit code the CLI gives this error: the repository's error's
    /// own, or 1 when the kernel mount failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            MountError::Repository(e) => e.exit_code(),
            MountError::Mount { .. } => 1,
        }
    }
}
