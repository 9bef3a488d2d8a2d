//! Config files with named profiles (TOML). A profile sets any long option of
//! any subcommand under the option's own name (`repo`, `writer-key`,
//! `exclude`, `keep-daily`, `on-failure`...), plus `sources` for backup's
//! paths. Its values become the defaults of those options before the
//! command line is parsed, so a flag beats its environment variable, which
//! beats the file. Files: `--config FILE` (or COFFER_CONFIG) alone, else
//! /etc/coffer/config.toml and then $XDG_CONFIG_HOME/coffer/config.toml,
//! the later file's keys replacing the earlier's, profile by profile.
//!
//! ```toml
//! [profiles.nightly]
//! repo = "s3://backups/app"
//! writer-key = "/etc/coffer/writer.key"
//! sources = ["/srv", "/etc"]
//! exclude = ["*.tmp"]
//! ```
//!
//! Secrets are never inline: keys and passphrases stay in files named by
//! path (`key`, `writer-key`, `passphrase-file`), checked as on the
//! command line.

use clap::{Arg, ArgAction, Command};
use coffer_core::repository::known::user_config_dir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The system-wide file, read first.
pub const SYSTEM_FILE: &str = "/etc/coffer/config.toml";

/// The profile key that stands for backup's positional PATHs.
const SOURCES_KEY: &str = "sources";

/// Options that are not settings: a profile naming them is an error.
const NOT_SETTABLE: &[&str] = &["help", "version", "profile", "config"];

/// Keys that would hold a secret inline, refused with a hint.
const SECRET_KEYS: &[&str] = &[
    "passphrase",
    "password",
    "secret-key",
    "access-key-id",
    "secret-access-key",
    "session-token",
    "aws-access-key-id",
    "aws-secret-access-key",
    "aws-session-token",
];

/// A config file that cannot be used. Every variant names the file (and,
/// where there is one, the line and key); all exit 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}:{line}: {key}: {message}", path.display())]
    Key {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error("profile {name:?} is not in {searched}{}", known_list(known))]
    NoProfile {
        name: String,
        searched: String,
        known: Vec<String>,
    },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (no profiles defined)".into()
    } else {
        format!(" (profiles there: {})", known.join(", "))
    }
}

/// A profile's value, as the command line would have given it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `true` / `false`, for options that take no value.
    Flag(bool),
    /// One value (strings, and numbers written as numbers).
    One(String),
    /// A list, for options that may be repeated.
    Many(Vec<String>),
}

impl Value {
    fn strings(&self) -> Vec<String> {
        match self {
            Value::Flag(b) => vec![b.to_string()],
            Value::One(s) => vec![s.clone()],
            Value::Many(v) => v.clone(),
        }
    }

    /// As TOML would write it.
    pub fn to_toml(&self) -> String {
        match self {
            Value::Flag(b) => b.to_string(),
            Value::One(s) => toml_string(s),
            Value::Many(v) => {
                let items: Vec<String> = v.iter().map(|s| toml_string(s)).collect();
                format!("[{}]", items.join(", "))
            }
        }
    }
}

/// A string as a TOML basic string.
pub fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The paths, displayed, joined by `separator`.
pub fn join_paths(paths: &[PathBuf], separator: &str) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(separator)
}

/// One key of a profile and where it was written.
#[derive(Debug, Clone)]
pub struct Setting {
    pub value: Value,
    pub file: PathBuf,
    pub line: usize,
}

impl Setting {
    /// `FILE:LINE`.
    pub fn origin(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            path: self.file.clone(),
            line: self.line,
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// A named set of settings.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub name: String,
    pub settings: BTreeMap<String, Setting>,
}

/// The profiles of the config files read, merged.
#[derive(Debug, Default)]
pub struct Config {
    /// The files looked for, in order.
    pub searched: Vec<PathBuf>,
    /// Those read (all of them must exist when one was given explicitly).
    pub files: Vec<PathBuf>,
    pub profiles: BTreeMap<String, Profile>,
}

impl Config {
    /// Reads and merges the config files: `explicit` alone (it must exist),
    /// else the system file and the user's, those that exist.
    pub fn read(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let required = explicit.is_some();
        let searched = match explicit {
            Some(file) => vec![file.to_path_buf()],
            None => std::iter::once(PathBuf::from(SYSTEM_FILE))
                .chain(user_config_dir().map(|d| d.join("coffer/config.toml")))
                .collect(),
        };
        let mut config = Config {
            searched,
            ..Config::default()
        };
        for path in &config.searched {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            };
            for (name, settings) in parse(path, &text)? {
                let profile = config.profiles.entry(name.clone()).or_default();
                profile.name = name;
                profile.settings.extend(settings);
            }
            config.files.push(path.clone());
        }
        Ok(config)
    }

