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
        let index = match instance {
            None => None,
            Some(name) => match p.instance_index(name) {
                Some(i) => Some(i),
                None => return,
            },
        };
        p.apply(index, checkpoint, SourceKind::Redis, Instant::now());
    }

    /// Every configured projection: pushes to any gateway are written through to
    /// Redis whatever the projection's other sources, so every one is reloaded.
    fn projections(&self) -> Vec<String> {
        self.0.projections().map(|p| p.name().to_string()).collect()
    }

    fn snapshot(&self) -> Vec<(String, String, PositionVector)> {
        let mut out = Vec::new();
        for p in self.0.projections() {
            for (name, cp) in p.instances().iter().zip(p.checkpoints()) {
                if !cp.is_empty() {
                    out.push((p.name().to_string(), name.clone(), cp));
                }
            }
        }
        out
    }
}
