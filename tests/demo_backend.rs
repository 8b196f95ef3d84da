//! The example backend behind `tidemark demo`, the integration tests and the load
//! tests, checked from the outside over HTTP as the gateway would see it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tidemark::demo::{Backend, BackendOptions, DemoError, PushTarget};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Upper bound on any wait; generous because tests share two cores. With paused time
/// it must exceed every lag in play, or it would fire first.
const DEADLINE: Duration = Duration::from_secs(30);

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The `N` of a `Write-Position: users=N` header.
    fn write_position(&self) -> u64 {
        let text = self
            .header("write-position")
            .expect("Write-Position header");
        let position = text.strip_prefix("users=").expect("users=N");
        position.parse().expect("a u64 position")
    }
}

async fn call(
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = axum::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = Full::new(Bytes::from(body.unwrap_or("").to_owned()));
    let response = client.request(request.body(body).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    Reply {
        status: parts.status,
        headers: parts.headers,
        json,
    }
}

async fn start(options: BackendOptions) -> (Backend, DropGuard) {
    let shutdown = CancellationToken::new();
    let backend = Backend::start(options, shutdown.clone()).await.unwrap();
    (backend, shutdown.drop_guard())
}

fn options(lag_ms: u64, read_instances: usize) -> BackendOptions {
    BackendOptions {
        lag: Duration::from_millis(lag_ms),
        push: None,
        checkpoint_header: true,
        read_instances,
    }
}

async fn caught_up(backend: &Backend, instance: usize, position: u64) {
    timeout(DEADLINE, backend.wait_checkpoint(instance, position))
        .await
        .expect("instance catches up before the deadline")
        .expect("instance exists and the backend runs");
}

#[tokio::test]
async fn reads_are_stale_until_the_projector_catches_up() {
    // A lag far longer than a loopback round trip, so the stale reads are certain.
    let (backend, _stop) = start(options(1000, 1)).await;
    let r0 = backend.read_addrs[0];

    let created = call(
        "PUT",
        backend.command_addr,
        "/users/1",
        Some(r#"{"name":"ada"}"#),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(created.write_position(), 1);
    assert_eq!(
        created.json,
        json!({"name": "ada", "id": "1", "version": 1})
    );

    let stale = call("GET", r0, "/users/1", None, &[]).await;
    assert_eq!(stale.status, StatusCode::NOT_FOUND);
    assert_eq!(stale.header("projection-checkpoint"), Some("users=0"));

    caught_up(&backend, 0, 1).await;
    let fresh = call("GET", r0, "/users/1", None, &[]).await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert_eq!(fresh.json, created.json);
    assert_eq!(fresh.header("projection-checkpoint"), Some("users=1"));

    let updated = call(
        "PATCH",
        backend.command_addr,
        "/users/1",
        Some(r#"{"name":"grace"}"#),
        &[],
    )
    .await;
    assert_eq!(updated.write_position(), 2);
    let stale = call("GET", r0, "/users/1", None, &[]).await;
    assert_eq!(stale.json, json!({"name": "ada", "id": "1", "version": 1}));

    caught_up(&backend, 0, 2).await;
    let fresh = call("GET", r0, "/users/1", None, &[]).await;
    assert_eq!(
        fresh.json,
        json!({"name": "grace", "id": "1", "version": 2})
    );
}

#[tokio::test(start_paused = true)]
async fn instance_i_lags_i_plus_one_times_the_lag() {
    let lag = Duration::from_secs(5);
    let (backend, _stop) = start(options(5000, 2)).await;
    let before_write = Instant::now();
    let written = call("PUT", backend.command_addr, "/users/1", Some("{}"), &[]).await;
    let position = written.write_position();

    caught_up(&backend, 0, position).await;
    assert!(before_write.elapsed() >= lag);
    assert_eq!(
        backend.checkpoint(1),
        Some(0),
        "r1 is still behind when r0 catches up"
    );

    caught_up(&backend, 1, position).await;
    assert!(before_write.elapsed() >= lag * 2);
    let fresh = call("GET", backend.read_addrs[1], "/users/1", None, &[]).await;
    assert_eq!(fresh.json["version"], json!(position));
}

#[tokio::test]
async fn every_write_reports_an_increasing_position() {
    let (backend, _stop) = start(options(10, 1)).await;
    let primary = backend.command_addr;
    let writes = [
        ("PUT", "/users/a", Some(r#"{"n":1}"#)),
        ("POST", "/users/b", Some(r#"{"n":2}"#)),
        ("PATCH", "/users/a", Some(r#"{"n":3}"#)),
        ("DELETE", "/users/b", None),
    ];
    let mut positions = Vec::new();
    for (method, path, body) in writes {
        let reply = call(method, primary, path, body, &[]).await;
        let expected = if method == "DELETE" {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::OK
        };
        assert_eq!(reply.status, expected, "{method} {path}");
        positions.push(reply.write_position());
    }
    assert_eq!(positions, [1, 2, 3, 4]);
    assert_eq!(backend.head(), 4);

    // The primary answers from the write model at once: no lag.
    let a = call("GET", primary, "/users/a", None, &[]).await;
    assert_eq!(a.json, json!({"n": 3, "id": "a", "version": 3}));
    let b = call("GET", primary, "/users/b", None, &[]).await;
    assert_eq!(b.status, StatusCode::NOT_FOUND);
    assert_eq!(backend.primary_reads_served(), 2);

    caught_up(&backend, 0, 4).await;
    let deleted = call("GET", backend.read_addrs[0], "/users/b", None, &[]).await;
    assert_eq!(deleted.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn patch_merges_and_put_replaces() {
    let (backend, _stop) = start(options(10, 1)).await;
    let primary = backend.command_addr;
    let body = r#"{"name":"ada","email":"a@x","tags":{"a":1}}"#;
    call("PUT", primary, "/users/1", Some(body), &[]).await;

    let patch = r#"{"email":null,"tags":{"b":2},"version":99}"#;
    let merged = call("PATCH", primary, "/users/1", Some(patch), &[]).await;
    let expected = json!({"name": "ada", "tags": {"a": 1, "b": 2}, "id": "1", "version": 2});
    assert_eq!(merged.json, expected);
    assert_eq!(
        call("GET", primary, "/users/1", None, &[]).await.json,
        expected
    );
    caught_up(&backend, 0, 2).await;
    assert_eq!(
        call("GET", backend.read_addrs[0], "/users/1", None, &[])
            .await
            .json,
        expected
    );

    let replaced = call("PUT", primary, "/users/1", Some(r#"{"name":"bob"}"#), &[]).await;
    assert_eq!(
        replaced.json,
        json!({"name": "bob", "id": "1", "version": 3})
    );
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_400_and_writes_nothing() {
    let (backend, _stop) = start(options(10, 1)).await;
    for (method, body) in [("PUT", "{not json"), ("PATCH", "[1,2]"), ("POST", "")] {
        let reply = call(method, backend.command_addr, "/users/1", Some(body), &[]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {body:?}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let error = reply.json["error"].as_str().expect("an error message");
        assert!(!error.is_empty());
        assert_eq!(reply.header("write-position"), None);
    }
    assert_eq!(backend.head(), 0);
}

#[tokio::test]
async fn read_instances_echo_the_min_position_and_count_user_reads() {
    let (backend, _stop) = start(options(10, 2)).await;
    let asked = [("consistency-min-position", "users=5")];
    let reply = call("GET", backend.read_addrs[1], "/users/9", None, &asked).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.header("seen-min-position"), Some("users=5"));
    assert_eq!(reply.header("projection-checkpoint"), Some("users=0"));
    let primary = call("GET", backend.command_addr, "/users/9", None, &asked).await;
    assert_eq!(primary.header("seen-min-position"), Some("users=5"));

    let polled = call("GET", backend.read_addrs[0], "/checkpoint", None, &[]).await;
    assert_eq!(polled.json, json!({"users": 0}));
    assert_eq!(polled.header("projection-checkpoint"), Some("users=0"));
    assert_eq!(polled.header("seen-min-position"), None);

    assert_eq!(
        backend.requests_served(0),
        Some(0),
        "polls are not user reads"
    );
    assert_eq!(backend.requests_served(1), Some(1));
    assert_eq!(backend.requests_served(2), None);
}

#[tokio::test]
async fn the_checkpoint_header_is_sent_only_when_asked_for() {
    let quiet = BackendOptions {
        checkpoint_header: false,
        ..options(10, 1)
    };
    let (backend, _stop) = start(quiet).await;
    let reply = call("GET", backend.read_addrs[0], "/users/1", None, &[]).await;
    assert_eq!(reply.header("projection-checkpoint"), None);
    let polled = call("GET", backend.read_addrs[0], "/checkpoint", None, &[]).await;
    assert_eq!(polled.header("projection-checkpoint"), None);
}

/// One checkpoint push as the fake admin API received it.
#[derive(Debug, Clone)]
struct Push {
    projection: String,
    instance: String,
    authorization: Option<String>,
    position: u64,
    /// User 7's version on the pushing instance when the push arrived.
    version_on_instance: Option<u64>,
}

/// A stand-in for the gateway's admin listener that records checkpoint pushes.
#[derive(Clone)]
struct FakeAdmin {
    pushes: Arc<Mutex<Vec<Push>>>,
    /// Per instance name, the highest position pushed successfully.
    latest: Arc<watch::Sender<HashMap<String, u64>>>,
    /// The backend's read addresses, known once it started.
    read_addrs: Arc<OnceLock<Vec<SocketAddr>>>,
    /// Pushes still to refuse with 503.
    refuse: Arc<AtomicU32>,
}

impl FakeAdmin {
    async fn start(refuse: u32, shutdown: &CancellationToken) -> (FakeAdmin, SocketAddr) {
        let admin = FakeAdmin {
            pushes: Arc::default(),
            latest: Arc::new(watch::Sender::new(HashMap::new())),
            read_addrs: Arc::default(),
            refuse: Arc::new(AtomicU32::new(refuse)),
        };
        let app = Router::new()
            .route("/projections/{name}/checkpoint", put(receive))
            .with_state(admin.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
                .unwrap();
        });
        (admin, addr)
    }

    async fn wait_pushed(&self, instance: &str, position: u64) {
        let mut latest = self.latest.subscribe();
        let reached = latest.wait_for(|seen| seen.get(instance).is_some_and(|p| *p >= position));
        timeout(DEADLINE, reached)
            .await
            .expect("push arrives before the deadline")
            .unwrap();
    }
}

async fn receive(
    State(admin): State<FakeAdmin>,
    Path(projection): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    if admin
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let instance = query.get("instance").cloned().unwrap_or_default();
    let index: usize = instance.trim_start_matches('r').parse().unwrap();
    let read_addr = admin.read_addrs.get().unwrap()[index];
    let user = call("GET", read_addr, "/users/7", None, &[]).await;
    let position = body["users"].as_u64().unwrap();
    admin.pushes.lock().unwrap().push(Push {
        projection,
        instance: instance.clone(),
        authorization: headers
            .get("authorization")
            .map(|value| value.to_str().unwrap().to_owned()),
        position,
        version_on_instance: user.json["version"].as_u64(),
    });
    admin.latest.send_modify(|latest| {
        let seen = latest.entry(instance).or_default();
        *seen = (*seen).max(position);
    });
    StatusCode::NO_CONTENT
}

fn pushing_to(admin_addr: SocketAddr, lag_ms: u64, read_instances: usize) -> BackendOptions {
    BackendOptions {
        push: Some(PushTarget {
            // A trailing slash must not produce `//projections`.
            admin_url: format!("http://{admin_addr}/"),
            projection: "user-view".to_owned(),
            admin_token: Some("s3cret".to_owned()),
        }),
        ..options(lag_ms, read_instances)
    }
}

#[tokio::test]
async fn checkpoints_are_pushed_after_the_read_model_has_the_data() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (admin, admin_addr) = FakeAdmin::start(0, &shutdown).await;
    let backend = Backend::start(pushing_to(admin_addr, 20, 2), shutdown.clone())
        .await
        .unwrap();
    admin.read_addrs.set(backend.read_addrs.clone()).unwrap();

    let primary = backend.command_addr;
    call("PUT", primary, "/users/7", Some(r#"{"n":1}"#), &[]).await;
    call("PATCH", primary, "/users/7", Some(r#"{"n":2}"#), &[]).await;
    let last = call("PATCH", primary, "/users/7", Some(r#"{"n":3}"#), &[]).await;
    assert_eq!(last.write_position(), 3);

    admin.wait_pushed("r0", 3).await;
    admin.wait_pushed("r1", 3).await;
    let pushes = admin.pushes.lock().unwrap().clone();
    for instance in ["r0", "r1"] {
        let positions: Vec<u64> = pushes
            .iter()
            .filter(|push| push.instance == instance)
            .map(|push| push.position)
            .collect();
        assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "{positions:?}"
        );
        assert_eq!(positions.last(), Some(&3));
    }
    for push in &pushes {
        assert_eq!(push.projection, "user-view");
        assert_eq!(push.authorization.as_deref(), Some("Bearer s3cret"));
        // Only user 7 is written, so its version is the instance's applied position.
        let version = push
            .version_on_instance
            .expect("user 7 is in the read model");
        assert!(
            version >= push.position,
            "pushed {push:?} before applying it"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_push_is_retried_even_without_new_events() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (admin, admin_addr) = FakeAdmin::start(2, &shutdown).await;
    let backend = Backend::start(pushing_to(admin_addr, 20, 1), shutdown.clone())
        .await
        .unwrap();
    admin.read_addrs.set(backend.read_addrs.clone()).unwrap();

    call("PUT", backend.command_addr, "/users/7", Some("{}"), &[]).await;
    admin.wait_pushed("r0", 1).await;
    assert_eq!(
        admin.refuse.load(Ordering::SeqCst),
        0,
        "both refusals were hit"
    );
    assert_eq!(
        backend.head(),
        1,
        "the retries came from the timer, not new events"
    );
}

#[tokio::test]
async fn wait_checkpoint_reports_unknown_instances_and_shutdown() {
    let shutdown = CancellationToken::new();
    let backend = Backend::start(options(10, 1), shutdown.clone())
        .await
        .unwrap();
    let unknown = backend.wait_checkpoint(3, 1).await;
    assert!(matches!(
        unknown,
        Err(DemoError::NoSuchInstance { index: 3, count: 1 })
    ));
    shutdown.cancel();
    let stopped = timeout(DEADLINE, backend.wait_checkpoint(0, 1))
        .await
        .unwrap();
    assert!(matches!(stopped, Err(DemoError::Stopped)));
}

#[tokio::test]
async fn start_on_wants_one_listener_per_read_instance() {
    let command = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = Backend::start_on(
        options(10, 2),
        command,
        Vec::new(),
        CancellationToken::new(),
    )
    .await;
    let error = started.expect_err("two instances, no listeners");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}
