//! The operations' logic in process, against the in-memory backend and its
//! fault injection: check, diff, forget, prune, restore (refusals, over a live tree), export,
//! copy and the config pin, each in a second or so (`cargo test --test ops`). The
//! end-to-end tests drive the same operations through the binary.
#![allow(clippy::unwrap_used)] // tests/util is shared test code

mod util;

use coffer_core::backend::memory::MemoryBackend;
use coffer_core::backend::{Backend, DeleteBackend, ObjectKey, ObjectKind, ReadBackend};
use coffer_core::crypto::{self, SecretKeys, WriterKey};
use coffer_core::format::config::{RepoConfig, RepoSettings};
use coffer_core::format::snapshot::SnapshotInfo;
use coffer_core::ops::check::{check, CheckOptions};
use coffer_core::ops::copy::{copy, CopyOptions};
use coffer_core::ops::diff::{diff, Change};
use coffer_core::ops::export::{export, Format, Output};
use coffer_core::ops::forget::retention::Policy;
use coffer_core::ops::forget::{self, Selection};
use coffer_core::ops::prune::{prune, PruneOptions};
use coffer_core::ops::restore::{
    restore, Action, Overwrite, ReportTo, RestoreOptions, RestoreStats,
};
use coffer_core::repository::known::KnownRepositories;
use coffer_core::repository::{self, Repository};
use coffer_core::Error;
use coffer_writer::BackupOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use util::random_bytes;

/// A repository in memory, its keys, a source directory and this test's
/// own pin file.
struct Fixture {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    backend: Arc<MemoryBackend>,
    writer_key: WriterKey,
    admin_secret: Vec<u8>,
    pins: KnownRepositories,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let admin = crypto::generate_key("admin").expect("admin key");
        let certs = crypto::normalize_certs(&admin.cert_armored, "admin").expect("cert");
        let (config, writer_key) =
            RepoConfig::create(certs, RepoSettings::default(), "default").expect("config");
        let backend = Arc::new(MemoryBackend::new());
        let pins = KnownRepositories::new(dir.path().join("known_repositories"));
        rt.block_on(repository::init(backend.as_ref(), &config, Some(&pins)))
            .expect("init");
        std::fs::create_dir(dir.path().join("src")).expect("src");
        Self {
            rt,
            dir,
            backend,
            writer_key,
            admin_secret: admin.secret_armored,
            pins,
        }
    }

    fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.src().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }

    /// Backs up the source directory; the new snapshot.
    fn backup(&self) -> SnapshotInfo {
        let opts = BackupOptions {
            paths: vec![self.src()],
            source_access: Default::default(),
            stdin_name: None,
            host: Some("h".into()),
            tags: vec![],
            excludes: vec![],
            exclude_if_present: vec![],
            exclude_larger_than: None,
            xattrs: true,
            one_file_system: false,
            state_dir: self.dir.path().join("state"),
            workers: Some(2),
            progress: None,
            start_time: None,
        };
        let backend: Arc<dyn Backend> = self.backend.clone();
        let summary = coffer_writer::backup(
            backend,
            &self.writer_key,
            &opts,
            self.rt.handle(),
            std::io::empty(),
        )
        .expect("backup");
        let repo = self.open().expect("open");
        let all = self.rt.block_on(repo.snapshots()).expect("snapshots");
        all.into_iter()
            .find(|s| s.id == summary.id)
            .expect("the new snapshot is listed")
    }

    fn open(&self) -> coffer_core::Result<Repository> {
        self.open_at(self.backend.clone())
    }

    /// Opens the repository in `backend` (a copy of this one) with the
    /// admin's key and this host's pins.
    fn open_at(&self, backend: Arc<dyn Backend>) -> coffer_core::Result<Repository> {
        let keys = SecretKeys::from_bytes(&self.admin_secret, "admin", None)?;
        self.rt
            .block_on(Repository::open(backend, keys, Some(&self.pins)))
    }

    /// A few kinds of entry: text, a multi-chunk file, an empty one, a
    /// nested one, a symlink. Their paths below the source, and bytes.
    fn mixed_tree(&self) -> Vec<(&'static str, Vec<u8>)> {
        let files = vec![
            ("a.txt", b"alpha\n".to_vec()),
            ("big.bin", random_bytes(7, 3_000_000)),
            ("empty", Vec::new()),
            ("dir/sub/c.txt", b"gamma".to_vec()),
        ];
        for (rel, bytes) in &files {
            self.write(rel, bytes);
        }
        std::os::unix::fs::symlink("a.txt", self.src().join("link")).expect("symlink");
        files
    }

    fn packs(&self) -> Vec<String> {
        let mut packs = self.backend.keys(ObjectKind::Pack);
        packs.extend(self.backend.keys(ObjectKind::FilePack));
        packs.sort();
        packs
    }
}

