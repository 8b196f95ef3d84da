//! Per-route metric handles, so a request does not build label strings and look its
//! series up in the registry on every count.
//!
//! Each handle is registered on first use (a route that never saw a cache hit has no
//! `cache_hits_total` series, as before), then reused: one atomic add per count.

use std::sync::OnceLock;

use metrics::{Counter, Histogram};

/// `source` label values in slot order (`""` for writes, passthrough and errors).
const SOURCES: [&str; 5] = ["", "projection", "cache", "primary", "stale"];
/// `status` label values in slot order.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The handles of one route.
#[derive(Debug)]
pub(super) struct RouteMetrics {
    route: String,
    kind: &'static str,
    requests: [OnceLock<Counter>; SOURCES.len() * CLASSES.len()],
    read_wait: OnceLock<Histogram>,
    cache_hits: OnceLock<Counter>,
    /// The status page's figures of the route.
    pub(super) stats: crate::telemetry::route_stats::RouteStats,
}

impl RouteMetrics {
    /// Handles for route `route` of kind `kind` (`read`, `write`, `passthrough`).
    pub(super) fn new(route: &str, kind: &'static str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            kind,
            requests: Default::default(),
            read_wait: OnceLock::new(),
            cache_hits: OnceLock::new(),
            stats: Default::default(),
        }
    }

    /// `tidemark_requests_total{route,kind,source,status}` += 1.
    pub(super) fn request(&self, source: &'static str, status: http::StatusCode) {
        self.stats.answered(source, status.as_u16());
        let s = SOURCES.iter().position(|&x| x == source);
        let c = class_slot(status);
        match s {
            Some(s) => self.requests[s * CLASSES.len() + c]
                .get_or_init(|| {
                    metrics::counter!("tidemark_requests_total", "route" => self.route.clone(), "kind" => self.kind, "source" => SOURCES[s], "status" => CLASSES[c])
                })
                .increment(1),
            // Not a known source: count it the slow way rather than lose it.
            None => metrics::counter!("tidemark_requests_total", "route" => self.route.clone(), "kind" => self.kind, "source" => source, "status" => CLASSES[c]).increment(1),
        }
    }

    /// A read held `secs`: `tidemark_read_wait_seconds{route}` and the status page.
    pub(super) fn waited(&self, secs: f64) {
        self.stats.waited(secs);
        self.read_wait().record(secs);
    }

    /// `tidemark_read_wait_seconds{route}`.
    pub(super) fn read_wait(&self) -> &Histogram {
        self.read_wait.get_or_init(
            || metrics::histogram!("tidemark_read_wait_seconds", "route" => self.route.clone()),
        )
    }

    /// `tidemark_cache_hits_total{route}`.
    pub(super) fn cache_hit(&self) -> &Counter {
        self.cache_hits.get_or_init(
            || metrics::counter!("tidemark_cache_hits_total", "route" => self.route.clone()),
        )
    }
}

/// Slot of a status class (`2xx` -> 1).
fn class_slot(status: http::StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Source;

    #[test]
    fn every_gate_source_has_a_slot() {
        for s in [
            Source::Projection,
            Source::Cache,
            Source::Primary,
            Source::Stale,
        ] {
            assert!(SOURCES.contains(&s.as_str()), "{s:?}");
        }
    }

    #[test]
    fn counts_land_on_the_labelled_series() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let m = RouteMetrics::new("user", "read");
            m.request("projection", http::StatusCode::OK);
            m.request("projection", http::StatusCode::OK);
            m.request("", http::StatusCode::SERVICE_UNAVAILABLE);
            m.request("odd", http::StatusCode::OK);
            m.read_wait().record(0.25);
        });
        let text = handle.render();
        for line in [
            r#"tidemark_requests_total{route="user",kind="read",source="projection",status="2xx"} 2"#,
            r#"tidemark_requests_total{route="user",kind="read",source="",status="5xx"} 1"#,
            r#"tidemark_requests_total{route="user",kind="read",source="odd",status="2xx"} 1"#,
            r#"tidemark_read_wait_seconds_count{route="user"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(
            !text.contains("cache_hits"),
            "unused handle registered:\n{text}"
        );
    }
}
