//! Helpers for end-to-end tests: a scratch directory with a repository and
//! keys, a builder for `coffer` commands, tree generators and comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub mod mount;
pub mod proxy;
pub mod s3;

/// A scratch directory holding `admin.key`, `admin.cert`, `writer.key` and
/// an initialised repository (`repo/` in it, or an S3 bucket).
pub struct Env {
    pub dir: tempfile::TempDir,
    /// The `--repo` argument.
    pub repo: String,
    /// Environment of every command (the admin's S3 credentials).
    pub vars: Vec<(String, String)>,
    /// Environment of `backup` (the writer's S3 credentials).
    pub writer_vars: Vec<(String, String)>,
}

impl Env {
    /// A local repository `repo/`.
    pub fn new() -> Self {
        Self::init(Self::bare())
    }

    /// Keys, and `init` of `self.repo`.
    pub fn init(self) -> Self {
        let env = self;
        env.generate_keys();
        let out = env.init_repo("writer.key");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    /// `key generate`: `admin.key` and `admin.cert`.
    pub fn generate_keys(&self) {
        self.ok(&[
            "key",
            "generate",
            "--secret-out",
            "admin.key",
            "--cert-out",
            "admin.cert",
        ]);
    }

    /// `init --repo REPO --recipient admin.cert --writer-key-out WRITER_KEY`.
    pub fn init_repo(&self, writer_key: &str) -> Output {
        self.run(&[
            "init",
            "--repo",
            &self.repo,
            "--recipient",
            "admin.cert",
            "--writer-key-out",
            writer_key,
        ])
    }

    /// A second local repository `rel` for the same admin (its writer key
    /// in `other-writer.key`); its path.
    pub fn init_other_repo(&self, rel: &str) -> PathBuf {
        let other = self.path(rel);
        let made = self.run(&[
            "init",
            "--repo",
            other.to_str().expect("UTF-8 scratch path"),
            "--recipient",
            "admin.cert",
            "--writer-key-out",
            "other-writer.key",
        ]);
        assert!(made.status.success(), "init {rel}: {}", text(&made));
        other
    }

    /// A scratch directory holding a copy of `tests/fixtures/<name>/repo`
    /// as `repo/` and its `admin.key` (mode 0600): a repository written by
    /// an earlier coffer.
    pub fn from_fixture(name: &str) -> Self {
        let env = Self::bare();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        cp_a(&fixture.join("repo"), &env.path("repo"));
        std::fs::copy(fixture.join("admin.key"), env.path("admin.key")).expect("copy admin.key");
        std::fs::set_permissions(
            env.path("admin.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod admin.key");
        env
    }

    /// A scratch directory without keys or repository.
    pub fn bare() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("coffer-e2e-")
                .tempdir()
                .expect("make a scratch directory"),
            repo: "repo".into(),
            vars: Vec::new(),
            writer_vars: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `coffer ARGS` in the scratch directory, with no COFFER_* from outside.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_coffer"));
        for var in [
            "COFFER_REPO",
            "COFFER_KEY",
            "COFFER_WRITER_KEY",
            "COFFER_STATE_DIR",
            "COFFER_KNOWN_REPOSITORIES",
            "COFFER_KEY_PASSPHRASE",
            "COFFER_LOG",
            "AWS_PROFILE",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
        ] {
            c.env_remove(var);
        }
        c.envs(self.vars.iter().map(|(k, v)| (k, v)));
        c.env("HOME", self.dir.path())
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_CONFIG_HOME", self.path("xdg-config"))
            .current_dir(self.dir.path())
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// `coffer CMD --repo repo --key admin.key ARGS`: a reader's command.
    pub fn admin_cmd(&self, cmd: &str, args: &[&str]) -> Command {
        self.cmd(&self.admin_args(cmd, args))
    }

    /// [`Env::admin_cmd`], run; the output whatever the exit status.
    pub fn admin(&self, cmd: &str, args: &[&str]) -> Output {
        self.run(&self.admin_args(cmd, args))
    }

    /// [`Env::admin_cmd`], run, asserting exit 0.
    pub fn admin_ok(&self, cmd: &str, args: &[&str]) -> Output {
        self.ok(&self.admin_args(cmd, args))
    }

    /// `CMD --repo REPO --key admin.key ARGS`.
    fn admin_args<'a>(&'a self, cmd: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec![cmd, "--repo", &self.repo, "--key", "admin.key"];
        all.extend_from_slice(args);
        all
    }

    /// `backup --repo REPO --writer-key writer.key ARGS` with the writer's
    /// environment.
    pub fn writer_cmd(&self, args: &[&str]) -> Command {
        let mut all = vec!["backup", "--repo", &self.repo, "--writer-key", "writer.key"];
        all.extend_from_slice(args);
        let mut c = self.cmd(&all);
        c.envs(self.writer_vars.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs and returns the output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run coffer")
    }

    /// Runs and asserts exit 0.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "coffer {args:?} failed: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `backup --json` of `paths`, asserting exit 0; the snapshot as JSON.
    pub fn backup(&self, paths: &[&Path], extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        args.extend(paths.iter().map(String::as_str));
        let out = self.writer_cmd(&args).output().expect("run coffer");
        assert!(
            out.status.success(),
            "coffer backup {args:?} failed: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        last_json_line(&out.stdout)
    }

    /// `restore SPEC --target TARGET`, asserting exit 0.
    pub fn restore(&self, spec: &str, target: &Path) {
        self.admin_ok(
            "restore",
            &[spec, "--target", &target.display().to_string()],
        );
    }

    /// `snapshots --json`.
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        let out = self.admin_ok("snapshots", &["--json"]);
        serde_json::from_slice(&out.stdout).expect("snapshots --json prints JSON")
    }

    /// Every file below `repo/` with its bytes.
    pub fn repo_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        walk_files(&self.path("repo"), &mut out);
        out
    }

    /// An empty GnuPG home (`gnupg/`, mode 0700, as gpg wants it).
    pub fn gnupg_home(&self) -> PathBuf {
        let home = self.path("gnupg");
        std::fs::create_dir(&home).expect("mkdir gnupg");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))
            .expect("chmod gnupg");
        home
    }

    /// [`Env::gnupg_home`] with `admin.key` imported: what gpg needs to
    /// open the repository's blobs (recover.py, the gpg tests).
    pub fn gnupg_with_admin_key(&self) -> PathBuf {
        let gnupg = self.gnupg_home();
        let import = Command::new("gpg")
            .env("GNUPGHOME", &gnupg)
            .args(["--batch", "--quiet", "--import"])
            .arg(self.path("admin.key"))
            .output()
            .expect("run gpg");
        assert!(
            import.status.success(),
            "gpg --import admin.key: {}",
            String::from_utf8_lossy(&import.stderr)
        );
        gnupg
    }

    /// The largest pack file.
    pub fn biggest_pack(&self) -> PathBuf {
        self.packs()
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .expect("the repository has packs")
    }

    /// Paths of every pack (trees under `data/`, file contents under
    /// `files/`).
    pub fn packs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .repo_files()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| {
                let p = p.to_string_lossy();
                p.contains("/data/") || p.contains("/files/")
            })
            .collect();
        out.sort();
        out
    }
}

