//! Many gateways on one Redis (issue 4), end to end: real `redis-server` processes
//! (support/redis_server.rs), gateways in-process in front of the example backend.
//! Write via A, read via B with A's token: never stale, with checkpoints pushed to A
//! only or written by the projector recipe, on one server and on a Redis Cluster;
//! Redis killed and restarted mid-run; the shared cache; no Redis command on a fresh
//! read.

mod common;
mod cqrs;
mod ops_support;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/runs.rs"]
mod runs;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{http, wait_until, TestGateway};
use cqrs::{start, Setup, Stack};
use redis_server::{RedisCluster, RedisServer};
use runs::{pairs, store_state, wait_store, Recipe, Tally};

/// Every wait on a condition gives up after this.
const DEADLINE: Duration = Duration::from_secs(30);
/// Write-then-read pairs per scenario: 25 workers x 20.
const WORKERS: u64 = 25;
const PER_WORKER: u64 = 20;

/// `[store]` keys for `target` (`redis_url = ...` or `cluster_urls = [...]`).
fn store(target: &str, prefix: &str, extra: &str) -> String {
    format!(
        "backend = \"redis\"\n{target}\nkey_prefix = \"{prefix}\"\n\
         connect_timeout = \"300ms\"\nresponse_timeout = \"300ms\"\n{extra}"
    )
}

fn single(server: &RedisServer) -> String {
    format!("redis_url = \"{}\"", server.url())
}

fn cluster(cluster: &RedisCluster) -> String {
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    format!("cluster_urls = [{}]", urls.join(", "))
}

/// Two gateways on `store`, uncached routes (reads are answered by the projection
/// or the primary only), `max_wait` long enough that only a lost checkpoint times out.
async fn two_gateways(store: String, sources: &'static str) -> Stack {
    let stack = start(Setup {
        sources,
        cache: false,
        store,
        gateways: 2,
        read_route: "max_wait = \"5s\"\non_timeout = \"primary\"\nprimary = \"commands\"".into(),
        ..Setup::default()
    })
    .await;
    wait_store(&stack.gateway, "ok").await;
    wait_store(&stack.others[0], "ok").await;
    stack
}

fn assert_all_from_projection(what: &str, tally: &Tally, reads: u64) {
    assert_eq!(tally.failed_writes, 0, "{what}: failed writes");
    assert_eq!(tally.stale, 0, "{what}: stale reads");
    assert_eq!(
        tally.sources.get("projection").copied().unwrap_or(0),
        reads,
        "{what}: every read released by the projection, none by the primary: {:?}",
        tally.sources
    );
}

