//! Registry and projection behaviour as the read path sees it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::config::{
    AdminConfig, CacheConfig, Config, HeaderNames, KeyMaterial, KeySpec, OnInvalid,
    ProjectionConfig, ServerConfig, SourceKind, StoreConfig, TokenAlgorithm, TokenConfig,
};
use crate::position::PositionVector;

fn v(text: &str) -> PositionVector {
    PositionVector::parse(text, None).expect("test vector")
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn projection(logs: &[&str], instances: &[&str]) -> Arc<Projection> {
    Arc::new(Projection::new("view", &names(logs), &names(instances)))
}

fn apply(p: &Projection, instance: Option<usize>, text: &str) -> Applied {
    p.apply(instance, &v(text), SourceKind::Push, Instant::now())
}

fn pending(p: &Projection, text: &str) -> Waiter {
    match p.wait_for(&v(text)) {
        Wait::Pending(w) => w,
        Wait::Ready(i) => panic!("{text} ready on instance {i}, expected a wait"),
    }
}

/// Polls once without a runtime wake-up: `Some(instance)` when resolved.
fn poll_now(w: &mut Waiter) -> Option<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(w).poll(&mut cx) {
        Poll::Ready(i) => Some(i),
        Poll::Pending => None,
    }
}

fn config(projections: &[(&str, &[&str], &[&str])], max_held: usize) -> Config {
    Config {
        source: None,
        server: ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            admin_listen: "127.0.0.1:0".parse().expect("addr"),
            max_held_reads: max_held,
            max_connections: 10,
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            trusted_hops: 0,
            drain_timeout: Duration::from_secs(1),
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            access_log: false,
            tls: None,
        },
        headers: HeaderNames::default(),
        token: TokenConfig {
            issuer: "tidemark".into(),
            ttl: Duration::from_secs(3600),
            on_invalid: OnInvalid::Reject,
            cookie: None,
            signing: KeySpec {
                kid: "k1".into(),
                algorithm: TokenAlgorithm::Hs256,
                material: KeyMaterial::Inline(b"secret".to_vec()),
                public_material: None,
            },
            verify_keys: vec![],
        },
        admin: AdminConfig::default(),
        store: StoreConfig::Memory,
        cache: CacheConfig {
            max_body_bytes: 1024,
            max_entries: 10,
            max_bytes: 1 << 20,
            max_request_body_bytes: 1024,
            statuses: vec![200, 201],
        },
        upstreams: BTreeMap::new(),
        projections: projections
            .iter()
            .map(|(name, logs, instances)| {
                let p = ProjectionConfig {
                    name: name.to_string(),
                    logs: names(logs),
                    sources: vec![SourceKind::Push],
                    instances: names(instances),
                    poll: None,
                    nats: None,
                    kafka: None,
                };
                (name.to_string(), p)
            })
            .collect(),
        routes: vec![],
        nats: None,
        kafka: None,
        positions: Default::default(),
    }
}

#[test]
fn registry_builds_projections_in_name_order_with_default_instance() {
    let cfg = config(
        &[
            ("orders-view", &["orders"], &[]),
            ("user-view", &["users"], &["a", "b"]),
        ],
        5,
    );
    let reg = Registry::new(&cfg);
    let listed: Vec<&str> = reg.projections().map(|p| p.name()).collect();
    assert_eq!(listed, ["orders-view", "user-view"]);
    let orders = reg.get("orders-view").expect("orders-view");
    assert_eq!(orders.instances(), ["default"]);
    let users = reg.get("user-view").expect("user-view");
    assert_eq!(users.instances(), ["a", "b"]);
    assert_eq!(users.logs(), ["users"]);
    assert_eq!(users.instance_index("b"), Some(1));
    assert_eq!(users.instance_index("c"), None);
    assert!(reg.get("nope").is_none());
}

#[test]
fn apply_is_monotonic_and_counts_regressions() {
    let p = projection(&["users", "orders"], &["a"]);
    let first = apply(&p, Some(0), "users=10,orders=5");
    assert!(first.advanced && !first.regressed);
    let lower = apply(&p, Some(0), "users=7,orders=6");
    assert!(lower.advanced && lower.regressed);
    assert_eq!(p.checkpoints(), vec![v("orders=6,users=10")]);
    let same = apply(&p, Some(0), "users=10");
    assert_eq!(same, Applied::default());
    let foreign = apply(&p, Some(0), "payments=99");
    assert_eq!(foreign, Applied::default());
    assert_eq!(p.checkpoints(), vec![v("orders=6,users=10")]);
    assert_eq!(apply(&p, Some(3), "users=50"), Applied::default());
}

