//! `backup --stdin-from-command -- CMD ARGS...`: the standard output of a
//! command as the stream to back up, with its exit status checked before the
//! snapshot is written, so a failed dump never looks like a good backup.

use std::io::{self, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};

/// A running command whose standard output is read. At the end of the
/// output the command is waited for, and a failure (non-zero exit, killed
/// by a signal) is returned as a read error, which fails the backup. If the
/// backup stops early, dropping this kills the command.
pub struct CommandOutput {
    /// The command as typed, for messages.
    shown: String,
    child: Child,
    stdout: ChildStdout,
    status: Option<ExitStatus>,
}

impl CommandOutput {
    /// Starts `argv` with standard input from /dev/null, standard error
    /// inherited (so cron mails it), standard output piped to us.
    pub fn spawn(argv: &[String]) -> anyhow::Result<Self> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| anyhow::anyhow!("--stdin-from-command needs a command after `--`"))?;
        let shown = argv.join(" ");
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run `{shown}`: {e}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("`{shown}`: no standard output pipe"))?;
        Ok(Self {
            shown,
            child,
            stdout,
            status: None,
        })
    }

    /// The file name to store the output under when none is given: the
    /// program's base name.
    pub fn default_name(argv: &[String]) -> String {
        argv.first()
            .and_then(|p| std::path::Path::new(p).file_name())
            .map_or_else(|| "stdout".into(), |n| n.to_string_lossy().into_owned())
    }

    fn check_exit(&mut self) -> io::Result<()> {
        let status = match self.status {
            Some(s) => s,
            None => {
                let s = self.child.wait()?;
                self.status = Some(s);
                s
            }
        };
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "`{}` failed ({status}); its output was not stored as a snapshot",
                self.shown
            )))
        }
    }
}

impl Read for CommandOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.check_exit()?;
        }
        Ok(n)
    }
}

impl Drop for CommandOutput {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn output_of_a_good_command_reads_whole() {
        let mut out = CommandOutput::spawn(&argv(&["sh", "-c", "printf hello"])).unwrap();
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn a_failing_command_is_a_read_error_at_the_end() {
        let mut out = CommandOutput::spawn(&argv(&["sh", "-c", "printf partial; exit 3"])).unwrap();
        let mut s = String::new();
        let err = out.read_to_string(&mut s).unwrap_err();
        assert!(err.to_string().contains("exit status: 3"), "{err}");
        assert!(err.to_string().contains("sh -c"), "{err}");
    }

    #[test]
    fn a_missing_program_is_named() {
        let Err(err) = CommandOutput::spawn(&argv(&["/nonexistent/dump"])) else {
            panic!("spawned a missing program");
        };
        assert!(err.to_string().contains("/nonexistent/dump"), "{err}");
    }

    #[test]
    fn default_name_is_the_program_base_name() {
        assert_eq!(
            CommandOutput::default_name(&argv(&["/usr/bin/pg_dump", "app"])),
            "pg_dump"
        );
    }
}
