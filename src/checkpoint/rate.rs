//! Catch-up rates: positions per second per instance and log, an exponentially
//! weighted moving average over the checkpoint advances, for the ETA a `503` tells
//! clients (`Retry-After`, problem body).

use std::time::Duration;

use tokio::time::Instant;

/// Time constant of the moving average: an advance `TAU` after the previous one
/// weighs ~63%. 10 s follows a changing rate within a few reports without jumping
/// on one burst.
pub const RATE_TAU: Duration = Duration::from_secs(10);

/// A rate older than this (no advance since) is not trusted for an ETA: a projector
/// that stopped is not "about to catch up".
pub const RATE_HORIZON: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    /// Position and time the next sample is measured from.
    base: Option<(u64, Instant)>,
    /// Positions per second; `None` until two advances at different instants.
    ewma: Option<f64>,
}

/// Rates by instance, then by log index.
#[derive(Debug)]
pub(crate) struct Rates {
    rates: Vec<Vec<Rate>>,
}

impl Rates {
    pub(crate) fn new(instances: usize, logs: usize) -> Self {
        Self {
            rates: vec![vec![Rate::default(); logs]; instances],
        }
    }

    /// Instance `instance` reached `pos` on `log` at `now`.
    pub(crate) fn observe(&mut self, instance: usize, log: usize, pos: u64, now: Instant) {
        let Some(rate) = self.rates.get_mut(instance).and_then(|r| r.get_mut(log)) else {
            return;
        };
        let Some((base_pos, base_at)) = rate.base else {
            rate.base = Some((pos, now));
            return;
        };
        let dt = now.saturating_duration_since(base_at);
        if dt.is_zero() {
            // Same instant: keep the base; the next advance measures across both.
            return;
        }
        let sample = pos.saturating_sub(base_pos) as f64 / dt.as_secs_f64();
        let alpha = 1.0 - (-dt.as_secs_f64() / RATE_TAU.as_secs_f64()).exp();
        rate.ewma = Some(match rate.ewma {
            None => sample,
            Some(old) => old + alpha * (sample - old),
        });
        rate.base = Some((pos, now));
    }

    /// Forgets `instance`'s rates (its checkpoint was reset).
    pub(crate) fn reset(&mut self, instance: usize) {
        if let Some(r) = self.rates.get_mut(instance) {
            r.fill(Rate::default());
        }
    }

    /// Positions per second of `instance` on `log`, if recent and positive.
    pub(crate) fn rate(&self, instance: usize, log: usize, now: Instant) -> Option<f64> {
        let rate = self.rates.get(instance)?.get(log)?;
        let (_, at) = rate.base?;
        if now.saturating_duration_since(at) > RATE_HORIZON {
            return None;
        }
        rate.ewma.filter(|r| r.is_finite() && *r > 0.0)
    }
}

/// Seconds to a duration, saturating at a day (an ETA beyond that means "unknown").
pub(crate) fn secs_to_duration(secs: f64) -> Option<Duration> {
    const CAP: f64 = 86_400.0;
    if !secs.is_finite() || secs > CAP {
        return None;
    }
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn steady_advances_give_their_rate() {
        let mut r = Rates::new(1, 1);
        let t0 = Instant::now();
        assert_eq!(r.rate(0, 0, t0), None);
        for k in 0..5u64 {
            r.observe(0, 0, k * 100, t0 + Duration::from_secs(k));
        }
        let rate = r.rate(0, 0, t0 + Duration::from_secs(5)).unwrap();
        assert!((rate - 100.0).abs() < 1e-6, "{rate}");
        assert_eq!(
            r.rate(0, 0, t0 + Duration::from_secs(4) + RATE_HORIZON * 2),
            None
        );
        r.reset(0);
        assert_eq!(r.rate(0, 0, t0 + Duration::from_secs(5)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn same_instant_advances_are_measured_together() {
        let mut r = Rates::new(1, 1);
        let t0 = Instant::now();
        r.observe(0, 0, 0, t0);
        r.observe(0, 0, 50, t0);
        r.observe(0, 0, 200, t0 + Duration::from_secs(2));
        assert_eq!(r.rate(0, 0, t0 + Duration::from_secs(2)), Some(100.0));
    }
}
