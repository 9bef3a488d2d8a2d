//! Command-line arguments (clap). Converted into library option structs in
//! `commands.rs`; no clap type leaves `src/`.
//!
//! One file of ~800 lines on purpose: it is the whole command-line
//! interface and nothing else (types and their help text, no logic), and
//! reading every subcommand's flags side by side is how their names and
//! wording are kept consistent (`--repo`, `--key`, `--json` mean the same
//! everywhere).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Encrypted, deduplicated, versioned backups to object storage.
#[derive(Debug, Parser)]
#[command(name = "coffer", version, about, max_term_width = 100)]
pub struct Cli {
    /// Print more: a summary after each command, and progress messages.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Take options from this profile of the config file: each key of
    /// [profiles.NAME] sets the option of the same name (flags and
    /// environment variables still win). See `coffer config show`.
    #[arg(long, global = true, env = "COFFER_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// The config file to read, instead of /etc/coffer/config.toml and then
    /// $XDG_CONFIG_HOME/coffer/config.toml.
    #[arg(long, global = true, env = "COFFER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage admin keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Create a repository and the writer key for backup hosts.
    Init(InitArgs),
    /// The writers: one key per backup host, each revocable (needs the
    /// admin key; every change is signed with it).
    #[command(subcommand)]
    Writer(WriterCommand),
    /// The recipients: the admins whose keys read what is written (needs
    /// the admin key; every change is signed with it).
    #[command(subcommand)]
    Recipient(RecipientCommand),
    /// Back up paths, or standard input, into the repository.
    Backup(Box<BackupArgs>),
    /// List snapshots (needs the admin key).
    Snapshots(SnapshotsArgs),
    /// For monitoring: exit 0 if a snapshot newer than --max-age exists, 1
    /// if not. Needs no key: it only lists snapshots/ and reads their times.
    Status(StatusArgs),
    /// Prove every snapshot's trees and chunks are present and well-formed,
    /// reading only metadata and object sizes (needs the admin key). Exit 1
    /// on damage, each problem listed with its snapshot and path.
    Check(CheckArgs),
    /// Remove the snapshots a retention policy does not keep (needs the
    /// admin key). Frees no data by itself: run `prune`, or pass --prune.
    Forget(ForgetArgs),
    /// Delete the packs no snapshot references, once they are older than the
    /// dedup horizon plus --margin (needs the admin key).
    Prune(PruneArgs),
    /// Restore a snapshot, or a path in it, into a directory.
    Restore(RestoreArgs),
    /// Write one file of a snapshot to standard output.
    Cat(CatArgs),
    /// List a snapshot's entries: a directory, or with --recursive
    /// everything below it (needs the admin key).
    Ls(LsArgs),
    /// How big snapshots are, what dedup and compression save, and what the
    /// repository holds (needs the admin key).
    Stats(StatsArgs),
    /// Find entries by name (or, for a pattern with `/`, by path) across
    /// snapshots: each path's history as runs of snapshots that hold the
    /// same entry (needs the admin key).
    Find(FindArgs),
    /// Write a snapshot, or a path in it, as one zip or tar archive.
    Export(ExportArgs),
    /// Ask S3 to restore the archived (GLACIER, DEEP_ARCHIVE) data packs
    /// that the files of some snapshots (or paths in them) need, with the
    /// cost and wait; --wait until every one is readable (needs the admin key).
    WarmUp(WarmUpArgs),
    /// Show every snapshot as a read-only directory tree (runs until unmounted).
    Mount(MountArgs),
    /// List what changed between two snapshots: + added, - removed, M content, U metadata.
    Diff(DiffArgs),
    /// Copy a repository's objects into another store, byte for byte (needs
    /// no key; the destination needs only PutObject). Re-runs copy what is new.
    Copy(CopyArgs),
    /// Show where the metadata and chunk caches of a repository are and how
    /// big, or clear them (needs no key: it reads only `config`, for the id).
    Cache(CacheCommandArgs),
    /// The config file's profiles.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the completion script for SHELL on standard output, e.g.
    /// `coffer completions bash > /etc/bash_completion.d/coffer`.
    Completions(CompletionsArgs),
    /// Write a man page for coffer and each subcommand into DIR (for
    /// packages: scripts/package.sh).
    #[command(hide = true)]
    GenerateMan(GenerateManArgs),
}

