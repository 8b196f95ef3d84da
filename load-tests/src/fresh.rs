//! Scenario 1 (and 5): fresh reads, i.e. token-gated reads whose projection already
//! covers the token, straight to the read instance vs through nginx vs through the
//! bare hyper proxy of [`crate::floor`] (the stack's floor) vs through tidemark (and
//! tidemark on the Redis store, with Redis commands counted per read).
//!
//! Both proxies run pinned to one core (`--proxy-core`); run this tool itself pinned to
//! another (`taskset -c 0`) with the upstream in-process. Maximum throughput is a closed
//! loop; latency is measured open loop at 50% and 90% of nginx's median maximum. Runs
//! are interleaved target by target and repeated; the report quotes medians.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use serde::Serialize;

use crate::backend::Backend;
use crate::cap::{self, CpuCap};
use crate::gateway::{self, GatewaySpec};
use crate::generator::{self, RunResult, Target};
use crate::procs::{self, Proc};
use crate::stats::{self, median, Summary};
use crate::{cores, net, nginx, redis, wrk};

/// Settings of the fresh-read scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct FreshArgs {
    /// The tidemark binary.
    #[arg(long, default_value = "target/production/tidemark")]
    pub gateway_bin: PathBuf,
    /// The nginx binary.
    #[arg(long, default_value = "nginx")]
    pub nginx_bin: String,
    /// Core every proxy is pinned to.
    #[arg(long, default_value_t = 1)]
    pub proxy_core: usize,
    /// Core this tool runs on (`taskset -c 0`): the origin, wrk and the generator.
    #[arg(long, default_value_t = 0)]
    pub tool_core: usize,
    /// Leave out the `wrk` cross-check.
    #[arg(long)]
    pub skip_wrk: bool,
    /// The proxy-bound maxima: each proxy in turn capped at this fraction of its core
    /// (a cgroup CPU quota; needs root), loaded by the closed loop and by `wrk`, so
    /// the proxy fills its cap while the tool's core has room. 0 leaves them out.
    #[arg(long, default_value_t = 0.6)]
    pub cpu_cap: f64,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 4.0)]
    pub duration_s: f64,
    /// Repeats of every measurement (medians are quoted).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Connections of the load generator.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Another tidemark binary to measure side by side (target `tidemark-baseline`,
    /// same config, same core): an A/B of two builds in one run.
    #[arg(long)]
    pub baseline_gateway_bin: Option<PathBuf>,
    /// Also run tidemark with `store.backend = "redis"` (scenario 5).
    #[arg(long)]
    pub redis: bool,
    /// Where the JSON goes.
    #[arg(long)]
    pub out: PathBuf,
    /// Scratch directory for configs and logs.
    #[arg(long)]
    pub scratch: PathBuf,
}

/// Per-target medians.
#[derive(Debug, Default, Serialize)]
struct TargetFigures {
    max_rps_median: f64,
    max_rps_runs: Vec<f64>,
    proxy_cpu_us_per_req_median: f64,
    /// The closed-loop runs' proxy share of its core and tool core busy (medians), and
    /// which side bound each run.
    proxy_share_median: f64,
    tool_core_busy_median: f64,
    bound_runs: Vec<String>,
    /// The same target loaded by `wrk -t1` with as many connections.
    wrk: Option<WrkFigures>,
    /// The proxy capped at `--cpu-cap` of its core: the proxy-bound maxima.
    capped: Option<CappedFigures>,
    /// Keyed by the load level (`50%`, `90%`).
    open: BTreeMap<String, OpenFigures>,
}

#[derive(Debug, Default, Serialize)]
struct WrkFigures {
    rps_median: f64,
    rps_runs: Vec<f64>,
    proxy_cpu_us_per_req_median: f64,
    proxy_share_median: f64,
    tool_core_busy_median: f64,
    bound_runs: Vec<String>,
    p50_us_median: f64,
    p99_us_median: f64,
    errors: u64,
}

