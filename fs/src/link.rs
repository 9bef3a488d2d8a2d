//! The link to the store, measured: its round trip and the rate fetches
//! complete at, from every fetch the cache makes. Read-ahead sizes its
//! window from them (bandwidth x delay, as TCP does) instead of a constant
//! tuned for one distance: a reader an ocean away keeps that many bytes
//! in flight, one next to the store a few chunks.

use coffer_core::sync::lock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A window is this many bandwidth-delay products.
const WINDOW_BDPS: u64 = 4;
/// Fetches remembered for the round trip (its estimate is the quickest).
const LATENCY_SAMPLES: usize = 32;
/// The rate is bytes completed per interval of this length...
const RATE_INTERVAL: Duration = Duration::from_millis(250);
/// ...the best of the last this many intervals (a pause in reading must
/// not shrink the window the next burst needs).
const RATE_INTERVALS: usize = 40;

/// What the fetches so far say about the link.
pub(crate) struct Link {
    state: Mutex<State>,
}

struct State {
    /// The latest fetches' durations.
    latencies: VecDeque<Duration>,
    /// Bytes completed per [`RATE_INTERVAL`], newest last, with when the
    /// newest interval began.
    intervals: VecDeque<u64>,
    interval_start: Instant,
}

impl Link {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                latencies: VecDeque::with_capacity(LATENCY_SAMPLES),
                intervals: VecDeque::from([0]),
                interval_start: Instant::now(),
            }),
        }
    }

    /// Notes a fetch of `bytes` that took `took`, ending now.
    pub(crate) fn record(&self, bytes: u64, took: Duration) {
        let mut s = lock(&self.state);
        if s.latencies.len() == LATENCY_SAMPLES {
            s.latencies.pop_front();
        }
        s.latencies.push_back(took);
        s.roll(Instant::now());
        if let Some(newest) = s.intervals.back_mut() {
            *newest += bytes;
        }
    }

    /// The round trip: the quickest of the latest fetches (zero before any).
    pub(crate) fn round_trip(&self) -> Duration {
        let s = lock(&self.state);
        s.latencies.iter().min().copied().unwrap_or_default()
    }

    /// Bytes per second: the best interval lately.
    pub(crate) fn rate(&self) -> u64 {
        let mut s = lock(&self.state);
        s.roll(Instant::now());
        let best = s.intervals.iter().max().copied().unwrap_or(0);
        best * (Duration::from_secs(1).as_nanos() / RATE_INTERVAL.as_nanos()) as u64
    }

    /// Bytes ahead of a reader that keep the link busy: four times its
    /// bandwidth-delay product (a reader consumes the window while the
    /// next fetches are on their way; with twice, a stream at 40 ms got
    /// 66 MiB/s of the 114 it gets at 0 ms), between `min` and `max`.
    pub(crate) fn window(&self, min: u64, max: u64) -> u64 {
        let rtt = self.round_trip().as_secs_f64();
        let bdp = (self.rate() as f64 * rtt) as u64;
        bdp.saturating_mul(WINDOW_BDPS).clamp(min, max.max(min))
    }
}

impl State {
    /// Starts the intervals that began up to `now`.
    fn roll(&mut self, now: Instant) {
        while now.duration_since(self.interval_start) >= RATE_INTERVAL {
            self.interval_start += RATE_INTERVAL;
            self.intervals.push_back(0);
            if self.intervals.len() > RATE_INTERVALS {
                self.intervals.pop_front();
            }
            // Long idle: start afresh rather than loop interval by interval.
            if now.duration_since(self.interval_start) > RATE_INTERVAL * RATE_INTERVALS as u32 {
                self.interval_start = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_four_times_bandwidth_times_delay_within_bounds() {
        let link = Link::new();
        assert_eq!(link.window(4 << 20, 64 << 20), 4 << 20, "nothing known yet");
        // 10 MiB completed at once, the quickest fetch 100 ms: 10 MiB in a
        // 250 ms interval is 40 MiB/s, x 0.1 s x 4 = 16 MiB.
        link.record(1 << 20, Duration::from_millis(300));
        for _ in 0..9 {
            link.record(1 << 20, Duration::from_millis(100));
        }
        assert_eq!(link.round_trip(), Duration::from_millis(100));
        assert_eq!(link.rate(), 40 << 20);
        assert_eq!(link.window(1 << 20, 64 << 20), 16 << 20);
        assert_eq!(link.window(1 << 20, 2 << 20), 2 << 20, "capped");
        assert_eq!(link.window(32 << 20, 64 << 20), 32 << 20, "at least");
    }

    #[test]
    fn only_the_latest_fetches_tell_the_round_trip() {
        let link = Link::new();
        link.record(10, Duration::from_millis(1));
        for _ in 0..LATENCY_SAMPLES {
            link.record(10, Duration::from_millis(50));
        }
        assert_eq!(link.round_trip(), Duration::from_millis(50));
    }
}
