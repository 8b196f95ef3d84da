//! Request handling: route match, token verification, then the write, read or
//! passthrough path. Built once from a validated config; shared by every connection.

pub mod fence;
mod passthrough;
mod read;
mod retry;
mod route_metrics;
mod write;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{CONTENT_TYPE, HOST, SET_COOKIE};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;

use crate::cache::Cache;
use crate::checkpoint::Registry;
use crate::config::{Config, OnInvalid, RouteKind};
use crate::error::GatewayError;
use crate::position::PositionVector;
use crate::proxy::forward::Upstream;
use crate::proxy::{headers, Body};
use crate::route::{RouteMatch, RouteTable};
use crate::store::redis::RedisStore;
use crate::token::{self, Claims, KeyRing, TokenError};
use route_metrics::RouteMetrics;

/// Everything a request needs, built once at start-up.
pub struct Gateway {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    /// What each route's requests need besides its config, by route index.
    route_states: Vec<RouteState>,
    pub keys: KeyRing,
    /// Tokens this ring verified before (memoized: a client echoes one token on every read).
    verified: token::VerifiedTokens,
    pub registry: Arc<Registry>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub cache: Cache,
    pub store: Option<Arc<RedisStore>>,
    /// The NATS connection (`[nats]`), shared by every generation. Default: none.
    pub nats: Option<Arc<crate::nats::Nats>>,
    /// The Kafka client (`[kafka]`), shared by every generation. Default: none.
    pub kafka: Option<Arc<crate::kafka::Kafka>>,
    /// `[databases.NAME]` pools (checkpoint source `postgres`, write fences).
    pub databases: crate::database::Databases,
    /// Write routes' fences, by route name.
    pub fences: fence::Fences,
    /// The last hold timeouts, shown on the admin status page.
    pub recent_timeouts: Arc<crate::telemetry::RecentTimeouts>,
    /// Logs a token may carry: those of the projections and the routes' default logs.
    /// Keeps tokens bounded whatever an upstream reports.
    known_logs: Vec<String>,
    /// Logs some projection consumes: a write position on another log is waited on by
    /// no read (`tidemark_unconsumed_positions_total`).
    consumed_logs: Vec<String>,
    /// Hold timeouts, logged at `warn` per route at most once per interval.
    timeout_log: crate::telemetry::throttle::Throttle,
    /// Write positions on unconsumed logs, logged at `warn` per route likewise.
    unconsumed_log: crate::telemetry::throttle::Throttle,
    /// Headers only an upstream may send, removed from client requests.
    upstream_only: Vec<HeaderName>,
    /// Headers removed from upstream responses before the client sees them.
    internal_response: Vec<HeaderName>,
    /// Cancelled when the gateway drains: held reads are answered at once by their
    /// route's `on_timeout`. Default: never cancelled (see [`Gateway::with_drain`]).
    draining: tokio_util::sync::CancellationToken,
}

/// Why the gateway could not be built (beyond config validation).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Keys(#[from] crate::token::KeyError),
    #[error("route table: {0:?}")]
    Routes(Vec<crate::route::RouteError>),
    #[error("upstreams.{upstream}: no TLS client config: {source}")]
    UpstreamTls {
        upstream: String,
        #[source]
        source: tokio_rustls::rustls::Error,
    },
}

