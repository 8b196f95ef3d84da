//! Rate-limited log lines: events that can come once per request (hold timeouts,
//! writes on a log no projection consumes) are counted per key and logged at most
//! once per interval, with the count, so an afternoon of trouble is a few lines, not
//! one per request.
//!
//! A key's first event is logged at once (count 1); the events of the next
//! `interval` are counted silently; the first event after it is logged with the
//! count of every event since the previous line (itself included). Metrics carry the
//! exact totals; the log says "this is happening, this often".
//!
//! Invariant: one mutex guards the map of windows; an event takes it once, briefly
//! (no I/O, no allocation but a key's first insertion). Keys are config names
//! (routes), so the map is bounded by the config; a reload builds a new gateway and
//! with it a fresh throttle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Default interval between two lines of one key: 10 s, short enough to follow an
/// incident, long enough that a burst of thousands of timeouts is a few lines.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counts events per key; see the module doc.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    windows: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the key's last line was logged.
    logged_at: Instant,
    /// Events since then, not yet logged.
    pending: u64,
}

/// A line that is due: `count` events over `over` (time since the previous line, or
/// zero for a key's first event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub count: u64,
    pub over: Duration,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(LOG_INTERVAL)
    }
}

impl Throttle {
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Records one event of `key` at `now`; `Some` when a line is due now.
    pub fn hit(&self, key: &str, now: Instant) -> Option<Due> {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(w) = windows.get_mut(key) else {
            windows.insert(
                key.to_string(),
                Window {
                    logged_at: now,
                    pending: 0,
                },
            );
            return Some(Due {
                count: 1,
                over: Duration::ZERO,
            });
        };
        w.pending += 1;
        let over = now.saturating_duration_since(w.logged_at);
        if over < self.interval {
            return None;
        }
        let count = std::mem::take(&mut w.pending);
        w.logged_at = now;
        Some(Due { count, over })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn first_event_at_once_then_one_line_per_interval_with_the_count() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(
            t.hit("a", t0),
            Some(Due {
                count: 1,
                over: Duration::ZERO
            })
        );
        for i in 1..=285u64 {
            assert_eq!(t.hit("a", t0 + Duration::from_millis(i * 30)), None);
        }
        // Another key has its own window.
        assert_eq!(
            t.hit("b", t0 + Duration::from_secs(1)).map(|d| d.count),
            Some(1)
        );
        let due = t.hit("a", t0 + Duration::from_secs(10)).expect("due");
        assert_eq!(due.count, 286);
        assert_eq!(due.over, Duration::from_secs(10));
        assert_eq!(t.hit("a", t0 + Duration::from_secs(11)), None);
        let due = t.hit("a", t0 + Duration::from_secs(60)).expect("due");
        assert_eq!(due.count, 2);
    }
}