#[derive(Debug, Subcommand)]
pub enum WriterCommand {
    /// Add a writer with a key of its own, written to --writer-key-out: one
    /// per backup host, so that one can be revoked without the others.
    Add(WriterKeyArgs),
    /// List the writers: name, key fingerprints, when added and revoked,
    /// their snapshots and the newest.
    List(KeyListArgs),
    /// Revoke a writer: the snapshots it made before stay; any it signs
    /// after is left out by every reader, whatever time it claims.
    Revoke(WriterRevokeArgs),
    /// Make a writer a new key file (after a recipient change: it encrypts
    /// to the recipients as they are now). Its earlier key stays valid
    /// until the writer is revoked.
    Reissue(WriterKeyArgs),
}

#[derive(Debug, Subcommand)]
pub enum RecipientCommand {
    /// Add a recipient (an admin): key files issued after it encrypt to it
    /// too; reissue each writer's (`coffer writer reissue`).
    Add(RecipientAddArgs),
    /// Remove a recipient: key files issued after it no longer encrypt to
    /// it; what was written before stays readable with its key.
    Remove(RecipientRemoveArgs),
    /// List the recipients: fingerprint and user id.
    List(KeyListArgs),
}

#[derive(Debug, Args)]
pub struct WriterKeyArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub object_lock: ObjectLockArgs,
    /// The writer's name (letters, digits, '.', '-', '_'), e.g. the host's.
    pub name: String,
    /// Where to write its key file (mode 0600; must not exist yet).
    #[arg(long, value_name = "FILE")]
    pub writer_key_out: PathBuf,
}

#[derive(Debug, Args)]
pub struct WriterRevokeArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub object_lock: ObjectLockArgs,
    /// The writer to revoke.
    pub name: String,
    /// Keep only its snapshots the store received before this time (RFC
    /// 3339, e.g. 2026-12-01T00:00:00Z): when the key may have been stolen
    /// earlier. The store's time (S3 LastModified, file mtime), never the
    /// time a snapshot claims. Default: keep every snapshot it has now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub keep_stored_before: Option<std::time::SystemTime>,
}

/// An RFC 3339 time (`2026-12-01T00:00:00Z`) as a `SystemTime`.
fn parse_time(text: &str) -> Result<std::time::SystemTime, String> {
    coffer_core::format::encoding::parse_rfc3339(text)
        .map(std::time::SystemTime::from)
        .ok_or_else(|| format!("{text:?}: expected an RFC 3339 time such as 2026-12-01T00:00:00Z"))
}

#[derive(Debug, Args)]
pub struct RecipientAddArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub object_lock: ObjectLockArgs,
    /// The new recipient's OpenPGP certificate (armored or binary).
    pub cert: PathBuf,
}

#[derive(Debug, Args)]
pub struct RecipientRemoveArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub object_lock: ObjectLockArgs,
    /// The fingerprint of the recipient's certificate (`coffer recipient list`).
    pub fingerprint: String,
}

