#!/usr/bin/env bash
# A real first run on the default, a local-directory repository: installs what
# is missing, builds coffer (release), makes an admin key and a repository,
# backs up a directory, lists the snapshot and restores one file from it.
#   scripts/demo.sh [DIR]      (default: /usr/share/doc)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
cargo build --release --locked --quiet
coffer="$PWD/target/release/coffer"

src="$(realpath "${1:-/usr/share/doc}")"
work="${COFFER_DEMO_DIR:-$PWD/demo}"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR

"$coffer" key generate --secret-out admin.key --cert-out admin.cert --name "coffer demo"
"$coffer" init --repo repo --recipient admin.cert --writer-key-out writer.key
echo "== backup of $src (the backup needs only writer.key)"
"$coffer" -v backup --repo repo --writer-key writer.key --state-dir state "$src"
echo "== again, nothing changed"
"$coffer" -v backup --repo repo --writer-key writer.key --state-dir state "$src"
echo "== snapshots (needs admin.key)"
"$coffer" snapshots --repo repo --key admin.key

file="$(find "$src" -type f -size +0 | sort | sed -n 1p)"
echo "== restore of $file"
"$coffer" -v restore --repo repo --key admin.key "latest:$file" --target restored
cmp "$file" "restored/$(basename "$file")"
echo "restored $(basename "$file") is identical to the original; everything is in $work"
