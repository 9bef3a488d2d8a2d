//! coffer-core: the repository format, its OpenPGP envelopes, the storage
//! backends and the read path.
//!
//! How the pieces fit:
//! - [`backend`]: where objects live ([`backend::Backend`]: a local
//!   directory now, S3 later), write-once by contract;
//! - [`config`]: the repository's `config` and the backup hosts' `writer.key`;
//! - [`openpgp`] and [`blob`]: how a plaintext becomes a stored blob (zstd,
//!   then one OpenPGP message per blob, one session key per pack) and back;
//! - [`tree`], [`snapshot`], [`index`]: the JSON documents of the format;
//! - [`repository::Repository`]: a repository opened with the secret key,
//!   used by `restore`, `cat`, and later the mount and `diff`.
//!
//! The on-disk format is described in docs/DESIGN.md and docs/format.md.
#![deny(missing_docs)]

pub mod backend;
pub mod blob;
pub mod cache;
pub mod check;
pub mod chunk_key;
pub mod config;
pub mod diff;
pub mod error;
pub mod export;
pub mod forget;
pub mod id;
pub mod index;
pub mod keyfile;
pub mod known;
pub mod openpgp;
pub mod progress;
pub mod prune;
pub mod repository;
pub mod restore;
pub mod retention;
mod seipd;
pub mod snapshot;
pub mod status;
pub mod sync;
pub mod tree;
pub mod vfs;

pub use error::{Error, Result};
