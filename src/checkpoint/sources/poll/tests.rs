//! The poll source against an in-process axum server on 127.0.0.1:0 (real time; every
//! wait is on a condition with a deadline).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::checkpoint::{Projection, Wait};
use crate::config::PollConfig;
use crate::position::PositionVector;

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
enum Mode {
    Answer(StatusCode, &'static str),
    Hang,
}

#[derive(Clone)]
struct Upstream {
    mode: Arc<Mutex<Mode>>,
    hits: Arc<watch::Sender<u64>>,
}

impl Upstream {
    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// Waits until the server has been asked `more` more times.
    async fn wait_hits(&self, more: u64) {
        let mut rx = self.hits.subscribe();
        let target = *rx.borrow() + more;
        tokio::time::timeout(DEADLINE, rx.wait_for(|n| *n >= target))
            .await
            .expect("polled again before the deadline")
            .expect("server alive");
    }
}

async fn answer(State(up): State<Upstream>) -> (StatusCode, &'static str) {
    up.hits.send_modify(|n| *n += 1);
    let mode = *up.mode.lock().expect("mode");
    match mode {
        Mode::Answer(status, body) => (status, body),
        Mode::Hang => std::future::pending().await,
    }
}

async fn upstream(mode: Mode) -> (Upstream, Uri) {
    let up = Upstream {
        mode: Arc::new(Mutex::new(mode)),
        hits: Arc::new(watch::channel(0).0),
    };
    let app = Router::new()
        .route("/checkpoint", get(answer))
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let uri = format!("http://{addr}/checkpoint").parse().expect("uri");
    (up, uri)
}

fn v(text: &str) -> PositionVector {
    PositionVector::parse(text, None).expect("test vector")
}

fn projection(logs: &[&str], instances: &[&str]) -> Arc<Projection> {
    let logs: Vec<String> = logs.iter().map(|s| s.to_string()).collect();
    let instances: Vec<String> = instances.iter().map(|s| s.to_string()).collect();
    Arc::new(Projection::new("view", &logs, &instances))
}

fn config(targets: Vec<(Option<&str>, Uri)>, timeout: Duration) -> PollConfig {
    PollConfig {
        targets: targets
            .into_iter()
            .map(|(i, u)| (i.map(str::to_string), u))
            .collect(),
        interval: Duration::from_millis(10),
        timeout,
    }
}

/// Waits until some instance covers `text`; returns which.
async fn covered(p: &Projection, text: &str) -> usize {
    match p.wait_for(&v(text)) {
        Wait::Ready(i) => i,
        Wait::Pending(w) => tokio::time::timeout(DEADLINE, w)
            .await
            .unwrap_or_else(|_| panic!("{text} not reached before the deadline")),
    }
}

async fn stop(shutdown: CancellationToken, handles: Vec<JoinHandle<()>>) {
    shutdown.cancel();
    for h in handles {
        tokio::time::timeout(DEADLINE, h)
            .await
            .expect("stopped promptly")
            .expect("task did not panic");
    }
}

#[tokio::test]
async fn json_and_text_answers_advance_every_instance() {
    let (up, uri) = upstream(Mode::Answer(StatusCode::OK, r#"{"users": 5}"#)).await;
    let p = projection(&["users"], &["a", "b"]);
    let shutdown = CancellationToken::new();
    let handles = spawn(
        Arc::clone(&p),
        config(vec![(None, uri)], Duration::from_secs(2)),
        shutdown.clone(),
    );
    covered(&p, "users=5").await;
    up.set(Mode::Answer(StatusCode::OK, "7\n"));
    covered(&p, "users=7").await;
    assert_eq!(p.checkpoints(), vec![v("users=7"), v("users=7")]);
    stop(shutdown, handles).await;
}

#[tokio::test]
async fn a_named_target_advances_only_its_instance() {
    let (_up, uri) = upstream(Mode::Answer(StatusCode::OK, "users=9, orders=2")).await;
    let p = projection(&["users", "orders"], &["a", "b"]);
    let shutdown = CancellationToken::new();
    let handles = spawn(
        Arc::clone(&p),
        config(vec![(Some("b"), uri)], Duration::from_secs(2)),
        shutdown.clone(),
    );
    assert_eq!(covered(&p, "users=9,orders=2").await, 1);
    assert_eq!(p.checkpoints()[0], PositionVector::new());
    stop(shutdown, handles).await;
}

#[tokio::test]
async fn failures_never_stop_the_loop() {
    let (up, uri) = upstream(Mode::Answer(StatusCode::INTERNAL_SERVER_ERROR, "boom")).await;
    let p = projection(&["users"], &[]);
    let shutdown = CancellationToken::new();
    let handles = spawn(
        Arc::clone(&p),
        config(vec![(None, uri)], Duration::from_millis(100)),
        shutdown.clone(),
    );
    up.wait_hits(3).await;
    up.set(Mode::Answer(StatusCode::OK, "not a checkpoint"));
    up.wait_hits(3).await;
    up.set(Mode::Answer(StatusCode::OK, r#"{"users": -1}"#));
    up.wait_hits(3).await;
    up.set(Mode::Hang);
    up.wait_hits(3).await;
    assert_eq!(p.checkpoints(), vec![PositionVector::new()]);
    up.set(Mode::Answer(StatusCode::OK, r#"{"users": 3, "other": 1}"#));
    covered(&p, "users=3").await;
    stop(shutdown, handles).await;
}

#[tokio::test]
async fn unreachable_target_and_unknown_instance_keep_polling_until_shutdown() {
    // A port that was just free: connection refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (up, uri) = upstream(Mode::Answer(StatusCode::OK, "users=4")).await;
    let p = projection(&["users"], &["a"]);
    let shutdown = CancellationToken::new();
    let targets = vec![
        (None, format!("http://{closed}/").parse().expect("uri")),
        (Some("nope"), uri.clone()),
        (Some("a"), uri),
    ];
    let handles = spawn(
        Arc::clone(&p),
        config(targets, Duration::from_millis(200)),
        shutdown.clone(),
    );
    covered(&p, "users=4").await;
    up.wait_hits(2).await;
    stop(shutdown, handles).await;
}

#[test]
fn parse_body_accepts_json_and_text() {
    assert_eq!(
        parse_body(br#" {"users": 5, "orders": 2} "#, None).expect("json"),
        v("orders=2,users=5")
    );
    assert_eq!(
        parse_body(b"users=5, orders=2\n", None).expect("text"),
        v("orders=2,users=5")
    );
    assert_eq!(
        parse_body(b"12", Some("users")).expect("bare"),
        v("users=12")
    );
    assert!(matches!(
        parse_body(b"12", None),
        Err(PollError::Position(_))
    ));
    assert!(matches!(
        parse_body(br#"{"users": "5"}"#, None),
        Err(PollError::Json(_))
    ));
    assert!(matches!(
        parse_body(br#"{"us ers": 5}"#, None),
        Err(PollError::Position(_))
    ));
    assert!(matches!(
        parse_body(b"\xff\xfe", None),
        Err(PollError::Utf8(_))
    ));
    assert!(matches!(parse_body(b"", None), Err(PollError::Position(_))));
}