#[derive(Debug, Args)]
pub struct KeyListArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the settings of --profile (or of every profile): each value in
    /// effect and where it came from (file and line, or the environment).
    Show,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct GenerateManArgs {
    /// The directory to write coffer.1, coffer-backup.1, ... into.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Commands to run when the command ends (see src/hooks.rs).
#[derive(Debug, Args, Default)]
pub struct HookArgs {
    /// Run CMD with /bin/sh -c when the command succeeds (exit 0); repeat
    /// for several, run in order. The outcome is in the environment:
    /// COFFER_COMMAND, COFFER_EXIT_CODE, COFFER_SNAPSHOT, COFFER_ERROR (first
    /// line), COFFER_FILES, COFFER_BYTES, COFFER_DURATION_S (empty when
    /// unknown). A failing hook is reported and leaves the exit code alone.
    #[arg(long, value_name = "CMD")]
    pub on_success: Vec<String>,
    /// Run CMD with /bin/sh -c when the command fails (any exit code but 0,
    /// 3 included: a snapshot with unreadable files); as --on-success.
    #[arg(long, value_name = "CMD")]
    pub on_failure: Vec<String>,
}

impl Command {
    /// The subcommand's name and hooks, if it takes hooks.
    pub fn hooks(&self) -> Option<(&'static str, &HookArgs)> {
        match self {
            Command::Backup(a) => Some(("backup", &a.hooks)),
            Command::Check(a) => Some(("check", &a.hooks)),
            Command::Forget(a) => Some(("forget", &a.hooks)),
            Command::Prune(a) => Some(("prune", &a.hooks)),
            Command::Copy(a) => Some(("copy", &a.hooks)),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a Curve25519 OpenPGP key for reading backups (with a
    /// signing subkey, for key changes).
    Generate(KeyGenerateArgs),
    /// Write a copy of an admin key with a signing subkey added: keys made
    /// by `key generate` before key changes have none, and every change to
    /// writers or recipients is signed.
    AddSigning(KeyAddSigningArgs),
}

#[derive(Debug, Args)]
pub struct KeyAddSigningArgs {
    #[command(flatten)]
    pub key: SecretKeyArgs,
    /// Where to write the key with its new signing subkey (mode 0600; must
    /// not exist). Use it as --key from then on.
    #[arg(long, value_name = "FILE")]
    pub secret_out: PathBuf,
}

#[derive(Debug, Args)]
pub struct KeyGenerateArgs {
    /// Where to write the secret key (created with mode 0600; must not exist).
    #[arg(long, value_name = "FILE")]
    pub secret_out: PathBuf,
    /// Where to write the public certificate (give it to `init --recipient`).
    #[arg(long, value_name = "FILE")]
    pub cert_out: PathBuf,
    /// The key's user id.
    #[arg(long, default_value = "coffer backups")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct RepoArg {
    /// The repository: a local directory, or s3://BUCKET/PREFIX (credentials,
    /// region and endpoint from the AWS environment and config files).
    #[arg(long, env = "COFFER_REPO", value_name = "REPO")]
    pub repo: String,
}

/// The metadata cache of commands that read snapshots.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Read straight from the repository, without the metadata cache (whole
    /// tree packs of a remote repository, kept in
    /// $XDG_CACHE_HOME/coffer/<repo id>/metadata) or the opened-snapshot
    /// cache (snapshots opened before, sealed, in .../<repo id>/opened).
    #[arg(long, env = "COFFER_NO_CACHE")]
    pub no_cache: bool,
    /// The most the metadata cache (and, apart, the opened-snapshot cache)
    /// keeps on disk (least recently used files go first).
    #[arg(long, default_value = "2GiB", value_parser = parse_size, value_name = "SIZE")]
    pub metadata_cache_size: u64,
    /// Read at most RATE a second from the repository, all reads together
    /// (a number and a unit: 10MiB, 500KiB, 2MB).
    #[arg(long, value_name = "RATE", value_parser = coffer_core::backend::limit::parse_rate)]
    pub limit_download: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SecretKeyArgs {
    /// The admin's OpenPGP secret key (armored or binary; `gpg
    /// --export-secret-keys` output works). A passphrase-protected key is
    /// unlocked with COFFER_KEY_PASSPHRASE or --passphrase-file.
    #[arg(long, env = "COFFER_KEY", value_name = "FILE")]
    pub key: PathBuf,
    /// A file whose first line is the secret key's passphrase.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Use the key and passphrase files even if other users may read or
    /// change them (refused by default; `chmod 600` them instead).
    #[arg(long)]
    pub insecure_key_permissions: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// A recipient's OpenPGP certificate; repeat for several. Any one of
    /// their secret keys reads the repository.
    #[arg(long = "recipient", value_name = "CERT", required = true)]
    pub recipients: Vec<PathBuf>,
    /// Where to write the writer key for backup hosts (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub writer_key_out: PathBuf,
    /// The name of the writer this key is (`coffer writer list` shows it;
    /// `writer revoke NAME` revokes it). Give each host its own key with
    /// `coffer writer add` rather than sharing this one.
    #[arg(long, default_value = "default", value_name = "NAME")]
    pub writer_name: String,
    /// Writers reuse stored data only from packs younger than this.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub dedup_horizon_days: u32,
    /// zstd level writers compress with (1-19): lower is faster, higher
    /// stores less. Fixed for the repository; restores read any level.
    #[arg(long, default_value_t = coffer_core::format::config::DEFAULT_ZSTD_LEVEL, value_name = "LEVEL")]
    pub zstd_level: i32,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The writer key that `coffer init` wrote (mode 0600).
    #[arg(long, env = "COFFER_WRITER_KEY", value_name = "FILE")]
    pub writer_key: PathBuf,
    /// Use the writer key even if other users may read or change it
    /// (refused by default; `chmod 600` it instead).
    #[arg(long)]
    pub insecure_key_permissions: bool,
    /// Where this host keeps its state [default: $XDG_CACHE_HOME/coffer/<repo id>].
    #[arg(long, env = "COFFER_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Host name to record [default: this machine's].
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Tag the snapshot; repeat for several.
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Leave out entries matching GLOB: without `/` it matches names, with
    /// `/` absolute paths. Repeat for several.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Read --exclude patterns from FILE, one a line (blank lines and lines
    /// starting with # are skipped). Repeat for several.
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Leave out the contents of cache directories, those holding a
    /// CACHEDIR.TAG with its signature (the tag itself is kept).
    #[arg(long)]
    pub exclude_caches: bool,
    /// Leave out the contents of directories holding a file NAME (with
    /// NAME:HEADER, one starting with HEADER); the file itself is kept.
    /// Repeat for several.
    #[arg(long = "exclude-if-present", value_name = "NAME[:HEADER]")]
    pub exclude_if_present: Vec<String>,
    /// Leave out regular files larger than SIZE, e.g. 2GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub exclude_larger_than: Option<u64>,
    /// Back up the paths listed in FILE (`-`: standard input), one a line;
    /// blank lines and lines starting with # are skipped, and each line is
    /// trimmed. Repeat for several; adds to the PATH arguments.
    #[arg(long = "files-from", value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// As --files-from, but each line is a path as it stands (no comments,
    /// no trimming).
    #[arg(long = "files-from-verbatim", value_name = "FILE")]
    pub files_from_verbatim: Vec<PathBuf>,
    /// As --files-from, but the paths are separated by NUL bytes (`find
    /// -print0`).
    #[arg(long = "files-from-raw", value_name = "FILE")]
    pub files_from_raw: Vec<PathBuf>,
    /// Leave out extended attributes (by default every entry keeps them:
    /// user., security. with file capabilities, trusted. as root, and
    /// POSIX ACLs).
    #[arg(long)]
    pub no_xattrs: bool,
    /// Stay on each source's file system: a directory where another file
    /// system is mounted (/proc, NFS, a FUSE mount) is stored empty.
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Back up standard input as one file (see --stdin-name).
    #[arg(long, requires = "stdin_name")]
    pub stdin: bool,
    /// Back up what COMMAND (after `--`) writes to standard output as one
    /// file; if COMMAND fails, so does the backup, and no snapshot is
    /// written: `--stdin-from-command -- pg_dump app`.
    #[arg(long, requires = "command", conflicts_with = "stdin")]
    pub stdin_from_command: bool,
    /// The file name the stream is stored under (--stdin-from-command: the
    /// program's name unless given).
    #[arg(long, value_name = "NAME")]
    pub stdin_name: Option<String>,
    /// Print progress (every second) and the new snapshot as JSON lines on
    /// standard output; the last line is the summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub object_lock: ObjectLockArgs,
    /// S3: storage class for data packs, e.g. STANDARD_IA or GLACIER_IR
    /// (trees, indexes and snapshots stay in the default class).
    #[arg(long, value_name = "CLASS")]
    pub storage_class: Option<String>,
    /// S3: uploads at once (default 4). More helps over long distances;
    /// each one holds a pack of up to 24 MiB in memory.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub uploads: Option<u16>,
    /// Send at most RATE a second to the repository, all uploads together
    /// (a number and a unit: 10MiB, 500KiB, 2MB).
    #[arg(long, value_name = "RATE", value_parser = coffer_core::backend::limit::parse_rate)]
    pub limit_upload: Option<u64>,
    /// Write the run's outcome (success, times, sizes) to FILE in Prometheus'
    /// text format, for node_exporter's textfile collector; written whether
    /// the run succeeds or fails.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub hooks: HookArgs,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Paths to back up, and S3 bucket prefixes (s3://BUCKET/PREFIX: each
    /// object a file under /s3/BUCKET/, its ETag, content type and user
    /// metadata kept as user.s3.* attributes). Needed unless --stdin,
    /// --stdin-from-command or the profile's `sources` give what to back up.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The command of --stdin-from-command.
    #[arg(last = true, value_name = "COMMAND", requires = "stdin_from_command")]
    pub command: Vec<String>,
}

/// How bucket sources (`s3://...` among backup's paths) are reached: their
/// own account, region and endpoint, apart from the repository's. Keys
/// come from the environment only (COFFER_SOURCE_ACCESS_KEY_ID,
/// COFFER_SOURCE_SECRET_ACCESS_KEY, COFFER_SOURCE_SESSION_TOKEN), never
/// from the command line; without any of these the AWS chain is used, as
/// for the repository.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// Bucket sources: the AWS profile to read them as (needs ListBucket
    /// and GetObject only).
    #[arg(long, env = "COFFER_SOURCE_PROFILE", value_name = "NAME")]
    pub source_profile: Option<String>,
    /// Bucket sources: their S3 endpoint, if not AWS or not the
    /// repository's (path-style addressing).
    #[arg(long, env = "COFFER_SOURCE_ENDPOINT_URL", value_name = "URL")]
    pub source_endpoint: Option<String>,
    /// Bucket sources: their region.
    #[arg(long, env = "COFFER_SOURCE_REGION", value_name = "REGION")]
    pub source_region: Option<String>,
}

/// `restore --overwrite MODE` as `--overwrite=MODE`: the mode is optional
/// (alone it is `if-changed`), so clap takes it only after `=`, while
/// restic users write it with a space. A snapshot is `latest` or hex, never
/// a mode's name, so the two cannot be confused.
pub fn join_overwrite_mode(argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let modes = ["always", "if-changed", "if-newer", "never"];
    let mut out: Vec<std::ffi::OsString> = Vec::with_capacity(argv.len());
    let mut args = argv.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            out.push(arg);
            out.extend(args);
            break;
        }
        if arg == "--overwrite" {
            let next = args.as_slice().first().and_then(|n| n.to_str());
            if let Some(mode) = next.filter(|n| modes.contains(n)) {
                out.push(format!("--overwrite={mode}").into());
                args.next();
                continue;
            }
        }
        out.push(arg);
    }
    out
}

/// What `restore --overwrite` does with files already at the target.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OverwriteArg {
    /// Compare every file by content; rewrite what differs.
    Always,
    /// Keep files whose size and mtime match; compare the others.
    IfChanged,
    /// Replace only what the snapshot has newer (by mtime).
    IfNewer,
    /// Keep every file already there.
    Never,
}

