//! A repository in a local directory.
//!
//! Writes go to `tmp/` first, are fsynced, then hard-linked to their final
//! name (`link(2)` fails if the name exists, so nothing is ever replaced) and
//! the directory is fsynced. A crash leaves at most a stray file in `tmp/`.

use super::{
    check_size, read_capped, Backend, Carried, Carry, DeleteBackend, ObjectInfo, ObjectKey,
    ObjectKind, ReadBackend, Spooled, WriteBackend,
};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A repository rooted at a local directory.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// A backend over `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path_of(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.path())
    }
}

/// [`crate::sync::blocking`] for this backend's file I/O.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    crate::sync::blocking("a local I/O task", f).await
}

fn storage_err(op: &'static str, key: &ObjectKey, e: std::io::Error) -> Error {
    if e.kind() == ErrorKind::NotFound {
        Error::NotFound(key.path())
    } else {
        Error::Storage {
            op,
            key: key.path(),
            source: e,
        }
    }
}

#[async_trait]
impl ReadBackend for LocalBackend {
    async fn get(&self, key: &ObjectKey, limit: u64) -> Result<Vec<u8>> {
        let path = self.path_of(key);
        let key = key.clone();
        blocking(move || {
            let file = File::open(&path).map_err(|e| storage_err("get", &key, e))?;
            let size = file
                .metadata()
                .map_err(|e| storage_err("get", &key, e))?
                .len();
            check_size(&key.path(), size, limit)?;
            read_capped(file, &key.path(), limit, size, |e| {
                storage_err("get", &key, e)
            })
        })
        .await
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, length: u64) -> Result<Vec<u8>> {
        let path = self.path_of(key);
        let key = key.clone();
        blocking(move || {
            let mut f = File::open(&path).map_err(|e| storage_err("get", &key, e))?;
            let size = f.metadata().map_err(|e| storage_err("get", &key, e))?.len();
            let truncated = |got: u64| {
                Error::damaged(
                    key.path(),
                    format!("truncated: wanted {length} bytes at offset {offset}, got {got}"),
                )
            };
            // Asked for more than the file holds (a reference to a range
            // past the end): no allocation of the claimed size.
            if offset.checked_add(length).is_none_or(|end| end > size) {
                return Err(truncated(size.saturating_sub(offset)));
            }
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| storage_err("get", &key, e))?;
            // The range lies inside the file, so its length is bounded by
            // what is stored.
            let mut buf = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
            f.take(length)
                .read_to_end(&mut buf)
                .map_err(|e| storage_err("get", &key, e))?;
            if buf.len() as u64 != length {
                return Err(truncated(buf.len() as u64));
            }
            Ok(buf)
        })
        .await
    }

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        blocking(move || list_kind(&root, kind)).await
    }
}

fn list_kind(root: &Path, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
    let mut out = Vec::new();
    let base = root.join(kind.prefix());
    let mut dirs = vec![base.clone()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&dir, "listing the repository", e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, "listing the repository", e))?;
            let meta = entry
                .metadata()
                .map_err(|e| Error::io(entry.path(), "listing the repository", e))?;
            if meta.is_dir() {
                if kind.is_fanned() {
                    dirs.push(entry.path());
                }
                continue;
            }
            if let Some(name) = entry.file_name().to_str() {
                let name = match kind {
                    _ if kind.is_fanned() => {
                        let relative = entry.path();
                        let relative = relative
                            .strip_prefix(&base)
                            .ok()
                            .and_then(Path::to_str)
                            .unwrap_or(name)
                            .to_string();
                        super::pack_name(&relative).to_string()
                    }
                    _ => name.to_string(),
                };
                if kind != ObjectKind::Config || name == "config" {
                    out.push(ObjectInfo {
                        name,
                        size: meta.len(),
                        modified: meta.modified().ok(),
                        storage_class: None,
                    });
                }
            }
        }
        if kind == ObjectKind::Config {
            break;
        }
    }
    Ok(out)
}

#[async_trait]
impl WriteBackend for LocalBackend {
    async fn put_new(&self, key: &ObjectKey, data: Vec<u8>) -> Result<()> {
        let root = self.root.clone();
        let key = key.clone();
        blocking(move || put_new_sync(&root, &key, &data)).await
    }

    async fn put_new_data_pack(&self, key: &ObjectKey, mut data: Vec<u8>) -> Result<Vec<u8>> {
        let root = self.root.clone();
        let key = key.clone();
        blocking(move || {
            put_new_sync(&root, &key, &data)?;
            data.clear();
            Ok(data)
        })
        .await
    }

    /// One: a pack is written (`O_DIRECT`) in a few ms, far faster than
    /// the workers fill the next, and every upload in flight holds a pack.
    fn upload_concurrency(&self) -> usize {
        1
    }
}

#[async_trait]
impl Carry for LocalBackend {
    /// The spooled file copied into this directory's `tmp/` by the kernel
    /// (`copy_file_range`), then linked into place as every object is.
    async fn put_new_spooled(
        &self,
        key: &ObjectKey,
        spooled: &Spooled,
        _carried: &Carried,
    ) -> Result<()> {
        let root = self.root.clone();
        let key = key.clone();
        let from = spooled.path.clone();
        blocking(move || {
            put_new_by(&root, &key, |tmp| {
                let mut source = File::open(&from)?;
                let mut file = File::options().write(true).create_new(true).open(tmp)?;
                std::io::copy(&mut source, &mut file)?;
                file.sync_all()
            })
        })
        .await
    }
}

