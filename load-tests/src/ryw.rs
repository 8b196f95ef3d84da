//! Scenario 2: read-your-writes under projection lag. Write-then-read pairs (each
//! pair on its own user id, pairs arriving open loop at a constant rate and running
//! concurrently), straight to the services vs through tidemark, at each lag.
//!
//! A read is *stale* when it does not show the pair's write (`version` below the
//! write's position, or 404). The *wait overhead* of a held read is its answer time
//! minus the instant the read instance actually applied the write's position (this
//! tool runs the backend, so it records that instant): it covers the checkpoint push,
//! the gateway's wake-up, the forward and the answer. The write-through cache is off
//! on these routes so every read must wait for the projection (with the cache, the
//! gateway answers from it at once and nothing is held).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde::Serialize;
use tokio::time::{sleep_until, Instant};

use crate::backend::Backend;
use crate::fresh::write_json;
use crate::gateway::{self, GatewaySpec};
use crate::net;
use crate::stats::{self, Summary};

/// Settings of the read-your-writes scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct RywArgs {
    /// The tidemark binary.
    #[arg(long, default_value = "target/production/tidemark")]
    pub gateway_bin: PathBuf,
    /// Projection lags, milliseconds.
    #[arg(long, value_delimiter = ',', default_value = "50,200,1000")]
    pub lags_ms: Vec<u64>,
    /// Pairs per lag and path.
    #[arg(long, default_value_t = 10_000)]
    pub pairs: u64,
    /// Pair arrival rate, pairs/s.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Where the JSON goes.
    /// Seconds of pairs run first at the same rate and left out of the figures
    /// (stale reads among them are still counted, as `warmup_stale`): new connections
    /// and cold upstream pools at the start put a burst of reads over 1 ms in the
    /// first 2-3 s of a 1 s-lag run.
    #[arg(long, default_value_t = 3.0)]
    pub warmup_s: f64,
    /// Core the gateway is pinned to (`taskset`); run this tool on another one
    /// (`taskset -c 0`, as run.sh does) so the two do not preempt each other. Unset:
    /// not pinned.
    #[arg(long)]
    pub gateway_core: Option<usize>,
    /// Core the backend's runtime thread (projector, pushes, read and command
    /// services) is pinned to; unset: it stays with the tool's threads.
    #[arg(long)]
    pub backend_core: Option<usize>,
    #[arg(long)]
    pub out: PathBuf,
    /// Scratch directory.
    #[arg(long)]
    pub scratch: PathBuf,
}

#[derive(Debug, Clone)]
struct Pair {
    /// Run during the warm-up: checked for staleness, left out of the figures.
    warmup: bool,
    /// The user's path (`/users/<id>`).
    path: String,
    position: u64,
    read_sent: Instant,
    done: Instant,
    stale: bool,
    error: bool,
}

/// One path at one lag.
#[derive(Debug, Serialize)]
pub struct PathFigures {
    /// `direct` or `tidemark`.
    pub path: String,
    /// Lag, ms.
    pub lag_ms: u64,
    /// Pairs scheduled.
    pub pairs: u64,
    /// Pairs completed (write and read answered).
    pub completed: u64,
    /// Reads that did not show the write.
    pub stale: u64,
    /// `stale / completed`.
    pub stale_rate: f64,
    /// Failed writes or reads (including 503 after `max_wait`).
    pub errors: u64,
    /// Pairs never sent (time bound).
    pub not_sent: u64,
    /// Read latency (from the read's send).
    pub read_latency: Summary,
    /// Reads sent before the write's position was applied (these were held).
    pub held: u64,
    /// Wait overhead of held reads.
    pub wait_overhead: Summary,
    /// Pairs run before the measured ones (not in the other figures).
    pub warmup_pairs: u64,
    /// Stale reads among them.
    pub warmup_stale: u64,
    /// Failed pairs among them.
    pub warmup_errors: u64,
    /// Of the wait overhead, the part until the released read reached the read
    /// instance: apply -> push -> wake -> forward (held reads only).
    pub apply_to_upstream: Summary,
    /// Held reads whose answer came before the recorded apply instant (clamped to 0;
    /// a measure of the recorder's own delay).
    pub overhead_negative: u64,
    /// Wait-overhead histogram: `(bucket upper bound µs, count)`.
    pub overhead_buckets: Vec<(u64, u64)>,
    /// Seconds the run took.
    pub elapsed_s: f64,
}

#[derive(Debug, Serialize)]
struct RywReport {
    settings: RywArgs,
    results: Vec<PathFigures>,
}

const BUCKETS: &[u64] = &[
    100,
    200,
    300,
    400,
    500,
    600,
    700,
    800,
    900,
    1000,
    1500,
    2000,
    3000,
    5000,
    10000,
    u64::MAX,
];