/// Object Lock retention modes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LockModeArg {
    /// Nobody can shorten or lift the retention.
    Compliance,
    /// Users allowed to bypass governance retention can.
    Governance,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which snapshots a command works on; `latest` is the newest of them.
#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Only snapshots of this host; repeat for several.
    #[arg(long = "host", value_name = "H")]
    pub hosts: Vec<String>,
    /// Only snapshots with this tag; repeat for several (any of them).
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Only snapshots that back up this source path; repeat for several
    /// (all of them).
    #[arg(long = "path", value_name = "P")]
    pub paths: Vec<String>,
}

/// How fast S3 restores archived objects (and at what price).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TierArg {
    /// Minutes; GLACIER only, the dearest.
    Expedited,
    /// Hours (3-5 GLACIER, up to 12 DEEP_ARCHIVE).
    Standard,
    /// The cheapest: up to 12 hours GLACIER, 48 DEEP_ARCHIVE.
    Bulk,
}

/// How archived packs are asked for (`warm-up`; `restore --warm-up`).
#[derive(Debug, Args)]
pub struct ThawArgs {
    /// The retrieval tier S3 restores with (restore: with --warm-up).
    #[arg(long, value_enum, default_value = "standard")]
    pub tier: TierArg,
    /// How many days the restored copies stay readable (restore: with
    /// --warm-up).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
}

