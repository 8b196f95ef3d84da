//! The Redis store against real `redis-server` processes (see `support/redis_server.rs`):
//! checkpoints shared between gateways, the projector recipe, faults (Redis killed,
//! restarted empty, paused, down at start-up), the shared cache, and Redis Cluster.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::future::Future;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis_server::{RedisCluster, RedisServer};
use tidemark::cache::CachedResponse;
use tidemark::config::{CacheScope, RedisConfig, RedisTarget};
use tidemark::position::PositionVector;
use tidemark::store::redis::{CheckpointSink, RedisStore, CHECKPOINT_SCRIPT};
use tidemark::store::StoreError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const PROJECTION: &str = "user-view";
const HASH: &str = "tidemark:cp:{user-view}";
const CHANNEL: &str = "tidemark:checkpoints";
/// Every wait on a condition gives up after this.
const DEADLINE: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);
/// How much later than the response timeout a failing call may return (scheduling
/// slack on a loaded 2-core CI machine); a hang would blow far past it.
const SLACK: Duration = Duration::from_millis(500);

/// A checkpoint registry stand-in: monotonic per (projection, instance), knows only
/// `user-view`.
#[derive(Default)]
struct TestSink {
    state: Mutex<BTreeMap<(String, Option<String>), PositionVector>>,
}

impl TestSink {
    fn get(&self, instance: Option<&str>) -> Option<PositionVector> {
        let state = self.state.lock().expect("sink lock");
        state
            .get(&(PROJECTION.to_owned(), instance.map(str::to_owned)))
            .cloned()
    }

    fn position(&self, instance: Option<&str>, log: &str) -> Option<u64> {
        self.get(instance).and_then(|cp| cp.get(log))
    }

    fn preload(&self, instance: Option<&str>, text: &str) {
        self.apply(PROJECTION, instance, &vector(text));
    }

    fn projections_seen(&self) -> Vec<String> {
        let state = self.state.lock().expect("sink lock");
        state.keys().map(|(p, _)| p.clone()).collect()
    }
}

impl CheckpointSink for TestSink {
    fn apply(&self, projection: &str, instance: Option<&str>, checkpoint: &PositionVector) {
        if projection != PROJECTION {
            return;
        }
        let mut state = self.state.lock().expect("sink lock");
        state
            .entry((projection.to_owned(), instance.map(str::to_owned)))
            .or_default()
            .merge(checkpoint);
    }

    fn snapshot(&self) -> Vec<(String, String, PositionVector)> {
        let state = self.state.lock().expect("sink lock");
        state
            .iter()
            .map(|((p, i), cp)| {
                (
                    p.clone(),
                    i.clone().unwrap_or_else(|| "*".into()),
                    cp.clone(),
                )
            })
            .collect()
    }

    fn projections(&self) -> Vec<String> {
        vec![PROJECTION.to_owned()]
    }
}

fn vector(text: &str) -> PositionVector {
    PositionVector::parse(text, None).expect("test vector")
}

fn config(target: RedisTarget, resync_interval: Duration) -> RedisConfig {
    RedisConfig {
        target,
        key_prefix: "tidemark".to_owned(),
        connect_timeout: Duration::from_millis(500),
        response_timeout: RESPONSE_TIMEOUT,
        resync_interval,
    }
}

/// A gateway's store with its sink.
struct Gateway {
    store: RedisStore,
    sink: Arc<TestSink>,
}

fn gateway_with(target: RedisTarget, resync: Duration, sink: Arc<TestSink>) -> Gateway {
    let store = RedisStore::start(
        &config(target, resync),
        sink.clone(),
        CancellationToken::new(),
    );
    Gateway { store, sink }
}

fn gateway(target: RedisTarget) -> Gateway {
    gateway_with(target, Duration::from_secs(60), Arc::default())
}

