//! The repository format: the documents and names every reader and writer
//! agree on, as data (docs/format.md has the bytes). Nothing here needs a
//! key or touches storage.
//!
//! - [`encoding`]: base64 and RFC 3339 times, shared by the documents (a leaf);
//! - [`id`]: blob, pack and object ids;
//! - [`chunk_key`]: the keyed BLAKE3 that names blobs;
//! - [`config`]: the repository's `config` document and its checks;
//! - [`tree`]: one directory, and the [`tree::Location`]s that tie blobs together;
//! - [`snapshot`]: one backup version, and snapshot object names;
//! - [`index`]: which blobs one backup run stored, and where;
//! - [`key_change`]: the admins' signed changes to writers and recipients.
//!
//! Within the layer: `encoding` and `id` use nothing; `chunk_key` and `index`
//! use `id`; `tree` uses `id` and `encoding`; `snapshot` uses `tree`;
//! `key_change` uses `config`, `id` and `encoding`.

pub mod chunk_key;
pub mod config;
pub mod encoding;
pub mod id;
pub mod index;
pub mod key_change;
pub mod snapshot;
pub mod tree;
