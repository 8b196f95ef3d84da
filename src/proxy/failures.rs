//! Upstream failures in the log: at `warn`, naming the upstream and the instance,
//! rate-limited per instance: the first failure is logged at once, then at most one
//! line per [`INTERVAL`], which gives the number of failures since the last line. An
//! outage under load would otherwise write a line per request; every failure is
//! still counted in `tidemark_upstream_errors_total`.
//!
//! Invariant: `suppressed` counts the failures not yet reported by a line; the task
//! that wins the compare-and-swap of `last_line` logs and takes that count.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// At most one line per instance per interval (after the first).
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The failure log of one instance.
#[derive(Debug)]
pub struct FailureLog {
    epoch: Instant,
    /// Milliseconds from `epoch` to the last line, plus one (0: no line yet).
    last_line: AtomicU64,
    suppressed: AtomicU64,
}

impl FailureLog {
    pub fn new(epoch: Instant) -> FailureLog {
        FailureLog {
            epoch,
            last_line: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Records a failure of `upstream`'s `instance` (`kind`: connect, timeout,
    /// protocol); returns true when it was logged.
    pub fn failure(
        &self,
        upstream: &str,
        instance: &str,
        kind: &'static str,
        error: &dyn fmt::Display,
    ) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last_line.load(Ordering::Acquire);
        let due = last == 0 || now.saturating_sub(last) >= INTERVAL.as_millis() as u64;
        if !due
            || self
                .last_line
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let earlier = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            upstream,
            instance,
            kind,
            error = %error,
            failures_since_last_line = earlier,
            "upstream request failed (further failures of this instance: one line per 10 s)"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_first_failure_then_one_line_per_interval() {
        let log = FailureLog::new(Instant::now());
        assert!(log.failure("u", "a", "connect", &"refused"));
        assert!(!log.failure("u", "a", "connect", &"refused"));
        assert!(!log.failure("u", "a", "connect", &"refused"));
        assert_eq!(log.suppressed.load(Ordering::Relaxed), 2);
        tokio::time::advance(INTERVAL).await;
        assert!(log.failure("u", "a", "connect", &"refused"));
        assert_eq!(log.suppressed.load(Ordering::Relaxed), 0);
        assert!(!log.failure("u", "a", "connect", &"refused"));
    }
}
