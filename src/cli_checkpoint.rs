//! `tidemark checkpoint push`: reports a projection's checkpoint to a gateway's admin
//! API from a shell script or cron job (`PUT /projections/{name}/checkpoint`).
//!
//! With `store.backend = "redis"` a push to any one gateway is written through to
//! Redis, so every gateway sees it. The position is sent in its text form
//! (`users=1234,orders=88`, or a bare `1234` for a projection with one log); the
//! gateway validates it against the projection's logs.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The whole exchange (connect, request, answer) must finish within this: the admin
/// API answers at once, and a cron job must not hang on a stuck gateway.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout (hyper's connector has none by default).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of an error answer's body a message quotes.
const MAX_DETAIL: usize = 500;

/// One checkpoint push.
#[derive(Debug, Clone)]
pub struct CheckpointPush {
    /// The admin listener's base URL, `http://HOST:PORT` (a bare `HOST:PORT` is taken
    /// as http).
    pub admin: String,
    /// The projection, as in `[projections.NAME]`.
    pub projection: String,
    /// One instance of the projection; `None`: every instance.
    pub instance: Option<String>,
    /// The admin bearer token (`admin.token_env` on the gateway); `None`: no header.
    pub token: Option<String>,
    /// The checkpoint in text form: `users=1234` or a bare `1234`.
    pub position: String,
}

/// Why a push did not succeed. Every message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// `--admin` is not a usable URL.
    #[error("--admin `{url}` is not an http://HOST:PORT URL ({reason})")]
    BadAdminUrl { url: String, reason: String },
    /// The position argument is empty.
    #[error("the position is empty: give it as `users=1234` (or a bare number for a projection with one log)")]
    EmptyPosition,
    /// `--token-env` names a variable that is unset or empty.
    #[error("--token-env `{0}`: that environment variable is not set or is empty")]
    TokenEnv(String),
    /// The admin API could not be reached.
    #[error("cannot reach the admin API at {url}: is the gateway running and is --admin its admin_listen address?")]
    Send {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// No answer in time.
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// The admin API answered something other than `204`.
    #[error("the admin API answered {status}: {detail}")]
    Rejected { status: StatusCode, detail: String },
}

/// Reads the admin token from the variable `var` (`--token-env`).
pub fn token_from_env(var: &str) -> Result<String, PushError> {
    std::env::var(var)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| PushError::TokenEnv(var.to_owned()))
}

/// The push's URL: `{admin}/projections/{projection}/checkpoint[?instance=ID]`.
pub fn push_url(push: &CheckpointPush) -> Result<Uri, PushError> {
    let bad = |reason: &str| PushError::BadAdminUrl {
        url: push.admin.clone(),
        reason: reason.to_owned(),
    };
    let admin = push.admin.trim();
    let rest = match admin.split_once("://") {
        None => admin,
        Some(("http", rest)) => rest,
        Some((scheme, _)) => return Err(bad(&format!("scheme `{scheme}` is not supported"))),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(bad("no host"));
    }
    let base = format!("http://{rest}");
    let mut url = format!(
        "{base}/projections/{}/checkpoint",
        encode_component(&push.projection)
    );
    if let Some(instance) = &push.instance {
        url.push_str("?instance=");
        url.push_str(&encode_component(instance));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(uri)
}

/// Sends the push; `Ok` on `204` (any 2xx).
pub async fn push(push: &CheckpointPush) -> Result<(), PushError> {
    let position = push.position.trim();
    if position.is_empty() {
        return Err(PushError::EmptyPosition);
    }
    let uri = push_url(push)?;
    let url = uri.to_string();
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(uri)
        .header(CONTENT_TYPE, "text/plain");
    if let Some(token) = &push.token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(position.to_owned())))
        .map_err(|e| PushError::BadAdminUrl {
            url: push.admin.clone(),
            reason: e.to_string(),
        })?;

    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|source| PushError::Send {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let body = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        Ok::<_, PushError>((status, body))
    };
    let (status, body) = tokio::time::timeout(PUSH_TIMEOUT, exchange)
        .await
        .map_err(|_| PushError::Timeout {
            url: url.clone(),
            timeout: PUSH_TIMEOUT,
        })??;
    if status.is_success() {
        return Ok(());
    }
    Err(PushError::Rejected {
        status,
        detail: detail(&body),
    })
}