#[test]
fn check_passes_then_names_the_file_whose_pack_is_damaged_or_gone() {
    let f = Fixture::new();
    f.write("a.txt", b"alpha");
    f.write("dir/b.bin", &random_bytes(1, 300_000));
    f.backup();
    let repo = f.open().expect("open");
    let read_all = CheckOptions {
        read_data: Some(1.0),
    };
    let clean = f.rt.block_on(check(&repo, read_all)).expect("check");
    assert!(clean.damage.is_empty(), "{:?}", clean.damage);
    assert_eq!(clean.snapshots, 1);
    assert!(clean.chunks_read >= 2, "{clean:?}");

    // A flipped bit in the data pack: sizes still match, so only reading
    // the data finds it, and it names the file.
    let listed =
        f.rt.block_on(f.backend.list(ObjectKind::FilePack))
            .expect("list");
    let big: Vec<ObjectKey> = listed
        .iter()
        .filter(|o| o.size > 200_000)
        .map(|o| ObjectKey::new(ObjectKind::FilePack, o.name.clone()))
        .collect();
    let [data_pack] = &big[..] else {
        panic!("expected one pack holding b.bin: {listed:?}");
    };
    assert!(f.backend.corrupt(&data_pack.path(), 1000));
    let quick =
        f.rt.block_on(check(&repo, CheckOptions::default()))
            .expect("check");
    assert!(quick.damage.is_empty(), "{:?}", quick.damage);
    let deep = f.rt.block_on(check(&repo, read_all)).expect("check");
    assert!(
        deep.damage.iter().any(|d| d.path.ends_with("dir/b.bin")),
        "{:?}",
        deep.damage
    );

    // The pack gone: found from the listing alone.
    f.rt.block_on(f.backend.delete(data_pack)).expect("delete");
    let gone =
        f.rt.block_on(check(&repo, CheckOptions::default()))
            .expect("check");
    assert!(
        gone.damage.iter().any(|d| d.path.ends_with("dir/b.bin")),
        "{:?}",
        gone.damage
    );
}

#[test]
fn diff_reports_each_kind_of_change_and_skips_identical_subtrees() {
    let f = Fixture::new();
    f.write("changed.txt", b"one");
    f.write("removed.txt", b"bye");
    f.write("meta/mode.txt", b"same bytes");
    f.write("same/deep/file.txt", b"untouched");
    let first = f.backup();
    f.write("changed.txt", b"two");
    std::fs::remove_file(f.src().join("removed.txt")).expect("rm");
    f.write("added.txt", b"hello");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(f.src().join("meta/mode.txt"), mode).expect("chmod");
    let second = f.backup();

    let repo = f.open().expect("open");
    let src = f.src().display().to_string();
    let a =
        f.rt.block_on(repo.resolve(&first.snapshot, &src))
            .expect("resolve");
    let b =
        f.rt.block_on(repo.resolve(&second.snapshot, &src))
            .expect("resolve");
    let mut seen = Vec::new();
    let mut out = |change: Change, path: &str| {
        let rel = path.strip_prefix(src.as_str()).unwrap_or(path).to_string();
        seen.push((change.symbol(), rel));
    };
    let stats =
        f.rt.block_on(diff(&repo, &a, &b, &src, &mut out))
            .expect("diff");
    let expected = [
        ('+', "/added.txt"),
        ('M', "/changed.txt"),
        ('U', "/meta/mode.txt"),
        ('-', "/removed.txt"),
    ];
    let expected: Vec<(char, String)> = expected.iter().map(|(c, p)| (*c, p.to_string())).collect();
    // Directories whose contents changed show as metadata changes too
    // (their mtime moved); what matters here is every file, once.
    let files: Vec<(char, String)> = seen
        .iter()
        .filter(|(_, p)| p.ends_with(".txt"))
        .cloned()
        .collect();
    assert_eq!(files, expected, "all: {seen:?}");
    assert!(stats.trees_skipped >= 1, "same/ was fetched: {stats:?}");
}

