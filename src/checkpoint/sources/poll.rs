//! The `poll` checkpoint source: `GET poll_url` every `poll_interval` (jittered), with
//! its own timeout, answering a JSON object (`{"users": 1234}`) or the text form
//! (`users=1234,orders=88`; a bare number means the projection's only log).
//!
//! Failures (connect, timeout, status, bad body) never stop the loop. They are logged
//! once per burst (the first failure at `warn`, the recovery at `info`, the rest at
//! `debug`) and counted as `tidemark_store_errors_total{op="poll"}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Projection;
use crate::config::{PollConfig, SourceKind};
use crate::position::{PositionError, PositionVector};

/// Largest poll answer read, in bytes. A checkpoint is a few log names and numbers;
/// 64 KiB leaves room for verbose JSON and stops a misdirected URL streaming a page.
pub const MAX_POLL_BODY: usize = 64 * 1024;

/// Shortest wait between polls, whatever the config says (no busy loop).
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Why one poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The request could not be built (bad URL for a request).
    #[error("cannot build the request")]
    Request(#[source] http::Error),
    /// Connecting or exchanging the request failed.
    #[error("request failed")]
    Connect(#[source] hyper_util::client::legacy::Error),
    /// No complete answer within the poll timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A non-2xx status.
    #[error("answered {0}")]
    Status(StatusCode),
    /// Reading the body failed or it exceeded [`MAX_POLL_BODY`].
    #[error("cannot read the body (limit {MAX_POLL_BODY} bytes)")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The body is not UTF-8.
    #[error("body is not UTF-8")]
    Utf8(#[source] std::str::Utf8Error),
    /// The body looks like JSON but is not an object of log -> position.
    #[error("body is not a JSON object of log -> position")]
    Json(#[source] serde_json::Error),
    /// The body is not a valid position vector.
    #[error("body is not a position vector")]
    Position(#[source] PositionError),
    /// The target names an instance the projection does not have.
    #[error("projection has no instance `{0}`")]
    UnknownInstance(String),
}

/// Starts one polling task per target of `config`; each stops on `shutdown`.
/// Failures (connect, timeout, bad body) are logged once per burst and counted as
/// `store_errors_total`-style events, never fatal. Must be called within a Tokio
/// runtime.
pub fn spawn(
    projection: Arc<Projection>,
    config: PollConfig,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.timeout));
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    config
        .targets
        .iter()
        .map(|(instance, url)| {
            let target = Target {
                projection: Arc::clone(&projection),
                instance: instance.clone(),
                url: url.clone(),
                interval: config.interval.max(MIN_INTERVAL),
                timeout: config.timeout,
                client: client.clone(),
            };
            tokio::spawn(target.run(shutdown.clone()))
        })
        .collect()
}

/// One polled URL.
struct Target {
    projection: Arc<Projection>,
    instance: Option<String>,
    url: Uri,
    interval: Duration,
    timeout: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Target {
    async fn run(self, shutdown: CancellationToken) {
        let mut failures: u64 = 0;
        loop {
            let outcome = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                outcome = self.poll_once() => outcome,
            };
            match outcome {
                Ok(()) if failures > 0 => {
                    tracing::info!(projection = %self.projection.name(), url = %self.url, failures, "checkpoint poll recovered");
                    failures = 0;
                }
                Ok(()) => {}
                Err(error) => {
                    failures += 1;
                    metrics::counter!("tidemark_store_errors_total", "op" => "poll").increment(1);
                    let error = &error as &dyn std::error::Error;
                    if failures == 1 {
                        tracing::warn!(projection = %self.projection.name(), url = %self.url, error, "checkpoint poll failing");
                    } else {
                        tracing::debug!(projection = %self.projection.name(), url = %self.url, error, failures, "checkpoint poll still failing");
                    }
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(jittered(self.interval)) => {}
            }
        }
    }

    /// Fetches and applies one checkpoint.
    async fn poll_once(&self) -> Result<(), PollError> {
        let instance = match &self.instance {
            None => None,
            Some(name) => Some(
                self.projection
                    .instance_index(name)
                    .ok_or_else(|| PollError::UnknownInstance(name.clone()))?,
            ),
        };
        let body = tokio::time::timeout(self.timeout, self.fetch())
            .await
            .map_err(|_| PollError::Timeout(self.timeout))??;
        let logs = self.projection.logs();
        let default_log = match logs {
            [only] => Some(only.as_str()),
            _ => None,
        };
        let checkpoint = parse_body(&body, default_log)?;
        self.projection
            .apply(instance, &checkpoint, SourceKind::Poll, Instant::now());
        Ok(())
    }

    async fn fetch(&self) -> Result<Bytes, PollError> {
        let request = Request::get(self.url.clone())
            .header(header::ACCEPT, "application/json, text/plain")
            .body(Empty::new())
            .map_err(PollError::Request)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(PollError::Connect)?;
        if !response.status().is_success() {
            return Err(PollError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_POLL_BODY)
            .collect()
            .await
            .map_err(PollError::Body)?;
        Ok(body.to_bytes())
    }
}

/// Parses a poll answer: a JSON object `{"log": n}` or the text form.
pub fn parse_body(body: &[u8], default_log: Option<&str>) -> Result<PositionVector, PollError> {
    let text = std::str::from_utf8(body).map_err(PollError::Utf8)?.trim();
    if text.starts_with('{') {
        let map: BTreeMap<String, u64> = serde_json::from_str(text).map_err(PollError::Json)?;
        return PositionVector::from_map(map).map_err(PollError::Position);
    }
    PositionVector::parse(text, default_log).map_err(PollError::Position)
}

/// `interval` scaled by a random factor in [0.9, 1.1], so many gateways polling one
/// projector do not fall into step.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::thread_rng().gen_range(0.9..=1.1))
}

#[cfg(test)]
mod tests;