/// Runs the scenario and writes its JSON.
pub async fn run(args: RywArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.scratch).map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for &lag_ms in &args.lags_ms {
        let lag = Duration::from_millis(lag_ms);
        let addrs = gateway::addresses().map_err(|e| e.to_string())?;
        // The backend (projector, checkpoint pushes, read and command services) gets
        // its own runtime thread: in the generator's runtime its tasks queue behind
        // hundreds of client tasks, and the projector's pushes go out late (the tail
        // of the wait overhead would be the load tool's own scheduling).
        let backend_core = args.backend_core;
        let backend_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("backend")
            .on_thread_start(move || {
                if let Some(core) = backend_core {
                    pin_current_thread(core);
                }
            })
            .enable_all()
            .build()
            .map_err(|e| format!("backend runtime: {e}"))?;
        let backend = Arc::new(
            backend_rt
                .spawn(Backend::start(lag, 1, vec![addrs.1]))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?,
        );
        let spec = GatewaySpec {
            command: backend.command,
            reads: backend.reads.clone(),
            max_held_reads: 100_000,
            max_connections: 100_000,
            max_wait: format!("{}ms", lag_ms + 3000),
            on_timeout: "error".into(),
            cache: false,
            redis: None,
        };
        let name = format!("tidemark-lag{lag_ms}");
        let gw = gateway::start(
            &args.gateway_bin,
            &spec,
            addrs,
            args.gateway_core,
            &args.scratch,
            &name,
        )
        .await?;
        for path in ["direct", "tidemark"] {
            eprintln!(
                "ryw: lag {lag_ms} ms, {path}: {} pairs at {}/s",
                args.pairs, args.rate
            );
            let (write, read) = match path {
                "direct" => (backend.command, backend.reads[0]),
                _ => (gw.proxy, gw.proxy),
            };
            let f = pairs(&args, &backend, lag, path, write, read).await;
            eprintln!(
                "ryw: lag {lag_ms} ms, {path}: stale {}/{} errors {} overhead p50/p99 {}/{} µs (apply -> at upstream {}/{} µs)",
                f.stale,
                f.completed,
                f.errors,
                f.wait_overhead.p50_us,
                f.wait_overhead.p99_us,
                f.apply_to_upstream.p50_us,
                f.apply_to_upstream.p99_us
            );
            results.push(f);
        }
        drop(gw);
        drop(backend);
        backend_rt.shutdown_background();
    }
    write_json(
        &args.out,
        &RywReport {
            settings: args.clone(),
            results,
        },
    )
}

async fn pairs(
    args: &RywArgs,
    backend: &Arc<Backend>,
    lag: Duration,
    path: &str,
    write_addr: std::net::SocketAddr,
    read_addr: std::net::SocketAddr,
) -> PathFigures {
    let connections = ((args.rate * (lag.as_secs_f64() + 0.05) * 1.5).ceil() as usize + 32)
        .min(args.pairs as usize)
        .max(1);
    let total = args.pairs;
    let warm = (args.warmup_s.max(0.0) * args.rate.max(1e-3)).round() as u64;
    let all_pairs = warm + total;
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1e-3));
    let schedule = Duration::from_secs_f64(all_pairs as f64 / args.rate.max(1e-3));
    let tag = format!("{path}-{}", lag.as_millis());
    let start = Instant::now() + Duration::from_millis(200);
    let hard_end = start + schedule + lag + Duration::from_secs(10);
    let mut tasks = Vec::with_capacity(connections);
    for j in 0..connections {
        let tag = tag.clone();
        let gateway = path == "tidemark";
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut not_sent = 0u64;
            let mut w = net::connect(write_addr, None).await.ok();
            let mut r = net::connect(read_addr, None).await.ok();
            let mut i = j as u64;
            while i < all_pairs {
                let intended = start + interval.mul_f64(i as f64);
                if Instant::now() < intended {
                    sleep_until(intended).await;
                }
                if Instant::now() >= hard_end {
                    not_sent += (all_pairs - i.max(warm)).div_ceil(connections as u64);
                    break;
                }
                let mut done = pair(
                    &mut w,
                    &mut r,
                    write_addr,
                    read_addr,
                    &format!("{tag}-{i}"),
                    gateway,
                )
                .await;
                done.warmup = i < warm;
                out.push(done);
                i += connections as u64;
            }
            (out, not_sent)
        }));
    }
    let mut all = Vec::new();
    let mut not_sent = 0;
    for t in tasks {
        if let Ok((out, n)) = t.await {
            all.extend(out);
            not_sent += n;
        }
    }
    // Let the recorder catch up on the last applies before looking them up.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut latency = stats::histogram();
    let mut overhead = stats::histogram();
    let mut to_upstream = stats::histogram();
    let mut buckets = vec![0u64; BUCKETS.len()];
    let (mut stale, mut errors, mut held, mut negative, mut completed) = (0, 0, 0, 0, 0);
    let (mut warmup_stale, mut warmup_errors) = (0u64, 0u64);
    let mut last = start;
    for p in &all {
        if p.warmup {
            warmup_errors += u64::from(p.error);
            warmup_stale += u64::from(!p.error && p.stale);
            continue;
        }
        if p.error {
            errors += 1;
            continue;
        }
        completed += 1;
        last = last.max(p.done);
        stale += u64::from(p.stale);
        stats::record(&mut latency, (p.done - p.read_sent).as_micros() as u64);
        if path != "tidemark" {
            continue;
        }
        if let Some(applied) = backend.applied[0].applied_at(p.position) {
            if applied > p.read_sent {
                held += 1;
                let us = if p.done >= applied {
                    (p.done - applied).as_micros() as u64
                } else {
                    negative += 1;
                    0
                };
                stats::record(&mut overhead, us);
                if let Some(arrived) = backend.arrivals.at(&p.path) {
                    let us = arrived.saturating_duration_since(applied).as_micros() as u64;
                    stats::record(&mut to_upstream, us);
                }
                let b = BUCKETS
                    .iter()
                    .position(|b| us <= *b)
                    .unwrap_or(BUCKETS.len() - 1);
                buckets[b] += 1;
            }
        }
    }
    PathFigures {
        path: path.to_owned(),
        lag_ms: lag.as_millis() as u64,
        pairs: total,
        completed,
        stale,
        stale_rate: if completed > 0 {
            stale as f64 / completed as f64
        } else {
            0.0
        },
        errors,
        not_sent,
        read_latency: stats::summary(&latency),
        held,
        wait_overhead: stats::summary(&overhead),
        apply_to_upstream: stats::summary(&to_upstream),
        warmup_pairs: warm,
        warmup_stale,
        warmup_errors,
        overhead_negative: negative,
        overhead_buckets: BUCKETS.iter().copied().zip(buckets).collect(),
        elapsed_s: (last - start).as_secs_f64(),
    }
}

