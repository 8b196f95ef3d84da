//! The lagging projector: one task per read instance applies each event once its
//! commit time plus the instance's lag has passed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::instance::ReadInstance;
use super::model::Event;

/// The lag of instance `index`: `lag * (index + 1)`, saturating (a lag too large to
/// represent means the instance never catches up, which is what such a lag asks for).
pub fn instance_lag(lag: Duration, index: usize) -> Duration {
    let factor = u32::try_from(index.saturating_add(1)).unwrap_or(u32::MAX);
    lag.checked_mul(factor).unwrap_or(Duration::MAX)
}

/// Applies the events of `feed` to `instance` in order, each at `committed_at + lag`
/// (tokio time, so paused-time tests control it), until `shutdown` or the feed closes.
pub async fn run(
    instance: Arc<ReadInstance>,
    lag: Duration,
    mut feed: UnboundedReceiver<Arc<Event>>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            event = feed.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        match event.committed_at.checked_add(lag) {
            Some(due) => {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    () = sleep_until(due) => {}
                }
            }
            // Due beyond the end of representable time: never.
            None => return shutdown.cancelled().await,
        }
        instance.apply(&event);
        tracing::trace!(
            instance = instance.name(),
            position = event.position,
            "demo projector applied event"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_i_lags_i_plus_one_times() {
        let lag = Duration::from_millis(50);
        assert_eq!(instance_lag(lag, 0), lag);
        assert_eq!(instance_lag(lag, 2), Duration::from_millis(150));
        assert_eq!(instance_lag(Duration::MAX, 1), Duration::MAX);
    }
}
