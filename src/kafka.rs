//! The Kafka connection (`[kafka]`), shared by the `kafka` checkpoint source and the
//! `kafka_topic` write fences, through `rdkafka` (librdkafka, built from source by
//! the crate: the consumer-group protocol, OffsetFetch and ListOffsets are its core,
//! used by every librdkafka client in production; `rskafka`, the established
//! pure-Rust client, has no consumer-group offset API, and the pure-Rust clients that
//! have one are new and little used).
//!
//! Two requests only, each answered from one broker-side snapshot:
//!
//! - OffsetFetch (a group's committed offsets, by its coordinator):
//!   [`Kafka::committed`]. librdkafka sends it for a handle's own `group.id`, so each
//!   group read gets a handle of its own that never joins the group (no subscribe, no
//!   assignment, `enable.auto.commit=false`): it only reads the offsets.
//! - ListOffsets with timestamp `-1` (the latest offset of each partition, by the
//!   partition leaders): [`Kafka::latest`].
//!
//! librdkafka's calls block: each runs on the blocking pool (`spawn_blocking`), with
//! librdkafka's own timeout set to `request_timeout` and a runtime timeout around it,
//! so a runtime worker never waits on the broker. librdkafka (re)connects by itself
//! in the background: the gateway starts and serves while the brokers are down.
//!
//! Health (`/readyz`'s `"kafka"`): the outcome of the latest request. While no source
//! or fence has asked for a second, a probe (a metadata request for one topic)
//! asks instead, so a broker that stops answering shows as `degraded` within about
//! `request_timeout + 1s`, and `ok` again once a request succeeds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdError;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::config::kafka::KafkaConfig;

pub use crate::nats::Health;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot set up the Kafka client for {brokers}: {message}")]
    Client { brokers: String, message: String },
    #[error("Kafka request `{what}` failed: {message}")]
    Request { what: String, message: String },
    #[error("Kafka answered `{what}` for partition {partition} with an error: {message}")]
    Partition {
        what: String,
        partition: i32,
        message: String,
    },
}

/// Routes librdkafka's own log lines and global errors to `tracing` at `debug`: a
/// broker that is down makes librdkafka report every reconnect attempt, while the
/// source's loop, the fences and `/readyz` already report the outage once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", ?level, fac, message);
    }

    fn error(&self, error: RdError, reason: &str) {
        tracing::debug!(target: "librdkafka", %error, reason);
    }
}

impl ConsumerContext for Quiet {}

type Handle = Arc<BaseConsumer<Quiet>>;

/// Health as the latest request left it.
const UNKNOWN: u8 = 0;
const OK: u8 = 1;
const FAILED: u8 = 2;

/// How long without a request before the probe asks.
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// One client of the Kafka cluster, shared by every source and fence.
pub struct Kafka {
    config: KafkaConfig,
    /// Metadata and ListOffsets (no group).
    plain: Handle,
    /// One handle per consumer group read (OffsetFetch is per `group.id`).
    groups: Mutex<HashMap<String, Handle>>,
    /// A topic the probe asks about (`None`: every topic).
    probe_topic: Option<String>,
    state: AtomicU8,
    /// Milliseconds since `epoch` of the latest outcome.
    last: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("brokers", &self.config.brokers)
            .field("health", &self.health())
            .finish()
    }
}