#[test]
fn forget_keeps_what_the_policy_keeps_and_prune_frees_only_old_unreferenced_packs() {
    let f = Fixture::new();
    f.write("old.bin", &random_bytes(2, 400_000));
    let first = f.backup();
    std::fs::remove_file(f.src().join("old.bin")).expect("rm");
    f.write("new.bin", &random_bytes(3, 400_000));
    let second = f.backup();
    let repo = f.open().expect("open");

    let policy = Policy {
        last: 1,
        ..Policy::default()
    };
    let groups =
        f.rt.block_on(forget::plan(&repo, &policy, &Selection::default()))
            .expect("plan");
    let doomed: Vec<_> = forget::doomed(&groups).map(|s| s.id).collect();
    assert_eq!(doomed, [first.id]);
    assert_eq!(
        f.rt.block_on(forget::forget(&repo, &groups))
            .expect("forget"),
        1
    );
    let left = f.rt.block_on(repo.snapshots()).expect("snapshots");
    assert_eq!(left.iter().map(|s| s.id).collect::<Vec<_>>(), [second.id]);

    // Within the dedup horizon nothing goes: a running backup may still
    // reference the old packs.
    let before = f.packs();
    let young =
        f.rt.block_on(prune(&repo, PruneOptions::default()))
            .expect("prune");
    assert_eq!(young.deleted.count, 0);
    assert!(young.young.count >= 1, "{young:?}");
    assert_eq!(f.packs(), before);

    // Past it: a dry run deletes nothing, a real run the unreferenced only.
    f.backend.backdate(Duration::from_secs(31 * 86_400));
    let dry = PruneOptions {
        dry_run: true,
        ..PruneOptions::default()
    };
    let planned = f.rt.block_on(prune(&repo, dry)).expect("dry run");
    assert!(planned.deleted.count >= 1, "{planned:?}");
    assert_eq!(f.packs(), before);
    let done =
        f.rt.block_on(prune(&repo, PruneOptions::default()))
            .expect("prune");
    assert_eq!(done.deleted.count, planned.deleted.count);
    assert_eq!(f.packs().len(), before.len() - done.deleted.count as usize);
    let after =
        f.rt.block_on(check(
            &repo,
            CheckOptions {
                read_data: Some(1.0),
            },
        ))
        .expect("check");
    assert!(after.damage.is_empty(), "{:?}", after.damage);
    assert!(after.chunks_read >= 1);
}

#[test]
fn prune_deletes_nothing_when_a_snapshot_cannot_be_read() {
    let f = Fixture::new();
    f.write("a.bin", &random_bytes(4, 100_000));
    let first = f.backup();
    f.write("a.bin", &random_bytes(5, 100_000));
    f.backup();
    f.backend.backdate(Duration::from_secs(31 * 86_400));
    let repo = f.open().expect("open");
    // Forget the first by hand, then make the second unreadable: what it
    // references is unknown, so nothing may go.
    f.rt.block_on(
        f.backend
            .delete(&ObjectKey::new(ObjectKind::Snapshot, first.name.clone())),
    )
    .expect("delete");
    let [second] = &f.backend.keys(ObjectKind::Snapshot)[..] else {
        panic!("one snapshot left");
    };
    f.backend.fail_reads(second);
    let before = f.packs();
    let err =
        f.rt.block_on(prune(&repo, PruneOptions::default()))
            .expect_err("prune must stop");
    assert!(err.to_string().contains("snapshots/"), "{err}");
    assert_eq!(f.packs(), before);
}

#[test]
fn restore_refuses_a_non_empty_target_as_bad_usage_and_writes_nothing() {
    let f = Fixture::new();
    f.write("a.txt", b"alpha");
    let snap = f.backup();
    let repo = Arc::new(f.open().expect("open"));
    let target = f.dir.path().join("target");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("mine"), b"keep").expect("write");
    let opts = over(&target, Overwrite::Refuse);
    let err =
        f.rt.block_on(restore(&repo, &snap.snapshot, "", &opts))
            .expect_err("non-empty target");
    assert!(matches!(err, Error::Usage(_)), "{err:?}");
    assert_eq!(err.exit_code(), 2);
    assert_eq!(names(&target), ["mine"]);

    let missing =
        f.rt.block_on(restore(&repo, &snap.snapshot, "/no/such/path", &opts))
            .expect_err("missing path");
    assert!(matches!(missing, Error::Path(_)), "{missing:?}");

    let fresh = RestoreOptions {
        target: f.dir.path().join("fresh"),
        ..opts
    };
    let src = f.src().display().to_string();
    let stats =
        f.rt.block_on(restore(&repo, &snap.snapshot, &src, &fresh))
            .expect("restore");
    assert_eq!(stats.files, 1);
    assert_eq!(
        std::fs::read(fresh.target.join("a.txt")).expect("read"),
        b"alpha"
    );
}

/// Directories `dNNN/` (`copies` of them), each holding the same
/// `inner/deeper/f` (names, bytes, modes and times alike): one tree each
/// for `inner` and `deeper`, met from every copy.
fn shared_subtrees(f: &Fixture, copies: usize) {
    let when = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let set = |path: PathBuf| {
        let file = std::fs::File::open(path).expect("open");
        file.set_modified(when).expect("set mtime");
    };
    for n in 0..copies {
        let dir = format!("d{n:03}");
        f.write(&format!("{dir}/inner/deeper/f"), b"same\n");
        for rel in ["inner/deeper/f", "inner/deeper", "inner"] {
            set(f.src().join(&dir).join(rel));
        }
    }
}

