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
    let out = browse(url, budget_ms, &["--dump-dom".to_string()]).await;
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(dom.contains("</html>"), "no DOM dumped");
    dom
}

/// The viewport of [`dump_dom_sized`] and [`screenshot`]: a common laptop screen.
const VIEWPORT: (u32, u32) = (1280, 900);

/// [`dump_dom`] in a [`VIEWPORT`]-sized window at one device pixel per CSS pixel.
async fn dump_dom_sized(url: &str, budget_ms: u32) -> String {
    let out = browse(url, budget_ms, &sized(&["--dump-dom".to_string()])).await;
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PNG screenshot of the page in a [`VIEWPORT`]-sized window after `budget_ms`.
async fn screenshot(url: &str, budget_ms: u32) -> png::Reader<std::io::Cursor<Vec<u8>>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("status.png");
    browse(
        url,
        budget_ms,
        &sized(&[format!("--screenshot={}", file.display())]),
    )
    .await;
    let bytes = std::fs::read(&file).expect("chromium wrote the screenshot");
    png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("a PNG")
}

fn sized(args: &[String]) -> Vec<String> {
    let mut out = vec![
        format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1),
        "--force-device-scale-factor=1".to_string(),
        "--hide-scrollbars".to_string(),
    ];
    out.extend_from_slice(args);
    out
}

/// Runs headless chromium on `url` with `args`; returns its output once it exits.
async fn browse(url: &str, budget_ms: u32, args: &[String]) -> std::process::Output {
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
        .args(args)
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
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
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

/// `left,top,width,height` the page recorded on an element (`data-rect`).
fn rect(dom: &str, id: &str) -> [u32; 4] {
    let text = attribute(dom, id, "data-rect").unwrap_or_else(|| panic!("no data-rect on #{id}"));
    let v: Vec<u32> = text.split(',').map(|n| n.parse().unwrap()).collect();
    [v[0], v[1], v[2], v[3]]
}

/// The per-route table, times with their zone, and charts as wide as the page: the
/// DOM says what is drawn and where, the screenshot shows it is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_table_time_zones_and_full_width_charts() {
    chromium();
    let gw = TestGateway::start(config(&gateway_toml(backend().await), &[])).await;
    let w = http()
        .send(Method::PUT, &gw.url("/users/1"), &[], "{}")
        .await;
    let token = w.header("consistency-token").unwrap().to_string();
    // Three reads time out (nothing pushed), then one is answered by the projection.
    for _ in 0..3 {
        let r = http()
            .get(&gw.url("/users/1"), &[("consistency-token", &token)])
            .await;
        assert_eq!(r.status, 503);
    }
    push(&gw, 1).await;
    let r = http()
        .get(&gw.url("/users/1"), &[("consistency-token", &token)])
        .await;
    assert_eq!(r.header("consistency-source"), Some("projection"));

    let url = gw.admin_url("/");
    let dom = dump_dom_sized(&url, 2500).await;
    let routes = inner(&dom, "tbody", "routes");
    let row = &routes[routes
        .find("data-route=\"read-quick\"")
        .expect("a row per route")..];
    let row = &row[..row.find("</tr>").unwrap()];
    let cells: Vec<&str> = row
        .split("<td")
        .skip(1)
        .map(|c| {
            let c = &c[c.find('>').unwrap() + 1..];
            &c[..c.find("</td>").unwrap()]
        })
        .collect();
    // route, kind, requests, projection, cache, primary, stale, p50, p99, max_wait,
    // timeouts/min, timeouts, 4xx, 5xx
    assert_eq!(cells[0], "read-quick", "{cells:?}");
    assert_eq!(cells[2], "4", "requests: {cells:?}");
    assert_eq!(cells[3], "1", "answered by the projection: {cells:?}");
    assert_eq!(cells[9], "20", "max_wait in ms: {cells:?}");
    assert_eq!(cells[10], "3", "timeouts in the last minute: {cells:?}");
    assert_eq!(cells[11], "3", "timeouts: {cells:?}");
    assert_eq!(cells[13], "3", "5xx: {cells:?}");
    assert!(
        cells[8].parse::<f64>().unwrap() >= 20.0,
        "p99 of the waits: {cells:?}"
    );
    assert!(
        row.contains("class=\"num over\""),
        "the p99 above max_wait is flagged: {row}"
    );
    assert!(routes.contains("data-route=\"write-user\""), "{routes}");

    // Times carry their zone (the browser's; headless chromium runs in the machine's).
    let updated = inner(&dom, "b", "updated");
    let zone = inner(&dom, "span", "tz");
    assert!(!zone.is_empty() && zone != "your time zone", "{zone}");
    assert!(
        updated.contains(char::is_alphabetic) || updated.contains('+') || updated.contains("GMT"),
        "the time names its zone: {updated}"
    );
    let year = &humantime::format_rfc3339(std::time::SystemTime::now()).to_string()[..4];
    assert!(updated.contains(year), "with the date: {updated}");

    // The charts use the page's width: the viewport less the body's margins.
    let html = &dom[dom.find("<html").unwrap()..];
    let html = &html[..html.find('>').unwrap()];
    let viewport: u32 = html
        .split("data-viewport=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .expect("the page recorded the viewport")
        .parse()
        .unwrap();
    assert_eq!(viewport, VIEWPORT.0);
    let [left, top, width, height] = rect(&dom, "lag-chart");
    assert!(
        width as f64 >= 0.9 * viewport as f64,
        "the lag chart is {width} px wide in a {viewport} px viewport"
    );
    let [_, _, table_width, table_height] = rect(&dom, "routes-table");
    assert!(table_width as f64 >= 0.9 * viewport as f64 && table_height > 30);

    // The screenshot: the chart's border is drawn across that width at that place.
    let mut reader = screenshot(&url, 2500).await;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert_eq!(
        (info.width, info.height),
        VIEWPORT,
        "one pixel per CSS pixel"
    );
    let channels = info.color_type.samples();
    let pixel = |x: u32, y: u32| {
        let i = (y as usize * info.width as usize + x as usize) * channels;
        [buf[i], buf[i + 1], buf[i + 2]]
    };
    assert!(
        top + height < VIEWPORT.1,
        "the chart is in the first screen"
    );
    // #e4e7ee is the chart's border; the page around it is #fbfbfd.
    let border = [0xe4, 0xe7, 0xee];
    let drawn = (left..left + width)
        .filter(|&x| pixel(x, top) == border)
        .count();
    assert!(
        drawn as f64 >= 0.95 * width as f64,
        "the chart's top border spans its {width} px: {drawn} px drawn at y={top}"
    );
    assert_ne!(pixel(left.saturating_sub(4), top + height / 2), border);
    gw.stop().await;
}
