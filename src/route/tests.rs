//! Route table tests: file order, methods, captures, errors.

use std::time::Duration;

use http::Method;

use super::*;
use crate::config::{CacheScope, OnTimeout, ReadRoute, RouteCache, RouteKind};

fn route(name: &str, kind: RouteKind, methods: &[Method], path: &str) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        kind,
        methods: methods.to_vec(),
        path: path.into(),
        upstream: "up".into(),
        default_log: None,
        cache: None,
    }
}

fn read_kind() -> RouteKind {
    RouteKind::Read(ReadRoute {
        projection: "user-view".into(),
        max_wait: Duration::from_millis(300),
        on_timeout: OnTimeout::Error,
        primary: None,
        staleness_budget: None,
        monotonic: false,
    })
}

fn with_cache(mut r: RouteConfig, key: &str) -> RouteConfig {
    r.cache = Some(RouteCache {
        key: key.into(),
        ttl: Duration::from_secs(30),
        scope: CacheScope::Session,
        vary: vec![],
    });
    r
}

fn name_of(table: &RouteTable, method: Method, path: &str) -> Option<String> {
    table
        .find(&method, path)
        .map(|m| m.route.config.name.clone())
}

fn users_table() -> RouteTable {
    RouteTable::new(&[
        with_cache(
            route(
                "write-user",
                RouteKind::Write,
                &[Method::PUT, Method::PATCH, Method::DELETE],
                "/users/{id}",
            ),
            "user:{id}",
        ),
        with_cache(
            route(
                "read-user",
                read_kind(),
                &[Method::GET, Method::HEAD],
                "/users/{id}",
            ),
            "user:{id}",
        ),
        route("create-user", RouteKind::Write, &[Method::POST], "/users"),
        route(
            "user-files",
            RouteKind::Passthrough,
            &[],
            "/users/{id}/files/{*rest}",
        ),
    ])
    .unwrap()
}

#[test]
fn same_path_different_methods_go_to_different_routes() {
    let t = users_table();
    assert_eq!(
        name_of(&t, Method::PUT, "/users/7").as_deref(),
        Some("write-user")
    );
    assert_eq!(
        name_of(&t, Method::DELETE, "/users/7").as_deref(),
        Some("write-user")
    );
    assert_eq!(
        name_of(&t, Method::GET, "/users/7").as_deref(),
        Some("read-user")
    );
    assert_eq!(
        name_of(&t, Method::HEAD, "/users/7").as_deref(),
        Some("read-user")
    );
    assert_eq!(
        name_of(&t, Method::POST, "/users").as_deref(),
        Some("create-user")
    );
}

#[test]
fn method_not_listed_is_no_match() {
    let t = users_table();
    assert!(t.find(&Method::POST, "/users/7").is_none());
    assert!(t.find(&Method::GET, "/users").is_none());
}

#[test]
fn file_order_wins_over_specificity() {
    let t = RouteTable::new(&[
        route("everything", RouteKind::Passthrough, &[], "/{*rest}"),
        route("read-user", read_kind(), &[Method::GET], "/users/{id}"),
    ])
    .unwrap();
    assert_eq!(
        name_of(&t, Method::GET, "/users/7").as_deref(),
        Some("everything")
    );
    let m = t.find(&Method::GET, "/users/7").unwrap();
    assert_eq!(m.params.get("rest"), Some("users/7"));
    assert_eq!(m.route.index, 0);

    // Reversed: the specific route is listed first, so it wins for its path.
    let t = RouteTable::new(&[
        route("read-user", read_kind(), &[Method::GET], "/users/{id}"),
        route("everything", RouteKind::Passthrough, &[], "/{*rest}"),
    ])
    .unwrap();
    assert_eq!(
        name_of(&t, Method::GET, "/users/7").as_deref(),
        Some("read-user")
    );
    assert_eq!(
        name_of(&t, Method::PUT, "/users/7").as_deref(),
        Some("everything")
    );
    assert_eq!(
        name_of(&t, Method::GET, "/orders/1").as_deref(),
        Some("everything")
    );
}

#[test]
fn static_route_after_capture_route_loses() {
    // In matchit alone `/users/me` would beat `/users/{id}`; in file order it does not.
    let t = RouteTable::new(&[
        route("read-user", read_kind(), &[Method::GET], "/users/{id}"),
        route("me", read_kind(), &[Method::GET], "/users/me"),
    ])
    .unwrap();
    assert_eq!(
        name_of(&t, Method::GET, "/users/me").as_deref(),
        Some("read-user")
    );
}

