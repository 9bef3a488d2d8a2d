#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from a real repository: makes one with the
# fuzzing keys (fuzz/keys/, made here if missing), backs up a small tree,
# and cuts out config, snapshot/tree/index plaintexts, stored blobs and
# whole messages. Needs the coffer binary (cargo build), gpg, zstd, python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
coffer=${COFFER:-$here/../target/debug/coffer}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if [ ! -f "$here/keys/admin.key" ]; then
    "$coffer" key generate --secret-out "$here/keys/admin.key" --cert-out "$here/keys/admin.cert" --name "coffer fuzzing (not a secret)"
fi
"$coffer" init --repo repo --recipient "$here/keys/admin.cert" --writer-key-out writer.key 2>/dev/null
mkdir -p src/dir/sub
head -c 700000 /dev/urandom > src/dir/random.bin
seq 1 20000 > src/dir/numbers.txt
echo hello > src/dir/sub/hello.txt
ln -s ../dir/sub/hello.txt src/dir/link
"$coffer" backup --repo repo --writer-key writer.key src >/dev/null
export GNUPGHOME=$work/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --import "$here/keys/admin.key"
python3 - "$here" <<'PY'
import json, os, struct, subprocess, sys
here = sys.argv[1]
config = json.load(open("repo/config"))
if not os.path.exists(os.path.join(here, "keys/writer.cert")):
    open(os.path.join(here, "keys/writer.cert"), "w").write(config["writers"][0])
def put(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, name), "wb").write(data)
def gpg(data):
    return subprocess.run(["gpg", "--batch", "--quiet", "--decrypt"], input=data,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
def unzstd(data):
    return subprocess.run(["zstd", "-d", "-q", "-c"], input=data, stdout=subprocess.PIPE).stdout
put("config", "repo-config", open("repo/config", "rb").read())
for name in os.listdir("repo/snapshots"):
    raw = open("repo/snapshots/" + name, "rb").read()
    put("message", "snapshot", raw)
    put("snapshot", "snapshot", gpg(raw))
for name in os.listdir("repo/index"):
    raw = open("repo/index/" + name, "rb").read()
    put("message", "index", raw)
    index = json.loads(gpg(raw))
    put("index", "index", json.dumps(index).encode())
    for pack in index["packs"]:
        data = open("repo/data/%s/%s" % (pack["id"][:2], pack["id"]), "rb").read()
        for n, b in enumerate(pack["blobs"][:3]):
            stored = data[b["offset"]:b["offset"] + b["length"]]
            put("blob", "%s-%d" % (pack["kind"], n), struct.pack("<I", b["raw_length"]) + stored)
            put("message", "%s-blob-%d" % (pack["kind"], n), stored)
            if pack["kind"] == "tree":
                put("tree", "tree-%d" % n, unzstd(gpg(stored)))
PY
echo "corpus seeded: $(find "$here/corpus" -type f | wc -l) files"