#[test]
fn instance_none_applies_to_every_instance() {
    let p = projection(&["users"], &["a", "b", "c"]);
    apply(&p, Some(1), "users=20");
    let all = apply(&p, None, "users=15");
    assert!(all.advanced && all.regressed);
    assert_eq!(
        p.checkpoints(),
        vec![v("users=15"), v("users=20"), v("users=15")]
    );
}

#[test]
fn reset_forgets_checkpoints() {
    let p = projection(&["users"], &["a", "b"]);
    apply(&p, None, "users=20");
    p.reset(Some(0));
    assert_eq!(p.checkpoints(), vec![PositionVector::new(), v("users=20")]);
    p.reset(None);
    assert_eq!(p.checkpoints(), vec![PositionVector::new(); 2]);
    assert!(apply(&p, Some(1), "users=3").advanced);
}

#[test]
fn wait_for_is_ready_when_covered_and_ignores_foreign_logs() {
    let p = projection(&["users"], &["a", "b"]);
    apply(&p, Some(1), "users=10");
    assert!(matches!(
        p.wait_for(&v("users=10,payments=99")),
        Wait::Ready(1)
    ));
    assert!(matches!(p.wait_for(&PositionVector::new()), Wait::Ready(0)));
    let _w = pending(&p, "users=11");
}

#[tokio::test(start_paused = true)]
async fn advance_wakes_only_the_waiters_it_satisfies() {
    let p = projection(&["users"], &[]);
    let mut w10 = pending(&p, "users=10");
    let mut w20 = pending(&p, "users=20");
    let mut w30 = pending(&p, "users=30");
    let before = Instant::now();
    let applied = apply(&p, None, "users=20");
    assert_eq!(applied.woken, 2);
    assert_eq!(poll_now(&mut w10), Some(0));
    assert_eq!(poll_now(&mut w20), Some(0));
    assert_eq!(poll_now(&mut w30), None);
    assert_eq!(p.waiting(), 1);
    // Released in the same tick as the apply: no time passed.
    assert_eq!(Instant::now(), before);
    assert_eq!(apply(&p, None, "users=29").woken, 0);
    assert_eq!(apply(&p, None, "users=30").woken, 1);
    assert_eq!(poll_now(&mut w30), Some(0));
    assert_eq!(p.waiter_entries(), 0);
}

#[tokio::test(start_paused = true)]
async fn awaited_waiter_resumes_without_time_passing() {
    let p = projection(&["users"], &[]);
    let w = pending(&p, "users=5");
    let start = Instant::now();
    let task = tokio::spawn(w);
    tokio::task::yield_now().await;
    apply(&p, None, "users=5");
    let instance = tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("woken before the deadline")
        .expect("task");
    assert_eq!(instance, 0);
    assert_eq!(Instant::now(), start);
}

#[test]
fn a_requirement_must_be_covered_by_one_single_instance() {
    let p = projection(&["users", "orders"], &["a", "b"]);
    let mut w = pending(&p, "users=10,orders=10");
    assert_eq!(apply(&p, Some(0), "users=10").woken, 0);
    assert_eq!(apply(&p, Some(1), "orders=10").woken, 0);
    assert_eq!(
        poll_now(&mut w),
        None,
        "a covers users, b orders: neither covers both"
    );
    assert_eq!(apply(&p, Some(0), "orders=9").woken, 0);
    assert_eq!(apply(&p, Some(1), "users=12").woken, 1);
    assert_eq!(poll_now(&mut w), Some(1));
    assert_eq!(p.waiting(), 0);
    assert_eq!(
        p.waiter_entries(),
        0,
        "its entries under instance a are gone too"
    );
}

#[test]
fn multi_log_waiter_requeues_until_all_logs_are_covered() {
    let p = projection(&["users", "orders", "carts"], &["a"]);
    let mut w = pending(&p, "users=5,orders=5,carts=5");
    assert_eq!(apply(&p, None, "users=5").woken, 0);
    assert_eq!(apply(&p, None, "carts=5").woken, 0);
    assert_eq!(poll_now(&mut w), None);
    assert_eq!(p.waiter_entries(), 1);
    assert_eq!(apply(&p, None, "orders=6").woken, 1);
    assert_eq!(poll_now(&mut w), Some(0));
}

