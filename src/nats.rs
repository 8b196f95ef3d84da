//! The NATS connection (`[nats]`), shared by the `nats` checkpoint source and the
//! `nats_stream` write fences, through the official `async-nats` client.
//!
//! The connection is made in the background and re-made on its own after a broker
//! restart (the client's reconnect, unbounded, with its backoff): the gateway starts
//! and serves while the broker is down. Meanwhile each JetStream API request fails
//! after `request_timeout`, so a source skips that interval and a fence takes its
//! fallback; `/readyz` shows `"nats": "degraded"` (still 200) until the connection
//! is back.
//!
//! Only two JetStream API requests are made, each answered from one server-side
//! snapshot: consumer info (`$JS.API.CONSUMER.INFO.STREAM.CONSUMER`) and stream info
//! (`$JS.API.STREAM.INFO.STREAM`). Their answers are read into the few fields used
//! here (not the client's full structs), so a server that adds or drops an unrelated
//! field never breaks the source.

use std::time::Duration;

use async_nats::jetstream::{self, response::Response};
use serde::Deserialize;

use crate::config::nats::NatsConfig;

/// Why the connection could not be set up or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("nats.credentials_file `{path}` cannot be read: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot set up the NATS client for {address}: {message}")]
    Connect { address: String, message: String },
    #[error("JetStream request `{subject}` failed: {message}")]
    Request { subject: String, message: String },
    #[error("JetStream answered `{subject}` with an error: {message}")]
    Api { subject: String, message: String },
}

/// `/readyz`'s view of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    Degraded,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded => "degraded",
        }
    }
}

/// One connection to the NATS server, shared by every source and fence.
#[derive(Debug)]
pub struct Nats {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    timeout: Duration,
    address: String,
}

/// The consumer-info fields the `nats` source reads (one server-side snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ConsumerState {
    /// The last message delivered: its stream sequence.
    pub delivered: Sequence,
    /// Every message at or below this stream sequence is acknowledged.
    pub ack_floor: Sequence,
    /// Messages matching the consumer's filter not yet delivered.
    #[serde(default)]
    pub num_pending: u64,
    /// Messages delivered and not yet acknowledged.
    #[serde(default)]
    pub num_ack_pending: u64,
    #[serde(skip)]
    pub filtered: bool,
}

/// A sequence pair of consumer info; only the stream's sequence is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Sequence {
    #[serde(default)]
    pub stream_seq: u64,
}

#[derive(Debug, Deserialize)]
struct RawConsumerInfo {
    #[serde(flatten)]
    state: ConsumerState,
    #[serde(default)]
    config: RawConsumerConfig,
}

#[derive(Debug, Default, Deserialize)]
struct RawConsumerConfig {
    #[serde(default)]
    filter_subject: Option<String>,
    #[serde(default)]
    filter_subjects: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct RawStreamInfo {
    state: RawStreamState,
}

#[derive(Debug, Deserialize)]
struct RawStreamState {
    last_seq: u64,
}

impl Nats {
    /// Sets the client up; the connection itself is made in the background (this
    /// returns at once even when the broker is down). Fails only on an unreadable
    /// credentials file or a URL the client refuses.
    pub async fn connect(config: &NatsConfig) -> Result<Nats, NatsError> {
        let options = match &config.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| NatsError::Credentials {
                    path: path.display().to_string(),
                    source,
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        let client = options
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(config.request_timeout.max(Duration::from_secs(1)))
            .request_timeout(Some(config.request_timeout))
            .connect(config.url.as_str())
            .await
            .map_err(|e| NatsError::Connect {
                address: config.display.clone(),
                message: e.to_string(),
            })?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(config.request_timeout);
        Ok(Nats {
            client,
            jetstream,
            timeout: config.request_timeout,
            address: config.display.clone(),
        })
    }

    /// `ok` while connected; `degraded` before the first connection and while
    /// reconnecting.
    pub fn health(&self) -> Health {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Health::Ok,
            _ => Health::Degraded,
        }
    }

    /// `host:port` of the server (never a secret).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The durable consumer's progress, from one consumer-info snapshot.
    pub async fn consumer_state(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<ConsumerState, NatsError> {
        let subject = format!("CONSUMER.INFO.{stream}.{consumer}");
        let info: RawConsumerInfo = self.request(subject).await?;
        let filters = info.config.filter_subjects.unwrap_or_default();
        let filtered = info
            .config
            .filter_subject
            .is_some_and(|f| !f.is_empty() && f != ">")
            || filters.iter().any(|f| f != ">");
        Ok(ConsumerState {
            filtered,
            ..info.state
        })
    }

    /// The stream's last sequence (stream info).
    pub async fn stream_last_sequence(&self, stream: &str) -> Result<u64, NatsError> {
        let info: RawStreamInfo = self.request(format!("STREAM.INFO.{stream}")).await?;
        Ok(info.state.last_seq)
    }

    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        subject: String,
    ) -> Result<T, NatsError> {
        let empty = serde_json::json!({});
        let request = self
            .jetstream
            .request::<_, _, Response<T>>(subject.clone(), &empty);
        // The client bounds requests too; this also bounds the wait for a slot in its
        // send queue while it reconnects.
        let reply = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| NatsError::Request {
                subject: subject.clone(),
                message: format!("no answer within {:?}", self.timeout),
            })?
            .map_err(|e| NatsError::Request {
                subject: subject.clone(),
                message: e.to_string(),
            })?;
        match reply {
            Response::Ok(v) => Ok(v),
            Response::Err { error } => Err(NatsError::Api {
                subject,
                message: error.to_string(),
            }),
        }
    }
}
