//! `[kafka]` (the bootstrap brokers), the `kafka` checkpoint source
//! (`[projections.NAME.kafka]`) and the `kafka_topic` write fence (a write route's
//! `fence = { kafka_topic, fallback }`): raw and validated halves side by side.
//!
//! Logs are `TOPIC-PARTITION` (e.g. `users-0`) and positions use Kafka's "next offset"
//! meaning: a record at offset `o` is position `o + 1`, so a consumer group's committed
//! offset (the next offset it will read) *is* the position it has applied, and a
//! partition's high watermark (the next offset to be written) is the position of its
//! last record. Which partitions a source or fence reads comes from the projections'
//! `logs`: a read only ever waits on the logs of its projection, so a partition no
//! projection lists would be read for nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::collect::Errors;
use super::positions::RawFence;
use super::raw::Field;
use super::ProjectionConfig;

/// Default `1s`: OffsetFetch and ListOffsets answer in about a millisecond from a
/// healthy broker; past this the request counts as failed (the source retries next
/// interval, a fence takes its fallback), so a broker that is down never holds a write
/// for long.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Default `20ms` (as for the `nats` source): one OffsetFetch per interval serves every
/// held read of the projection, so a held read is released about 10ms (half an
/// interval) after the group commits. The group coordinator answers OffsetFetch from
/// memory; 50 requests/s per projection and gateway are far below what it absorbs.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(20);

/// `[kafka]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawKafka {
    /// Bootstrap brokers, `host:port` each (required, non-empty).
    pub brokers: Field<Vec<String>>,
    /// Duration. Default `1s`.
    pub request_timeout: Field<String>,
}

/// Known keys of `[kafka]`.
pub const KEYS: &[&str] = &["brokers", "request_timeout"];

/// `[projections.NAME.kafka]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawKafkaSource {
    /// The projector's consumer group (required).
    pub group: Field<String>,
    /// The topic it consumes (required); the projection's logs `TOPIC-N` name the
    /// partitions read.
    pub topic: Field<String>,
    /// Duration. Default `20ms`.
    pub interval: Field<String>,
}

/// Known keys of `[projections.NAME.kafka]`.
pub const SOURCE_KEYS: &[&str] = &["group", "topic", "interval"];

/// A validated `[kafka]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port` each, in the file's order.
    pub brokers: Vec<String>,
    /// Default `1s`.
    pub request_timeout: Duration,
}

impl KafkaConfig {
    /// The `bootstrap.servers` value (also shown in logs and `/readyz`: no secret).
    pub fn bootstrap(&self) -> String {
        self.brokers.join(",")
    }
}

/// A validated `[projections.NAME.kafka]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSourceConfig {
    pub group: String,
    pub topic: String,
    /// The partitions read: those of the projection's logs named `TOPIC-N`, ascending.
    pub partitions: Vec<i32>,
    /// Default `20ms`.
    pub interval: Duration,
}

/// A validated `fence = { kafka_topic = "TOPIC" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaFenceConfig {
    pub topic: String,
    /// The partitions read: every `TOPIC-N` log a projection consumes, ascending.
    pub partitions: Vec<i32>,
    /// Default `5s` (as for every fence).
    pub fallback: Duration,
    /// The logs a failed fence marks for the primary (`TOPIC-N` of `partitions`).
    pub logs: Vec<String>,
}

