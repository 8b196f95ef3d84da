//! The write path: forward, read `Write-Position`, merge and return the token, keep
//! the response in the write-through cache.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::request::Parts;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use tokio::time::Instant;

use super::{content_type, Gateway, RequestCtx};
use crate::cache::CachedResponse;
use crate::config::{RouteCache, SourceKind};
use crate::error::GatewayError;
use crate::position::PositionVector;
use crate::proxy::{Body, BoxError};
use crate::token;

impl Gateway {
    pub(super) async fn write(
        &self,
        ctx: RequestCtx<'_>,
        parts: Parts,
        body: Body,
    ) -> Result<Response<Body>, GatewayError> {
        let client = match self.client_token(&parts.headers) {
            Ok(client) => client,
            Err(e) => return self.counted(ctx, "", Err(e)),
        };
        let mut resp = self
            .write_with(ctx, parts, body, client.claims.clone())
            .await?;
        self.clear_dropped_cookie(&mut resp, &client);
        Ok(resp)
    }

    async fn write_with(
        &self,
        ctx: RequestCtx<'_>,
        mut parts: Parts,
        body: Body,
        claims: Option<std::sync::Arc<token::Claims>>,
    ) -> Result<Response<Body>, GatewayError> {
        let body = match ctx.route.cache {
            Some(_) => match self.bounded_body(&parts, body).await {
                Ok(body) => body,
                Err(e) => return self.counted(ctx, "", Err(e)),
            },
            None => body,
        };
        // Whom the cache entry belongs to, from the client's own headers.
        let identity = ctx
            .route
            .cache
            .as_ref()
            .map(|c| self.keys.identity_key().identity(&c.vary, &parts.headers));
        self.prepare_request(&mut parts, ctx.peer, false);
        let upstream = self.upstream(&ctx.route.upstream)?;
        let instance = upstream.pick();
        let result = upstream
            .send(instance, Request::from_parts(parts, body))
            .await;
        let resp = self.counted(ctx, "", result)?;
        let (mut head, body) = resp.into_parts();
        let reported = head
            .headers
            .get(&self.config.headers.write_position)
            .cloned();
        self.prepare_response(&mut head.headers, false);
        if !head.status.is_success() {
            return Ok(Response::from_parts(head, body));
        }
        let reported = reported.and_then(|raw| self.parse_write_position(ctx, &raw));
        let (position, pin) = match (reported, self.fences.get(&ctx.route.name)) {
            (Some(position), _) => (Some(position), None),
            (None, Some(fence)) => self.run_fence(ctx, fence).await,
            (None, None) => (None, None),
        };
        let mut pri = claims.as_ref().map(|c| c.pri.clone()).unwrap_or_default();
        if let Some((logs, until)) = pin {
            for log in logs {
                let slot = pri.entry(log).or_insert(0);
                *slot = (*slot).max(until);
            }
        }
        let Some(position) = position else {
            metrics::counter!("tidemark_writes_without_position_total", "route" => ctx.route.name.clone()).increment(1);
            if !pri.is_empty() {
                let (sid, frontier) = match &claims {
                    Some(c) => (c.sid.clone(), c.pos.clone()),
                    None => (token::new_session_id(), PositionVector::new()),
                };
                self.attach_token(&mut head.headers, &sid, &frontier, &pri);
            }
            return Ok(Response::from_parts(head, body));
        };

        let now = Instant::now();
        for projection in self.registry.projections() {
            let own = position.restrict(projection.logs());
            if !own.is_empty() {
                projection.record_write(&own, now);
            }
        }
        let (sid, mut frontier) = match claims {
            Some(c) => (c.sid.clone(), c.pos.clone()),
            None => (token::new_session_id(), PositionVector::new()),
        };
        frontier.merge(&position);
        self.attach_token(&mut head.headers, &sid, &frontier, &pri);

        let body = match (&ctx.route.cache, ctx.cache_key) {
            (Some(_), Some(_)) if !self.config.cache.statuses.contains(&head.status.as_u16()) => {
                metrics::counter!("tidemark_cache_skipped_total", "route" => ctx.route.name.clone(), "reason" => "status").increment(1);
                body
            }
            (Some(cache), Some(template)) => {
                let entry = CacheDraft {
                    key: template.expand(ctx.params),
                    status: head.status.as_u16(),
                    content_type: content_type(&head.headers),
                    position,
                    identity: identity.unwrap_or_default(),
                };
                self.tee_into_cache(cache, &sid, entry, body, &ctx.route.name)
                    .await
            }
            _ => body,
        };
        Ok(Response::from_parts(head, body))
    }

