//! What `backup` and `restore` show while they run: a progress bar on a
//! terminal (files, bytes, rate, ETA), JSON lines with `--json`, nothing
//! otherwise (so cron mails only on trouble).

use coffer_core::progress::{Counts, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a run shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A bar on standard error (a terminal).
    Bar,
    /// One JSON object per interval on standard output.
    Json,
    /// Nothing.
    Silent,
}

impl Display {
    /// `--json` gives JSON lines; else a bar when standard error is a
    /// terminal; else nothing.
    pub fn choose(json: bool) -> Self {
        if json {
            Display::Json
        } else if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Silent
        }
    }
}

/// How often progress is shown: `default` (one second for JSON lines, 200 ms
/// for the bar) unless `COFFER_PROGRESS_INTERVAL_MS` says otherwise.
fn interval(default: Duration) -> Duration {
    std::env::var("COFFER_PROGRESS_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(default, Duration::from_millis)
}

/// Shows one run's progress from a thread of its own until [`Reporter::finish`].
pub struct Reporter {
    progress: Option<Arc<Progress>>,
    /// Dropping it tells the display thread to stop.
    done: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Starts showing the progress of `command` ("backup", "restore").
    pub fn start(command: &'static str, display: Display) -> Self {
        if display == Display::Silent {
            return Self {
                progress: None,
                done: None,
                thread: None,
            };
        }
        let progress = Arc::new(Progress::default());
        let (done, stop) = mpsc::channel();
        let p = progress.clone();
        let thread = std::thread::spawn(move || match display {
            Display::Bar => bar(&p, &stop),
            _ => json_lines(command, &p, &stop),
        });
        Self {
            progress: Some(progress),
            done: Some(done),
            thread: Some(thread),
        }
    }

    /// The counters for the run to update (none when nothing is shown).
    pub fn progress(&self) -> Option<Arc<Progress>> {
        self.progress.clone()
    }

    /// Stops showing (the bar is cleared).
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.done = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits up to `d`; false once the [`Reporter`] is done (its sender gone).
fn wait(stop: &mpsc::Receiver<()>, d: Duration) -> bool {
    matches!(stop.recv_timeout(d), Err(mpsc::RecvTimeoutError::Timeout))
}

fn bar(progress: &Progress, stop: &mpsc::Receiver<()>) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    let every = interval(Duration::from_millis(200));
    loop {
        let c = progress.counts();
        bar.set_length(c.total_bytes.max(c.bytes));
        bar.set_position(c.bytes);
        bar.set_message(files(&c));
        if !wait(stop, every) {
            break;
        }
    }
    bar.finish_and_clear();
}

/// `12/345 files`, with a `+` while the total may still grow.
fn files(c: &Counts) -> String {
    let more = if c.totals_known { "" } else { "+" };
    format!("{}/{}{more} files", c.files, c.total_files.max(c.files))
}

fn json_lines(command: &str, progress: &Progress, stop: &mpsc::Receiver<()>) {
    let started = Instant::now();
    let interval = interval(Duration::from_secs(1));
    while wait(stop, interval) {
        let c = progress.counts();
        let line = serde_json::json!({
            "type": "progress",
            "command": command,
            "files": c.files,
            "bytes": c.bytes,
            "total_files": c.total_files.max(c.files),
            "total_bytes": c.total_bytes.max(c.bytes),
            "totals_known": c.totals_known,
            "elapsed_ms": started.elapsed().as_millis() as u64,
        });
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}
