//! Presets: the SQL that reads a framework's checkpoint (checkpoint source
//! `postgres`) or the head of its log (write fence), so a user names the framework
//! instead of writing the query. Every query returns rows of `(log, position)`; the
//! README lists each one verbatim and `tests/postgres_presets.rs` runs each against
//! the framework's own table layout.
//!
//! A checkpoint preset and its fence preset name the same log by default, so the
//! positions a fence writes into tokens are the ones the checkpoint reports.
//! Schemas are identifiers (checked, then quoted); every other parameter is bound.

/// A named query shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Checkpoint: a hot standby's replay LSN (`pg_last_wal_replay_lsn()`).
    ReplicaLsn,
    /// Fence: the primary's WAL write LSN (`pg_current_wal_lsn()`).
    PrimaryLsn,
    /// Marten: `mt_event_progression.last_seq_id` / the `mt_events_sequence`.
    Marten,
    /// Eventuous: `checkpoints.position` / the highest `messages.global_position`.
    Eventuous,
    /// Commanded's EventStore: `subscriptions.last_seen` / the `$all` stream's version.
    Commanded,
    /// Akka Projections (JDBC/Slick offset store, `Sequence` offsets): the lowest
    /// `current_offset` of a projection's keys in `akka_projection_offset_store`.
    /// Checkpoint only: Akka has no single head a fence could read.
    Akka,
}

/// Where a preset is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Checkpoint,
    Fence,
}

/// The preset names, for messages.
pub const CHECKPOINT_NAMES: &str = "`replica-lsn`, `marten`, `eventuous`, `commanded`, `akka`";
pub const FENCE_NAMES: &str = "`primary-lsn`, `marten`, `eventuous`, `commanded`";

impl Preset {
    pub fn parse(text: &str) -> Option<Preset> {
        Some(match text {
            "replica-lsn" => Preset::ReplicaLsn,
            "primary-lsn" => Preset::PrimaryLsn,
            "marten" => Preset::Marten,
            "eventuous" => Preset::Eventuous,
            "commanded" => Preset::Commanded,
            "akka" => Preset::Akka,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Preset::ReplicaLsn => "replica-lsn",
            Preset::PrimaryLsn => "primary-lsn",
            Preset::Marten => "marten",
            Preset::Eventuous => "eventuous",
            Preset::Commanded => "commanded",
            Preset::Akka => "akka",
        }
    }

    /// Whether the preset can be used there (`replica-lsn` and `akka` only read
    /// checkpoints, `primary-lsn` only fences).
    pub fn fits(self, usage: Use) -> bool {
        !matches!(
            (self, usage),
            (Preset::ReplicaLsn | Preset::Akka, Use::Fence) | (Preset::PrimaryLsn, Use::Checkpoint)
        )
    }

    /// The log the rows name unless `log` says otherwise.
    pub fn default_log(self) -> &'static str {
        match self {
            Preset::ReplicaLsn | Preset::PrimaryLsn => "wal",
            Preset::Marten | Preset::Eventuous | Preset::Commanded | Preset::Akka => "events",
        }
    }

    /// The schema unless `schema` says otherwise (`None`: the preset has none).
    pub fn default_schema(self) -> Option<&'static str> {
        match self {
            Preset::ReplicaLsn | Preset::PrimaryLsn => None,
            Preset::Marten | Preset::Commanded | Preset::Akka => Some("public"),
            Preset::Eventuous => Some("eventuous"),
        }
    }

    /// The parameter a checkpoint query needs (`shard`, `checkpoint`, `subscription`).
    pub fn required_param(self, usage: Use) -> Option<&'static str> {
        match (self, usage) {
            (_, Use::Fence) => None,
            (Preset::Marten, _) => Some("shard"),
            (Preset::Eventuous, _) => Some("checkpoint"),
            (Preset::Commanded, _) => Some("subscription"),
            (Preset::Akka, _) => Some("projection_name"),
            _ => None,
        }
    }
}

