//! Scenario 6: positions read where they already live (issues 11 and 12), with real
//! servers this tool starts on free loopback ports.
//!
//! **PostgreSQL, `replica-lsn`.** A primary and a streaming hot standby
//! (`pg_basebackup -R`, `recovery_min_apply_delay`, default 200 ms), from
//! `tests/support/postgres.rs`. The app keeps a `users` table in database `app`: a
//! command service upserts on the primary and answers `204` with no `Write-Position`
//! (or, when asked with `X-Answer-Position: 1`, with `Write-Position:
//! wal=<pg_current_wal_insert_lsn()>` taken in the same statement, so both kinds of
//! write do the same database work); a read service answers from the standby. The
//! gateway (its own process) fences writes with `primary-lsn` and reads checkpoints
//! with `replica-lsn` at the default 10 ms interval; its connections use database
//! `postgres`, so its queries are counted apart from the app's.
//!
//! - *Held read above the lag*: write-then-read pairs through the gateway. The read
//!   service records the `Consistency-Min-Position: wal=N` the gateway forwards; a
//!   watcher polls `pg_last_wal_replay_lsn()` on the standby every `watch_ms` (in
//!   database `app`) and records when the replay first reached each value. Overhead =
//!   the read's answer at the client - the first watcher poll that saw the replay at
//!   or past N (that poll completes after the replay, so the overhead is understated
//!   by up to one poll period plus the poll's round trip). Also given: read answer -
//!   write answer - apply delay (cruder: the commit precedes the write's answer).
//! - *The fence's cost per write*: writes only, arrivals interleaved over three
//!   variants: through the gateway with the fence (no `Write-Position`), through the
//!   gateway with `Write-Position` (the fence does not run), straight to the command
//!   service. Latency from each write's send.
//! - *Queries per second per database*: the gateway's statements, counted exactly
//!   from the servers' logs (`ALTER DATABASE postgres SET log_statement = 'all'`: only
//!   sessions in database `postgres`, i.e. the gateway's, are logged), while idle and
//!   during each loaded phase. Cross-check: the gateway's own fence counter
//!   (`tidemark_fence_seconds_count`) against the fenced writes sent.
//!   (`pg_stat_database.xact_commit` was tried and dropped: over 10-15 s windows it
//!   read 0-17/s where the log counted 40-85 statements/s.)
//!
//! **NATS JetStream, `nats` source at its default 20 ms interval.** `nats-server -js
//! -m PORT` on loopback; the command service publishes and waits for the `PubAck`
//! (no position); the projector is a durable pull consumer applying each message
//! `nats_lag_ms` after it was published, then `double_ack`s it (the server confirms)
//! and records that instant. Overhead = read answer - that instant for the position
//! the gateway forwarded. Broker requests/s: the gateway's connection's `in_msgs`
//! from `/connz` (every message it sent the server: JetStream API requests), idle
//! and under load; `/varz` `in_msgs` of the whole server for context.
//!
//! Every loop is bounded in count (`rate x seconds`) and in time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use http::Method;
use serde::Serialize;
use tokio::time::{sleep_until, Instant};
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use crate::fresh::write_json;
use crate::gateway::{self, Gateway};
use crate::net;
use crate::procs::{self, Proc};
use crate::stats::{self, Summary};

#[path = "../../tests/support/postgres.rs"]
mod pg;

/// Workers (one connection each) sharing a phase's arrivals.
const WORKERS: usize = 32;
/// One request's bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a phase may overrun its schedule before arrivals are counted as not sent.
const DRAIN: Duration = Duration::from_secs(10);
/// The app's NATS connections carry this name; every other connection is the gateway's.
const APP_CONNECTION: &str = "load-app";

/// Settings of the sources scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct SourcesArgs {
    /// The tidemark binary.
    #[arg(long, default_value = "target/production/tidemark")]
    pub gateway_bin: PathBuf,
    /// The standby's `recovery_min_apply_delay`, ms.
    #[arg(long, default_value_t = 200)]
    pub apply_delay_ms: u64,
    /// The NATS projector's lag (it applies a message this long after the publish), ms.
    #[arg(long, default_value_t = 200)]
    pub nats_lag_ms: u64,
    /// Write-then-read pairs per second.
    #[arg(long, default_value_t = 40.0)]
    pub rate: f64,
    /// Seconds of pairs per source.
    #[arg(long, default_value_t = 15.0)]
    pub load_s: f64,
    /// Seconds with the gateway idle (no client request), for the idle rates.
    #[arg(long, default_value_t = 10.0)]
    pub idle_s: f64,
    /// Writes per second of the fence-cost phase (over its three variants).
    #[arg(long, default_value_t = 150.0)]
    pub write_rate: f64,
    /// Seconds of the fence-cost phase.
    #[arg(long, default_value_t = 15.0)]
    pub write_s: f64,
    /// Poll period of the standby's replay watcher, ms.
    #[arg(long, default_value_t = 1)]
    pub watch_ms: u64,
    /// Core the gateway is pinned to (unset: not pinned).
    #[arg(long)]
    pub gateway_core: Option<usize>,
    /// Where the JSON goes.
    #[arg(long)]
    pub out: PathBuf,
    /// Scratch directory.
    #[arg(long)]
    pub scratch: PathBuf,
}

