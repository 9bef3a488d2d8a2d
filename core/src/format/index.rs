//! Index objects: which blobs a backup run stored, and where.
//!
//! Readers never need them to read a snapshot (references carry locations);
//! `check` and `prune` use them to know every pack's contents.

use crate::error::{Error, Result};
use crate::format::id::{BlobId, PackId};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether a pack holds file chunks or trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackKind {
    /// File contents.
    Data,
    /// Directory trees.
    Tree,
}

/// One blob in a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexBlob {
    /// The blob's id.
    pub id: BlobId,
    /// Offset in the pack.
    pub offset: u64,
    /// Stored length.
    pub length: u64,
    /// Plaintext length.
    pub raw_length: u64,
}

/// One pack and its blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// The pack.
    pub id: PackId,
    /// What it holds.
    pub kind: PackKind,
    /// Its size in bytes.
    pub size: u64,
    /// When it was stored (RFC 3339 UTC).
    pub time: String,
    /// Its blobs, in pack order.
    pub blobs: Vec<IndexBlob>,
}

/// The JSON of an `index/<id>` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Packs stored by one run (a long run writes several index objects).
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    /// Parses an index; `object` names it in errors.
    pub fn from_json(bytes: &[u8], object: &str) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::damaged(object, format!("not an index: {e}")))
    }

    /// Serializes for storage.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What `check` and `prune` need of one pack an index lists: everything
/// but its blob list (parsed and checked, then dropped: an index may be
/// hundreds of megabytes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PackSummary {
    /// The pack.
    pub id: PackId,
    /// What it holds.
    pub kind: PackKind,
    /// Its size in bytes.
    pub size: u64,
    /// When it was stored (RFC 3339 UTC).
    pub time: String,
    /// How many blobs it holds.
    #[serde(rename = "blobs")]
    pub blob_count: BlobCount,
}

/// The number of blobs in a pack's list, each parsed as an [`IndexBlob`]
/// and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobCount(pub u64);

impl<'de> Deserialize<'de> for BlobCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Counting;
        impl<'de> Visitor<'de> for Counting {
            type Value = BlobCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of blobs")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<BlobCount, A::Error> {
                let mut n = 0;
                while seq.next_element::<IndexBlob>()?.is_some() {
                    n += 1;
                }
                Ok(BlobCount(n))
            }
        }
        d.deserialize_seq(Counting)
    }
}

/// Parses an index's JSON from `reader` and hands each pack it lists to
/// `each` as it is parsed: memory stays flat however large the index.
/// `object` names it in errors. The same JSON [`IndexFile::from_json`]
/// takes, and nothing it refuses.
pub fn each_pack(
    reader: impl std::io::Read,
    object: &str,
    mut each: impl FnMut(PackSummary),
) -> Result<()> {
    let not_an_index = |e: serde_json::Error| Error::damaged(object, format!("not an index: {e}"));
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(reader));
    IndexSeed(&mut each)
        .deserialize(&mut de)
        .map_err(not_an_index)?;
    de.end().map_err(not_an_index)
}

/// The index object, whose `packs` go to the callback one by one. Taken
/// in both forms serde's derived `IndexFile` takes: a map, or a list of
/// its one field.
struct IndexSeed<'f, F>(&'f mut F);

impl<'de, F: FnMut(PackSummary)> DeserializeSeed<'de> for IndexSeed<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_struct("IndexFile", &["packs"], self)
    }
}

impl<'de, F: FnMut(PackSummary)> Visitor<'de> for IndexSeed<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an index object")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        match seq.next_element_seed(PacksSeed(&mut *self.0))? {
            Some(()) => Ok(()),
            None => Err(serde::de::Error::invalid_length(0, &self)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "packs" {
                if seen {
                    return Err(serde::de::Error::duplicate_field("packs"));
                }
                map.next_value_seed(PacksSeed(&mut *self.0))?;
                seen = true;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !seen {
            return Err(serde::de::Error::missing_field("packs"));
        }
        Ok(())
    }
}

/// The list of packs, each handed on as it is parsed.
struct PacksSeed<'f, F>(&'f mut F);

impl<'de, F: FnMut(PackSummary)> DeserializeSeed<'de> for PacksSeed<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(PackSummary)> Visitor<'de> for PacksSeed<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of packs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while let Some(pack) = seq.next_element::<PackSummary>()? {
            (self.0)(pack);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(packs: usize, blobs: usize) -> IndexFile {
        let blob = |n: usize| IndexBlob {
            id: BlobId([n as u8; 32]),
            offset: n as u64 * 10,
            length: 10,
            raw_length: 8,
        };
        IndexFile {
            packs: (0..packs)
                .map(|p| IndexPack {
                    id: PackId([p as u8; 32]),
                    kind: if p % 2 == 0 {
                        PackKind::Data
                    } else {
                        PackKind::Tree
                    },
                    size: 100 + p as u64,
                    time: "2026-12-06T00:00:00Z".into(),
                    blobs: (0..blobs).map(blob).collect(),
                })
                .collect(),
        }
    }

    fn summaries(json: &[u8]) -> Result<Vec<PackSummary>> {
        let mut got = Vec::new();
        each_pack(json, "index/x", |p| got.push(p))?;
        Ok(got)
    }

    #[test]
    fn each_pack_sees_what_the_whole_index_holds_but_the_blob_lists() {
        let whole = index(3, 5);
        let got = summaries(&whole.to_json()).unwrap();
        assert_eq!(got.len(), 3);
        for (summary, pack) in got.iter().zip(&whole.packs) {
            assert_eq!(summary.id, pack.id);
            assert_eq!(summary.kind, pack.kind);
            assert_eq!(summary.size, pack.size);
            assert_eq!(summary.blob_count, BlobCount(5));
        }
        assert!(summaries(br#"{"packs": []}"#).unwrap().is_empty());
        // A field a later version adds is skipped, as the whole parse does.
        assert_eq!(
            summaries(br#"{"packs": [], "more": {"x": [1]}}"#).unwrap(),
            []
        );
    }

    #[test]
    fn each_pack_refuses_what_the_whole_parse_refuses() {
        let json = String::from_utf8(index(1, 2).to_json()).unwrap();
        let bad = [
            json.replace("\"raw_length\":8", "\"raw_length\":\"8\""), // a blob's field
            json.replace("\"size\":100", "\"size\":-1"),
            json.replace("\"packs\"", "\"pucks\""),
            format!("{json} trailing"),
            json[..json.len() - 3].to_string(),
            r#"{"packs": [], "packs": []}"#.to_string(),
        ];
        for bad in bad {
            assert!(
                IndexFile::from_json(bad.as_bytes(), "index/x").is_err(),
                "{bad}"
            );
            let err = summaries(bad.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("index/x"), "{err}");
        }
    }
}
