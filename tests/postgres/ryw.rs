//! Read-your-writes end to end, per preset: writes through the gateway to a command
//! service that returns no `Write-Position` (the fence gives the position), reads
//! through the gateway (held until the `postgres` source's checkpoint covers it):
//! 0 stale of 500 pairs, while the same pairs straight to the services are mostly
//! stale.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::app::{self, App, Layout};
use crate::common::{self, TestGateway};
use crate::pg::Postgres;

pub const CLIENTS: usize = 25;
pub const PAIRS_PER_CLIENT: usize = 20;
/// Sessions of the comparison run straight to the services: few, so the services'
/// single connections do not queue reads past the lag being shown.
pub const DIRECT_CLIENTS: usize = 5;

/// The gateway's config: `[databases.app]` on `source_url` (checkpoints) and
/// `[databases.head]` on `fence_url`.
pub fn gateway_toml(
    app: &App,
    source_url: &str,
    fence_url: &str,
    source: &str,
    fence: &str,
    log: &str,
    extra_route: &str,
) -> String {
    format!(
        r#"
[databases.app]
url = "{source_url}"
[databases.head]
url = "{fence_url}"
[upstreams.commands]
url = "http://{commands}"
[upstreams.view]
url = "http://{view}"
[upstreams.primary]
url = "http://{primary}"
[projections.users]
logs = ["{log}"]
sources = ["postgres"]
[projections.users.postgres]
database = "app"
{source}
[[routes]]
name = "write-user"
kind = "write"
methods = ["PUT"]
path = "/users/{{id}}"
upstream = "commands"
fence = {{ database = "head", {fence} }}
[[routes]]
name = "read-user"
kind = "read"
path = "/users/{{id}}"
upstream = "view"
projection = "users"
max_wait = "3s"
{extra_route}
"#,
        commands = app.commands,
        view = app.view,
        primary = app.primary,
    )
}

/// Outcome of a run of write-then-read pairs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pairs {
    pub pairs: usize,
    /// Reads answered 200 with an older value, or 404 (not projected yet).
    pub stale: usize,
    /// Reads answered with another error (a service or database down, a timeout).
    pub failed_reads: usize,
    /// Writes whose answer was not 2xx (the upstream's failure, passed on).
    pub failed_writes: usize,
}

/// `CLIENTS` sessions, each writing then reading its own user `PAIRS_PER_CLIENT`
/// times, through `write_base` / `read_base` (the gateway, or the services
/// directly). A read is stale when it does not show the value just written.
pub async fn run_pairs(tag: &str, write_base: SocketAddr, read_base: SocketAddr) -> Pairs {
    run_pairs_n(tag, write_base, read_base, CLIENTS, PAIRS_PER_CLIENT).await
}

/// [`run_pairs`] with `clients` sessions of `per_client` pairs.
pub async fn run_pairs_n(
    tag: &str,
    write_base: SocketAddr,
    read_base: SocketAddr,
    clients: usize,
    per_client: usize,
) -> Pairs {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let http = common::http();
            let mut out = Pairs::default();
            let mut token: Option<String> = None;
            for k in 0..per_client {
                let id = format!("{tag}-{c}");
                let value = format!("v{k}");
                let headers: Vec<(&str, &str)> = token
                    .as_deref()
                    .map(|t| vec![("consistency-token", t)])
                    .unwrap_or_default();
                let w = http
                    .send(
                        Method::PUT,
                        &format!("http://{write_base}/users/{id}"),
                        &headers,
                        value.clone(),
                    )
                    .await;
                if !w.status.is_success() {
                    out.failed_writes += 1;
                    continue;
                }
                if let Some(t) = w.header("consistency-token") {
                    token = Some(t.to_string());
                }
                let headers: Vec<(&str, &str)> = token
                    .as_deref()
                    .map(|t| vec![("consistency-token", t)])
                    .unwrap_or_default();
                let r = http
                    .get(&format!("http://{read_base}/users/{id}"), &headers)
                    .await;
                out.pairs += 1;
                let stale = (r.status == StatusCode::OK && r.text() != value)
                    || r.status == StatusCode::NOT_FOUND;
                if stale {
                    out.stale += 1;
                } else if r.status != StatusCode::OK {
                    out.failed_reads += 1;
                }
            }
            out
        }));
    }
    let mut total = Pairs::default();
    for t in tasks {
        let p = t.await.expect("client task");
        total.pairs += p.pairs;
        total.stale += p.stale;
        total.failed_writes += p.failed_writes;
        total.failed_reads += p.failed_reads;
    }
    total
}