async fn exchange(
    sender: &mut Option<net::Sender>,
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Option<net::Reply> {
    if sender.is_none() {
        *sender = net::connect(addr, None).await.ok();
    }
    let s = sender.as_mut()?;
    let req = net::build(method, addr, path, headers, body).ok()?;
    match net::send(s, req, Duration::from_secs(15)).await {
        Ok(r) => Some(r),
        Err(_) => {
            *sender = None;
            None
        }
    }
}

async fn pair(
    w: &mut Option<net::Sender>,
    r: &mut Option<net::Sender>,
    write_addr: std::net::SocketAddr,
    read_addr: std::net::SocketAddr,
    id: &str,
    gateway: bool,
) -> Pair {
    let now = Instant::now();
    let path = format!("/users/{id}");
    let failed = Pair {
        warmup: false,
        path: path.clone(),
        position: 0,
        read_sent: now,
        done: now,
        stale: false,
        error: true,
    };
    let Some(wr) = exchange(
        w,
        write_addr,
        Method::PUT,
        &path,
        &[("content-type", "application/json")],
        Bytes::from_static(b"{\"load\":true}"),
    )
    .await
    else {
        return failed;
    };
    let position = wr.json()["version"].as_u64().unwrap_or(0);
    if !wr.status.is_success() || position == 0 {
        return failed;
    }
    let token = wr.header("consistency-token").unwrap_or("").to_owned();
    if gateway && token.is_empty() {
        return failed;
    }
    let headers: Vec<(&str, &str)> = if gateway {
        vec![("consistency-token", token.as_str())]
    } else {
        vec![]
    };
    let read_sent = Instant::now();
    let Some(rd) = exchange(r, read_addr, Method::GET, &path, &headers, Bytes::new()).await else {
        return Pair {
            read_sent,
            ..failed
        };
    };
    let done = Instant::now();
    let ok = rd.status.is_success() || rd.status == http::StatusCode::NOT_FOUND;
    let seen = if rd.status.is_success() {
        rd.json()["version"].as_u64().unwrap_or(0)
    } else {
        0
    };
    Pair {
        warmup: false,
        path,
        position,
        read_sent,
        done,
        stale: seen < position,
        error: !ok,
    }
}

/// Pins the calling thread to `core` (Linux `sched_setaffinity`); a failure is
/// reported and the thread runs unpinned.
fn pin_current_thread(core: usize) {
    // SAFETY: `set` is a plain bit set on the stack, initialised by CPU_ZERO before
    // use; pid 0 means the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        eprintln!(
            "ryw: cannot pin the backend thread to core {core}: {}",
            std::io::Error::last_os_error()
        );
    }
}
