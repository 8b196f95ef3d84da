//! Latency histograms (HdrHistogram, microseconds) and their JSON summary.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded: 120 s (anything slower is clamped, and counted as such).
const MAX_US: u64 = 120_000_000;

/// A new histogram of microseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| unreachable_bounds())
}

fn unreachable_bounds() -> Histogram<u64> {
    // 1..120e6 with 3 digits is always valid; fall back to an auto-resizing one.
    Histogram::new(3).expect("3 significant digits are valid")
}

/// Records `us` microseconds, clamped into range.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, MAX_US));
}

/// The percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Points of the percentile curve, `(percentile, microseconds)`, for the charts.
    pub curve: Vec<(f64, u64)>,
}

/// Percentiles at which the curve is sampled (dense in the tail).
const CURVE: &[f64] = &[
    0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 92.5, 95.0, 96.0, 97.0,
    98.0, 99.0, 99.3, 99.5, 99.7, 99.8, 99.9, 99.93, 99.95, 99.97, 99.99, 99.999, 100.0,
];

/// Summarises `h`.
pub fn summary(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    Summary {
        count: h.len(),
        mean_us: h.mean(),
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        curve: CURVE
            .iter()
            .map(|p| (*p, h.value_at_quantile(p / 100.0)))
            .collect(),
    }
}

/// Median of `values` (0 for none): the figure quoted from repeated runs.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_percentiles_of_what_was_recorded() {
        let mut h = histogram();
        for us in 1..=1000 {
            record(&mut h, us);
        }
        let s = summary(&h);
        assert_eq!(s.count, 1000);
        assert!((499..=501).contains(&s.p50_us), "{}", s.p50_us);
        assert!((989..=991).contains(&s.p99_us), "{}", s.p99_us);
        assert_eq!(s.max_us, 1000);
        assert_eq!(s.curve.first().map(|c| c.0), Some(0.0));
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