/// A query and the text parameters bound to `$1`, `$2`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sql {
    pub text: String,
    pub params: Vec<String>,
}

impl Sql {
    /// A user's own query (no parameters).
    pub fn raw(text: &str) -> Sql {
        Sql {
            text: text.to_string(),
            params: Vec::new(),
        }
    }
}

/// Builds a preset's SQL. `schema` has been checked with [`valid_schema`]; `param`
/// is the value of [`Preset::required_param`] when there is one.
pub fn sql(preset: Preset, usage: Use, log: &str, schema: &str, param: &str) -> Sql {
    let s = quote(schema);
    let one = |text: String| Sql {
        text,
        params: vec![log.to_string()],
    };
    let two = |text: String| Sql {
        text,
        params: vec![log.to_string(), param.to_string()],
    };
    match (preset, usage) {
        (Preset::ReplicaLsn, _) => one("SELECT $1::text, pg_last_wal_replay_lsn()".into()),
        (Preset::PrimaryLsn, _) => one("SELECT $1::text, pg_current_wal_lsn()".into()),
        (Preset::Marten, Use::Checkpoint) => two(format!(
            "SELECT $1::text, last_seq_id FROM {s}.mt_event_progression WHERE name = $2"
        )),
        (Preset::Marten, Use::Fence) => one(format!(
            "SELECT $1::text, CASE WHEN is_called THEN last_value ELSE 0 END FROM {s}.mt_events_sequence"
        )),
        (Preset::Eventuous, Use::Checkpoint) => two(format!(
            "SELECT $1::text, position FROM {s}.checkpoints WHERE id = $2"
        )),
        (Preset::Eventuous, Use::Fence) => one(format!(
            "SELECT $1::text, COALESCE(max(global_position), 0) FROM {s}.messages"
        )),
        (Preset::Commanded, Use::Checkpoint) => two(format!(
            "SELECT $1::text, last_seen FROM {s}.subscriptions WHERE stream_uuid = '$all' AND subscription_name = $2"
        )),
        (Preset::Commanded, Use::Fence) => one(format!(
            "SELECT $1::text, stream_version FROM {s}.streams WHERE stream_uuid = '$all'"
        )),
        // Validation refuses `akka` as a fence (`fits`); both uses build the checkpoint.
        (Preset::Akka, _) => two(format!(
            "SELECT $1::text, min(current_offset::bigint) FROM {s}.akka_projection_offset_store WHERE projection_name = $2 AND manifest = 'SEQ'"
        )),
    }
}

/// A schema name tidemark accepts: a PostgreSQL identifier of letters, digits and `_`
/// (not starting with a digit), up to 63 bytes.
pub fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_uses_fit() {
        for p in [
            Preset::ReplicaLsn,
            Preset::PrimaryLsn,
            Preset::Marten,
            Preset::Eventuous,
            Preset::Commanded,
            Preset::Akka,
        ] {
            assert_eq!(Preset::parse(p.as_str()), Some(p));
        }
        assert!(Preset::Akka.fits(Use::Checkpoint) && !Preset::Akka.fits(Use::Fence));
        assert_eq!(
            Preset::Akka.required_param(Use::Checkpoint),
            Some("projection_name")
        );
        assert!(!Preset::ReplicaLsn.fits(Use::Fence));
        assert!(!Preset::PrimaryLsn.fits(Use::Checkpoint));
        assert!(Preset::Marten.fits(Use::Fence) && Preset::Marten.fits(Use::Checkpoint));
        assert_eq!(Preset::parse("axon"), None);
    }

    #[test]
    fn schemas_are_quoted_and_values_bound() {
        let q = sql(Preset::Marten, Use::Checkpoint, "events", "app", "User:All");
        assert_eq!(
            q.text,
            "SELECT $1::text, last_seq_id FROM \"app\".mt_event_progression WHERE name = $2"
        );
        assert_eq!(q.params, ["events", "User:All"]);
        assert!(valid_schema("tenant_1"));
        for bad in ["", "1a", "a;drop", "a\"b", "a.b"] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }
}
