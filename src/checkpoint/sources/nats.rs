//! The `nats` checkpoint source: the projector's durable JetStream consumer records
//! its progress in the broker, so tidemark reads it there and the projector changes
//! nothing. Every `interval` (default 20ms) one consumer-info request serves every
//! held read of the projection (held reads never query the broker themselves).
//!
//! # What counts as applied
//!
//! Positions of the source's `log` are stream sequences (the sequence a `PubAck`
//! names, and what a `nats_stream` fence reads). From one consumer-info snapshot:
//!
//! - `ack_floor.stream_seq`: every message at or below it is acknowledged. A
//!   projector that acknowledges *after* applying has applied them: this is the
//!   checkpoint.
//! - When the snapshot also has `num_pending == 0` (nothing matching left to deliver)
//!   and `num_ack_pending == 0` (nothing delivered awaits its ack), every message of
//!   the stream up to the snapshot's moment that the consumer will ever see is
//!   applied. For an unfiltered consumer that is everything up to
//!   `delivered.stream_seq` (pending 0 means it delivered the stream's last message),
//!   which is therefore the checkpoint; both numbers are from one snapshot, so no
//!   publish between two requests can be counted by mistake.
//! - A filtered consumer is never delivered the sequences it does not match, so its
//!   delivered sequence can stay below the stream's last one (which is what a fence
//!   reads) forever. When the previous snapshot was caught up and filtered, the next
//!   round reads the stream's last sequence *first*, then the consumer info: if that
//!   snapshot is still caught up, every matching message up to a moment after the
//!   last sequence was read is applied, so the projection covers that last sequence.
//!   Reading them the other way round could count a message published between the two
//!   requests. (Such a consumer costs two requests per interval while idle.)
//!
//! What this cannot see (see the README's caveats): a consumer that acknowledges
//! *before* applying (or uses `AckNone`, where delivery counts as ack) overstates
//! progress; a message that reaches `max_deliver` unacknowledged leaves the ack
//! pending count without being applied; on a clustered stream the consumer leader's
//! replica may trail the stream leader by a replication round-trip.
//!
//! Driven by [`super::run`]: failures (broker down, unknown stream or consumer,
//! `request_timeout`) never stop the loop; they are logged once per burst and counted
//! as `tidemark_store_errors_total{op="nats"}`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Schedule;
use crate::checkpoint::{Projection, Registry};
use crate::config::nats::NatsSourceConfig;
use crate::config::{Config, SourceKind};
use crate::nats::{ConsumerState, Nats, NatsError};
use crate::position::PositionVector;

/// Shortest wait between reads, whatever the config says (no busy loop).
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// One projection's consumer.
#[derive(Debug)]
pub struct NatsReader {
    nats: Arc<Nats>,
    config: NatsSourceConfig,
    /// The last snapshot was caught up on a filtered consumer: read the stream's
    /// last sequence before the next consumer info. Only the source's own task
    /// reads and writes it (an atomic so the reader can be shared by reference).
    stream_first: AtomicBool,
}

impl NatsReader {
    pub fn new(nats: Arc<Nats>, config: NatsSourceConfig) -> NatsReader {
        NatsReader {
            nats,
            config,
            stream_first: AtomicBool::new(false),
        }
    }

    /// Reads the consumer's checkpoint once.
    pub async fn read(&self) -> Result<PositionVector, NatsError> {
        let head = if self.stream_first.load(Ordering::Relaxed) {
            Some(self.nats.stream_last_sequence(&self.config.stream).await?)
        } else {
            None
        };
        let state = self
            .nats
            .consumer_state(&self.config.stream, &self.config.consumer)
            .await?;
        self.stream_first
            .store(caught_up(&state) && state.filtered, Ordering::Relaxed);
        let mut vector = PositionVector::new();
        vector.set(self.config.log.clone(), applied(&state, head));
        Ok(vector)
    }

    /// `stream/consumer on host:port` for logs.
    pub fn describe(&self) -> String {
        format!(
            "{}/{} on {}",
            self.config.stream,
            self.config.consumer,
            self.nats.address()
        )
    }
}

/// Nothing left to deliver and nothing awaiting its ack.
fn caught_up(state: &ConsumerState) -> bool {
    state.num_pending == 0 && state.num_ack_pending == 0
}

/// The stream sequence the consumer has applied, from one snapshot; `head` is the
/// stream's last sequence read *before* that snapshot.
pub fn applied(state: &ConsumerState, head: Option<u64>) -> u64 {
    let floor = state.ack_floor.stream_seq;
    if !caught_up(state) {
        return floor;
    }
    floor.max(state.delivered.stream_seq).max(head.unwrap_or(0))
}

impl super::Reader for NatsReader {
    async fn read(&self) -> Result<PositionVector, super::ReadError> {
        Ok(NatsReader::read(self).await?)
    }

    fn describe(&self) -> String {
        NatsReader::describe(self)
    }
}

/// Starts the source's task (every instance of the projection reads the same
/// consumer), until `shutdown`.
pub fn spawn(
    projection: Arc<Projection>,
    nats: Arc<Nats>,
    config: NatsSourceConfig,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let schedule = Schedule {
        kind: SourceKind::Nats,
        instance: None,
        interval: config.interval.max(MIN_INTERVAL),
        wake: None,
    };
    let reader = NatsReader::new(nats, config);
    tokio::spawn(super::run(projection, reader, schedule, shutdown))
}

/// Starts the `nats` source of every projection that has one, until `token`.
pub fn spawn_all(
    config: &Config,
    registry: &Registry,
    nats: Option<&Arc<Nats>>,
    token: &CancellationToken,
) {
    let Some(nats) = nats else { return };
    for (name, p) in &config.projections {
        if let (true, Some(source), Some(projection)) = (
            p.sources.contains(&SourceKind::Nats),
            &p.nats,
            registry.get(name),
        ) {
            spawn(
                projection.clone(),
                nats.clone(),
                source.clone(),
                token.child_token(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::Sequence;

    fn state(ack_floor: u64, delivered: u64, pending: u64, ack_pending: u64) -> ConsumerState {
        ConsumerState {
            delivered: Sequence {
                stream_seq: delivered,
            },
            ack_floor: Sequence {
                stream_seq: ack_floor,
            },
            num_pending: pending,
            num_ack_pending: ack_pending,
            filtered: false,
        }
    }

    #[test]
    fn the_ack_floor_is_the_checkpoint_while_work_is_left() {
        assert_eq!(applied(&state(10, 14, 3, 4), Some(20)), 10);
        assert_eq!(applied(&state(10, 14, 0, 4), Some(20)), 10);
        assert_eq!(applied(&state(10, 10, 5, 0), Some(20)), 10);
    }

    #[test]
    fn a_caught_up_consumer_covers_what_it_was_delivered_and_the_head_read_before() {
        assert_eq!(applied(&state(10, 14, 0, 0), None), 14);
        assert_eq!(applied(&state(10, 14, 0, 0), Some(20)), 20);
        // A head read earlier never lowers the checkpoint.
        assert_eq!(applied(&state(10, 14, 0, 0), Some(3)), 14);
    }
}
