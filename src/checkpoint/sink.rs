//! The bridge from the Redis store to the registry (the `redis` checkpoint source).

use std::sync::Arc;

use tokio::time::Instant;

use super::Registry;
use crate::config::SourceKind;
use crate::position::PositionVector;

/// Feeds checkpoints read from Redis into the registry (the `redis` source).
#[derive(Debug)]
pub struct RegistrySink(pub Arc<Registry>);

impl crate::store::redis::CheckpointSink for RegistrySink {
    fn apply(&self, projection: &str, instance: Option<&str>, checkpoint: &PositionVector) {
        let Some(p) = self.0.get(projection) else {
            return;
        };
        if !self.0.listens(projection, SourceKind::Redis) {
            metrics::counter!(
                "tidemark_checkpoint_updates_ignored_total",
                "projection" => projection.to_string(),
                "source" => SourceKind::Redis.as_str(),
            )
            .increment(1);
            return;
        }
        let index = match instance {
            None => None,
            Some(name) => match p.instance_index(name) {
                Some(i) => Some(i),
                None => return,
            },
        };
        p.apply(index, checkpoint, SourceKind::Redis, Instant::now());
    }

    /// The projections with the `redis` source (the others ignore Redis).
    fn projections(&self) -> Vec<String> {
        self.0
            .projections()
            .filter(|p| self.0.listens(p.name(), SourceKind::Redis))
            .map(|p| p.name().to_string())
            .collect()
    }

    fn snapshot(&self) -> Vec<(String, String, PositionVector)> {
        let mut out = Vec::new();
        for p in self.0.projections() {
            if !self.0.listens(p.name(), SourceKind::Redis) {
                continue;
            }
            // Only what came from `push` or `redis`: `header` and `poll` checkpoints
            // stay with the gateway that learned them.
            for (name, cp) in p.instances().iter().zip(p.shared_checkpoints()) {
                if !cp.is_empty() {
                    out.push((p.name().to_string(), name.clone(), cp));
                }
            }
        }
        out
    }
}
