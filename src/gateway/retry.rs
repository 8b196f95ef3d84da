//! The read path's one retry: when the connection to the chosen instance fails, the
//! read goes to the instance [`crate::gate::retry::retry_on`] picks (one that can
//! serve it as the first choice could), if any.

use std::future::Future;

use http::{Request, Response};

use super::Gateway;
use crate::checkpoint::Projection;
use crate::error::GatewayError;
use crate::gate::retry::{retry_on, RetryInput};
use crate::gate::{InstanceView, Source};
use crate::position::PositionVector;
use crate::proxy::forward::Upstream;
use crate::proxy::Body;

impl Gateway {
    /// Sends a read to instance `i` of `upstream` (answering as `source`; the
    /// instances' checkpoints are `projection`'s, none for a primary), retried once
    /// on another instance when the connection fails. Returns the instance that
    /// answered. Not an `async fn`: the read's future holds the upstream's send
    /// future only, not a second copy of the request.
    pub(super) fn send_read<'a>(
        &self,
        upstream: &'a Upstream,
        i: usize,
        source: Source,
        required: &'a PositionVector,
        projection: Option<&'a Projection>,
        req: Request<Body>,
    ) -> impl Future<Output = (usize, Result<Response<Body>, GatewayError>)> + 'a {
        let retry = move |failed: usize| {
            let none = PositionVector::new();
            let snapshot = projection.map(|p| p.snapshot());
            let views: Vec<InstanceView<'_>> = (0..upstream.instances.len())
                .map(|k| InstanceView {
                    checkpoint: snapshot.as_ref().and_then(|s| s.get(k)).unwrap_or(&none),
                    outstanding: upstream.outstanding(k),
                })
                .collect();
            let ejected: Vec<bool> = (0..views.len()).map(|k| upstream.is_ejected(k)).collect();
            retry_on(&RetryInput {
                instances: &views,
                ejected: &ejected,
                failed,
                source,
                required,
                tie_break: upstream.next_tie_break(),
            })
        };
        upstream.send_read(i, req, retry)
    }
}
