//! Positions read where they already live: the `postgres` checkpoint source
//! (`[projections.NAME.postgres]`) and write fences (a write route's `fence`), with
//! `[databases.NAME]` in [`super::databases`]. Raw and validated halves side by side;
//! checked after projections and routes, since they name both.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::collect::Errors;
use super::databases::DatabaseConfig;
use super::raw::Field;
use super::{ProjectionConfig, SourceKind};
use crate::database::presets::{self, Preset, Sql, Use};

/// Default `10ms`: one query per interval per database serves every held read, so a
/// short interval costs the database ~100 one-row queries/s and a held read ~5ms.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(10);
/// Default `5s`: how long a failed fence sends the session's reads of its log to the
/// primary (longer than any projection lag worth holding for).
pub const DEFAULT_FALLBACK: Duration = Duration::from_secs(5);

/// `[projections.NAME.postgres]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawPostgresSource {
    pub database: Field<String>,
    pub databases: Field<BTreeMap<String, String>>,
    pub query: Field<String>,
    pub preset: Field<String>,
    pub log: Field<String>,
    pub schema: Field<String>,
    pub shard: Field<String>,
    pub checkpoint: Field<String>,
    pub subscription: Field<String>,
    pub projection_name: Field<String>,
    pub interval: Field<String>,
    pub listen: Field<String>,
}

/// Known keys of `[projections.NAME.postgres]`.
pub const SOURCE_KEYS: &[&str] = &[
    "database",
    "databases",
    "query",
    "preset",
    "log",
    "schema",
    "shard",
    "checkpoint",
    "subscription",
    "projection_name",
    "interval",
    "listen",
];

/// A write route's `fence = { ... }` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawFence {
    pub database: Field<String>,
    pub query: Field<String>,
    pub preset: Field<String>,
    pub log: Field<String>,
    pub schema: Field<String>,
    pub fallback: Field<String>,
    /// A `nats_stream` fence (see [`super::nats::FenceCheck`]).
    pub nats_stream: Field<String>,
    /// A `kafka_topic` fence (see [`super::kafka::FenceCheck`]).
    pub kafka_topic: Field<String>,
}

/// Known keys of a route's `fence`.
pub const FENCE_KEYS: &[&str] = &[
    "database",
    "query",
    "preset",
    "log",
    "schema",
    "fallback",
    "nats_stream",
    "kafka_topic",
];

/// A validated `[projections.NAME.postgres]`.
#[derive(Debug, Clone)]
pub struct PostgresSourceConfig {
    /// (instance, database): `database` applies to every instance (`None`).
    pub targets: Vec<(Option<String>, String)>,
    pub sql: Sql,
    /// Default `10ms`.
    pub interval: Duration,
    /// A `NOTIFY` on this channel runs the query at once. Default: none.
    pub listen: Option<String>,
    /// The preset, for `checkpoint show`.
    pub preset: Option<Preset>,
}

/// A validated write-route `fence`.
#[derive(Debug, Clone)]
pub struct FenceConfig {
    pub database: String,
    pub sql: Sql,
    /// The log the fence reads (a failed fence marks it for the primary).
    pub log: String,
    /// Default `5s`.
    pub fallback: Duration,
    pub preset: Option<Preset>,
}

/// Everything read from databases, by owner.
#[derive(Debug, Clone, Default)]
pub struct PositionsConfig {
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// By projection name.
    pub sources: BTreeMap<String, PostgresSourceConfig>,
    /// By write route name.
    pub fences: BTreeMap<String, FenceConfig>,
    /// `nats_stream` fences, by write route name.
    pub nats_fences: BTreeMap<String, super::nats::NatsFenceConfig>,
    /// `kafka_topic` fences, by write route name.
    pub kafka_fences: BTreeMap<String, super::kafka::KafkaFenceConfig>,
}

/// The preset parameters and the query, shared by sources and fences.
struct QueryFields<'a> {
    prefix: &'a str,
    query: Field<String>,
    preset: Field<String>,
    log: Field<String>,
    schema: Field<String>,
    /// (key, value) of `shard`, `checkpoint`, `subscription`.
    params: Vec<(&'static str, Field<String>)>,
}