impl Kafka {
    /// Sets the client up (no request is made: this returns at once even when every
    /// broker is down) and starts the health probe on the current runtime; it ends
    /// when the last `Arc` is dropped. `probe_topic` is a topic the gateway reads.
    pub fn connect(
        config: &KafkaConfig,
        probe_topic: Option<String>,
    ) -> Result<Arc<Kafka>, KafkaError> {
        let plain = Arc::new(handle(config, None)?);
        let kafka = Arc::new(Kafka {
            config: config.clone(),
            plain,
            groups: Mutex::new(HashMap::new()),
            probe_topic,
            state: AtomicU8::new(UNKNOWN),
            last: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        tokio::spawn(probe(Arc::downgrade(&kafka)));
        Ok(kafka)
    }

    /// `ok` after a request that worked; `degraded` before the first answer and after
    /// a request that failed.
    pub fn health(&self) -> Health {
        match self.state.load(Ordering::Relaxed) {
            OK => Health::Ok,
            _ => Health::Degraded,
        }
    }

    /// The bootstrap brokers, `,`-joined (never a secret).
    pub fn address(&self) -> String {
        self.config.bootstrap()
    }

    /// The committed offset of `group` on each of `topic`'s `partitions` (OffsetFetch):
    /// `None` for a partition the group has no committed offset for.
    pub async fn committed(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, Option<i64>)>, KafkaError> {
        let handle = self.group_handle(group)?;
        let tpl = partition_list(topic, partitions, None)?;
        let what = format!("OffsetFetch {group} {topic}");
        let list = self
            .blocking(&what, move |timeout| {
                let _ = handle.poll(Duration::ZERO);
                handle.committed_offsets(tpl, timeout)
            })
            .await?;
        let mut out = Vec::with_capacity(partitions.len());
        for elem in list.elements_for_topic(topic) {
            if let Err(e) = elem.error() {
                // One partition's error (e.g. its coordinator moving): no offset for it
                // this round; the others still count.
                tracing::debug!(topic, partition = elem.partition(), error = %e, "OffsetFetch partition error");
                out.push((elem.partition(), None));
                continue;
            }
            let offset = match elem.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            };
            out.push((elem.partition(), offset));
        }
        Ok(out)
    }

    /// The latest offset (high watermark: the next offset to be written) of each of
    /// `topic`'s `partitions` (ListOffsets, timestamp `-1`). Any partition's error
    /// fails the whole read: a fence must not miss a partition a write went to.
    pub async fn latest(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, i64)>, KafkaError> {
        let handle = self.plain.clone();
        let tpl = partition_list(topic, partitions, Some(Offset::End))?;
        let what = format!("ListOffsets {topic}");
        let list = self
            .blocking(&what, move |timeout| {
                let _ = handle.poll(Duration::ZERO);
                handle.offsets_for_times(tpl, timeout)
            })
            .await?;
        let mut out = Vec::with_capacity(partitions.len());
        for elem in list.elements_for_topic(topic) {
            let failed = |message: String| KafkaError::Partition {
                what: what.clone(),
                partition: elem.partition(),
                message,
            };
            elem.error().map_err(|e| failed(e.to_string()))?;
            match elem.offset() {
                Offset::Offset(o) if o >= 0 => out.push((elem.partition(), o)),
                other => return Err(failed(format!("no latest offset ({other:?})"))),
            }
        }
        if out.len() != partitions.len() {
            return Err(KafkaError::Request {
                what,
                message: format!("{} of {} partitions answered", out.len(), partitions.len()),
            });
        }
        Ok(out)
    }

    /// The number of partitions of `topic` (Metadata), for `checkpoint show`.
    pub async fn partition_count(&self, topic: &str) -> Result<usize, KafkaError> {
        let handle = self.plain.clone();
        let name = topic.to_string();
        let what = format!("Metadata {topic}");
        let metadata = self
            .blocking(&what, move |timeout| {
                handle.fetch_metadata(Some(&name), timeout)
            })
            .await?;
        let topic_md = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| KafkaError::Request {
                what: what.clone(),
                message: "the topic is not in the answer".into(),
            })?;
        if let Some(e) = topic_md.error() {
            return Err(KafkaError::Request {
                what,
                message: format!("{e:?}"),
            });
        }
        Ok(topic_md.partitions().len())
    }

