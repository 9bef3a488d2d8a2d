//! Trees: the JSON of one directory, and the locations that tie them together.
//!
//! A tree lists a directory's entries sorted by name bytes. A file entry
//! carries the [`Location`] of each of its chunks, a directory entry the
//! location of its subtree, so a reader walks from a snapshot's root to any
//! byte without a global index.
//!
//! Names and symlink targets are bytes on Unix. In JSON a name is a string
//! when it is valid UTF-8 and `{"b64": "..."}` otherwise.

use crate::error::{Error, Result};
use crate::format::id::{BlobId, PackId};
use serde::{Deserialize, Serialize};

/// Where a blob is stored: enough to fetch it with one ranged read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    /// Keyed BLAKE3 of the plaintext, checked after every read.
    pub id: BlobId,
    /// The pack holding it.
    pub pack: PackId,
    /// Byte offset of the blob (an OpenPGP message) in the pack.
    pub offset: u64,
    /// Length of the blob in the pack.
    pub length: u64,
    /// Length of the plaintext.
    pub raw_length: u64,
}

impl Location {
    /// Whether a reader takes this reference at all: a plaintext of at
    /// most [`MAX_BLOB_LEN`], stored in at most twice that, inside a pack
    /// a reader can address. Checked before anything of these lengths is
    /// allocated or asked for.
    pub fn is_plausible(&self) -> bool {
        self.raw_length <= MAX_BLOB_LEN
            && self.length <= 2 * MAX_BLOB_LEN
            && self.offset.checked_add(self.length).is_some()
    }
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A Unix socket.
    Socket,
}

/// One extended attribute of an entry, raw: its name (e.g. `user.origin`,
/// `security.capability`, `system.posix_acl_access` for an ACL) and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// The name, namespace included; bytes without NUL.
    #[serde(with = "bytes_text")]
    pub name: Vec<u8>,
    /// The value, any bytes (standard base64 in JSON).
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
}

impl Xattr {
    /// Whether readers take this attribute: a name of 1 to
    /// [`MAX_XATTR_NAME`] bytes without NUL and a value of at most
    /// [`MAX_XATTR_VALUE`] (Linux's own limits). A writer leaves out, with
    /// a warning, what fails this (an S3 object's metadata may).
    pub fn is_storable(&self) -> bool {
        !self.name.is_empty()
            && self.name.len() <= MAX_XATTR_NAME
            && !self.name.contains(&0)
            && self.value.len() <= MAX_XATTR_VALUE
    }
}

/// Which file a hard-linked entry is: entries of one snapshot with the
/// same `dev` and `ino` are one file (its content stored once), restored
/// as hard links and shown by the mount as one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardLink {
    /// The source's device number (`st_dev`).
    pub dev: u64,
    /// The source's inode number (`st_ino`).
    pub ino: u64,
    /// Its link count on the source (`st_nlink`, at least 2); links
    /// outside the backed-up paths count too, as `stat` says.
    pub nlink: u64,
}

/// A range of a sparse file with no data (it reads as zeros): the writer
/// skipped it (`SEEK_HOLE`), restore leaves it unallocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hole {
    /// Where it starts in the file.
    pub offset: u64,
    /// Its length in bytes (not zero).
    pub length: u64,
}

/// A piece of a file's contents, in order (see [`Entry::extents`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// A chunk.
    Data(Location),
    /// This many zero bytes, not stored.
    Hole(u64),
}