/// One load of the capped runs (the closed loop or `wrk`), medians.
#[derive(Debug, Default, Serialize)]
struct CappedLoad {
    rps_median: f64,
    rps_runs: Vec<f64>,
    proxy_cpu_us_per_req_median: f64,
    /// The proxy's CPU over wall time, as a fraction of its cap (1.00: the cap full).
    cap_used_median: f64,
    throttled_fraction_median: f64,
    tool_core_busy_median: f64,
    bound_runs: Vec<String>,
    errors: u64,
}

/// The proxy-bound maxima of one proxy (`--cpu-cap`).
#[derive(Debug, Default, Serialize)]
struct CappedFigures {
    cpu_cap: f64,
    closed: CappedLoad,
    wrk: Option<CappedLoad>,
}

#[derive(Debug, Default, Serialize)]
struct OpenFigures {
    rate_rps: f64,
    p50_us_median: f64,
    p99_us_median: f64,
    p999_us_median: f64,
    errors: u64,
    not_sent: u64,
    proxy_cpu_us_per_req_median: f64,
    /// The runs' histograms merged: the chart's curve.
    merged: Summary,
}

#[derive(Debug, Serialize)]
struct RedisFigures {
    reads: u64,
    commands: BTreeMap<String, u64>,
    commands_total: u64,
    commands_per_read: f64,
    /// Commands counted over an idle period as long as the runs (resync and the like).
    idle_commands: BTreeMap<String, u64>,
    idle_seconds: f64,
}

#[derive(Debug, Serialize)]
struct FreshReport {
    settings: FreshArgs,
    nginx_max_median_rps: f64,
    targets: BTreeMap<String, TargetFigures>,
    runs: Vec<RunResult>,
    redis: Option<RedisFigures>,
    source_check: BTreeMap<String, String>,
    /// How the proxies were capped for the proxy-bound maxima, or why they were not.
    cap: String,
}

struct Proxied {
    target: Target,
    pid: Option<u32>,
}

