//! The `poll` checkpoint source: `GET poll_url` every `poll_interval` (jittered), with
//! its own timeout, answering a JSON object or the text form. (Stub.)

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Projection;
use crate::config::PollConfig;

/// Starts one polling task per target of `config`; each stops on `shutdown`.
/// Failures (connect, timeout, bad body) are logged once per burst and counted as
/// `store_errors_total`-style events, never fatal.
pub fn spawn(
    projection: Arc<Projection>,
    config: PollConfig,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let _ = (projection, config, shutdown);
    todo!("checkpoint helper")
}