/// Write-then-read pairs through the gateway.
#[derive(Debug, Default, Serialize)]
pub struct PairFigures {
    /// Pairs scheduled / completed (write and read answered).
    pub pairs: u64,
    pub completed: u64,
    /// Reads that did not show the write.
    pub stale: u64,
    /// Failed writes or reads.
    pub errors: u64,
    /// Arrivals never sent (time bound).
    pub not_sent: u64,
    /// `Consistency-Source` of the reads.
    pub sources: HashMap<String, u64>,
    /// Read latency from its send.
    pub read_latency: Summary,
    /// Reads held (sent before their position was applied) with a known apply instant.
    pub held: u64,
    /// Held reads: answer - apply instant (see the module docs per source).
    pub overhead: Summary,
    /// Held reads whose answer preceded the recorded apply instant (clamped to 0).
    pub overhead_negative: u64,
    /// PostgreSQL only: read answer - write answer - apply delay.
    pub above_write_plus_delay: Option<Summary>,
    /// Write latency (with the fence) from its send.
    pub write_latency: Summary,
    pub elapsed_s: f64,
}

/// The fence-cost phase.
#[derive(Debug, Default, Serialize)]
pub struct FenceFigures {
    /// Through the gateway, no `Write-Position`: the fence runs.
    pub fenced: Summary,
    /// Through the gateway, the service answers `Write-Position`: no fence.
    pub positioned: Summary,
    /// Straight to the command service.
    pub direct: Summary,
    /// fenced - positioned, at p50 and p99 (µs).
    pub fence_cost_p50_us: i64,
    pub fence_cost_p99_us: i64,
    pub errors: u64,
    pub not_sent: u64,
    /// Fenced writes answered without a token (should be 0).
    pub without_token: u64,
    pub elapsed_s: f64,
}

/// Statements per second of one database over one phase.
#[derive(Debug, Default, Serialize, Clone)]
pub struct Rate {
    pub phase: String,
    pub seconds: f64,
    /// Statements in the server log over the phase (exact).
    pub statements: u64,
    pub statements_per_s: f64,
}

/// The PostgreSQL half.
#[derive(Debug, Default, Serialize)]
pub struct PostgresFigures {
    pub server_version: String,
    pub apply_delay_ms: u64,
    pub pairs: PairFigures,
    pub fence: FenceFigures,
    /// Database `postgres` on the primary (fences) and on the standby (source).
    pub primary_rates: Vec<Rate>,
    pub standby_rates: Vec<Rate>,
    /// From the gateway's `/metrics` at the end, and the fenced writes answered `2xx`
    /// (completed pairs, fenced writes of the fence-cost phase, one warm-up write).
    pub gateway_fences: f64,
    pub fenced_writes_sent: u64,
    pub gateway_fence_fallbacks: f64,
    pub watcher_polls: u64,
}

/// Messages per second the gateway sent the broker over one phase.
#[derive(Debug, Default, Serialize, Clone)]
pub struct BrokerRate {
    pub phase: String,
    pub seconds: f64,
    /// The gateway's connection(s): `in_msgs` per second (its requests).
    pub gateway_requests_per_s: f64,
    /// The whole server: `/varz` `in_msgs` per second.
    pub server_in_msgs_per_s: f64,
}

/// The NATS half.
#[derive(Debug, Default, Serialize)]
pub struct NatsFigures {
    pub server_version: String,
    pub lag_ms: u64,
    pub pairs: PairFigures,
    pub rates: Vec<BrokerRate>,
}

#[derive(Debug, Serialize)]
struct SourcesReport {
    settings: SourcesArgs,
    postgres: Option<PostgresFigures>,
    postgres_error: Option<String>,
    nats: Option<NatsFigures>,
    nats_error: Option<String>,
}

/// Runs the scenario and writes its JSON.
pub async fn run(args: SourcesArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.scratch).map_err(|e| e.to_string())?;
    let mut report = SourcesReport {
        settings: args.clone(),
        postgres: None,
        postgres_error: None,
        nats: None,
        nats_error: None,
    };
    match postgres(&args).await {
        Ok(f) => report.postgres = Some(f),
        Err(e) => {
            eprintln!("sources: postgres failed: {e}");
            report.postgres_error = Some(e);
        }
    }
    match nats(&args).await {
        Ok(f) => report.nats = Some(f),
        Err(e) => {
            eprintln!("sources: nats failed: {e}");
            report.nats_error = Some(e);
        }
    }
    write_json(&args.out, &report)?;
    if report.postgres.is_none() || report.nats.is_none() {
        return Err("a part of the sources scenario failed (see above)".into());
    }
    Ok(())
}

// ---------------------------------------------------------------- shared pieces

/// When a position was first reached, in order.
#[derive(Debug, Default)]
struct Timeline(Mutex<Vec<(u64, Instant)>>);

impl Timeline {
    fn push(&self, position: u64, at: Instant) {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.last().is_none_or(|(p, _)| *p < position) {
            seen.push((position, at));
        }
    }

    fn reached(&self, position: u64) -> Option<Instant> {
        let seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let i = seen.partition_point(|(p, _)| *p < position);
        seen.get(i).map(|(_, t)| *t)
    }
}

/// The `Consistency-Min-Position` each user's first read arrived with.
#[derive(Debug, Default)]
struct Arrivals(Mutex<HashMap<String, u64>>);

