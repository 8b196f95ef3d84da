//! The read path: run the gate, hold when it says so, then forward to the chosen
//! instance, the primary, or answer from the write-through cache.

use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderName, Request, Response, StatusCode};
use tokio::time::Instant;

use super::{Gateway, RequestCtx};
use crate::cache::CachedResponse;
use crate::checkpoint::{Projection, Wait};
use crate::config::ReadRoute;
use crate::error::GatewayError;
use crate::gate::{self, CacheState, Decision, GateInput, InstanceView, Level, Source};
use crate::position::PositionVector;
use crate::proxy::forward::Upstream;
use crate::proxy::Body;
use crate::token::Claims;

/// `Server-Timing` (the standard header, not configurable).
static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// How a read is finally answered.
enum Answer {
    Instance(usize, Source),
    Primary,
    /// Boxed (the cache answers few reads): the entry would size every read's
    /// future (112 bytes), held reads included.
    Cache(Box<CachedResponse>),
}

impl Gateway {
    /// One read (the token checked, the gate run, held if need be, then forwarded or
    /// answered from the cache). One future for all of it: each nested async fn
    /// keeps its own copy of the request's parts for the life of the future, which a
    /// held read carries all along. Not an `async fn` but an `async move` block: an
    /// async fn keeps its arguments twice (as fields and as the locals they are moved
    /// into), a block keeps what it captures once.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn read<'a>(
        &'a self,
        ctx: RequestCtx<'a>,
        read: &'a ReadRoute,
        mut parts: Box<Parts>,
        body: Body,
    ) -> impl std::future::Future<Output = Result<Response<Body>, GatewayError>> + Send + 'a {
        async move {
            let client = match self.client_token(&parts.headers) {
                Ok(client) => client,
                Err(e) => return self.counted(ctx, "", Err(e)),
            };
            let claims = client.claims.clone();
            let level = match self.level(&parts.headers) {
                Ok(level) => level,
                Err(e) => return self.counted(ctx, "", Err(e)),
            };
            let projection = self
                .registry
                .get(&read.projection)
                .ok_or_else(|| {
                    GatewayError::NotFound(format!(
                        "projection {:?} is not configured",
                        read.projection
                    ))
                })?
                .clone();
            let upstream = match &ctx.state.upstream {
                Some(upstream) => upstream.clone(),
                None => self.upstream(&ctx.route.upstream)?.clone(),
            };

            // What the token asks of this projection's logs: the token's own vector when it
            // names no other log (the common case: no copy), else its restriction.
            let token_required: std::borrow::Cow<'_, PositionVector> = match claims.as_deref() {
                Some(c) if c.pos.logs_within(projection.logs()) => {
                    std::borrow::Cow::Borrowed(&c.pos)
                }
                Some(c) => std::borrow::Cow::Owned(c.pos.restrict(projection.logs())),
                None => std::borrow::Cow::Owned(PositionVector::new()),
            };
            let (answer, held) = self
                .decide(
                    ctx,
                    read,
                    level,
                    claims.as_deref(),
                    &mut parts,
                    &token_required,
                    &projection,
                    &upstream,
                )
                .await;
            if super::access_traced() {
                tracing::Span::current().record("wait_ms", held.as_secs_f64() * 1000.0);
            }
            ctx.state.metrics.waited(held.as_secs_f64());
            // Taken apart in a statement of its own (`identity` moves it into a
            // temporary that ends here): no `Answer` stays in the future while the
            // read is forwarded.
            let (forward_to, source) = match std::convert::identity(answer) {
                Err(e) => return self.counted(ctx, "", Err(e)),
                Ok(Answer::Cache(entry)) => {
                    ctx.state.metrics.cache_hit().increment(1);
                    let advance = entry.position.clone();
                    let resp =
                        self.counted(ctx, Source::Cache.as_str(), Ok(cache_response(*entry)))?;
                    let finished = self.finish_read(
                        read,
                        &client,
                        claims,
                        &projection,
                        Source::Cache,
                        held,
                        resp,
                        Some(advance),
                    );
                    return Ok(finished);
                }
                Ok(Answer::Primary) => (None, Source::Primary),
                Ok(Answer::Instance(i, source)) => (Some(i), source),
            };
            let (resp, advance) = match forward_to {
                None => {
                    let primary = read.primary.as_deref().unwrap_or_default();
                    let primary = self.upstream(primary)?;
                    self.prepare_request(&mut parts, ctx.peer, false);
                    let i = primary.pick();
                    let req = Request::from_parts(*parts, body);
                    let (_, result) = self
                        .send_read(primary, i, source, &token_required, None, req)
                        .await;
                    (self.counted(ctx, source.as_str(), result)?, None)
                }
                Some(i) => {
                    self.prepare_request(&mut parts, ctx.peer, false);
                    // The token's own vector (the common case): its value is kept with
                    // the verified claims, written once per token. In the `if let`'s
                    // scrutinee, so it is not kept across the forward.
                    if let Some(v) = match (&token_required, claims.as_deref()) {
                        (std::borrow::Cow::Borrowed(_), Some(c)) => c.min_position(),
                        _ => token_required.header_value(),
                    } {
                        parts
                            .headers
                            .insert(self.config.headers.min_position.clone(), v);
                    }
                    let req = Request::from_parts(*parts, body);
                    let (i, result) = self
                        .send_read(
                            &upstream,
                            i,
                            source,
                            &token_required,
                            Some(&projection),
                            req,
                        )
                        .await;
                    let resp = self.counted(ctx, source.as_str(), result)?;
                    self.learn_from_response(ctx, &projection, i, resp.headers());
                    // What the answering instance had applied: the monotonic token's floor.
                    let cp = if read.monotonic {
                        projection.snapshot().get(i).cloned()
                    } else {
                        None
                    };
                    (resp, cp)
                }
            };
            Ok(self.finish_read(
                read,
                &client,
                claims,
                &projection,
                source,
                held,
                resp,
                advance,
            ))
        }
    }

    /// The read's answer as the client gets it: hop-by-hop headers out, the source
    /// and `Server-Timing` in, the monotonic token advanced to `advance`, a dropped
    /// cookie cleared.
    #[allow(clippy::too_many_arguments)]
    fn finish_read(
        &self,
        read: &ReadRoute,
        client: &super::ClientToken,
        claims: Option<Arc<Claims>>,
        projection: &Projection,
        source: Source,
        held: std::time::Duration,
        mut resp: Response<Body>,
        advance: Option<PositionVector>,
    ) -> Response<Body> {
        self.prepare_response(resp.headers_mut(), false);
        if super::access_traced() {
            tracing::Span::current().record("source", source.as_str());
        }
        let headers = resp.headers_mut();
        headers.insert(
            self.config.headers.source.clone(),
            HeaderValue::from_static(source.as_str()),
        );
        // One lookup: the upstream's own entries (rare) come first.
        match headers.entry(&SERVER_TIMING) {
            http::header::Entry::Vacant(slot) => {
                slot.insert(server_timing_value(held, source));
            }
            http::header::Entry::Occupied(mut slot) => {
                let timing = server_timing(slot.get().to_str().ok(), held, source);
                if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(timing)) {
                    slot.insert(v);
                }
            }
        }
        if read.monotonic {
            let (sid, mut pos, pri) = match claims {
                Some(c) => (c.sid.clone(), c.pos.clone(), c.pri.clone()),
                None => (
                    crate::token::new_session_id(),
                    PositionVector::new(),
                    Default::default(),
                ),
            };
            if let Some(advance) = advance {
                pos.merge(&advance.restrict(projection.logs()));
            }
            self.attach_token(resp.headers_mut(), &sid, &pos, &pri);
        }
        self.clear_dropped_cookie(&mut resp, client);
        resp
    }

    /// Runs the gate until it decides, holding when it says so; returns the answer (or
    /// why there is none) and how long the read was held.
    ///
    /// The clock is read only once the gate does not forward at once (a cache lookup
    /// or a hold): `max_wait` runs from there, and a read forwarded on the first
    /// decision (every fresh read) was held for zero.
    ///
    /// Not an `async fn`, for the reason [`Gateway::read`] gives: its arguments are
    /// kept once.
    #[allow(clippy::too_many_arguments, clippy::manual_async_fn)]
    fn decide<'a>(
        &'a self,
        ctx: RequestCtx<'a>,
        read: &'a ReadRoute,
        level: Level,
        claims: Option<&'a Claims>,
        parts: &'a mut Parts,
        token_required: &'a PositionVector,
        projection: &'a Arc<Projection>,
        upstream: &'a Upstream,
    ) -> impl std::future::Future<Output = (Result<Answer, GatewayError>, std::time::Duration)> + Send + 'a
    {
        async move {
            let cache_key = match (claims, &ctx.route.cache, ctx.cache_key) {
                (Some(_), Some(_), Some(template)) => Some(template.expand(ctx.params)),
                _ => None,
            };
            let mut cache = if cache_key.is_some() {
                CacheState::NotChecked
            } else {
                CacheState::Unavailable
            };
            let mut cached: Option<Box<CachedResponse>> = None;
            // Set at the first decision that is not an answer.
            let mut started: Option<Instant> = None;
            let mut timed_out = false;
            let mut permit = None;
            let pinned = claims.is_some_and(|c| {
                !c.pri.is_empty() && c.pinned(projection.logs(), crate::gateway::fence::unix_now())
            });
            let answer = loop {
                let required = match read.staleness_budget {
                    None => std::borrow::Cow::Borrowed(token_required),
                    Some(budget) => {
                        let mut r = token_required.clone();
                        r.merge(&projection.budget_requirement(budget, Instant::now()));
                        std::borrow::Cow::Owned(r)
                    }
                };
                let checkpoints = projection.snapshot();
                // The views live on the stack for up to 8 instances (no allocation per
                // read), in a block of their own so a held read's future keeps none.
                let decision = {
                    let views: smallvec::SmallVec<[InstanceView<'_>; 8]> = checkpoints
                        .iter()
                        .enumerate()
                        .map(|(i, cp)| InstanceView {
                            checkpoint: cp,
                            outstanding: upstream.outstanding(i),
                        })
                        .collect();
                    gate::decide(&GateInput {
                        level,
                        token_required,
                        required: &required,
                        instances: &views,
                        cache,
                        timed_out,
                        on_timeout: read.on_timeout,
                        has_primary: read.primary.is_some(),
                        pinned,
                        tie_break: upstream.next_tie_break(),
                    })
                };
                match decision {
                    Decision::Forward { instance, source } => {
                        if source == Source::Stale {
                            self.count_timeout(ctx, projection, started, "stale");
                        }
                        break Ok(Answer::Instance(instance, source));
                    }
                    Decision::Primary => {
                        if timed_out {
                            self.count_timeout(ctx, projection, started, "primary");
                        }
                        break Ok(Answer::Primary);
                    }
                    Decision::AnswerFromCache => {
                        if let Some(entry) = cached.take() {
                            break Ok(Answer::Cache(entry));
                        }
                        cache = CacheState::Miss;
                    }
                    Decision::LookupCache => {
                        started.get_or_insert_with(Instant::now);
                        let key = cache_key.as_deref().unwrap_or_default();
                        let sid = claims.map(|c| c.sid.as_str()).unwrap_or_default();
                        // Only entries of the caller's identity may answer. Hashed here, at
                        // the lookup, not per read: a fresh read never consults the cache.
                        let vary = ctx.route.cache.as_ref().map_or(&[][..], |c| &c.vary[..]);
                        let identity = self.keys.identity_key().identity(vary, &parts.headers);
                        // Boxed: the store's lookup future is large and only some routes
                        // have a cache; every held read would carry it inline.
                        cache = match Box::pin(self.cache.get(key, sid, &identity)).await {
                            Ok(Some(entry)) if entry.position.covers(token_required) => {
                                cached = Some(Box::new(entry));
                                CacheState::Hit
                            }
                            Ok(_) => CacheState::Miss,
                            Err(e) => {
                                self.store_error("cache_get", &e);
                                CacheState::Miss
                            }
                        };
                    }
                    Decision::Hold => {
                        let deadline = *started.get_or_insert_with(Instant::now) + read.max_wait;
                        if permit.is_none() {
                            // Before the first wait: let go of hyper's read buffer.
                            crate::proxy::headers::detach(parts);
                            let Some(held) = self.registry.try_hold(projection) else {
                                break Err(GatewayError::HeldReadsFull {
                                    projection: projection.name().to_string(),
                                    limit: self.config.server.max_held_reads,
                                });
                            };
                            permit = Some(held);
                        }
                        match projection.wait_for(&required) {
                            Wait::Ready(_) => {}
                            Wait::Pending(waiter) => {
                                tokio::select! {
                                    _ = waiter => {}
                                    _ = tokio::time::sleep_until(deadline) => timed_out = true,
                                    // Draining: answer now as `on_timeout` says.
                                    _ = self.draining.cancelled() => timed_out = true,
                                }
                            }
                        }
                    }
                    Decision::TimedOut => {
                        self.count_timeout(ctx, projection, started, "error");
                        let mut frontier = PositionVector::new();
                        for cp in checkpoints.iter() {
                            frontier.merge(cp);
                        }
                        let eta = projection.eta(&required, Instant::now());
                        break Err(GatewayError::HoldTimeout {
                            projection: projection.name().to_string(),
                            required: required.into_owned(),
                            checkpoint: frontier.restrict(projection.logs()),
                            waited: started.map_or(std::time::Duration::ZERO, |s| s.elapsed()),
                            retry_after: eta.unwrap_or(std::time::Duration::from_secs(1)),
                        });
                    }
                    Decision::NoPrimary => {
                        break Err(GatewayError::NoPrimary {
                            route: ctx.route.name.clone(),
                        });
                    }
                }
            };
            drop(permit);
            (
                answer,
                started.map_or(std::time::Duration::ZERO, |s| s.elapsed()),
            )
        }
    }

    fn level(&self, headers: &http::HeaderMap) -> Result<Level, GatewayError> {
        let name = &self.config.headers.level;
        match crate::proxy::headers::find(headers, name) {
            None => Ok(Level::Session),
            Some(v) => {
                v.to_str()
                    .ok()
                    .and_then(Level::parse)
                    .ok_or_else(|| GatewayError::BadLevel {
                        header: name.to_string(),
                        value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    })
            }
        }
    }

    fn count_timeout(
        &self,
        ctx: RequestCtx<'_>,
        projection: &Projection,
        started: Option<Instant>,
        action: &'static str,
    ) {
        metrics::counter!("tidemark_hold_timeouts_total", "route" => ctx.route.name.clone(), "action" => action).increment(1);
        ctx.state.metrics.stats.timed_out();
        if let Some(due) = self.timeout_log.hit(&ctx.route.name, Instant::now()) {
            tracing::warn!(
                route = %ctx.route.name,
                projection = projection.name(),
                action,
                timeouts = due.count,
                over_s = due.over.as_secs(),
                "held reads reached max_wait before the projection caught up"
            );
        }
        self.recent_timeouts.push(
            &ctx.route.name,
            projection.name(),
            action,
            started.map_or(std::time::Duration::ZERO, |s| s.elapsed()),
        );
    }

    /// The `header` checkpoint source: `Projection-Checkpoint` on a read response.
    fn learn_from_response(
        &self,
        ctx: RequestCtx<'_>,
        projection: &Projection,
        instance: usize,
        headers: &http::HeaderMap,
    ) {
        if !ctx.state.learns_checkpoints {
            return;
        }
        let Some(raw) = crate::proxy::headers::find(headers, &self.config.headers.checkpoint)
        else {
            return;
        };
        let default_log = ctx
            .route
            .default_log
            .as_deref()
            .or_else(|| (projection.logs().len() == 1).then(|| projection.logs()[0].as_str()));
        match raw
            .to_str()
            .map_err(|e| e.to_string())
            .and_then(|t| PositionVector::parse(t, default_log).map_err(|e| e.to_string()))
        {
            Ok(cp) => self.learn_checkpoint(projection, instance, &cp),
            Err(problem) => {
                let upstream = self.upstream(&ctx.route.upstream).ok();
                let name = upstream
                    .and_then(|u| u.instances.get(instance))
                    .map(|i| i.name.clone())
                    .unwrap_or_default();
                metrics::counter!("tidemark_upstream_errors_total", "upstream" => ctx.route.upstream.clone(), "instance" => name.clone(), "kind" => "bad_checkpoint").increment(1);
                tracing::warn!(route = %ctx.route.name, instance = %name, %problem, "unreadable Projection-Checkpoint header ignored");
            }
        }
    }
}

