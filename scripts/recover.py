#!/usr/bin/env python3
"""Restore a coffer snapshot without coffer: python3's standard library, gpg and zstd.

Reads a local copy of a repository (for S3: `aws s3 sync s3://BUCKET/PREFIX DIR` first).
The secret key must be in gpg's keyring (`gpg --import admin.key`); gpg-agent asks for its
passphrase if it has one. The format is described in docs/format.md; the procedure,
step by step, in docs/RECOVERY.md.

    recover.py --repo DIR --list
    recover.py --repo DIR --snapshot latest|ID-PREFIX [--path /srv/app] --target OUT

What it checks: the key changes under keys/ (each signed by an admin of the state before it,
in sequence, each following the one before: else it stops); each snapshot's name is the
SHA-256 of its bytes and its signature is by a writer that `config` or a key change lists,
not revoked before it was stored (a snapshot anyone else stored, or a revoked writer signed
afterwards, is left out with a warning); and gpg checks every blob's integrity (MDC). What it cannot check without BLAKE3
(not in the standard library): that a blob is the one its reference names; coffer itself
checks that too.
"""

import argparse
import base64
import collections
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import threading

# What coffer's readers take, and so what this script takes (docs/format.md
# "Limits"): anything larger is damage (or planted by someone with write
# access alone) and is refused before it is read whole.
CONFIG_MAX = 4 << 20
SNAPSHOT_MAX = 16 << 20
KEYS_MAX = 16 << 20
MAX_BLOB_LEN = 1 << 30
# Directories nested deeper are damage (a writer walks by full path, so it
# stores at most PATH_MAX / 2 levels); Linux's limits on what can be made.
MAX_DEPTH = 4096
NAME_MAX = 255
PATH_MAX = 4095
# Trees kept parsed, so a subtree many directories share is read once.
TREES_KEPT = 1024


class Damaged(Exception):
    """Something in the repository is not what the format says."""


def run_capped(cmd, data, limit):
    """Runs cmd with data on stdin: (exit code, stdout, stderr lines). Stdout past
    limit bytes is Damaged and the command is stopped: a message that inflates (gpg
    decompresses what coffer never compresses) never fills this process's memory."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    err = []

    def feed():
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except OSError:
            pass  # it stopped reading (killed, or failed): its exit code says

    def drain():
        err.append(proc.stderr.read())

    threads = [threading.Thread(target=feed), threading.Thread(target=drain)]
    for t in threads:
        t.start()
    out = bytearray()
    while len(out) <= limit:
        part = proc.stdout.read(1 << 20)
        if not part:
            break
        out += part
    if len(out) > limit:
        proc.kill()
    proc.stdout.close()
    code = proc.wait()
    for t in threads:
        t.join()
    if len(out) > limit:
        raise Damaged("%s: its output passes %d bytes, more than this object may hold "
                      "(an OpenPGP message that inflates: coffer never compresses inside "
                      "OpenPGP)" % (cmd[0], limit))
    return code, bytes(out), b"".join(err).decode(errors="replace").splitlines()


def run(cmd, data, limit):
    """Runs cmd with data on stdin; its stdout (at most limit bytes), or Damaged."""
    code, out, err = run_capped(cmd, data, limit)
    if code != 0:
        raise Damaged("%s failed: %s" % (cmd[0], " ".join(err).strip()))
    return out


def gpg_decrypt(message):
    """Decrypts one OpenPGP message with the keyring's secret key. coffer never
    compresses inside OpenPGP, so the plaintext is shorter than the message."""
    return run(["gpg", "--batch", "--quiet", "--decrypt"], message, len(message))


class Keyring:
    """A gpg keyring of its own in the scratch folder, holding public certificates."""

    count = 0

    def __init__(self, folder, certs):
        Keyring.count += 1
        self.path = os.path.join(folder, "keyring-%d.kbx" % Keyring.count)
        self.gpg = ["gpg", "--batch", "--quiet", "--no-auto-key-retrieve", "--trust-model",
                    "always", "--no-default-keyring", "--keyring", self.path]
        if certs:
            run(self.gpg + ["--import"], "".join(certs).encode(), KEYS_MAX + CONFIG_MAX)

    def fingerprints(self):
        """The primary keys' fingerprints, in the order gpg lists them."""
        listing = run(self.gpg + ["--with-colons", "--list-keys"], b"", KEYS_MAX).decode()
        out, primary = [], False
        for line in listing.splitlines():
            fields = line.split(":")
            if fields[0] in ("pub", "sub"):
                primary = fields[0] == "pub"
            elif fields[0] == "fpr" and primary:
                out.append(fields[9].upper())
        return out

    def open(self, name, message, decrypt=True):
        """(plaintext, primary fingerprints of good signatures) of a message; with
        decrypt=False, of a signed message that is not encrypted."""
        # Without --no-default-keyring: the secret key is in the user's keyring. Only
        # the signatures' fingerprints count, checked by the caller.
        cmd = [a for a in self.gpg if a != "--no-default-keyring"]
        cmd += ["--status-fd", "2", "--decrypt"]
        try:
            code, plain, lines = run_capped(cmd, message, len(message))
        except Damaged as e:
            raise Damaged("%s: %s" % (name, e))
        if code != 0 and (decrypt or not plain):
            said = [l for l in lines if not l.startswith("[GNUPG:]")]
            raise Damaged("%s: gpg failed: %s" % (name, " ".join(said).strip()))
        if not decrypt and any(l.startswith("[GNUPG:] BEGIN_DECRYPTION") for l in lines):
            raise Damaged("%s: encrypted, but a key change is only signed" % name)
        # [GNUPG:] VALIDSIG <fpr> ... <primary key fpr>: a good signature, and by whom.
        signers = {l.split()[-1].upper() for l in lines if l.startswith("[GNUPG:] VALIDSIG ")}
        return plain, signers


