//! coffer-core: the repository format, its OpenPGP envelopes, the storage
//! backends, the read path and the operations on a repository.
//!
//! The modules, bottom up (docs/DESIGN.md "Where things are"):
//! - [`error`], [`sync`], [`progress`], [`private_dir`], [`user`],
//!   [`patterns`]: the error type, a lock helper, progress counters, this
//!   host's private directories (0700/0600), the user the process runs as,
//!   and glob patterns (`--exclude`, `find`), used by every layer;
//! - [`format`]: the documents and names of the format (ids, `config`,
//!   trees, snapshots, indexes, the chunk-id key, their text encodings);
//!   data only, no keys, no storage; and [`chunker`], FastCDC with the
//!   repository's parameters (the writer cuts files with it, restore finds
//!   the chunks a file already on the target holds);
//! - [`crypto`]: everything that needs a key: blob sealing and opening,
//!   keys and certificates, key files, `writer.key`;
//! - [`backend`]: where objects live (local directory, S3, memory), split
//!   in read, write and delete halves, write-once by contract (what a copy
//!   carries besides the bytes is a trait of its own, `Carry`);
//! - [`repository`]: a repository opened with the admin's key: `config`
//!   pinned on this host, snapshots listed and verified, trees and chunks
//!   read by location;
//! - [`ops`]: what an admin runs: restore, export, diff, find, ls, check,
//!   forget, prune, status, copy, key changes.
//!
//! The rule: a module uses only the layers listed before it (`backend` uses
//! only `error`; `format` and `crypto` never touch storage), and modules of
//! one layer never import each other in a circle. The writer crate builds on
//! `format`, `crypto` and `backend`'s write half; the mount crate on
//! `repository`.
//!
//! The on-disk format is described in docs/DESIGN.md and docs/format.md.
#![deny(missing_docs)]

pub mod error;
pub mod patterns;
pub mod private_dir;
pub mod progress;
pub mod sync;
pub mod user;

pub mod chunker;
pub mod format;

pub mod crypto;

pub mod backend;

pub mod repository;

pub mod ops;

pub use error::{Error, Result};