/// The SQL and the log it names (`None` log: a custom query without `log`).
fn query(
    errs: &mut Errors,
    f: QueryFields<'_>,
    usage: Use,
) -> Option<(Sql, Option<String>, Option<Preset>)> {
    let p = f.prefix;
    let query = errs.field::<String>(&format!("{p}.query"), f.query);
    let preset = errs.field::<String>(&format!("{p}.preset"), f.preset);
    let log = errs.field::<String>(&format!("{p}.log"), f.log);
    let schema = errs.field::<String>(&format!("{p}.schema"), f.schema);
    let mut params = BTreeMap::new();
    for (name, field) in f.params {
        if let Some(v) = errs.field::<String>(&format!("{p}.{name}"), field) {
            params.insert(name, v);
        }
    }
    if let Some(log) = &log {
        if !crate::position::valid_log_name(log) {
            errs.push(
                format!("{p}.log"),
                format!("`{log}` is not a valid log name"),
                "use up to 128 characters without `,`, `=`, `;`, quotes or white space",
            );
        }
    }
    let names = match usage {
        Use::Checkpoint => presets::CHECKPOINT_NAMES,
        Use::Fence => presets::FENCE_NAMES,
    };
    match (query, preset) {
        (Some(_), Some(_)) => {
            errs.push(
                format!("{p}.query"),
                "both `query` and `preset` are set",
                "keep one: `preset` (a framework's table) or `query` (your own SQL)",
            );
            None
        }
        (None, None) => {
            errs.push(
                format!("{p}.preset"),
                "neither `query` nor `preset` is set",
                format!("set `preset` ({names}) or `query = \"SELECT log, position ...\"`"),
            );
            None
        }
        (Some(q), None) => {
            if q.trim().is_empty() {
                errs.push(
                    format!("{p}.query"),
                    "the query is empty",
                    "write SQL returning rows of (log text, position)",
                );
                return None;
            }
            for (name, _) in params {
                errs.push(
                    format!("{p}.{name}"),
                    "a preset parameter is set but no `preset`",
                    "remove it, or use the preset instead of `query`",
                );
            }
            if schema.is_some() {
                errs.push(
                    format!("{p}.schema"),
                    "`schema` is a preset parameter but no `preset` is set",
                    "remove it, or name the schema in your query",
                );
            }
            Some((Sql::raw(&q), log, None))
        }
        (None, Some(name)) => {
            let Some(preset) = Preset::parse(&name).filter(|p| p.fits(usage)) else {
                let hint = match (Preset::parse(&name), usage) {
                    (Some(Preset::ReplicaLsn), Use::Fence) => " (`replica-lsn` reads a standby's checkpoint; a fence reads the primary: `primary-lsn`)",
                    (Some(Preset::PrimaryLsn), Use::Checkpoint) => " (`primary-lsn` is a fence; a standby's checkpoint is `replica-lsn`)",
                    (Some(Preset::Akka), Use::Fence) => " (`akka` reads a projection's offsets; Akka has no single head to fence on: use a `query` on your journal, e.g. `SELECT 'events'::text, COALESCE(max(ordering), 0) FROM event_journal`)",
                    _ => "",
                };
                errs.push(
                    format!("{p}.preset"),
                    format!("unknown preset `{name}` here{hint}"),
                    format!("use one of {names}, or write `query`"),
                );
                return None;
            };
            let schema = match (schema, preset.default_schema()) {
                (Some(_), None) => {
                    errs.push(
                        format!("{p}.schema"),
                        format!("preset `{name}` has no schema"),
                        "remove `schema`",
                    );
                    return None;
                }
                (Some(s), Some(_)) if !presets::valid_schema(&s) => {
                    errs.push(
                        format!("{p}.schema"),
                        format!("`{s}` is not a schema name tidemark accepts"),
                        "use letters, digits and `_`, not starting with a digit (up to 63)",
                    );
                    return None;
                }
                (Some(s), Some(_)) => s,
                (None, default) => default.unwrap_or("").to_string(),
            };
            let required = preset.required_param(usage);
            let mut value = String::new();
            for (key, v) in params {
                if Some(key) == required {
                    value = v;
                } else {
                    errs.push(
                        format!("{p}.{key}"),
                        format!("preset `{name}` takes no `{key}` here"),
                        match required {
                            Some(r) => format!("remove it (this preset takes `{r}`)"),
                            None => "remove it".to_string(),
                        },
                    );
                }
            }
            if let Some(key) = required {
                if value.is_empty() {
                    let example = match preset {
                        Preset::Marten => {
                            "`shard = \"User:All\"` (the projection's row in mt_event_progression)"
                        }
                        Preset::Eventuous => {
                            "`checkpoint = \"UserView\"` (the subscription id in checkpoints)"
                        }
                        Preset::Akka => {
                            "`projection_name = \"ShoppingCartProjection\"` (its rows in akka_projection_offset_store)"
                        }
                        _ => "`subscription = \"UserProjector\"` (the name in subscriptions)",
                    };
                    errs.push(
                        format!("{p}.{key}"),
                        format!("preset `{name}` needs `{key}`"),
                        format!("set {example}"),
                    );
                    return None;
                }
            }
            let log = log.unwrap_or_else(|| preset.default_log().to_string());
            let sql = presets::sql(preset, usage, &log, &schema, &value);
            Some((sql, Some(log), Some(preset)))
        }
    }
}

