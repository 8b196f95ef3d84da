//! Store errors are counted every time but logged once per burst: the first failure
//! of a burst at `warn`, then silence until the next success, which is logged at
//! `info` with the number of failures. A Redis outage under load would otherwise
//! write one log line per request.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts and logs the failures of one store operation (`op`, a bounded label such
/// as `cache_get`), once per burst.
///
/// Every failure increments `tidemark_store_errors_total{op}`. Lock-free: two
/// atomics, safe to share between tasks.
#[derive(Debug)]
pub struct ErrorBurst {
    op: &'static str,
    failures: AtomicU64,
}

impl ErrorBurst {
    /// A logger for the operation `op` (also the metric label: keep it a constant).
    pub const fn new(op: &'static str) -> Self {
        Self {
            op,
            failures: AtomicU64::new(0),
        }
    }

    /// The operation this logger reports on.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// Records a failure: counted always, logged at `warn` only when it starts a
    /// burst. Returns true when this failure was logged.
    pub fn failure(&self, error: &dyn fmt::Display) -> bool {
        metrics::counter!("tidemark_store_errors_total", "op" => self.op).increment(1);
        let first = self.failures.fetch_add(1, Ordering::AcqRel) == 0;
        if first {
            tracing::warn!(
                op = self.op,
                error = %error,
                "store operation failed; further failures are counted in tidemark_store_errors_total and logged when the burst ends"
            );
        }
        first
    }

    /// Records a success: ends the burst in progress, if any, with an `info` line
    /// giving its failure count. Returns that count (0: no burst was in progress).
    pub fn success(&self) -> u64 {
        // Cheap load first: the common case (no burst) never writes the cache line.
        if self.failures.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let failures = self.failures.swap(0, Ordering::AcqRel);
        if failures > 0 {
            tracing::info!(op = self.op, failures, "store operation recovered");
        }
        failures
    }

    /// Failures of the burst in progress (0 when the last outcome was a success).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_first_failure_of_each_burst_and_reports_the_count_on_recovery() {
        let burst = ErrorBurst::new("test_op");
        assert_eq!(burst.success(), 0, "no burst yet");
        assert!(burst.failure(&"down"), "first failure starts a burst");
        assert!(!burst.failure(&"down"), "second failure is silent");
        assert!(!burst.failure(&"down"));
        assert_eq!(burst.failures(), 3);
        assert_eq!(burst.success(), 3, "recovery reports the burst size");
        assert_eq!(burst.success(), 0, "a second success reports nothing");
        assert!(burst.failure(&"down again"), "a new burst is logged again");
        assert_eq!(burst.op(), "test_op");
    }
}