impl ThawArgs {
    /// The tier asked for.
    pub fn tier(&self) -> coffer_core::backend::Tier {
        use coffer_core::backend::Tier;
        match self.tier {
            TierArg::Expedited => Tier::Expedited,
            TierArg::Standard => Tier::Standard,
            TierArg::Bulk => Tier::Bulk,
        }
    }
}

#[derive(Debug, Args)]
pub struct WarmUpArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// `latest` or an id prefix, optionally with `:PATH` inside the
    /// snapshot; several share the packs they need.
    #[arg(value_name = "SNAPSHOT[:PATH]", required = true)]
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub thaw: ThawArgs,
    /// Then wait, with a progress line, until every pack is readable.
    #[arg(long)]
    pub wait: bool,
    /// Print the plan (packs, bytes, cost, wait) and ask for nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The plan and what was asked as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Estimate with this price per GB retrieved (dollars) instead of the
    /// built-in us-east-1 table (another region, a negotiated rate).
    #[arg(long, value_name = "USD")]
    pub price_per_gb: Option<f64>,
    /// Estimate with this price per 1,000 restore requests (dollars).
    #[arg(long, value_name = "USD")]
    pub price_per_1000: Option<f64>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// `latest` or an id prefix, optionally with `:PATH` inside the snapshot.
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    pub snapshot: String,
    /// Mode, owner, size and time too, as `ls -l`.
    #[arg(short, long)]
    pub long: bool,
    /// Everything below the directory, depth first.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// One JSON object a line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Snapshots to count (`latest` or an id prefix); default: every
    /// selected snapshot.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Glob patterns, as --exclude reads them: one without `/` matches an
    /// entry's name, one with `/` its absolute path (`*` stays within one
    /// component, `**` crosses them). Any of them matches.
    #[arg(value_name = "PATTERN", required = true)]
    pub patterns: Vec<String>,
    /// Search only this snapshot (`latest` or an id prefix); repeat for
    /// several. Default: every selected snapshot.
    #[arg(long = "snapshot", value_name = "S")]
    pub snapshots: Vec<String>,
    /// Search only the newest N of the selected snapshots.
    #[arg(long, value_name = "N")]
    pub newest: Option<usize>,
    /// One JSON object a line, a run each.
    #[arg(long)]
    pub json: bool,
}