/// Checks every `[projections.NAME.postgres]`: the database names exist, the
/// projection lists `postgres` among its sources (and the reverse), the query or
/// preset is complete, the log is one the projection consumes.
pub fn sources(
    errs: &mut Errors,
    raw: BTreeMap<String, RawPostgresSource>,
    projections: &BTreeMap<String, ProjectionConfig>,
    databases: &[String],
) -> BTreeMap<String, PostgresSourceConfig> {
    for (name, p) in projections {
        if p.sources.contains(&SourceKind::Postgres) && !raw.contains_key(name) {
            errs.push(
                format!("projections.{name}.postgres"),
                "source `postgres` is listed but the projection has no `[projections.NAME.postgres]` table",
                format!("add `[projections.{name}.postgres]` with `database` and `preset` or `query`"),
            );
        }
    }
    let mut out = BTreeMap::new();
    for (name, raw) in raw {
        let p = format!("projections.{name}.postgres");
        let projection = projections.get(&name);
        if let Some(pc) = projection {
            if !pc.sources.contains(&SourceKind::Postgres) {
                errs.push(
                    &p,
                    "a postgres source is configured but `postgres` is not among the sources",
                    "add \"postgres\" to `sources`, or remove the table",
                );
            }
        }
        let interval = errs.duration_or(
            &format!("{p}.interval"),
            raw.interval,
            DEFAULT_INTERVAL,
            true,
        );
        let listen = errs.field::<String>(&format!("{p}.listen"), raw.listen);
        if let Some(channel) = &listen {
            if !presets::valid_schema(channel) {
                errs.push(
                    format!("{p}.listen"),
                    format!("`{channel}` is not a channel name tidemark accepts"),
                    "use letters, digits and `_`, not starting with a digit",
                );
            }
        }
        let targets = targets(errs, &p, raw.database, raw.databases, databases);
        let fields = QueryFields {
            prefix: &p,
            query: raw.query,
            preset: raw.preset,
            log: raw.log,
            schema: raw.schema,
            params: vec![
                ("shard", raw.shard),
                ("checkpoint", raw.checkpoint),
                ("subscription", raw.subscription),
                ("projection_name", raw.projection_name),
            ],
        };
        let Some((sql, log, preset)) = query(errs, fields, Use::Checkpoint) else {
            continue;
        };
        if let (Some(log), Some(pc)) = (&log, projection) {
            if !pc.logs.contains(log) && !pc.logs.is_empty() {
                errs.push(
                    format!("{p}.log"),
                    format!(
                        "the source reports log `{log}`, which the projection does not consume"
                    ),
                    format!(
                        "set `log` to one of {:?}, or add `{log}` to `logs`",
                        pc.logs
                    ),
                );
            }
        }
        out.insert(
            name,
            PostgresSourceConfig {
                targets,
                sql,
                interval,
                listen,
                preset,
            },
        );
    }
    out
}