    /// The handle that reads `group`'s offsets (made on first use).
    fn group_handle(&self, group: &str) -> Result<Handle, KafkaError> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = groups.get(group) {
            return Ok(h.clone());
        }
        let h = Arc::new(handle(&self.config, Some(group))?);
        groups.insert(group.to_string(), h.clone());
        Ok(h)
    }

    /// Runs a blocking librdkafka call on the blocking pool, bounded by
    /// `request_timeout` (librdkafka's own timeout, and a runtime one around it), and
    /// records its outcome for [`Kafka::health`].
    async fn blocking<T: Send + 'static>(
        &self,
        what: &str,
        call: impl FnOnce(Duration) -> Result<T, RdError> + Send + 'static,
    ) -> Result<T, KafkaError> {
        let timeout = self.config.request_timeout;
        let task = tokio::task::spawn_blocking(move || call(timeout));
        let outcome = match tokio::time::timeout(timeout + Duration::from_millis(250), task).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(join)) => Err(format!("the request's thread failed: {join}")),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        self.record(outcome.is_ok());
        outcome.map_err(|message| KafkaError::Request {
            what: what.to_string(),
            message,
        })
    }

    fn record(&self, ok: bool) {
        self.state
            .store(if ok { OK } else { FAILED }, Ordering::Relaxed);
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the latest outcome.
    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// A topic the gateway reads (the first `kafka` source's, else the first
/// `kafka_topic` fence's), for the health probe.
pub fn probe_topic(config: &crate::config::Config) -> Option<String> {
    config
        .projections
        .values()
        .find_map(|p| p.kafka.as_ref().map(|k| k.topic.clone()))
        .or_else(|| {
            config
                .positions
                .kafka_fences
                .values()
                .next()
                .map(|f| f.topic.clone())
        })
}

/// Asks the cluster for one topic's metadata whenever nothing else asked for
/// [`PROBE_AFTER`], until the client is dropped.
async fn probe(kafka: Weak<Kafka>) {
    loop {
        let wait = match kafka.upgrade() {
            None => return,
            Some(k) if k.state.load(Ordering::Relaxed) == UNKNOWN || k.idle() >= PROBE_AFTER => {
                let handle = k.plain.clone();
                let topic = k.probe_topic.clone();
                let _ = k
                    .blocking("Metadata (health probe)", move |timeout| {
                        handle.fetch_metadata(topic.as_deref(), timeout).map(|_| ())
                    })
                    .await;
                PROBE_AFTER
            }
            Some(k) => PROBE_AFTER.saturating_sub(k.idle()),
        };
        tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
    }
}

/// A librdkafka consumer handle that never joins a group or consumes.
fn handle(config: &KafkaConfig, group: Option<&str>) -> Result<BaseConsumer<Quiet>, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", config.bootstrap())
        .set("client.id", "tidemark")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("allow.auto.create.topics", "false")
        // Fail requests to a broker that stopped answering (instead of librdkafka's
        // 60s), so its connection is re-made soon after it comes back.
        .set(
            "socket.timeout.ms",
            (config.request_timeout * 10)
                .clamp(Duration::from_secs(10), Duration::from_secs(60))
                .as_millis()
                .to_string(),
        )
        .set("reconnect.backoff.max.ms", "1000")
        .set_log_level(RDKafkaLogLevel::Warning);
    if let Some(group) = group {
        c.set("group.id", group);
    }
    c.create_with_context(Quiet)
        .map_err(|e| KafkaError::Client {
            brokers: config.bootstrap(),
            message: e.to_string(),
        })
}

fn partition_list(
    topic: &str,
    partitions: &[i32],
    offset: Option<Offset>,
) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for &p in partitions {
        match offset {
            None => {
                tpl.add_partition(topic, p);
            }
            Some(o) => tpl
                .add_partition_offset(topic, p, o)
                .map_err(|e| KafkaError::Request {
                    what: format!("ListOffsets {topic}"),
                    message: e.to_string(),
                })?,
        }
    }
    Ok(tpl)
}
