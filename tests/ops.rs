//! Reload and drain, end to end: a gateway run from a config file, reloaded by
//! `POST /reload` and by its reload signal (what SIGHUP does in the binary), and shut
//! down by cancelling its token (what SIGTERM does).

mod common;
mod ops_support;

use std::time::Duration;

use http::{Method, StatusCode};
use ops_support::{FileGateway, Upstream};

use common::{http, wait_until};

/// Two upstreams, one projection, a write route, and the read route `/{read}/{id}`.
fn config(commands: &Upstream, view: &Upstream, read: &str, read_extra: &str) -> String {
    r#"
[token]
secret_file = "@DIR@/k1.secret"

[upstreams.commands]
url = "COMMANDS"

[upstreams.view]
url = "VIEW"

[projections.users]
logs = ["users"]

[[routes]]
name = "write-user"
kind = "write"
path = "/users/{id}"
upstream = "commands"
default_log = "users"

[[routes]]
name = "slow"
kind = "passthrough"
path = "/slow/{*rest}"
upstream = "view"

[[routes]]
name = "read-READ"
kind = "read"
path = "/READ/{id}"
upstream = "view"
projection = "users"
max_wait = "30s"
EXTRA
"#
    .replace("COMMANDS", &commands.url())
    .replace("VIEW", &view.url())
    .replace("READ", read)
    .replace("EXTRA", read_extra)
}

const ERROR_ON_TIMEOUT: &str = "on_timeout = \"error\"";
const PRIMARY_ON_TIMEOUT: &str = "on_timeout = \"primary\"\nprimary = \"commands\"";

async fn upstreams() -> (Upstream, Upstream) {
    (
        Upstream::start("commands").await,
        Upstream::start("view").await,
    )
}

async fn reload(gw: &FileGateway, headers: &[(&str, &str)]) -> common::Resp {
    http()
        .send(Method::POST, &gw.admin_url("/reload"), headers, "")
        .await
}

/// A write through the gateway: the token it returns.
async fn write(gw: &FileGateway) -> String {
    let r = http().put_json(&gw.url("/users/1"), &[], "{}").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.header("consistency-token").expect("a token").to_string()
}

#[tokio::test]
async fn reload_swaps_the_route_table() {
    let (commands, view) = upstreams().await;
    let gw = FileGateway::start(&config(&commands, &view, "a", ERROR_ON_TIMEOUT), &[]).await;
    assert_eq!(
        http().get(&gw.url("/a/1"), &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        http().get(&gw.url("/b/1"), &[]).await.status,
        StatusCode::NOT_FOUND
    );

    gw.write(&config(&commands, &view, "b", ERROR_ON_TIMEOUT));
    let r = reload(&gw, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "reloaded");
    assert_eq!(r.json()["routes"], 3);
    assert_eq!(r.json()["fresh_projections"], serde_json::json!([]));

    let b = http().get(&gw.url("/b/1"), &[]).await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.header("x-upstream"), Some("view"));
    let a = http().get(&gw.url("/a/1"), &[]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["type"], "urn:tidemark:problem:no-route");
}

