//! Everything that needs a key: how a plaintext becomes a stored blob and
//! back, the keys themselves, and the key files.
//!
//! Every stored blob is a complete OpenPGP message ([RFC 9580]) that
//! `gpg --decrypt` (GnuPG 2.2) reads:
//!
//! ```text
//! PKESK v3 (one per recipient key)          [RFC 9580 §5.1]
//! SEIPD v1 (AES-256, with MDC)              [RFC 9580 §5.13.1]
//! └── Literal Data, format 'b'              [RFC 9580 §5.9]
//!     └── a zstd frame of the chunk or tree
//! ```
//!
//! SEIPD v1 is forced (never v2/AEAD) because GnuPG 2.2, the version in
//! Debian 12, reads nothing newer; see docs/DESIGN.md. The SEIPD packet is
//! written, and read back when it has coffer's shape, by [`seipd`] with
//! OpenSSL (sequoia's MDC hashing was the bottleneck); sequoia makes keys and
//! PKESKs, and reads every message of another shape or that fails a check.
//!
//! - [`keys`]: admin keys, recipients, writers' signing keys and certificates;
//! - [`seal`]: one message per blob, one session key per pack ([`PackSealer`]);
//! - [`open`]: decrypting, with a session-key cache ([`Opener`]);
//! - `seipd`: the SEIPD v1 packet with OpenSSL (private);
//! - [`blob`]: plaintext → zstd → sealed message, and back with every check;
//! - [`keyfile`]: reading secret files only their owner may read;
//! - [`signed`]: signed, unencrypted messages (admins' key changes);
//! - [`writer_key`]: a new repository's secrets, unsealing the chunk-id key,
//!   and the backup hosts' `writer.key`.
//!
//! Uses [`crate::format`] (locations, the config document, the chunk-id key);
//! nothing in `format` uses this layer.
//!
//! [RFC 9580]: https://www.rfc-editor.org/rfc/rfc9580.html

pub mod blob;
pub mod keyfile;
pub mod keys;
pub mod open;
pub mod seal;
mod seipd;
pub mod signed;
pub mod writer_key;

pub use keys::{
    generate_key, generate_signing_key, normalize_certs, GeneratedKey, Recipients, SecretKeys,
    SnapshotSigner, Writers,
};
pub use open::{in_guarded_parse, Opener};
pub use seal::{seal_message, seal_signed, PackSealer};
pub use writer_key::WriterKey;