/// Longest extended attribute name Linux allows (XATTR_NAME_MAX).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest extended attribute value Linux allows (XATTR_SIZE_MAX).
pub const MAX_XATTR_VALUE: usize = 64 * 1024;

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The name, raw bytes.
    #[serde(with = "bytes_text")]
    pub name: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// Permission bits, including setuid, setgid and sticky (mode & 0o7777).
    pub mode: u32,
    /// Owner's numeric id.
    pub uid: u32,
    /// Group's numeric id.
    pub gid: u32,
    /// Owner's name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group's name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Size in bytes (files: content length; symlinks: target length).
    pub size: u64,
    /// A symlink's target, raw bytes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_bytes_text"
    )]
    pub target: Option<Vec<u8>>,
    /// Device number of a char or block device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// A file's chunks, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Location>,
    /// A directory's tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Location>,
    /// Extended attributes (ACLs and file capabilities among them), sorted
    /// by name; absent from the JSON when there are none, as in every tree
    /// written before they were kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// For a non-directory with more than one hard link: which file it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<HardLink>,
    /// A sparse file's holes, in file order. The chunks hold the data
    /// between them: each chunk lies after the holes that start where the
    /// chunk before it ended, so `chunks + holes = size`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holes: Vec<Hole>,
}

/// One directory: its entries, sorted by name bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// The entries.
    pub entries: Vec<Entry>,
}

/// Largest plaintext a reference may claim; larger is treated as damage.
pub const MAX_BLOB_LEN: u64 = 1 << 30;

impl Tree {
    /// Serializes, sorting entries by name bytes first.
    pub fn to_json(&mut self) -> Vec<u8> {
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a tree and checks it can be trusted by a reader: names are
    /// single path components, strictly sorted (so unique), and every entry's
    /// references fit its kind and size. `object` names it in errors.
    pub fn from_json(bytes: &[u8], object: &str) -> Result<Self> {
        let tree: Tree = serde_json::from_slice(bytes)
            .map_err(|e| Error::damaged(object, format!("not a tree: {e}")))?;
        let mut previous: Option<&[u8]> = None;
        for entry in &tree.entries {
            if !is_safe_name(&entry.name) {
                return Err(Error::damaged(
                    object,
                    format!(
                        "unsafe entry name {:?}",
                        String::from_utf8_lossy(&entry.name)
                    ),
                ));
            }
            if previous.is_some_and(|p| p >= entry.name.as_slice()) {
                return Err(Error::damaged(object, "entries not sorted or not unique"));
            }
            previous = Some(&entry.name);
            entry.check(object)?;
        }
        Ok(tree)
    }

    /// The bytes this tree holds in memory, about: its entries and what
    /// each owns on the heap. Parsed, a tree takes more than its JSON (an
    /// entry of a tiny file ~420 bytes for ~250 of text), so bounds on
    /// trees kept count this, not the plaintext's length.
    pub fn memory(&self) -> u64 {
        let owned: usize = self.entries.iter().map(Entry::memory).sum();
        (self.entries.capacity() * std::mem::size_of::<Entry>() + owned) as u64
    }

    /// The entry called `name`.
    pub fn find(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

impl Entry {
    /// The heap bytes this entry owns (not counting itself).
    fn memory(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        self.name.capacity()
            + text(&self.user)
            + text(&self.group)
            + self.target.as_ref().map_or(0, Vec::capacity)
            + self.chunks.capacity() * std::mem::size_of::<Location>()
            + self.holes.capacity() * std::mem::size_of::<Hole>()
            + self.xattrs.capacity() * std::mem::size_of::<Xattr>()
            + self
                .xattrs
                .iter()
                .map(|x| x.name.capacity() + x.value.capacity())
                .sum::<usize>()
    }

    /// An entry called `name` of `kind` and `mode`, owned by uid and gid 0
    /// with no names, at mtime 0, with nothing else: the start of one the
    /// writer, the read path or a test fills in.
    pub fn new(name: Vec<u8>, kind: Kind, mode: u32) -> Self {
        Self {
            name,
            kind,
            mode,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime_ns: 0,
            size: 0,
            target: None,
            rdev: None,
            chunks: Vec::new(),
            subtree: None,
            xattrs: Vec::new(),
            link: None,
            holes: Vec::new(),
        }
    }

    fn check(&self, object: &str) -> Result<()> {
        let bad = |what: &str| {
            Error::damaged(
                object,
                format!("entry {:?}: {what}", String::from_utf8_lossy(&self.name)),
            )
        };
        let ok_loc = Location::is_plausible;
        match self.kind {
            Kind::File if !self.chunks.iter().all(ok_loc) || !self.holes_fit() => {
                return Err(bad("chunks and holes do not add up to the file size"));
            }
            Kind::Dir => match &self.subtree {
                Some(l) if ok_loc(l) => {}
                _ => return Err(bad("directory without a valid subtree")),
            },
            Kind::Symlink if self.target.is_none() => return Err(bad("symlink without target")),
            _ => {}
        }
        if self.kind != Kind::File && !(self.chunks.is_empty() && self.holes.is_empty()) {
            return Err(bad("only files have chunks and holes"));
        }
        if self.kind == Kind::Dir && self.link.is_some() {
            return Err(bad("a directory cannot be a hard link"));
        }
        let mut previous: Option<&[u8]> = None;
        for x in &self.xattrs {
            let sorted = previous.is_none_or(|p| p < x.name.as_slice());
            if !sorted || !x.is_storable() {
                return Err(bad("extended attributes malformed, unsorted or too large"));
            }
            previous = Some(&x.name);
        }
        Ok(())
    }

    /// Where each chunk starts in the file: right after the chunk before
    /// it and the holes that start where that one ended. The mount maps
    /// read offsets with it, restore and export place chunks with it.
    pub fn chunk_starts(&self) -> impl Iterator<Item = u64> + '_ {
        let mut holes = self.holes.iter().peekable();
        self.chunks.iter().scan(0u64, move |at, c| {
            while let Some(h) = holes.next_if(|h| h.offset == *at) {
                *at = at.saturating_add(h.length);
            }
            let start = *at;
            *at = at.saturating_add(c.raw_length);
            Some(start)
        })
    }

    /// A file's contents in order: its chunks, and the holes before,
    /// between and after them.
    pub fn extents(&self) -> Vec<Extent> {
        let mut out = Vec::with_capacity(self.chunks.len() + self.holes.len());
        let mut at = 0u64;
        for (start, c) in self.chunk_starts().zip(&self.chunks) {
            if start > at {
                out.push(Extent::Hole(start - at));
            }
            out.push(Extent::Data(*c));
            at = start.saturating_add(c.raw_length);
        }
        if self.size > at {
            out.push(Extent::Hole(self.size - at));
        }
        out
    }

    /// Bytes of data the file holds (its chunks), holes left out: what
    /// the mount reports as allocated.
    pub fn data_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.raw_length).sum()
    }

