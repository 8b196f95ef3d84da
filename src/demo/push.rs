//! Pushes an instance's checkpoint to the gateway's admin API after it advances
//! (the `push` checkpoint source).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::model::LOG;
use super::PushTarget;

/// How long one push may take before it counts as failed. Generous: the admin API is
/// local and answers at once; the bound only keeps a hung gateway from stalling pushes.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed push, retry this long later if no new event came first, so an idle
/// projector still reports its checkpoint once the gateway is back. The delay doubles
/// on each further failure, up to [`MAX_RETRY_AFTER`], to keep a missing gateway from
/// flooding the log.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest delay between retries of a failing push.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Connect timeout (hyper's `HttpConnector` has none by default).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why one push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The request could not be built (a malformed admin URL or token).
    #[error("cannot build the checkpoint push request")]
    Request(#[from] axum::http::Error),
    /// Connecting or talking to the admin API failed.
    #[error("checkpoint push did not reach the admin API")]
    Send(#[from] hyper_util::client::legacy::Error),
    /// The admin API answered something other than 2xx.
    #[error("admin API answered {0}")]
    Status(StatusCode),
    /// No answer within [`PUSH_TIMEOUT`].
    #[error("no answer within {PUSH_TIMEOUT:?}")]
    Timeout,
}

type PushClient = Client<HttpConnector, Full<Bytes>>;

/// Pushes `instance`'s checkpoint each time `checkpoints` advances. Advances that
/// happen while a push is in flight are coalesced into one push of the latest value.
/// Runs until `shutdown`.
pub async fn run(
    target: PushTarget,
    instance: String,
    mut checkpoints: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let client: PushClient = Client::builder(TokioExecutor::new()).build(connector);
    let url = format!(
        "{}/projections/{}/checkpoint?instance={instance}",
        target.admin_url.trim_end_matches('/'),
        target.projection,
    );
    // `Some(delay)` after a failure: retry after `delay` unless an event comes first.
    let mut retry: Option<Duration> = None;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            changed = checkpoints.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(retry.unwrap_or(RETRY_AFTER)), if retry.is_some() => {}
        }
        let position = *checkpoints.borrow_and_update();
        let outcome = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            outcome = push(&client, &url, target.admin_token.as_deref(), position) => outcome,
        };
        retry = match outcome {
            Ok(()) => None,
            Err(error) => {
                tracing::warn!(
                    %instance,
                    projection = %target.projection,
                    position,
                    error = %error,
                    cause = ?std::error::Error::source(&error),
                    "demo checkpoint push failed; will retry"
                );
                Some(retry.map_or(RETRY_AFTER, |delay| (delay * 2).min(MAX_RETRY_AFTER)))
            }
        };
    }
}

/// One `PUT {"users": position}` to the admin API.
async fn push(
    client: &PushClient,
    url: &str,
    token: Option<&str>,
    position: u64,
) -> Result<(), PushError> {
    let uri: Uri = url.parse().map_err(axum::http::Error::from)?;
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(uri)
        .header(CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = json!({ LOG: position }).to_string();
    let request = request.body(Full::new(Bytes::from(body)))?;
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        // Read the (small) body so the connection goes back to the pool.
        let _ = response.into_body().collect().await;
        Ok::<_, PushError>(status)
    };
    let status = tokio::time::timeout(PUSH_TIMEOUT, exchange)
        .await
        .map_err(|_| PushError::Timeout)??;
    if status.is_success() {
        Ok(())
    } else {
        Err(PushError::Status(status))
    }
}
