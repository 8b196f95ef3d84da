//! `kind = "passthrough"`: forward without token logic, protocol upgrades
//! (WebSocket, and anything else using `Connection: upgrade`) included. An upgraded
//! connection's tunnel keeps the client connection's slot of `server.max_connections`
//! and is closed when the drain times out ([`crate::server::tunnel`]).

use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::{Gateway, RequestCtx};
use crate::error::GatewayError;
use crate::proxy::{headers, Body};
use crate::server::tunnel::ClientConn;

impl Gateway {
    pub(super) async fn passthrough(
        &self,
        ctx: RequestCtx<'_>,
        mut parts: Parts,
        body: Body,
    ) -> Result<Response<Body>, GatewayError> {
        let upgrade = headers::is_upgrade(&parts.headers);
        // The listener's slot for a tunnel (absent when driven without a listener).
        let slot = parts
            .extensions
            .get_mut::<ClientConn>()
            .and_then(|c| c.tunnel.take());
        let client_upgrade = if upgrade {
            // Take the client connection's upgrade handle before the request moves on.
            let mut probe = Request::from_parts(parts, ());
            let on = hyper::upgrade::on(&mut probe);
            parts = probe.into_parts().0;
            Some(on)
        } else {
            None
        };
        self.prepare_request(&mut parts, ctx.peer, upgrade);
        let upstream = self.upstream(&ctx.route.upstream)?;
        let instance = upstream.pick();
        let result = upstream
            .send(instance, Request::from_parts(parts, body))
            .await;
        let mut resp = self.counted(ctx, "", result)?;
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        self.prepare_response(resp.headers_mut(), switching);
        if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let route = ctx.route.name.clone();
            let tunnel = async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        if let Err(e) =
                            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                        {
                            tracing::debug!(%route, error = %e, "upgraded connection ended");
                        }
                    }
                    Err(e) => tracing::warn!(%route, error = %e, "protocol upgrade failed"),
                }
            };
            match slot {
                Some(slot) => slot.spawn(tunnel),
                None => {
                    tokio::spawn(tunnel);
                }
            }
        }
        Ok(resp)
    }
}