/// The log of `topic`'s `partition`: `users-0`.
pub fn log_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// The partition `log` names when it is `TOPIC-N` of `topic`, e.g. `users-3` -> 3.
/// `users-events-0` is not a partition of `users` (`events-0` is not a number).
pub fn partition_of(log: &str, topic: &str) -> Option<i32> {
    let digits = log.strip_prefix(topic)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The partitions of `topic` among `logs`, ascending, without repeats.
pub fn partitions_in(logs: &[String], topic: &str) -> Vec<i32> {
    let mut out: Vec<i32> = logs.iter().filter_map(|l| partition_of(l, topic)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether `text` is a valid topic name: 1-249 of `a-z A-Z 0-9 . _ -`, not `.`/`..`.
pub fn valid_topic(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 249
        && text != "."
        && text != ".."
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Validates `[kafka]`.
pub fn kafka(errs: &mut Errors, raw: RawKafka) -> Option<KafkaConfig> {
    let request_timeout = errs.duration_or(
        "kafka.request_timeout",
        raw.request_timeout,
        DEFAULT_REQUEST_TIMEOUT,
        true,
    );
    let Some(brokers) = errs.field::<Vec<String>>("kafka.brokers", raw.brokers) else {
        errs.push(
            "kafka.brokers",
            "no bootstrap broker",
            "set `brokers = [\"127.0.0.1:9092\"]` (one or more `host:port`)",
        );
        return None;
    };
    if brokers.is_empty() {
        errs.push(
            "kafka.brokers",
            "the list is empty",
            "list one or more brokers: `brokers = [\"kafka-1:9092\", \"kafka-2:9092\"]`",
        );
        return None;
    }
    let mut ok = true;
    for (i, broker) in brokers.iter().enumerate() {
        if let Err(problem) = check_broker(broker) {
            ok = false;
            errs.push(
                format!("kafka.brokers[{i}]"),
                format!("`{broker}` is not a broker address: {problem}"),
                "write `HOST:PORT`, e.g. `\"kafka-1:9092\"` (no scheme)",
            );
        }
    }
    ok.then_some(KafkaConfig {
        brokers,
        request_timeout,
    })
}

/// `host:port`, with a port from 1 to 65535 and no scheme or path.
fn check_broker(text: &str) -> Result<(), &'static str> {
    if text.contains("://") {
        return Err("a scheme is not allowed");
    }
    let (host, port) = text.rsplit_once(':').ok_or("no `:PORT`")?;
    if host.is_empty() || host.contains(['/', ' ', ',', '@']) {
        return Err("no host before the port");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("the port must be a number from 1 to 65535"),
    }
}

/// A required group id: non-empty, no white space or control characters.
fn group(errs: &mut Errors, key: &str, field: Field<String>) -> Option<String> {
    match errs.field::<String>(key, field) {
        Some(g)
            if !g.trim().is_empty() && !g.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Some(g)
        }
        Some(g) => {
            errs.push(
                key,
                format!("`{g}` is not a usable consumer group id"),
                "use the projector's `group.id` as `kafka-consumer-groups --list` shows it (no white space)",
            );
            None
        }
        None => {
            errs.push(
                key,
                "missing",
                "set it to the projector's `group.id`, e.g. `\"users-view\"`",
            );
            None
        }
    }
}

/// A required topic name.
pub fn topic(errs: &mut Errors, key: &str, field: Field<String>) -> Option<String> {
    match errs.field::<String>(key, field) {
        Some(t) if valid_topic(&t) => Some(t),
        Some(t) => {
            errs.push(
                key,
                format!("`{t}` is not a valid Kafka topic name"),
                "use the topic as `kafka-topics --list` shows it (letters, digits, `.`, `_`, `-`)",
            );
            None
        }
        None => {
            errs.push(key, "missing", "set it, e.g. `\"users\"`");
            None
        }
    }
}

/// Validates a projection's `[projections.NAME.kafka]`; `wanted` tells whether its
/// `sources` lists `kafka`, `has_kafka` whether `[kafka]` exists.
pub fn source(
    errs: &mut Errors,
    projection: &ProjectionConfig,
    raw: Option<RawKafkaSource>,
    wanted: bool,
    has_kafka: bool,
) -> Option<KafkaSourceConfig> {
    let p = format!("projections.{}.kafka", projection.name);
    let raw = match (raw, wanted) {
        (Some(raw), true) => raw,
        (None, false) => return None,
        (None, true) => {
            errs.push(
                &p,
                "source `kafka` needs its settings",
                format!("add `[{p}]` with `group` and `topic`"),
            );
            return None;
        }
        (Some(_), false) => {
            errs.push(
                &p,
                "the `kafka` source is configured but not listed in `sources`",
                format!(
                    "add \"kafka\" to `projections.{}.sources`, or remove `[{p}]`",
                    projection.name
                ),
            );
            return None;
        }
    };
    if !has_kafka {
        errs.push(
            &p,
            "source `kafka` needs the brokers",
            "add `[kafka]` with `brokers = [\"127.0.0.1:9092\"]`",
        );
    }
    let interval = errs.duration_or(
        &format!("{p}.interval"),
        raw.interval,
        DEFAULT_INTERVAL,
        true,
    );
    let group = group(errs, &format!("{p}.group"), raw.group);
    let topic = topic(errs, &format!("{p}.topic"), raw.topic)?;
    let partitions = partitions_in(&projection.logs, &topic);
    if partitions.is_empty() {
        errs.push(
            format!("projections.{}.logs", projection.name),
            format!("no log names a partition of topic `{topic}`"),
            format!(
                "list the partitions the projector consumes as logs `TOPIC-PARTITION`: \
                 `logs = [\"{topic}-0\", \"{topic}-1\"]`"
            ),
        );
        return None;
    }
    Some(KafkaSourceConfig {
        group: group?,
        topic,
        partitions,
        interval,
    })
}

/// Collects the `kafka_topic` fences while the route fences are checked.
#[derive(Debug)]
pub struct FenceCheck {
    has_kafka: bool,
    pub fences: BTreeMap<String, KafkaFenceConfig>,
}

impl FenceCheck {
    pub fn new(has_kafka: bool) -> FenceCheck {
        FenceCheck {
            has_kafka,
            fences: BTreeMap::new(),
        }
    }

    /// Checks the write route `route`'s fence `p` (`routes[i] (name).fence`), which
    /// has `kafka_topic`; `known_logs` are the logs a projection consumes.
    pub fn check(
        &mut self,
        errs: &mut Errors,
        p: &str,
        route: String,
        raw: RawFence,
        known_logs: &[String],
    ) {
        for (key, set, why) in [
            ("database", raw.database.is_some(), "a PostgreSQL fence"),
            ("query", raw.query.is_some(), "a PostgreSQL fence"),
            ("preset", raw.preset.is_some(), "a PostgreSQL fence"),
            ("schema", raw.schema.is_some(), "a PostgreSQL fence"),
            ("nats_stream", raw.nats_stream.is_some(), "a NATS fence"),
            ("log", raw.log.is_some(), "other fences"),
        ] {
            if set {
                errs.push(
                    format!("{p}.{key}"),
                    format!("`{key}` belongs to {why}, not a `kafka_topic` one"),
                    format!(
                        "remove `{key}` (a `kafka_topic` fence reads the high watermark of \
                         each partition, whose logs are `TOPIC-PARTITION`)"
                    ),
                );
            }
        }
        if !self.has_kafka {
            errs.push(
                format!("{p}.kafka_topic"),
                "a `kafka_topic` fence needs the brokers",
                "add `[kafka]` with `brokers = [\"127.0.0.1:9092\"]`",
            );
        }
        let fallback = errs.duration_or(
            &format!("{p}.fallback"),
            raw.fallback,
            super::positions::DEFAULT_FALLBACK,
            true,
        );
        let Some(topic) = topic(errs, &format!("{p}.kafka_topic"), raw.kafka_topic) else {
            return;
        };
        let partitions = partitions_in(known_logs, &topic);
        if partitions.is_empty() {
            errs.push(
                format!("{p}.kafka_topic"),
                format!("no projection consumes a partition of topic `{topic}`"),
                format!(
                    "list the partitions in the `logs` of the projection fed by `{topic}`: \
                     `logs = [\"{topic}-0\", \"{topic}-1\"]`"
                ),
            );
            return;
        }
        let logs = partitions.iter().map(|&n| log_name(&topic, n)).collect();
        self.fences.insert(
            route,
            KafkaFenceConfig {
                topic,
                partitions,
                fallback,
                logs,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_name_partitions_of_their_topic_only() {
        assert_eq!(partition_of("users-0", "users"), Some(0));
        assert_eq!(partition_of("users-12", "users"), Some(12));
        assert_eq!(partition_of("user-events-3", "user-events"), Some(3));
        for (log, topic) in [
            ("users", "users"),
            ("users-", "users"),
            ("users-x", "users"),
            ("users-events-0", "users"),
            ("users-01", "users"),
            ("users-+1", "users"),
            ("orders-0", "users"),
            ("users0", "users"),
            ("users-99999999999", "users"),
        ] {
            assert_eq!(partition_of(log, topic), None, "{log} of {topic}");
        }
        let logs: Vec<String> = ["users-2", "orders-0", "users-0", "users-2", "users"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(partitions_in(&logs, "users"), vec![0, 2]);
        assert_eq!(log_name("users", 3), "users-3");
    }

    #[test]
    fn topics_and_brokers_are_checked() {
        assert!(valid_topic("users"));
        assert!(valid_topic("user.events_v2-x"));
        for bad in ["", ".", "..", "a b", "a/b", "a,b", &"x".repeat(250)] {
            assert!(!valid_topic(bad), "{bad}");
        }
        assert!(check_broker("127.0.0.1:9092").is_ok());
        assert!(check_broker("kafka-1.internal:9092").is_ok());
        assert!(check_broker("[::1]:9092").is_ok());
        for bad in [
            "kafka:9092x",
            "kafka",
            ":9092",
            "kafka:0",
            "PLAINTEXT://k:9092",
        ] {
            assert!(check_broker(bad).is_err(), "{bad}");
        }
    }
}