    /// Whether the chunks and holes tile the file exactly: every hole
    /// starts where a chunk (or hole) ends, none is empty, and they end at
    /// `size`.
    fn holes_fit(&self) -> bool {
        let mut at = 0u64;
        let mut holes = self.holes.iter().peekable();
        let mut place_holes = |at: &mut u64| {
            while let Some(h) = holes.next_if(|h| h.offset == *at) {
                if h.length == 0 {
                    return false;
                }
                *at = match at.checked_add(h.length) {
                    Some(end) => end,
                    None => return false,
                };
            }
            true
        };
        for c in &self.chunks {
            if !place_holes(&mut at) {
                return false;
            }
            at = match at.checked_add(c.raw_length) {
                Some(end) => end,
                None => return false,
            };
        }
        place_holes(&mut at) && holes.next().is_none() && at == self.size
    }

    /// The name as text, lossy, for messages and listings.
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// The deepest a snapshot may nest directories. A writer walks by full
/// path, so what it stores is bounded by PATH_MAX (4096 bytes: at most
/// 2048 levels); readers that build paths refuse anything deeper as
/// damage rather than spend memory quadratic in the depth.
pub const MAX_DEPTH: usize = 4096;

/// What every reader says of directories nested past [`MAX_DEPTH`].
pub fn nested_too_deep() -> String {
    format!("directories nested deeper than {MAX_DEPTH}: not a snapshot coffer writes")
}

/// Whether `name` is one safe path component: not empty, not `.` or `..`,
/// no `/` and no NUL.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
}

