//! Typed 32-byte identifiers, shown as 64 lowercase hex digits.
//!
//! - [`BlobId`]: keyed BLAKE3 of a blob's plaintext (chunk or tree).
//! - [`PackId`]: a random id given to a pack when it is opened, so blobs
//!   know their location before the pack is sealed (see docs/DESIGN.md).
//! - [`ObjectId`]: SHA-256 of a snapshot's or index's stored bytes.

use std::fmt;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The id as 64 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                self.with_hex(str::to_string)
            }

            /// Calls `f` with the id as 64 lowercase hex digits, made on
            /// the stack (trees and state rows hold millions of ids).
            pub fn with_hex<T>(&self, f: impl FnOnce(&str) -> T) -> T {
                let mut buf = [0u8; 64];
                // Neither can fail: 32 bytes fill 64 digits, all ASCII.
                let _ = hex::encode_to_slice(self.0, &mut buf);
                f(std::str::from_utf8(&buf).unwrap_or_default())
            }

            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.with_hex(|hex| f.write_str(hex))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..12])
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.with_hex(|hex| s.serialize_str(hex))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::from_hex(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "expected 64 hex digits for {}, got {s:?}",
                        stringify!($name)
                    ))
                })
            }
        }
    };
}

define_id!(
    /// Keyed BLAKE3 of a blob's plaintext: the address of a chunk or a tree.
    BlobId
);
define_id!(
    /// The id of a pack: random, fixed when the pack is opened.
    PackId
);
define_id!(
    /// SHA-256 of a stored object's bytes (snapshots, indexes).
    ObjectId
);

impl PackId {
    /// A fresh random pack id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl ObjectId {
    /// SHA-256 of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(bytes).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_input() {
        let id = BlobId([0xab; 32]);
        let hex = id.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(BlobId::from_hex(&hex), Some(id));
        assert_eq!(BlobId::from_hex("abc"), None);
        assert_eq!(BlobId::from_hex(&"zz".repeat(32)), None);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<BlobId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<BlobId>("\"00\"").is_err());
    }

    #[test]
    fn object_id_is_sha256() {
        assert_eq!(
            ObjectId::of_bytes(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
