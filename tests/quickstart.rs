//! The README's "Put tidemark in front of your service", followed word for word: the
//! config block it shows (between its `quickstart-config` markers) run by the built
//! binary, the secret made by `tidemark token keygen` into a file, ports set to 0 and
//! the upstream URLs pointed at in-process services by environment overrides (the
//! `_` spelling the README gives for names with `-`), then the curl session: a write,
//! a read held until the projector's checkpoint push, released from the projection.
//! Also: the reference table lists every route and projection key.

#[path = "support/binary.rs"]
mod binary;
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use binary::{output, tidemark, Running};
use common::http;
use http::Method;
use tokio::net::TcpListener;
use tokio::sync::Notify;

const README: &str = include_str!("../README.md");

/// The config block of the quickstart.
fn quickstart_config() -> String {
    let begin = "<!-- quickstart-config:begin -->";
    let end = "<!-- quickstart-config:end -->";
    let start = README.find(begin).expect("the README has the begin marker") + begin.len();
    let len = README[start..]
        .find(end)
        .expect("the README has the end marker");
    let block = README[start..start + len].trim();
    block
        .strip_prefix("```toml")
        .and_then(|b| b.strip_suffix("```"))
        .expect("the marked block is one ```toml fence")
        .to_string()
}

/// The command service: answers a write with `Write-Position: 42`, as the quickstart
/// says it must.
async fn command_service() -> SocketAddr {
    let app = Router::new().fallback(any(|req: Request| async move {
        let mut resp = Response::new(AxumBody::from("{\"id\": 7, \"name\": \"lamp\"}"));
        if req.method() != Method::GET {
            resp.headers_mut()
                .insert("write-position", HeaderValue::from_static("42"));
        }
        resp
    }));
    serve(app).await
}

/// The read service: answers what its read model holds.
async fn read_service(hits: Arc<Notify>) -> SocketAddr {
    let app = Router::new().fallback(any(move |_req: Request| {
        let hits = hits.clone();
        async move {
            hits.notify_one();
            Response::new(AxumBody::from("{\"id\": 7, \"name\": \"lamp\"}"))
        }
    }));
    serve(app).await
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quickstart_holds_a_read_until_the_projector_reports() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidemark.toml");
    std::fs::write(&config, quickstart_config()).unwrap();

    // `tidemark token keygen > /etc/tidemark/secret` (here: a temporary file).
    let secret = dir.path().join("secret");
    let keygen = output(tidemark().args(["token", "keygen"]));
    assert!(keygen.status.success());
    std::fs::write(&secret, &keygen.stdout).unwrap();

    let commands = command_service().await;
    let reads = Arc::new(Notify::new());
    let view = read_service(reads.clone()).await;
    let env = [
        ("TIDEMARK__SERVER__LISTEN", "127.0.0.1:0".to_string()),
        ("TIDEMARK__SERVER__ADMIN_LISTEN", "127.0.0.1:0".to_string()),
        ("TIDEMARK__TOKEN__SECRET_FILE", secret.display().to_string()),
        (
            "TIDEMARK__UPSTREAMS__ITEM_COMMANDS__URL",
            format!("http://{commands}"),
        ),
        (
            "TIDEMARK__UPSTREAMS__ITEM_VIEW__URL",
            format!("http://{view}"),
        ),
    ];
    // `tidemark check --config tidemark.toml`
    let mut check = tidemark();
    check.args(["check", "--config"]).arg(&config);
    for (k, v) in &env {
        check.env(k, v);
    }
    let checked = output(&mut check);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.stderr.is_empty(),
        "the quickstart has no warnings: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    let gw = Running::start(&config, &env);

    // curl -si -X PUT localhost:8080/items/7 -d '{"name": "lamp"}'
    let write = http()
        .send(
            Method::PUT,
            &gw.url("/items/7"),
            &[("content-type", "application/x-www-form-urlencoded")],
            "{\"name\": \"lamp\"}",
        )
        .await;
    assert_eq!(write.status, 200, "{}", write.text());
    let token = write
        .header("consistency-token")
        .expect("the write returns a token")
        .to_string();
    assert!(write.header("write-position").is_none(), "stripped");

    // curl -si localhost:8080/items/7 -H "Consistency-Token: $TOKEN"   (held)
    let read = {
        let url = gw.url("/items/7");
        let token = token.clone();
        tokio::spawn(async move {
            http()
                .get(&url, &[("consistency-token", token.as_str())])
                .await
        })
    };
    let admin = gw.admin_url("/projections");
    common::wait_until(Duration::from_secs(10), "the read is held", || {
        let admin = admin.clone();
        async move {
            let r = http().get(&admin, &[]).await;
            r.json()["held_reads_total"].as_u64() == Some(1)
        }
    })
    .await;
    assert!(!read.is_finished(), "held until the projector reports");

    // curl -si -X PUT localhost:9090/projections/items/checkpoint -d '{"items": 42}'
    let push = http()
        .send(
            Method::PUT,
            &gw.admin_url("/projections/items/checkpoint"),
            &[("content-type", "application/x-www-form-urlencoded")],
            "{\"items\": 42}",
        )
        .await;
    assert_eq!(push.status, 204, "{}", push.text());

    let read = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("released once the checkpoint covers the write")
        .unwrap();
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.header("consistency-source"), Some("projection"));
    let timing = read.header("server-timing").unwrap();
    assert!(
        timing.starts_with("tidemark;dur=") && timing.ends_with(";desc=\"projection\""),
        "{timing}"
    );
    assert_eq!(read.json()["name"], "lamp");
}

/// The README's reference tables name every key a route and a projection accept.
#[test]
fn the_reference_tables_list_every_route_and_projection_key() {
    use tidemark::config::raw::keys;
    let section = |heading: &str| {
        let start = README.find(heading).expect("the table's heading");
        let rest = &README[start..];
        let end = rest[heading.len()..]
            .find("\n\n`[")
            .or_else(|| rest[heading.len()..].find("\n### "))
            .map_or(rest.len(), |e| e + heading.len());
        rest[..end].to_string()
    };
    let routes = section("`[[routes]]` (matched in file order");
    let projections = section("`[projections.NAME]` (one per read model)");
    for key in keys::ROUTE {
        assert!(
            routes.contains(&format!("\n| `{key}` |")),
            "route key `{key}` missing from the README's table"
        );
    }
    for key in keys::PROJECTION {
        assert!(
            projections.contains(&format!("\n| `{key}` |")),
            "projection key `{key}` missing from the README's table"
        );
    }
}
