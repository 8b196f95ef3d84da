//! The write-time record: when the gateway saw each write position, per log, so it can
//! tell how far behind (in time) an instance is (SPEC `staleness_budget`, the lag of
//! `GET /projections`).
//!
//! Per log, a queue of `(position, seen at)` increasing in both. Memory is bounded: at
//! [`MAX_WRITE_RECORD`] entries, adjacent pairs are coalesced into
//! `(newer position, older time)`, which can only over-estimate a lag (never
//! under-estimate it). Entries every instance covers are pruned, except the newest of
//! them, so a reset instance still knows what it must reach.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Most entries kept per log. 4096 keeps the record to ~64 KiB per log while giving a
/// lag resolution far finer than any sensible staleness budget.
pub const MAX_WRITE_RECORD: usize = 4096;

/// Write positions seen, per log (by the projection's log index).
#[derive(Debug)]
pub(crate) struct WriteRecord {
    logs: Vec<VecDeque<(u64, Instant)>>,
    cap: usize,
}

impl WriteRecord {
    /// A record for `logs` logs, each keeping at most `cap` (at least 2) entries.
    pub(crate) fn new(logs: usize, cap: usize) -> Self {
        Self {
            logs: (0..logs).map(|_| VecDeque::new()).collect(),
            cap: cap.max(2),
        }
    }

    /// Entries kept for `log` (tests, diagnostics).
    #[cfg(test)]
    pub(crate) fn len(&self, log: usize) -> usize {
        self.logs.get(log).map_or(0, VecDeque::len)
    }

    /// The gateway saw a write reach `pos` on `log` at `now`.
    pub(crate) fn record(&mut self, log: usize, pos: u64, now: Instant) {
        let cap = self.cap;
        let Some(q) = self.logs.get_mut(log) else {
            return;
        };
        match q.back_mut() {
            // Not newer than what is known: the older sighting already bounds it.
            Some(&mut (last, _)) if pos <= last => return,
            // Same instant: the newer position replaces the older exactly.
            Some(back) if back.1 == now => {
                back.0 = pos;
                return;
            }
            _ => {}
        }
        // Callers take `now` before the lock, so sightings may arrive slightly out of
        // time order: pull later-stamped entries back to `now` (older = conservative).
        for entry in q.iter_mut().rev() {
            if entry.1 <= now {
                break;
            }
            entry.1 = now;
        }
        if q.len() >= cap {
            coalesce(q);
        }
        q.push_back((pos, now));
    }

    /// Drops the entries of `log` that `floor` (the lowest checkpoint over all
    /// instances) covers, keeping the newest of them.
    pub(crate) fn prune(&mut self, log: usize, floor: Option<u64>) {
        let (Some(q), Some(floor)) = (self.logs.get_mut(log), floor) else {
            return;
        };
        while q.len() >= 2 && q.get(1).is_some_and(|&(p, _)| p <= floor) {
            q.pop_front();
        }
    }

    /// Age at `now` of the oldest position of `log` that checkpoint `cp` misses.
    pub(crate) fn lag(&self, log: usize, cp: Option<u64>, now: Instant) -> Duration {
        let Some(q) = self.logs.get(log) else {
            return Duration::ZERO;
        };
        let first_missed = match cp {
            None => 0,
            Some(cp) => q.partition_point(|&(p, _)| p <= cp),
        };
        q.get(first_missed).map_or(Duration::ZERO, |&(_, seen)| {
            now.saturating_duration_since(seen)
        })
    }

    /// The newest position of `log` seen at or before `cutoff`.
    pub(crate) fn newest_at_or_before(&self, log: usize, cutoff: Instant) -> Option<u64> {
        let q = self.logs.get(log)?;
        let n = q.partition_point(|&(_, seen)| seen <= cutoff);
        n.checked_sub(1).and_then(|i| q.get(i)).map(|&(p, _)| p)
    }
}

/// Halves `q` by merging adjacent pairs into `(newer position, older time)`.
fn coalesce(q: &mut VecDeque<(u64, Instant)>) {
    let old = std::mem::take(q);
    let mut iter = old.into_iter();
    while let Some((p1, t1)) = iter.next() {
        match iter.next() {
            Some((p2, _)) => q.push_back((p2, t1)),
            None => q.push_back((p1, t1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lag_is_the_age_of_the_oldest_missed_position() {
        let mut r = WriteRecord::new(1, 16);
        let t0 = Instant::now();
        r.record(0, 10, t0);
        r.record(0, 20, t0 + Duration::from_secs(1));
        r.record(0, 30, t0 + Duration::from_secs(2));
        let now = t0 + Duration::from_secs(5);
        assert_eq!(r.lag(0, None, now), Duration::from_secs(5));
        assert_eq!(r.lag(0, Some(10), now), Duration::from_secs(4));
        assert_eq!(r.lag(0, Some(25), now), Duration::from_secs(3));
        assert_eq!(r.lag(0, Some(30), now), Duration::ZERO);
        assert_eq!(
            r.newest_at_or_before(0, t0 + Duration::from_millis(1500)),
            Some(20)
        );
        assert_eq!(
            r.newest_at_or_before(0, t0 - Duration::from_millis(1)),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lower_or_equal_positions_keep_the_older_sighting() {
        let mut r = WriteRecord::new(1, 16);
        let t0 = Instant::now();
        r.record(0, 20, t0);
        r.record(0, 15, t0 + Duration::from_secs(1));
        r.record(0, 20, t0 + Duration::from_secs(1));
        assert_eq!(r.len(0), 1);
        assert_eq!(
            r.lag(0, Some(14), t0 + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn full_record_coalesces_and_only_overestimates_lag() {
        let mut exact = WriteRecord::new(1, 1 << 20);
        let mut bounded = WriteRecord::new(1, 8);
        let t0 = Instant::now();
        for k in 1..=100u64 {
            let at = t0 + Duration::from_millis(k * 10);
            exact.record(0, k, at);
            bounded.record(0, k, at);
        }
        assert!(bounded.len(0) <= 8);
        let now = t0 + Duration::from_secs(2);
        for cp in [
            None,
            Some(0),
            Some(1),
            Some(37),
            Some(64),
            Some(99),
            Some(100),
        ] {
            assert!(
                bounded.lag(0, cp, now) >= exact.lag(0, cp, now),
                "cp {cp:?}"
            );
        }
        for ms in [0, 15, 333, 640, 999, 1500] {
            let cutoff = t0 + Duration::from_millis(ms);
            assert!(bounded.newest_at_or_before(0, cutoff) >= exact.newest_at_or_before(0, cutoff));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn prune_keeps_the_newest_covered_entry() {
        let mut r = WriteRecord::new(1, 16);
        let t0 = Instant::now();
        for k in 1..=5u64 {
            r.record(0, k * 10, t0 + Duration::from_secs(k));
        }
        r.prune(0, Some(35));
        assert_eq!(r.len(0), 3);
        assert_eq!(
            r.newest_at_or_before(0, t0 + Duration::from_secs(3)),
            Some(30)
        );
        r.prune(0, None);
        assert_eq!(r.len(0), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_order_stamps_are_pulled_back() {
        let mut r = WriteRecord::new(1, 16);
        let t0 = Instant::now();
        r.record(0, 10, t0 + Duration::from_secs(2));
        r.record(0, 20, t0 + Duration::from_secs(1));
        let now = t0 + Duration::from_secs(4);
        assert_eq!(r.lag(0, None, now), Duration::from_secs(3));
        assert_eq!(r.lag(0, Some(10), now), Duration::from_secs(3));
    }
}