def one_fingerprint(folder, cert, name):
    """The primary fingerprint of the one certificate in cert (armored)."""
    fprs = Keyring(folder, [cert]).fingerprints()
    if len(fprs) != 1:
        raise Damaged("%s: expected one certificate, found %d" % (name, len(fprs)))
    return fprs[0]


class KeyState:
    """Writers and recipients: config's, then each key change under keys/ applied in
    order (docs/format.md section 10). Anything in the chain that does not hold stops
    the script, as it stops coffer: a change left out could be a revocation."""

    def __init__(self, root, config, config_digest, folder):
        self.folder = folder
        # name -> {"fprs": [...], "revoked": None or (seq, set of kept snapshot names)}
        self.writers = collections.OrderedDict()
        certs = config.get("writers", [])
        names = config.get("writer_names", [])
        for i, cert in enumerate(certs):
            name = names[i] if i < len(names) else ("default" if len(certs) == 1
                                                    else "config-%d" % (i + 1))
            self.add_writer(name, cert, "config")
        self.recipients = [one_fingerprint(folder, c, "config: recipient")
                           for c in config.get("recipients", [])]
        self.seq, self.head = 0, config_digest
        folder_keys = os.path.join(root, "keys")
        names = sorted(os.listdir(folder_keys)) if os.path.isdir(folder_keys) else []
        seqs = [n for n in names if len(n) == 8 and n.isdigit() and int(n) > 0]
        for i, n in enumerate(seqs):
            if int(n) != i + 1:
                raise Damaged("keys/%08d is missing, yet keys/%s is stored" % (i + 1, n))
            self.apply(config["id"], "keys/" + n, os.path.join(folder_keys, n))
        self.keyring = Keyring(folder, [c for w in self.writers.values() for c in w["certs"]])

    def add_writer(self, name, cert, where):
        fpr = one_fingerprint(self.folder, cert, where)
        if any(fpr in w["fprs"] for w in self.writers.values()):
            raise Damaged("%s: writer certificate %s was added before" % (where, fpr))
        w = self.writers.setdefault(name, {"fprs": [], "certs": [], "revoked": None})
        w["fprs"].append(fpr)
        w["certs"].append(cert)

    def apply(self, repo_id, name, path):
        if os.path.getsize(path) > KEYS_MAX:
            raise Damaged("%s: over %d bytes, not a key change" % (name, KEYS_MAX))
        with open(path, "rb") as f:
            data = f.read(KEYS_MAX)
        # Read without checking first, to learn whose certificate to check it with.
        unverified, _ = Keyring(self.folder, []).open(name, data, decrypt=False)
        claimed = json.loads(unverified)
        signer = one_fingerprint(self.folder, claimed["signer_cert"], name)
        if signer not in self.recipients:
            raise Forged("%s: signed by %s, who is not an admin (a recipient) here"
                         % (name, signer))
        plain, signers = Keyring(self.folder, [claimed["signer_cert"]]).open(
            name, data, decrypt=False)
        if signer not in signers:
            raise Forged("%s: no good signature by an admin" % name)
        c = json.loads(plain)
        if c.get("format") != "coffer-key-change" or c.get("repository") != repo_id:
            raise Forged("%s: not a key change of this repository" % name)
        if c.get("seq") != self.seq + 1 or c.get("previous", "").lower() != self.head:
            raise Forged("%s: does not follow the change before it" % name)
        change = c["change"]
        kind = change.get("type")
        if kind == "writer-add":
            if change["name"] in self.writers:
                raise Damaged("%s: writer %r exists already" % (name, change["name"]))
            self.add_writer(change["name"], change["cert"], name)
        elif kind in ("writer-reissue", "writer-revoke"):
            w = self.writers.get(change["name"])
            if w is None or w["revoked"] is not None:
                raise Damaged("%s: no writer %r that is not revoked" % (name, change["name"]))
            if kind == "writer-reissue":
                self.add_writer(change["name"], change["cert"], name)
            else:
                w["revoked"] = (c["seq"], set(change.get("kept", [])))
        elif kind == "recipient-add":
            self.recipients.append(one_fingerprint(self.folder, change["cert"], name))
        elif kind == "recipient-remove":
            fpr = change["fingerprint"].upper()
            if fpr not in self.recipients or len(self.recipients) == 1:
                raise Damaged("%s: cannot remove recipient %s" % (name, fpr))
            self.recipients.remove(fpr)
        else:
            raise Damaged("%s: a key change of type %r, unknown to this script: use a newer "
                          "recover.py" % (name, kind))
        self.seq, self.head = c["seq"], hashlib.sha256(data).hexdigest()

    def decrypt_signed(self, name, message):
        """Decrypts snapshot object `name`; Forged unless a writer signed it and that
        writer was not revoked before it was stored. A repository whose config lists no
        writer predates signed snapshots: nothing to check."""
        if not self.writers:
            try:
                return gpg_decrypt(message)
            except Damaged as e:
                raise Damaged("snapshots/%s: %s" % (name, e))
        plain, signers = self.keyring.open("snapshots/" + name, message)
        for wname, w in self.writers.items():
            if signers & set(w["fprs"]):
                revoked = w["revoked"]
                if revoked is not None and name not in revoked[1]:
                    raise Forged("snapshots/%s: signed by writer %r after keys/%08d revoked it"
                                 % (name, wname, revoked[0]))
                return plain
        raise Forged("snapshots/%s: not signed by a writer of the repository" % name)


