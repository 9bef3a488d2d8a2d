//! Where a repository keeps its packs, by its format version: the one
//! place readers, the writer, prune, check and copy learn it from.

use super::{ObjectKey, ObjectKind};
use crate::format::config::{RepoConfig, FILES_APART_VERSION};
use crate::format::id::PackId;
use crate::format::index::PackKind;

/// Where a repository keeps its packs: tree packs under `data/`; data
/// packs (file contents) under `files/` from format version 3, so that a
/// bucket's lifecycle rule can move them alone to an archive class, and
/// under `data/` too before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackPlaces {
    files_apart: bool,
}

impl PackPlaces {
    /// The places of a repository with this config.
    pub fn of(config: &RepoConfig) -> Self {
        Self {
            files_apart: config.version >= FILES_APART_VERSION,
        }
    }

    /// Whether data packs are stored apart from tree packs.
    pub fn files_apart(self) -> bool {
        self.files_apart
    }

    /// The kind of object a pack of `kind` is stored as.
    pub fn object_kind(self, kind: PackKind) -> ObjectKind {
        match kind {
            PackKind::Data if self.files_apart => ObjectKind::FilePack,
            _ => ObjectKind::Pack,
        }
    }

    /// The key of `pack`, a pack of `kind`.
    pub fn key(self, pack: &PackId, kind: PackKind) -> ObjectKey {
        ObjectKey::new(self.object_kind(kind), pack.to_hex())
    }

    /// Every kind of object packs are stored as (what listings of packs
    /// go through).
    pub fn object_kinds(self) -> &'static [ObjectKind] {
        match self.files_apart {
            true => &[ObjectKind::Pack, ObjectKind::FilePack],
            false => &[ObjectKind::Pack],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_packs_go_apart_from_version_3_only() {
        let id = PackId::from_hex(&"ab".repeat(32)).unwrap();
        let apart = PackPlaces { files_apart: true };
        assert_eq!(
            apart.key(&id, PackKind::Data).path(),
            format!("files/ab/{}", "ab".repeat(32))
        );
        assert_eq!(
            apart.key(&id, PackKind::Tree).path(),
            format!("data/ab/{}", "ab".repeat(32))
        );
        let together = PackPlaces { files_apart: false };
        for kind in [PackKind::Data, PackKind::Tree] {
            assert_eq!(
                together.key(&id, kind).path(),
                format!("data/ab/{}", "ab".repeat(32))
            );
        }
        assert_eq!(
            apart.object_kinds(),
            [ObjectKind::Pack, ObjectKind::FilePack]
        );
        assert_eq!(together.object_kinds(), [ObjectKind::Pack]);
    }
}
