#!/usr/bin/env bash
# Fails when a source file of a crate is not named in docs/DESIGN.md "Where things
# are", the map of the workspace: a module nobody can find is a room without a door.
# Run by scripts/test.sh (so by CI).
set -euo pipefail
cd "$(dirname "$0")/.."
map=$(sed -n '/^### Where things are/,/^## /p' docs/DESIGN.md)
missing=0
while IFS= read -r file; do
    if ! grep -qF "$(basename "$file")" <<<"$map"; then
        echo "check-map: $file is not named in docs/DESIGN.md \"Where things are\"" >&2
        missing=1
    fi
done < <(find core/src writer/src fs/src src -name '*.rs' | sort)
exit "$missing"