    /// A cached write's request body, read whole up to `cache.max_request_body_bytes`
    /// (`413` past it, before anything reaches the upstream; at once when
    /// `Content-Length` says so).
    async fn bounded_body(&self, parts: &Parts, body: Body) -> Result<Body, GatewayError> {
        let limit = self.config.cache.max_request_body_bytes;
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        let mut body = body;
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                GatewayError::BadRequest(format!("the request body could not be read: {e}"))
            })?;
            // Request trailers are not forwarded on cached writes.
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(GatewayError::PayloadTooLarge { limit });
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(crate::proxy::full(buf.freeze()))
    }

    /// The write's position from its header, restricted to known logs. A malformed
    /// header is logged and counted, and the write passes through untouched.
    fn parse_write_position(
        &self,
        ctx: RequestCtx<'_>,
        raw: &http::HeaderValue,
    ) -> Option<PositionVector> {
        let parsed = raw
            .to_str()
            .map_err(|_| "not visible ASCII".to_string())
            .and_then(|text| {
                PositionVector::parse(text, ctx.route.default_log.as_deref())
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(pos) => {
                if pos.restrict(&self.consumed_logs).len() < pos.len() {
                    self.unconsumed_position(ctx, &pos);
                }
                let kept = pos.restrict(&self.known_logs);
                (!kept.is_empty()).then_some(kept)
            }
            Err(problem) => {
                metrics::counter!("tidemark_upstream_errors_total", "upstream" => ctx.route.upstream.clone(), "kind" => "bad_write_position").increment(1);
                tracing::warn!(route = %ctx.route.name, %problem, "upstream sent an unreadable write position; passing the write through without a token");
                None
            }
        }
    }

    /// Counts a write position naming a log no projection consumes (no read will wait
    /// for it: a misnamed `default_log` or `Write-Position` log) and logs it, per route
    /// at most once per interval. Logs outside every projection and `default_log` are
    /// also dropped from the token.
    fn unconsumed_position(&self, ctx: RequestCtx<'_>, pos: &PositionVector) {
        metrics::counter!("tidemark_unconsumed_positions_total", "route" => ctx.route.name.clone())
            .increment(1);
        if let Some(due) = self.unconsumed_log.hit(&ctx.route.name, Instant::now()) {
            tracing::warn!(
                route = %ctx.route.name,
                position = %pos,
                consumed = ?self.consumed_logs,
                writes = due.count,
                over_s = due.over.as_secs(),
                "write positions name logs no projection consumes: no read waits for these \
                 writes (check the route's default_log and the projections' logs)"
            );
        }
    }

    /// Reads the response body up to `cache.max_body_bytes`: a body that fits is
    /// stored before the response goes out (so a read right after the write finds
    /// it); a larger one streams on uncached. A cache failure never fails the write.
    async fn tee_into_cache(
        &self,
        cache: &RouteCache,
        sid: &str,
        draft: CacheDraft,
        mut body: Body,
        route: &str,
    ) -> Body {
        let cap = self.config.cache.max_body_bytes;
        let mut buf = BytesMut::new();
        loop {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        buf.extend_from_slice(&data);
                        if buf.len() > cap {
                            metrics::counter!("tidemark_cache_skipped_total", "route" => route.to_string(), "reason" => "too_large").increment(1);
                            return prefixed(buf.freeze(), Some(body), None);
                        }
                    }
                    Err(frame) => {
                        // Trailers are not cached; pass them on.
                        return prefixed(buf.freeze(), Some(body), frame.into_trailers().ok());
                    }
                },
                Some(Err(e)) => {
                    tracing::warn!(%route, error = %e, "upstream write response body failed");
                    return prefixed_error(buf.freeze(), e);
                }
            }
        }
        let body_bytes = buf.freeze();
        if body_bytes.is_empty() {
            // No representation to stand for the resource.
            metrics::counter!("tidemark_cache_skipped_total", "route" => route.to_string(), "reason" => "empty").increment(1);
            return crate::proxy::full(body_bytes);
        }
        let entry = CachedResponse {
            status: draft.status,
            content_type: draft.content_type,
            body: body_bytes.clone(),
            position: draft.position,
            identity: draft.identity,
        };
        if let Err(e) = self
            .cache
            .put(&draft.key, cache.scope, sid, entry, cache.ttl)
            .await
        {
            self.store_error("cache_put", &e);
        }
        crate::proxy::full(body_bytes)
    }

    /// Notes a store failure at `debug`. The Redis backend has already counted it in
    /// `tidemark_store_errors_total{op}` and logged it once per burst; counting here
    /// too would count every failure twice.
    pub(super) fn store_error(&self, op: &'static str, error: &crate::store::StoreError) {
        tracing::debug!(op, %error, "store operation failed");
    }

    /// Applies a checkpoint learned from an upstream response (`header` source).
    pub(super) fn learn_checkpoint(
        &self,
        projection: &crate::checkpoint::Projection,
        instance: usize,
        cp: &PositionVector,
    ) {
        projection.apply(Some(instance), cp, SourceKind::Header, Instant::now());
    }
}