impl Gateway {
    /// Builds the gateway's state. `cache` and `store` are chosen by the caller from
    /// `config.store`.
    pub fn new(
        config: Arc<Config>,
        registry: Arc<Registry>,
        cache: Cache,
        store: Option<Arc<RedisStore>>,
    ) -> Result<Gateway, BuildError> {
        let keys = KeyRing::from_config(&config.token)?;
        let routes = RouteTable::new(&config.routes).map_err(BuildError::Routes)?;
        let upstreams: HashMap<String, Arc<Upstream>> = config
            .upstreams
            .values()
            .map(|u| {
                let upstream = Upstream::new(u).map_err(|e| BuildError::UpstreamTls {
                    upstream: u.name.clone(),
                    source: e,
                })?;
                Ok((u.name.clone(), Arc::new(upstream)))
            })
            .collect::<Result<_, BuildError>>()?;
        let route_states = config
            .routes
            .iter()
            .map(|r| RouteState {
                metrics: RouteMetrics::new(&r.name, r.kind.as_str()),
                upstream: upstreams.get(&r.upstream).cloned(),
                learns_checkpoints: match &r.kind {
                    RouteKind::Read(read) => config
                        .projections
                        .get(&read.projection)
                        .is_some_and(|p| p.sources.contains(&crate::config::SourceKind::Header)),
                    _ => false,
                },
            })
            .collect();
        let consumed_logs: BTreeSet<String> = config
            .projections
            .values()
            .flat_map(|p| p.logs.iter().cloned())
            .collect();
        let mut known_logs = consumed_logs.clone();
        known_logs.extend(config.routes.iter().filter_map(|r| r.default_log.clone()));
        let h = &config.headers;
        let upstream_only = vec![
            h.write_position.clone(),
            h.checkpoint.clone(),
            h.min_position.clone(),
        ];
        let internal_response = vec![h.write_position.clone(), h.checkpoint.clone()];
        let databases = crate::database::Databases::new(&config.positions.databases);
        let fences = fence::Fences::new(&config, &databases);
        Ok(Gateway {
            config,
            routes,
            route_states,
            keys,
            verified: token::VerifiedTokens::default(),
            registry,
            upstreams,
            cache,
            store,
            nats: None,
            kafka: None,
            fences,
            databases,
            recent_timeouts: Arc::default(),
            known_logs: known_logs.into_iter().collect(),
            consumed_logs: consumed_logs.into_iter().collect(),
            timeout_log: Default::default(),
            unconsumed_log: Default::default(),
            upstream_only,
            internal_response,
            draining: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Uses `nats` for the `nats` sources, the `nats_stream` fences and `/readyz`.
    pub fn with_nats(mut self, nats: Option<Arc<crate::nats::Nats>>) -> Gateway {
        self.fences.add_nats(&self.config, nats.as_ref());
        self.nats = nats;
        self
    }

    /// Uses `kafka` for the `kafka` sources, the `kafka_topic` fences and `/readyz`.
    pub fn with_kafka(mut self, kafka: Option<Arc<crate::kafka::Kafka>>) -> Gateway {
        self.fences.add_kafka(&self.config, kafka.as_ref());
        self.kafka = kafka;
        self
    }

    /// Ends holds when `draining` is cancelled: each held read is answered at once as
    /// its route's `on_timeout` says, instead of waiting out `max_wait`.
    pub fn with_drain(mut self, draining: tokio_util::sync::CancellationToken) -> Gateway {
        self.draining = draining;
        self
    }

    /// Serves one client request.
    ///
    /// A plain function returning [`Gateway::handle_request`]'s future: an `async fn`
    /// here would keep a second copy of the request in the future (an async fn's
    /// arguments stay in it after they are moved on), which every held read carries.
    pub fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        // A request without a body (every GET) gets the empty body, which boxes
        // nothing: no allocation.
        self.handle_request(
            req.map(|body| {
                if http_body::Body::is_end_stream(&body) {
                    crate::proxy::empty()
                } else {
                    crate::proxy::boxed(body)
                }
            }),
            peer,
        )
    }

    /// Serves one request whatever its body type (tests drive this directly, e.g.
    /// under paused time).
    ///
    /// Not an `async fn` either: the request is split and its head boxed here, so
    /// the returned `async move` block keeps the box (8 bytes), not the 240-byte
    /// request it came from, and what it captures once (an `async fn` keeps its
    /// arguments twice: as fields and as the locals they are moved into).
    pub fn handle_request(
        self: Arc<Self>,
        req: Request<Body>,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        let (parts, body) = req.into_parts();
        // Boxed: every `async fn` the request passes through keeps copies of its
        // arguments for the life of the future (~224 bytes each for `Parts`), and a
        // held read carries that future all along.
        let parts = Box::new(parts);
        // The access log (off by default: one branch, nothing captured). Boxed: the
        // future would otherwise carry its 104 bytes for every request.
        let access = self.config.server.access_log.then(|| {
            Box::new(crate::telemetry::access::AccessStart {
                peer,
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
                version: parts.version,
                started: tokio::time::Instant::now(),
            })
        });
        // The answer: dispatched in its span, errors turned into responses, the
        // access line written.
        async move {
            // One span per request; `route` and `kind` are recorded once matched,
            // `source` and `wait_ms` by the read path, `status` here. Never the token.
            // At `debug` under `tidemark::access`, with the access line: at the default
            // `info` no span is built (formatting its fields cost ~2 µs, a tenth of a
            // proxied read's CPU); the few events a request logs name their route.
            let span = tracing::debug_span!(
                target: "tidemark::access",
                "request",
                method = %parts.method,
                path = parts.uri.path(),
                route = tracing::field::Empty,
                kind = tracing::field::Empty,
                source = tracing::field::Empty,
                wait_ms = tracing::field::Empty,
                status = tracing::field::Empty,
            );
            // Not entered when off (the default): `Instrumented` would set and reset the
            // current span around every poll. Boxed when on: `Instrumented` (the span
            // again) would otherwise size every request's future.
            let dispatched = if span.is_disabled() {
                self.dispatch(parts, body, peer).await
            } else {
                Box::pin(tracing::Instrument::instrument(
                    self.dispatch(parts, body, peer),
                    span.clone(),
                ))
                .await
            };
            let resp = match dispatched {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::debug!(parent: &span, error = %e, status = e.status().as_u16(), "answered with an error");
                    e.into_response()
                }
            };
            span.record("status", resp.status().as_u16());
            tracing::debug!(target: "tidemark::access", parent: &span, "request answered");
            if let Some(start) = access {
                self.log_access(&start, &resp);
            }
            resp
        }
    }

    /// The status page's per-route figures, in file order: `name`, `kind`,
    /// `max_wait_ms` (reads) and the counters of [`crate::telemetry::route_stats`].
    pub fn route_stats(&self) -> serde_json::Value {
        let routes: Vec<serde_json::Value> = self
            .config
            .routes
            .iter()
            .zip(&self.route_states)
            .map(|(route, state)| {
                let mut v = state.metrics.stats.snapshot();
                v["name"] = route.name.as_str().into();
                v["kind"] = route.kind.as_str().into();
                if let RouteKind::Read(read) = &route.kind {
                    v["max_wait_ms"] = (read.max_wait.as_millis() as u64).into();
                }
                v
            })
            .collect();
        serde_json::Value::Array(routes)
    }

    /// The access line of a request (`server.access_log`).
    fn log_access(&self, start: &crate::telemetry::access::AccessStart, resp: &Response<Body>) {
        let route = self
            .routes
            .find(&start.method, &start.path)
            .map(|m| m.route.config.name.as_str());
        let headers = resp.headers();
        let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        crate::telemetry::access::log(
            start,
            &crate::telemetry::access::AccessEnd {
                status: resp.status().as_u16(),
                route,
                source: text(&self.config.headers.source),
                server_timing: headers.get("server-timing").and_then(|v| v.to_str().ok()),
            },
        );
    }

    /// Routes one request to its kind's path. Not an `async fn`, for the reason
    /// [`Gateway::read`] gives.
    #[allow(clippy::manual_async_fn)]
    fn dispatch(
        &self,
        parts: Box<Parts>,
        body: Body,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Result<Response<Body>, GatewayError>> + Send + '_ {
        async move {
            // Captures are only read to expand a cache key: copied for those routes only.
            let found = self
                .routes
                .find_with(&parts.method, parts.uri.path(), |r| r.cache_key.is_some());
            let Some(RouteMatch { route, params }) = found else {
                metrics::counter!("tidemark_requests_total", "route" => "", "kind" => "none", "source" => "", "status" => "4xx").increment(1);
                return Err(GatewayError::NoRoute {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_string(),
                    allowed: self.routes.methods_for(parts.uri.path()),
                });
            };
            if access_traced() {
                let span = tracing::Span::current();
                span.record("route", route.config.name.as_str());
                span.record("kind", route.config.kind.as_str());
            }
            let Some(state) = self.route_states.get(route.index) else {
                return Err(GatewayError::NotFound(format!(
                    "route {:?} has no metrics",
                    route.config.name
                )));
            };
            let ctx = RequestCtx {
                route: &route.config,
                state,
                params: &params,
                peer,
                cache_key: route.cache_key.as_ref(),
            };
            match &route.config.kind {
                // Boxed: their futures (cache writes, upgrades) would otherwise size every
                // request's future, held reads included.
                RouteKind::Passthrough => Box::pin(self.passthrough(ctx, *parts, body)).await,
                RouteKind::Write => Box::pin(self.write(ctx, *parts, body)).await,
                RouteKind::Read(read) => self.read(ctx, read, parts, body).await,
            }
        }
    }

    /// The client's token: `None` when absent or expired (and, with `on_invalid =
    /// "ignore"`, when invalid). A cookie token that does not verify is dropped
    /// whatever `on_invalid` says, and the answer clears the cookie
    /// ([`ClientToken::clear_cookie`]): an HttpOnly cookie the page can't remove must
    /// not lock a browser out until it expires.
    fn client_token(&self, headers: &HeaderMap) -> Result<ClientToken, GatewayError> {
        let cookie = self.config.token.cookie.as_ref().map(|c| c.name.as_str());
        let Some((carrier, raw)) = token::extract(headers, &self.config.headers.token, cookie)
        else {
            return Ok(ClientToken::default());
        };
        let verified = self.verified.verify_raw(&self.keys, raw, SystemTime::now());
        match verified {
            Ok(claims) => Ok(ClientToken {
                claims: Some(claims),
                clear_cookie: false,
            }),
            Err(e) => {
                metrics::counter!("tidemark_tokens_rejected_total", "reason" => e.reason())
                    .increment(1);
                match (e, carrier, self.config.token.on_invalid) {
                    (_, token::Carrier::Cookie, _) => Ok(ClientToken {
                        claims: None,
                        clear_cookie: true,
                    }),
                    (TokenError::Expired, _, _) | (_, _, OnInvalid::Ignore) => {
                        Ok(ClientToken::default())
                    }
                    (e, token::Carrier::Header, OnInvalid::Reject) => {
                        Err(GatewayError::BadToken(e))
                    }
                }
            }
        }
    }

    /// Clears the token cookie on `resp` when the request's cookie token was dropped
    /// and the answer does not set a new one.
    fn clear_dropped_cookie(&self, resp: &mut Response<Body>, client: &ClientToken) {
        let Some(cookie) = self
            .config
            .token
            .cookie
            .as_ref()
            .filter(|_| client.clear_cookie)
        else {
            return;
        };
        let ours = format!("{}=", cookie.name);
        let sets_ours = resp
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .any(|v| v.as_bytes().starts_with(ours.as_bytes()));
        if !sets_ours {
            resp.headers_mut()
                .append(SET_COOKIE, token::clear_cookie(&cookie.name, cookie.secure));
        }
    }

    /// Mints a token for `sid` at `pos` and puts it on the response (header, and the
    /// cookie when configured).
    ///
    /// A token that would not fit ([`token::fits`]: over the gateway's own 4 KiB cap,
    /// or a `Set-Cookie` over a browser's 4 KiB) is never handed out: the answer goes
    /// out without a new token and with `Consistency-Token-Error: oversize`, the client
    /// keeps its previous token, and `tidemark_tokens_oversize_total` counts it (logged
    /// at `warn`, at most once a minute). Handing it out would lock the session out
    /// (`on_invalid = "reject"`) or be dropped by the browser.
    fn attach_token(
        &self,
        headers: &mut HeaderMap,
        sid: &str,
        pos: &PositionVector,
        pri: &std::collections::BTreeMap<String, u64>,
    ) {
        let minted = self.keys.mint_pinned(sid, pos, pri, SystemTime::now());
        let cookie = self
            .config
            .token
            .cookie
            .as_ref()
            .map(|c| token::set_cookie(&c.name, &minted, c.secure, self.keys.ttl()));
        if let Err(oversize) = token::fits(&minted, cookie.as_ref()) {
            token::oversize::report(&oversize, pos.len());
            headers.insert(
                token::oversize::TOKEN_ERROR,
                HeaderValue::from_static("oversize"),
            );
            return;
        }
        metrics::counter!("tidemark_tokens_minted_total").increment(1);
        match HeaderValue::from_str(&minted) {
            Ok(v) => {
                headers.insert(self.config.headers.token.clone(), v);
            }
            Err(_) => {
                tracing::error!("minted token is not a valid header value");
                return;
            }
        }
        if let Some(cookie) = cookie {
            headers.append(SET_COOKIE, cookie);
        }
    }

    /// Client request -> upstream request headers: hop-by-hop and upstream-only
    /// headers removed, forwarding headers set, `Host` left to the upstream URI.
    fn prepare_request(&self, parts: &mut Parts, peer: SocketAddr, keep_upgrade: bool) {
        // No `try_reserve` for what is added below: the map hyper parses into is the
        // connection's last one, cleared, and has the room (reserving cost ~86
        // instructions per read and saved no growth).
        // The client's `Host` (for `X-Forwarded-Host`) is read by a scan and left in
        // place: the pool overwrites its value with the instance's own
        // ([`crate::proxy::client`]), instead of a removal here and an insertion
        // there (two lookups, ~500 instructions per read).
        let host = headers::find(&parts.headers, &HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        headers::strip_hop_by_hop(&mut parts.headers, keep_upgrade);
        headers::strip(&mut parts.headers, &self.upstream_only);
        let proto = if crate::server::tunnel::ClientConn::is_tls(&parts.extensions) {
            "https"
        } else {
            "http"
        };
        headers::set_forwarded(
            &mut parts.headers,
            peer.ip(),
            proto,
            host,
            self.config.server.trusted_hops,
        );
        parts.version = Version::HTTP_11;
    }

    /// Upstream response headers -> client: hop-by-hop and internal headers removed.
    fn prepare_response(&self, headers: &mut HeaderMap, keep_upgrade: bool) {
        headers::strip_hop_by_hop(headers, keep_upgrade);
        headers::strip(headers, &self.internal_response);
    }

    /// Counts a finished request in `tidemark_requests_total` and passes its result on.
    fn counted(
        &self,
        ctx: RequestCtx<'_>,
        source: &'static str,
        result: Result<Response<Body>, GatewayError>,
    ) -> Result<Response<Body>, GatewayError> {
        let status = match &result {
            Ok(r) => r.status(),
            Err(e) => e.status(),
        };
        ctx.state.metrics.request(source, status);
        result
    }

    fn upstream(&self, name: &str) -> Result<&Arc<Upstream>, GatewayError> {
        self.upstreams
            .get(name)
            .ok_or_else(|| GatewayError::NotFound(format!("upstream {name:?} is not configured")))
    }
}

/// The token a request presented, as the read and write paths use it.
#[derive(Default)]
struct ClientToken {
    /// The verified claims; `None` when absent, expired or dropped.
    claims: Option<Arc<Claims>>,
    /// The cookie carried a token that did not verify: clear it on the answer.
    clear_cookie: bool,
}

/// What a request on a route needs besides its config, made once per route (kept out
/// of [`RequestCtx`] itself, which every request's future holds copies of).
struct RouteState {
    metrics: RouteMetrics,
    /// The route's upstream (`None` only if the config names an unknown one, which
    /// validation refuses).
    upstream: Option<Arc<Upstream>>,
    /// The route's projection takes checkpoints from read answers (`header` source).
    learns_checkpoints: bool,
}

/// The matched route of one request.
#[derive(Clone, Copy)]
struct RequestCtx<'a> {
    route: &'a crate::config::RouteConfig,
    state: &'a RouteState,
    params: &'a crate::route::Params,
    peer: SocketAddr,
    cache_key: Option<&'a crate::route::KeyTemplate>,
}

/// Whether the request span (`tidemark::access` at `debug`) is on: off at the default
/// `info`, and then `Span::current()` and its records are skipped.
fn access_traced() -> bool {
    tracing::enabled!(target: "tidemark::access", tracing::Level::DEBUG)
}

/// `Content-Type` of a response, as text.
fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
