//! Upstreams and forwarding: instance choice (least outstanding requests), the
//! response-header timeout (the wait for a free connection included), and error
//! mapping (connect failure -> 502, timeout -> 504).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use metrics::{Counter, Histogram};

use super::client::{ClientSettings, Pool, SendError};
use super::{Body, BoxError};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;

/// One instance of an upstream.
#[derive(Debug)]
pub struct Instance {
    pub name: String,
    /// Scheme and authority, and an optional base path prefixed to request paths.
    pub base: Uri,
    /// Requests sent and not yet finished (response body done or dropped), those
    /// waiting for a free connection included.
    pub outstanding: Arc<AtomicUsize>,
    /// Its connections.
    pool: Pool,
}

/// A named upstream: its instances, each with its connection pool.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub instances: Vec<Instance>,
    timeout: Duration,
    rotation: AtomicUsize,
    metrics: UpstreamMetrics,
}

/// The upstream's metric handles, labelled once.
#[derive(Debug)]
struct UpstreamMetrics {
    duration: Histogram,
    timeouts: Counter,
    connect_errors: Counter,
    protocol_errors: Counter,
}

impl UpstreamMetrics {
    fn new(name: &str) -> UpstreamMetrics {
        let errors = |kind: &'static str| metrics::counter!("tidemark_upstream_errors_total", "upstream" => name.to_string(), "kind" => kind);
        UpstreamMetrics {
            duration: metrics::histogram!("tidemark_upstream_duration_seconds", "upstream" => name.to_string()),
            timeouts: errors("timeout"),
            connect_errors: errors("connect"),
            protocol_errors: errors("protocol"),
        }
    }
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Upstream {
        let settings = ClientSettings {
            connect_timeout: config.connect_timeout,
            pool_idle_timeout: config.pool_idle_timeout,
            pool_max_idle: config.pool_max_idle,
            max_connections: config.max_connections,
        };
        let queued =
            metrics::gauge!("tidemark_upstream_queued_requests", "upstream" => config.name.clone());
        Upstream {
            name: config.name.clone(),
            instances: config
                .instances
                .iter()
                .map(|i| Instance {
                    name: i.name.clone(),
                    base: i.url.clone(),
                    outstanding: Arc::new(AtomicUsize::new(0)),
                    pool: Pool::new(&i.url, settings.clone(), queued.clone()),
                })
                .collect(),
            timeout: config.timeout,
            rotation: AtomicUsize::new(0),
            metrics: UpstreamMetrics::new(&config.name),
        }
    }

    /// A rotating counter, to break ties between equally loaded instances.
    pub fn next_tie_break(&self) -> usize {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }

    /// Outstanding requests of instance `i`.
    pub fn outstanding(&self, i: usize) -> usize {
        self.instances[i].outstanding.load(Ordering::Relaxed)
    }

    /// The instance with the fewest outstanding requests (ties rotate).
    pub fn pick(&self) -> usize {
        let n = self.instances.len();
        let start = self.next_tie_break() % n.max(1);
        (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.outstanding(i))
            .unwrap_or(0)
    }

    /// Sends `req` (its URI's path and query are kept) to instance `i` and returns the
    /// response with its body streamed; the instance counts the request as outstanding
    /// until the response body ends or is dropped. The upstream's `timeout` bounds the
    /// wait for a free connection and for the response headers together.
    pub async fn send(&self, i: usize, req: Request<Body>) -> Result<Response<Body>, GatewayError> {
        let instance = &self.instances[i];
        let guard = Outstanding::new(instance.outstanding.clone());
        let started = tokio::time::Instant::now();
        // Boxed: the exchange's state (request, connect, handshake: ~2.3 KB) is then
        // allocated when a read is forwarded, not carried inline by every request's
        // future, held reads included.
        let sent = tokio::time::timeout(self.timeout, Box::pin(instance.pool.send(req))).await;
        self.metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        let resp = match sent {
            Err(_) => {
                self.metrics.timeouts.increment(1);
                return Err(GatewayError::UpstreamTimeout {
                    upstream: self.name.clone(),
                    after: self.timeout,
                });
            }
            Ok(Err(SendError::Uri(e))) => {
                return Err(GatewayError::BadRequest(format!(
                    "cannot build the upstream URI: {e}"
                )));
            }
            Ok(Err(e)) => {
                let connect = e.is_connect();
                let source: BoxError = Box::new(e);
                return Err(if connect {
                    self.metrics.connect_errors.increment(1);
                    GatewayError::UpstreamConnect {
                        upstream: self.name.clone(),
                        source,
                    }
                } else {
                    self.metrics.protocol_errors.increment(1);
                    GatewayError::Upstream {
                        upstream: self.name.clone(),
                        source,
                    }
                });
            }
            Ok(Ok(resp)) => resp,
        };
        Ok(resp.map(move |body| {
            body.map_err(|e| -> BoxError { Box::new(e) })
                .map_frame(move |frame| {
                    let _ = &guard;
                    frame
                })
                .boxed_unsync()
        }))
    }
}

/// Counts a request as outstanding while alive.
#[derive(Debug)]
struct Outstanding(Arc<AtomicUsize>);

impl Outstanding {
    fn new(counter: Arc<AtomicUsize>) -> Outstanding {
        counter.fetch_add(1, Ordering::Relaxed);
        Outstanding(counter)
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use http::uri::PathAndQuery;

    use crate::proxy::client::upstream_uri;

    #[test]
    fn upstream_uri_joins_base_path_and_keeps_the_query() {
        let pq: PathAndQuery = "/users/1?x=2".parse().unwrap();
        assert_eq!(
            upstream_uri("", Some(&pq)).unwrap().to_string(),
            "/users/1?x=2"
        );
        assert_eq!(
            upstream_uri("/api", Some(&pq)).unwrap().to_string(),
            "/api/users/1?x=2"
        );
        assert_eq!(upstream_uri("/api", None).unwrap().to_string(), "/api/");
        assert_eq!(upstream_uri("", None).unwrap().to_string(), "/");
    }
}