fn walk_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk_files(&p, out);
        } else {
            let bytes = std::fs::read(&p).expect("read repository file");
            out.push((p, bytes));
        }
    }
}

/// A command's stdout then stderr, as text (for messages and searches).
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `python3 scripts/recover.py --repo repo ARGS` with `GNUPGHOME=gnupg`.
pub fn recover_py(env: &Env, gnupg: &Path, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/recover.py");
    Command::new("python3")
        .arg(script)
        .arg("--repo")
        .arg(env.path("repo"))
        .args(args)
        .env("GNUPGHOME", gnupg)
        .current_dir(env.path(""))
        .output()
        .expect("run python3")
}

/// `gpg --batch --quiet ARGS` with `GNUPGHOME=gnupg`, `stdin` on its input.
pub fn gpg(gnupg: &Path, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new("gpg")
        .env("GNUPGHOME", gnupg)
        .args(["--batch", "--quiet"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gpg (apt-get install gnupg)");
    let mut input = child.stdin.take().expect("gpg's stdin");
    // gpg may exit before reading everything; its status says why.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("wait for gpg")
}

/// The last line of `--json` output (progress lines come before it).
pub fn last_json_line(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let last = text.lines().last().unwrap_or("");
    serde_json::from_str(last).expect("--json prints JSON lines")
}

/// Deterministic pseudo-random bytes (xorshift64*), fast enough for GiBs.
/// Where pack `hex`, of `kind`, is in a repository this build's `init`
/// made (format version 3): file contents under `files/`, trees under
/// `data/`.
pub fn pack_rel(hex: &str, kind: coffer_core::format::index::PackKind) -> String {
    let top = match kind {
        coffer_core::format::index::PackKind::Data => "files",
        coffer_core::format::index::PackKind::Tree => "data",
    };
    format!("{top}/{}/{hex}", &hex[..2])
}

pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, bytes).expect("write file");
}

