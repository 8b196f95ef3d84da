//! Checkpoints in Redis: the max script (push and republish) and the reload of every
//! projection's hash into the sink.

use std::collections::{BTreeMap, HashMap};

use super::conn::unreachable;
use super::keys::{group_fields, instance_text};
use super::{CheckpointSink, Inner, Op};
use crate::position::PositionVector;
use crate::store::StoreError;

impl Inner {
    /// Runs the max script for one (projection, instance) checkpoint; returns how many
    /// fields it raised. An empty checkpoint is a no-op.
    pub(crate) async fn max_checkpoint(
        &self,
        op: Op,
        projection: &str,
        instance: Option<&str>,
        checkpoint: &PositionVector,
    ) -> Result<u64, StoreError> {
        if checkpoint.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.keys.checkpoints(projection))
            .arg(self.keys.channel())
            .arg(projection)
            .arg(instance_text(instance));
        for (log, position) in checkpoint.iter() {
            invocation.arg(log).arg(position);
        }
        self.call(op, async {
            let mut conn = self.conn.handle().await?;
            Ok(invocation.invoke_async::<u64>(&mut conn).await?)
        })
        .await
    }

    /// Reads one projection's checkpoints, grouped by instance (`None`: every
    /// instance). Malformed fields are counted, logged and skipped.
    pub(crate) async fn load_projection(
        &self,
        projection: &str,
    ) -> Result<BTreeMap<Option<String>, PositionVector>, StoreError> {
        let key = self.keys.checkpoints(projection);
        let fields: HashMap<String, String> = self
            .call(Op::Reload, async {
                let mut conn = self.conn.handle().await?;
                Ok(redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
        let (grouped, errors) = group_fields(fields);
        for error in &errors {
            self.burst(Op::Decode).failure(error);
        }
        Ok(grouped)
    }

    /// Reloads every projection the sink knows from its hash and applies it. Stops at
    /// the first error that means Redis is out of reach (the rest would only wait out
    /// their timeouts too); other errors skip one projection. Returns the first error.
    pub(crate) async fn reload(&self, sink: &dyn CheckpointSink) -> Result<(), StoreError> {
        let mut outcome = Ok(());
        for projection in sink.projections() {
            match self.load_projection(&projection).await {
                Ok(grouped) => {
                    for (instance, checkpoint) in &grouped {
                        sink.apply(&projection, instance.as_deref(), checkpoint);
                    }
                }
                Err(error) => {
                    let give_up = unreachable(&error);
                    if outcome.is_ok() {
                        outcome = Err(error);
                    }
                    if give_up {
                        break;
                    }
                }
            }
        }
        outcome
    }

    /// Writes every checkpoint the sink knows back through the max script (for a Redis
    /// that restarted empty). Stops at the first error that means Redis is out of
    /// reach; other errors skip one entry. Returns the first error.
    pub(crate) async fn republish(&self, sink: &dyn CheckpointSink) -> Result<(), StoreError> {
        let mut outcome = Ok(());
        for (projection, instance, checkpoint) in sink.snapshot() {
            let instance = super::keys::parse_instance(&instance);
            let result = self
                .max_checkpoint(Op::Republish, &projection, instance, &checkpoint)
                .await;
            if let Err(error) = result {
                let give_up = unreachable(&error);
                if outcome.is_ok() {
                    outcome = Err(error);
                }
                if give_up {
                    break;
                }
            }
        }
        outcome
    }
}
