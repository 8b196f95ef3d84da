//! What the listener tells a request about its client connection ([`ClientConn`], a
//! request extension), and the slot an upgraded connection's tunnel keeps
//! ([`TunnelSlot`]).
//!
//! Once hyper hands an upgraded connection (WebSocket and the like) to a tunnel, the
//! connection's own task ends. The tunnel then holds the connection's share of
//! `server.max_connections` (the permit is shared: it is freed when both the
//! connection task and its tunnel are gone), runs on the listener's tracker, and ends
//! when the listener closes its tunnels (when the drain's `drain_timeout` runs out).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The client connection a request came on. Put in a request's extensions only when
/// needed (over TLS, or on a request asking for an upgrade), so a plain request
/// pays nothing.
#[derive(Debug, Clone, Default)]
pub struct ClientConn {
    /// The request came over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
    /// On a request asking for an upgrade: the slot its tunnel keeps.
    pub tunnel: Option<TunnelSlot>,
}

impl ClientConn {
    /// True when `req`'s extensions say it came over TLS.
    pub fn is_tls(extensions: &http::Extensions) -> bool {
        extensions.get::<ClientConn>().is_some_and(|c| c.tls)
    }
}

/// A connection's slot, for the tunnel of its upgrade.
#[derive(Debug, Clone)]
pub struct TunnelSlot {
    permit: Arc<OwnedSemaphorePermit>,
    tracker: TaskTracker,
    close: CancellationToken,
}

impl TunnelSlot {
    pub(super) fn new(
        permit: Arc<OwnedSemaphorePermit>,
        tracker: TaskTracker,
        close: CancellationToken,
    ) -> TunnelSlot {
        TunnelSlot {
            permit,
            tracker,
            close,
        }
    }

    /// Runs `tunnel` on its own task, holding this connection's slot until it ends
    /// or the listener closes its tunnels (dropping `tunnel` closes both sides).
    pub fn spawn<F>(self, tunnel: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let TunnelSlot {
            permit,
            tracker,
            close,
        } = self;
        tracker.spawn(async move {
            tokio::select! {
                () = tunnel => {}
                () = close.cancelled() => {
                    tracing::debug!("upgraded connection closed by the drain");
                }
            }
            drop(permit);
        });
    }
}