/// What a cache entry is made of, besides the body.
struct CacheDraft {
    key: String,
    status: u16,
    content_type: Option<String>,
    position: PositionVector,
    identity: String,
}

/// `prefix`, then optional `trailers`, then the rest of `rest`.
fn prefixed(prefix: Bytes, rest: Option<Body>, trailers: Option<http::HeaderMap>) -> Body {
    let head = futures_util::stream::iter(
        [
            Some(Ok(Frame::data(prefix))),
            trailers.map(|t| Ok(Frame::trailers(t))),
        ]
        .into_iter()
        .flatten(),
    );
    let tail = rest.map(BodyStream::new);
    let stream = head.chain(futures_util::stream::iter(tail).flatten());
    StreamBody::new(stream).boxed_unsync()
}

fn prefixed_error(prefix: Bytes, error: BoxError) -> Body {
    let stream = futures_util::stream::iter([Ok(Frame::data(prefix)), Err(error)]);
    StreamBody::new(stream).boxed_unsync()
}

impl Gateway {
    /// Runs the route's fence: its position, or (when it fails) the logs to mark for
    /// the primary and until when (seconds since the Unix epoch). Never fails the
    /// write.
    async fn run_fence(
        &self,
        ctx: RequestCtx<'_>,
        fence: &crate::gateway::fence::Fence,
    ) -> (Option<PositionVector>, Option<(Vec<String>, u64)>) {
        let started = Instant::now();
        let result = fence.read().await;
        let route = ctx.route.name.clone();
        metrics::histogram!("tidemark_fence_seconds", "route" => route.clone())
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(position) => {
                let kept = position.restrict(&self.known_logs);
                if !kept.is_empty() {
                    return (Some(kept), None);
                }
                tracing::warn!(%route, %position, "fence returned no log a projection consumes; taking the fallback");
            }
            Err(error) => {
                let error = &*error as &dyn std::error::Error;
                tracing::warn!(%route, fence = %fence.describe(), error, "write fence failed; the session's reads of its log go to the primary for the fallback time");
            }
        }
        metrics::counter!("tidemark_fence_fallbacks_total", "route" => route).increment(1);
        let until =
            crate::gateway::fence::unix_now() + fence.fallback().as_secs_f64().ceil() as u64;
        (None, Some((fence.logs().to_vec(), until)))
    }
}
