//! Per-route figures for the status page (`GET /status`'s `routes`): answers by
//! source, errors, hold timeouts, and the read-wait distribution in the buckets of
//! `tidemark_read_wait_seconds`, so p50/p99 can be read off without a Prometheus.
//!
//! Each figure is one relaxed atomic counter, bumped next to the route's Prometheus
//! handle (one or two adds per request). Readers take a snapshot whose counters may
//! be a few requests apart from each other: fine for a page refreshed every second.
//! The figures belong to the gateway built from one config: a reload starts them at
//! zero (the page's per-minute rates treat a drop as a restart).

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::WAIT_BUCKETS;

/// Sources of a read answer, in slot order.
pub const SOURCES: [&str; 4] = ["projection", "cache", "primary", "stale"];

/// The counters of one route.
#[derive(Debug, Default)]
pub struct RouteStats {
    requests: AtomicU64,
    sources: [AtomicU64; SOURCES.len()],
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    timeouts: AtomicU64,
    /// Read waits per bucket of [`WAIT_BUCKETS`], the last slot past the largest.
    waits: [AtomicU64; WAIT_BUCKETS.len() + 1],
}

impl RouteStats {
    /// One answer, with its read source (`""` for writes, passthrough, errors).
    pub fn answered(&self, source: &str, status: u16) {
        self.requests.fetch_add(1, Relaxed);
        if let Some(i) = SOURCES.iter().position(|&s| s == source) {
            self.sources[i].fetch_add(1, Relaxed);
        }
        match status {
            400..=499 => self.client_errors.fetch_add(1, Relaxed),
            500.. => self.server_errors.fetch_add(1, Relaxed),
            _ => 0,
        };
    }

    /// One read's hold time.
    pub fn waited(&self, secs: f64) {
        let slot = WAIT_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(WAIT_BUCKETS.len());
        self.waits[slot].fetch_add(1, Relaxed);
    }

    /// One hold that reached `max_wait`.
    pub fn timed_out(&self) {
        self.timeouts.fetch_add(1, Relaxed);
    }

    /// The figures as JSON: `requests`, `sources` (`{projection: n, ...}`),
    /// `client_errors`, `server_errors`, `timeouts`, `reads_timed`, and
    /// `wait_p50_ms` / `wait_p99_ms` (the upper bound of the bucket holding the
    /// percentile; `null` with no reads, or past the largest bucket).
    pub fn snapshot(&self) -> Value {
        let waits: Vec<u64> = self.waits.iter().map(|w| w.load(Relaxed)).collect();
        let sources: serde_json::Map<String, Value> = SOURCES
            .iter()
            .zip(&self.sources)
            .map(|(name, n)| (name.to_string(), json!(n.load(Relaxed))))
            .collect();
        json!({
            "requests": self.requests.load(Relaxed),
            "sources": sources,
            "client_errors": self.client_errors.load(Relaxed),
            "server_errors": self.server_errors.load(Relaxed),
            "timeouts": self.timeouts.load(Relaxed),
            "reads_timed": waits.iter().sum::<u64>(),
            "wait_p50_ms": percentile_ms(&waits, 0.50),
            "wait_p99_ms": percentile_ms(&waits, 0.99),
        })
    }
}

/// The upper bound (ms) of the bucket holding quantile `q` of `counts`.
fn percentile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return WAIT_BUCKETS.get(i).map(|&b| (b * 1e6).round() / 1e3);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sources_errors_and_wait_percentiles() {
        let s = RouteStats::default();
        for _ in 0..98 {
            s.answered("projection", 200);
            s.waited(0.0003);
        }
        s.answered("cache", 200);
        s.waited(0.2);
        s.answered("", 503);
        s.waited(2.0);
        s.timed_out();
        s.answered("", 404);
        let v = s.snapshot();
        assert_eq!(v["requests"], 101);
        assert_eq!(v["sources"]["projection"], 98);
        assert_eq!(v["sources"]["cache"], 1);
        assert_eq!(v["server_errors"], 1);
        assert_eq!(v["client_errors"], 1);
        assert_eq!(v["timeouts"], 1);
        assert_eq!(v["reads_timed"], 100);
        assert_eq!(v["wait_p50_ms"], 0.5);
        assert_eq!(v["wait_p99_ms"], 250.0);
        assert_eq!(RouteStats::default().snapshot()["wait_p50_ms"], Value::Null);
    }
}
