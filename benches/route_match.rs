//! Route matching cost: `RouteTable::find` over a ~20-route table like a real API
//! (writes, reads, passthrough, captures and a final catch-all), scanned in file order.
//! Cases: a route near the start, one near the end, and a miss (every route tried).

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::Method;
use tidemark::config::{CacheScope, OnTimeout, ReadRoute, RouteCache, RouteConfig, RouteKind};
use tidemark::route::RouteTable;

const READ: &[Method] = &[Method::GET, Method::HEAD];
const WRITE: &[Method] = &[Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

fn read(projection: &str) -> RouteKind {
    RouteKind::Read(ReadRoute {
        projection: projection.into(),
        max_wait: Duration::from_millis(300),
        on_timeout: OnTimeout::Error,
        primary: None,
        staleness_budget: None,
        monotonic: false,
    })
}

fn route(
    name: &str,
    kind: RouteKind,
    methods: &[Method],
    path: &str,
    key: Option<&str>,
) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        kind,
        methods: methods.to_vec(),
        path: path.into(),
        upstream: "up".into(),
        default_log: None,
        cache: key.map(|key| RouteCache {
            key: key.into(),
            ttl: Duration::from_secs(30),
            scope: CacheScope::Session,
            vary: vec![],
        }),
    }
}

fn table() -> RouteTable {
    let w = || RouteKind::Write;
    let p = || RouteKind::Passthrough;
    RouteTable::new(&[
        route("write-user", w(), WRITE, "/users/{id}", Some("user:{id}")),
        route(
            "read-user",
            read("users"),
            READ,
            "/users/{id}",
            Some("user:{id}"),
        ),
        route("create-user", w(), &[Method::POST], "/users", None),
        route("list-users", read("users"), READ, "/users", None),
        route(
            "user-orders",
            read("orders"),
            READ,
            "/users/{id}/orders",
            None,
        ),
        route(
            "write-order",
            w(),
            WRITE,
            "/orders/{id}",
            Some("order:{id}"),
        ),
        route(
            "read-order",
            read("orders"),
            READ,
            "/orders/{id}",
            Some("order:{id}"),
        ),
        route(
            "order-lines",
            read("orders"),
            READ,
            "/orders/{id}/lines/{line}",
            None,
        ),
        route("create-order", w(), &[Method::POST], "/orders", None),
        route("write-invoice", w(), WRITE, "/billing/invoices/{id}", None),
        route(
            "read-invoice",
            read("billing"),
            READ,
            "/billing/invoices/{id}",
            None,
        ),
        route(
            "list-invoices",
            read("billing"),
            READ,
            "/billing/invoices",
            None,
        ),
        route("write-org", w(), WRITE, "/orgs/{org}", None),
        route("read-org", read("orgs"), READ, "/orgs/{org}", None),
        route(
            "org-members",
            read("orgs"),
            READ,
            "/orgs/{org}/members/{user}",
            None,
        ),
        route("search", read("search"), READ, "/search", None),
        route("events", p(), &[], "/events/stream", None),
        route("ws", p(), &[], "/ws/{*rest}", None),
        route("files", p(), &[], "/files/{*path}", None),
        route("assets", p(), &[Method::GET], "/static/{*rest}", None),
    ])
    .expect("the bench table is valid")
}

fn bench(c: &mut Criterion) {
    let t = table();
    let mut g = c.benchmark_group("route_find");
    g.bench_function("near_start/GET /users/42", |b| {
        b.iter(|| t.find(black_box(&Method::GET), black_box("/users/42")))
    });
    g.bench_function("near_end/GET /static/app/main.js", |b| {
        b.iter(|| t.find(black_box(&Method::GET), black_box("/static/app/main.js")))
    });
    g.bench_function("miss/GET /nope/1", |b| {
        b.iter(|| t.find(black_box(&Method::GET), black_box("/nope/1")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
