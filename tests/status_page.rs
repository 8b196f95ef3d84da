//! The admin status page in a real headless browser (Debian's `chromium`): the page
//! loads and its script polls, the lag chart draws, the checkpoint shown follows a
//! push, recent timeouts are listed; and the script never writes markup.
//!
//! Needs `chromium` on PATH (`apt-get install chromium`); without it the test fails.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use common::{config, http, TestGateway};
use http::Method;
use tokio::net::TcpListener;

/// How long one browser run may take, start to DOM dump.
const BROWSER_DEADLINE: Duration = Duration::from_secs(60);

/// Finds the browser, or fails saying how to install it.
fn chromium() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium is not installed; the status page test needs a real browser: \
                 apt-get install chromium"
            )
        })
}

/// Loads `url` in headless chromium, lets its scripts run for `budget_ms` of virtual
/// time, and returns the serialized DOM. The browser is killed if it overruns
/// [`BROWSER_DEADLINE`] (and whenever this future is dropped).
async fn dump_dom(url: &str, budget_ms: u32) -> String {
    let profile = tempfile::tempdir().expect("a temporary profile directory");
    let child = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let out = tokio::time::timeout(BROWSER_DEADLINE, child.wait_with_output())
        .await
        .expect("chromium dumps the DOM within the deadline")
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// The value of attribute `attr` on the element whose `id` is `id`.
fn attribute<'a>(dom: &'a str, id: &str, attr: &str) -> Option<&'a str> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let tag = &dom[dom[..start].rfind('<')?..];
    let tag = &tag[..tag.find('>')?];
    let value = &tag[tag.find(&format!(" {attr}=\""))? + attr.len() + 3..];
    value.split('"').next()
}

/// The markup inside the element `<tag id="id">`.
fn inner<'a>(dom: &'a str, tag: &str, id: &str) -> &'a str {
    let open = format!("<{tag} id=\"{id}\"");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no {open} in {dom}"));
    let body = &dom[start..];
    let body = &body[body.find('>').unwrap() + 1..];
    &body[..body.find(&format!("</{tag}>")).unwrap_or(body.len())]
}

/// A command service (PUT reports `users=N`, counting up) and read service in one.
async fn backend() -> SocketAddr {
    let head = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(any(move |req: Request| {
        let head = head.clone();
        async move {
            let mut resp = Response::new(AxumBody::from("{}"));
            if req.method() == Method::PUT {
                let n = head.fetch_add(1, Ordering::SeqCst) + 1;
                let v = HeaderValue::from_str(&format!("users={n}")).unwrap();
                resp.headers_mut().insert("write-position", v);
            }
            resp
        }
    }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn gateway_toml(backend: SocketAddr) -> String {
    format!(
        r#"
[upstreams.app]
url = "http://{backend}"
[projections.users]
logs = ["users"]
sources = ["push"]
[[routes]]
name = "write-user"
kind = "write"
methods = ["PUT"]
path = "/users/{{id}}"
upstream = "app"
default_log = "users"
[[routes]]
name = "read-quick"
kind = "read"
methods = ["GET"]
path = "/users/{{id}}"
upstream = "app"
projection = "users"
max_wait = "20ms"
on_timeout = "error"
"#
    )
}

async fn push(gw: &TestGateway, position: u64) {
    let body = format!("{{\"users\": {position}}}");
    let r = http()
        .put_json(&gw.admin_url("/projections/users/checkpoint"), &[], &body)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_draws_live_figures_in_a_real_browser() {
    let browser = chromium();
    let gw = TestGateway::start(config(&gateway_toml(backend().await), &[])).await;
    // Two writes; the projection reports the first; a read of the second times out.
    let mut token = String::new();
    for id in 1..=2 {
        let w = http()
            .send(Method::PUT, &gw.url(&format!("/users/{id}")), &[], "{}")
            .await;
        token = w.header("consistency-token").unwrap().to_string();
    }
    push(&gw, 1).await;
    let timed_out = http()
        .get(&gw.url("/users/2"), &[("consistency-token", &token)])
        .await;
    assert_eq!(timed_out.status, 503);

    let url = gw.admin_url("/");
    let dom = dump_dom(&url, 3000).await;
    assert!(dom.contains("<title>tidemark status</title>"), "{dom}");
    assert_eq!(
        attribute(&dom, "state", "class"),
        Some("live"),
        "the script reached /status"
    );
    let polls: u32 = attribute(&dom, "polls", "data-polls")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        polls >= 2,
        "the page polls every second: {polls} polls in 3 s"
    );
    let points: u32 = attribute(&dom, "lag-chart", "data-points")
        .unwrap()
        .parse()
        .unwrap();
    assert!(points >= 2, "the lag chart has data points: {points}");
    let chart = inner(&dom, "svg", "lag-chart");
    assert!(
        chart.contains("<polyline") && chart.contains("data-series=\"users/default\""),
        "the lag chart draws the instance's line: {chart}"
    );
    let instances = inner(&dom, "tbody", "instances");
    assert!(instances.contains(">users=1<"), "{instances}");
    let timeouts = inner(&dom, "tbody", "timeouts");
    assert!(
        timeouts.contains(">read-quick<") && timeouts.contains(">error<"),
        "the timeout is listed: {timeouts}"
    );
    assert_eq!(inner(&dom, "b", "timeouts-total"), "1");

    // The checkpoint moves: the page shows the new one.
    push(&gw, 2).await;
    let dom = dump_dom(&url, 1500).await;
    let instances = inner(&dom, "tbody", "instances");
    assert!(
        instances.contains(">users=2<") && !instances.contains(">users=1<"),
        "{instances}"
    );
    drop(browser);
    gw.stop().await;
}

/// Data reaches the page as text only: the script has no markup sinks.
#[test]
fn the_script_writes_text_never_markup() {
    let script = include_str!("../src/admin/page.js");
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!script.contains(sink), "page.js uses {sink}");
    }
}