fn put_new_sync(root: &Path, key: &ObjectKey, data: &[u8]) -> Result<()> {
    put_new_by(root, key, |tmp| super::direct::write_new_synced(tmp, data))
}

/// Stores `key` under `root`: `fill` writes and syncs a new temporary file
/// in `tmp/`, which is then hard-linked into place (never over an
/// existing object) and removed.
fn put_new_by(
    root: &Path,
    key: &ObjectKey,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    // Only `init` (which stores `config`) may create the repository: a
    // mistyped --repo must fail, not start a new repository.
    if key.kind != ObjectKind::Config && !root.is_dir() {
        return Err(Error::Config(format!(
            "{}: no repository directory here; check --repo, or run `coffer init`",
            root.display()
        )));
    }
    let final_path = root.join(key.path());
    let parent = final_path.parent().unwrap_or(root).to_path_buf();
    let tmp_dir = root.join("tmp");
    for dir in [&parent, &tmp_dir] {
        fs::create_dir_all(dir).map_err(|e| storage_err("put", key, e))?;
    }
    let tmp_path = tmp_dir.join(format!(
        "{}.{}",
        hex::encode(rand::random::<[u8; 8]>()),
        std::process::id()
    ));
    let result = (|| {
        fill(&tmp_path)?;
        fs::hard_link(&tmp_path, &final_path)?;
        File::open(&parent)?.sync_all()
    })();
    let _ = fs::remove_file(&tmp_path);
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(Error::AlreadyExists(key.path())),
        Err(e) => Err(storage_err("put", key, e)),
    }
}

#[async_trait]
impl DeleteBackend for LocalBackend {
    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let path = self.path_of(key);
        let key = key.clone();
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage_err("delete", &key, e)),
        })
        .await
    }
}

impl Backend for LocalBackend {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn location(&self) -> String {
        // A directory not made yet (a copy's destination before its
        // config) gets the name it will have: its parent's canonical path
        // joined with its own name.
        let canonical = std::fs::canonicalize(&self.root).or_else(|e| {
            match (self.root.parent(), self.root.file_name()) {
                (Some(parent), Some(name)) => {
                    let parent = if parent.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        parent
                    };
                    std::fs::canonicalize(parent).map(|p| p.join(name))
                }
                _ => Err(e),
            }
        });
        canonical
            .unwrap_or_else(|_| self.root.clone())
            .display()
            .to_string()
    }

    fn is_local(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory not made yet is located where it will be, so a copy's
    /// journal, named by its destination's location, is found again.
    #[test]
    fn a_directory_not_made_yet_has_the_location_it_will_have() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let backend = LocalBackend::new(dir.path().join("link/repo"));
        let before = backend.location();
        std::fs::create_dir(dir.path().join("real/repo")).unwrap();
        assert_eq!(before, backend.location());
        assert!(before.ends_with("/real/repo"), "{before}");
    }

    #[tokio::test]
    async fn put_is_write_once_and_ranges_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let key = ObjectKey::new(ObjectKind::Pack, "ab".repeat(32));
        let missing_root = LocalBackend::new(dir.path().join("typo"));
        let refused = missing_root.put_new(&key, b"x".to_vec()).await.unwrap_err();
        assert!(matches!(refused, Error::Config(_)), "{refused}");
        assert!(!dir.path().join("typo").exists());
        let b = LocalBackend::new(dir.path());
        b.put_new(&key, b"hello world".to_vec()).await.unwrap();
        assert!(dir.path().join("data/ab").join("ab".repeat(32)).exists());
        let again = b.put_new(&key, b"other".to_vec()).await.unwrap_err();
        assert!(matches!(again, Error::AlreadyExists(_)));
        assert_eq!(b.get(&key, 1 << 20).await.unwrap(), b"hello world");
        assert_eq!(b.get(&key, 11).await.unwrap(), b"hello world");
        // Over the cap: refused from the size, before a byte is read.
        let over = b.get(&key, 10).await.unwrap_err();
        assert!(matches!(over, Error::Damaged { .. }), "{over}");
        assert!(
            over.to_string().contains("11 bytes, more than the 10"),
            "{over}"
        );
        assert_eq!(b.get_range(&key, 6, 5).await.unwrap(), b"world");
        // A claimed range far past the end allocates nothing of its size.
        assert!(matches!(
            b.get_range(&key, 0, u64::MAX).await.unwrap_err(),
            Error::Damaged { .. }
        ));
        assert!(matches!(
            b.get_range(&key, 6, 6).await.unwrap_err(),
            Error::Damaged { .. }
        ));
        let listed = b.list(ObjectKind::Pack).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, 11);
        assert!(b.list(ObjectKind::Snapshot).await.unwrap().is_empty());
        let missing = ObjectKey::new(ObjectKind::Snapshot, "00".repeat(32));
        assert!(matches!(
            b.get(&missing, 1 << 20).await.unwrap_err(),
            Error::NotFound(_)
        ));
    }
}