class Forged(Exception):
    """An object that only a writer can make, made by someone else."""


def unzstd(frame, raw_length):
    return run(["zstd", "-d", "-q", "-c"], frame, raw_length)


class Repo:
    def __init__(self, root, scratch):
        self.root = root
        self.trees = collections.OrderedDict()
        config = os.path.join(root, "config")
        if not os.path.isfile(config):
            sys.exit("%s: no config here; this is not a coffer repository" % root)
        if os.path.getsize(config) > CONFIG_MAX:
            sys.exit("%s: config is over %d bytes: not a coffer config" % (root, CONFIG_MAX))
        with open(config, "rb") as f:
            data = f.read(CONFIG_MAX)
        parsed = json.loads(data)
        version = parsed.get("version")
        if version not in (1, 2, 3):
            sys.exit("%s: repository format version %r; this recover.py reads 1 to 3"
                     % (config, version))
        # From version 3 on, file contents are in packs under files/, trees
        # under data/ (before it, both under data/).
        self.chunk_folder = "files" if version >= 3 else "data"
        self.keys = KeyState(root, parsed, hashlib.sha256(data).hexdigest(), scratch)

    def snapshots(self):
        """(id, snapshot JSON) of every genuine snapshot, oldest first. A damaged or
        forged one is left out with a warning, so it hides no other."""
        out = []
        folder = os.path.join(self.root, "snapshots")
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.getsize(path) > SNAPSHOT_MAX:
                print("recover.py: snapshots/%s: over %d bytes, not a snapshot; left out"
                      % (name, SNAPSHOT_MAX), file=sys.stderr)
                continue
            with open(path, "rb") as f:
                data = f.read(SNAPSHOT_MAX)
            # <host tag>.<SHA-256 of the bytes>, or the bare SHA-256.
            sid = name.split(".")[-1]
            try:
                if hashlib.sha256(data).hexdigest() != sid:
                    raise Damaged("snapshots/%s: content does not match its name" % name)
                plain = self.keys.decrypt_signed(name, data)
                out.append((sid, json.loads(plain)))
            except (Damaged, Forged, ValueError) as e:
                print("recover.py: %s; left out" % e, file=sys.stderr)
        out.sort(key=lambda s: (s[1]["time"], s[0]))
        return out

    def blob(self, loc, folder):
        """The plaintext of the blob at a location in a pack under folder (a tree's
        JSON under data/, a file's chunk under self.chunk_folder)."""
        pack = loc["pack"]
        if not plausible(loc):
            raise Damaged("blob %s: a reference out of range" % loc.get("id"))
        path = os.path.join(self.root, folder, pack[:2], pack)
        with open(path, "rb") as f:
            f.seek(loc["offset"])
            stored = f.read(loc["length"])
        if len(stored) != loc["length"]:
            raise Damaged("%s/%s/%s: truncated (blob at %d)" % (folder, pack[:2], pack, loc["offset"]))
        plain = unzstd(gpg_decrypt(stored), loc["raw_length"])
        if len(plain) != loc["raw_length"]:
            raise Damaged("blob %s: %d bytes, expected %d" % (loc["id"], len(plain), loc["raw_length"]))
        return plain

    def tree(self, loc):
        """A tree's entries; the last TREES_KEPT read are kept, by location."""
        key = tuple(loc.get(k) for k in ("id", "pack", "offset", "length", "raw_length"))
        entries = self.trees.pop(key, None)
        if entries is None:
            entries = json.loads(self.blob(loc, "data"))["entries"]
            if len(self.trees) >= TREES_KEPT:
                self.trees.popitem(last=False)
        self.trees[key] = entries
        return entries