    /// The profile called `name`.
    pub fn profile(&self, name: &str) -> Result<&Profile, ConfigError> {
        self.profiles
            .get(name)
            .ok_or_else(|| ConfigError::NoProfile {
                name: name.to_owned(),
                searched: join_paths(&self.searched, " or "),
                known: self.profiles.keys().cloned().collect(),
            })
    }
}

type SpannedTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// The file's profiles: name → key → setting. Checks only the file's shape;
/// keys are checked against the commands by [`Profile::check`].
fn parse(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, BTreeMap<String, Setting>>, ConfigError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        profiles: BTreeMap<String, SpannedTable>,
    }
    // Bytes, not `str` slicing: no offset can panic here.
    let line_of = |offset: usize| {
        let before = &text.as_bytes()[..offset.min(text.len())];
        1 + before.iter().filter(|&&b| b == b'\n').count()
    };
    let file: File = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.span().map_or(1, |s| line_of(s.start)),
        message: e.message().trim_end().to_owned(),
    })?;
    let mut out = BTreeMap::new();
    for (name, table) in file.profiles {
        let mut settings = BTreeMap::new();
        for (key, value) in table {
            let line = line_of(key.span().start);
            let key = key.into_inner();
            let fail = |message: &str| ConfigError::Key {
                path: path.to_path_buf(),
                line,
                key: key.clone(),
                message: message.to_owned(),
            };
            let value = convert(value.into_inner()).map_err(fail)?;
            let setting = Setting {
                value,
                file: path.to_path_buf(),
                line,
            };
            settings.insert(key, setting);
        }
        out.insert(name, settings);
    }
    Ok(out)
}

/// A TOML value as a command-line value.
fn convert(value: toml::Value) -> Result<Value, &'static str> {
    let scalar = |v: toml::Value| match v {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        _ => Err("a list holds strings or numbers only"),
    };
    match value {
        toml::Value::Boolean(b) => Ok(Value::Flag(b)),
        toml::Value::Array(items) => Ok(Value::Many(
            items.into_iter().map(scalar).collect::<Result<_, _>>()?,
        )),
        toml::Value::Table(_) | toml::Value::Datetime(_) => {
            Err("expected a string, a number, true/false or a list of strings")
        }
        other => Ok(Value::One(scalar(other)?)),
    }
}

/// Every subcommand, nested ones too.
pub fn subcommands(cmd: &Command) -> Vec<&Command> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands() {
        out.push(sub);
        out.extend(subcommands(sub));
    }
    out
}

/// The profile key of an argument, if a profile may set it.
pub fn key_of(arg: &Arg) -> Option<String> {
    if arg.is_positional() {
        return (arg.get_id() == "paths").then(|| SOURCES_KEY.to_owned());
    }
    let long = arg.get_long()?;
    (!NOT_SETTABLE.contains(&long)).then(|| long.to_owned())
}

/// Whether the argument takes no value (a switch).
fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

impl Profile {
    /// Checks every key against the options of every subcommand of `cli`:
    /// it must name one, with a value of the right type that the option's
    /// own parser takes.
    pub fn check(&self, cli: &Command) -> Result<(), ConfigError> {
        let mut cli = cli.clone();
        cli.build();
        for (key, setting) in &self.settings {
            if SECRET_KEYS.contains(&key.as_str()) {
                return Err(setting.error(
                    key,
                    "secrets are not kept in config files: put it in a file readable only by its owner \
                     and name the file (key, writer-key, passphrase-file), or set it in the environment",
                ));
            }
            let mut found = false;
            for sub in subcommands(&cli) {
                for arg in sub.get_arguments() {
                    if key_of(arg).as_deref() == Some(key.as_str()) {
                        found = true;
                        check_value(sub, arg, key, setting)?;
                    }
                }
            }
            if !found {
                return Err(setting.error(
                    key,
                    "unknown key: a profile takes the long options of coffer's commands (see `coffer help COMMAND`) \
                     and `sources`",
                ));
            }
        }
        Ok(())
    }