/// The `detail` (else `title`) of a problem+json answer, else the body's text.
fn detail(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["detail", "title"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|d| d.as_str()).map(str::to_owned))
        });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    match text.char_indices().nth(MAX_DETAIL) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None if text.is_empty() => "(no detail)".to_owned(),
        None => text,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `tidemark checkpoint show`: runs every `postgres` and `kafka` checkpoint source and
/// every `postgres` and `kafka_topic` write fence of `config` once and describes what
/// each read, so an operator sees the wiring before going live. Returns the report
/// and whether every read worked.
pub async fn show(config: &crate::config::Config) -> (String, bool) {
    use crate::database::{rows, Databases};
    let databases = Databases::new(&config.positions.databases);
    let mut out = String::new();
    let kafka_sources = config.projections.values().any(|p| p.kafka.is_some());
    if config.positions.sources.is_empty()
        && config.positions.fences.is_empty()
        && !kafka_sources
        && config.positions.kafka_fences.is_empty()
    {
        out.push_str("no postgres or kafka checkpoint source and no fence configured\n");
    }
    let mut ok = true;
    let mut line = |what: String, result: Result<String, String>| match result {
        Ok(read) => out.push_str(&format!("{what}: {read}\n")),
        Err(e) => {
            ok = false;
            out.push_str(&format!("{what}: FAILED: {e}\n"));
        }
    };
    let read = |db: &str, sql: &crate::database::Sql| {
        let db = databases.get(db).cloned();
        let sql = sql.clone();
        async move {
            let Some(db) = db else {
                return Err("no such database".to_string());
            };
            let rows = db.query(&sql).await.map_err(|e| error_chain(&e))?;
            let position = rows::positions(&rows).map_err(|e| e.to_string())?;
            Ok(if position.is_empty() {
                "no position yet (no row, or NULL)".to_string()
            } else {
                position.to_string()
            })
        }
    };
    for (projection, source) in &config.positions.sources {
        let how = source
            .preset
            .map_or("query".to_string(), |p| format!("preset {}", p.as_str()));
        for (instance, db) in &source.targets {
            let who = instance.as_deref().unwrap_or("every instance");
            let what = format!("projection {projection} ({who}) checkpoint, database {db}, {how}");
            line(what, read(db, &source.sql).await);
        }
    }
    for (route, fence) in &config.positions.fences {
        let how = fence
            .preset
            .map_or("query".to_string(), |p| format!("preset {}", p.as_str()));
        let what = format!(
            "route {route} fence, database {}, {how} (fallback {})",
            fence.database,
            humantime::format_duration(fence.fallback)
        );
        line(what, read(&fence.database, &fence.sql).await);
    }
    if let Some(kafka) = &config.kafka {
        for (what, result) in show_kafka(config, kafka).await {
            line(what, result);
        }
    }
    (out, ok)
}