fn targets(
    errs: &mut Errors,
    p: &str,
    one: Field<String>,
    each: Field<BTreeMap<String, String>>,
    databases: &[String],
) -> Vec<(Option<String>, String)> {
    let one = errs.field::<String>(&format!("{p}.database"), one);
    let each = errs.field::<BTreeMap<String, String>>(&format!("{p}.databases"), each);
    let check = |errs: &mut Errors, key: String, db: &str| {
        if !databases.iter().any(|d| d == db) {
            errs.push(
                key,
                format!("no database `{db}`"),
                match databases {
                    [] => "declare it: `[databases.NAME] url_env = \"VARIABLE\"`".to_string(),
                    known => format!("use one of {known:?}, or declare `[databases.{db}]`"),
                },
            );
        }
    };
    match (one, each) {
        (Some(db), None) => {
            check(errs, format!("{p}.database"), &db);
            vec![(None, db)]
        }
        (None, Some(map)) => {
            if map.is_empty() {
                errs.push(
                    format!("{p}.databases"),
                    "no database listed",
                    "map each instance to its database: `databases = { a = \"replica-a\" }`",
                );
            }
            map.into_iter()
                .map(|(inst, db)| {
                    check(errs, format!("{p}.databases.{inst}"), &db);
                    (Some(inst), db)
                })
                .collect()
        }
        (Some(_), Some(_)) => {
            errs.push(
                format!("{p}.databases"),
                "both `database` and `databases` are set",
                "keep `database` (every instance) or `databases` (one per instance)",
            );
            Vec::new()
        }
        (None, None) => {
            errs.push(
                format!("{p}.database"),
                "the source names no database",
                "set `database = \"NAME\"` (a `[databases.NAME]`) or `databases = { instance = \"NAME\" }`",
            );
            Vec::new()
        }
    }
}

/// A route's fence, with what the route needs to know to check it.
pub struct RouteFence {
    /// `routes[i] (name)`.
    pub key: String,
    pub route: String,
    /// The route's `kind` as written (`None`: the default, `read`).
    pub kind: Option<String>,
    /// The route's `default_log`, the fallback log of a custom query.
    pub default_log: Option<String>,
    pub raw: RawFence,
}

/// Checks every route's `fence`: write routes only, the database exists, the query or
/// preset is complete, and the log is known.
pub fn fences(
    errs: &mut Errors,
    raw: Vec<RouteFence>,
    databases: &[String],
    known_logs: &[String],
    nats: &mut super::nats::FenceCheck,
    kafka: &mut super::kafka::FenceCheck,
) -> BTreeMap<String, FenceConfig> {
    let mut out = BTreeMap::new();
    for f in raw {
        let p = format!("{}.fence", f.key);
        // A route without a readable `kind` is reported by the route check.
        let kind = f.kind.as_deref().unwrap_or("write");
        if kind != "write" {
            errs.push(
                &p,
                format!("a fence on a `{kind}` route"),
                "fences run after writes: move `fence` to the write route, or remove it",
            );
            continue;
        }
        if f.raw.kafka_topic.is_some() {
            kafka.check(errs, &p, f.route, f.raw, known_logs);
            continue;
        }
        if f.raw.nats_stream.is_some() {
            nats.check(errs, &p, f.route, f.raw, f.default_log, known_logs);
            continue;
        }
        let database = errs.field::<String>(&format!("{p}.database"), f.raw.database);
        let fallback = errs.duration_or(
            &format!("{p}.fallback"),
            f.raw.fallback,
            DEFAULT_FALLBACK,
            true,
        );
        let fields = QueryFields {
            prefix: &p,
            query: f.raw.query,
            preset: f.raw.preset,
            log: f.raw.log,
            schema: f.raw.schema,
            params: Vec::new(),
        };
        let q = query(errs, fields, Use::Fence);
        let database = match database {
            Some(db) if databases.contains(&db) => Some(db),
            Some(db) => {
                errs.push(
                    format!("{p}.database"),
                    format!("no database `{db}`"),
                    format!("use one of {databases:?}, or declare `[databases.{db}]`"),
                );
                None
            }
            None => {
                errs.push(
                    format!("{p}.database"),
                    "the fence names no database",
                    "set `database = \"NAME\"` (a `[databases.NAME]`)",
                );
                None
            }
        };
        let (Some((sql, log, preset)), Some(database)) = (q, database) else {
            continue;
        };
        let Some(log) = log.or(f.default_log) else {
            errs.push(
                format!("{p}.log"),
                "a fence with its own `query` must say which log it reads (for its fallback)",
                "set `log = \"users\"` in the fence, or `default_log` on the route",
            );
            continue;
        };
        if !known_logs.contains(&log) {
            errs.push(
                format!("{p}.log"),
                format!("the fence reads log `{log}`, which no projection consumes"),
                format!(
                    "set `log` to one of {known_logs:?}, or add `{log}` to a projection's `logs`"
                ),
            );
            continue;
        }
        out.insert(
            f.route,
            FenceConfig {
                database,
                sql,
                log,
                fallback,
                preset,
            },
        );
    }
    out
}