fn cache_response(entry: CachedResponse) -> Response<Body> {
    let mut resp = Response::new(crate::proxy::full(entry.body));
    *resp.status_mut() = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK);
    if let Some(ct) = entry
        .content_type
        .and_then(|ct| HeaderValue::from_str(&ct).ok())
    {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    resp
}

/// Reads held under this long (`dur` below 10.0 ms: every fresh read) take their
/// `Server-Timing` value from a table made once, instead of writing and allocating it.
const TIMING_TABLE_TENTHS: u128 = 100;

const SOURCES: [Source; 4] = [
    Source::Projection,
    Source::Cache,
    Source::Primary,
    Source::Stale,
];

/// `server_timing(None, held, source)` as a header value.
fn server_timing_value(held: std::time::Duration, source: Source) -> HeaderValue {
    static TABLE: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let tenths = (held.as_micros() + 50) / 100;
    if tenths < TIMING_TABLE_TENTHS {
        let table = TABLE.get_or_init(|| {
            SOURCES
                .iter()
                .flat_map(|&source| {
                    (0..TIMING_TABLE_TENTHS).map(move |t| {
                        let held = std::time::Duration::from_micros(t as u64 * 100);
                        // Made once per process, kept for its life.
                        let text: &'static str =
                            Box::leak(server_timing(None, held, source).into_boxed_str());
                        HeaderValue::from_static(text)
                    })
                })
                .collect()
        });
        let row = SOURCES.iter().position(|&s| s == source).unwrap_or(0);
        if let Some(v) = table.get(row * TIMING_TABLE_TENTHS as usize + tenths as usize) {
            return v.clone();
        }
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(server_timing(None, held, source)))
        .unwrap_or_else(|_| HeaderValue::from_static("tidemark"))
}

