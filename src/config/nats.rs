//! `[nats]` (the NATS connection), the `nats` checkpoint source
//! (`[projections.NAME.nats]`) and the `nats_stream` write fence (a write route's
//! `fence = { nats_stream, log, fallback }`): raw and validated halves side by side.
//!
//! No password in the file: a `url` carrying one is refused (the file is often
//! checked in); `url_env` names the variable holding a URL that may carry one, and
//! `credentials_file` names a `.creds` file (JWT and NKey seed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::collect::Errors;
use super::positions::RawFence;
use super::raw::Field;
use super::ProjectionConfig;

/// Default `1s`: a JetStream API request (consumer info, stream info) answers in well
/// under a millisecond on a healthy server; past this the request counts as failed
/// (the source retries next interval, a fence takes its fallback), so a broker that
/// is down never holds a write for long.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Default `20ms`: one consumer-info request per interval serves every held read, so
/// a held read is released about 10ms (half an interval) after the consumer acks.
/// Every JetStream client of the cluster shares the server's API queue; 50 requests/s
/// per projection and gateway keeps a fleet of gateways far below it (the `postgres`
/// source's 10ms queries a one-row table, which is cheaper).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(20);

/// `[nats]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawNats {
    /// `nats://host:port` (no password). One of `url`, `url_env`.
    pub url: Field<String>,
    /// The environment variable holding the URL (it may carry a password or token).
    pub url_env: Field<String>,
    /// A NATS `.creds` file (user JWT and NKey seed). Default: none.
    pub credentials_file: Field<String>,
    /// Duration. Default `1s`.
    pub request_timeout: Field<String>,
}

/// Known keys of `[nats]`.
pub const KEYS: &[&str] = &["url", "url_env", "credentials_file", "request_timeout"];

/// `[projections.NAME.nats]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawNatsSource {
    /// The JetStream stream (required).
    pub stream: Field<String>,
    /// The projector's durable consumer on `stream` (required).
    pub consumer: Field<String>,
    /// The log the stream's sequences are positions of. Default: the projection's
    /// log when it has exactly one.
    pub log: Field<String>,
    /// Duration. Default `20ms`.
    pub interval: Field<String>,
}

/// Known keys of `[projections.NAME.nats]`.
pub const SOURCE_KEYS: &[&str] = &["stream", "consumer", "log", "interval"];

/// A validated `[nats]`.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// The server URL (a password or token in it came from `url_env`).
    pub url: String,
    /// `host:port` for logs and `/readyz` (never a secret).
    pub display: String,
    pub credentials_file: Option<PathBuf>,
    /// Default `1s`.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("display", &self.display)
            .field("credentials_file", &self.credentials_file)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A validated `[projections.NAME.nats]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSourceConfig {
    pub stream: String,
    pub consumer: String,
    pub log: String,
    /// Default `20ms`.
    pub interval: Duration,
}

/// Validates `[nats]`; `env` resolves `url_env`.
pub fn nats(errs: &mut Errors, raw: RawNats, env: &[(String, String)]) -> Option<NatsConfig> {
    let request_timeout = errs.duration_or(
        "nats.request_timeout",
        raw.request_timeout,
        DEFAULT_REQUEST_TIMEOUT,
        true,
    );
    let credentials_file = errs
        .field::<String>("nats.credentials_file", raw.credentials_file)
        .map(PathBuf::from);
    let url = errs.field::<String>("nats.url", raw.url);
    let url_env = errs.field::<String>("nats.url_env", raw.url_env);
    let (key, text, from_file) = match (url, url_env) {
        (Some(url), None) => ("nats.url", url, true),
        (None, Some(var)) => match env.iter().find(|(k, _)| *k == var) {
            Some((_, v)) if !v.trim().is_empty() => ("nats.url_env", v.clone(), false),
            _ => {
                errs.push(
                    "nats.url_env",
                    format!("the environment variable `{var}` is not set"),
                    format!("export {var}=nats://HOST:4222, or set `nats.url`"),
                );
                return None;
            }
        },
        (Some(_), Some(_)) => {
            errs.push(
                "nats.url",
                "`url` and `url_env` are both set",
                "keep one: `url` (no password) or `url_env` (a variable holding the URL)",
            );
            return None;
        }
        (None, None) => {
            errs.push(
                "nats",
                "no server address",
                "set `url = \"nats://127.0.0.1:4222\"` or `url_env = \"NATS_URL\"`",
            );
            return None;
        }
    };
    let display = match parse_url(&text) {
        Ok(parsed) => parsed,
        Err(problem) => {
            // Never echo a URL read from the environment: it may carry a password.
            let shown = if from_file { text.as_str() } else { "the URL" };
            errs.push(
                key,
                format!("{shown} is not a NATS URL: {problem}"),
                "write `nats://HOST:PORT` (or `tls://HOST:PORT`)",
            );
            return None;
        }
    };
    if from_file && display.1 {
        errs.push(
            "nats.url",
            "the URL carries a password or token",
            "move the URL to an environment variable named by `url_env`, or use `credentials_file`",
        );
        return None;
    }
    Some(NatsConfig {
        url: text,
        display: display.0,
        credentials_file,
        request_timeout,
    })
}

