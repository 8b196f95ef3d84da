//! The history test (issue 10, item 12): several client sessions and two gateways
//! (child processes of the built binary) on a real Redis, writes and reads of a small
//! shared key space through random gateways, while faults are injected: SIGHUP
//! reloads (that change the projection), a gateway SIGKILLed and restarted, Redis
//! killed and restarted empty, a gateway paused with SIGSTOP then SIGCONT. Every
//! session carries its newest token, as a client does. At the end, the whole history
//! is checked per session: read-your-writes and monotonic reads.
//!
//! The backend is the example CQRS service (`tidemark::demo`): a command service
//! answering `Write-Position`, read instances whose projectors lag; a projector
//! stand-in reports each instance's checkpoint to Redis with the documented Lua recipe
//! (the only checkpoint source). Read routes use `on_timeout = "error"` (a 503 carries
//! no data, so the check is strict) and `monotonic = true`.
//!
//! Seeded: `HISTORY_SEED=<n>` replays a run's operations and fault schedule (timing
//! still varies); the seed is printed at the start and in every failure.
//! `HISTORY_SECS` sets each run's length (default 8 s).

#[path = "support/redis_server.rs"]
mod redis_server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use redis_server::{free_port, RedisServer};
use tidemark::demo::{instance_name, Backend, BackendOptions};
use tidemark::store::redis::CHECKPOINT_SCRIPT;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Client sessions running at once.
const SESSIONS: usize = 6;
/// The shared key space: user ids `0..KEYS`.
const KEYS: u64 = 4;
/// A client gives up on one attempt after this (a paused gateway answers nothing)...
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// ...and on an operation after this many attempts, alternating gateways.
const ATTEMPTS: usize = 6;
/// How long a gateway may take to (re)start answering `/readyz`.
const START_DEADLINE: Duration = Duration::from_secs(15);

fn seed() -> u64 {
    std::env::var("HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen())
}

fn run_length() -> Duration {
    let secs = std::env::var("HISTORY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    Duration::from_secs(secs)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One answer, read whole.
struct Answer {
    status: StatusCode,
    source: Option<String>,
    token: Option<String>,
    problem: Option<String>,
    version: u64,
}

/// One request with the attempt timeout; `None`: no answer (refused, reset, timed out).
async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> Option<Answer> {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        req = req.header("consistency-token", token);
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).ok()?;
    let exchange = async {
        let resp = client.request(req).await.ok()?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some((parts, body))
    };
    let (parts, body) = tokio::time::timeout(ATTEMPT_TIMEOUT, exchange)
        .await
        .ok()??;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Some(Answer {
        status: parts.status,
        source: header("consistency-source"),
        token: header("consistency-token"),
        problem: json["type"].as_str().map(str::to_string),
        version: if parts.status == StatusCode::OK {
            json["version"].as_u64().unwrap_or(0)
        } else {
            0
        },
    })
}

/// A gateway child process and the config file it runs.
struct Gateway {
    name: String,
    config: PathBuf,
    port: u16,
    admin: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Gateway {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("gateway log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the tidemark binary");
        self.child = Some(child);
    }

    /// Waits until the admin listener answers `/readyz` 200.
    async fn wait_ready(&self, client: &HttpClient) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin);
        let end = Instant::now() + START_DEADLINE;
        loop {
            if let Some(a) = send(client, Method::GET, &url, None, "").await {
                if a.status == StatusCode::OK {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "gateway {} not ready within {START_DEADLINE:?}; log {}:\n{}",
                self.name,
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`HUP`, `STOP`, `CONT`) with `kill`; false when it failed.
    fn signal(&self, signal: &str) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Never leave a paused child behind.
        let _ = self.signal("CONT");
        self.kill();
    }
}

/// The gateway config: `logs` of the projection toggles on each SIGHUP reload.
fn gateway_config(
    dir: &Path,
    port: u16,
    admin: u16,
    redis: &str,
    backend: &Backend,
    logs: &str,
) -> String {
    let instances: Vec<String> = backend
        .read_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{} = \"http://{a}\"", instance_name(i)))
        .collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[token]
secret_file = "{dir}/k1.secret"

[store]
backend = "redis"
redis_url = "{redis}"
connect_timeout = "200ms"
response_timeout = "200ms"
resync_interval = "300ms"

[upstreams.commands]
url = "http://{cmd}"

[upstreams.view]
instances = {{ {instances} }}

[projections.users]
logs = {logs}
sources = ["redis"]

[[routes]]
name = "write-user"
kind = "write"
path = "/users/{{id}}"
upstream = "commands"
default_log = "users"
cache = {{ key = "user:{{id}}", ttl = "30s" }}

[[routes]]
name = "read-user"
kind = "read"
path = "/users/{{id}}"
upstream = "view"
projection = "users"
max_wait = "400ms"
on_timeout = "error"
monotonic = true
cache = {{ key = "user:{{id}}" }}
"#,
        dir = dir.display(),
        cmd = backend.command_addr,
        instances = instances.join(", "),
    )
}

