//! `config show`: the profiles' settings in effect and where each came from.

use super::Outcome;
use crate::args::Cli;
use crate::config::{join_paths, key_of, subcommands, toml_string, Config, Profile};
use anyhow::Result;
use clap::CommandFactory;
use std::collections::BTreeMap;

/// Prints `profile` (or every profile) of the config: each key with the value
/// in effect, as TOML, and a comment saying where it came from. An
/// environment variable that overrides a key (or sets an option the profile
/// does not) is shown with its value: they hold paths and names, never
/// secrets (those are read from files, or from variables no option names).
/// `config`: the files already read for `--profile`/`--config`, if any.
pub fn config_show(config: Option<&Config>, profile: Option<&str>) -> Result<Outcome> {
    let read;
    let config = match config {
        Some(config) => config,
        None => {
            read = Config::read(None)?;
            &read
        }
    };
    if config.files.is_empty() {
        println!(
            "# no config file ({} not found)",
            join_paths(&config.searched, ", ")
        );
    } else {
        println!("# read from {}", join_paths(&config.files, ", then "));
    }
    let profiles: Vec<&Profile> = match profile {
        Some(name) => vec![config.profile(name)?],
        None => config.profiles.values().collect(),
    };
    for p in &profiles {
        p.check(&Cli::command())?;
    }
    let environment = environment_settings();
    for p in profiles {
        println!("\n[profiles.{}]", toml_key(&p.name));
        let mut lines: BTreeMap<&str, (String, String)> = BTreeMap::new();
        for (key, setting) in &p.settings {
            let line = match environment.get(key.as_str()) {
                Some((var, value)) => (
                    toml_string(value),
                    format!("env {var} (over {})", setting.origin()),
                ),
                None => (setting.value.to_toml(), setting.origin()),
            };
            lines.insert(key, line);
        }
        for (key, (var, value)) in &environment {
            lines
                .entry(key)
                .or_insert_with(|| (toml_string(value), format!("env {var}")));
        }
        let width = lines
            .iter()
            .map(|(k, (v, _))| k.len() + v.len())
            .max()
            .unwrap_or(0);
        for (key, (value, origin)) in lines {
            let pad = width - key.len() - value.len();
            println!("{key} = {value}{:pad$}  # {origin}", "");
        }
    }
    Ok(Outcome::Success)
}

/// Options a profile may set that environment variables set now:
/// key → (variable, value).
fn environment_settings() -> BTreeMap<String, (String, String)> {
    let mut cli = Cli::command();
    cli.build();
    let mut out = BTreeMap::new();
    for arg in subcommands(&cli)
        .into_iter()
        .flat_map(|c| c.get_arguments())
    {
        let (Some(key), Some(var)) = (key_of(arg), arg.get_env()) else {
            continue;
        };
        if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let var = var.to_string_lossy().into_owned();
            out.insert(key, (var, value.to_string_lossy().into_owned()));
        }
    }
    out
}

/// A profile name as a TOML key: bare if it can be.
fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        name.to_owned()
    } else {
        toml_string(name)
    }
}
