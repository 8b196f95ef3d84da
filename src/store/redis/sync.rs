//! The sync task: a dedicated subscriber connection on the checkpoint channel, plus
//! the reloads that make pub/sub a mere hint (ARCHITECTURE habit 7).
//!
//! On every successful (re)subscribe: republish the sink's snapshot (a Redis that
//! restarted empty learns it again), then reload every projection's hash. Every
//! `resync_interval`, and at once when asked ([`super::RedisStore::resync`], after a
//! config reload): reload again; every `resync_interval`, `PING` the subscriber (a
//! connection that stopped answering is replaced). A failed republish or reload is retried soon (50 ms,
//! doubling up to 1 s) rather than at the next interval.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use redis::aio::{PubSubSink, PubSubStream};
use redis::Client;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::keys::decode_message;
use super::{CheckpointSink, Inner, Op};
use crate::config::RedisTarget;
use crate::store::StoreError;

/// Jittered exponential backoff.
struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The next delay (±20% jitter so a fleet of gateways does not reconnect in step).
    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
    }

    fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Runs until `shutdown`.
pub(crate) async fn run(
    inner: Arc<Inner>,
    sink: Arc<dyn CheckpointSink>,
    shutdown: CancellationToken,
) {
    let urls: Vec<&str> = match &inner.config.target {
        RedisTarget::Single(url) => vec![url.as_str()],
        RedisTarget::Cluster(seeds) => seeds.iter().map(String::as_str).collect(),
    };
    let clients: Vec<Client> = urls
        .iter()
        .filter_map(|url| match Client::open(*url) {
            Ok(client) => Some(client),
            Err(error) => {
                inner.burst(Op::Subscribe).failure(&error);
                None
            }
        })
        .collect();
    if clients.is_empty() {
        // Nothing to subscribe to (invalid URLs, logged above): stay unhealthy.
        shutdown.cancelled().await;
        return;
    }

    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut seed = 0usize;
    loop {
        let client = &clients[seed % clients.len()];
        let subscribed = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = subscribe(&inner, client) => result,
        };
        match subscribed {
            Ok((ping, messages)) => {
                inner.burst(Op::Subscribe).success();
                inner.subscribed.store(true, Ordering::Release);
                tracing::debug!(
                    seed = seed % clients.len(),
                    "subscribed to checkpoint channel"
                );
                backoff.reset();
                let lost = follow(&inner, &*sink, ping, messages, &shutdown).await;
                inner.subscribed.store(false, Ordering::Release);
                match lost {
                    None => return,
                    Some(error) => {
                        inner.burst(Op::Subscribe).failure(&error);
                    }
                }
                // Reconnect at once (same seed) after losing an established subscription.
                continue;
            }
            Err(error) => {
                inner.subscribed.store(false, Ordering::Release);
                inner.burst(Op::Subscribe).failure(&error);
                seed = seed.wrapping_add(1);
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Opens a subscriber connection and subscribes to the channel, bounded by the
/// connect plus response timeouts.
async fn subscribe(
    inner: &Inner,
    client: &Client,
) -> Result<(PubSubSink, PubSubStream), StoreError> {
    let limit = inner.config.connect_timeout + inner.config.response_timeout;
    let channel = inner.keys.channel();
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        Ok::<_, StoreError>(pubsub.split())
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or(Err(StoreError::Timeout(limit)))
}

/// Follows one subscription until it is lost (`Some(why)`) or `shutdown` (`None`).
async fn follow(
    inner: &Inner,
    sink: &dyn CheckpointSink,
    mut ping: PubSubSink,
    mut messages: PubSubStream,
    shutdown: &CancellationToken,
) -> Option<StoreError> {
    let interval = inner.config.resync_interval.max(Duration::from_millis(10));
    let mut retry = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let mut need_republish = true;
    let mut need_reload = true;
    let mut next_resync = Instant::now() + interval;
    loop {
        if need_republish {
            need_republish = inner.republish(sink).await.is_err();
        }
        if need_reload {
            need_reload = inner.reload(sink).await.is_err();
        }
        let wake = if need_republish || need_reload {
            Instant::now() + retry.next_delay()
        } else {
            retry.reset();
            next_resync
        };
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = inner.resync.notified() => need_reload = true,
            message = messages.next() => match message {
                Some(message) => apply_message(inner, sink, message.get_payload_bytes()),
                None => return Some(StoreError::Disconnected),
            },
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= next_resync {
                    next_resync = Instant::now() + interval;
                    need_reload = true;
                    let limit = inner.config.response_timeout;
                    match tokio::time::timeout(limit, ping.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Some(error.into()),
                        Err(_) => return Some(StoreError::Timeout(limit)),
                    }
                }
            }
        }
    }
}

fn apply_message(inner: &Inner, sink: &dyn CheckpointSink, payload: &[u8]) {
    match decode_message(payload) {
        Ok(message) => {
            inner.burst(Op::Decode).success();
            sink.apply(
                &message.projection,
                message.instance.as_deref(),
                &message.checkpoint,
            );
        }
        Err(error) => {
            inner.burst(Op::Decode).failure(&error);
        }
    }
}
