//! The `nats_stream` fence: the stream's last sequence (stream info, bounded by
//! `[nats] request_timeout`), read after the write's answer arrives.
//!
//! Right when the command service publishes *before* it answers (it waits for the
//! `PubAck`): the write's message is then in the stream, so the last sequence read
//! afterwards is at or past it (conservative: later messages of other writers count
//! too, and the read waits for them as well). Wrong when something publishes *later*,
//! e.g. an outbox relay that copies committed rows to the stream after the answer: the
//! fence would read a head from before the write. Fence on the outbox table instead
//! (a `postgres` fence whose query reads the outbox's last id), or have the relay's
//! sequence be the position.

use std::sync::Arc;

use super::{Fence, FenceError, Fences};
use crate::config::nats::NatsFenceConfig;
use crate::config::Config;
use crate::nats::Nats;
use crate::position::PositionVector;

#[derive(Debug)]
pub struct NatsFence {
    pub nats: Arc<Nats>,
    pub config: NatsFenceConfig,
}

impl NatsFence {
    pub async fn read(&self) -> Result<PositionVector, FenceError> {
        let last = self.nats.stream_last_sequence(&self.config.stream).await?;
        let mut position = PositionVector::new();
        position.set(self.config.log.clone(), last);
        Ok(position)
    }

    pub fn describe(&self) -> String {
        format!("stream {} on {}", self.config.stream, self.nats.address())
    }
}

impl Fences {
    /// Adds the routes' `nats_stream` fences (none without a connection: the config
    /// check refuses such fences without `[nats]`).
    pub fn add_nats(&mut self, config: &Config, nats: Option<&Arc<Nats>>) {
        let Some(nats) = nats else { return };
        for (route, f) in &config.positions.nats_fences {
            let fence = NatsFence {
                nats: nats.clone(),
                config: f.clone(),
            };
            self.0.insert(route.clone(), Arc::new(Fence::Nats(fence)));
        }
    }
}
