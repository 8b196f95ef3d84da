//! Upstreams and forwarding: instance choice (least outstanding requests), the
//! upstream URI, the response-header timeout, and error mapping (connect failure ->
//! 502, timeout -> 504).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;

use super::client::{self, ClientSettings, HttpClient};
use super::{Body, BoxError};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;

/// One instance of an upstream.
#[derive(Debug)]
pub struct Instance {
    pub name: String,
    /// Scheme and authority, and an optional base path prefixed to request paths.
    pub base: Uri,
    /// Requests sent and not yet finished (response body done or dropped).
    pub outstanding: Arc<AtomicUsize>,
}

/// A named upstream: its instances and its pooled client.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub instances: Vec<Instance>,
    client: HttpClient,
    timeout: Duration,
    rotation: AtomicUsize,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Upstream {
        let client = client::build(&ClientSettings {
            connect_timeout: config.connect_timeout,
            pool_idle_timeout: config.pool_idle_timeout,
            pool_max_idle: config.pool_max_idle,
        });
        Upstream {
            name: config.name.clone(),
            instances: config
                .instances
                .iter()
                .map(|i| Instance {
                    name: i.name.clone(),
                    base: i.url.clone(),
                    outstanding: Arc::new(AtomicUsize::new(0)),
                })
                .collect(),
            client,
            timeout: config.timeout,
            rotation: AtomicUsize::new(0),
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
    /// until the response body ends or is dropped.
    pub async fn send(
        &self,
        i: usize,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let instance = &self.instances[i];
        *req.uri_mut() = upstream_uri(&instance.base, req.uri().path_and_query())
            .map_err(|e| GatewayError::BadRequest(format!("cannot build the upstream URI: {e}")))?;
        let guard = Outstanding::new(instance.outstanding.clone());
        let started = tokio::time::Instant::now();
        let sent = tokio::time::timeout(self.timeout, self.client.request(req)).await;
        metrics::histogram!("tidemark_upstream_duration_seconds", "upstream" => self.name.clone())
            .record(started.elapsed().as_secs_f64());
        let resp = match sent {
            Err(_) => {
                metrics::counter!("tidemark_upstream_errors_total", "upstream" => self.name.clone(), "kind" => "timeout").increment(1);
                return Err(GatewayError::UpstreamTimeout {
                    upstream: self.name.clone(),
                    after: self.timeout,
                });
            }
            Ok(Err(e)) => {
                let connect = e.is_connect();
                let kind = if connect { "connect" } else { "protocol" };
                metrics::counter!("tidemark_upstream_errors_total", "upstream" => self.name.clone(), "kind" => kind).increment(1);
                let source: BoxError = Box::new(e);
                return Err(if connect {
                    GatewayError::UpstreamConnect {
                        upstream: self.name.clone(),
                        source,
                    }
                } else {
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

/// The upstream URI: the instance's scheme and authority, its base path (if any)
/// followed by the request's path and query.
pub fn upstream_uri(base: &Uri, pq: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
    let prefix = base.path().trim_end_matches('/');
    let pq = pq.map(PathAndQuery::as_str).unwrap_or("/");
    let joined = if prefix.is_empty() {
        pq.to_string()
    } else {
        format!("{prefix}{pq}")
    };
    Uri::builder()
        .scheme(base.scheme().cloned().unwrap_or(Scheme::HTTP))
        .authority(base.authority().map(|a| a.as_str()).unwrap_or("localhost"))
        .path_and_query(joined)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_joins_base_path_and_keeps_the_query() {
        let base: Uri = "http://127.0.0.1:7001".parse().unwrap();
        let pq: PathAndQuery = "/users/1?x=2".parse().unwrap();
        assert_eq!(
            upstream_uri(&base, Some(&pq)).unwrap().to_string(),
            "http://127.0.0.1:7001/users/1?x=2"
        );
        let base: Uri = "http://127.0.0.1:7001/api/".parse().unwrap();
        assert_eq!(
            upstream_uri(&base, Some(&pq)).unwrap().to_string(),
            "http://127.0.0.1:7001/api/users/1?x=2"
        );
        assert_eq!(
            upstream_uri(&base, None).unwrap().to_string(),
            "http://127.0.0.1:7001/api/"
        );
    }
}