    /// `cmd` with this profile's values as the defaults of the options they
    /// name, in it and every subcommand that has them. Options set here are
    /// no longer required on the command line.
    pub fn apply(&self, cmd: Command) -> Command {
        // In place: `mut_arg` would move the option last, and positionals
        // take their order from there.
        let cmd = cmd.mut_args(
            |arg| match key_of(&arg).and_then(|key| self.settings.get(&key)) {
                None
                | Some(Setting {
                    value: Value::Flag(false),
                    ..
                }) => arg,
                Some(setting) => arg.required(false).default_values(setting.value.strings()),
            },
        );
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect();
        names.into_iter().fold(cmd, |cmd, name| {
            cmd.mut_subcommand(name, |sub| self.apply(sub))
        })
    }
}

/// Whether `setting` fits `arg` of `sub`: its shape (switch, one value, a
/// list) and each value through the option's own parser.
fn check_value(sub: &Command, arg: &Arg, key: &str, setting: &Setting) -> Result<(), ConfigError> {
    let many = matches!(arg.get_action(), ArgAction::Append);
    match (&setting.value, is_switch(arg)) {
        (Value::Flag(_), true) => return Ok(()),
        (_, true) => return Err(setting.error(key, "expected true or false")),
        (Value::Flag(_), false) => {
            return Err(setting.error(key, format!("expected {}, not true/false", what(arg, many))))
        }
        (Value::Many(_), false) if !many => {
            return Err(setting.error(
                key,
                format!(
                    "takes one value (as `coffer {}` does), not a list",
                    sub.get_name()
                ),
            ))
        }
        _ => {}
    }
    for value in setting.value.strings() {
        if let Err(e) = parse_value(arg, key, &value) {
            return Err(setting.error(key, clap_message(&e)));
        }
    }
    Ok(())
}

/// Runs `value` through the option's own parser (ranges, sizes, durations,
/// choices), on a command holding only a copy of the option.
fn parse_value(arg: &Arg, key: &str, value: &str) -> Result<(), clap::Error> {
    let probe = Arg::new("value")
        .long(key.to_owned())
        .value_name(what(arg, false))
        .action(ArgAction::Set)
        .value_parser(arg.get_value_parser().clone());
    Command::new("coffer")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from([format!("--{key}={value}")])
        .map(drop)
}

/// "a value (VALUE_NAME)" or "a list of values", for messages.
fn what(arg: &Arg, many: bool) -> String {
    let name = arg
        .get_value_names()
        .and_then(|n| n.first())
        .map_or_else(|| "VALUE".to_owned(), |n| n.to_string());
    if many {
        format!("{name} or a list of them")
    } else {
        name
    }
}

/// A clap error's first paragraph on one line (the possible values
/// included), without its `error: ` prefix.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = lines.join(" ");
    joined.strip_prefix("error: ").unwrap_or(&joined).to_owned()
}

/// The command line, parsed with the chosen profile's values under it.
pub struct Parsed {
    pub cli: crate::args::Cli,
    /// The config read, if `--profile` or `--config` asked for one.
    pub config: Option<Config>,
}