#[test]
fn a_subtree_many_directories_share_is_read_once_by_restore_and_export() {
    let f = Fixture::new();
    let copies = 400;
    shared_subtrees(&f, copies);
    let snap = f.backup();
    let repo = Arc::new(f.open().expect("open"));
    let src = f.src().display().to_string();

    let before = f.backend.reads();
    let opts = over(&f.dir.path().join("target"), Overwrite::Refuse);
    let stats =
        f.rt.block_on(restore(&repo, &snap.snapshot, &src, &opts))
            .expect("restore");
    let restore_reads = f.backend.reads() - before;
    assert_eq!(stats.files, copies as u64);
    assert!(
        stats.damaged.is_empty() && stats.warnings.is_empty(),
        "{stats:?}"
    );
    let last = opts
        .target
        .join(format!("d{:03}/inner/deeper/f", copies - 1));
    assert_eq!(std::fs::read(last).expect("restored"), b"same\n");

    let before = f.backend.reads();
    let out = Output::Stream(Box::new(std::io::sink()));
    let report =
        f.rt.block_on(export(&repo, &snap.snapshot, &src, Format::Tar, out))
            .expect("export");
    let export_reads = f.backend.reads() - before;
    assert_eq!(report.files, copies as u64);
    eprintln!(
        "{copies} copies of one subtree: restore {restore_reads} reads, export {export_reads}"
    );
    // Each distinct tree once (the path down to the source, its tree,
    // `dNNN`, `inner`, `deeper`): restore reads them and the one chunk in
    // a few ranged reads; export reads each file's chunk as it streams it
    // (1,604 reads when every copy's trees were read again).
    assert!(restore_reads < 24, "restore: {restore_reads} reads");
    let trees = export_reads - copies;
    assert!(
        trees < 24,
        "export: {export_reads} reads, {trees} besides the files'"
    );
    // Every read went where its pack is (trees under data/, file contents
    // under files/): a reader that looked in the wrong place first and
    // fell back would still be right, and slow.
    let read_all = CheckOptions {
        read_data: Some(1.0),
    };
    let checked = f.rt.block_on(check(&repo, read_all)).expect("check");
    assert!(checked.damage.is_empty(), "{:?}", checked.damage);
    assert_eq!(f.backend.misses(), Vec::<String>::new());
}

#[test]
fn opening_pins_the_config_and_refuses_a_replaced_one() {
    let f = Fixture::new();
    f.open().expect("first use pins");
    f.open().expect("the same config again");
    let pinned = std::fs::read_to_string(f.pins.path()).expect("pin file");
    assert_eq!(pinned.lines().count(), 1, "{pinned}");

    // Someone with access to the store swaps config for their own.
    let admin = crypto::generate_key("intruder").expect("key");
    let certs = crypto::normalize_certs(&admin.cert_armored, "intruder").expect("cert");
    let (theirs, _) =
        RepoConfig::create(certs, RepoSettings::default(), "default").expect("config");
    f.rt.block_on(f.backend.delete(&ObjectKey::config()))
        .expect("delete");
    let other_pins = KnownRepositories::new(f.dir.path().join("elsewhere"));
    f.rt.block_on(repository::init(
        f.backend.as_ref(),
        &theirs,
        Some(&other_pins),
    ))
    .expect("store");
    let err = f.open().err().expect("a replaced config must be refused");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("not the one this host saw first"),
        "{err}"
    );
}

/// Export as tar and as zip holds every file with its bytes and the
/// symlink, and counts them.
#[test]
fn export_writes_every_file_with_its_bytes_as_tar_and_as_zip() {
    let f = Fixture::new();
    let files = f.mixed_tree();
    let snap = f.backup();
    let repo = f.open().expect("open");
    let src = f.src().display().to_string();

    let tar_path = f.dir.path().join("out.tar");
    let out = Output::File(std::fs::File::create(&tar_path).expect("tar file"));
    let report =
        f.rt.block_on(export(&repo, &snap.snapshot, &src, Format::Tar, out))
            .expect("export tar");
    assert_eq!((report.files, report.links), (4, 1), "{report:?}");
    assert_eq!(
        report.bytes,
        files.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    let mut found = std::collections::BTreeMap::new();
    let mut tar = tar::Archive::new(std::fs::File::open(&tar_path).expect("open tar"));
    for entry in tar.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").display().to_string();
        let target = entry
            .link_name()
            .expect("link")
            .map(|t| t.display().to_string());
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read");
        found.insert(path, (bytes, target));
    }
    for (rel, bytes) in &files {
        let (name, (got, _)) = (found.iter())
            .find(|(name, _)| name.ends_with(rel))
            .unwrap_or_else(|| panic!("{rel} not in the tar: {:?}", found.keys()));
        assert!(got == bytes, "{name}: other bytes");
    }
    let link = found.iter().find(|(name, _)| name.ends_with("link"));
    assert_eq!(link.and_then(|(_, (_, t))| t.as_deref()), Some("a.txt"));

    let zip_path = f.dir.path().join("out.zip");
    let out = Output::File(std::fs::File::create(&zip_path).expect("zip file"));
    let zipped = Format::Zip { deflate: true };
    let report =
        f.rt.block_on(export(&repo, &snap.snapshot, &src, zipped, out))
            .expect("export zip");
    assert_eq!(report.files, 4, "{report:?}");
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).expect("open zip"))
        .expect("a zip archive");
    let names: Vec<String> = zip.file_names().map(String::from).collect();
    for (rel, bytes) in &files {
        let name = (names.iter())
            .find(|n| n.ends_with(rel))
            .unwrap_or_else(|| panic!("{rel} not in the zip: {names:?}"));
        let mut got = Vec::new();
        let mut file = zip.by_name(name).expect("by name");
        std::io::Read::read_to_end(&mut file, &mut got).expect("read");
        assert!(&got == bytes, "{name}: other bytes");
    }
}