/// Waits until `ready()` holds, checking every 10 ms; fails the test after `DEADLINE`.
async fn wait_for<F, Fut>(what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    while !ready().await {
        assert!(
            Instant::now() < end,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_healthy(gateway: &Gateway) {
    wait_for("the store to become healthy", || async {
        gateway.store.healthy()
    })
    .await;
}

fn entry(body: &'static str, position: &str) -> CachedResponse {
    CachedResponse {
        status: 200,
        content_type: Some("application/json".to_owned()),
        body: Bytes::from_static(body.as_bytes()),
        position: vector(position),
        identity: ID.to_owned(),
    }
}

/// The identity every cache entry of these tests is written and read with.
const ID: &str = "identity-1";

/// Sum of `calls=` of `cmdstat_<command>` in `INFO commandstats` output.
fn command_calls(info: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .filter_map(|line| line.trim().strip_prefix(&prefix))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// Runs the documented projector recipe with `redis-cli` (EVAL of the script file).
fn projector_eval(port: u16, cluster: bool, instance: &str, pairs: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    command.arg("-p").arg(port.to_string());
    if cluster {
        command.arg("-c");
    }
    command
        .arg("EVAL")
        .arg(CHECKPOINT_SCRIPT)
        .args(["1", HASH, CHANNEL, PROJECTION, instance])
        .args(pairs);
    let output = command.output().expect("run redis-cli");
    assert!(output.status.success(), "redis-cli EVAL failed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

// ---------------------------------------------------------------- checkpoints

async fn push_reaches_other_gateway(target: RedisTarget) {
    let a = gateway(target.clone());
    let b = gateway(target);
    wait_healthy(&a).await;
    wait_healthy(&b).await;

    a.store
        .push_checkpoint(PROJECTION, None, &vector("users=12"))
        .await
        .expect("push via A");
    wait_for("B to see users=12 for every instance", || async {
        b.sink.position(None, "users") == Some(12)
    })
    .await;

    a.store
        .push_checkpoint(PROJECTION, Some("a"), &vector("users=20,orders=3"))
        .await
        .expect("push via A for instance a");
    wait_for("B to see instance a's checkpoint", || async {
        b.sink.get(Some("a")) == Some(vector("users=20,orders=3"))
    })
    .await;
    assert_eq!(
        b.sink.position(None, "users"),
        Some(12),
        "other instance untouched"
    );
}

#[tokio::test]
async fn a_push_via_one_gateway_reaches_the_other() {
    let server = RedisServer::start();
    push_reaches_other_gateway(RedisTarget::Single(server.url())).await;
}

#[tokio::test]
async fn a_push_via_one_gateway_reaches_the_other_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    push_reaches_other_gateway(RedisTarget::Cluster(cluster.urls())).await;
}

async fn max_never_lowers(target: RedisTarget, hget: impl Fn(&str) -> String) {
    let a = gateway(target.clone());
    let b = gateway(target);
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    let above_2_53 = (1u64 << 53) + 1;
    let pushes = [
        "users=10".to_owned(),
        "users=5".to_owned(),
        format!("orders={above_2_53}"),
        format!("orders={}", 1u64 << 53),
        format!("big={}", u64::MAX - 1),
        format!("big={}", u64::MAX),
        format!("big={}", u64::MAX - 2),
    ];
    for push in &pushes {
        a.store
            .push_checkpoint(PROJECTION, None, &vector(push))
            .await
            .expect("push");
    }
    assert_eq!(hget("*/users"), "10", "10 then 5 keeps 10");
    assert_eq!(hget("*/orders"), above_2_53.to_string(), "exact above 2^53");
    assert_eq!(hget("*/big"), u64::MAX.to_string(), "u64::MAX kept");
    let expected = vector(&format!("users=10,orders={above_2_53},big={}", u64::MAX));
    wait_for("B to see the maxima", || async {
        b.sink.get(None) == Some(expected.clone())
    })
    .await;
}

#[tokio::test]
async fn the_max_script_never_lowers_a_checkpoint_even_above_2_pow_53() {
    let server = RedisServer::start();
    let port = server.port();
    max_never_lowers(RedisTarget::Single(server.url()), |field| {
        redis_server::cli(port, &["HGET", HASH, field])
            .trim()
            .to_owned()
    })
    .await;
}

#[tokio::test]
async fn the_max_script_never_lowers_a_checkpoint_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    max_never_lowers(RedisTarget::Cluster(cluster.urls()), |field| {
        cluster.cli(&["HGET", HASH, field]).trim().to_owned()
    })
    .await;
}

#[tokio::test]
async fn a_projector_running_the_recipe_with_redis_cli_reaches_the_sink() {
    let server = RedisServer::start();
    let g = gateway(RedisTarget::Single(server.url()));
    wait_healthy(&g).await;

    assert_eq!(
        projector_eval(server.port(), false, "*", &["users", "42"]),
        "1"
    );
    wait_for("the sink to see the projector's users=42", || async {
        g.sink.position(None, "users") == Some(42)
    })
    .await;

    // An idle projector reporting the same position again changes nothing.
    assert_eq!(
        projector_eval(server.port(), false, "*", &["users", "42"]),
        "0"
    );

    // EVALSHA after SCRIPT LOAD, as the recipe suggests for hot paths.
    let sha = server
        .cli(&["SCRIPT", "LOAD", CHECKPOINT_SCRIPT])
        .trim()
        .to_owned();
    let raised = server.cli(&[
        "EVALSHA", &sha, "1", HASH, CHANNEL, PROJECTION, "b", "users", "43",
    ]);
    assert_eq!(raised.trim(), "1");
    wait_for("the sink to see instance b at users=43", || async {
        g.sink.position(Some("b"), "users") == Some(43)
    })
    .await;

    // Invalid input is refused as a whole.
    let refused = server.cli(&[
        "EVAL",
        CHECKPOINT_SCRIPT,
        "1",
        HASH,
        CHANNEL,
        PROJECTION,
        "*",
        "users",
        "-1",
    ]);
    assert!(refused.contains("not a decimal u64"), "{refused}");
    assert_eq!(server.cli(&["HGET", HASH, "*/users"]).trim(), "42");
}

#[tokio::test]
async fn a_projector_on_a_cluster_reaches_the_sink() {
    let cluster = RedisCluster::start(3);
    let g = gateway(RedisTarget::Cluster(cluster.urls()));
    wait_healthy(&g).await;
    // Any node: `-c` follows the redirect to the hash's slot; PUBLISH reaches every node.
    for node in cluster.nodes() {
        let _ = projector_eval(node.port(), true, "*", &["users", &node.port().to_string()]);
    }
    let highest = cluster.nodes().iter().map(|n| u64::from(n.port())).max();
    wait_for("the sink to see the highest port as position", || async {
        g.sink.position(None, "users") == highest
    })
    .await;
}

#[tokio::test]
async fn checkpoints_written_without_a_message_arrive_by_reload() {
    let server = RedisServer::start();
    // Already in Redis before the gateway starts: loaded on the first subscribe.
    server.cli(&["HSET", HASH, "*/users", "7"]);
    let g = gateway_with(
        RedisTarget::Single(server.url()),
        Duration::from_millis(200),
        Arc::default(),
    );
    wait_for("the initial reload", || async {
        g.sink.position(None, "users") == Some(7)
    })
    .await;

    // Written with no PUBLISH (a message lost while disconnected): the resync finds it.
    server.cli(&[
        "HSET",
        HASH,
        "a/users",
        "9",
        "a/orders",
        "18446744073709551615",
    ]);
    wait_for("the periodic reload", || async {
        g.sink.get(Some("a")) == Some(vector("users=9,orders=18446744073709551615"))
    })
    .await;
    assert!(g.store.healthy());
}

#[tokio::test]
async fn malformed_messages_and_fields_are_ignored() {
    let server = RedisServer::start();
    let g = gateway_with(
        RedisTarget::Single(server.url()),
        Duration::from_millis(200),
        Arc::default(),
    );
    wait_healthy(&g).await;
    server.cli(&["PUBLISH", CHANNEL, "garbage"]);
    server.cli(&["PUBLISH", CHANNEL, "user-view\n*\nusers=notanumber"]);
    server.cli(&["PUBLISH", CHANNEL, "other-projection\n*\nusers=5"]);
    server.cli(&["HSET", HASH, "nolog", "1", "*/orders", "x"]);
    server.cli(&["PUBLISH", CHANNEL, "user-view\n*\nusers=3"]);
    wait_for("the valid message", || async {
        g.sink.position(None, "users") == Some(3)
    })
    .await;
    assert_eq!(g.sink.projections_seen(), vec![PROJECTION.to_owned()]);
    assert_eq!(g.sink.position(None, "orders"), None);
    assert!(g.store.healthy(), "bad data is not an outage");
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn redis_killed_then_restarted_empty_gets_the_gateways_checkpoints_back() {
    let mut server = RedisServer::start();
    let sink = Arc::new(TestSink::default());
    // Something this gateway learned elsewhere (a push to its admin API, a header).
    sink.preload(Some("a"), "users=100,orders=18446744073709551615");
    let g = gateway_with(
        RedisTarget::Single(server.url()),
        Duration::from_secs(60),
        sink,
    );
    wait_healthy(&g).await;
    g.store
        .push_checkpoint(PROJECTION, None, &vector("users=50"))
        .await
        .expect("push while up");

    server.kill();
    let started = Instant::now();
    let result = g
        .store
        .push_checkpoint(PROJECTION, None, &vector("users=60"))
        .await;
    let took = started.elapsed();
    assert!(result.is_err(), "push while Redis is down must fail");
    assert!(
        took <= RESPONSE_TIMEOUT + SLACK,
        "failed after {took:?}, not within the response timeout"
    );
    wait_for("healthy() to go false", || async { !g.store.healthy() }).await;
    let cached = g.store.cache_get("user:1", "s1", ID).await;
    assert!(cached.is_err(), "cache reads fail too, they do not hang");

    // Restarted empty (no persistence); the gateway may already be republishing, so
    // its emptiness is not asserted here (that would race the subscriber's backoff).
    server.restart();
    wait_healthy(&g).await;
    wait_for("the gateway to republish its checkpoints", || async {
        server.cli(&["HGET", HASH, "a/orders"]).trim() == "18446744073709551615"
            && server.cli(&["HGET", HASH, "a/users"]).trim() == "100"
            && server.cli(&["HGET", HASH, "*/users"]).trim() == "50"
    })
    .await;

    // Pub/sub works again.
    assert_eq!(
        projector_eval(server.port(), false, "*", &["users", "70"]),
        "1"
    );
    wait_for("a new message after the restart", || async {
        g.sink.position(None, "users") == Some(70)
    })
    .await;
    g.store
        .push_checkpoint(PROJECTION, None, &vector("users=80"))
        .await
        .expect("push after restart");
}

#[tokio::test]
async fn redis_down_at_start_up_leaves_the_store_degraded_until_it_comes_up() {
    let mut server = RedisServer::start();
    server.kill();
    let sink = Arc::new(TestSink::default());
    sink.preload(None, "users=5");
    let g = gateway_with(
        RedisTarget::Single(server.url()),
        Duration::from_secs(60),
        sink,
    );
    assert!(!g.store.healthy());
    let started = Instant::now();
    let put = g
        .store
        .cache_put(
            "k",
            CacheScope::Global,
            "",
            entry("{}", "users=1"),
            Duration::from_secs(5),
        )
        .await;
    assert!(put.is_err());
    assert!(started.elapsed() <= RESPONSE_TIMEOUT + SLACK);

    server.restart();
    wait_healthy(&g).await;
    wait_for("the preloaded checkpoint to be published", || async {
        server.cli(&["HGET", HASH, "*/users"]).trim() == "5"
    })
    .await;
}

#[tokio::test]
async fn a_paused_redis_times_out_instead_of_blocking() {
    let server = RedisServer::start();
    let g = gateway(RedisTarget::Single(server.url()));
    wait_healthy(&g).await;
    server.cli(&["CLIENT", "PAUSE", "2000", "ALL"]);
    let started = Instant::now();
    let result = g
        .store
        .push_checkpoint(PROJECTION, None, &vector("users=1"))
        .await;
    let took = started.elapsed();
    assert!(
        matches!(
            result,
            Err(StoreError::Timeout(_)) | Err(StoreError::Redis(_))
        ),
        "{result:?}"
    );
    assert!(took <= RESPONSE_TIMEOUT + SLACK, "took {took:?}");
    assert!(
        !g.store.healthy(),
        "a Redis that does not answer is unhealthy"
    );
    server.cli(&["CLIENT", "UNPAUSE"]);
    wait_for("a push to succeed again", || async {
        g.store
            .push_checkpoint(PROJECTION, None, &vector("users=2"))
            .await
            .is_ok()
    })
    .await;
    wait_healthy(&g).await;
}

// ---------------------------------------------------------------- cache

async fn cache_scopes(g: &Gateway) {
    let ttl = Duration::from_secs(30);
    let mine = entry("{\"name\":\"mine\"}", "users=5");
    g.store
        .cache_put("user:1", CacheScope::Session, "s1", mine.clone(), ttl)
        .await
        .expect("put session");
    assert_eq!(
        g.store.cache_get("user:1", "s1", ID).await.expect("get"),
        Some(mine.clone())
    );
    assert_eq!(
        g.store.cache_get("user:1", "s2", ID).await.expect("get"),
        None,
        "other session"
    );
    assert_eq!(
        g.store.cache_get("user:2", "s1", ID).await.expect("get"),
        None,
        "other key"
    );

    let everyone = entry("{\"name\":\"global\"}", "users=6");
    g.store
        .cache_put("user:1", CacheScope::Global, "s9", everyone.clone(), ttl)
        .await
        .expect("put global");
    assert_eq!(
        g.store.cache_get("user:1", "s2", ID).await.expect("get"),
        Some(everyone),
        "a global entry is seen by every session"
    );
    assert_eq!(
        g.store.cache_get("user:1", "s1", ID).await.expect("get"),
        Some(mine),
        "the session's own entry wins"
    );
}

async fn cache_expires(g: &Gateway) {
    g.store
        .cache_put(
            "user:ttl",
            CacheScope::Session,
            "s1",
            entry("{}", "users=1"),
            Duration::from_millis(100),
        )
        .await
        .expect("put");
    assert!(g
        .store
        .cache_get("user:ttl", "s1", ID)
        .await
        .expect("get")
        .is_some());
    wait_for("the entry to expire", || async {
        matches!(g.store.cache_get("user:ttl", "s1", ID).await, Ok(None))
    })
    .await;
}

#[tokio::test]
async fn cache_put_get_scopes_and_expiry() {
    let server = RedisServer::start();
    let g = gateway(RedisTarget::Single(server.url()));
    cache_scopes(&g).await;
    cache_expires(&g).await;
}

#[tokio::test]
async fn cache_put_get_scopes_and_expiry_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let g = gateway(RedisTarget::Cluster(cluster.urls()));
    wait_healthy(&g).await;
    cache_scopes(&g).await;
    cache_expires(&g).await;
}

async fn one_round_trip(g: &Gateway, nodes: &[RedisServer]) {
    g.store
        .cache_put(
            "user:rt",
            CacheScope::Global,
            "s1",
            entry("{}", "users=1"),
            Duration::from_secs(30),
        )
        .await
        .expect("put");
    for node in nodes {
        node.cli(&["CONFIG", "RESETSTAT"]);
    }
    let got = g.store.cache_get("user:rt", "s1", ID).await.expect("get");
    assert!(got.is_some());
    let info: String = nodes
        .iter()
        .map(|n| n.cli(&["INFO", "commandstats"]))
        .collect();
    assert_eq!(command_calls(&info, "mget"), 1, "one MGET:\n{info}");
    assert_eq!(command_calls(&info, "get"), 0, "no extra GET:\n{info}");
}

#[tokio::test]
async fn a_cache_get_is_one_round_trip() {
    let server = RedisServer::start();
    let g = gateway(RedisTarget::Single(server.url()));
    one_round_trip(&g, std::slice::from_ref(&server)).await;
}

#[tokio::test]
async fn a_cache_get_is_one_round_trip_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let g = gateway(RedisTarget::Cluster(cluster.urls()));
    wait_healthy(&g).await;
    one_round_trip(&g, cluster.nodes()).await;
}