def plausible(loc):
    """Whether a reference is one coffer's readers take (as Location::is_plausible)."""
    pack = loc.get("pack", "")
    return (len(pack) == 64 and all(c in "0123456789abcdef" for c in pack)
            and 0 <= loc.get("raw_length", -1) <= MAX_BLOB_LEN
            and 0 <= loc.get("length", -1) <= 2 * MAX_BLOB_LEN
            and loc.get("offset", -1) >= 0)


def raw(text):
    """A name or link target: a string, or {"b64": ...} for bytes that are not UTF-8."""
    if isinstance(text, dict):
        return base64.b64decode(text["b64"])
    return text.encode()


def safe(name):
    return name not in (b"", b".", b"..") and b"/" not in name and b"\0" not in name


def find(repo, snapshot, path):
    """The entry at path (slash-separated) in the snapshot; the root as a directory."""
    entry = {"kind": "dir", "subtree": snapshot["tree"], "name": "/"}
    for part in [p for p in path.split("/") if p not in ("", ".")]:
        if entry["kind"] != "dir":
            sys.exit("%s: not a directory in the snapshot" % path)
        matches = [e for e in repo.tree(entry["subtree"]) if raw(e["name"]) == part.encode()]
        if not matches:
            sys.exit("%s: not in the snapshot" % path)
        entry = matches[0]
    return entry


class Restorer:
    def __init__(self, repo, as_root):
        self.repo = repo
        self.as_root = as_root
        self.dirs = []  # (path, entry): metadata applied at the end, deepest first
        self.links = {}  # (dev, ino) of a hard-linked file: its first path
        self.files = 0
        self.bytes = 0
        self.skipped = 0

    def entry(self, path, e, depth=0):
        kind = e["kind"]
        name = os.path.basename(path)
        if len(name) > NAME_MAX or len(path) > PATH_MAX:
            # Past what Linux can make here: said, and the rest goes on.
            print("%s: not restored: name or path too long for this target"
                  % os.fsdecode(path[:200]), file=sys.stderr)
            self.skipped += 1
            return
        if kind == "dir":
            if depth >= MAX_DEPTH:
                raise Damaged("%r: directories nested deeper than %d" % (path[:200], MAX_DEPTH))
            os.mkdir(path, 0o700)
            for child in self.repo.tree(e["subtree"]):
                name = raw(child["name"])
                if not safe(name):
                    raise Damaged("unsafe name %r in %r" % (name, path))
                self.entry(os.path.join(path, name), child, depth + 1)
            self.dirs.append((path, e))
            return
        link = e.get("link")
        if link:
            # Entries with the same device and inode are one file.
            key = (link["dev"], link["ino"])
            if key in self.links:
                first, first_kind = self.links[key]
                if first_kind != kind:
                    # One file has one kind: a group mixing them could make a
                    # link to, or a copy of, something else.
                    raise Damaged("%r: a hard link of %r, but a %s where that is a %s"
                                  % (path, first, kind, first_kind))
                os.link(first, path, follow_symlinks=False)
                return
            self.links[key] = (path, kind)
        if kind == "file":
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                # A sparse file: each hole starts where a chunk (or the file)
                # ends; seeking over it leaves it unallocated.
                holes = [(h["offset"], h["length"]) for h in e.get("holes", [])]
                for loc in e.get("chunks", []):
                    while holes and holes[0][0] == f.tell():
                        f.seek(holes.pop(0)[1], os.SEEK_CUR)
                    f.write(self.repo.blob(loc, self.repo.chunk_folder))
                while holes and holes[0][0] == f.tell():
                    f.seek(holes.pop(0)[1], os.SEEK_CUR)
                f.truncate()
                written = f.tell()
            if written != e["size"]:
                raise Damaged("%r: %d bytes, the tree says %d" % (path, written, e["size"]))
            self.files += 1
            self.bytes += written
        elif kind == "symlink":
            os.symlink(raw(e["target"]), path)
        elif kind == "fifo":
            os.mkfifo(path, 0o600)
        elif kind in ("char", "block") and self.as_root:
            mode = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
            os.mknod(path, mode | 0o600, e.get("rdev", 0))
        else:
            print("skipped %s (%s)" % (os.fsdecode(path), kind), file=sys.stderr)
            return
        self.metadata(path, e)

    def metadata(self, path, e):
        link = e["kind"] == "symlink"
        if self.as_root:
            os.chown(path, e["uid"], e["gid"], follow_symlinks=False)
        # Extended attributes (ACLs, capabilities) after the owner, which
        # clears capabilities, and before the mode, so an ACL's mask ends as
        # stored; what the kernel refuses is said, and the rest goes on.
        for x in e.get("xattrs", []):
            name = raw(x["name"])
            try:
                os.setxattr(path, name, base64.b64decode(x["value"]), follow_symlinks=False)
            except OSError as err:
                print("%s: cannot set extended attribute %s: %s"
                      % (os.fsdecode(path), os.fsdecode(name), err.strerror), file=sys.stderr)
        if not link:
            mode = e["mode"] & 0o7777
            if not self.as_root:
                # Set-uid/set-gid only with the owner (as GNU tar and coffer do).
                mode &= ~0o4000 if e["kind"] == "dir" else ~0o6000
            os.chmod(path, mode)
        mtime = e["mtime_ns"]
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)

    def finish(self):
        for path, e in reversed(self.dirs):
            self.metadata(path, e)