/// Serde for raw bytes: a string when UTF-8, else `{"b64": "..."}`.
mod bytes_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    pub(super) enum Text {
        Utf8(String),
        Raw { b64: String },
    }

    pub(super) fn to_text(bytes: &[u8]) -> Text {
        match std::str::from_utf8(bytes) {
            Ok(s) => Text::Utf8(s.to_string()),
            Err(_) => Text::Raw {
                b64: crate::format::encoding::base64_encode(bytes),
            },
        }
    }

    pub(super) fn from_text<E: serde::de::Error>(text: Text) -> Result<Vec<u8>, E> {
        match text {
            Text::Utf8(s) => Ok(s.into_bytes()),
            Text::Raw { b64 } => crate::format::encoding::base64_decode(&b64)
                .ok_or_else(|| E::custom("name is not valid base64")),
        }
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        to_text(bytes).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        from_text(Text::deserialize(d)?)
    }
}

/// Serde for arbitrary bytes as standard base64 text.
mod base64_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        crate::format::encoding::base64_encode(bytes).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        crate::format::encoding::base64_decode(&text)
            .ok_or_else(|| serde::de::Error::custom("value is not valid base64"))
    }
}

mod opt_bytes_text {
    use super::bytes_text::{from_text, to_text, Text};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        bytes.as_deref().map(to_text).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<Text>::deserialize(d)?.map(from_text).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::{BlobId, PackId};

    fn entry(name: &[u8]) -> Entry {
        Entry {
            mtime_ns: 1,
            size: 3,
            target: Some(b"\xffab".to_vec()),
            ..Entry::new(name.to_vec(), Kind::Symlink, 0o777)
        }
    }

    #[test]
    fn a_tree_written_before_xattrs_reads_and_writes_back_byte_identical() {
        // What the writer stored before extended attributes were kept (the
        // blob id of a tree is the keyed hash of these bytes).
        let old = br#"{"entries":[{"name":"a","kind":"file","mode":420,"uid":0,"gid":0,"mtime_ns":1,"size":0},{"name":"l","kind":"symlink","mode":511,"uid":0,"gid":0,"user":"root","mtime_ns":2,"size":1,"target":"a"}]}"#;
        let mut tree = Tree::from_json(old, "old").unwrap();
        assert!(tree.entries.iter().all(|e| e.xattrs.is_empty()));
        assert_eq!(tree.to_json(), old.to_vec());
    }

    #[test]
    fn xattrs_round_trip_as_raw_bytes_and_malformed_ones_are_damage() {
        let mut e = entry(b"f");
        e.xattrs = vec![
            Xattr {
                name: b"security.capability".to_vec(),
                value: vec![0, 0, 0, 2, 0, 0x20, 0, 0, 0xff],
            },
            Xattr {
                name: b"user.\xffodd".to_vec(),
                value: Vec::new(),
            },
        ];
        let mut tree = Tree {
            entries: vec![e.clone()],
        };
        let json = tree.to_json();
        assert_eq!(Tree::from_json(&json, "t").unwrap(), tree);
        for bad in [
            vec![e.xattrs[1].clone(), e.xattrs[0].clone()],
            vec![e.xattrs[0].clone(), e.xattrs[0].clone()],
            vec![Xattr {
                name: b"user.a\0b".to_vec(),
                value: Vec::new(),
            }],
            vec![Xattr {
                name: b"user.big".to_vec(),
                value: vec![0; MAX_XATTR_VALUE + 1],
            }],
        ] {
            let mut bad_entry = e.clone();
            bad_entry.xattrs = bad;
            let json = serde_json::to_vec(&Tree {
                entries: vec![bad_entry],
            })
            .unwrap();
            let err = Tree::from_json(&json, "tree x").unwrap_err();
            assert!(err.to_string().contains("extended attributes"), "{err}");
        }
    }

