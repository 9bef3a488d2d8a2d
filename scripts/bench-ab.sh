#!/usr/bin/env bash
# Two builds of coffer against each other ("nothing got worse"), one local
# repository written by the first, alternating ROUNDS (3) times: restore,
# `cat` of a 100 MB file, and the mount (the file cold, ls -lR, cp -a of a
# ~100 MB subtree, diff -r of two versions, peak RSS); fresh caches each step.
# Prints each figure's runs per build (ms; RSS MiB).
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY [WORKDIR]   (default /tmp/coffer-bench-ab)
# Build an older commit with: git worktree add /tmp/old REV &&
#   (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release --locked)
# Needs root (drop_caches, FUSE).
set -euo pipefail
scripts="$(cd "$(dirname "$0")" && pwd)"
source "$scripts/bench-lib.sh"
OLD=$(realpath "$1") NEW=$(realpath "$2")
W="${3:-/tmp/coffer-bench-ab}"; rm -rf $W; mkdir -p $W/data/share; cd $W
export XDG_CACHE_HOME=$W/cache XDG_CONFIG_HOME=$W/config
cp -a /usr/share/doc /usr/share/perl5 $W/data/share/
head -c 100000000 /dev/urandom > $W/data/big.bin
$NEW key generate --secret-out admin.key --cert-out admin.cert 2>/dev/null
$OLD init --repo $W/repo --recipient admin.cert --writer-key-out writer.key 2>/dev/null
$OLD backup --repo $W/repo --writer-key writer.key --state-dir state $W/data >/dev/null
change_data $W/data; sleep 1
$OLD backup --repo $W/repo --writer-key writer.key --state-dir state $W/data >/dev/null
read -r _ SUB < <(subtree_100m "$W/data")
declare -A S
for round in $(seq "${ROUNDS:-3}"); do
  echo "round $round..." >&2
  for which in old new; do
    [ $which = old ] && bin=$OLD || bin=$NEW
    rm -rf $W/cache $W/out; drop_caches
    t=$(ms); $bin restore --repo $W/repo --key admin.key latest --target $W/out >/dev/null; S[$which,restore]+=" $(elapsed $t)"
    rm -rf $W/out; drop_caches
    t=$(ms); $bin cat --repo $W/repo --key admin.key latest:$W/data/big.bin >/dev/null; S[$which,cat]+=" $(elapsed $t)"
    drop_caches; mkdir -p $W/mnt
    $bin mount --repo $W/repo --key admin.key --cache-size 512MiB $W/mnt 2>/dev/null & pid=$!
    for _ in $(seq 100); do [ "$(ls $W/mnt/snapshots 2>/dev/null | grep -vc latest)" -ge 2 ] && break; sleep 0.1; done
    s1=$W/mnt/snapshots/$(ls $W/mnt/snapshots | grep -v latest | sort | sed -n 1p)$W/data
    s2=$W/mnt/snapshots/$(ls $W/mnt/snapshots | grep -v latest | sort | sed -n 2p)$W/data
    t=$(ms); cat $s2/big.bin >/dev/null; S[$which,mcat]+=" $(elapsed $t)"
    t=$(ms); ls -lR $s2/share >/dev/null; S[$which,lslr]+=" $(elapsed $t)"
    t=$(ms); cp -a $s2/$SUB $W/cpout; S[$which,cp]+=" $(elapsed $t)"; rm -rf $W/cpout
    t=$(ms); diff -r $s1/share $s2/share >/dev/null 2>&1 || true; S[$which,diff]+=" $(elapsed $t)"
    S[$which,rss]+=" $(($(awk '/VmHWM/ {print $2}' /proc/$pid/status) / 1024))"
    fusermount3 -u $W/mnt; wait $pid || true
  done
done
echo "old: $OLD, new: $NEW (local repository, $(du -sb $W/data | cut -f1) bytes)"
for k in restore cat mcat lslr cp diff rss; do printf '%-8s old:%-24s new:%s\n' $k "${S[old,$k]}" "${S[new,$k]}"; done
