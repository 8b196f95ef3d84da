//! Logs (tracing, `RUST_LOG` per-module levels, text or JSON lines), the Prometheus
//! metrics recorder and the metric families' descriptions, process metrics
//! ([`process`]), the ring of recent hold timeouts ([`recent`]), rate-limited log
//! lines ([`throttle`]), the access log ([`access`]) and the status page's per-route
//! figures ([`route_stats`]).

pub mod access;
pub mod process;
pub mod recent;
pub mod route_stats;
pub mod throttle;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub use recent::{RecentTimeouts, TimeoutEvent};

/// Histogram buckets (seconds) of `tidemark_read_wait_seconds` and
/// `tidemark_upstream_duration_seconds`: fine below 10 ms, where fresh reads and quick
/// releases live, coarse up to the longest sane `max_wait` or upstream timeout.
pub(crate) const WAIT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide Prometheus recorder once and returns its handle (the
/// same one for every gateway in the process). `None` if another recorder was
/// installed first.
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(&WAIT_BUCKETS).ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// The `# HELP` text of every family (the label sets are in README-observability.md).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "tidemark_requests_total",
        "Client requests answered, by route, kind (read|write|passthrough|none), source (projection|cache|primary|stale, reads only) and status class."
    );
    describe_histogram!(
        "tidemark_read_wait_seconds",
        Unit::Seconds,
        "How long reads were held before being answered, by route."
    );
    describe_gauge!(
        "tidemark_upstream_queued_requests",
        "Requests waiting for a free connection to an upstream instance (max_connections reached), by upstream and instance."
    );
    describe_gauge!(
        "tidemark_held_reads",
        "Reads held right now, waiting for a checkpoint, by projection."
    );
    describe_counter!(
        "tidemark_hold_timeouts_total",
        "Held reads that reached max_wait, by route and on_timeout action."
    );
    describe_counter!(
        "tidemark_tokens_minted_total",
        "Version tokens minted or merged."
    );
    describe_counter!(
        "tidemark_tokens_rejected_total",
        "Client tokens that failed verification, by reason."
    );
    describe_counter!(
        "tidemark_cache_hits_total",
        "Reads answered from the write-through cache, by route."
    );
    describe_gauge!(
        "tidemark_projection_lag_seconds",
        Unit::Seconds,
        "Age of the oldest write the instance's checkpoint does not cover yet."
    );
    describe_counter!(
        "tidemark_checkpoint_updates_total",
        "Checkpoint reports received, by projection and source (push|redis|header|poll)."
    );
    describe_counter!(
        "tidemark_store_errors_total",
        "Failed cache or Redis operations, by operation."
    );
    describe_counter!(
        "tidemark_upstream_errors_total",
        "Upstream failures, by upstream, instance (all kinds but bad_write_position) and kind (connect|timeout|protocol|bad_write_position|bad_checkpoint)."
    );
    describe_counter!(
        "tidemark_upstream_retries_total",
        "Reads sent again to another instance after the connection to the first failed, by upstream."
    );
    describe_counter!(
        "tidemark_unconsumed_positions_total",
        "Writes whose Write-Position names a log no projection consumes (no read waits for it), by route."
    );
    describe_histogram!(
        "tidemark_upstream_duration_seconds",
        Unit::Seconds,
        "Time from sending a request to an upstream to its response headers (or failure), by upstream and instance."
    );
}

/// Sets up logging: `RUST_LOG` filters (default `info`; per module, e.g.
/// `info,tidemark::access=debug`), JSON lines when `json`. Idempotent.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
