//! A running `coffer mount` for tests.

use super::Env;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `coffer mount`; unmounted (and waited for) on drop.
pub struct Mounted {
    child: Option<Child>,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Mounted {
    /// Mounts at `mnt` with `--snapshot-refresh 1` and `extra` arguments.
    pub fn new(env: &Env, extra: &[&str]) -> Self {
        let dir = env.path("mnt");
        std::fs::create_dir_all(&dir).unwrap();
        let log = env.path("mount.log");
        let child = env
            .admin_cmd("mount", &["--snapshot-refresh", "1"])
            .args(extra)
            .arg(&dir)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let m = Self {
            child: Some(child),
            dir,
            log,
        };
        wait_until(Duration::from_secs(20), || m.dir.join("snapshots").is_dir());
        m
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The mount process's peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        let pid = self.child.as_ref().map_or(0, Child::id);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib / 1024
    }

    /// Snapshot directory names, oldest first (without `latest`).
    pub fn snapshot_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "latest")
            .collect();
        names.sort();
        names
    }

    /// Unmounts with fusermount3 and returns the mount's exit code and log.
    pub fn unmount(mut self) -> (Option<i32>, String) {
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(st.success(), "fusermount3 -u failed");
        let code = self.child.take().unwrap().wait().unwrap().code();
        (code, std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.dir)
                .status();
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `diff -r --no-dereference A B`: its output lines with A and B replaced
/// by placeholders, sorted, without the lines diff prints for fifos.
pub fn diff_r(a: &Path, b: &Path) -> Vec<String> {
    let out = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.code().unwrap_or(2) <= 1 || !out.stdout.is_empty(),
        "diff failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout)
        .replace(&a.display().to_string(), "A")
        .replace(&b.display().to_string(), "B");
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.contains(" is a fifo while file "))
        .map(String::from)
        .collect();
    lines.sort();
    lines
}
