//! The `kafka_topic` fence: the latest offset (high watermark, ListOffsets) of every
//! partition of the topic that a projection consumes (its logs `TOPIC-N`), read after
//! the write's answer arrives, bounded by `[kafka] request_timeout`.
//!
//! A partition's high watermark is the next offset to be written, i.e. the position
//! ("next offset") of its last record, so each becomes the write's position on the
//! partition's log. Partitions at 0 (empty) are left out: no record there, nothing to
//! wait for, and the group never commits on an empty partition.
//!
//! Right when the command service produces *before* it answers and waits for the
//! broker's acknowledgement (`acks=all`, the send's delivery report): the write's
//! record is then in its partition, so the high watermark read afterwards is at or
//! past it. Conservative: the other partitions' heads (other writers) count too, so a
//! read may wait for records it does not need. Wrong when something produces *later*
//! (an outbox relay): fence on the outbox table instead (a `postgres` fence), or have
//! the command service answer `Write-Position: users-3=<offset + 1>` itself.

use std::sync::Arc;

use super::{Fence, FenceError, Fences};
use crate::config::kafka::{log_name, KafkaFenceConfig};
use crate::config::Config;
use crate::kafka::Kafka;
use crate::position::PositionVector;

#[derive(Debug)]
pub struct KafkaFence {
    pub kafka: Arc<Kafka>,
    pub config: KafkaFenceConfig,
}

impl KafkaFence {
    pub async fn read(&self) -> Result<PositionVector, FenceError> {
        let latest = self
            .kafka
            .latest(&self.config.topic, &self.config.partitions)
            .await?;
        Ok(heads(&self.config.topic, &latest))
    }

    pub fn describe(&self) -> String {
        format!(
            "topic {} ({} partitions) at {}",
            self.config.topic,
            self.config.partitions.len(),
            self.kafka.address()
        )
    }
}

/// The write's position from high watermarks `(partition, offset)`: each non-empty
/// partition's log at its high watermark.
pub fn heads(topic: &str, latest: &[(i32, i64)]) -> PositionVector {
    let mut vector = PositionVector::new();
    for &(partition, high) in latest {
        if let Ok(high @ 1..) = u64::try_from(high) {
            vector.set(log_name(topic, partition), high);
        }
    }
    vector
}

impl Fences {
    /// Adds the routes' `kafka_topic` fences (none without a client: the config check
    /// refuses such fences without `[kafka]`).
    pub fn add_kafka(&mut self, config: &Config, kafka: Option<&Arc<Kafka>>) {
        let Some(kafka) = kafka else { return };
        for (route, f) in &config.positions.kafka_fences {
            let fence = KafkaFence {
                kafka: kafka.clone(),
                config: f.clone(),
            };
            self.0.insert(route.clone(), Arc::new(Fence::Kafka(fence)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_high_watermark_is_the_position_of_the_last_record() {
        // Partition 0 holds offsets 0..=9 (high watermark 10); partition 1 is empty.
        let v = heads("users", &[(0, 10), (1, 0), (2, 1)]);
        assert_eq!(v.get("users-0"), Some(10));
        assert_eq!(v.get("users-1"), None, "an empty partition holds no read");
        assert_eq!(v.get("users-2"), Some(1));
        // The last record (offset 9) is position 10: a group that committed 10 has it.
        let mut checkpoint = PositionVector::new();
        checkpoint.set("users-0", 10);
        checkpoint.set("users-2", 1);
        assert!(checkpoint.covers(&v));
        checkpoint.set("users-0", 9);
        assert!(!checkpoint.covers(&v));
    }
}
