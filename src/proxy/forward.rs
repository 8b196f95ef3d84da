//! Upstreams and forwarding: instance choice (least outstanding requests, ejected
//! instances last), the response-header timeout (the wait for a free connection
//! included), passive health, the one retry of an idempotent read, and error mapping
//! (connect failure -> 502, timeout -> 504), each error naming the instance.
//!
//! Passive health: an instance whose connection failed (refused, reset before any
//! response byte, no connection within `connect_timeout`) is ejected for the
//! upstream's `eject_for`: it ranks after every other instance, so it is used only
//! when every instance is ejected (or it alone can serve a held read).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use metrics::{Counter, Histogram};
use tokio::time::Instant;

use super::client::{ClientSettings, Outstanding, Pool, PooledBody, SendError};
use super::failures::FailureLog;
use super::{Body, BoxError};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;

/// What one exchange with an instance gives: the response, its body streamed.
type Exchanged = Result<Response<PooledBody>, SendError>;

/// How much an ejected instance's load counts: more than any real load.
const EJECTED_LOAD: usize = 1 << 32;

/// One instance of an upstream.
#[derive(Debug)]
pub struct Instance {
    pub name: String,
    /// Scheme and authority, and an optional base path prefixed to request paths.
    pub base: Uri,
    /// Requests sent and not yet finished (response body done or dropped), those
    /// waiting for a free connection included.
    pub outstanding: Arc<AtomicUsize>,
    /// Nanoseconds from the upstream's epoch to the end of the instance's ejection
    /// (0: never ejected).
    ejected_until: AtomicU64,
    /// Its connections.
    pool: Pool,
    metrics: InstanceMetrics,
    failures: FailureLog,
}

/// A named upstream: its instances, each with its connection pool.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub instances: Vec<Instance>,
    timeout: Duration,
    eject_for: Duration,
    epoch: Instant,
    rotation: AtomicUsize,
}

/// An instance's metric handles, labelled once (`upstream`, `instance`: both from
/// the config, so the label sets are bounded).
#[derive(Debug)]
struct InstanceMetrics {
    duration: Histogram,
    timeouts: Counter,
    connect_errors: Counter,
    protocol_errors: Counter,
}

impl InstanceMetrics {
    fn new(upstream: &str, instance: &str) -> InstanceMetrics {
        let errors = |kind: &'static str| metrics::counter!("tidemark_upstream_errors_total", "upstream" => upstream.to_string(), "instance" => instance.to_string(), "kind" => kind);
        InstanceMetrics {
            duration: metrics::histogram!("tidemark_upstream_duration_seconds", "upstream" => upstream.to_string(), "instance" => instance.to_string()),
            timeouts: errors("timeout"),
            connect_errors: errors("connect"),
            protocol_errors: errors("protocol"),
        }
    }
}

impl Upstream {
    /// The upstream of `config`; fails only when its TLS client config cannot be
    /// made (an `https://` instance).
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, tokio_rustls::rustls::Error> {
        let https = config
            .instances
            .iter()
            .any(|i| i.url.scheme_str() == Some("https"));
        let tls = if https {
            Some(super::client::tls::client_config(
                &config.name,
                &config.ca_certs,
            )?)
        } else {
            None
        };
        let settings = ClientSettings {
            tls,
            connect_timeout: config.connect_timeout,
            pool_idle_timeout: config.pool_idle_timeout,
            pool_max_idle: config.pool_max_idle,
            max_connections: config.max_connections,
        };
        let epoch = Instant::now();
        Ok(Upstream {
            name: config.name.clone(),
            instances: config
                .instances
                .iter()
                .map(|i| {
                    let queued = metrics::gauge!("tidemark_upstream_queued_requests", "upstream" => config.name.clone(), "instance" => i.name.clone());
                    Instance {
                        name: i.name.clone(),
                        base: i.url.clone(),
                        outstanding: Arc::new(AtomicUsize::new(0)),
                        ejected_until: AtomicU64::new(0),
                        pool: Pool::new(&i.url, settings.clone(), queued),
                        metrics: InstanceMetrics::new(&config.name, &i.name),
                        failures: FailureLog::new(epoch),
                    }
                })
                .collect(),
            timeout: config.timeout,
            eject_for: config.eject_for,
            epoch,
            rotation: AtomicUsize::new(0),
        })
    }

