//! `backup --metrics-file`: the outcome of the last run in Prometheus' text
//! format, for node_exporter's textfile collector.
//!
//! The file is replaced atomically (written beside it, then renamed), so the
//! collector never reads half of it. A failed run keeps the last success
//! time of the run before (read back from the old file), so an alert on
//! `time() - coffer_backup_last_success_timestamp_seconds` keeps counting.

use coffer_core::format::snapshot::SnapshotStats;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const LAST_SUCCESS: &str = "coffer_backup_last_success_timestamp_seconds";

/// One backup run, as the metrics tell it.
pub struct Run<'a> {
    /// The `--repo` argument (a label).
    pub repo: &'a str,
    /// When the run ended.
    pub finished: SystemTime,
    /// What it stored; `None` if it failed (no snapshot).
    pub stats: Option<&'a SnapshotStats>,
}

/// Writes `run` to `path`, replacing the file.
pub fn write(path: &Path, run: &Run) -> std::io::Result<()> {
    let previous = std::fs::read_to_string(path).ok();
    let text = render(run, previous.as_deref());
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let written = (|| {
        // Created here, never an existing file or a symlink planted at
        // the name (the metrics directory may be shared with a collector).
        // One left by a crashed run of the same PID is removed (the link
        // itself, never what it points at) and the creation tried once more.
        let create = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
        };
        let mut f = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&tmp)?;
                create()?
            }
            other => other?,
        };
        // Readable by a collector whatever the umask (the unit's is 0077):
        // counts and times, nothing secret.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The metrics text.
fn render(run: &Run, previous: Option<&str>) -> String {
    let label = format!("{{repo=\"{}\"}}", escape(run.repo));
    let finished = seconds(run.finished);
    let last_success = match run.stats {
        Some(_) => Some(finished),
        None => previous.and_then(|p| read_value(p, LAST_SUCCESS)),
    };
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{label} {value}\n"
        ));
    };
    gauge(
        "coffer_backup_success",
        "1 if the last backup run stored a snapshot, 0 if it failed.",
        if run.stats.is_some() { 1.0 } else { 0.0 },
    );
    gauge(
        "coffer_backup_last_run_timestamp_seconds",
        "When the last backup run ended.",
        finished,
    );
    if let Some(t) = last_success {
        gauge(
            LAST_SUCCESS,
            "When the last successful backup run ended.",
            t,
        );
    }
    if let Some(s) = run.stats {
        let rows: [(&str, &str, f64); 6] = [
            (
                "duration_seconds",
                "Wall time of the last successful run.",
                s.duration_ms as f64 / 1000.0,
            ),
            (
                "files",
                "Regular files in the last snapshot.",
                s.files as f64,
            ),
            (
                "bytes",
                "Bytes of file contents in the last snapshot.",
                s.bytes as f64,
            ),
            (
                "new_bytes",
                "Plaintext bytes the last run stored anew.",
                s.new_bytes as f64,
            ),
            (
                "stored_bytes",
                "Bytes of packs the last run uploaded.",
                s.stored_bytes as f64,
            ),
            (
                "unreadable_entries",
                "Source entries the last run could not read.",
                s.errors as f64,
            ),
        ];
        for (name, help, value) in rows {
            gauge(&format!("coffer_backup_{name}"), help, value);
        }
    }
    out
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The value of the first sample of `name` in a metrics text.
fn read_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A symlink planted where the temporary goes (its name is guessable:
    /// the PID) is replaced, never written through; the file is 0644
    /// whatever the umask.
    #[test]
    fn the_temporary_never_writes_through_a_planted_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("coffer.prom");
        let tmp = dir
            .path()
            .join(format!("coffer.prom.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let run = Run {
            repo: "r",
            finished: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            stats: None,
        };
        write(&path, &run).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!tmp.exists());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("coffer_backup_success"));
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_time() {
        let stats = SnapshotStats {
            files: 3,
            bytes: 300,
            duration_ms: 1500,
            ..SnapshotStats::default()
        };
        let t1 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ok = render(
            &Run {
                repo: "s3://b/\"p\"",
                finished: t1,
                stats: Some(&stats),
            },
            None,
        );
        assert!(
            ok.contains("coffer_backup_success{repo=\"s3://b/\\\"p\\\"\"} 1\n"),
            "{ok}"
        );
        assert!(
            ok.contains("coffer_backup_files{repo=\"s3://b/\\\"p\\\"\"} 3\n"),
            "{ok}"
        );
        assert!(ok.contains("coffer_backup_duration_seconds{repo=\"s3://b/\\\"p\\\"\"} 1.5\n"));
        assert_eq!(read_value(&ok, LAST_SUCCESS), Some(1_700_000_000.0));

        let failed = render(
            &Run {
                repo: "r",
                finished: t1 + Duration::from_secs(86_400),
                stats: None,
            },
            Some(&ok),
        );
        assert!(
            failed.contains("coffer_backup_success{repo=\"r\"} 0\n"),
            "{failed}"
        );
        assert_eq!(read_value(&failed, LAST_SUCCESS), Some(1_700_000_000.0));
        assert_eq!(
            read_value(&failed, "coffer_backup_last_run_timestamp_seconds"),
            Some(1_700_086_400.0)
        );
        assert!(!failed.contains("coffer_backup_files"), "{failed}");
        // A first run that fails has no last success at all.
        let first = render(
            &Run {
                repo: "r",
                finished: t1,
                stats: None,
            },
            None,
        );
        assert!(!first.contains(LAST_SUCCESS), "{first}");
    }
}
