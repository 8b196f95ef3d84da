//! The last hold timeouts, for the status page: a bounded ring, newest last.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How many hold timeouts the ring keeps by default: enough to see a pattern on the
/// status page, small enough (a few KiB) to poll every second.
pub const RECENT_TIMEOUTS: usize = 50;

/// One hold timeout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeoutEvent {
    /// When the hold ended, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The route's name.
    pub route: String,
    /// The projection the read waited for.
    pub projection: String,
    /// The route's `on_timeout`: `primary`, `stale` or `error`.
    pub action: &'static str,
    /// How long the read was held, in milliseconds.
    pub waited_ms: f64,
}

/// A bounded ring of the last hold timeouts, shared by the read path (writer) and the
/// admin listener (reader). Pushing is one short lock.
#[derive(Debug)]
pub struct RecentTimeouts {
    capacity: usize,
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<TimeoutEvent>,
    total: u64,
}

impl Default for RecentTimeouts {
    fn default() -> Self {
        RecentTimeouts::new(RECENT_TIMEOUTS)
    }
}

impl RecentTimeouts {
    /// A ring of at most `capacity` events (at least one).
    pub fn new(capacity: usize) -> RecentTimeouts {
        RecentTimeouts {
            capacity: capacity.max(1),
            inner: Mutex::new(Ring::default()),
        }
    }

    /// Records a timeout that ends now; the oldest event goes when the ring is full.
    pub fn push(&self, route: &str, projection: &str, action: &'static str, waited: Duration) {
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let event = TimeoutEvent {
            at_unix_ms,
            route: route.to_string(),
            projection: projection.to_string(),
            action,
            waited_ms: waited.as_secs_f64() * 1000.0,
        };
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if ring.events.len() == self.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event);
        ring.total += 1;
    }

    /// The kept events, oldest first, and the number recorded since start.
    pub fn snapshot(&self) -> (Vec<TimeoutEvent>, u64) {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (ring.events.iter().cloned().collect(), ring.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_counts_them_all() {
        let ring = RecentTimeouts::new(2);
        for route in ["a", "b", "c"] {
            ring.push(route, "p", "error", Duration::from_millis(300));
        }
        let (events, total) = ring.snapshot();
        assert_eq!(total, 3);
        let routes: Vec<&str> = events.iter().map(|e| e.route.as_str()).collect();
        assert_eq!(routes, ["b", "c"]);
        assert_eq!(events[1].waited_ms, 300.0);
        assert!(events[1].at_unix_ms > 0);
    }
}
