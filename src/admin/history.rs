//! The status page's recent history: a bounded ring of samples (per instance lag and
//! checkpoint, per projection held reads), taken every second by a background task
//! that ends with the gateway.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;

/// Time between samples: the chart's resolution.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Samples kept by default: ten minutes at [`SAMPLE_INTERVAL`], a few hundred KiB at
/// most even with dozens of instances.
pub const HISTORY_SAMPLES: usize = 600;

/// One moment's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Lag in seconds, by `projection/instance`.
    pub lag: BTreeMap<String, f64>,
    /// Held reads, by projection.
    pub held: BTreeMap<String, u64>,
    /// Hold timeouts so far (since the last start or reload), by route: the page's
    /// timeouts per minute are the differences.
    pub timeouts: BTreeMap<String, u64>,
}

impl Sample {
    /// The gateway's figures now.
    pub fn take(gateway: &Gateway) -> Sample {
        let now = Instant::now();
        let mut lag = BTreeMap::new();
        let mut held = BTreeMap::new();
        for p in gateway.registry.projections() {
            held.insert(p.name().to_string(), p.held() as u64);
            for (instance, l) in p.instances().iter().zip(p.lags(now)) {
                lag.insert(series_name(p.name(), instance), l.as_secs_f64());
            }
        }
        let timeouts = match gateway.route_stats() {
            Value::Array(routes) => routes
                .iter()
                .filter_map(|r| Some((r["name"].as_str()?.to_string(), r["timeouts"].as_u64()?)))
                .collect(),
            _ => BTreeMap::new(),
        };
        Sample {
            at_unix_ms: unix_ms(SystemTime::now()),
            lag,
            held,
            timeouts,
        }
    }
}

/// The chart series name of an instance.
pub fn series_name(projection: &str, instance: &str) -> String {
    format!("{projection}/{instance}")
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A bounded ring of samples, oldest first.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// A ring of at most `capacity` samples (at least two, so a chart has a line).
    pub fn new(capacity: usize) -> History {
        History {
            capacity: capacity.max(2),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// Adds a sample; the oldest goes when the ring is full.
    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == self.capacity {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The samples as columns, `extra` (the current figures) appended:
    /// `{"interval_ms", "t": [..], "lag": {series: [..]}, "held": {projection: [..]},
    /// "timeouts": {route: [..]}}`.
    /// A series absent from a sample (an instance added by a reload) is `null` there.
    pub fn columns(&self, extra: Option<Sample>) -> Value {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let all: Vec<&Sample> = samples.iter().chain(extra.as_ref()).collect();
        let t: Vec<u64> = all.iter().map(|s| s.at_unix_ms).collect();
        let column = |pick: &dyn Fn(&Sample) -> Vec<(String, Value)>| {
            let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for (i, s) in all.iter().enumerate() {
                for (name, v) in pick(s) {
                    out.entry(name)
                        .or_insert_with(|| vec![Value::Null; all.len()])[i] = v;
                }
            }
            out
        };
        let lag = column(&|s| s.lag.iter().map(|(k, v)| (k.clone(), json!(v))).collect());
        let held = column(&|s| s.held.iter().map(|(k, v)| (k.clone(), json!(v))).collect());
        let timeouts = column(&|s| {
            s.timeouts
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect()
        });
        json!({
            "interval_ms": SAMPLE_INTERVAL.as_millis() as u64,
            "t": t,
            "lag": lag,
            "held": held,
            "timeouts": timeouts,
        })
    }
}

/// Samples the gateway `current` returns (the live one, across reloads) into
/// `history` every [`SAMPLE_INTERVAL`] (first at once) until `stop` is cancelled.
/// Needs a tokio runtime; without one nothing is sampled.
pub fn spawn_sampler<F>(history: Arc<History>, current: F, stop: CancellationToken)
where
    F: Fn() -> Arc<Gateway> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no tokio runtime: the status page's history stays empty");
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => history.push(Sample::take(&current())),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64, lag: &[(&str, f64)]) -> Sample {
        Sample {
            at_unix_ms: at,
            lag: lag.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            held: BTreeMap::from([("p".to_string(), at)]),
            timeouts: BTreeMap::from([("r".to_string(), at * 2)]),
        }
    }

    #[test]
    fn keeps_the_newest_samples_as_aligned_columns() {
        let h = History::new(2);
        h.push(sample(1, &[("p/a", 0.5)]));
        h.push(sample(2, &[("p/a", 1.0)]));
        h.push(sample(3, &[("p/a", 1.5), ("p/b", 0.0)]));
        let c = h.columns(Some(sample(4, &[("p/b", 2.0)])));
        assert_eq!(c["t"], json!([2, 3, 4]));
        assert_eq!(c["lag"]["p/a"], json!([1.0, 1.5, null]));
        assert_eq!(c["lag"]["p/b"], json!([null, 0.0, 2.0]));
        assert_eq!(c["held"]["p"], json!([2, 3, 4]));
        assert_eq!(c["timeouts"]["r"], json!([4, 6, 8]));
        assert_eq!(c["interval_ms"], json!(1000));
    }
}
