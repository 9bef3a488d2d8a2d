//! The dedup horizon: until when a stored blob is reused.
//!
//! A writer reuses a blob only before its *due* time, never later than the
//! horizon H after its pack was stored (what prune's safety rests on, see
//! docs/DESIGN.md). A blob stored for the first time is due at a point of
//! the second half of the horizon that its pack's id gives: each pack id
//! carries a phase in its last two bytes, and a run hands out phases evenly
//! (a golden-ratio sequence from a random start), so the packs of one night's
//! upload come due over H/2 days, not on one. A blob stored again because it
//! came due is due a whole H later: the spread the first upload made is kept
//! instead of drawn again, so an unchanged tree is uploaded once per H, not
//! once per 3H/4.

use coffer_core::format::id::PackId;
use std::sync::atomic::{AtomicU64, Ordering};

/// 2^64 / golden ratio: consecutive multiples, taken mod 2^64, spread evenly.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The horizon of one run.
pub(crate) struct Horizon {
    /// The run's start (Unix seconds): every new pack's upload time.
    now: i64,
    /// H, in seconds.
    length: i64,
    /// The next pack's phase, as a fraction of 2^64.
    next_phase: AtomicU64,
}

/// A horizon of `days`, in seconds.
pub(crate) fn seconds(days: u32) -> i64 {
    i64::from(days) * 86_400
}

impl Horizon {
    /// The horizon of a run started at `now` with H = `days`.
    pub fn new(now: i64, days: u32) -> Self {
        Self {
            now,
            length: seconds(days),
            next_phase: AtomicU64::new(rand::random()),
        }
    }

    /// Whether a blob due at `due` is still reused by this run. A blob this
    /// run stored is, even with a horizon of 0 (due at the run's start).
    pub fn reusable(&self, due: i64) -> bool {
        due >= self.now
    }

    /// A new pack's id: random, with the run's next phase in its last two
    /// bytes (the first ones name its directory and stay random).
    pub fn pack_id(&self) -> PackId {
        let phase = self.next_phase.fetch_add(GOLDEN, Ordering::Relaxed);
        let mut id = PackId::random();
        id.0[30..].copy_from_slice(&((phase >> 48) as u16).to_be_bytes());
        id
    }

    /// When a blob stored in `pack` for the first time comes due: in the
    /// second half of the horizon, where the pack's phase puts it.
    pub fn first_due(&self, pack: &PackId) -> i64 {
        let phase = i64::from(u16::from_be_bytes([pack.0[30], pack.0[31]]));
        let half = self.length / 2;
        self.now + half + half * phase / 65_536
    }

    /// When a blob stored again because it came due is due next.
    pub fn again_due(&self) -> i64 {
        self.now + self.length
    }

    /// When a blob this run stores in `pack` comes due: `again` if it was
    /// stored before and came due.
    pub fn due(&self, pack: &PackId, again: bool) -> i64 {
        if again {
            self.again_due()
        } else {
            self.first_due(pack)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn packs_of_one_run_come_due_evenly_over_the_second_half() {
        let h = Horizon::new(1_000_000, 30);
        let mut per_day = [0u32; 31];
        for _ in 0..64 {
            let due = h.first_due(&h.pack_id());
            assert!((1_000_000 + 15 * DAY..1_000_000 + 30 * DAY).contains(&due));
            per_day[((due - 1_000_000) / DAY) as usize] += 1;
        }
        // 64 packs over 15 days: 4.3 a day; a golden-ratio sequence puts
        // 3 to 6 on each (random ids would put 0 to 9).
        for day in 15..30 {
            assert!((3..=6).contains(&per_day[day]), "{per_day:?}");
        }
        assert_eq!(h.again_due(), 1_000_000 + 30 * DAY);
        assert!(h.reusable(1_000_000) && !h.reusable(999_999));
    }

    #[test]
    fn pack_ids_stay_random_where_they_name_a_directory() {
        let h = Horizon::new(0, 30);
        let firsts: std::collections::HashSet<u8> = (0..64).map(|_| h.pack_id().0[0]).collect();
        assert!(firsts.len() > 40, "{}", firsts.len());
    }
}