#[test]
fn captures_are_returned_in_pattern_order_as_matched() {
    let t = RouteTable::new(&[route(
        "member",
        read_kind(),
        &[Method::GET],
        "/orgs/{org}/members/{user}",
    )])
    .unwrap();
    let m = t.find(&Method::GET, "/orgs/acme/members/j%20doe").unwrap();
    assert_eq!(
        m.params,
        Params(vec![
            ("org".into(), "acme".into()),
            ("user".into(), "j%20doe".into()),
        ])
    );
}

#[test]
fn trailing_catch_all_takes_the_rest_of_the_path() {
    let t = users_table();
    let m = t.find(&Method::GET, "/users/7/files/a/b/c.txt").unwrap();
    assert_eq!(m.route.config.name, "user-files");
    assert_eq!(m.params.get("id"), Some("7"));
    assert_eq!(m.params.get("rest"), Some("a/b/c.txt"));
    // matchit's catch-all needs at least one character.
    assert!(t.find(&Method::GET, "/users/7/files/").is_none());
}

#[test]
fn no_match() {
    let t = users_table();
    assert!(t.find(&Method::GET, "/orders/1").is_none());
    assert!(t.find(&Method::GET, "/users/7/extra").is_none());
    assert!(t.find(&Method::GET, "/").is_none());
    assert!(t.find(&Method::GET, "").is_none());
    assert!(RouteTable::new(&[])
        .unwrap()
        .find(&Method::GET, "/")
        .is_none());
}

#[test]
fn cache_key_is_compiled_and_expands_with_the_match() {
    let t = users_table();
    let m = t.find(&Method::PUT, "/users/42").unwrap();
    let key = m.route.cache_key.as_ref().unwrap();
    assert_eq!(key.expand(&m.params), "user:42");
    assert!(t.routes()[2].cache_key.is_none());
}

#[test]
fn methods_for_lists_what_the_path_accepts() {
    let t = users_table();
    assert_eq!(
        t.methods_for("/users/7"),
        vec![
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::GET,
            Method::HEAD
        ]
    );
    assert_eq!(t.methods_for("/users"), vec![Method::POST]);
    assert!(t.methods_for("/nothing").is_empty());
}

#[test]
fn routes_keep_file_order_and_index() {
    let t = users_table();
    let names: Vec<_> = t.routes().iter().map(|r| r.config.name.as_str()).collect();
    assert_eq!(
        names,
        ["write-user", "read-user", "create-user", "user-files"]
    );
    assert!(t.routes().iter().enumerate().all(|(i, r)| r.index == i));
}

#[test]
fn every_bad_route_is_reported_at_once() {
    let errors = RouteTable::new(&[
        route("ok", read_kind(), &[], "/ok/{id}"),
        route("bad-catch-all", read_kind(), &[], "/files/{*rest}/more"),
        route("no-slash", read_kind(), &[], "users/{id}"),
        with_cache(
            route("bad-key", read_kind(), &[], "/users/{id}"),
            "user:{uid}",
        ),
        with_cache(
            route("bad-brace", read_kind(), &[], "/users/{id}"),
            "user:{id",
        ),
        route("bad-param", read_kind(), &[], "/users/{}"),
    ])
    .unwrap_err();
    let routes: Vec<_> = errors.iter().map(|e| e.route.as_str()).collect();
    assert_eq!(
        routes,
        [
            "bad-catch-all",
            "no-slash",
            "bad-key",
            "bad-brace",
            "bad-param"
        ]
    );
    assert!(
        errors[1].problem.contains("must start with `/`"),
        "{}",
        errors[1]
    );
    assert_eq!(
        errors[2].to_string(),
        "route \"bad-key\": cache.key `user:{uid}`: `{uid}` is not a capture of the \
         route's path (captures: id)"
    );
    assert!(errors[3].problem.contains("unbalanced"), "{}", errors[3]);
    assert!(
        errors[0].problem.contains("/files/{*rest}/more"),
        "{}",
        errors[0]
    );
}

#[test]
fn find_with_copies_captures_only_for_the_routes_that_want_them() {
    let t = users_table();
    let wants_cache = |r: &Route| r.cache_key.is_some();
    let cached = t.find_with(&Method::PUT, "/users/42", wants_cache).unwrap();
    assert_eq!(cached.params.get("id"), Some("42"));
    let plain = t
        .find_with(&Method::GET, "/users/7/files/a.txt", wants_cache)
        .unwrap();
    assert_eq!(plain.route.config.name, "user-files");
    assert_eq!(plain.params, Params(Vec::new()));
}