impl Arrivals {
    fn record(&self, id: &str, headers: &HeaderMap) {
        let position = headers
            .get("consistency-min-position")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once('='))
            .and_then(|(_, p)| p.trim().parse::<u64>().ok());
        if let Some(p) = position {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id.to_string())
                .or_insert(p);
        }
    }

    fn get(&self, id: &str) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .copied()
    }
}

async fn serve(router: Router, stop: &CancellationToken) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let stop = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await;
    });
    Ok(addr)
}

/// One request on the worker's connection (opened on first use, again after an error).
async fn exchange(
    sender: &mut Option<net::Sender>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Option<net::Reply> {
    if sender.is_none() {
        *sender = net::connect(addr, None).await.ok();
    }
    let s = sender.as_mut()?;
    let req = net::build(method, addr, path, headers, body).ok()?;
    match net::send(s, req, REQUEST_TIMEOUT).await {
        Ok(r) => Some(r),
        Err(_) => {
            *sender = None;
            None
        }
    }
}

/// One write-then-read pair as the client saw it.
#[derive(Debug)]
struct Pair {
    id: String,
    write_sent: Instant,
    write_done: Instant,
    read_sent: Instant,
    read_done: Instant,
    source: String,
    stale: bool,
}

/// `rate x seconds` pairs through `gw`, each on its own user `{tag}-{i}`: `PUT` the
/// value `v{i}`, then `GET` it with the write's token. Returns the completed pairs,
/// errors and arrivals not sent.
async fn pairs(gw: SocketAddr, tag: &str, rate: f64, seconds: f64) -> (Vec<Pair>, u64, u64, f64) {
    let n = (rate * seconds).round() as usize;
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start + Duration::from_secs_f64(seconds) + DRAIN;
    let mut tasks = Vec::new();
    for w in 0..WORKERS.min(n.max(1)) {
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut sender = None;
            let (mut out, mut errors, mut not_sent) = (Vec::new(), 0u64, 0u64);
            for i in (w..n).step_by(WORKERS) {
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                if at.max(Instant::now()) > deadline {
                    not_sent += 1;
                    continue;
                }
                sleep_until(at).await;
                let id = format!("{tag}-{i}");
                let path = format!("/users/{id}");
                let value = format!("v{i}");
                let write_sent = Instant::now();
                let w = exchange(
                    &mut sender,
                    gw,
                    Method::PUT,
                    &path,
                    &[],
                    Bytes::from(value.clone()),
                )
                .await;
                let write_done = Instant::now();
                let Some(token) = w
                    .filter(|w| w.status.is_success())
                    .and_then(|w| w.header("consistency-token").map(str::to_string))
                else {
                    errors += 1;
                    continue;
                };
                let read_sent = Instant::now();
                let r = exchange(
                    &mut sender,
                    gw,
                    Method::GET,
                    &path,
                    &[("consistency-token", &token)],
                    Bytes::new(),
                )
                .await;
                let read_done = Instant::now();
                let Some(r) = r else {
                    errors += 1;
                    continue;
                };
                let fresh = r.status == StatusCode::OK && r.body == value.as_bytes();
                if !fresh && r.status != StatusCode::OK && r.status != StatusCode::NOT_FOUND {
                    errors += 1;
                    continue;
                }
                out.push(Pair {
                    id,
                    write_sent,
                    write_done,
                    read_sent,
                    read_done,
                    source: r.header("consistency-source").unwrap_or("-").to_string(),
                    stale: !fresh,
                });
            }
            (out, errors, not_sent)
        }));
    }
    let (mut all, mut errors, mut not_sent) = (Vec::new(), 0, 0);
    for t in tasks {
        if let Ok((out, e, ns)) = t.await {
            all.extend(out);
            errors += e;
            not_sent += ns;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    (all, errors, not_sent, elapsed)
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// The pair figures, with `applied_at(id)` the instant the pair's required
/// position was applied (None: unknown).
fn pair_figures(
    pairs: &[Pair],
    scheduled: u64,
    errors: u64,
    not_sent: u64,
    elapsed_s: f64,
    applied_at: impl Fn(&str) -> Option<Instant>,
    delay: Option<Duration>,
) -> PairFigures {
    let (mut read, mut write, mut over, mut above) = (
        stats::histogram(),
        stats::histogram(),
        stats::histogram(),
        stats::histogram(),
    );
    let mut f = PairFigures {
        pairs: scheduled,
        completed: pairs.len() as u64,
        errors,
        not_sent,
        elapsed_s,
        ..Default::default()
    };
    for p in pairs {
        f.stale += u64::from(p.stale);
        *f.sources.entry(p.source.clone()).or_default() += 1;
        stats::record(&mut read, us(p.read_done - p.read_sent));
        stats::record(&mut write, us(p.write_done - p.write_sent));
        if let Some(applied) = applied_at(&p.id) {
            if applied > p.read_sent {
                f.held += 1;
                if p.read_done < applied {
                    f.overhead_negative += 1;
                    stats::record(&mut over, 0);
                } else {
                    stats::record(&mut over, us(p.read_done - applied));
                }
            }
        }
        if let Some(delay) = delay {
            let base = p.write_done + delay;
            stats::record(&mut above, us(p.read_done.saturating_duration_since(base)));
        }
    }
    f.read_latency = stats::summary(&read);
    f.write_latency = stats::summary(&write);
    f.overhead = stats::summary(&over);
    f.above_write_plus_delay = delay.map(|_| stats::summary(&above));
    f
}

/// A metric's value summed over its label sets, from Prometheus text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0
}

// ---------------------------------------------------------------- PostgreSQL

fn lsn(value: PgLsn) -> u64 {
    u64::from(value)
}

async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The app on the primary (commands) and the standby (reads).
struct PgApp {
    commands: SocketAddr,
    view: SocketAddr,
    primary_view: SocketAddr,
    arrivals: Arc<Arrivals>,
}

#[derive(Clone)]
struct Writers {
    clients: Arc<Vec<Client>>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

async fn put_user(
    State(w): State<Writers>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let i = w.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % w.clients.len();
    let row = w.clients[i]
        .query_one(
            "INSERT INTO users (id, v) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = excluded.v RETURNING pg_current_wal_insert_lsn()",
            &[&id, &body],
        )
        .await;
    match row {
        Ok(row) if headers.contains_key("x-answer-position") => {
            let position = lsn(row.get::<_, PgLsn>(0));
            (
                StatusCode::NO_CONTENT,
                [("write-position", format!("wal={position}"))],
            )
                .into_response()
        }
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

#[derive(Clone)]
struct Reader {
    client: Arc<Client>,
    arrivals: Arc<Arrivals>,
}

async fn get_user(State(r): State<Reader>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    r.arrivals.record(&id, &headers);
    match r
        .client
        .query_opt("SELECT v FROM users WHERE id = $1", &[&id])
        .await
    {
        Ok(Some(row)) => (StatusCode::OK, row.get::<_, String>(0)).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

impl PgApp {
    async fn start(
        primary: &str,
        standby: &str,
        stop: &CancellationToken,
    ) -> Result<PgApp, String> {
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(connect(primary).await?);
        }
        let writers = Writers {
            clients: Arc::new(clients),
            next: Arc::default(),
        };
        let arrivals = Arc::new(Arrivals::default());
        let reader = Reader {
            client: Arc::new(connect(standby).await?),
            arrivals: arrivals.clone(),
        };
        let primary_reader = Reader {
            client: Arc::new(connect(primary).await?),
            arrivals: Arc::default(),
        };
        let commands = Router::new()
            .route("/users/{id}", axum::routing::put(put_user))
            .with_state(writers);
        let view = Router::new()
            .route("/users/{id}", get(get_user))
            .with_state(reader);
        let primary_view = Router::new()
            .route("/users/{id}", get(get_user))
            .with_state(primary_reader);
        Ok(PgApp {
            commands: serve(commands, stop).await?,
            view: serve(view, stop).await?,
            primary_view: serve(primary_view, stop).await?,
            arrivals,
        })
    }
}

/// Polls the standby's replay LSN every `period` until `stop`; returns the polls made.
async fn watch_replay(
    client: Client,
    period: Duration,
    timeline: Arc<Timeline>,
    stop: CancellationToken,
) -> u64 {
    let mut polls = 0;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return polls,
            _ = tick.tick() => {}
        }
        if let Ok(row) = client
            .query_one("SELECT pg_last_wal_replay_lsn()", &[])
            .await
        {
            polls += 1;
            if let Some(l) = row.get::<_, Option<PgLsn>>(0) {
                timeline.push(lsn(l), Instant::now());
            }
        }
    }
}

/// Counts the gateway's statements in a server's log (only its sessions log them).
struct Counter<'a> {
    server: &'a pg::Postgres,
    offset: usize,
    at: Instant,
}

impl<'a> Counter<'a> {
    fn start(server: &'a pg::Postgres) -> Counter<'a> {
        Counter {
            offset: server.log().len(),
            at: Instant::now(),
            server,
        }
    }

    fn rate(&self, phase: &str) -> Rate {
        let seconds = self.at.elapsed().as_secs_f64();
        let log = self.server.log();
        let new = log.get(self.offset..).unwrap_or("");
        let statements = new
            .lines()
            .filter(|l| l.contains("LOG:  execute ") || l.contains("LOG:  statement: "))
            .count();
        Rate {
            phase: phase.to_string(),
            seconds,
            statements: statements as u64,
            statements_per_s: statements as f64 / seconds,
        }
    }
}

fn pg_gateway_toml(
    (proxy, admin): (SocketAddr, SocketAddr),
    primary_port: u16,
    standby_port: u16,
    app: &PgApp,
) -> String {
    format!(
        r#"[server]
listen = "{proxy}"
admin_listen = "{admin}"

[token]
secret_env = "TIDEMARK_SECRET"

[store]
backend = "memory"

[databases.primary]
url = "postgres://postgres@127.0.0.1:{primary_port}/postgres"
[databases.replica]
url = "postgres://postgres@127.0.0.1:{standby_port}/postgres"

[upstreams.commands]
url = "http://{commands}"
pool_max_idle = 256
[upstreams.view]
url = "http://{view}"
pool_max_idle = 256
[upstreams.primary-view]
url = "http://{primary_view}"

[projections.app]
logs = ["wal"]
sources = ["postgres"]
[projections.app.postgres]
database = "replica"
preset = "replica-lsn"

[[routes]]
name = "write-user"
kind = "write"
methods = ["PUT"]
path = "/users/{{id}}"
upstream = "commands"
fence = {{ database = "primary", preset = "primary-lsn" }}

[[routes]]
name = "read-user"
kind = "read"
methods = ["GET"]
path = "/users/{{id}}"
upstream = "view"
projection = "app"
max_wait = "3s"
on_timeout = "primary"
primary = "primary-view"
"#,
        commands = app.commands,
        view = app.view,
        primary_view = app.primary_view,
    )
}

async fn postgres(args: &SourcesArgs) -> Result<PostgresFigures, String> {
    let delay = Duration::from_millis(args.apply_delay_ms);
    eprintln!("sources: postgres: primary + standby (apply delay {delay:?})");
    let primary = tokio::task::spawn_blocking(pg::Postgres::start)
        .await
        .map_err(|e| format!("start the primary: {e}"))?;
    primary.psql("CREATE DATABASE app");
    let app_url = |port: u16| format!("postgres://postgres@127.0.0.1:{port}/app");
    connect(&app_url(primary.port()))
        .await?
        .batch_execute("CREATE TABLE users (id text PRIMARY KEY, v text NOT NULL)")
        .await
        .map_err(|e| e.to_string())?;
    // Only the gateway's sessions (database `postgres`) log their statements.
    primary.psql("ALTER DATABASE postgres SET log_statement = 'all'");
    let server_version = primary.psql("SHOW server_version");
    // Blocks this worker for the base backup and start (a few seconds of setup).
    let standby = primary.standby(delay);
    let primary_stats = connect(&app_url(primary.port())).await?;
    let standby_stats = connect(&app_url(standby.port())).await?;
    // The standby has replayed the setup (the log setting included) before the gateway
    // opens its sessions there.
    let head: PgLsn = primary_stats
        .query_one("SELECT pg_current_wal_lsn()", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let caught_up = Instant::now() + Duration::from_secs(20);
    loop {
        let replayed: Option<PgLsn> = standby_stats
            .query_one("SELECT pg_last_wal_replay_lsn()", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if replayed.is_some_and(|r| lsn(r) >= lsn(head)) {
            break;
        }
        if Instant::now() > caught_up {
            return Err("the standby did not replay the setup within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stop = CancellationToken::new();
    let app = PgApp::start(&app_url(primary.port()), &app_url(standby.port()), &stop).await?;
    let dir = procs::scratch(&args.scratch, "postgres").map_err(|e| e.to_string())?;
    let addrs = gateway::addresses().map_err(|e| e.to_string())?;
    let toml = pg_gateway_toml(addrs, primary.port(), standby.port(), &app);
    let gw = gateway::start_toml(
        &args.gateway_bin,
        &toml,
        addrs,
        args.gateway_core,
        &dir,
        "gateway-postgres",
    )
    .await?;
    let result = postgres_phases(args, &primary, &standby, &app, &gw).await;
    stop.cancel();
    drop(gw);
    let mut figures = result?;
    figures.server_version = server_version;
    figures.apply_delay_ms = args.apply_delay_ms;
    Ok(figures)
}

async fn postgres_phases(
    args: &SourcesArgs,
    primary: &pg::Postgres,
    standby: &pg::Postgres,
    app: &PgApp,
    gw: &Gateway,
) -> Result<PostgresFigures, String> {
    let mut f = PostgresFigures::default();
    // A first write so the gateway's pools are open before the idle phase counts.
    let mut s = None;
    exchange(
        &mut s,
        gw.proxy,
        Method::PUT,
        "/users/warm",
        &[],
        Bytes::from("w"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    eprintln!("sources: postgres: idle {} s", args.idle_s);
    let (p, s) = (Counter::start(primary), Counter::start(standby));
    tokio::time::sleep(Duration::from_secs_f64(args.idle_s)).await;
    f.primary_rates.push(p.rate("idle"));
    f.standby_rates.push(s.rate("idle"));

    eprintln!(
        "sources: postgres: {} pairs/s for {} s (watcher every {} ms)",
        args.rate, args.load_s, args.watch_ms
    );
    let timeline = Arc::new(Timeline::default());
    let watch_stop = CancellationToken::new();
    let watcher = tokio::spawn(watch_replay(
        connect(&format!(
            "postgres://postgres@127.0.0.1:{}/app",
            standby.port()
        ))
        .await?,
        Duration::from_millis(args.watch_ms.max(1)),
        timeline.clone(),
        watch_stop.clone(),
    ));
    let (p, s) = (Counter::start(primary), Counter::start(standby));
    let (done, errors, not_sent, elapsed) = pairs(gw.proxy, "pg", args.rate, args.load_s).await;
    let mut load = p.rate("pairs");
    load.phase = format!("{} pairs/s", args.rate);
    f.primary_rates.push(load);
    let mut load = s.rate("pairs");
    load.phase = format!("{} pairs/s (held reads never query)", args.rate);
    f.standby_rates.push(load);
    watch_stop.cancel();
    f.watcher_polls = watcher.await.unwrap_or(0);
    f.pairs = pair_figures(
        &done,
        (args.rate * args.load_s).round() as u64,
        errors,
        not_sent,
        elapsed,
        |id| app.arrivals.get(id).and_then(|n| timeline.reached(n)),
        Some(Duration::from_millis(args.apply_delay_ms)),
    );
    eprintln!(
        "sources: postgres: {} pairs, {} stale, {} errors; held {} above replay p50 {:.2} ms p99 {:.2} ms",
        f.pairs.completed,
        f.pairs.stale,
        f.pairs.errors,
        f.pairs.held,
        f.pairs.overhead.p50_us as f64 / 1000.0,
        f.pairs.overhead.p99_us as f64 / 1000.0
    );

    eprintln!(
        "sources: postgres: fence cost, {} writes/s for {} s",
        args.write_rate, args.write_s
    );
    let (p, s) = (Counter::start(primary), Counter::start(standby));
    f.fence = fence_cost(gw.proxy, app.commands, args.write_rate, args.write_s).await;
    let mut load = p.rate("writes");
    load.phase = format!(
        "{:.0} writes/s, {:.0} of them fenced",
        args.write_rate,
        args.write_rate / 3.0
    );
    f.primary_rates.push(load);
    let mut load = s.rate("writes");
    load.phase = format!("{:.0} writes/s", args.write_rate);
    f.standby_rates.push(load);
    eprintln!(
        "sources: postgres: write p50/p99 ms: fenced {:.2}/{:.2}, Write-Position {:.2}/{:.2}, direct {:.2}/{:.2}",
        f.fence.fenced.p50_us as f64 / 1000.0,
        f.fence.fenced.p99_us as f64 / 1000.0,
        f.fence.positioned.p50_us as f64 / 1000.0,
        f.fence.positioned.p99_us as f64 / 1000.0,
        f.fence.direct.p50_us as f64 / 1000.0,
        f.fence.direct.p99_us as f64 / 1000.0,
    );
    for (db, rates) in [("primary", &f.primary_rates), ("standby", &f.standby_rates)] {
        for r in rates {
            eprintln!(
                "sources: postgres: {db} db postgres, {}: {:.1} statements/s ({} in {:.1} s)",
                r.phase, r.statements_per_s, r.statements, r.seconds
            );
        }
    }
    if let Ok(m) = net::once(Method::GET, gw.admin, "/metrics", &[], "").await {
        let text = String::from_utf8_lossy(&m.body);
        f.gateway_fences = metric_sum(&text, "tidemark_fence_seconds_count");
        f.gateway_fence_fallbacks = metric_sum(&text, "tidemark_fence_fallbacks_total");
    }
    f.fenced_writes_sent = 1 + f.pairs.completed + f.fence.fenced.count;
    Ok(f)
}

/// Writes only, arrival `i` on variant `i % 3`: fenced, positioned, direct.
async fn fence_cost(gw: SocketAddr, direct: SocketAddr, rate: f64, seconds: f64) -> FenceFigures {
    let n = (rate * seconds).round() as usize;
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start + Duration::from_secs_f64(seconds) + DRAIN;
    let mut tasks = Vec::new();
    for w in 0..WORKERS.min(n.max(1)) {
        tasks.push(tokio::spawn(async move {
            let mut hists = [stats::histogram(), stats::histogram(), stats::histogram()];
            let (mut to_gw, mut to_direct) = (None, None);
            let (mut errors, mut not_sent, mut without_token) = (0u64, 0u64, 0u64);
            for i in (w..n).step_by(WORKERS) {
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                if at.max(Instant::now()) > deadline {
                    not_sent += 1;
                    continue;
                }
                sleep_until(at).await;
                let variant = i % 3;
                let path = format!("/users/fence-{i}");
                let (sender, addr, headers): (_, _, &[(&str, &str)]) = match variant {
                    0 => (&mut to_gw, gw, &[]),
                    1 => (&mut to_gw, gw, &[("x-answer-position", "1")]),
                    _ => (&mut to_direct, direct, &[("x-answer-position", "1")]),
                };
                let sent = Instant::now();
                let r = exchange(sender, addr, Method::PUT, &path, headers, Bytes::from("f")).await;
                let took = sent.elapsed();
                match r {
                    Some(r) if r.status.is_success() => {
                        if variant == 0 && r.header("consistency-token").is_none() {
                            without_token += 1;
                        }
                        stats::record(&mut hists[variant], us(took));
                    }
                    _ => errors += 1,
                }
            }
            (hists, errors, not_sent, without_token)
        }));
    }
    let mut hists: [Histogram<u64>; 3] =
        [stats::histogram(), stats::histogram(), stats::histogram()];
    let mut f = FenceFigures::default();
    for t in tasks {
        if let Ok((h, e, ns, wt)) = t.await {
            for (all, one) in hists.iter_mut().zip(h.iter()) {
                let _ = all.add(one);
            }
            f.errors += e;
            f.not_sent += ns;
            f.without_token += wt;
        }
    }
    f.elapsed_s = start.elapsed().as_secs_f64();
    f.fenced = stats::summary(&hists[0]);
    f.positioned = stats::summary(&hists[1]);
    f.direct = stats::summary(&hists[2]);
    f.fence_cost_p50_us = f.fenced.p50_us as i64 - f.positioned.p50_us as i64;
    f.fence_cost_p99_us = f.fenced.p99_us as i64 - f.positioned.p99_us as i64;
    f
}

// ---------------------------------------------------------------- NATS

/// `nats-server -js` with monitoring, on free loopback ports.
struct NatsServer {
    _proc: Proc,
    port: u16,
    monitor: SocketAddr,
}

fn nats_binary() -> String {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()))
        .unwrap_or(false);
    if on_path || !FsPath::new("/usr/sbin/nats-server").is_file() {
        "nats-server".into()
    } else {
        "/usr/sbin/nats-server".into()
    }
}

async fn start_nats(dir: &FsPath) -> Result<NatsServer, String> {
    for attempt in 0..10 {
        let port = procs::free_port().map_err(|e| e.to_string())?;
        let mport = procs::free_port().map_err(|e| e.to_string())?;
        let store = dir.join(format!("store-{attempt}"));
        let args: Vec<String> = vec![
            "-js".into(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            mport.to_string(),
            "-sd".into(),
            store.display().to_string(),
        ];
        let mut proc = Proc::spawn(
            "nats-server",
            &nats_binary(),
            &args,
            &[],
            None,
            &dir.join(format!("nats-{attempt}.log")),
        )
        .map_err(|e| format!("run nats-server (is the nats-server package installed?): {e}"))?;
        let monitor = SocketAddr::from(([127, 0, 0, 1], mport));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && proc.running() {
            if let Ok(r) = net::once(Method::GET, monitor, "/varz", &[], "").await {
                if r.status.is_success()
                    && procs::wait_listening(
                        SocketAddr::from(([127, 0, 0, 1], port)),
                        Duration::from_secs(1),
                    )
                    .await
                {
                    return Ok(NatsServer {
                        _proc: proc,
                        port,
                        monitor,
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    Err("nats-server did not start on a free port in 10 attempts".into())
}

/// user id -> value.
type Model = Arc<Mutex<HashMap<String, String>>>;

struct NatsApp {
    commands: SocketAddr,
    view: SocketAddr,
    applied: Arc<Timeline>,
    arrivals: Arc<Arrivals>,
}

#[derive(Clone)]
struct NatsCommands {
    js: jetstream::Context,
    written: Model,
}

async fn nats_put(
    State(s): State<NatsCommands>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    let ack = async {
        s.js.publish(format!("users.{id}"), body.clone().into())
            .await?
            .await
    };
    match tokio::time::timeout(Duration::from_secs(2), ack).await {
        Ok(Ok(_)) => {
            s.written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, body);
            StatusCode::NO_CONTENT
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn nats_get_written(State(s): State<NatsCommands>, Path(id): Path<String>) -> Response {
    let v = s
        .written
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
        .cloned();
    match v {
        Some(v) => (StatusCode::OK, v).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Clone)]
struct NatsView {
    model: Model,
    arrivals: Arc<Arrivals>,
}

async fn nats_get(
    State(s): State<NatsView>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    s.arrivals.record(&id, &headers);
    let v = s
        .model
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
        .cloned();
    match v {
        Some(v) => (StatusCode::OK, v).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The projector: applies each message `lag` after its publish, double-acks it and
/// records the instant the server confirmed the ack.
async fn nats_project(
    consumer: jetstream::consumer::PullConsumer,
    model: Model,
    applied: Arc<Timeline>,
    lag: Duration,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let Ok(mut messages) = consumer.messages().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = messages.next() => next,
            };
            let Some(Ok(message)) = next else { break };
            let Ok(info) = message.info() else { continue };
            let sequence = info.stream_sequence;
            let due = std::time::SystemTime::from(info.published) + lag;
            let wait = due
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(wait).await;
            let id = message
                .subject
                .as_str()
                .strip_prefix("users.")
                .unwrap_or_default()
                .to_string();
            let value = String::from_utf8_lossy(&message.payload).into_owned();
            model
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, value);
            if message.double_ack().await.is_ok() {
                applied.push(sequence, Instant::now());
            }
        }
    }
}

impl NatsApp {
    async fn start(url: &str, lag: Duration, stop: &CancellationToken) -> Result<NatsApp, String> {
        let client = async_nats::ConnectOptions::new()
            .name(APP_CONNECTION)
            .connect(url)
            .await
            .map_err(|e| format!("connect {url}: {e}"))?;
        let js = jetstream::new(client);
        let stream = js
            .create_stream(jetstream::stream::Config {
                name: "USERS".into(),
                subjects: vec!["users.>".into()],
                ..Default::default()
            })
            .await
            .map_err(|e| format!("create stream: {e}"))?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("users-view".into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(10),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("create consumer: {e}"))?;
        let model = Model::default();
        let applied = Arc::new(Timeline::default());
        let arrivals = Arc::new(Arrivals::default());
        tokio::spawn(nats_project(
            consumer,
            model.clone(),
            applied.clone(),
            lag,
            stop.clone(),
        ));
        let commands = Router::new()
            .route("/users/{id}", get(nats_get_written).put(nats_put))
            .with_state(NatsCommands {
                js,
                written: Model::default(),
            });
        let view = Router::new()
            .route("/users/{id}", get(nats_get))
            .with_state(NatsView {
                model,
                arrivals: arrivals.clone(),
            });
        Ok(NatsApp {
            commands: serve(commands, stop).await?,
            view: serve(view, stop).await?,
            applied,
            arrivals,
        })
    }
}

/// (gateway connections' `in_msgs`, server `in_msgs`) now.
async fn broker_counts(monitor: SocketAddr) -> Result<(u64, u64), String> {
    let connz = net::once(Method::GET, monitor, "/connz?limit=1024", &[], "")
        .await
        .map_err(|e| format!("/connz: {e}"))?
        .json();
    let gateway: u64 = connz["connections"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["name"].as_str() != Some(APP_CONNECTION))
                .filter_map(|c| c["in_msgs"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    let varz = net::once(Method::GET, monitor, "/varz", &[], "")
        .await
        .map_err(|e| format!("/varz: {e}"))?
        .json();
    Ok((gateway, varz["in_msgs"].as_u64().unwrap_or(0)))
}

async fn broker_rate(
    monitor: SocketAddr,
    phase: String,
    before: (u64, u64),
    at: Instant,
) -> Result<BrokerRate, String> {
    let after = broker_counts(monitor).await?;
    let seconds = at.elapsed().as_secs_f64();
    Ok(BrokerRate {
        phase,
        seconds,
        gateway_requests_per_s: after.0.saturating_sub(before.0) as f64 / seconds,
        server_in_msgs_per_s: after.1.saturating_sub(before.1) as f64 / seconds,
    })
}

fn nats_gateway_toml((proxy, admin): (SocketAddr, SocketAddr), port: u16, app: &NatsApp) -> String {
    format!(
        r#"[server]
listen = "{proxy}"
admin_listen = "{admin}"

[token]
secret_env = "TIDEMARK_SECRET"

[store]
backend = "memory"

[nats]
url = "nats://127.0.0.1:{port}"

[upstreams.commands]
url = "http://{commands}"
pool_max_idle = 256
[upstreams.view]
url = "http://{view}"
pool_max_idle = 256

[projections.users]
logs = ["users"]
sources = ["nats"]
[projections.users.nats]
stream = "USERS"
consumer = "users-view"

[[routes]]
name = "write-user"
kind = "write"
methods = ["PUT"]
path = "/users/{{id}}"
upstream = "commands"
fence = {{ nats_stream = "USERS", log = "users" }}

[[routes]]
name = "read-user"
kind = "read"
methods = ["GET"]
path = "/users/{{id}}"
upstream = "view"
projection = "users"
max_wait = "3s"
on_timeout = "primary"
primary = "commands"
"#,
        commands = app.commands,
        view = app.view,
    )
}

async fn nats(args: &SourcesArgs) -> Result<NatsFigures, String> {
    let lag = Duration::from_millis(args.nats_lag_ms);
    let dir = procs::scratch(&args.scratch, "nats").map_err(|e| e.to_string())?;
    eprintln!("sources: nats: nats-server -js, projector lag {lag:?}");
    let server = start_nats(&dir).await?;
    let mut f = NatsFigures {
        server_version: procs::version_of(&nats_binary(), &["--version"]),
        lag_ms: args.nats_lag_ms,
        ..Default::default()
    };
    let stop = CancellationToken::new();
    let app = NatsApp::start(&format!("nats://127.0.0.1:{}", server.port), lag, &stop).await?;
    let addrs = gateway::addresses().map_err(|e| e.to_string())?;
    let toml = nats_gateway_toml(addrs, server.port, &app);
    let gw = gateway::start_toml(
        &args.gateway_bin,
        &toml,
        addrs,
        args.gateway_core,
        &dir,
        "gateway-nats",
    )
    .await?;
    let result = async {
        let mut s = None;
        exchange(&mut s, gw.proxy, Method::PUT, "/users/warm", &[], Bytes::from("w")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;

        eprintln!("sources: nats: idle {} s", args.idle_s);
        let (before, at) = (broker_counts(server.monitor).await?, Instant::now());
        tokio::time::sleep(Duration::from_secs_f64(args.idle_s)).await;
        f.rates
            .push(broker_rate(server.monitor, "idle".into(), before, at).await?);

        eprintln!("sources: nats: {} pairs/s for {} s", args.rate, args.load_s);
        let (before, at) = (broker_counts(server.monitor).await?, Instant::now());
        let (done, errors, not_sent, elapsed) =
            pairs(gw.proxy, "nats", args.rate, args.load_s).await;
        f.rates.push(
            broker_rate(
                server.monitor,
                format!("{} pairs/s", args.rate),
                before,
                at,
            )
            .await?,
        );
        f.pairs = pair_figures(
            &done,
            (args.rate * args.load_s).round() as u64,
            errors,
            not_sent,
            elapsed,
            |id| app.arrivals.get(id).and_then(|n| app.applied.reached(n)),
            None,
        );
        eprintln!(
            "sources: nats: {} pairs, {} stale, {} errors; held {} above the ack p50 {:.2} ms p99 {:.2} ms",
            f.pairs.completed,
            f.pairs.stale,
            f.pairs.errors,
            f.pairs.held,
            f.pairs.overhead.p50_us as f64 / 1000.0,
            f.pairs.overhead.p99_us as f64 / 1000.0
        );
        for r in &f.rates {
            eprintln!(
                "sources: nats: {}: gateway {:.1} requests/s, server in_msgs {:.1}/s",
                r.phase, r.gateway_requests_per_s, r.server_in_msgs_per_s
            );
        }
        Ok::<(), String>(())
    }
    .await;
    stop.cancel();
    drop(gw);
    result?;
    Ok(f)
}