/// The `kafka` sources and `kafka_topic` fences of `config`, each read once: a line
/// `(what, read)` each.
async fn show_kafka(
    config: &crate::config::Config,
    kafka: &crate::config::kafka::KafkaConfig,
) -> Vec<(String, Result<String, String>)> {
    use crate::config::kafka::log_name;
    let client = match crate::kafka::Kafka::connect(kafka, None) {
        Ok(c) => c,
        Err(e) => {
            return vec![(
                format!("kafka at {}", kafka.bootstrap()),
                Err(e.to_string()),
            )]
        }
    };
    let mut out = Vec::new();
    for (name, p) in &config.projections {
        let Some(source) = &p.kafka else { continue };
        let what = format!(
            "projection {name} checkpoint, group {} on topic {}",
            source.group, source.topic
        );
        let read = async {
            let committed = client
                .committed(&source.group, &source.topic, &source.partitions)
                .await
                .map_err(|e| e.to_string())?;
            let positions = crate::checkpoint::sources::kafka::applied(&source.topic, &committed);
            let missing: Vec<String> = committed
                .iter()
                .filter(|(_, o)| o.is_none())
                .map(|(n, _)| log_name(&source.topic, *n))
                .collect();
            let mut text = if positions.is_empty() {
                "no committed offset yet".to_string()
            } else {
                positions.to_string()
            };
            if !missing.is_empty() {
                text.push_str(&format!(
                    "; no committed offset on {} (reads after writes there wait until the group commits)",
                    missing.join(", ")
                ));
            }
            text.push_str(&unlisted(&client, &source.topic, &source.partitions).await);
            Ok(text)
        };
        out.push((what, read.await));
    }
    for (route, fence) in &config.positions.kafka_fences {
        let what = format!(
            "route {route} fence, topic {} (fallback {})",
            fence.topic,
            humantime::format_duration(fence.fallback)
        );
        let read = async {
            let latest = client
                .latest(&fence.topic, &fence.partitions)
                .await
                .map_err(|e| e.to_string())?;
            let heads = crate::gateway::fence::kafka::heads(&fence.topic, &latest);
            let mut text = if heads.is_empty() {
                "every partition is empty".to_string()
            } else {
                heads.to_string()
            };
            text.push_str(&unlisted(&client, &fence.topic, &fence.partitions).await);
            Ok(text)
        };
        out.push((what, read.await));
    }
    out
}

/// A note naming the partitions of `topic` that no projection lists (writes there are
/// never waited for), or nothing.
async fn unlisted(client: &crate::kafka::Kafka, topic: &str, listed: &[i32]) -> String {
    match client.partition_count(topic).await {
        Ok(count) => {
            let count = i32::try_from(count).unwrap_or(i32::MAX);
            let name = |n: &i32| crate::config::kafka::log_name(topic, *n);
            let extra: Vec<String> = (0..count)
                .filter(|n| !listed.contains(n))
                .map(|n| name(&n))
                .collect();
            let absent: Vec<String> = listed.iter().filter(|n| **n >= count).map(name).collect();
            let mut text = String::new();
            if !extra.is_empty() {
                text.push_str(&format!(
                    "; WARNING: the topic also has {} that no projection lists in `logs`: reads never wait for writes there",
                    extra.join(", ")
                ));
            }
            if !absent.is_empty() {
                text.push_str(&format!(
                    "; WARNING: the topic has {count} partitions: {} do not exist",
                    absent.join(", ")
                ));
            }
            text
        }
        Err(e) => format!("; partition count unknown: {e}"),
    }
}

/// An error and its sources, `: `-joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(admin: &str, instance: Option<&str>) -> CheckpointPush {
        CheckpointPush {
            admin: admin.to_owned(),
            projection: "user view".to_owned(),
            instance: instance.map(str::to_owned),
            token: None,
            position: "users=1".to_owned(),
        }
    }

    #[test]
    fn url_names_the_projection_and_instance_encoded() {
        let url = push_url(&request("http://127.0.0.1:9090/", Some("a&b"))).unwrap();
        assert_eq!(
            url.to_string(),
            "http://127.0.0.1:9090/projections/user%20view/checkpoint?instance=a%26b"
        );
        let bare = push_url(&request("127.0.0.1:9090", None)).unwrap();
        assert_eq!(
            bare.to_string(),
            "http://127.0.0.1:9090/projections/user%20view/checkpoint"
        );
    }

    #[test]
    fn unusable_admin_urls_are_refused() {
        for admin in ["https://gw:9090", "http://", "http://a b"] {
            assert!(
                matches!(
                    push_url(&request(admin, None)),
                    Err(PushError::BadAdminUrl { .. })
                ),
                "{admin}"
            );
        }
    }

    #[test]
    fn detail_comes_from_problem_json_or_the_text() {
        assert_eq!(
            detail(br#"{"title":"Bad","detail":"no such log"}"#),
            "no such log"
        );
        assert_eq!(detail(b"plain words\n"), "plain words");
        assert_eq!(detail(b""), "(no detail)");
        assert!(detail(&[b'x'; 2000]).ends_with("..."));
    }
}