    /// A rotating counter, to break ties between equally loaded instances.
    pub fn next_tie_break(&self) -> usize {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }

    /// Outstanding requests of instance `i`, plus 2^32 while it is ejected: the
    /// least-outstanding choice (here and in the gate) takes an ejected instance only
    /// when no other will do.
    pub fn outstanding(&self, i: usize) -> usize {
        let load = self.instances[i].outstanding.load(Ordering::Relaxed);
        if self.is_ejected(i) {
            load.saturating_add(EJECTED_LOAD)
        } else {
            load
        }
    }

    /// Instance `i` is out of the rotation (a connection failure in the last
    /// `eject_for`).
    pub fn is_ejected(&self, i: usize) -> bool {
        // Never ejected (the common case): no clock read.
        let until = self.instances[i].ejected_until.load(Ordering::Relaxed);
        until != 0 && self.since_epoch() < until
    }

    fn since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn eject(&self, i: usize) {
        if self.eject_for.is_zero() {
            return;
        }
        let until = self
            .since_epoch()
            .saturating_add(u64::try_from(self.eject_for.as_nanos()).unwrap_or(u64::MAX));
        self.instances[i]
            .ejected_until
            .store(until.max(1), Ordering::Relaxed);
    }

    /// The instance with the fewest outstanding requests (ties rotate; ejected
    /// instances last).
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
        let now = Instant::now();
        self.send_once(i, self.exchange(i, req), now, now + self.timeout)
            .await
            .map_err(Failed::into_error)
    }

    /// The exchange of `req` with instance `i`, not yet started. Boxed: its state
    /// (the request, the wait for a connection, hyper's send: 912 bytes) is allocated
    /// when a request is forwarded, not carried inline by every request's future,
    /// held reads included; and the request is moved into the box here, so no
    /// future above keeps a copy of it.
    fn exchange(
        &self,
        i: usize,
        req: Request<Body>,
    ) -> std::pin::Pin<Box<impl Future<Output = Exchanged> + Send + '_>> {
        Box::pin(self.instances[i].pool.send(req))
    }

    /// Sends an idempotent read (`GET`/`HEAD` without a body) to instance `i`; when
    /// its connection fails (refused, reset before any response byte, connect
    /// timeout), sends it once more to the instance `retry(i)` names, if any. Returns
    /// the instance that answered (or failed last). Both tries share the upstream's
    /// `timeout`. Other requests are sent once, as [`Upstream::send`] does.
    ///
    /// Not an `async fn`: the first try's exchange is made (boxed) here and holds the
    /// request; the returned future holds the box, not a copy of the request, and
    /// awaits the try from inside (a future captured ready-made is kept twice: as
    /// the capture and as the awaited copy).
    pub fn send_read<'a>(
        &'a self,
        i: usize,
        req: Request<Body>,
        retry: impl FnOnce(usize) -> Option<usize> + 'a,
    ) -> impl Future<Output = (usize, Result<Response<Body>, GatewayError>)> + 'a {
        let now = Instant::now();
        let deadline = now + self.timeout;
        let retryable = self.instances.len() > 1
            && matches!(*req.method(), Method::GET | Method::HEAD)
            && req.body().is_end_stream();
        // A copy of the head for the second try (only where one is possible), boxed
        // like the second try itself: every read's future stays as small as a
        // plain send's.
        let copy = retryable.then(|| {
            let mut copy = Box::new(Request::new(()));
            *copy.method_mut() = req.method().clone();
            *copy.uri_mut() = req.uri().clone();
            *copy.version_mut() = req.version();
            *copy.headers_mut() = req.headers().clone();
            copy
        });
        let first = self.exchange(i, req);
        async move {
            let failed = match self.send_once(i, first, now, deadline).await {
                Ok(resp) => return (i, Ok(resp)),
                Err(failed) => failed,
            };
            // Boxed: the rare path stays out of every read's future.
            Box::pin(self.retry_read(i, failed, copy, retry, deadline)).await
        }
    }

    /// The second try of [`Upstream::send_read`], after `failed`.
    async fn retry_read(
        &self,
        i: usize,
        failed: Failed,
        copy: Option<Box<Request<()>>>,
        retry: impl FnOnce(usize) -> Option<usize>,
        deadline: Instant,
    ) -> (usize, Result<Response<Body>, GatewayError>) {
        let (Some(copy), true) = (copy, failed.connection_failed) else {
            return (i, Err(failed.into_error()));
        };
        let Some(j) = retry(i).filter(|&j| j != i && j < self.instances.len()) else {
            return (i, Err(failed.into_error()));
        };
        tracing::debug!(upstream = %self.name, from = %self.instances[i].name, to = %self.instances[j].name, "retrying a read on another instance");
        metrics::counter!("tidemark_upstream_retries_total", "upstream" => self.name.clone())
            .increment(1);
        let req = (*copy).map(|()| super::empty());
        let second = self
            .send_once(j, self.exchange(j, req), Instant::now(), deadline)
            .await;
        (j, second.map_err(Failed::into_error))
    }

    /// One try on instance `i` (its `exchange`, from [`Upstream::exchange`]), started
    /// at `started` (the caller's clock read) and bounded by `deadline`: failures are
    /// counted, logged (rate-limited) and, for a failed connection, eject the
    /// instance.
    async fn send_once(
        &self,
        i: usize,
        exchange: std::pin::Pin<Box<impl Future<Output = Exchanged>>>,
        started: Instant,
        deadline: Instant,
    ) -> Result<Response<Body>, Failed> {
        let instance = &self.instances[i];
        let guard = Outstanding::new(instance.outstanding.clone());
        let sent = tokio::time::timeout_at(deadline, exchange).await;
        instance
            .metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        let fail = |error: GatewayError, kind: &'static str, connection_failed: bool| {
            instance
                .failures
                .failure(&self.name, &instance.name, kind, &error);
            if connection_failed {
                self.eject(i);
            }
            Failed {
                error,
                connection_failed,
            }
        };
        let resp = match sent {
            Err(_) => {
                instance.metrics.timeouts.increment(1);
                let error = GatewayError::UpstreamTimeout {
                    upstream: self.name.clone(),
                    instance: instance.name.clone(),
                    after: self.timeout,
                };
                return Err(fail(error, "timeout", false));
            }
            Ok(Err(SendError::Uri(e))) => {
                return Err(Failed {
                    error: GatewayError::BadRequest(format!("cannot build the upstream URI: {e}")),
                    connection_failed: false,
                });
            }
            Ok(Err(e)) => {
                let connect = e.is_connect();
                let connection_failed = e.connection_failed();
                let source: BoxError = Box::new(e);
                let (upstream, inst) = (self.name.clone(), instance.name.clone());
                return Err(if connect {
                    instance.metrics.connect_errors.increment(1);
                    let error = GatewayError::UpstreamConnect {
                        upstream,
                        instance: inst,
                        source,
                    };
                    fail(error, "connect", true)
                } else {
                    instance.metrics.protocol_errors.increment(1);
                    let error = GatewayError::Upstream {
                        upstream,
                        instance: inst,
                        source,
                    };
                    fail(error, "protocol", connection_failed)
                });
            }
            Ok(Ok(resp)) => resp,
        };
        Ok(resp.map(move |body| body.count(guard).boxed_unsync()))
    }
}

/// A failed try: the error answered, and whether the connection failed (the request
/// may be retried elsewhere).
struct Failed {
    error: GatewayError,
    connection_failed: bool,
}

impl Failed {
    fn into_error(self) -> GatewayError {
        self.error
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
