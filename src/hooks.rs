//! `--on-success` / `--on-failure`: shell commands run when a command ends,
//! with its outcome in the environment, so a failed nightly run reaches a
//! person (a mail, an SNS topic, a healthchecks ping), not only a cron log.
//!
//! A hook runs with `/bin/sh -c`, standard input from /dev/null, its output
//! on coffer's; hooks run one after another in the order given. Failure is
//! any exit code but 0 (so 3, a snapshot with unreadable files, is one). A
//! hook that cannot start or exits non-zero is reported, by its flag and
//! position (never its text: a ping URL may hold a secret), and does not
//! change coffer's exit code.

use crate::args::HookArgs;
use std::process::{Command, Stdio};
use std::time::Instant;

/// What a command learnt that its hooks are told, beyond the exit code:
/// unknown values are passed as empty variables (set, for `set -u` scripts).
#[derive(Debug, Default)]
pub struct RunFacts {
    /// The snapshot written (backup), as 64 hex digits.
    pub snapshot: Option<String>,
    /// Files in it.
    pub files: Option<u64>,
    /// Bytes of file contents in it.
    pub bytes: Option<u64>,
}

/// How a command ended, for its hooks.
pub struct Ending<'a> {
    /// The subcommand, e.g. `backup`.
    pub command: &'a str,
    /// The process's exit code.
    pub code: u8,
    /// The first line of the error or of the reason for a non-zero code.
    pub error: Option<&'a str>,
    pub facts: &'a RunFacts,
    pub started: Instant,
}

impl Ending<'_> {
    /// The variables a hook gets.
    fn environment(&self) -> Vec<(&'static str, String)> {
        let text = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
        vec![
            ("COFFER_COMMAND", self.command.to_string()),
            ("COFFER_EXIT_CODE", self.code.to_string()),
            (
                "COFFER_SNAPSHOT",
                self.facts.snapshot.clone().unwrap_or_default(),
            ),
            (
                "COFFER_ERROR",
                self.error
                    .and_then(|e| e.lines().next())
                    .unwrap_or_default()
                    .to_string(),
            ),
            ("COFFER_FILES", text(self.facts.files)),
            ("COFFER_BYTES", text(self.facts.bytes)),
            (
                "COFFER_DURATION_S",
                self.started.elapsed().as_secs().to_string(),
            ),
        ]
    }
}

/// Variables of coffer's environment a hook does not get: credentials and
/// the key's passphrase. A hook is a notification (a ping, a mail), and
/// whatever it runs need not hold what can read or write the repository.
/// (The COFFER_* outcome variables are set; the rest of the environment is
/// passed as it is.)
pub const WITHHELD: [&str; 6] = [
    "COFFER_KEY_PASSPHRASE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
];

/// Runs the hooks `ending` calls for; reports each that fails on stderr.
/// Returns how many failed.
pub fn run(hooks: &HookArgs, ending: &Ending) -> usize {
    let (flag, commands) = if ending.code == 0 {
        ("--on-success", &hooks.on_success)
    } else {
        ("--on-failure", &hooks.on_failure)
    };
    let env = ending.environment();
    let mut failed = 0;
    for (i, command) in commands.iter().enumerate() {
        let which = if commands.len() == 1 {
            format!("the {flag} hook")
        } else {
            format!("{flag} hook {} of {}", i + 1, commands.len())
        };
        let status = hook_command(command, &env).status();
        let problem = match status {
            Ok(s) if s.success() => continue,
            Ok(s) => match s.code() {
                Some(code) => format!("exited with {code}"),
                None => format!("was killed ({s})"),
            },
            Err(e) => format!("could not start /bin/sh: {e}"),
        };
        failed += 1;
        eprintln!(
            "coffer: warning: {which} {problem}; coffer's exit code stays {}",
            ending.code
        );
    }
    failed
}

/// `/bin/sh -c command`, stdin from /dev/null, with coffer's environment
/// less [`WITHHELD`], plus `env`.
fn hook_command(command: &str, env: &[(&str, String)]) -> Command {
    let mut hook = Command::new("/bin/sh");
    for secret in WITHHELD {
        hook.env_remove(secret);
    }
    hook.arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    hook
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(success: &[&str], failure: &[&str]) -> HookArgs {
        HookArgs {
            on_success: success.iter().map(|s| s.to_string()).collect(),
            on_failure: failure.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_hooks_of_the_outcome_run_in_order_with_its_variables() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let append = format!(
            "echo \"$0 $COFFER_COMMAND $COFFER_EXIT_CODE [$COFFER_SNAPSHOT] [$COFFER_ERROR] \
             [$COFFER_FILES] [$COFFER_BYTES] $COFFER_DURATION_S\" >> '{}'",
            out.display()
        );
        let first = format!("{append}; exit 4");
        let h = hooks(&["echo never"], &[first.as_str(), append.as_str()]);
        let facts = RunFacts {
            snapshot: Some("ab".into()),
            files: Some(3),
            bytes: None,
        };
        let ending = Ending {
            command: "backup",
            code: 3,
            error: Some("2 entries could not be read\nsecond line"),
            facts: &facts,
            started: Instant::now(),
        };
        assert_eq!(run(&h, &ending), 1);
        let line = "/bin/sh backup 3 [ab] [2 entries could not be read] [3] [] 0\n";
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            format!("{line}{line}")
        );

        let ok = Ending {
            code: 0,
            error: None,
            ..ending
        };
        // Credentials and the passphrase are withheld from hooks (removed
        // from what the shell inherits), the outcome is not.
        let hook = hook_command("true", &ending.environment());
        let envs: Vec<_> = hook.get_envs().collect();
        for secret in WITHHELD {
            assert!(
                envs.contains(&(std::ffi::OsStr::new(secret), None)),
                "{secret}"
            );
        }
        assert!(envs
            .iter()
            .any(|(k, v)| *k == "COFFER_COMMAND" && v.is_some()));

        let h = hooks(&[append.as_str()], &["echo never >> /dev/full"]);
        std::fs::remove_file(&out).unwrap();
        assert_eq!(run(&h, &ok), 0);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "/bin/sh backup 0 [ab] [] [3] [] 0\n"
        );
    }
}