#[test]
fn dropping_a_waiter_deregisters_it_and_frees_its_slot() {
    let reg = Registry::from_projections(
        [Projection::new(
            "view",
            &names(&["users"]),
            &names(&["a", "b"]),
        )],
        10,
    );
    let p = Arc::clone(reg.get("view").expect("view"));
    let permit = reg.try_hold(&p).expect("slot");
    let w = pending(&p, "users=10,orders=3");
    assert_eq!((p.held(), reg.held_total(), p.waiting()), (1, 1, 1));
    assert_eq!(p.waiter_entries(), 2);
    drop(w);
    drop(permit);
    assert_eq!((p.held(), reg.held_total(), p.waiting()), (0, 0, 0));
    assert_eq!(p.waiter_entries(), 0);
    assert_eq!(apply(&p, None, "users=10").woken, 0);
}

#[test]
fn held_reads_are_capped_globally() {
    let reg = Registry::from_projections(
        [
            Projection::new("a", &names(&["users"]), &[]),
            Projection::new("b", &names(&["orders"]), &[]),
        ],
        2,
    );
    let (a, b) = (
        Arc::clone(reg.get("a").expect("a")),
        Arc::clone(reg.get("b").expect("b")),
    );
    let first = reg.try_hold(&a).expect("first slot");
    let second = reg.try_hold(&b).expect("second slot");
    assert!(reg.try_hold(&a).is_none());
    assert!(reg.try_hold(&b).is_none());
    assert_eq!((a.held(), b.held(), reg.held_total()), (1, 1, 2));
    drop(first);
    let third = reg.try_hold(&b).expect("slot freed by the drop");
    assert_eq!((a.held(), b.held(), reg.held_total()), (0, 2, 2));
    drop((second, third));
    assert_eq!(reg.held_total(), 0);
}

#[tokio::test(start_paused = true)]
async fn budget_requirement_and_lags_follow_the_clock() {
    let p = projection(&["users", "orders"], &["a", "b"]);
    let t0 = Instant::now();
    p.record_write(&v("users=10"), t0);
    tokio::time::advance(Duration::from_secs(1)).await;
    p.record_write(&v("users=20,orders=5,payments=1"), Instant::now());
    tokio::time::advance(Duration::from_secs(2)).await;
    let now = Instant::now();

    assert_eq!(
        p.budget_requirement(Duration::from_secs(5), now),
        PositionVector::new()
    );
    assert_eq!(
        p.budget_requirement(Duration::from_millis(2500), now),
        v("users=10")
    );
    assert_eq!(
        p.budget_requirement(Duration::from_secs(1), now),
        v("orders=5,users=20")
    );
    assert_eq!(
        p.budget_requirement(Duration::ZERO, now),
        v("orders=5,users=20")
    );

    assert_eq!(p.lags(now), vec![Duration::from_secs(3); 2]);
    apply(&p, Some(0), "users=10");
    apply(&p, Some(1), "users=20,orders=5");
    assert_eq!(p.lags(now), vec![Duration::from_secs(2), Duration::ZERO]);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        p.lags(Instant::now()),
        vec![Duration::from_secs(3), Duration::ZERO]
    );
}