/// Parses `argv`: a first pass finds `--profile` and `--config` (or
/// COFFER_PROFILE / COFFER_CONFIG), the profile's values become defaults,
/// then the real parse. Usage errors exit as clap does (2); a config error
/// is returned.
pub fn parse_command_line(argv: Vec<std::ffi::OsString>) -> Result<Parsed, ConfigError> {
    use clap::{CommandFactory, FromArgMatches};
    let argv = crate::args::join_overwrite_mode(argv);
    let early = crate::args::Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(&argv)
        .ok();
    let explicit = early
        .as_ref()
        .and_then(|m| m.get_one::<PathBuf>("config").cloned());
    let name = early
        .as_ref()
        .and_then(|m| m.get_one::<String>("profile").cloned());
    let mut cmd = crate::args::Cli::command();
    let mut config = None;
    if explicit.is_some() || name.is_some() {
        let loaded = Config::read(explicit.as_deref())?;
        if let Some(name) = &name {
            let profile = loaded.profile(name)?;
            profile.check(&cmd)?;
            cmd = profile.apply(cmd);
        }
        config = Some(loaded);
    }
    let matches = cmd.try_get_matches_from(argv).unwrap_or_else(|e| e.exit());
    let mut cli = crate::args::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (crate::args::Command::Backup(b), Some(("backup", m))) =
        (&mut cli.command, matches.subcommand())
    {
        // A stream backup takes no paths: the profile's `sources` give way.
        let from_profile = m.value_source("paths") == Some(clap::parser::ValueSource::DefaultValue);
        if from_profile && (b.stdin || b.stdin_from_command) {
            b.paths.clear();
        }
    }
    Ok(Parsed { cli, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(text: &str) -> Result<Profile, ConfigError> {
        let mut parsed = parse(Path::new("/etc/coffer/config.toml"), text)?;
        let settings = parsed.remove("p").unwrap_or_default();
        Ok(Profile {
            name: "p".into(),
            settings,
        })
    }

    fn cli() -> Command {
        <crate::args::Cli as clap::CommandFactory>::command()
    }

    fn check_error(text: &str) -> String {
        match profile(text).and_then(|p| p.check(&cli())) {
            Ok(()) => panic!("{text:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn values_are_read_with_their_lines() -> Result<(), ConfigError> {
        let p = profile(
            "# Sauvegardes é, ü\n[profiles.p]\nrepo = \"/r\"\nuploads = 8\none-file-system = true\nexclude = [\"*.tmp\", \"cache\"]\n",
        )?;
        p.check(&cli())?;
        let repo = &p.settings["repo"];
        assert_eq!(repo.value, Value::One("/r".into()));
        assert_eq!(repo.origin(), "/etc/coffer/config.toml:3");
        assert_eq!(p.settings["uploads"].value, Value::One("8".into()));
        assert_eq!(p.settings["one-file-system"].line, 5);
        assert_eq!(
            p.settings["exclude"].value,
            Value::Many(vec!["*.tmp".into(), "cache".into()])
        );
        Ok(())
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let e = check_error("[profiles.p]\nrepo = \"/r\"\nexclude-typo = \"x\"\n");
        assert!(
            e.starts_with("/etc/coffer/config.toml:3: exclude-typo: unknown key"),
            "{e}"
        );
        let e = check_error("[profiles.p]\n\none-file-system = \"yes\"\n");
        assert!(
            e.starts_with("/etc/coffer/config.toml:3: one-file-system: expected true or false"),
            "{e}"
        );
        let e = check_error("[profiles.p]\nuploads = 0\n");
        assert!(e.starts_with("/etc/coffer/config.toml:2: uploads: "), "{e}");
        assert!(e.contains("1..=64"), "{e}");
        let e = check_error("[profiles.p]\nrepo = [\"a\", \"b\"]\n");
        assert!(e.contains(":2: repo: takes one value"), "{e}");
        let e = check_error("[profiles.p]\npassphrase = \"hunter2\"\n");
        assert!(e.contains(":2: passphrase: secrets are not kept"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = check_error("[profiles.p]\nrepo = \"/r\"\nrepo = \"/s\"\n");
        assert!(e.starts_with("/etc/coffer/config.toml:3: "), "{e}");
        let e = check_error("[profile.p]\nrepo = \"/r\"\n");
        assert!(e.starts_with("/etc/coffer/config.toml:1: "), "{e}");
        assert!(e.contains("profile"), "{e}");
    }

    #[test]
    fn applied_values_are_defaults_under_flags_and_environment(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let p = profile("[profiles.p]\nrepo = \"/from-file\"\nwriter-key = \"/k\"\nsources = [\"/srv\"]\ntag = [\"a\", \"b\"]\n")?;
        let parse = |args: &[&str]| {
            let m = p.apply(cli()).try_get_matches_from(args)?;
            <crate::args::Cli as clap::FromArgMatches>::from_arg_matches(&m)
        };
        let crate::args::Command::Backup(b) = parse(&["coffer", "backup"])?.command else {
            panic!("not backup");
        };
        assert_eq!(b.repo.repo, "/from-file");
        assert_eq!(b.paths, vec![PathBuf::from("/srv")]);
        assert_eq!(b.tags, vec!["a", "b"]);
        let crate::args::Command::Backup(b) =
            parse(&["coffer", "backup", "--repo", "/flag", "/etc"])?.command
        else {
            panic!("not backup");
        };
        assert_eq!(b.repo.repo, "/flag");
        assert_eq!(b.paths, vec![PathBuf::from("/etc")]);
        Ok(())
    }
}