/// The raw tables this module checks, taken out of the raw projections and routes.
pub struct Raw<'a> {
    pub sources: BTreeMap<String, RawPostgresSource>,
    pub fences: Vec<RouteFence>,
    /// Every `[databases.NAME]` in the file, readable or not.
    pub database_names: &'a [String],
    /// Whether `[nats]` is configured (a `nats_stream` fence needs it).
    pub has_nats: bool,
    /// Whether `[kafka]` is configured (a `kafka_topic` fence needs it).
    pub has_kafka: bool,
}

/// Takes the `postgres` tables and `fence`s out of `raw` (the other checks do not
/// know them). Route fields are read without recording problems: the route check
/// reports those.
pub fn take_raw(
    raw: &mut super::raw::RawConfig,
) -> (BTreeMap<String, RawPostgresSource>, Vec<RouteFence>) {
    use super::raw::Lenient;
    let valid = |f: &Field<String>| match f {
        Some(Lenient::Valid(v)) => Some(v.clone()),
        _ => None,
    };
    let sources = raw
        .projections
        .iter_mut()
        .filter_map(|(name, p)| p.postgres.take().map(|s| (name.clone(), s)))
        .collect();
    let fences = raw
        .routes
        .iter_mut()
        .enumerate()
        .filter_map(|(i, r)| {
            let r = r.as_mut()?;
            let fence = r.fence.take()?;
            let name = valid(&r.name);
            Some(RouteFence {
                key: super::sections::route_key(i, name.as_deref()),
                route: name.unwrap_or_default(),
                kind: valid(&r.kind),
                default_log: valid(&r.default_log),
                raw: fence,
            })
        })
        .collect();
    (sources, fences)
}

/// The whole check (see [`sources`] and [`fences`]).
pub fn check(
    errs: &mut Errors,
    raw: Raw<'_>,
    databases: BTreeMap<String, DatabaseConfig>,
    projections: &BTreeMap<String, ProjectionConfig>,
    routes: &[super::RouteConfig],
) -> PositionsConfig {
    let mut known_logs: Vec<String> = projections
        .values()
        .flat_map(|p| p.logs.iter().cloned())
        .collect();
    known_logs.extend(routes.iter().filter_map(|r| r.default_log.clone()));
    known_logs.sort();
    known_logs.dedup();
    let sources = sources(errs, raw.sources, projections, raw.database_names);
    let mut nats = super::nats::FenceCheck::new(raw.has_nats);
    let mut kafka = super::kafka::FenceCheck::new(raw.has_kafka);
    let fences = fences(
        errs,
        raw.fences,
        raw.database_names,
        &known_logs,
        &mut nats,
        &mut kafka,
    );
    PositionsConfig {
        databases,
        sources,
        fences,
        nats_fences: nats.fences,
        kafka_fences: kafka.fences,
    }
}

#[cfg(test)]
mod tests;