    fn sparse(size: u64, chunks: &[u64], holes: &[(u64, u64)]) -> Entry {
        let mut e = entry(b"f");
        e.kind = Kind::File;
        e.target = None;
        e.size = size;
        e.chunks = chunks
            .iter()
            .map(|&len| Location {
                id: BlobId([1; 32]),
                pack: PackId([2; 32]),
                offset: 0,
                length: len,
                raw_length: len,
            })
            .collect();
        e.holes = holes
            .iter()
            .map(|&(offset, length)| Hole { offset, length })
            .collect();
        e
    }

    #[test]
    fn holes_place_chunks_and_must_tile_the_file() {
        // hole 100, chunk 10, chunk 5, hole 50, chunk 20, hole 15: 200.
        let e = sparse(200, &[10, 5, 20], &[(0, 100), (115, 50), (185, 15)]);
        e.check("t").unwrap();
        assert_eq!(e.chunk_starts().collect::<Vec<_>>(), [100, 110, 165]);
        assert_eq!(e.data_bytes(), 35);
        let extents: Vec<String> = e
            .extents()
            .iter()
            .map(|x| match x {
                Extent::Data(c) => format!("d{}", c.raw_length),
                Extent::Hole(n) => format!("h{n}"),
            })
            .collect();
        assert_eq!(extents, ["h100", "d10", "d5", "h50", "d20", "h15"]);
        let mut tree = Tree {
            entries: vec![e.clone()],
        };
        assert_eq!(Tree::from_json(&tree.to_json(), "t").unwrap().entries[0], e);
        for (why, bad) in [
            (
                "too short",
                sparse(199, &[10, 5, 20], &[(0, 100), (115, 50), (185, 15)]),
            ),
            (
                "inside a chunk",
                sparse(200, &[10, 5, 20], &[(0, 100), (112, 50), (182, 18)]),
            ),
            (
                "out of order",
                sparse(200, &[10, 5, 20], &[(115, 50), (0, 100), (185, 15)]),
            ),
            ("empty hole", sparse(35, &[10, 5, 20], &[(0, 0)])),
            ("past the end", sparse(35, &[10, 5, 20], &[(40, 5)])),
        ] {
            assert!(bad.check("t").is_err(), "{why}");
        }
        assert!(
            sparse(1 << 30, &[], &[(0, 1 << 30)]).check("t").is_ok(),
            "all hole"
        );
        let mut dir = sparse(0, &[], &[(0, 5)]);
        dir.kind = Kind::Fifo;
        assert!(dir.check("t").is_err(), "holes on a fifo");
    }

    #[test]
    fn non_utf8_names_round_trip_through_json() {
        let mut tree = Tree {
            entries: vec![entry(b"zeta"), entry(b"\xff\xfename"), entry(b"alpha")],
        };
        let json = tree.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"b64\""), "{text}");
        let back = Tree::from_json(&json, "t").unwrap();
        assert_eq!(back, tree);
        assert_eq!(back.entries[0].name, b"alpha");
        assert!(back.find(b"\xff\xfename").is_some());
    }

    #[test]
    fn hostile_names_are_rejected() {
        for bad in [&b".."[..], b".", b"a/b", b"", b"a\0b"] {
            let mut tree = Tree {
                entries: vec![entry(bad)],
            };
            let json = tree.to_json();
            assert!(Tree::from_json(&json, "t").is_err(), "{bad:?}");
        }
        let dup = br#"{"entries":[{"name":"a","kind":"fifo","mode":0,"uid":0,"gid":0,"mtime_ns":0,"size":0},{"name":"a","kind":"fifo","mode":0,"uid":0,"gid":0,"mtime_ns":0,"size":0}]}"#;
        assert!(Tree::from_json(dup, "t").is_err());
    }
}