/// Object Lock retention sent with each object stored (S3).
#[derive(Debug, Args)]
pub struct ObjectLockArgs {
    /// S3: send Object Lock retention of N days with every object (needs
    /// s3:PutObjectRetention); without it the bucket's default retention applies.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub object_lock_days: Option<u32>,
    /// S3: the Object Lock mode for --object-lock-days.
    #[arg(
        long,
        value_enum,
        default_value = "compliance",
        requires = "object_lock_days"
    )]
    pub object_lock_mode: LockModeArg,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The repository to copy: a directory or s3://BUCKET/PREFIX. Needs
    /// list and get only.
    #[arg(long, value_name = "REPO")]
    pub from: String,
    /// Where to copy it: a directory or s3://BUCKET/PREFIX, empty or an
    /// earlier copy of the same repository. Needs only PutObject (config
    /// included); it is never listed, read or overwritten.
    #[arg(long, value_name = "REPO")]
    pub to: String,
    /// The AWS profile (in ~/.aws/config and credentials) to read --from
    /// with, its credentials taking precedence over the environment's.
    #[arg(long, value_name = "NAME")]
    pub from_profile: Option<String>,
    /// The AWS profile to write --to with (another account, say).
    #[arg(long, value_name = "NAME")]
    pub to_profile: Option<String>,
    /// Where the copy's journal of what the destination holds is kept
    /// (default: $XDG_CACHE_HOME/coffer/copies). Losing it costs one PUT per
    /// object, each answered "already exists", never a wrong copy.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Objects copied at once (default 4 for S3, 2 locally).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub uploads: Option<u16>,
    /// From S3, each object keeps its retention; this sends at least N days
    /// from now (the later of the two).
    #[command(flatten)]
    pub object_lock: ObjectLockArgs,
    /// S3: storage class for data packs (files/); of a repository from
    /// before format version 3, for every pack (data and tree packs are
    /// both under data/ there: use an instant-retrieval class). Without it,
    /// packs from an S3 source keep their class.
    #[arg(long, value_name = "CLASS")]
    pub storage_class: Option<String>,
    /// To a store that does not support conditional writes (it answers
    /// If-None-Match with 501): copy with plain PUTs anyway. Without it such
    /// a copy stops, since a plain PUT replaces an object already there.
    #[arg(long)]
    pub allow_unconditional_puts: bool,
    /// Send at most RATE a second to the destination, all uploads together
    /// (a number and a unit: 10MiB, 500KiB, 2MB).
    #[arg(long, value_name = "RATE", value_parser = coffer_core::backend::limit::parse_rate)]
    pub limit_upload: Option<u64>,
    /// Read at most RATE a second from the source, all reads together.
    #[arg(long, value_name = "RATE", value_parser = coffer_core::backend::limit::parse_rate)]
    pub limit_download: Option<u64>,
    /// Print progress and the summary as JSON lines on standard output.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub hooks: HookArgs,
    /// Snapshots to copy, by id (as `coffer snapshots` shows them, or a
    /// prefix); default all. Every pack and index is copied either way.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    /// Also read, decrypt and verify every file chunk (each distinct chunk
    /// once).
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read and verify this share of the chunks, e.g. 10%: picked by chunk
    /// id, so the same share picks the same chunks each time.
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub read_data_subset: Option<f64>,
    #[command(flatten)]
    pub hooks: HookArgs,
}