/// `(host:port, has credentials)` of a `nats://` or `tls://` URL.
fn parse_url(text: &str) -> Result<(String, bool), String> {
    let rest = ["nats://", "tls://"]
        .iter()
        .find_map(|s| text.strip_prefix(s))
        .ok_or("the scheme must be `nats://` or `tls://`")?;
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let hostport = hostport.trim_end_matches('/');
    if hostport.is_empty() || hostport.contains(['/', ' ', ',']) {
        return Err("no `HOST:PORT` after the scheme".into());
    }
    Ok((hostport.to_string(), userinfo.is_some()))
}

/// Whether `text` is a valid stream or consumer name (NATS refuses white space, `.`,
/// `*`, `>`, `/` and `\` in them).
pub fn valid_jetstream_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 255
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
}

/// Validates a projection's `[projections.NAME.nats]`; `wanted` tells whether its
/// `sources` lists `nats`, `has_nats` whether `[nats]` exists.
pub fn source(
    errs: &mut Errors,
    projection: &ProjectionConfig,
    raw: Option<RawNatsSource>,
    wanted: bool,
    has_nats: bool,
) -> Option<NatsSourceConfig> {
    let p = format!("projections.{}.nats", projection.name);
    let raw = match (raw, wanted) {
        (Some(raw), true) => raw,
        (None, false) => return None,
        (None, true) => {
            errs.push(
                &p,
                "source `nats` needs its settings",
                format!("add `[{p}]` with `stream` and `consumer`"),
            );
            return None;
        }
        (Some(_), false) => {
            errs.push(
                &p,
                "the `nats` source is configured but not listed in `sources`",
                format!(
                    "add \"nats\" to `projections.{}.sources`, or remove `[{p}]`",
                    projection.name
                ),
            );
            return None;
        }
    };
    if !has_nats {
        errs.push(
            &p,
            "source `nats` needs a NATS server",
            "add `[nats]` with `url = \"nats://127.0.0.1:4222\"` (or `url_env`)",
        );
    }
    let interval = errs.duration_or(
        &format!("{p}.interval"),
        raw.interval,
        DEFAULT_INTERVAL,
        true,
    );
    let stream = jetstream_name(errs, &format!("{p}.stream"), raw.stream, "ORDERS");
    let consumer = jetstream_name(errs, &format!("{p}.consumer"), raw.consumer, "orders-view");
    let log = match errs.field::<String>(&format!("{p}.log"), raw.log) {
        Some(log) if projection.logs.contains(&log) => Some(log),
        Some(log) => {
            errs.push(
                format!("{p}.log"),
                format!("`{log}` is not one of the projection's logs"),
                format!("use one of {:?}, or add it to `logs`", projection.logs),
            );
            None
        }
        None if projection.logs.len() == 1 => Some(projection.logs[0].clone()),
        None => {
            errs.push(
                format!("{p}.log"),
                "the projection has several logs: which one is the stream's?",
                format!("set `log` to one of {:?}", projection.logs),
            );
            None
        }
    };
    Some(NatsSourceConfig {
        stream: stream?,
        consumer: consumer?,
        log: log?,
        interval,
    })
}

