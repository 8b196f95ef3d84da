//! Names in Redis (keys, hash fields, the channel) and the pub/sub message format.
//! Pure functions, unit-tested here; the layout is described in the module doc of
//! [`super`].

use std::collections::BTreeMap;

use crate::position::PositionVector;

/// The instance name that stands for every instance of a projection.
pub const ALL_INSTANCES: &str = "*";

/// Builds every key and channel name from the configured prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The hash of a projection's checkpoints: `<prefix>:cp:{<projection>}`. The hash
    /// tag keeps every script call on one slot in a cluster.
    pub(crate) fn checkpoints(&self, projection: &str) -> String {
        format!("{}:cp:{{{projection}}}", self.prefix)
    }

    /// The channel announcing checkpoint updates: `<prefix>:checkpoints`.
    pub(crate) fn channel(&self) -> String {
        format!("{}:checkpoints", self.prefix)
    }

    /// A session's cache entry: `<prefix>:cache:{<key>}:s:<sid>`.
    pub(crate) fn cache_session(&self, key: &str, sid: &str) -> String {
        format!("{}:cache:{{{key}}}:s:{sid}", self.prefix)
    }

    /// The global cache entry: `<prefix>:cache:{<key>}:g` (same slot as the session
    /// entries of `key`, so one MGET reads both).
    pub(crate) fn cache_global(&self, key: &str) -> String {
        format!("{}:cache:{{{key}}}:g", self.prefix)
    }
}

/// The instance text stored in Redis: the name, or `*` for every instance.
pub(crate) fn instance_text(instance: Option<&str>) -> &str {
    instance.unwrap_or(ALL_INSTANCES)
}

/// `*` -> `None` (every instance), else `Some(name)`.
pub(crate) fn parse_instance(text: &str) -> Option<&str> {
    (text != ALL_INSTANCES).then_some(text)
}

/// A checkpoint announced on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckpointMessage {
    pub projection: String,
    /// `None`: every instance.
    pub instance: Option<String>,
    pub checkpoint: PositionVector,
}

/// Why a message or a stored checkpoint could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("checkpoint message is not `<projection>\\n<instance>\\n<vector>` UTF-8 text")]
    MessageShape,
    #[error("checkpoint message has an invalid position vector: {0}")]
    MessageVector(String),
    #[error("checkpoint field `{0}` is not `<instance>/<log>`")]
    Field(String),
    #[error("checkpoint field `{field}` holds `{value}`, not a decimal u64")]
    Value { field: String, value: String },
}

/// Parses `<projection>\n<instance or *>\n<log=pos,...>`.
pub(crate) fn decode_message(payload: &[u8]) -> Result<CheckpointMessage, DecodeError> {
    let text = std::str::from_utf8(payload).map_err(|_| DecodeError::MessageShape)?;
    let mut parts = text.splitn(3, '\n');
    let (Some(projection), Some(instance), Some(vector)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(DecodeError::MessageShape);
    };
    if projection.is_empty() || instance.is_empty() {
        return Err(DecodeError::MessageShape);
    }
    let checkpoint = PositionVector::parse(vector, None)
        .map_err(|e| DecodeError::MessageVector(e.to_string()))?;
    Ok(CheckpointMessage {
        projection: projection.to_owned(),
        instance: parse_instance(instance).map(str::to_owned),
        checkpoint,
    })
}

/// Formats a message as [`decode_message`] reads it (the script builds the same).
#[cfg(test)]
pub(crate) fn encode_message(
    projection: &str,
    instance: Option<&str>,
    checkpoint: &PositionVector,
) -> String {
    format!("{projection}\n{}\n{checkpoint}", instance_text(instance))
}

/// Groups a checkpoint hash's fields (`<instance>/<log>` -> position) by instance
/// (`None`: every instance). Malformed fields are skipped and returned as errors, so
/// one bad field never hides the others.
pub(crate) fn group_fields<I>(
    fields: I,
) -> (BTreeMap<Option<String>, PositionVector>, Vec<DecodeError>)
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut grouped: BTreeMap<Option<String>, PositionVector> = BTreeMap::new();
    let mut errors = Vec::new();
    for (field, value) in fields {
        let Some((instance, log)) = field.split_once('/') else {
            errors.push(DecodeError::Field(field));
            continue;
        };
        if instance.is_empty() || !crate::position::valid_log_name(log) {
            errors.push(DecodeError::Field(field));
            continue;
        }
        let Ok(position) = value.parse::<u64>() else {
            errors.push(DecodeError::Value { field, value });
            continue;
        };
        grouped
            .entry(parse_instance(instance).map(str::to_owned))
            .or_default()
            .set(log, position);
    }
    (grouped, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(text: &str) -> PositionVector {
        PositionVector::parse(text, None).expect("test vector")
    }

    #[test]
    fn keys_share_a_hash_tag_per_projection_and_per_cache_key() {
        let keys = Keys::new("tidemark");
        assert_eq!(keys.checkpoints("user-view"), "tidemark:cp:{user-view}");
        assert_eq!(keys.channel(), "tidemark:checkpoints");
        assert_eq!(
            keys.cache_session("user:42", "s1"),
            "tidemark:cache:{user:42}:s:s1"
        );
        assert_eq!(keys.cache_global("user:42"), "tidemark:cache:{user:42}:g");
    }

    #[test]
    fn messages_round_trip() {
        let cp = vector("users=12,orders=18446744073709551615");
        for instance in [None, Some("a")] {
            let text = encode_message("user-view", instance, &cp);
            let msg = decode_message(text.as_bytes()).expect("decodes");
            assert_eq!(msg.projection, "user-view");
            assert_eq!(msg.instance.as_deref(), instance);
            assert_eq!(msg.checkpoint, cp);
        }
        let msg = decode_message(b"p\n*\nusers=1").expect("decodes");
        assert_eq!(msg.instance, None, "`*` is every instance");
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"p",
            b"p\n*",
            b"\n*\nusers=1",
            b"p\n\nusers=1",
            b"p\n*\n",
            b"p\n*\nusers=x",
            b"p\n*\nusers=18446744073709551616",
            b"p\n*\n\xff\xfe",
        ] {
            assert!(decode_message(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn fields_group_by_instance_and_skip_bad_ones() {
        let fields = [
            ("*/users", "10"),
            ("*/orders", "3"),
            ("a/users", "18446744073709551615"),
            ("a/ns/log", "7"),
            ("nolog", "1"),
            ("/users", "1"),
            ("b/users", "-1"),
            ("b/orders", "1.5"),
        ]
        .map(|(f, v)| (f.to_owned(), v.to_owned()));
        let (grouped, errors) = group_fields(fields);
        assert_eq!(grouped[&None], vector("users=10,orders=3"));
        assert_eq!(
            grouped[&Some("a".to_owned())],
            vector("users=18446744073709551615,ns/log=7")
        );
        assert!(!grouped.contains_key(&Some("b".to_owned())));
        assert_eq!(errors.len(), 4, "{errors:?}");
    }
}