/// A copy carries every object byte for byte, the copy opens and restores
/// with the same key, and a second run copies nothing (its journal).
#[test]
fn copy_carries_every_object_and_a_second_run_stores_nothing() {
    let f = Fixture::new();
    let files = f.mixed_tree();
    f.backup();
    f.write("a.txt", b"alpha, changed\n");
    let snap = f.backup();
    let to = Arc::new(MemoryBackend::new());
    let journal = f.dir.path().join("journal");
    let opts = CopyOptions {
        snapshots: Vec::new(),
        concurrency: 4,
    };
    let progress = coffer_core::progress::Progress::default();
    let (from, dest): (Arc<dyn Backend>, Arc<dyn Backend>) = (f.backend.clone(), to.clone());
    let run_copy = || {
        let copied = copy(&*from, &*dest, &journal, Some(&f.pins), &opts, &progress);
        f.rt.block_on(copied).expect("copy")
    };
    let report = run_copy();
    assert_eq!(report.snapshots, 2, "{report:?}");
    assert!(report.damaged.is_empty() && report.gone == 0, "{report:?}");
    let (stored, carried) = (f.backend.contents(), to.contents());
    let paths =
        |m: &std::collections::BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(paths(&stored), paths(&carried));
    assert!(stored == carried, "the copy holds other bytes");
    let objects = stored.len() as u64;
    assert_eq!(report.copied.count, objects, "{report:?}");

    let copied = Arc::new(
        f.open_at(dest.clone())
            .expect("the copy opens with the same key"),
    );
    let target = f.dir.path().join("restored");
    let opts_restore = over(&target, Overwrite::Refuse);
    let src = f.src().display().to_string();
    f.rt.block_on(restore(&copied, &snap.snapshot, &src, &opts_restore))
        .expect("restore from the copy");
    // (a path restores as its contents)
    for (rel, bytes) in &files[1..] {
        let got = std::fs::read(target.join(rel)).expect("restored file");
        assert!(&got == bytes, "{rel}: other bytes");
    }
    assert_eq!(
        std::fs::read(target.join("a.txt")).expect("a.txt"),
        b"alpha, changed\n"
    );

    let again = run_copy();
    assert_eq!(again.copied.count, 0, "{again:?}");
    assert_eq!(again.known.count, objects, "{again:?}");
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Each path below `root` with what restore must get right: kind, mode,
/// mtime, and the bytes of a file or the target of a link.
fn tree_state(root: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for item in std::fs::read_dir(&dir).expect("read_dir") {
            let path = item.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let what = if meta.is_dir() {
                todo.push(path.clone());
                "dir".to_string()
            } else if meta.is_symlink() {
                format!("-> {}", std::fs::read_link(&path).expect("link").display())
            } else {
                use std::hash::{Hash, Hasher};
                let bytes = std::fs::read(&path).expect("read");
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                format!("{} bytes {:x}", bytes.len(), h.finish())
            };
            let rel = path
                .strip_prefix(root)
                .expect("below")
                .display()
                .to_string();
            let state = format!(
                "{what} {:o} {}.{}",
                meta.mode() & 0o7777,
                meta.mtime(),
                meta.mtime_nsec()
            );
            out.insert(rel, state);
        }
    }
    out
}

/// Options for restoring into `target` over what is there.
fn over(target: &Path, overwrite: Overwrite) -> RestoreOptions {
    RestoreOptions {
        target: target.to_path_buf(),
        overwrite,
        delete: false,
        dry_run: false,
        verify: false,
        report: None,
        include: None,
        exclude: None,
        sparse: true,
        progress: None,
    }
}

/// What a restore reported, path by path (relative to `target`).
type Seen = Arc<std::sync::Mutex<Vec<(Action, String)>>>;

fn reporting(opts: RestoreOptions) -> (RestoreOptions, Seen) {
    let seen: Seen = Arc::default();
    let (into, root) = (seen.clone(), opts.target.clone());
    let report = ReportTo(Arc::new(move |action, path: &Path| {
        let rel = path.strip_prefix(&root).unwrap_or(path);
        into.lock()
            .unwrap()
            .push((action, rel.display().to_string()));
    }));
    let opts = RestoreOptions {
        report: Some(report),
        ..opts
    };
    (opts, seen)
}

