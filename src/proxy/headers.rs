//! Header handling as pure functions: hop-by-hop removal (and every name listed in
//! `Connection`), `X-Forwarded-*` with trusted hops, internal headers stripped.
//! (Stub: the routing helper fills in the bodies.)

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1 (`Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade`) and every header named in a `Connection` value.
/// When `keep_upgrade` is set (a passthrough WebSocket/upgrade request), `Connection:
/// upgrade` and `Upgrade` are kept so the upstream can switch protocols.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let _ = (headers, keep_upgrade);
    todo!("routing helper")
}

/// Removes every header in `names`.
pub fn strip(headers: &mut HeaderMap, names: &[HeaderName]) {
    let _ = (headers, names);
    todo!("routing helper")
}

/// Sets `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` for a request
/// from `peer` over `proto` (`http`/`https`) for `host`. With `trusted_hops == 0`
/// whatever the client sent is replaced; with `n > 0` the last `n` entries of the
/// incoming `X-Forwarded-For` (and incoming `-Proto`/`-Host`) are kept and `peer` is
/// appended.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    proto: &str,
    host: Option<HeaderValue>,
    trusted_hops: usize,
) {
    let _ = (headers, peer, proto, host, trusted_hops);
    todo!("routing helper")
}

/// True when the request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let _ = headers;
    todo!("routing helper")
}