/// `10%` or `10` → 0.1; (0, 100].
fn parse_percent(text: &str) -> Result<f64, String> {
    let n: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{text:?}: expected a percentage such as 10%"))?;
    if n > 0.0 && n <= 100.0 {
        Ok(n / 100.0)
    } else {
        Err(format!(
            "{text:?}: the percentage must be above 0 and at most 100"
        ))
    }
}

#[derive(Debug, Args)]
pub struct CacheCommandArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Delete them (always safe: what they held is fetched again when needed).
    #[arg(long)]
    pub clear: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The oldest the newest snapshot may be, e.g. 26h, 90m, 2d or 1d12h.
    #[arg(long, value_name = "AGE", value_parser = coffer_core::ops::status::parse_duration)]
    pub max_age: std::time::Duration,
    /// Only snapshots of this host count (as `backup --host` or the
    /// hostname named it). Reads `config` too, for the repository id.
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Keep the newest N snapshots.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: usize,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: usize,
    /// ... of each of the last N days (UTC) that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: usize,
    /// ... of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: usize,
    /// ... of each of the last N months that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: usize,
    /// ... of each of the last N years that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: usize,
    /// Keep every snapshot taken less than this before the group's newest,
    /// e.g. 7d or 2w.
    #[arg(long, value_name = "DURATION", value_parser = coffer_core::ops::status::parse_duration)]
    pub keep_within: Option<std::time::Duration>,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Print what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune afterwards (see `coffer prune`).
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_opts: PruneOptionArgs,
    #[command(flatten)]
    pub hooks: HookArgs,
}