/// Checkpoints pushed to A only (the backend's push target) reach B through Redis.
async fn push_to_a_read_via_b(store: String) {
    let stack = two_gateways(store, r#"["push", "redis"]"#).await;
    let (a, b) = (&stack.gateway, &stack.others[0]);
    let tally = pairs(a, &[b], WORKERS, PER_WORKER, 0).await;
    assert_all_from_projection("push to A, read via B", &tally, WORKERS * PER_WORKER);
}

/// Nobody pushes: a projector stand-in runs the documented EVAL after the backend
/// applies each event; both gateways learn it from Redis only.
async fn recipe_read_via_both(store: String, recipe: Recipe, prefix: &str) {
    let stack = two_gateways(store, r#"["redis"]"#).await;
    let (a, b) = (&stack.gateway, &stack.others[0]);
    let readers = [b, a];
    let tally = tokio::select! {
        stopped = recipe.follow(&stack.backend, prefix) => panic!("projector stopped: {stopped}"),
        tally = pairs(a, &readers, WORKERS, PER_WORKER, 0) => tally,
    };
    assert_all_from_projection("projector recipe", &tally, 2 * WORKERS * PER_WORKER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_one_gateway_releases_reads_on_the_other() {
    let redis = RedisServer::start();
    push_to_a_read_via_b(store(&single(&redis), "tidemark", "")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_recipe_releases_reads_on_every_gateway() {
    let redis = RedisServer::start();
    let recipe = Recipe::single(&redis.url()).await;
    recipe_read_via_both(store(&single(&redis), "tidemark", ""), recipe, "tidemark").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_master_cluster_serves_pushes_and_the_recipe() {
    let redis = RedisCluster::start(3);
    // One key prefix per scenario: each runs its own backend, whose log starts at 0.
    push_to_a_read_via_b(store(&cluster(&redis), "push", "")).await;
    let recipe = Recipe::cluster(redis.urls()).await;
    recipe_read_via_both(store(&cluster(&redis), "recipe", ""), recipe, "recipe").await;
}

/// `tidemark_store_errors_total{op}` from a gateway's `/metrics` (0 when absent).
async fn store_errors(gw: &TestGateway, op: &str) -> u64 {
    let text = http().get(&gw.admin_url("/metrics"), &[]).await.text();
    let series = format!("tidemark_store_errors_total{{op=\"{op}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run_fails_no_write_and_serves_nothing_stale() {
    let mut redis = RedisServer::start();
    // Writes fill the cache (so every write also talks to Redis) but reads never
    // consult it: each read is released by a checkpoint or goes to the primary. A
    // short max_wait keeps reads moving while B cannot learn checkpoints.
    let stack = start(Setup {
        sources: r#"["push", "redis"]"#,
        cache: false,
        write_route: "cache = { key = \"user:{id}\", ttl = \"30s\" }".into(),
        store: store(&single(&redis), "tidemark", ""),
        gateways: 2,
        read_route: "max_wait = \"400ms\"\non_timeout = \"primary\"\nprimary = \"commands\"".into(),
        ..Setup::default()
    })
    .await;
    let (a, b) = (&stack.gateway, &stack.others[0]);
    wait_store(a, "ok").await;
    wait_store(b, "ok").await;

    let before = runs::Run::start(a, b, 8, 0);
    before.wait_pairs(100, DEADLINE).await;
    redis = tokio::task::spawn_blocking(move || {
        redis.kill();
        redis
    })
    .await
    .expect("kill redis");
    wait_store(a, "degraded").await;
    wait_store(b, "degraded").await;
    let done = before.pairs_done();
    before.wait_pairs(done + 40, DEADLINE).await;
    let mut tally = before.stop().await;

    // Quiet moment, Redis down: each failure counted once (the store's count), and the
    // write still answers 2xx.
    let puts = store_errors(a, "cache_put").await;
    let w = http()
        .put_json(&a.url("/users/999999"), &[], r#"{"quiet":1}"#)
        .await;
    assert_eq!(w.status, 200, "a write while Redis is down");
    assert_eq!(store_errors(a, "cache_put").await, puts + 1, "counted once");

    redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .expect("restart redis");
    wait_store(a, "ok").await;
    wait_store(b, "ok").await;
    let after = runs::Run::start(a, b, 8, 1_000_000);
    after.wait_pairs(100, DEADLINE).await;
    tally.merge(after.stop().await);

    assert_eq!(tally.failed_writes, 0, "no write failed: {tally:?}");
    assert_eq!(tally.stale, 0, "no read was stale: {tally:?}");
    assert!(tally.pairs >= 240, "the service went on: {tally:?}");

    assert!(
        tally.sources.get("primary").copied().unwrap_or(0) > 0,
        "reads went to the primary while B could not learn checkpoints: {tally:?}"
    );

    // Checkpoints flow through Redis again: a read held on B is released by the
    // backend's push to A, without restarting a gateway.
    let client = http();
    let mut longest_hold = 0.0f64;
    for i in 0..10u64 {
        let w = client
            .put_json(&a.url(&format!("/users/{}", 2_000_000 + i)), &[], "{}")
            .await;
        assert_eq!(w.status, 200);
        let token = w.header("consistency-token").expect("token").to_owned();
        let r = client
            .get(
                &b.url(&format!("/users/{}", 2_000_000 + i)),
                &[("consistency-token", &token)],
            )
            .await;
        assert_eq!(r.header("consistency-source"), Some("projection"), "{r:?}");
        assert_eq!(r.version(), w.version());
        longest_hold = longest_hold.max(runs::held_ms(&r));
    }
    assert!(
        longest_hold >= 5.0,
        "reads were held, then released: {longest_hold} ms"
    );
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_through_cache_is_shared_and_isolated_by_session() {
    let redis = RedisServer::start();
    // The projection lags a minute: only the cache (or the primary) can answer.
    let stack = start(Setup {
        lag: Duration::from_secs(60),
        sources: r#"["push", "redis"]"#,
        store: store(&single(&redis), "tidemark", ""),
        gateways: 2,
        read_route: "max_wait = \"200ms\"\non_timeout = \"primary\"\nprimary = \"commands\"".into(),
        ..Setup::default()
    })
    .await;
    let (a, b) = (&stack.gateway, &stack.others[0]);
    wait_store(a, "ok").await;
    wait_store(b, "ok").await;
    let client = http();

    let w1 = client
        .put_json(&a.url("/users/1"), &[], r#"{"name":"ann"}"#)
        .await;
    let t1 = w1.header("consistency-token").expect("token").to_owned();
    let r = client
        .get(&b.url("/users/1"), &[("consistency-token", &t1)])
        .await;
    assert_eq!(r.header("consistency-source"), Some("cache"), "{r:?}");
    assert_eq!(r.version(), w1.version());
    assert_eq!(r.json()["name"], "ann");

    // Another session, via B: its own entry is shared with A, A's entry is not its.
    let w2 = client
        .put_json(&b.url("/users/2"), &[], r#"{"name":"bob"}"#)
        .await;
    let t2 = w2.header("consistency-token").expect("token").to_owned();
    let r = client
        .get(&a.url("/users/2"), &[("consistency-token", &t2)])
        .await;
    assert_eq!(r.header("consistency-source"), Some("cache"), "{r:?}");
    assert_eq!(r.json()["name"], "bob");
    let r = client
        .get(&b.url("/users/1"), &[("consistency-token", &t2)])
        .await;
    assert_eq!(
        r.header("consistency-source"),
        Some("primary"),
        "another session never gets A's entry: {r:?}"
    );
    assert_eq!(store_state(b).await, "ok");
}

/// Sum of `calls=` over every `cmdstat_*` line but `cmdstat_info`.
fn commands_but_info(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| line.trim().strip_prefix("cmdstat_"))
        .filter_map(|rest| {
            let (name, stats) = rest.split_once(":calls=")?;
            let calls = stats.split(',').next()?.parse().ok()?;
            (name != "info").then(|| (name.to_owned(), calls))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_reads_send_no_command_to_redis() {
    let redis = RedisServer::start();
    // A long resync interval: no periodic reload or PING between the two counts.
    let stack = start(Setup {
        lag: Duration::from_millis(20),
        sources: r#"["push", "redis"]"#,
        store: store(&single(&redis), "tidemark", "resync_interval = \"1h\""),
        gateways: 2,
        ..Setup::default()
    })
    .await;
    let (a, b) = (&stack.gateway, &stack.others[0]);
    wait_store(a, "ok").await;
    wait_store(b, "ok").await;
    let client = http();
    let mut written = Vec::new();
    for id in 0..20u64 {
        let w = client
            .put_json(&a.url(&format!("/users/{id}")), &[], "{}")
            .await;
        assert_eq!(w.status, 200);
        let token = w.header("consistency-token").expect("token").to_owned();
        written.push((id, token, w.version()));
    }
    let head = stack.backend.head();
    for gw in [a, b] {
        wait_until(DEADLINE, "both gateways to know the head", || async {
            runs::checkpoint(gw).await >= head
        })
        .await;
    }

    let mut info = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let count = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let text: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut conn)
                .await
                .expect("INFO");
            commands_but_info(&text)
        }
    };
    let before = count(&mut info).await;
    let mut reads = 0;
    for round in 0..5 {
        for (id, token, version) in &written {
            let gw = if (id + round) % 2 == 0 { a } else { b };
            let r = client
                .get(
                    &gw.url(&format!("/users/{id}")),
                    &[("consistency-token", token)],
                )
                .await;
            assert_eq!(r.header("consistency-source"), Some("projection"));
            assert!(r.version() >= *version);
            reads += 1;
        }
    }
    let after = count(&mut info).await;
    assert_eq!(reads, 100);
    assert_eq!(after, before, "{reads} fresh reads sent commands to Redis");
}

/// A gateway run from a config file (so it can reload) on the Redis at `url`: the
/// ops harness's upstreams, projection `users` with `sources`, and `extra` appended.
fn file_config(
    commands: &ops_support::Upstream,
    view: &ops_support::Upstream,
    url: &str,
    sources: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[token]
secret_file = "@DIR@/k1.secret"

[store]
backend = "redis"
redis_url = "{url}"
connect_timeout = "300ms"
response_timeout = "300ms"
resync_interval = "1h"

[upstreams.commands]
url = "{commands}"

[upstreams.view]
url = "{view}"

[projections.users]
logs = ["users"]
sources = {sources}

[[routes]]
name = "write-user"
kind = "write"
path = "/users/{{id}}"
upstream = "commands"
default_log = "users"

[[routes]]
name = "read-user"
kind = "read"
path = "/u/{{id}}"
upstream = "view"
projection = "users"
max_wait = "5s"
{extra}
"#,
        commands = commands.url(),
        view = view.url(),
    )
}

/// The documented projector recipe for `projection` (every instance, one log named
/// like the projection) with `redis-cli`.
fn recipe_cli(redis: &RedisServer, projection: &str, position: u64) {
    let key = format!("tidemark:cp:{{{projection}}}");
    let position = position.to_string();
    redis.cli(&[
        "EVAL",
        tidemark::store::redis::CHECKPOINT_SCRIPT,
        "1",
        &key,
        "tidemark:checkpoints",
        projection,
        "*",
        projection,
        &position,
    ]);
}

/// `projection`'s checkpoint on `log` for instance `default` (`None`: none).
async fn file_checkpoint(
    gw: &ops_support::FileGateway,
    projection: &str,
    log: &str,
) -> Option<u64> {
    let p = http().get(&gw.admin_url("/projections"), &[]).await.json();
    p["projections"][projection]["instances"]["default"]["checkpoint"][log].as_u64()
}

async fn file_store_ok(gw: &ops_support::FileGateway) {
    wait_until(DEADLINE, "the store is ok", || async {
        http().get(&gw.admin_url("/readyz"), &[]).await.json()["store"] == "ok"
    })
    .await;
}

/// Serves `users=7` on `GET /cp` (a `poll` source).
async fn poll_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cp", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/cp", axum::routing::get(|| async { "users=7" }));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_checkpoints_stay_local_when_redis_comes_back_empty() {
    let mut redis = RedisServer::start();
    let (commands, view) = (
        ops_support::Upstream::start("commands").await,
        ops_support::Upstream::start("view").await,
    );
    let (poll_url, _poll) = poll_server().await;
    let text = file_config(
        &commands,
        &view,
        &redis.url(),
        r#"["push", "poll", "redis"]"#,
        "",
    )
    .replace(
        "sources = [\"push\", \"poll\", \"redis\"]",
        &format!("sources = [\"push\", \"poll\", \"redis\"]\npoll_url = \"{poll_url}\"\npoll_interval = \"50ms\""),
    );
    let gw = ops_support::FileGateway::start(&text, &[]).await;
    file_store_ok(&gw).await;
    let pushed = http()
        .put_json(
            &gw.admin_url("/projections/users/checkpoint"),
            &[],
            r#"{"users": 3}"#,
        )
        .await;
    assert_eq!(pushed.status, http::StatusCode::NO_CONTENT);
    wait_until(DEADLINE, "the poll reports users=7", || async {
        file_checkpoint(&gw, "users", "users").await == Some(7)
    })
    .await;

    // Redis restarts empty: the gateway republishes what it knows from push/redis.
    redis.restart();
    let hash = "tidemark:cp:{users}";
    let fields = || redis.cli(&["HGETALL", hash]);
    wait_until(DEADLINE, "the gateway republishes", || async {
        !fields().trim().is_empty()
    })
    .await;
    let all = fields();
    assert!(
        !all.lines().any(|l| l.trim() == "7"),
        "the polled checkpoint stays local, not in Redis: {all}"
    );
    assert!(
        all.lines().any(|l| l.trim() == "3"),
        "the pushed checkpoint is republished: {all}"
    );
    assert_eq!(file_checkpoint(&gw, "users", "users").await, Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_a_new_projections_checkpoints_from_redis_at_once() {
    let redis = RedisServer::start();
    let (commands, view) = (
        ops_support::Upstream::start("commands").await,
        ops_support::Upstream::start("view").await,
    );
    let base = file_config(&commands, &view, &redis.url(), r#"["redis"]"#, "");
    let gw = ops_support::FileGateway::start(&base, &[]).await;
    file_store_ok(&gw).await;
    // A projector already reported `orders` before the gateway knew the projection.
    recipe_cli(&redis, "orders", 42);

    let orders = "[projections.orders]\nlogs = [\"orders\"]\nsources = [\"redis\"]\n\n\
        [[routes]]\nname = \"read-order\"\nkind = \"read\"\npath = \"/o/{id}\"\n\
        upstream = \"view\"\nprojection = \"orders\"\n";
    gw.write(&format!("{base}\n{orders}"));
    let r = http()
        .send(http::Method::POST, &gw.admin_url("/reload"), &[], "")
        .await;
    assert_eq!(r.status, http::StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["fresh_projections"], serde_json::json!(["orders"]));
    // resync_interval is 1h: only an immediate reload from Redis finds it.
    wait_until(
        Duration::from_secs(5),
        "orders=42 learned from Redis",
        || async { file_checkpoint(&gw, "orders", "orders").await == Some(42) },
    )
    .await;
}

/// `name{labels}` from a file gateway's `/metrics` (0 when absent).
async fn metric(gw: &ops_support::FileGateway, series: &str) -> u64 {
    let text = http().get(&gw.admin_url("/metrics"), &[]).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_updates_for_a_projection_without_the_redis_source_are_ignored() {
    let redis = RedisServer::start();
    let (commands, view) = (
        ops_support::Upstream::start("commands").await,
        ops_support::Upstream::start("view").await,
    );
    // `users` takes pushes only; `orders` (the control) takes Redis.
    let orders = "[projections.orders]\nlogs = [\"orders\"]\nsources = [\"redis\"]\n\n\
        [[routes]]\nname = \"read-order\"\nkind = \"read\"\npath = \"/o/{id}\"\n\
        upstream = \"view\"\nprojection = \"orders\"\n";
    let text = file_config(&commands, &view, &redis.url(), r#"["push"]"#, orders);
    let gw = ops_support::FileGateway::start(&text, &[]).await;
    file_store_ok(&gw).await;

    recipe_cli(&redis, "users", 9);
    recipe_cli(&redis, "orders", 9);
    wait_until(DEADLINE, "the control learns orders=9", || async {
        file_checkpoint(&gw, "orders", "orders").await == Some(9)
    })
    .await;
    // Published before `orders`, so applied (or ignored) by now.
    assert_eq!(file_checkpoint(&gw, "users", "users").await, None);
    // A reload re-reads every hash from Redis at once: still ignored.
    let r = http()
        .send(http::Method::POST, &gw.admin_url("/reload"), &[], "")
        .await;
    assert_eq!(r.status, http::StatusCode::OK, "{}", r.text());
    let series = "tidemark_checkpoint_updates_ignored_total{projection=\"users\",source=\"redis\"}";
    wait_until(DEADLINE, "the ignored update is counted", || async {
        metric(&gw, series).await >= 1
    })
    .await;
    assert_eq!(file_checkpoint(&gw, "users", "users").await, None);

    // A push is applied locally, and not written through (no gateway reads it there).
    let pushed = http()
        .put_json(
            &gw.admin_url("/projections/users/checkpoint"),
            &[],
            r#"{"users": 4}"#,
        )
        .await;
    assert_eq!(pushed.status, http::StatusCode::NO_CONTENT);
    assert_eq!(file_checkpoint(&gw, "users", "users").await, Some(4));
    let all = redis.cli(&["HGETALL", "tidemark:cp:{users}"]);
    assert!(!all.lines().any(|l| l.trim() == "4"), "{all}");
}
