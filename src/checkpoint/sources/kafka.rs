//! The `kafka` checkpoint source: a projector that consumes a topic in a consumer
//! group records its progress in the broker (the group's committed offsets), so
//! tidemark reads it there and the projector changes nothing. Every `interval`
//! (default 20ms) one OffsetFetch for the group, on the partitions the projection's
//! logs name, serves every held read of the projection (held reads never query the
//! broker themselves).
//!
//! # What counts as applied
//!
//! Logs are `TOPIC-PARTITION`; positions are Kafka's "next offset": a record at offset
//! `o` is position `o + 1` (what a `kafka_topic` fence reads as the high watermark just
//! after the record was written, and what a command service that answers
//! `Write-Position` itself writes). A group's committed offset `c` on a partition is
//! the next offset it will read, so a projector that commits *after* applying has
//! applied every record below `c`: the checkpoint of the partition's log is `c`.
//!
//! A partition with no committed offset gives no checkpoint for its log: nothing is
//! known about it (the group may not have reached it yet). No 0 is invented: a
//! position 0 would mean "nothing written", which no read ever waits for (a fence
//! leaves out the partitions whose high watermark is 0, and a write's own position is
//! at least 1), so an empty partition never holds a read either way. A partition
//! that has records but no commit holds the reads whose tokens carry it until the
//! group commits there (see the README's caveats).
//!
//! What this cannot see: a consumer that commits *before* applying (auto-commit of
//! polled records, or a commit of a batch before it is written) overstates progress.
//!
//! Driven by [`super::run`]: failures (broker down, unknown group coordinator,
//! `request_timeout`) never stop the loop; they are logged once per burst and counted
//! as `tidemark_store_errors_total{op="kafka"}`.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Schedule;
use crate::checkpoint::{Projection, Registry};
use crate::config::kafka::{log_name, KafkaSourceConfig};
use crate::config::{Config, SourceKind};
use crate::kafka::{Kafka, KafkaError};
use crate::position::PositionVector;

/// Shortest wait between reads, whatever the config says (no busy loop).
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// One projection's consumer group.
#[derive(Debug)]
pub struct KafkaReader {
    kafka: Arc<Kafka>,
    config: KafkaSourceConfig,
}

impl KafkaReader {
    pub fn new(kafka: Arc<Kafka>, config: KafkaSourceConfig) -> KafkaReader {
        KafkaReader { kafka, config }
    }

    /// Reads the group's checkpoint once.
    pub async fn read(&self) -> Result<PositionVector, KafkaError> {
        let committed = self
            .kafka
            .committed(
                &self.config.group,
                &self.config.topic,
                &self.config.partitions,
            )
            .await?;
        Ok(applied(&self.config.topic, &committed))
    }

    /// `group on topic at brokers` for logs.
    pub fn describe(&self) -> String {
        format!(
            "group {} on topic {} at {}",
            self.config.group,
            self.config.topic,
            self.kafka.address()
        )
    }
}

/// The checkpoint from committed offsets `(partition, offset)`: the offset itself
/// (the next offset to read = the position applied) for each partition that has one.
pub fn applied(topic: &str, committed: &[(i32, Option<i64>)]) -> PositionVector {
    let mut vector = PositionVector::new();
    for &(partition, offset) in committed {
        if let Some(offset) = offset.and_then(|o| u64::try_from(o).ok()) {
            vector.set(log_name(topic, partition), offset);
        }
    }
    vector
}

impl super::Reader for KafkaReader {
    async fn read(&self) -> Result<PositionVector, super::ReadError> {
        Ok(KafkaReader::read(self).await?)
    }

    fn describe(&self) -> String {
        KafkaReader::describe(self)
    }
}

/// Starts the source's task (every instance of the projection reads the same
/// group), until `shutdown`.
pub fn spawn(
    projection: Arc<Projection>,
    kafka: Arc<Kafka>,
    config: KafkaSourceConfig,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let schedule = Schedule {
        kind: SourceKind::Kafka,
        instance: None,
        interval: config.interval.max(MIN_INTERVAL),
        wake: None,
    };
    let reader = KafkaReader::new(kafka, config);
    tokio::spawn(super::run(projection, reader, schedule, shutdown))
}

/// Starts the `kafka` source of every projection that has one, until `token`.
pub fn spawn_all(
    config: &Config,
    registry: &Registry,
    kafka: Option<&Arc<Kafka>>,
    token: &CancellationToken,
) {
    let Some(kafka) = kafka else { return };
    for (name, p) in &config.projections {
        if let (true, Some(source), Some(projection)) = (
            p.sources.contains(&SourceKind::Kafka),
            &p.kafka,
            registry.get(name),
        ) {
            spawn(
                projection.clone(),
                kafka.clone(),
                source.clone(),
                token.child_token(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_offset_is_the_position_applied() {
        // Records at offsets 0..=41 applied: committed 42, position of offset 41 is 42.
        let v = applied("users", &[(0, Some(42)), (3, Some(7))]);
        assert_eq!(v.get("users-0"), Some(42));
        assert_eq!(v.get("users-3"), Some(7));
        let mut write = PositionVector::new();
        write.set("users-0", 41 + 1);
        assert!(v.covers(&write), "the record at offset 41 is applied");
        write.set("users-0", 42 + 1);
        assert!(!v.covers(&write), "the record at offset 42 is not");
    }

    #[test]
    fn a_partition_without_a_committed_offset_gives_no_checkpoint() {
        let v = applied("users", &[(0, None), (1, Some(0)), (2, Some(-1001))]);
        assert_eq!(v.get("users-0"), None, "nothing is known: no invented 0");
        assert_eq!(
            v.get("users-1"),
            Some(0),
            "a commit of 0 is a real checkpoint"
        );
        assert_eq!(v.get("users-2"), None);
        assert_eq!(v.len(), 1);
    }
}