def main():
    # One frame per directory level, up to MAX_DEPTH of them.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 2 * MAX_DEPTH + 200))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", required=True, help="a local copy of the repository")
    p.add_argument("--list", action="store_true", help="list the snapshots and exit")
    p.add_argument("--snapshot", default="latest", help="latest, or a prefix of a snapshot id")
    p.add_argument("--path", default="/", help="a path inside the snapshot (default: all)")
    p.add_argument("--target", help="an empty or new directory to restore into")
    a = p.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        try:
            repo = Repo(a.repo, scratch)
        except (Damaged, Forged, ValueError, KeyError, TypeError) as e:
            sys.exit("recover.py: config or key changes: %s" % e)
        return recover(a, repo)


def recover(a, repo):
    try:
        snaps = repo.snapshots()
        if a.list:
            for sid, s in snaps:
                print("%s  %s  %s  %s" % (sid[:8], s["time"], s["host"], " ".join(s["paths"])))
            return 0
        if not a.target:
            sys.exit("give --target DIR (or --list)")
        if a.snapshot == "latest":
            chosen = snaps[-1:]
        else:
            chosen = [s for s in snaps if s[0].startswith(a.snapshot.lower())]
        if len(chosen) != 1:
            sys.exit("%d snapshots match %r; --list shows them" % (len(chosen), a.snapshot))
        sid, snapshot = chosen[0]
        if os.path.lexists(a.target) and os.listdir(a.target):
            sys.exit("%s: not empty; restore into an empty or new directory" % a.target)
        os.makedirs(a.target, exist_ok=True)
        entry = find(repo, snapshot, a.path)
        r = Restorer(repo, os.geteuid() == 0)
        target = os.fsencode(a.target)
        if entry["kind"] == "dir":
            # The directory's contents go into the target.
            for child in repo.tree(entry["subtree"]):
                name = raw(child["name"])
                if not safe(name):
                    raise Damaged("unsafe name %r" % name)
                r.entry(os.path.join(target, name), child)
        else:
            r.entry(os.path.join(target, raw(entry["name"])), entry)
        r.finish()
        print("restored %d files (%d bytes) of snapshot %s into %s"
              % (r.files, r.bytes, sid[:8], a.target), file=sys.stderr)
        if r.skipped:
            print("%d entries were not restored (listed above)" % r.skipped, file=sys.stderr)
            return 3
        return 0
    except Damaged as e:
        sys.exit("recover.py: %s" % e)
    except FileNotFoundError as e:
        sys.exit("recover.py: %s (is gpg or zstd missing, or the repository copy incomplete?)" % e)


if __name__ == "__main__":
    sys.exit(main())
