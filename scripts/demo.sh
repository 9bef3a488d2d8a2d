#!/usr/bin/env bash
# A real first run on the default, a local-directory repository: installs what
# is missing, builds coffer (release), makes an admin key and a repository,
# backs up two versions of a directory, mounts the repository, copies a file
# out of the mount, compares the two versions with `diff -r` through the
# mount, and unmounts.
#   scripts/demo.sh [DIR]      (default: /usr/share/doc)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
cargo build --release --locked --quiet
coffer="$PWD/target/release/coffer"

src="$(realpath "${1:-/usr/share/doc}")"
work="${COFFER_DEMO_DIR:-$PWD/demo}"
mnt="$work/mnt"
mountpoint -q "$mnt" 2>/dev/null && fusermount3 -u "$mnt"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR

mount_pid=""
cleanup() {
    if [ -n "$mount_pid" ] && kill -0 "$mount_pid" 2>/dev/null; then
        fusermount3 -u "$mnt" 2>/dev/null || true
        wait "$mount_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

"$coffer" key generate --secret-out admin.key --cert-out admin.cert --name "coffer demo"
"$coffer" init --repo repo --recipient admin.cert --writer-key-out writer.key

# The demo changes its own copy of the source between the two versions.
data="$work/data"
cp -a "$src" "$data"
echo "== backup 1 of $data (a copy of $src; the backup needs only writer.key)"
"$coffer" -v backup --repo repo --writer-key writer.key --state-dir state "$data"

# A text file to change, so that diff shows the line (any file will do).
changed="$(find "$data" -type f -size +0 -name copyright | sort | sed -n 1p)"
[ -n "$changed" ] || changed="$(find "$data" -type f -size +0 | sort | sed -n 1p)"
removed="$(find "$data" -type f -size +0 ! -path "$changed" | sort | sed -n 1p)"
echo "coffer demo: a line added between the two backups" >>"$changed"
rm -f "$removed"
echo "a file new in version 2" >"$data/NEW-IN-VERSION-2.txt"
echo "== backup 2 (changed ${changed#"$data"/}, removed ${removed#"$data"/}, added NEW-IN-VERSION-2.txt)"
"$coffer" -v backup --repo repo --writer-key writer.key --state-dir state "$data"
echo "== snapshots (needs admin.key)"
"$coffer" snapshots --repo repo --key admin.key

echo "== mount at $mnt"
mkdir -p "$mnt"
"$coffer" mount --repo repo --key admin.key "$mnt" &
mount_pid=$!
for _ in $(seq 100); do
    [ -d "$mnt/snapshots" ] && break
    kill -0 "$mount_pid" 2>/dev/null || { echo "coffer mount stopped" >&2; exit 1; }
    sleep 0.1
done
ls -l "$mnt/snapshots"
mapfile -t versions < <(ls "$mnt/snapshots" | grep -v '^latest$' | sort)
v1="$mnt/snapshots/${versions[0]}$data"
v2="$mnt/snapshots/${versions[1]}$data"

echo "== copy ${changed#"$data"/} out of the latest version"
mkdir -p copied
cp "$mnt/snapshots/latest$changed" copied/
cmp "$changed" "copied/$(basename "$changed")"
echo "copied $(basename "$changed"): identical to the file on disk"

echo "== diff -r between the two versions, through the mount"
# (--no-dereference: the copy holds relative links that point outside it)
set +e
diff -r --no-dereference "$v1" "$v2"
status=$?
set -e
[ "$status" = 1 ] || { echo "diff -r should have found the changes (exit $status)" >&2; exit 1; }

echo "== unmount"
fusermount3 -u "$mnt"
wait "$mount_pid"
mount_pid=""
echo "done; everything is in $work"