/// A projector stand-in: reports instance `index`'s checkpoint to Redis with the
/// documented recipe each time it moves (and again after a failed report).
async fn report_checkpoints(
    backend: Arc<Backend>,
    index: usize,
    redis_url: String,
    stop: CancellationToken,
) {
    let client = redis::Client::open(redis_url.as_str()).expect("redis url");
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut reported = 0u64;
    let instance = instance_name(index);
    while !stop.is_cancelled() {
        let now = backend.checkpoint(index).unwrap_or(0);
        if now == reported {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = backend.wait_checkpoint(index, reported + 1) => {}
                // Re-report now and then: Redis may have restarted empty.
                _ = tokio::time::sleep(Duration::from_millis(200)) => reported = 0,
            }
            continue;
        }
        if conn.is_none() {
            conn = tokio::time::timeout(
                Duration::from_millis(300),
                client.get_multiplexed_async_connection(),
            )
            .await
            .ok()
            .and_then(Result::ok);
        }
        let Some(c) = conn.as_mut() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut eval = redis::cmd("EVAL");
        eval.arg(CHECKPOINT_SCRIPT)
            .arg(1)
            .arg("tidemark:cp:{users}")
            .arg("tidemark:checkpoints")
            .arg("users")
            .arg(&instance)
            .arg("users")
            .arg(now);
        match tokio::time::timeout(Duration::from_millis(300), eval.query_async::<u64>(c)).await {
            Ok(Ok(_)) => reported = now,
            _ => {
                conn = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a session saw, to check at the end.
#[derive(Default)]
struct Session {
    token: Option<String>,
    /// Per key: the newest version this session wrote.
    written: HashMap<u64, u64>,
    /// Per key: the newest version this session read.
    read: HashMap<u64, u64>,
    violations: Vec<String>,
    reads_checked: u64,
    writes: u64,
    timeouts: u64,
    unanswered: u64,
}

/// One client session until `until`: random writes and reads through random
/// gateways, retrying on the other gateway when one does not answer.
async fn session(id: usize, seed: u64, urls: [String; 2], until: Instant) -> Session {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut s = Session::default();
    let mut op = 0u64;
    while Instant::now() < until && op < 10_000 {
        op += 1;
        let key = rng.gen_range(0..KEYS);
        let write = rng.gen_bool(0.35);
        let mut gateway = rng.gen_range(0..2usize);
        let mut answer = None;
        for attempt in 0..ATTEMPTS {
            let url = format!("{}/users/{key}", urls[gateway]);
            let a = if write {
                let body = format!("{{\"session\": {id}, \"op\": {op}}}");
                send(&client, Method::PUT, &url, s.token.as_deref(), &body).await
            } else {
                send(&client, Method::GET, &url, s.token.as_deref(), "").await
            };
            match a {
                // Answered by the gateway (a 503 hold timeout is an answer, too).
                Some(a)
                    if a.status == StatusCode::OK
                        || a.status == StatusCode::NOT_FOUND
                        || a.problem.as_deref()
                            == Some("urn:tidemark:problem:consistency-timeout") =>
                {
                    answer = Some(a);
                    break;
                }
                // Refused, reset, timed out, or a gateway that is starting or
                // stopping: a client behind a load balancer tries the other one.
                _ => {
                    gateway = 1 - gateway;
                    if attempt % 2 == 1 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        let Some(a) = answer else {
            s.unanswered += 1;
            continue;
        };
        if let Some(token) = &a.token {
            s.token = Some(token.clone());
        }
        if write {
            if a.status == StatusCode::OK && a.version > 0 {
                s.writes += 1;
                let w = s.written.entry(key).or_default();
                *w = (*w).max(a.version);
            }
            continue;
        }
        if a.status == StatusCode::SERVICE_UNAVAILABLE {
            // `on_timeout = "error"`: allowed, carries no data.
            s.timeouts += 1;
            continue;
        }
        let source = a.source.clone().unwrap_or_default();
        let wrote = s.written.get(&key).copied().unwrap_or(0);
        let seen = s.read.get(&key).copied().unwrap_or(0);
        if !matches!(source.as_str(), "projection" | "cache" | "primary") {
            s.violations.push(format!(
                "session {id} op {op}: read of key {key} answered {} as {source:?}",
                a.status
            ));
        }
        if a.version < wrote {
            s.violations.push(format!(
                "session {id} op {op}: read-your-writes: key {key} read version {} ({source}) after writing version {wrote}",
                a.version
            ));
        }
        if a.version < seen {
            s.violations.push(format!(
                "session {id} op {op}: monotonic reads: key {key} read version {} ({source}) after reading version {seen}",
                a.version
            ));
        }
        s.read.insert(key, a.version.max(seen));
        s.reads_checked += 1;
    }
    s
}

/// The faults, in order: each kind once (shuffled), then random ones.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Reload,
    KillGateway,
    RestartRedisEmpty,
    PauseGateway,
}

/// One run: `instances` read replicas (instance `i` lags `lag * (i + 1)`).
async fn run(name: &str, instances: usize, lag: Duration) {
    let seed = seed();
    eprintln!("history {name}: HISTORY_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("k1.secret"),
        "history-secret-0123456789abcdef-0123",
    )
    .unwrap();
    let redis = Arc::new(Mutex::new(RedisServer::start()));
    let redis_url = redis.lock().await.url();
    let stop = CancellationToken::new();
    let backend = Arc::new(
        Backend::start(
            BackendOptions {
                lag,
                push: None,
                checkpoint_header: false,
                read_instances: instances,
            },
            stop.clone(),
        )
        .await
        .unwrap(),
    );
    for i in 0..instances {
        tokio::spawn(report_checkpoints(
            backend.clone(),
            i,
            redis_url.clone(),
            stop.clone(),
        ));
    }
    let logs_variants = [r#"["users"]"#, r#"["users", "audit"]"#];
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut gateways = Vec::new();
    for g in 0..2 {
        let (port, admin) = (free_port(), free_port());
        let config = dir.path().join(format!("g{g}.toml"));
        let text = gateway_config(
            dir.path(),
            port,
            admin,
            &redis_url,
            &backend,
            logs_variants[0],
        );
        std::fs::write(&config, text).unwrap();
        let mut gw = Gateway {
            name: format!("g{g}"),
            config,
            port,
            admin,
            log: dir.path().join(format!("g{g}.log")),
            child: None,
        };
        gw.spawn();
        gateways.push(gw);
    }
    for gw in &gateways {
        gw.wait_ready(&client).await;
    }
    let urls = [gateways[0].url(""), gateways[1].url("")];

    let until = Instant::now() + run_length();
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|i| tokio::spawn(session(i, seed, urls.clone(), until)))
        .collect();

    // The faults, one at a time, until the sessions stop.
    const ALL_FAULTS: [Fault; 4] = [
        Fault::Reload,
        Fault::KillGateway,
        Fault::RestartRedisEmpty,
        Fault::PauseGateway,
    ];
    let mut faults = ALL_FAULTS;
    faults.shuffle(&mut rng);
    let mut logs_of = [0usize; 2];
    let mut injected = Vec::new();
    for step in 0..64 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..600))).await;
        if Instant::now() + Duration::from_millis(500) >= until {
            break;
        }
        let fault = faults
            .get(step)
            .copied()
            .unwrap_or_else(|| ALL_FAULTS[rng.gen_range(0..4)]);
        let g = rng.gen_range(0..2usize);
        injected.push(format!("{fault:?}(g{g})"));
        match fault {
            Fault::Reload => {
                // The projection's logs change, so the reload replaces it.
                logs_of[g] = 1 - logs_of[g];
                let gw = &gateways[g];
                let text = gateway_config(
                    dir.path(),
                    gw.port,
                    gw.admin,
                    &redis_url,
                    &backend,
                    logs_variants[logs_of[g]],
                );
                std::fs::write(&gw.config, text).unwrap();
                assert!(gw.signal("HUP"), "SIGHUP to {}", gw.name);
            }
            Fault::KillGateway => {
                gateways[g].kill();
                tokio::time::sleep(Duration::from_millis(rng.gen_range(50..300))).await;
                gateways[g].spawn();
                gateways[g].wait_ready(&client).await;
            }
            Fault::RestartRedisEmpty => {
                let redis = redis.clone();
                let down = Duration::from_millis(rng.gen_range(50..400));
                tokio::task::spawn_blocking(move || {
                    let mut r = redis.blocking_lock();
                    r.kill();
                    std::thread::sleep(down);
                    r.restart();
                })
                .await
                .unwrap();
            }
            Fault::PauseGateway => {
                assert!(gateways[g].signal("STOP"), "SIGSTOP to g{g}");
                tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1200))).await;
                assert!(gateways[g].signal("CONT"), "SIGCONT to g{g}");
            }
        }
    }

    let mut all = Session::default();
    let mut violations = Vec::new();
    for s in sessions {
        let s = s.await.expect("session task");
        violations.extend(s.violations);
        all.reads_checked += s.reads_checked;
        all.writes += s.writes;
        all.timeouts += s.timeouts;
        all.unanswered += s.unanswered;
    }
    stop.cancel();
    let summary = format!(
        "history {name}: HISTORY_SEED={seed}: {} reads checked, {} writes, {} hold timeouts, {} unanswered; faults: {}",
        all.reads_checked,
        all.writes,
        all.timeouts,
        all.unanswered,
        injected.join(", ")
    );
    eprintln!("{summary}");
    assert!(
        violations.is_empty(),
        "{summary}\n{} violation(s), first ones:\n{}",
        violations.len(),
        violations
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        all.reads_checked >= 50 && all.writes >= 20,
        "{summary}: too few operations to say anything"
    );
    assert!(injected.len() >= 4, "{summary}: every kind of fault ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_and_monotonic_reads_hold_under_faults() {
    run("one replica", 1, Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monotonic_reads_hold_across_two_replicas_at_different_lags() {
    run("two replicas", 2, Duration::from_millis(150)).await;
}