#[derive(Debug, Args)]
pub struct PruneOptionArgs {
    /// Unreferenced packs younger than the dedup horizon plus this are kept:
    /// a backup running now may still reference them. Make it longer than
    /// your longest backup run plus any clock skew.
    #[arg(long, value_name = "DURATION", default_value = "2d",
          value_parser = coffer_core::ops::status::parse_duration)]
    pub margin: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub opts: PruneOptionArgs,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub hooks: HookArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// `latest` or an id prefix, optionally with `:PATH` inside the snapshot.
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    pub snapshot: String,
    /// The directory to restore into.
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,
    /// Restore over what is in the target. Alone, `if-changed`: files whose
    /// size and mtime match are kept, others compared by content and only
    /// what differs read from the repository. `always` compares every file
    /// by content; `if-newer` replaces only files the snapshot has newer;
    /// `never` keeps every file already there.
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1,
          require_equals = true, default_missing_value = "if-changed")]
    pub overwrite: Option<OverwriteArg>,
    /// Remove what the snapshot lacks below the restored path (implies
    /// --overwrite). Try it with --dry-run first.
    #[arg(long)]
    pub delete: bool,
    /// Print what would be restored, updated and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Compare files by content even where size and mtime match, and read
    /// every restored file back and check it against the snapshot.
    #[arg(long)]
    pub verify: bool,
    /// Restore only what matches PATTERN (repeat for several): a name, or
    /// with `/` a path in the snapshot; a matching directory brings all
    /// below it (`*` stays in one component, `**` crosses them).
    #[arg(long, value_name = "PATTERN")]
    pub include: Vec<String>,
    /// Leave out what matches PATTERN and all below it (repeat for
    /// several); with --delete it is not removed either.
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Write zeros where the snapshot has holes or blocks of zeros, rather
    /// than leaving the files sparse (the default).
    #[arg(long)]
    pub no_sparse: bool,
    /// Print progress (every second) and a summary as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// S3: first ask for the archived data packs this restore reads to be
    /// restored, as `coffer warm-up` does (its plan on stderr); without
    /// --wait, stop once asked.
    #[arg(long)]
    pub warm_up: bool,
    /// With --warm-up: wait, with a progress line, until every pack is
    /// readable, then restore.
    #[arg(long, requires = "warm_up")]
    pub wait: bool,
    #[command(flatten)]
    pub thaw: ThawArgs,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// `latest` or an id prefix, then `:PATH` of a file.
    #[arg(value_name = "SNAPSHOT:PATH")]
    pub spec: String,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("archive").required(true).args(["zip", "tar"]))]
pub struct ExportArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// `latest` or an id prefix, optionally with `:PATH` inside the snapshot
    /// (a directory's contents go at the archive's top level).
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    pub snapshot: String,
    /// Write a zip archive to FILE (`-`: standard output). FILE must not exist.
    #[arg(long, value_name = "FILE")]
    pub zip: Option<PathBuf>,
    /// Write a tar archive to FILE (`-`: standard output). FILE must not exist.
    #[arg(long, value_name = "FILE")]
    pub tar: Option<PathBuf>,
    /// Zip: store files uncompressed (faster; the data may not compress anyway).
    #[arg(long, requires = "zip")]
    pub store: bool,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Where to mount (an existing empty directory).
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// Memory for decrypted chunks and trees, e.g. 512MiB or 2GiB.
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    pub cache_size: u64,
    /// The most the chunk cache keeps on disk: the chunks read from a
    /// remote repository, as stored (encrypted), in
    /// $XDG_CACHE_HOME/coffer/<repo id>/chunks, so reading them again after
    /// a remount needs no request; 0 keeps none (as --no-cache does).
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
    pub chunk_cache_size: u64,
    /// Let other users read the mount (non-root needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// Re-read the snapshot list when snapshots/ is looked at, at most every SECONDS.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub snapshot_refresh: u64,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub key: SecretKeyArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// The older snapshot (`latest` or an id prefix).
    pub snapshot_a: String,
    /// The newer snapshot.
    pub snapshot_b: String,
    /// Compare only below this path.
    #[arg(default_value = "/")]
    pub path: String,
}

/// Parses sizes like `512MiB`, `2GiB`, `100M`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn an_overwrite_mode_after_a_space_joins_its_flag_and_nothing_else_does() {
        let joined = |args: &[&str]| -> Vec<String> {
            let argv = args.iter().map(std::ffi::OsString::from).collect();
            join_overwrite_mode(argv)
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            joined(&["coffer", "restore", "--overwrite", "never", "latest"]),
            ["coffer", "restore", "--overwrite=never", "latest"]
        );
        assert_eq!(
            joined(&["coffer", "restore", "--overwrite", "latest"]),
            ["coffer", "restore", "--overwrite", "latest"]
        );
        assert_eq!(
            joined(&["coffer", "x", "--", "--overwrite", "always"]),
            ["coffer", "x", "--", "--overwrite", "always"]
        );
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn stdin_requires_a_name() {
        let r = Cli::try_parse_from([
            "coffer",
            "backup",
            "--repo",
            "r",
            "--writer-key",
            "w",
            "--stdin",
        ]);
        assert!(r.is_err());
        let ok = Cli::try_parse_from([
            "coffer",
            "backup",
            "--repo",
            "r",
            "--writer-key",
            "w",
            "--stdin",
            "--stdin-name",
            "db.sql",
        ]);
        assert!(ok.is_ok());
    }
}
