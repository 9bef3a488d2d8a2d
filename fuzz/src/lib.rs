//! The fuzz targets' bodies live in `targets.rs`, which
//! core/tests/fuzz_corpus.rs also includes to replay the corpus on stable.
pub mod targets;
