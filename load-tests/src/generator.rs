//! The load generator: open loop (constant arrival rate, latency from the intended send
//! time) and closed loop (back-to-back, for the maximum throughput).
//!
//! Open loop follows wrk2's model: `connections` workers each own an HTTP/1.1
//! connection and the arrivals `i ≡ worker (mod connections)` of one global schedule
//! `start + i / rate`. A worker that falls behind sends at once and the delay counts
//! in the latency, so a stalled server cannot hide its stall by slowing the generator
//! (no coordinated omission). Every loop is bounded in count (`rate * duration`) and in
//! time (`duration + drain`); arrivals not sent by then are counted as `not_sent`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Method;
use serde::{Deserialize, Serialize};
use tokio::time::{sleep_until, Instant};

use crate::net;
use crate::stats::{self, Summary};

/// Time given to in-flight requests after the schedule ends.
const DRAIN: Duration = Duration::from_secs(3);
/// One request's bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What to load: `GET path` with `headers` on `addr`.
#[derive(Debug, Clone)]
pub struct Target {
    /// Label in reports.
    pub name: String,
    /// Loopback address.
    pub addr: SocketAddr,
    /// Request path.
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
}

/// The outcome of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    /// Target label.
    pub target: String,
    /// `open` or `closed`.
    pub mode: String,
    /// Offered rate (open loop), requests/s; 0 for closed loop.
    pub offered_rps: f64,
    /// Connections used.
    pub connections: usize,
    /// Wall time from the first send to the last answer, seconds.
    pub elapsed_s: f64,
    /// Requests sent.
    pub sent: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Errors (non-2xx, connection errors, timeouts).
    pub errors: u64,
    /// Scheduled arrivals never sent (the time bound ran out).
    pub not_sent: u64,
    /// `ok / elapsed_s`.
    pub achieved_rps: f64,
    /// Latency: from the intended send time (open loop) or from the send (closed).
    pub latency: Summary,
    /// Open loop: how late the generator sent each request (its own timer slack).
    pub send_lag: Summary,
    /// CPU seconds the proxy process used during the run (filled by the scenario).
    pub proxy_cpu_s: f64,
    /// `proxy_cpu_s / ok`, microseconds.
    pub proxy_cpu_us_per_req: f64,
    /// `proxy_cpu_s / elapsed_s`: the proxy process's share of its one core.
    pub proxy_share: f64,
    /// How busy the proxy's core was (all processes, kernel included), 0..1.
    pub proxy_core_busy: f64,
    /// How busy the core of the load generator and upstream was, 0..1.
    pub tool_core_busy: f64,
    /// Which core limited the run: `proxy`, `tool`, `both` or `neither` (a capped
    /// run's proxy is full at its cap).
    pub bound: String,
    /// The proxy's CPU cap during the run, a fraction of one core (0: none).
    #[serde(default)]
    pub cpu_cap: f64,
    /// Capped runs: the fraction of the cap's periods in which the kernel throttled
    /// the proxy (near 1: the cap was what limited it).
    #[serde(default)]
    pub throttled_fraction: f64,
    /// Run's histogram (merged by scenarios), not serialised.
    #[serde(skip)]
    pub hist: Option<Histogram<u64>>,
}

#[derive(Default)]
struct WorkerTally {
    sent: u64,
    ok: u64,
    errors: u64,
    not_sent: u64,
    latency: Option<Histogram<u64>>,
    lag: Option<Histogram<u64>>,
    last: Option<Instant>,
}

async fn open_connections(target: &Target, n: usize) -> Vec<Option<net::Sender>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(net::connect(target.addr, None).await.ok());
    }
    out
}

async fn request(target: &Target, sender: &mut Option<net::Sender>) -> bool {
    if sender.is_none() {
        *sender = net::connect(target.addr, None).await.ok();
    }
    let Some(s) = sender.as_mut() else {
        return false;
    };
    let headers: Vec<(&str, &str)> = target
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let Ok(req) = net::build(
        Method::GET,
        target.addr,
        &target.path,
        &headers,
        Bytes::new(),
    ) else {
        return false;
    };
    match net::send(s, req, REQUEST_TIMEOUT).await {
        Ok(r) => r.status.is_success(),
        Err(_) => {
            *sender = None;
            false
        }
    }
}

