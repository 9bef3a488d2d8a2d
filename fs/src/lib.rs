//! coffer-fs: the read-only FUSE filesystem that shows every snapshot as a
//! directory tree. Built in a later change (issue 3); it will sit on
//! `coffer_core`'s read path and never depend on `coffer-writer`.
#![deny(missing_docs)]