/// Moves the mtime of each file at `paths` back by `days`: the local
/// backend's stand-in for an old S3 LastModified (prune's horizon).
pub fn backdate(paths: impl IntoIterator<Item = PathBuf>, days: u64) {
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
    for p in paths {
        std::fs::File::options()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_modified(then))
            .unwrap_or_else(|e| panic!("backdate {}: {e}", p.display()));
    }
}

/// Sets a file's mtime (ns), not following symlinks.
pub fn set_mtime(path: &Path, ns: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: ns / 1_000_000_000,
            tv_nsec: ns % 1_000_000_000,
        },
    ];
    // SAFETY: valid path and array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// Runs a tool (not coffer), asserting exit 0; its standard output.
/// The extended attribute `name` of `path` (not following a symlink).
pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings; `buf` is writable for its length.
    let len =
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

pub fn run_tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("run a tool");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies `src` (a directory) to `dst` with `cp -a`.
pub fn cp_a(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("cp");
    assert!(st.success(), "cp -a {} {}", src.display(), dst.display());
}

/// Everything about one entry that a restore must reproduce.
#[derive(Debug, PartialEq, Eq)]
pub struct Facts {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    content: Option<[u8; 32]>,
    link: Option<Vec<u8>>,
}

/// Every entry below `root` (files, directories, links), as paths
/// relative to it, sorted.
pub fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("read_dir entry");
            let p = e.path();
            out.push(p.strip_prefix(root).expect("prefix").display().to_string());
            if e.file_type().expect("file type").is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs `cmd` and SIGKILLs it after `after`; whether it was still running
/// then (false: it had finished first).
pub fn kill_after(cmd: &mut Command, after: std::time::Duration) -> bool {
    let mut child = cmd.spawn().expect("spawn");
    std::thread::sleep(after);
    let finished = child.try_wait().expect("try_wait").is_some();
    let _ = child.kill();
    let _ = child.wait();
    !finished
}

/// Facts about every entry below `root`, keyed by relative path bytes.
/// Directory mtimes are included; the root itself is not.
pub fn facts(root: &Path) -> BTreeMap<Vec<u8>, Facts> {
    let mut out = BTreeMap::new();
    collect(root, root, &mut out);
    out
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Facts>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let ft = m.file_type();
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let content = ft.is_file().then(|| {
            use sha2::Digest;
            sha2::Sha256::digest(std::fs::read(&p).expect("read")).into()
        });
        let link = ft.is_symlink().then(|| {
            std::fs::read_link(&p)
                .expect("readlink")
                .as_os_str()
                .as_bytes()
                .to_vec()
        });
        let rel = p
            .strip_prefix(root)
            .expect("prefix")
            .as_os_str()
            .as_bytes()
            .to_vec();
        out.insert(
            rel,
            Facts {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                uid: m.uid(),
                gid: m.gid(),
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                content,
                link,
            },
        );
        if ft.is_dir() {
            collect(root, &p, out);
        }
    }
}

/// Asserts two trees are identical in content and metadata.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = facts(expected);
    let b = facts(actual);
    let show = |k: &Vec<u8>| String::from_utf8_lossy(k).into_owned();
    for (k, fa) in &a {
        match b.get(k) {
            None => panic!("{} missing from {}", show(k), actual.display()),
            Some(fb) => assert_eq!(fa, fb, "{} differs", show(k)),
        }
    }
    for k in b.keys() {
        assert!(
            a.contains_key(k),
            "{} is extra in {}",
            show(k),
            actual.display()
        );
    }
}

/// `root/<abs path of p>`: where a backed-up absolute path lands in a restore.
pub fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").expect("absolute path"))
}

pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A tree from /usr/share plus generated oddities: empty files, symlinks
/// (relative, absolute, dangling), non-UTF-8 names, a 50 MB random file, deep
/// directories, a fifo, setuid and odd modes, nanosecond mtimes.
pub fn make_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let mut copied = 0;
    for src in [
        "/usr/share/zoneinfo",
        "/usr/share/common-licenses",
        "/usr/share/perl5",
    ] {
        if Path::new(src).is_dir() {
            cp_a(Path::new(src), root);
            copied += 1;
        }
    }
    assert!(copied > 0, "no /usr/share directory to copy from");
    let g = root.join("gen");
    write(&g.join("empty"), b"");
    write(&g.join("small.txt"), b"hello coffer\n");
    write(&g.join("big.bin"), &random_bytes(1, 50_000_000));
    write(&g.join("zeros"), &vec![0u8; 3_000_000]);
    write(&root.join(os(b"gen/name-\xff\xfe-not-utf8")), b"raw name");
    std::fs::create_dir_all(root.join(os(b"gen/dir-\xc3\x28"))).unwrap();
    write(&g.join("unicode-ß-名前.txt"), b"unicode name");
    std::os::unix::fs::symlink("small.txt", g.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", g.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", g.join("link-dangling")).unwrap();
    let mut deep = g.join("deep");
    for i in 0..40 {
        deep.push(format!("level{i}"));
    }
    write(&deep.join("bottom.txt"), b"deep down");
    let fifo = std::ffi::CString::new(g.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    write(&g.join("setuid"), b"#!/bin/sh\n");
    std::fs::set_permissions(g.join("setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    write(&g.join("private"), b"secret-ish");
    std::fs::set_permissions(g.join("private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    set_mtime(&g.join("small.txt"), 1_234_567_890_123_456_789);
    set_mtime(&g.join("link-rel"), 1_000_000_001_000_000_001);
    if is_root() {
        let c = std::ffi::CString::new(g.join("private").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 1234, 5678) }, 0);
    }
}

/// Changes a tree: edits, deletions, additions, one byte of the big file.
pub fn change_tree(root: &Path) {
    let g = root.join("gen");
    write(&g.join("small.txt"), b"hello coffer, version two\n");
    std::fs::remove_file(g.join("empty")).unwrap();
    write(&g.join("new-file"), b"added in v2");
    let mut big = std::fs::read(g.join("big.bin")).unwrap();
    big[25_000_000] ^= 0xff;
    write(&g.join("big.bin"), &big);
    std::fs::remove_dir_all(g.join("deep/level0/level1/level2")).unwrap();
}

/// A file system of type `fstype` (tmpfs, ramfs...) mounted on a directory
/// for a test, with mount `options`; unmounted when dropped. Needs root.
pub struct FsMount(PathBuf);

impl FsMount {
    pub fn mount(fstype: &str, options: &[&str], dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir the mount point");
        let mut cmd = Command::new("mount");
        cmd.args(["-t", fstype]);
        for o in options {
            cmd.args(["-o", o]);
        }
        let status = cmd.arg(fstype).arg(dir).status().expect("run mount");
        assert!(status.success(), "mount a {fstype} on {}", dir.display());
        Self(dir.to_path_buf())
    }

    /// `mount -o remount,OPTIONS` (a tmpfs grows with `size=`).
    pub fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {}", self.0.display());
    }
}

impl Drop for FsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Waits for `child` and returns its exit code and its peak RSS in MiB:
/// the high-water mark of its own address space (`VmHWM` in
/// /proc/PID/status), read every few milliseconds until it exits (a
/// high-water mark, so the last reading holds the peak but for the last
/// milliseconds). Not `wait4`'s `ru_maxrss`: std spawns with
/// `clone(CLONE_VM | CLONE_VFORK)`, and the kernel's exec records the
/// address space it leaves, this test process's, in the child's
/// `maxrss`, so that figure is never below this process's own peak (with
/// another test of the same binary running, 235 MiB for a restore whose
/// own peak was 177). Only when the child is gone before the first
/// reading is `ru_maxrss` used.
pub fn wait_rss(child: Child) -> (i32, u64) {
    let pid = child.id() as libc::pid_t;
    let status_path = format!("/proc/{pid}/status");
    let mut peak_kib: Option<u64> = None;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let hwm = std::fs::read_to_string(&status_path).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        if let Some(kib) = hwm {
            peak_kib = Some(peak_kib.map_or(kib, |p| p.max(kib)));
        }
        // SAFETY: pid is our child; pointers are valid.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(rc >= 0, "wait4 failed");
        if rc == pid {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    std::mem::forget(child); // already reaped
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let kib = peak_kib.unwrap_or(usage.ru_maxrss as u64);
    (code, kib / 1024)
}

/// One command's run, measured.
pub struct Measured {
    /// Its exit code (-1 if a signal ended it).
    pub code: i32,
    /// Its stdout then stderr.
    pub text: String,
    /// Its peak RSS, MiB.
    pub peak_mib: u64,
    /// How long it ran.
    pub took: std::time::Duration,
}

/// Runs `cmd` (its output into files beside `scratch`, so nothing blocks
/// on a pipe) and measures it.
pub fn measured(mut cmd: Command, scratch: &Path) -> Measured {
    let (out, err) = (scratch.with_extension("out"), scratch.with_extension("err"));
    let started = std::time::Instant::now();
    let child = cmd
        .stdout(std::fs::File::create(&out).expect("create stdout file"))
        .stderr(std::fs::File::create(&err).expect("create stderr file"))
        .spawn()
        .expect("spawn");
    let (code, peak_mib) = wait_rss(child);
    let took = started.elapsed();
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Measured {
        code,
        text: format!("{}{}", read(&out), read(&err)),
        peak_mib,
        took,
    }
}