/// A snapshot restored into `target`, then that tree changed as a live
/// one is: two files edited (one of them large, one byte), one's mode
/// changed, one removed, a symlink replaced by a file, things added, and
/// one file changed behind its size and mtime. The snapshot's tree state.
fn live_tree(
    f: &Fixture,
    target: &Path,
) -> (SnapshotInfo, std::collections::BTreeMap<String, String>) {
    for n in 0..100 {
        f.write(&format!("small/f{n:02}"), &random_bytes(100 + n, 2000));
    }
    f.write("big.bin", &random_bytes(9, 3_000_000));
    f.write("gone.txt", b"restored again\n");
    std::os::unix::fs::symlink("big.bin", f.src().join("link")).expect("symlink");
    let snap = f.backup();
    let want = tree_state(&f.src());
    let repo = Arc::new(f.open().expect("open"));
    let src = f.src().display().to_string();
    f.rt.block_on(restore(
        &repo,
        &snap.snapshot,
        &src,
        &over(target, Overwrite::Refuse),
    ))
    .expect("first restore");
    assert_eq!(tree_state(target), want);

    std::fs::write(target.join("small/f01"), random_bytes(999, 2000)).expect("edit");
    let mut big = std::fs::read(target.join("big.bin")).expect("read");
    big[1_500_000] ^= 1;
    std::fs::write(target.join("big.bin"), &big).expect("edit");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        target.join("small/f02"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    std::fs::remove_file(target.join("gone.txt")).expect("rm");
    std::fs::remove_file(target.join("link")).expect("rm");
    std::fs::write(target.join("link"), b"a file now").expect("write");
    std::fs::write(target.join("extra.txt"), b"not in the snapshot").expect("write");
    std::fs::create_dir_all(target.join("extra_dir/deeper")).expect("mkdir");
    std::fs::write(target.join("extra_dir/deeper/x"), b"x").expect("write");
    // Changed behind the size and mtime restore compares by default.
    let silent = target.join("small/f03");
    let mtime = std::fs::metadata(&silent)
        .expect("stat")
        .modified()
        .expect("mtime");
    std::fs::write(&silent, random_bytes(333, 2000)).expect("edit");
    std::fs::File::options()
        .write(true)
        .open(&silent)
        .and_then(|f| f.set_modified(mtime))
        .expect("set mtime");
    (snap, want)
}

fn no_temp_files(root: &Path) {
    let left: Vec<_> = tree_state(root)
        .into_keys()
        .filter(|k| k.contains(".coffer-restore"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn restore_over_a_live_tree_reads_only_what_changed_and_ends_as_the_snapshot() {
    let f = Fixture::new();
    let target = f.dir.path().join("target");
    let (snap, want) = live_tree(&f, &target);
    let repo = Arc::new(f.open().expect("open"));
    let src = f.src().display().to_string();
    // big.bin had one byte changed: all its chunks but the one holding it
    // are taken from the file (its chunk boundaries depend on the key).
    let big =
        f.rt.block_on(repo.resolve(&snap.snapshot, &format!("{src}/big.bin")))
            .expect("resolve");
    let edited_chunk = big
        .chunks
        .iter()
        .zip(big.chunk_starts())
        .find(|(c, start)| (*start..start + c.raw_length).contains(&1_500_000))
        .map(|(c, _)| c.raw_length)
        .expect("a chunk holds the edited byte");
    let big_reused = big.size - edited_chunk;
    let run = |opts: &RestoreOptions| -> (RestoreStats, u64) {
        let before = f.backend.read_bytes();
        let stats =
            f.rt.block_on(restore(&repo, &snap.snapshot, &src, opts))
                .expect("restore");
        assert!(
            stats.damaged.is_empty() && stats.warnings.is_empty(),
            "{stats:?}"
        );
        (stats, f.backend.read_bytes() - before)
    };

    // A dry run says what it would do and changes nothing.
    let live = tree_state(&target);
    let dry = RestoreOptions {
        delete: true,
        dry_run: true,
        ..over(&target, Overwrite::IfChanged)
    };
    let (dry, seen) = reporting(dry);
    let (planned, _) = run(&dry);
    assert_eq!(tree_state(&target), live, "a dry run changed the target");
    let mut said: Vec<(String, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(a, _)| *a != Action::Unchanged)
        .map(|(a, p)| {
            let word = match a {
                Action::Updated { reused, .. } if *reused > 0 => "updated, reusing",
                Action::Updated { .. } => "updated",
                other => return (format!("{other:?}"), p.clone()),
            };
            (word.to_string(), p.clone())
        })
        .collect();
    said.sort_by(|a, b| a.1.cmp(&b.1));
    let expected: Vec<(String, String)> = [
        (
            if big_reused > 0 {
                "updated, reusing"
            } else {
                "updated"
            },
            "big.bin",
        ),
        ("Deleted", "extra.txt"),
        ("Deleted", "extra_dir"),
        ("New", "gone.txt"),
        ("Replaced", "link"),
        ("updated", "small/f01"),
        ("Metadata", "small/f02"),
    ]
    .into_iter()
    .map(|(a, p)| (a.to_string(), p.to_string()))
    .collect();
    assert_eq!(said, expected);
    assert_eq!(
        (planned.updated, planned.metadata, planned.deleted),
        (2, 1, 2)
    );

    // The restore itself reads the changed chunks and little else.
    let opts = RestoreOptions {
        delete: true,
        ..over(&target, Overwrite::IfChanged)
    };
    let (stats, read) = run(&opts);
    assert_eq!(
        (stats.updated, stats.metadata, stats.deleted),
        (2, 1, 2),
        "{stats:?}"
    );
    assert_eq!(
        stats.fetch_bytes, planned.fetch_bytes,
        "the plan and the run differ"
    );
    assert_eq!(stats.reused_bytes, big_reused, "{stats:?}");
    let changed_files = 3_000_000 + 2000 + "restored again\n".len() as u64;
    assert!(
        read < changed_files,
        "{read} bytes read for {changed_files} bytes of changed files"
    );
    no_temp_files(&target);
    let mut got = tree_state(&target);
    assert_ne!(
        got.get("small/f03"),
        want.get("small/f03"),
        "size and mtime matched"
    );
    got.insert("small/f03".into(), want["small/f03"].clone());
    assert_eq!(got, want);

    // --verify compares content whatever size and mtime say.
    let verify = RestoreOptions {
        verify: true,
        ..over(&target, Overwrite::IfChanged)
    };
    let (stats, _) = run(&verify);
    assert_eq!((stats.updated, stats.files), (1, 1), "{stats:?}");
    assert_eq!(tree_state(&target), want);

    // Once all is as the snapshot holds it, nothing but trees is read.
    let (stats, read) = run(&over(&target, Overwrite::IfChanged));
    assert_eq!(
        (stats.files, stats.updated, stats.metadata),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(read < 20_000, "{read} bytes read with nothing to restore");
}

#[test]
fn never_and_if_newer_keep_what_is_there_and_restore_what_is_missing() {
    let f = Fixture::new();
    let target = f.dir.path().join("target");
    let (snap, want) = live_tree(&f, &target);
    let repo = Arc::new(f.open().expect("open"));
    let src = f.src().display().to_string();
    let live = tree_state(&target);
    for mode in [Overwrite::Never, Overwrite::IfNewer] {
        let stats =
            f.rt.block_on(restore(&repo, &snap.snapshot, &src, &over(&target, mode)))
                .expect("restore");
        let got = tree_state(&target);
        // Only the removed file came back; the rest stayed as it was.
        assert_eq!(got.get("gone.txt"), want.get("gone.txt"), "{mode:?}");
        for (path, state) in &live {
            assert_eq!(got.get(path), Some(state), "{mode:?}: {path} changed");
        }
        assert_eq!(
            stats.files,
            u64::from(mode == Overwrite::Never),
            "{mode:?}: {stats:?}"
        );
    }
}

/// Over a live tree where a directory of the snapshot is a symlink to
/// another directory holding the same file (same size and mtime): the
/// symlink is replaced by a real directory and the file restored into it;
/// what the walk looked at ahead through the symlink is not taken for it,
/// and what the symlink pointed to is left alone.
#[test]
fn a_symlink_in_the_way_of_a_directory_is_replaced_not_looked_through() {
    let f = Fixture::new();
    f.write("x/a/f", b"the snapshot's f\n");
    let snap = f.backup();
    let want = tree_state(&f.src());
    let target = f.dir.path().join("target");
    std::fs::create_dir_all(target.join("y/a")).expect("mkdir");
    let copy = target.join("y/a/f");
    std::fs::copy(f.src().join("x/a/f"), &copy).expect("copy");
    let mtime = std::fs::metadata(f.src().join("x/a/f"))
        .and_then(|m| m.modified())
        .expect("mtime");
    std::fs::File::options()
        .write(true)
        .open(&copy)
        .and_then(|c| c.set_modified(mtime))
        .expect("set mtime");
    std::os::unix::fs::symlink("y", target.join("x")).expect("symlink");
    let repo = Arc::new(f.open().expect("open"));
    let src = f.src().display().to_string();
    f.rt.block_on(restore(
        &repo,
        &snap.snapshot,
        &src,
        &over(&target, Overwrite::IfChanged),
    ))
    .expect("restore");
    let x = std::fs::symlink_metadata(target.join("x")).expect("x");
    assert!(x.is_dir(), "x is still a symlink");
    let mut got = tree_state(&target);
    assert!(got.remove("y/a/f").is_some(), "what x pointed to is gone");
    got.retain(|k, _| !k.starts_with('y'));
    assert_eq!(got, want);
}

#[test]
fn a_restore_over_a_tree_that_stops_leaves_each_old_file_whole() {
    let f = Fixture::new();
    let target = f.dir.path().join("target");
    let (snap, _) = live_tree(&f, &target);
    let repo = Arc::new(f.open().expect("open"));
    let src = f.src().display().to_string();
    let edited = std::fs::read(target.join("big.bin")).expect("read");
    let big =
        f.rt.block_on(repo.resolve(&snap.snapshot, &format!("{src}/big.bin")))
            .expect("resolve");
    for loc in &big.chunks {
        let hex = loc.pack.to_string();
        f.backend.fail_reads(&format!("files/{}/{hex}", &hex[..2]));
    }
    let err =
        f.rt.block_on(restore(
            &repo,
            &snap.snapshot,
            &src,
            &over(&target, Overwrite::IfChanged),
        ))
        .expect_err("the store became unreachable");
    assert!(
        err.to_string().contains("big.bin") || err.to_string().contains("files/"),
        "{err}"
    );
    assert_eq!(std::fs::read(target.join("big.bin")).expect("read"), edited);
    no_temp_files(&target);
}

#[test]
fn include_and_exclude_pick_what_restore_takes_and_what_delete_spares() {
    let f = Fixture::new();
    for rel in [
        "a.conf",
        "b.txt",
        "sub/c.conf",
        "sub/d.txt",
        "cache/e.conf",
        "other/x.txt",
    ] {
        f.write(rel, rel.as_bytes());
    }
    let snap = f.backup();
    let repo = Arc::new(f.open().expect("open"));
    let src = f.src().display().to_string();
    let patterns = |p: &[&str]| {
        let p: Vec<String> = p.iter().map(|s| s.replace("SRC", &src)).collect();
        Some(coffer_core::patterns::Patterns::new(&p, "pattern").expect("patterns"))
    };
    let run = |opts: &RestoreOptions| {
        f.rt.block_on(restore(&repo, &snap.snapshot, &src, opts))
            .expect("restore")
    };
    let listing = |root: &Path| -> Vec<String> { tree_state(root).into_keys().collect() };

    // Names: only *.conf, none from the excluded directory, and no
    // directory left that only led to nothing.
    let names = f.dir.path().join("names");
    run(&RestoreOptions {
        include: patterns(&["*.conf"]),
        exclude: patterns(&["SRC/cache"]),
        ..over(&names, Overwrite::Refuse)
    });
    assert_eq!(listing(&names), ["a.conf", "sub", "sub/c.conf"]);

    // A directory by its path brings everything below it.
    let sub = f.dir.path().join("sub");
    run(&RestoreOptions {
        include: patterns(&["SRC/sub"]),
        ..over(&sub, Overwrite::Refuse)
    });
    assert_eq!(listing(&sub), ["sub", "sub/c.conf", "sub/d.txt"]);

    // --delete spares what is excluded, and removes the rest it lacks.
    let live = f.dir.path().join("live");
    run(&over(&live, Overwrite::Refuse));
    std::fs::write(live.join("mine.local"), b"local only").expect("write");
    std::fs::write(live.join("stray"), b"stray").expect("write");
    std::fs::write(live.join("cache/stray"), b"in an excluded directory").expect("write");
    let stats = run(&RestoreOptions {
        delete: true,
        exclude: patterns(&["*.local", "SRC/cache"]),
        ..over(&live, Overwrite::IfChanged)
    });
    assert_eq!(stats.deleted, 1, "{stats:?}");
    assert!(live.join("mine.local").exists() && live.join("cache/stray").exists());
    assert!(!live.join("stray").exists());
}

/// A file that only grew (a log appended to) still holds every chunk in
/// place: it is rebuilt from itself, with nothing read from the store.
#[test]
fn a_file_that_only_grew_is_rebuilt_from_itself() {
    let f = Fixture::new();
    let data = random_bytes(21, 1_500_000);
    f.write("log", &data);
    let snap = f.backup();
    let repo = Arc::new(f.open().expect("open"));
    let src = f.src().display().to_string();
    let target = f.dir.path().join("target");
    f.rt.block_on(restore(
        &repo,
        &snap.snapshot,
        &src,
        &over(&target, Overwrite::Refuse),
    ))
    .expect("restore");
    let mut grown = data.clone();
    grown.extend(b"appended since the backup\n");
    std::fs::write(target.join("log"), &grown).expect("append");
    let before = f.backend.read_bytes();
    let opts = RestoreOptions {
        verify: true,
        ..over(&target, Overwrite::IfChanged)
    };
    let stats =
        f.rt.block_on(restore(&repo, &snap.snapshot, &src, &opts))
            .expect("restore over");
    let read = f.backend.read_bytes() - before;
    assert_eq!(
        (stats.updated, stats.files, stats.fetch_bytes),
        (1, 1, 0),
        "{stats:?}"
    );
    assert_eq!(stats.reused_bytes, data.len() as u64, "{stats:?}");
    assert!(
        read < 20_000,
        "{read} bytes read for a file rebuilt from itself"
    );
    assert!(std::fs::read(target.join("log")).expect("read") == data);
    no_temp_files(&target);
}