async fn token_for(gw: &gateway::Gateway) -> Result<String, String> {
    let r = net::once(
        Method::PUT,
        gw.proxy,
        "/users/1",
        &[("content-type", "application/json")],
        r#"{"name":"load"}"#,
    )
    .await
    .map_err(|e| format!("write through gateway: {e}"))?;
    let token = r
        .header("consistency-token")
        .ok_or_else(|| format!("no token on write ({}): {:?}", r.status, r.body))?
        .to_owned();
    // Wait until the projection covers it (a read is answered from `projection`).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = net::once(
            Method::GET,
            gw.proxy,
            "/users/1",
            &[("consistency-token", &token)],
            "",
        )
        .await
        {
            if r.header("consistency-source") == Some("projection") {
                return Ok(token);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the projection never covered the token".into())
}

/// Runs `run` and fills in the proxy's CPU and the two cores' busy figures.
async fn measure<F, Fut>(pid: Option<u32>, cores: (usize, usize), run: F) -> RunResult
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = RunResult>,
{
    let (proxy_core, tool_core) = cores;
    let before = pid.map(procs::cpu_seconds);
    let cores_before = cores::sample();
    let mut r = run().await;
    let cores_after = cores::sample();
    r.proxy_core_busy = cores::busy(&cores_before, &cores_after, proxy_core);
    r.tool_core_busy = cores::busy(&cores_before, &cores_after, tool_core);
    if let (Some(pid), Some(before)) = (pid, before) {
        r.proxy_cpu_s = procs::cpu_seconds(pid) - before;
        if r.ok > 0 {
            r.proxy_cpu_us_per_req = r.proxy_cpu_s * 1e6 / r.ok as f64;
        }
        if r.elapsed_s > 0.0 {
            r.proxy_share = r.proxy_cpu_s / r.elapsed_s;
        }
    }
    r.bound = cores::bound(r.proxy_share, r.tool_core_busy).to_owned();
    r
}

/// Runs the scenario and writes its JSON.
pub async fn run(args: FreshArgs) -> Result<(), String> {
    let dir = &args.scratch;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let duration = Duration::from_secs_f64(args.duration_s);
    let core = Some(args.proxy_core);

    let mem_addrs = gateway::addresses().map_err(|e| e.to_string())?;
    let redis_gw_addrs = gateway::addresses().map_err(|e| e.to_string())?;
    let baseline_addrs = match &args.baseline_gateway_bin {
        Some(_) => Some(gateway::addresses().map_err(|e| e.to_string())?),
        None => None,
    };
    let mut push_to = vec![mem_addrs.1];
    if let Some(addrs) = baseline_addrs {
        push_to.push(addrs.1);
    }
    if args.redis {
        push_to.push(redis_gw_addrs.1);
    }
    let backend = Backend::start(Duration::ZERO, 1, push_to.clone())
        .await
        .map_err(|e| e.to_string())?;
    // The read side every proxy forwards to: a one-worker nginx answering from memory,
    // on the tool's core. The demo backend's command service mints the token and its
    // projector pushes instance `r0`'s checkpoint, which the gateway applies to `r0`
    // = the origin.
    let origin_addr = std::net::SocketAddr::from((
        [127, 0, 0, 1],
        procs::free_port().map_err(|e| e.to_string())?,
    ));
    let origin_dir = procs::scratch(dir, "origin").map_err(|e| e.to_string())?;
    let origin = nginx::start_origin(
        &args.nginx_bin,
        &origin_dir,
        origin_addr,
        Some(args.tool_core),
    )
    .await?;
    let spec = GatewaySpec {
        command: backend.command,
        reads: vec![origin_addr],
        max_held_reads: 10_000,
        max_connections: 10_000,
        max_wait: "1s".into(),
        on_timeout: "error".into(),
        cache: false,
        redis: None,
    };
    let tidemark =
        gateway::start(&args.gateway_bin, &spec, mem_addrs, core, dir, "tidemark").await?;
    let nginx_addr = std::net::SocketAddr::from((
        [127, 0, 0, 1],
        procs::free_port().map_err(|e| e.to_string())?,
    ));
    let nginx_dir = procs::scratch(dir, "nginx").map_err(|e| e.to_string())?;
    let nginx = nginx::start(&args.nginx_bin, &nginx_dir, nginx_addr, origin_addr, core).await?;

    // The stack's floor: a bare hyper proxy, same core, same upstream.
    let floor_addr = std::net::SocketAddr::from((
        [127, 0, 0, 1],
        procs::free_port().map_err(|e| e.to_string())?,
    ));
    let floor = start_floor(dir, floor_addr, origin_addr, core).await?;

    let baseline = match (&args.baseline_gateway_bin, baseline_addrs) {
        (Some(bin), Some(addrs)) => {
            Some(gateway::start(bin, &spec, addrs, core, dir, "tidemark-baseline").await?)
        }
        _ => None,
    };

    let mut redis_proc: Option<Proc> = None;
    let mut redis_gw = None;
    let mut redis_addr = None;
    if args.redis {
        let addr = std::net::SocketAddr::from((
            [127, 0, 0, 1],
            procs::free_port().map_err(|e| e.to_string())?,
        ));
        let rdir = procs::scratch(dir, "redis").map_err(|e| e.to_string())?;
        redis_proc = Some(redis::start(&rdir, addr, Some(0)).await?);
        let mut rspec = spec.clone();
        rspec.redis = Some(format!("redis://{addr}"));
        redis_gw = Some(
            gateway::start(
                &args.gateway_bin,
                &rspec,
                redis_gw_addrs,
                core,
                dir,
                "tidemark-redis",
            )
            .await?,
        );
        redis_addr = Some(addr);
    }

    let token = token_for(&tidemark).await?;
    let headers = vec![("consistency-token".to_owned(), token.clone())];
    let mut targets = vec![
        Proxied {
            target: Target {
                name: "direct".into(),
                addr: origin_addr,
                path: "/users/1".into(),
                headers: headers.clone(),
            },
            pid: None,
        },
        Proxied {
            target: Target {
                name: "nginx".into(),
                addr: nginx_addr,
                path: "/users/1".into(),
                headers: headers.clone(),
            },
            pid: Some(nginx.pid()),
        },
        Proxied {
            target: Target {
                name: "hyper-floor".into(),
                addr: floor_addr,
                path: "/users/1".into(),
                headers: headers.clone(),
            },
            pid: Some(floor.pid()),
        },
        Proxied {
            target: Target {
                name: "tidemark".into(),
                addr: tidemark.proxy,
                path: "/users/1".into(),
                headers: headers.clone(),
            },
            pid: Some(tidemark.proc.pid()),
        },
    ];
    if let Some(gw) = &baseline {
        let token = token_for(gw).await?;
        targets.push(Proxied {
            target: Target {
                name: "tidemark-baseline".into(),
                addr: gw.proxy,
                path: "/users/1".into(),
                headers: vec![("consistency-token".to_owned(), token)],
            },
            pid: Some(gw.proc.pid()),
        });
    }
    if let Some(gw) = &redis_gw {
        let token = token_for(gw).await?;
        targets.push(Proxied {
            target: Target {
                name: "tidemark-redis".into(),
                addr: gw.proxy,
                path: "/users/1".into(),
                headers: vec![("consistency-token".to_owned(), token)],
            },
            pid: Some(gw.proc.pid()),
        });
    }
    let mut source_check = BTreeMap::new();
    for p in &targets {
        let hdrs: Vec<(&str, &str)> = p
            .target
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = net::once(Method::GET, p.target.addr, &p.target.path, &hdrs, "").await;
        let seen = match r {
            Ok(r) => format!(
                "{} source={}",
                r.status,
                r.header("consistency-source").unwrap_or("-")
            ),
            Err(e) => format!("error: {e}"),
        };
        source_check.insert(p.target.name.clone(), seen);
    }

    eprintln!("fresh: warm-up");
    for p in &targets {
        let _ = generator::closed_loop(
            &p.target,
            Duration::from_secs(1),
            args.connections,
            2_000_000,
        )
        .await;
    }

    let mut runs: Vec<RunResult> = Vec::new();
    let mut redis_reads = 0u64;
    let mut redis_cmds: BTreeMap<String, u64> = BTreeMap::new();
    let mut redis_seconds = 0.0;
    let mut redis_measure =
        |r: &RunResult, before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>| {
            redis_reads += r.sent;
            redis_seconds += r.elapsed_s;
            for (k, v) in redis::delta(before, after) {
                *redis_cmds.entry(k).or_default() += v;
            }
        };

    let cores = (args.proxy_core, args.tool_core);
    for rep in 0..args.repeats {
        for p in &targets {
            eprintln!("fresh: max throughput {} (run {})", p.target.name, rep + 1);
            let before = match (p.target.name.as_str(), redis_addr) {
                ("tidemark-redis", Some(a)) => redis::command_calls(a).await.ok(),
                _ => None,
            };
            let r = measure(p.pid, cores, || {
                generator::closed_loop(&p.target, duration, args.connections, 50_000_000)
            })
            .await;
            if let (Some(before), Some(a)) = (before, redis_addr) {
                if let Ok(after) = redis::command_calls(a).await {
                    redis_measure(&r, &before, &after);
                }
            }
            runs.push(r);
        }
    }
    // The cross-check: the same targets, proxies and origin, loaded by wrk.
    if !args.skip_wrk {
        for rep in 0..args.repeats {
            for p in &targets {
                if p.target.name == "tidemark-redis" {
                    continue;
                }
                eprintln!("fresh: wrk {} (run {})", p.target.name, rep + 1);
                runs.push(wrk_run(p, cores, args.connections, duration).await?);
            }
        }
    }
    // The proxy-bound maxima: each proxy capped in turn, the same two loads.
    let cap_note = if args.cpu_cap > 0.0 {
        match capped_runs(&targets, &args, cores, duration, &mut runs).await {
            Ok(note) => note,
            Err(e) => {
                eprintln!("fresh: no capped runs: {e}");
                format!("not run: {e}")
            }
        }
    } else {
        "not run (--cpu-cap 0)".to_owned()
    };
    let nginx_max = median(
        &runs
            .iter()
            .filter(|r| r.target == "nginx" && r.mode == "closed")
            .map(|r| r.achieved_rps)
            .collect::<Vec<_>>(),
    );
    for (label, fraction) in [("50%", 0.5), ("90%", 0.9)] {
        let rate = (nginx_max * fraction).max(100.0);
        for rep in 0..args.repeats {
            for p in &targets {
                eprintln!(
                    "fresh: {label} of nginx max ({rate:.0}/s) {} (run {})",
                    p.target.name,
                    rep + 1
                );
                let before = match (p.target.name.as_str(), redis_addr) {
                    ("tidemark-redis", Some(a)) => redis::command_calls(a).await.ok(),
                    _ => None,
                };
                let mut r = measure(p.pid, cores, || {
                    generator::open_loop(&p.target, rate, duration, args.connections)
                })
                .await;
                if let (Some(before), Some(a)) = (before, redis_addr) {
                    if let Ok(after) = redis::command_calls(a).await {
                        redis_measure(&r, &before, &after);
                    }
                }
                r.mode = format!("open {label}");
                runs.push(r);
            }
        }
    }

    let mut redis_figures = None;
    if let Some(a) = redis_addr {
        // The same time idle, to tell background traffic (resync) from per-read traffic.
        let idle = Duration::from_secs_f64(redis_seconds.clamp(1.0, 10.0));
        let before = redis::command_calls(a).await.unwrap_or_default();
        tokio::time::sleep(idle).await;
        let after = redis::command_calls(a).await.unwrap_or_default();
        let total: u64 = redis_cmds.values().sum();
        redis_figures = Some(RedisFigures {
            reads: redis_reads,
            commands_total: total,
            commands_per_read: if redis_reads > 0 {
                total as f64 / redis_reads as f64
            } else {
                0.0
            },
            commands: redis_cmds,
            idle_commands: redis::delta(&before, &after),
            idle_seconds: idle.as_secs_f64(),
        });
    }

    let mut figures = BTreeMap::new();
    for p in &targets {
        let name = &p.target.name;
        let mine: Vec<&RunResult> = runs.iter().filter(|r| &r.target == name).collect();
        let max: Vec<&&RunResult> = mine.iter().filter(|r| r.mode == "closed").collect();
        let mut f = TargetFigures {
            max_rps_runs: max.iter().map(|r| r.achieved_rps).collect(),
            ..TargetFigures::default()
        };
        f.max_rps_median = median(&f.max_rps_runs);
        f.proxy_share_median = median(&max.iter().map(|r| r.proxy_share).collect::<Vec<_>>());
        f.tool_core_busy_median = median(&max.iter().map(|r| r.tool_core_busy).collect::<Vec<_>>());
        f.bound_runs = max.iter().map(|r| r.bound.clone()).collect();
        let by_wrk: Vec<&&RunResult> = mine.iter().filter(|r| r.mode == "wrk").collect();
        if !by_wrk.is_empty() {
            let med = |g: &dyn Fn(&RunResult) -> f64| {
                median(&by_wrk.iter().map(|r| g(r)).collect::<Vec<_>>())
            };
            f.wrk = Some(WrkFigures {
                rps_runs: by_wrk.iter().map(|r| r.achieved_rps).collect(),
                rps_median: med(&|r| r.achieved_rps),
                proxy_cpu_us_per_req_median: med(&|r| r.proxy_cpu_us_per_req),
                proxy_share_median: med(&|r| r.proxy_share),
                tool_core_busy_median: med(&|r| r.tool_core_busy),
                bound_runs: by_wrk.iter().map(|r| r.bound.clone()).collect(),
                p50_us_median: med(&|r| r.latency.p50_us as f64),
                p99_us_median: med(&|r| r.latency.p99_us as f64),
                errors: by_wrk.iter().map(|r| r.errors).sum(),
            });
        }
        let capped = |mode: &str| -> Vec<&RunResult> {
            mine.iter().filter(|r| r.mode == mode).copied().collect()
        };
        let (closed, by_wrk) = (capped("closed capped"), capped("wrk capped"));
        if !closed.is_empty() {
            f.capped = Some(CappedFigures {
                cpu_cap: args.cpu_cap,
                closed: capped_load(&closed, args.cpu_cap),
                wrk: (!by_wrk.is_empty()).then(|| capped_load(&by_wrk, args.cpu_cap)),
            });
        }
        f.proxy_cpu_us_per_req_median = median(
            &max.iter()
                .map(|r| r.proxy_cpu_us_per_req)
                .collect::<Vec<_>>(),
        );
        for label in ["50%", "90%"] {
            let open: Vec<&&RunResult> = mine
                .iter()
                .filter(|r| r.mode == format!("open {label}"))
                .collect();
            let mut merged = stats::histogram();
            for r in &open {
                if let Some(h) = &r.hist {
                    let _ = merged.add(h);
                }
            }
            f.open.insert(
                label.to_owned(),
                OpenFigures {
                    rate_rps: open.first().map(|r| r.offered_rps).unwrap_or(0.0),
                    p50_us_median: median(
                        &open
                            .iter()
                            .map(|r| r.latency.p50_us as f64)
                            .collect::<Vec<_>>(),
                    ),
                    p99_us_median: median(
                        &open
                            .iter()
                            .map(|r| r.latency.p99_us as f64)
                            .collect::<Vec<_>>(),
                    ),
                    p999_us_median: median(
                        &open
                            .iter()
                            .map(|r| r.latency.p999_us as f64)
                            .collect::<Vec<_>>(),
                    ),
                    errors: open.iter().map(|r| r.errors).sum(),
                    not_sent: open.iter().map(|r| r.not_sent).sum(),
                    proxy_cpu_us_per_req_median: median(
                        &open
                            .iter()
                            .map(|r| r.proxy_cpu_us_per_req)
                            .collect::<Vec<_>>(),
                    ),
                    merged: stats::summary(&merged),
                },
            );
        }
        figures.insert(name.clone(), f);
    }
    let report = FreshReport {
        settings: args.clone(),
        nginx_max_median_rps: nginx_max,
        targets: figures,
        runs,
        redis: redis_figures,
        source_check,
        cap: cap_note,
    };
    write_json(&args.out, &report)?;
    drop(redis_gw);
    drop(redis_proc);
    drop(nginx);
    drop(floor);
    drop(origin);
    drop(baseline);
    drop(tidemark);
    drop(backend);
    Ok(())
}

/// One `wrk` run against `p`, measured.
async fn wrk_run(
    p: &Proxied,
    cores: (usize, usize),
    connections: usize,
    duration: Duration,
) -> Result<RunResult, String> {
    let mut failed = None;
    let r = measure(p.pid, cores, || async {
        match wrk::run(
            &p.target.name,
            p.target.addr,
            &p.target.path,
            &p.target.headers,
            connections,
            duration,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                failed = Some(e);
                RunResult::default()
            }
        }
    })
    .await;
    match failed {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

/// The capped maxima (`--cpu-cap`): for each proxy (not `tidemark-redis`, whose Redis
/// shares the tool's core), every repeat, a closed-loop run and a `wrk` run with the
/// proxy's processes in a cgroup capped at `cpu_cap` of a core. Each run records the
/// cap, the share of periods the kernel throttled the proxy, and which side bound it
/// (the proxy when it used >= 95% of its cap and the tool core was under 95%). Returns
/// how the proxies were capped.
async fn capped_runs(
    targets: &[Proxied],
    args: &FreshArgs,
    cores: (usize, usize),
    duration: Duration,
    runs: &mut Vec<RunResult>,
) -> Result<String, String> {
    let mut cap = CpuCap::new("proxy", args.cpu_cap)?;
    let note = format!(
        "{} = {:.0} of every {} µs ({:.2} of a core)",
        cap.kind(),
        args.cpu_cap * cap.period_us() as f64,
        cap.period_us(),
        args.cpu_cap
    );
    for rep in 0..args.repeats {
        for p in targets {
            let Some(pid) = p.pid else { continue };
            if p.target.name == "tidemark-redis" {
                continue;
            }
            cap.enter(&procs::family(pid))?;
            for mode in ["closed", "wrk"] {
                if mode == "wrk" && args.skip_wrk {
                    continue;
                }
                eprintln!(
                    "fresh: capped at {:.2} of a core, {mode} {} (run {})",
                    args.cpu_cap,
                    p.target.name,
                    rep + 1
                );
                let before = cap.throttle();
                let mut r = if mode == "closed" {
                    measure(p.pid, cores, || {
                        generator::closed_loop(&p.target, duration, args.connections, 50_000_000)
                    })
                    .await
                } else {
                    match wrk_run(p, cores, args.connections, duration).await {
                        Ok(r) => r,
                        Err(e) => {
                            cap.leave();
                            return Err(e);
                        }
                    }
                };
                r.throttled_fraction = cap::throttled_fraction(before, cap.throttle());
                r.cpu_cap = args.cpu_cap;
                r.bound = cores::bound(r.proxy_share / args.cpu_cap, r.tool_core_busy).to_owned();
                r.mode = format!("{mode} capped");
                runs.push(r);
            }
            cap.leave();
        }
    }
    Ok(note)
}

/// Medians of the capped runs of one load.
fn capped_load(runs: &[&RunResult], cpu_cap: f64) -> CappedLoad {
    let med =
        |g: &dyn Fn(&RunResult) -> f64| median(&runs.iter().map(|r| g(r)).collect::<Vec<_>>());
    CappedLoad {
        rps_runs: runs.iter().map(|r| r.achieved_rps).collect(),
        rps_median: med(&|r| r.achieved_rps),
        proxy_cpu_us_per_req_median: med(&|r| r.proxy_cpu_us_per_req),
        cap_used_median: med(&|r| r.proxy_share / cpu_cap),
        throttled_fraction_median: med(&|r| r.throttled_fraction),
        tool_core_busy_median: med(&|r| r.tool_core_busy),
        bound_runs: runs.iter().map(|r| r.bound.clone()).collect(),
        errors: runs.iter().map(|r| r.errors).sum(),
    }
}

/// Starts `tidemark-load floor-proxy` (this same binary) pinned to `core`.
async fn start_floor(
    dir: &Path,
    listen: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    core: Option<usize>,
) -> Result<Proc, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let args = vec![
        "floor-proxy".to_owned(),
        "--listen".to_owned(),
        listen.to_string(),
        "--upstream".to_owned(),
        upstream.to_string(),
    ];
    let proc = Proc::spawn(
        "hyper-floor",
        &exe.display().to_string(),
        &args,
        &[],
        core,
        &dir.join("hyper-floor.out"),
    )
    .map_err(|e| format!("start the floor proxy: {e}"))?;
    if procs::wait_listening(listen, Duration::from_secs(10)).await {
        Ok(proc)
    } else {
        Err(format!("the floor proxy is not listening on {listen}"))
    }
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}