/// Open loop at `rate` requests/s for `duration` over `connections` connections.
pub async fn open_loop(
    target: &Target,
    rate: f64,
    duration: Duration,
    connections: usize,
) -> RunResult {
    let connections = connections.max(1);
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let senders = open_connections(target, connections).await;
    let start = Instant::now() + Duration::from_millis(20);
    let hard_end = start + duration + DRAIN;
    let target = Arc::new(target.clone());
    let mut tasks = Vec::with_capacity(connections);
    for (j, mut sender) in senders.into_iter().enumerate() {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = WorkerTally {
                latency: Some(stats::histogram()),
                lag: Some(stats::histogram()),
                ..WorkerTally::default()
            };
            let mut i = j as u64;
            while i < total {
                let intended = start + interval.mul_f64(i as f64);
                if Instant::now() < intended {
                    sleep_until(intended).await;
                }
                let now = Instant::now();
                if now >= hard_end {
                    t.not_sent += (total - i).div_ceil(connections as u64);
                    break;
                }
                if let Some(h) = t.lag.as_mut() {
                    stats::record(h, (now - intended).as_micros() as u64);
                }
                t.sent += 1;
                let ok = request(&target, &mut sender).await;
                let done = Instant::now();
                if ok {
                    t.ok += 1;
                    if let Some(h) = t.latency.as_mut() {
                        stats::record(h, (done - intended).as_micros() as u64);
                    }
                } else {
                    t.errors += 1;
                }
                t.last = Some(done);
                i += connections as u64;
            }
            t
        }));
    }
    let mut result = collect(tasks, start).await;
    result.mode = "open".into();
    result.offered_rps = rate;
    result.connections = connections;
    result.target = target.name.clone();
    result
}

/// Closed loop: `connections` workers send back to back for `duration` (at most
/// `max_requests` in all): the maximum throughput.
pub async fn closed_loop(
    target: &Target,
    duration: Duration,
    connections: usize,
    max_requests: u64,
) -> RunResult {
    let connections = connections.max(1);
    let senders = open_connections(target, connections).await;
    let start = Instant::now();
    let end = start + duration;
    let per_worker = max_requests.div_ceil(connections as u64);
    let target = Arc::new(target.clone());
    let mut tasks = Vec::with_capacity(connections);
    for mut sender in senders {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = WorkerTally {
                latency: Some(stats::histogram()),
                ..WorkerTally::default()
            };
            while t.sent < per_worker && Instant::now() < end {
                let sent_at = Instant::now();
                t.sent += 1;
                let ok = request(&target, &mut sender).await;
                let done = Instant::now();
                if ok {
                    t.ok += 1;
                    if let Some(h) = t.latency.as_mut() {
                        stats::record(h, (done - sent_at).as_micros() as u64);
                    }
                } else {
                    t.errors += 1;
                }
                t.last = Some(done);
            }
            t
        }));
    }
    let mut result = collect(tasks, start).await;
    result.mode = "closed".into();
    result.connections = connections;
    result.target = target.name.clone();
    result
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<WorkerTally>>, start: Instant) -> RunResult {
    let mut latency = stats::histogram();
    let mut lag = stats::histogram();
    let mut r = RunResult::default();
    let mut last = start;
    for task in tasks {
        let Ok(t) = task.await else {
            r.errors += 1;
            continue;
        };
        r.sent += t.sent;
        r.ok += t.ok;
        r.errors += t.errors;
        r.not_sent += t.not_sent;
        if let Some(h) = &t.latency {
            let _ = latency.add(h);
        }
        if let Some(h) = &t.lag {
            let _ = lag.add(h);
        }
        last = last.max(t.last.unwrap_or(start));
    }
    r.elapsed_s = (last - start).as_secs_f64();
    r.achieved_rps = if r.elapsed_s > 0.0 {
        r.ok as f64 / r.elapsed_s
    } else {
        0.0
    };
    r.latency = stats::summary(&latency);
    r.send_lag = stats::summary(&lag);
    r.hist = Some(latency);
    r
}
