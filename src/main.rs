//! The `coffer` command: argument parsing, one call into the libraries, and
//! the exit code. Exit codes: 0 success; 1 failure (for `backup`: no snapshot
//! was written); 2 bad usage or configuration; 3 snapshot written but some
//! source files could not be read (they are listed).
//!
//! `args` (clap definitions), `config` (profiles in TOML files, applied as
//! the defaults of the options), `commands` (one function per subcommand,
//! grouped by what they do), `progress` (bars and JSON lines), `metrics`
//! (the node-exporter file), `command_output` (`--stdin-from-command`), `hooks`
//! (`--on-success`/`--on-failure`, run once the exit code is known).

mod args;
mod command_output;
mod commands;
mod config;
mod hooks;
mod metrics;
mod progress;

use args::{Cli, Command, ConfigCommand, KeyCommand, RecipientCommand, WriterCommand};
use commands::Outcome;
use hooks::RunFacts;
use std::process::ExitCode;

fn main() -> ExitCode {
    let parsed = match config::parse_command_line(std::env::args_os().collect()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("coffer: error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = &parsed.cli;
    init_logging(cli.verbose);
    quiet_caught_parser_panics();
    let started = std::time::Instant::now();
    let mut facts = RunFacts::default();
    let (code, error) = match run(&parsed, &mut facts) {
        Ok(Outcome::Success) => (0, None),
        Ok(Outcome::Partial(why)) => (3, Some(why)),
        Ok(Outcome::Reported(why)) => (1, Some(why)),
        Err(e) if is_broken_pipe(&e) => (0, None),
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("coffer: error: {text}");
            (exit_code_of(&e), Some(text))
        }
    };
    if let Some((command, hooks)) = cli.command.hooks() {
        let ending = hooks::Ending {
            command,
            code,
            error: error.as_deref(),
            facts: &facts,
            started,
        };
        hooks::run(hooks, &ending);
    }
    ExitCode::from(code)
}

fn run(parsed: &config::Parsed, facts: &mut RunFacts) -> anyhow::Result<Outcome> {
    let cli: &Cli = &parsed.cli;
    match &cli.command {
        Command::Key(KeyCommand::Generate(a)) => return commands::key_generate(a),
        Command::Key(KeyCommand::AddSigning(a)) => return commands::key_add_signing(a),
        Command::Completions(a) => return commands::completions(a),
        Command::GenerateMan(a) => return commands::generate_man(a),
        Command::Config(ConfigCommand::Show) => {
            return commands::config_show(parsed.config.as_ref(), cli.profile.as_deref());
        }
        _ => {}
    }
    if let Command::Mount(_) = &cli.command {
        limit_malloc_arenas();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("coffer-io")
        .build()?;
    match &cli.command {
        Command::Key(_)
        | Command::Completions(_)
        | Command::GenerateMan(_)
        | Command::Config(_) => {
            unreachable!("handled before the runtime starts")
        }
        Command::Init(a) => commands::init(&rt, a),
        Command::Writer(WriterCommand::Add(a)) => commands::writer_add(&rt, a),
        Command::Writer(WriterCommand::List(a)) => commands::writer_list(&rt, a),
        Command::Writer(WriterCommand::Revoke(a)) => commands::writer_revoke(&rt, a),
        Command::Writer(WriterCommand::Reissue(a)) => commands::writer_reissue(&rt, a),
        Command::Recipient(RecipientCommand::Add(a)) => commands::recipient_add(&rt, a),
        Command::Recipient(RecipientCommand::Remove(a)) => commands::recipient_remove(&rt, a),
        Command::Recipient(RecipientCommand::List(a)) => commands::recipient_list(&rt, a),
        Command::Backup(a) => commands::backup(&rt, a, cli.verbose, facts),
        Command::Snapshots(a) => commands::snapshots(&rt, a),
        Command::Status(a) => commands::status(&rt, a),
        Command::Cache(a) => commands::cache(&rt, a),
        Command::Check(a) => commands::check(&rt, a),
        Command::Forget(a) => commands::forget(&rt, a, cli.verbose),
        Command::Prune(a) => commands::prune(&rt, a, cli.verbose),
        Command::Restore(a) => commands::restore(&rt, a, cli.verbose),
        Command::Cat(a) => commands::cat(&rt, a),
        Command::Ls(a) => commands::ls(&rt, a),
        Command::Stats(a) => commands::stats(&rt, a),
        Command::Find(a) => commands::find(&rt, a, cli.verbose),
        Command::Export(a) => commands::export(&rt, a, cli.verbose),
        Command::WarmUp(a) => commands::warm_up(&rt, a),
        Command::Mount(a) => commands::mount(rt, a),
        Command::Diff(a) => commands::diff(&rt, a, cli.verbose),
        Command::Copy(a) => commands::copy(&rt, a, cli.verbose, facts),
    }
}

/// glibc gives threads their own malloc arenas; blob buffers freed on tokio's
/// blocking threads then stay resident. A long-running mount keeps its memory
/// near its cache size with few arenas. (A fixed 256 KiB mmap threshold as
/// well cut the peak by another ~30 MiB but multiplied the mount's system
/// time 4-8x in page faults on this VM: not taken.) Call before any thread
/// starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// A panic inside sequoia's parser is caught and reported as a damaged
/// object (core/src/crypto/open.rs); the default hook would still print it as
/// if coffer had crashed. Such panics go to the debug log instead.
fn quiet_caught_parser_panics() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if coffer_core::crypto::in_guarded_parse() {
            tracing::debug!("the OpenPGP parser panicked (caught): {info}");
        } else {
            print(info);
        }
    }));
}

fn init_logging(verbose: bool) {
    // fuser warns when the kernel was unmounted before its session ended
    // (as `fusermount3 -u` does): noise for a user, so only errors unless -v.
    let default = if verbose { "info" } else { "warn,fuser=error" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("COFFER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
}

/// The exit code of a failed command: each error type says its own next
/// to its definition (`coffer_core::Error::exit_code` and the like); any
/// cause that is bad usage or configuration (2) makes the whole so, else 1.
fn exit_code_of(e: &anyhow::Error) -> u8 {
    e.chain()
        .filter_map(|cause| {
            if cause.downcast_ref::<config::ConfigError>().is_some() {
                Some(2)
            } else if let Some(e) = cause.downcast_ref::<coffer_core::Error>() {
                Some(e.exit_code())
            } else if let Some(e) = cause.downcast_ref::<coffer_writer::BackupError>() {
                Some(e.exit_code())
            } else {
                cause
                    .downcast_ref::<coffer_fs::MountError>()
                    .map(coffer_fs::MountError::exit_code)
            }
        })
        .max()
        .unwrap_or(1)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