/// The `Server-Timing` value: the upstream's own entries (if any), then
/// `tidemark;dur=<ms, one decimal>;desc="<source>"` (integer arithmetic, no `fmt`:
/// every read writes it).
fn server_timing(existing: Option<&str>, held: std::time::Duration, source: Source) -> String {
    let tenths = (held.as_micros() + 50) / 100;
    let mut out = String::with_capacity(existing.map_or(0, |e| e.len() + 2) + 48);
    if let Some(existing) = existing {
        out.push_str(existing);
        out.push_str(", ");
    }
    let mut digits = itoa::Buffer::new();
    out.push_str("tidemark;dur=");
    out.push_str(digits.format(tenths / 10));
    out.push('.');
    out.push_str(digits.format(tenths % 10));
    out.push_str(";desc=\"");
    out.push_str(source.as_str());
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_server_timing_table_matches_the_written_values() {
        for source in SOURCES {
            for us in (0..12_000)
                .step_by(7)
                .chain([9_949, 9_950, 10_000, 501_960])
            {
                let held = Duration::from_micros(us);
                assert_eq!(
                    server_timing_value(held, source),
                    server_timing(None, held, source).as_str(),
                    "{us} us, {source:?}"
                );
            }
        }
    }

    #[test]
    fn server_timing_rounds_to_a_tenth_of_a_millisecond_and_keeps_upstream_entries() {
        let t = |us: u64| server_timing(None, Duration::from_micros(us), Source::Projection);
        assert_eq!(t(0), r#"tidemark;dur=0.0;desc="projection""#);
        assert_eq!(t(49), r#"tidemark;dur=0.0;desc="projection""#);
        assert_eq!(t(50), r#"tidemark;dur=0.1;desc="projection""#);
        assert_eq!(t(1_234), r#"tidemark;dur=1.2;desc="projection""#);
        assert_eq!(t(501_960), r#"tidemark;dur=502.0;desc="projection""#);
        assert_eq!(
            server_timing(Some("db;dur=3"), Duration::from_millis(2), Source::Cache),
            r#"db;dur=3, tidemark;dur=2.0;desc="cache""#
        );
    }
}
