//! Reporting a token too large to hand out (see `Gateway::attach_token`).
//!
//! Never silent: the answer carries [`TOKEN_ERROR`], every case is counted in
//! `tidemark_tokens_oversize_total`, and a `warn` line is logged at most once per
//! [`LOG_EVERY_SECS`] with the number of cases since the last line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderName;

use super::Oversize;

/// Response header set when the answer carries no new token because it would not fit.
pub const TOKEN_ERROR: HeaderName = HeaderName::from_static("consistency-token-error");

/// Seconds between two `warn` lines about oversize tokens.
pub const LOG_EVERY_SECS: u64 = 60;

static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);
static UNLOGGED: AtomicU64 = AtomicU64::new(0);

/// Counts one token that was not handed out; logs at `warn` when the last line is
/// older than [`LOG_EVERY_SECS`].
pub fn report(oversize: &Oversize, logs: usize) {
    metrics::counter!("tidemark_tokens_oversize_total").increment(1);
    UNLOGGED.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_LOGGED.load(Ordering::Relaxed);
    if now.saturating_sub(last) < LOG_EVERY_SECS && last != 0 {
        return;
    }
    if LAST_LOGGED
        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        let cases = UNLOGGED.swap(0, Ordering::Relaxed);
        tracing::warn!(
            logs,
            token_bytes = oversize.token_bytes,
            cookie_bytes = oversize.cookie_bytes,
            cases,
            "a token over the size limit was not handed out (Consistency-Token-Error: oversize): \
             the client keeps its previous token and may not read this write; shorten log \
             names or split the projection's logs"
        );
    }
}