/// A required stream or consumer name.
pub fn jetstream_name(
    errs: &mut Errors,
    key: &str,
    field: Field<String>,
    example: &str,
) -> Option<String> {
    match errs.field::<String>(key, field) {
        Some(name) if valid_jetstream_name(&name) => Some(name),
        Some(name) => {
            errs.push(
                key,
                format!("`{name}` is not a valid JetStream name"),
                "use the name as `nats stream ls` / `nats consumer ls` shows it (no white space, `.`, `*`, `>`, `/`)",
            );
            None
        }
        None => {
            errs.push(key, "missing", format!("set it, e.g. `\"{example}\"`"));
            None
        }
    }
}

/// A validated `fence = { nats_stream = "STREAM", log = "..." }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsFenceConfig {
    pub stream: String,
    /// The log whose position the stream's last sequence is (a failed fence marks it
    /// for the primary). Default: the route's `default_log`.
    pub log: String,
    /// Default `5s` (as for every fence).
    pub fallback: Duration,
}

/// Collects the `nats_stream` fences while the route fences are checked.
#[derive(Debug)]
pub struct FenceCheck {
    has_nats: bool,
    pub fences: BTreeMap<String, NatsFenceConfig>,
}

impl FenceCheck {
    pub fn new(has_nats: bool) -> FenceCheck {
        FenceCheck {
            has_nats,
            fences: BTreeMap::new(),
        }
    }

    /// Checks the write route `route`'s fence `p` (`routes[i] (name).fence`), which
    /// has `nats_stream`; `known_logs` are the logs a projection consumes.
    pub fn check(
        &mut self,
        errs: &mut Errors,
        p: &str,
        route: String,
        raw: RawFence,
        default_log: Option<String>,
        known_logs: &[String],
    ) {
        for (key, set) in [
            ("database", raw.database.is_some()),
            ("query", raw.query.is_some()),
            ("preset", raw.preset.is_some()),
            ("schema", raw.schema.is_some()),
        ] {
            if set {
                errs.push(
                    format!("{p}.{key}"),
                    format!("`{key}` belongs to a PostgreSQL fence, not a `nats_stream` one"),
                    format!(
                        "remove `{key}` (a `nats_stream` fence reads the stream's last sequence)"
                    ),
                );
            }
        }
        if !self.has_nats {
            errs.push(
                format!("{p}.nats_stream"),
                "a `nats_stream` fence needs a NATS server",
                "add `[nats]` with `url = \"nats://127.0.0.1:4222\"` (or `url_env`)",
            );
        }
        let fallback = errs.duration_or(
            &format!("{p}.fallback"),
            raw.fallback,
            super::positions::DEFAULT_FALLBACK,
            true,
        );
        let stream = jetstream_name(errs, &format!("{p}.nats_stream"), raw.nats_stream, "ORDERS");
        let log = match errs
            .field::<String>(&format!("{p}.log"), raw.log)
            .or(default_log)
        {
            Some(log) if known_logs.contains(&log) => Some(log),
            Some(log) => {
                errs.push(
                    format!("{p}.log"),
                    format!("the fence reads log `{log}`, which no projection consumes"),
                    format!("set `log` to one of {known_logs:?}, or add `{log}` to a projection's `logs`"),
                );
                None
            }
            None => {
                errs.push(
                    format!("{p}.log"),
                    "a `nats_stream` fence must say which log the stream's sequences are",
                    "set `log = \"orders\"` in the fence, or `default_log` on the route",
                );
                None
            }
        };
        if let (Some(stream), Some(log)) = (stream, log) {
            self.fences.insert(
                route,
                NatsFenceConfig {
                    stream,
                    log,
                    fallback,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_their_address_and_whether_they_carry_a_secret() {
        assert_eq!(
            parse_url("nats://127.0.0.1:4222").unwrap(),
            ("127.0.0.1:4222".into(), false)
        );
        assert_eq!(
            parse_url("tls://u:p@nats.example:4222/").unwrap(),
            ("nats.example:4222".into(), true)
        );
        assert!(parse_url("http://x:1").is_err());
        assert!(parse_url("nats://").is_err());
    }

    #[test]
    fn jetstream_names_refuse_subject_characters() {
        assert!(valid_jetstream_name("ORDERS"));
        assert!(valid_jetstream_name("orders-view_2"));
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b"] {
            assert!(!valid_jetstream_name(bad), "{bad}");
        }
    }
}
