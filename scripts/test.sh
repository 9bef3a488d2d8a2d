#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, checks
# formatting and lints, then runs every unit and end-to-end test, then builds
# the Debian package and tests it (tests/package.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_DEPS=tests source scripts/install-deps.sh

# Keep tests off real repositories and keys.
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR COFFER_KEY_PASSPHRASE

cargo fmt --all -- --check
# Every module named in the map (docs/DESIGN.md "Where things are").
bash scripts/check-map.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --test-threads=2
# The Debian package: built, installed into a throwaway root, checked.
bash tests/package.sh