#[tokio::test]
async fn a_broken_file_keeps_the_old_config_serving_and_says_why() {
    let (commands, view) = upstreams().await;
    let good = config(&commands, &view, "a", ERROR_ON_TIMEOUT);
    let gw = FileGateway::start(&good, &[]).await;

    // Two validation errors: an unknown key and a dangling upstream.
    let broken = format!("{good}\n[server]\nmax_held_read = 3\n").replace(
        "upstream = \"view\"\nprojection",
        "upstream = \"viewz\"\nprojection",
    );
    gw.write(&broken);
    let r = reload(&gw, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let body = r.json();
    assert_eq!(body["type"], "urn:tidemark:problem:config-invalid");
    let errors: Vec<String> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("server.max_held_read") && e.contains("max_held_reads")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("viewz")), "{errors:?}");
    assert!(
        errors.iter().all(|e| e.contains("tidemark.toml")),
        "each error names the file: {errors:?}"
    );

    // Valid TOML whose key file is missing: refused when building, after validation.
    gw.write(&good.replace("k1.secret", "missing.secret"));
    let r = reload(&gw, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("missing.secret"), "{}", r.text());

    // A syntax error.
    gw.write("[server\n");
    let r = reload(&gw, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("syntax"), "{}", r.text());

    // The old routes and keys still serve.
    assert_eq!(
        http().get(&gw.url("/a/1"), &[]).await.status,
        StatusCode::OK
    );
    write(&gw).await;
    let metrics = http().get(&gw.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics.contains("tidemark_config_reloads_total{result=\"error\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_reload_signal_reloads_like_sighup() {
    let (commands, view) = upstreams().await;
    let gw = FileGateway::start(&config(&commands, &view, "a", ERROR_ON_TIMEOUT), &[]).await;
    gw.write(&config(&commands, &view, "b", ERROR_ON_TIMEOUT));
    gw.reload_signal.notify_one();
    wait_until(Duration::from_secs(10), "the new route answers", || async {
        http().get(&gw.url("/b/1"), &[]).await.status == StatusCode::OK
    })
    .await;
    assert_eq!(
        http().get(&gw.url("/a/1"), &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn checkpoints_and_held_reads_survive_a_reload() {
    let (commands, view) = upstreams().await;
    let gw = FileGateway::start(&config(&commands, &view, "a", ERROR_ON_TIMEOUT), &[]).await;
    let token = write(&gw).await; // users=1
    let held = tokio::spawn({
        let url = gw.url("/a/1");
        let token = token.clone();
        async move { http().get(&url, &[("consistency-token", &token)]).await }
    });
    wait_until(Duration::from_secs(10), "the read is held", || async {
        let r = http().get(&gw.admin_url("/projections"), &[]).await;
        r.json()["held_reads_total"] == 1
    })
    .await;

    // Reload with an extra route; the projection is unchanged.
    let more = format!(
        "{}\n[[routes]]\nname = \"extra\"\nkind = \"passthrough\"\npath = \"/extra\"\nupstream = \"view\"\n",
        config(&commands, &view, "a", ERROR_ON_TIMEOUT)
    );
    gw.write(&more);
    let r = reload(&gw, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        http().get(&gw.url("/extra"), &[]).await.status,
        StatusCode::OK
    );

    // The read held before the reload is released by a push after it.
    let push = http()
        .put_json(
            &gw.admin_url("/projections/users/checkpoint"),
            &[],
            r#"{"users": 1}"#,
        )
        .await;
    assert_eq!(push.status, StatusCode::NO_CONTENT);
    let r = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("released")
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("consistency-source"), Some("projection"));

    // Another reload keeps the checkpoint.
    let r = reload(&gw, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let p = http().get(&gw.admin_url("/projections"), &[]).await.json();
    assert_eq!(
        p["projections"]["users"]["instances"]["default"]["checkpoint"]["users"], 1,
        "{p}"
    );
    let r = http()
        .get(&gw.url("/a/1"), &[("consistency-token", &token)])
        .await;
    assert_eq!(r.header("consistency-source"), Some("projection"));
}

#[tokio::test]
async fn reload_needs_the_admin_token_when_one_is_configured() {
    let (commands, view) = upstreams().await;
    let text = format!(
        "[admin]\ntoken_env = \"OPS_ADMIN_TOKEN\"\n{}",
        config(&commands, &view, "a", ERROR_ON_TIMEOUT)
    );
    let gw = FileGateway::start(&text, &[("OPS_ADMIN_TOKEN", "s3cret")]).await;
    let r = reload(&gw, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = reload(&gw, &[("authorization", "Bearer wrong")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = reload(&gw, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// Starts a read that holds (its token needs users=1, nothing reports it).
async fn held_read(gw: &FileGateway) -> tokio::task::JoinHandle<common::Resp> {
    let token = write(gw).await;
    let url = gw.url("/a/1");
    let held =
        tokio::spawn(async move { http().get(&url, &[("consistency-token", &token)]).await });
    wait_until(Duration::from_secs(10), "the read is held", || async {
        let r = http().get(&gw.admin_url("/projections"), &[]).await;
        r.json()["held_reads_total"] == 1
    })
    .await;
    held
}

/// Cancels the gateway and checks it returns within `drain_timeout` (5 s).
async fn stop_within_drain_timeout(mut gw: FileGateway) {
    let handle = gw.handle.take().unwrap();
    gw.shutdown.cancel();
    let done = tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("serve returns within drain_timeout");
    done.unwrap().expect("serve ends cleanly");
}

#[tokio::test]
async fn shutdown_answers_a_held_read_by_on_timeout_error_at_once() {
    let (commands, view) = upstreams().await;
    let text = format!(
        "[server]\ndrain_timeout = \"5s\"\n{}",
        config(&commands, &view, "a", ERROR_ON_TIMEOUT)
    );
    let mut gw = FileGateway::start(&text, &[]).await;
    let held = held_read(&gw).await;
    let started = tokio::time::Instant::now();
    let handle = gw.handle.take().unwrap();
    gw.shutdown.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("answered at once, not after max_wait (30 s)")
        .unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["type"], "urn:tidemark:problem:consistency-timeout");
    assert!(r.header("retry-after").is_some());
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("serve returns within drain_timeout")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn shutdown_answers_a_held_read_from_the_primary() {
    let (commands, view) = upstreams().await;
    let text = format!(
        "[server]\ndrain_timeout = \"5s\"\n{}",
        config(&commands, &view, "a", PRIMARY_ON_TIMEOUT)
    );
    let gw = FileGateway::start(&text, &[]).await;
    let held = held_read(&gw).await;
    gw.shutdown.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("answered at once")
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("consistency-source"), Some("primary"));
    assert_eq!(r.header("x-upstream"), Some("commands"));
    stop_within_drain_timeout(gw).await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_in_flight_requests_finish() {
    let (commands, view) = upstreams().await;
    let text = format!(
        "[server]\ndrain_timeout = \"5s\"\n{}",
        config(&commands, &view, "a", ERROR_ON_TIMEOUT)
    );
    let mut gw = FileGateway::start(&text, &[]).await;
    let url = gw.url("/slow/x");
    let in_flight = tokio::spawn(async move { http().get(&url, &[]).await });
    view.wait_slow(1).await;

    let handle = gw.handle.take().unwrap();
    gw.shutdown.cancel();
    let proxy = gw.proxy;
    wait_until(
        Duration::from_secs(5),
        "the listener refuses connections",
        || async move { tokio::net::TcpStream::connect(proxy).await.is_err() },
    )
    .await;
    // The admin listener still answers while the client listener drains: not ready.
    let ready = http().get(&gw.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !handle.is_finished(),
        "serve waits for the in-flight request"
    );

    view.release();
    let r = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the in-flight request finishes")
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["path"], "/slow/x");
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("serve returns once drained")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_drain_is_capped_at_drain_timeout() {
    let (commands, view) = upstreams().await;
    let text = format!(
        "[server]\ndrain_timeout = \"300ms\"\n{}",
        config(&commands, &view, "a", ERROR_ON_TIMEOUT)
    );
    let mut gw = FileGateway::start(&text, &[]).await;
    let url = gw.url("/slow/stuck");
    let stuck = tokio::spawn(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        client.get(url.parse().unwrap()).await
    });
    view.wait_slow(1).await;
    let handle = gw.handle.take().unwrap();
    let started = tokio::time::Instant::now();
    gw.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("serve returns after drain_timeout even with a stuck request")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    let outcome = tokio::time::timeout(Duration::from_secs(5), stuck)
        .await
        .expect("the connection is closed")
        .unwrap();
    assert!(
        outcome.is_err(),
        "the stuck request's connection was closed"
    );
    view.release();
}

/// The projection `users` pushed to `users=N` on every instance.
async fn push(gw: &FileGateway, body: &str) -> common::Resp {
    http()
        .put_json(&gw.admin_url("/projections/users/checkpoint"), &[], body)
        .await
}

#[tokio::test]
async fn a_repointed_instance_starts_without_a_checkpoint() {
    let (commands, view) = upstreams().await;
    let moved = Upstream::start("moved").await;
    let gw = FileGateway::start(&config(&commands, &view, "a", ERROR_ON_TIMEOUT), &[]).await;
    let token = write(&gw).await; // users=1
    assert_eq!(
        push(&gw, r#"{"users": 1}"#).await.status,
        StatusCode::NO_CONTENT
    );
    let r = http()
        .get(&gw.url("/a/1"), &[("consistency-token", &token)])
        .await;
    assert_eq!(r.header("consistency-source"), Some("projection"));

    // `view`'s only instance now points at another server, which never reported.
    gw.write(&config(&commands, &moved, "a", ERROR_ON_TIMEOUT));
    let r = reload(&gw, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let p = http().get(&gw.admin_url("/projections"), &[]).await.json();
    assert_eq!(
        p["projections"]["users"]["instances"]["default"]["checkpoint"],
        serde_json::json!({}),
        "the repointed instance has no checkpoint: {p}"
    );
    assert_eq!(r.json()["fresh_projections"], serde_json::json!([]));
    assert_eq!(
        r.json()["fresh_instances"],
        serde_json::json!(["users/default"])
    );

    // A read needing users=1 is held (not answered by the new server as
    // `projection`) until the new server reports.
    let held = tokio::spawn({
        let url = gw.url("/a/1");
        async move { http().get(&url, &[("consistency-token", &token)]).await }
    });
    wait_until(Duration::from_secs(10), "the read is held", || async {
        let r = http().get(&gw.admin_url("/projections"), &[]).await;
        r.json()["held_reads_total"] == 1
    })
    .await;
    assert!(!held.is_finished());
    assert_eq!(
        push(&gw, r#"{"users": 1}"#).await.status,
        StatusCode::NO_CONTENT
    );
    let r = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("released by the new server's report")
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("consistency-source"), Some("projection"));
    assert_eq!(r.header("x-upstream"), Some("moved"));
}

#[tokio::test]
async fn a_read_held_before_a_reload_that_changed_its_projection_is_released_by_a_push_after_it() {
    let (commands, view) = upstreams().await;
    let gw = FileGateway::start(&config(&commands, &view, "a", ERROR_ON_TIMEOUT), &[]).await;
    let held = held_read(&gw).await; // needs users=1

    // The projection's logs change: it is replaced by a new one.
    let changed = config(&commands, &view, "a", ERROR_ON_TIMEOUT)
        .replace("logs = [\"users\"]", "logs = [\"users\", \"orders\"]");
    gw.write(&changed);
    let r = reload(&gw, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["fresh_projections"], serde_json::json!(["users"]));
    // And again: the generation in between serves nothing and is gone; the read held
    // on the first one must still be fed.
    gw.write(&changed.replace("\"orders\"]", "\"orders\", \"audit\"]"));
    let r = reload(&gw, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["fresh_projections"], serde_json::json!(["users"]));

    assert_eq!(
        push(&gw, r#"{"users": 1}"#).await.status,
        StatusCode::NO_CONTENT
    );
    let r = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held read is released by the push after the reload")
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("consistency-source"), Some("projection"));

    // Reads that start after the reload wait on the new projection.
    let token = write(&gw).await; // users=2
    assert_eq!(
        push(&gw, r#"{"users": 2}"#).await.status,
        StatusCode::NO_CONTENT
    );
    let r = http()
        .get(&gw.url("/a/1"), &[("consistency-token", &token)])
        .await;
    assert_eq!(r.header("consistency-source"), Some("projection"));
}

#[tokio::test]
async fn a_push_to_a_projection_without_the_push_source_is_refused_with_409() {
    let (commands, view) = upstreams().await;
    let text = config(&commands, &view, "a", ERROR_ON_TIMEOUT).replace(
        "logs = [\"users\"]",
        "logs = [\"users\"]\nsources = [\"header\"]",
    );
    let gw = FileGateway::start(&text, &[]).await;
    let r = push(&gw, r#"{"users": 5}"#).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["type"], "urn:tidemark:problem:source-not-enabled");
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("projections.users.sources"), "{detail}");
    // Nothing was applied.
    let p = http().get(&gw.admin_url("/projections"), &[]).await.json();
    assert_eq!(
        p["projections"]["users"]["instances"]["default"]["checkpoint"],
        serde_json::json!({}),
        "{p}"
    );
}

/// A read service whose every answer carries `Projection-Checkpoint: users=5`.
async fn reporting_view() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app =
        axum::Router::new().fallback(|| async { ([("projection-checkpoint", "users=5")], "{}") });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test]
async fn projection_checkpoint_headers_are_learned_only_with_the_header_source() {
    let (commands, _) = upstreams().await;
    let (view_url, _view) = reporting_view().await;
    for (sources, learned) in [(r#"["push"]"#, None), (r#"["push", "header"]"#, Some(5))] {
        let unused = Upstream::start("unused").await;
        let text = config(&commands, &unused, "a", ERROR_ON_TIMEOUT)
            .replace(
                "logs = [\"users\"]",
                &format!("logs = [\"users\"]\nsources = {sources}"),
            )
            .replace(&unused.url(), &view_url);
        let gw = FileGateway::start(&text, &[]).await;
        let r = http().get(&gw.url("/a/1"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let p = http().get(&gw.admin_url("/projections"), &[]).await.json();
        assert_eq!(
            p["projections"]["users"]["instances"]["default"]["checkpoint"]["users"].as_u64(),
            learned,
            "sources = {sources}: {p}"
        );
    }
}
