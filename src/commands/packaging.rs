//! What a package installs beside the binary, generated from the clap
//! definitions so it never drifts from them: shell completions (also for
//! users: `coffer completions SHELL`) and man pages.

use super::Outcome;
use crate::args::{Cli, CompletionsArgs, GenerateManArgs};
use anyhow::{Context, Result};
use clap::CommandFactory;

/// Prints the completion script for the shell.
pub fn completions(a: &CompletionsArgs) -> Result<Outcome> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(a.shell, &mut Cli::command(), "coffer", &mut out);
    Ok(Outcome::Success)
}

/// Writes `coffer.1` and a page for every (visible) subcommand into the
/// directory, which must exist.
pub fn generate_man(a: &GenerateManArgs) -> Result<Outcome> {
    clap_mangen::generate_to(Cli::command(), &a.dir)
        .with_context(|| format!("{}: cannot write the man pages", a.dir.display()))?;
    Ok(Outcome::Success)
}