#[tokio::test(start_paused = true)]
async fn covered_writes_are_pruned_but_a_reset_instance_still_lags() {
    let p = projection(&["users"], &[]);
    for k in 1..=10u64 {
        p.record_write(&v(&format!("users={k}")), Instant::now());
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    apply(&p, None, "users=10");
    assert_eq!(p.lags(Instant::now()), vec![Duration::ZERO]);
    p.reset(None);
    assert_eq!(p.lags(Instant::now()), vec![Duration::from_secs(1)]);
    assert_eq!(
        p.budget_requirement(Duration::ZERO, Instant::now()),
        v("users=10")
    );
}

#[tokio::test(start_paused = true)]
async fn eta_comes_from_the_catch_up_rate_of_the_best_instance() {
    let p = projection(&["users"], &["a", "b"]);
    assert_eq!(p.eta(&v("users=100"), Instant::now()), None);
    for k in 0..=4u64 {
        p.apply(
            Some(0),
            &v(&format!("users={}", k * 10)),
            SourceKind::Poll,
            Instant::now(),
        );
        p.apply(
            Some(1),
            &v(&format!("users={}", k * 5)),
            SourceKind::Poll,
            Instant::now(),
        );
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    // a: at 40, 10/s; b: at 20, 5/s. 100 is 6 s away for a, 16 s for b.
    let eta = p.eta(&v("users=100"), Instant::now()).expect("a rate");
    assert!((eta.as_secs_f64() - 6.0).abs() < 1e-6, "{eta:?}");
    assert_eq!(p.eta(&v("users=40"), Instant::now()), Some(Duration::ZERO));
    assert_eq!(
        p.eta(&v("users=100,orders=1"), Instant::now()),
        Some(eta),
        "foreign logs ignored"
    );
    tokio::time::advance(rate::RATE_HORIZON * 2).await;
    assert_eq!(
        p.eta(&v("users=100"), Instant::now()),
        None,
        "a stalled rate is no rate"
    );
}

#[tokio::test(start_paused = true)]
async fn eta_on_a_sparse_log_is_the_measured_lag_not_the_slow_rate() {
    let p = projection(&["users"], &["a"]);
    let step = |pos: u64| {
        let _ = p.apply(
            Some(0),
            &v(&format!("users={pos}")),
            SourceKind::Poll,
            Instant::now(),
        );
    };
    // One write every 3 s, each applied 300 ms after it was seen: 1/3 position per
    // second, so the rate alone says 3 s for the next write.
    for pos in 1..=3u64 {
        p.record_write(&v(&format!("users={pos}")), Instant::now());
        tokio::time::advance(Duration::from_millis(300)).await;
        step(pos);
        tokio::time::advance(Duration::from_millis(2700)).await;
    }
    p.record_write(&v("users=4"), Instant::now());
    tokio::time::advance(Duration::from_millis(200)).await;
    let eta = p.eta(&v("users=4"), Instant::now()).expect("an estimate");
    assert_eq!(eta, Duration::from_millis(200), "the lag, not 3 s");
    // Without a write record (a write through another gateway), the rate decides.
    let q = projection(&["users"], &["a"]);
    for pos in 1..=3u64 {
        let _ = q.apply(
            Some(0),
            &v(&format!("users={pos}")),
            SourceKind::Poll,
            Instant::now(),
        );
        tokio::time::advance(Duration::from_secs(3)).await;
    }
    let eta = q.eta(&v("users=4"), Instant::now()).expect("a rate");
    assert!((eta.as_secs_f64() - 3.0).abs() < 1e-6, "{eta:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_waits_and_applies_lose_no_wake() {
    use rand::{Rng, SeedableRng};
    let p = projection(&["users", "orders"], &["a", "b"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut tasks = Vec::new();
    for _ in 0..400 {
        let required = v(&format!(
            "users={},orders={}",
            rng.gen_range(0..200u64),
            rng.gen_range(0..200u64)
        ));
        let p = Arc::clone(&p);
        tasks.push(tokio::spawn(async move {
            tokio::task::yield_now().await;
            let instance = match p.wait_for(&required) {
                Wait::Ready(i) => i,
                Wait::Pending(w) => w.await,
            };
            let covers = p.checkpoints()[instance].covers(&required);
            (instance, covers)
        }));
    }
    let applier = {
        let p = Arc::clone(&p);
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            for step in 0..=200u64 {
                let instance = rng.gen_range(0..2usize);
                let log = if rng.gen_bool(0.5) { "users" } else { "orders" };
                p.apply(
                    Some(instance),
                    &v(&format!("{log}={step}")),
                    SourceKind::Push,
                    Instant::now(),
                );
                tokio::task::yield_now().await;
            }
            p.apply(
                None,
                &v("users=200,orders=200"),
                SourceKind::Push,
                Instant::now(),
            );
        })
    };
    tokio::time::timeout(Duration::from_secs(10), applier)
        .await
        .expect("applier finished")
        .expect("applier");
    for task in tasks {
        let (instance, covers) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("every waiter released")
            .expect("waiter task");
        assert!(
            covers,
            "instance {instance} released a read it does not cover"
        );
    }
    assert_eq!((p.waiting(), p.waiter_entries()), (0, 0));
}