async fn read_your_writes(layout: Layout, source: &str, fence: &str) {
    let pg = Postgres::start();
    let app = App::start(&pg.url(), layout).await;
    let toml = gateway_toml(&app, &pg.url(), &pg.url(), source, fence, "events", "");
    let gw = TestGateway::start(common::config(&toml, &[])).await;

    let direct = run_pairs_n(
        "direct",
        app.commands,
        app.view,
        DIRECT_CLIENTS,
        PAIRS_PER_CLIENT,
    )
    .await;
    let through = run_pairs("gw", gw.proxy, gw.proxy).await;
    assert_eq!(through.failed_writes, 0);
    assert_eq!(through.failed_reads, 0, "{through:?}");
    assert_eq!(through.pairs, CLIENTS * PAIRS_PER_CLIENT);
    assert_eq!(
        through.stale, 0,
        "stale reads through the gateway: {through:?}"
    );
    assert!(
        direct.stale * 2 > direct.pairs,
        "straight to the services most reads should be stale: {direct:?}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marten_app_without_changes_reads_its_writes() {
    read_your_writes(
        app::MARTEN,
        "preset = \"marten\"\nshard = \"User:All\"",
        "preset = \"marten\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn akka_app_without_changes_reads_its_writes() {
    read_your_writes(
        app::AKKA,
        "preset = \"akka\"\nprojection_name = \"UserProjection\"",
        app::AKKA_FENCE,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventuous_app_without_changes_reads_its_writes() {
    read_your_writes(
        app::EVENTUOUS,
        "preset = \"eventuous\"\ncheckpoint = \"UserView\"",
        "preset = \"eventuous\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commanded_app_without_changes_reads_its_writes() {
    read_your_writes(
        app::COMMANDED,
        "preset = \"commanded\"\nsubscription = \"UserProjector\"",
        "preset = \"commanded\"",
    )
    .await;
}

/// Any app reading a hot standby: writes on the primary (fence `primary-lsn`), reads
/// on a standby 200ms behind (checkpoint `replica-lsn`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_wait_for_the_standby_to_replay_the_write() {
    let primary = Postgres::start();
    let setup = app::connect(&primary.url()).await;
    setup
        .batch_execute("CREATE TABLE users (id text PRIMARY KEY, name text NOT NULL);")
        .await
        .unwrap();
    let standby = primary.standby(Duration::from_millis(200));
    let layout = Layout {
        setup: "",
        append: "INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = excluded.name",
        since: "",
        mark: "",
        latest: "SELECT name FROM users WHERE id = $1",
    };
    let app = App::start_on(&primary.url(), &standby.url(), layout, false).await;
    let toml = gateway_toml(
        &app,
        &standby.url(),
        &primary.url(),
        "preset = \"replica-lsn\"",
        "preset = \"primary-lsn\"",
        "wal",
        "",
    );
    let gw = TestGateway::start(common::config(&toml, &[])).await;
    let direct = run_pairs_n(
        "direct",
        app.commands,
        app.view,
        DIRECT_CLIENTS,
        PAIRS_PER_CLIENT,
    )
    .await;
    let through = run_pairs("gw", gw.proxy, gw.proxy).await;
    assert_eq!(through.failed_writes, 0);
    assert_eq!(
        through.stale, 0,
        "stale reads through the gateway: {through:?}"
    );
    assert!(direct.stale * 2 > direct.pairs, "{direct:?}");
    gw.stop().await;
}
