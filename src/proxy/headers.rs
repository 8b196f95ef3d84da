//! Header handling as pure functions: hop-by-hop removal (and every name listed in
//! `Connection`), `X-Forwarded-*` with trusted hops, internal headers stripped.
//!
//! Call order on a request: [`strip_hop_by_hop`], then [`strip`] of the internal
//! headers a client may not send, then [`set_forwarded`] (so a client cannot use
//! `Connection: x-forwarded-for` to remove what the gateway sets). On a response:
//! [`strip_hop_by_hop`] then [`strip`].

use std::net::IpAddr;

use http::header::{CONNECTION, HOST, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The hop-by-hop headers of RFC 9110 §7.6.1, plus the obsolete `Keep-Alive` and
/// `Proxy-Connection` still sent by old clients.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `X-Forwarded-For`: the chain of client and proxy addresses.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the `Host` the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `Forwarded` (RFC 7239): removed when no hop is trusted, passed on otherwise.
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1 (`Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade`) and every header named in a `Connection` value
/// (comma lists, any case, across several `Connection` lines; items that are not
/// header names are ignored).
/// When `keep_upgrade` is set (a passthrough WebSocket/upgrade request), `Connection:
/// upgrade` and `Upgrade` are kept so the upstream can switch protocols; `Connection`
/// is then rewritten to exactly `upgrade` and the other headers it named are still
/// removed. `keep_upgrade` does nothing unless the message [`is_upgrade`].
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names finds which of `HOP_BY_HOP` are present (as bits of
    // their indices): most messages carry none, or only `Connection`. Only those
    // present are removed (a removal hashes the name).
    let mut present = 0u16;
    for k in headers.keys() {
        if let Some(i) = hop_by_hop_index(k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    let connection = present & (1 << CONNECTION_BIT) != 0;
    let upgrade =
        keep_upgrade && connection && present & (1 << UPGRADE_BIT) != 0 && is_upgrade(headers);
    if upgrade {
        present &= !((1 << CONNECTION_BIT) | (1 << UPGRADE_BIT));
    }
    // The other headers `Connection` names: its items that are not hop-by-hop names
    // themselves (those go, or stay with an upgrade, as above). Usually none (`close`,
    // `keep-alive`, `upgrade`) is present, and one pass comparing texts finds that.
    let mut doomed: smallvec::SmallVec<[HeaderName; 4]> = smallvec::SmallVec::new();
    if connection {
        let items: smallvec::SmallVec<[&[u8]; 8]> = connection_tokens(headers)
            .filter(|t| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| t.eq_ignore_ascii_case(h.as_bytes()))
            })
            .collect();
        if !items.is_empty() {
            for k in headers.keys() {
                let name = k.as_str().as_bytes();
                if items.iter().any(|t| t.eq_ignore_ascii_case(name)) {
                    doomed.push(k.clone());
                }
            }
        }
    }
    let mut bits = present;
    while bits != 0 {
        let i = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        if let Some(name) = HOP_NAMES.get(i) {
            headers.remove(name);
        }
    }
    for name in &doomed {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// [`HOP_BY_HOP`] as names, in the same order (a name's index is its bit in
/// [`strip_hop_by_hop`]).
static HOP_NAMES: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    UPGRADE,
];
/// The indices of `Connection` and `Upgrade` in [`HOP_BY_HOP`].
const CONNECTION_BIT: usize = 0;
const UPGRADE_BIT: usize = 8;

/// The index in [`HOP_BY_HOP`] of `name`, if it is one. Every name of every message
/// passes here: a match on its text (a name is lowercase) costs a length comparison
/// per arm for most names, and no hashing.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(CONNECTION_BIT),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "proxy-authenticate" => Some(3),
        "proxy-authorization" => Some(4),
        "te" => Some(5),
        "trailer" => Some(6),
        "transfer-encoding" => Some(7),
        "upgrade" => Some(UPGRADE_BIT),
        _ => None,
    }
}

/// Removes every header in `names` (all of its values). Usually none is present: a
/// pass comparing names comes first, and nothing is hashed unless one is.
pub fn strip(headers: &mut HeaderMap, names: &[HeaderName]) {
    if !headers.keys().any(|k| names.contains(k)) {
        return;
    }
    for name in names {
        headers.remove(name);
    }
}

/// The names compared with every request header's ([`set_forwarded`]): statics, so
/// no constant is made and dropped per comparison.
static FORWARDED_NAME: HeaderName = FORWARDED;
static X_FORWARDED_PROTO_NAME: HeaderName = X_FORWARDED_PROTO;
static X_FORWARDED_HOST_NAME: HeaderName = X_FORWARDED_HOST;

/// Sets `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` for a request
/// from `peer` over `proto` (`http`/`https`) for `host`. With `trusted_hops == 0`
/// whatever the client sent is replaced (and a client-sent `Forwarded` is removed, so
/// an upstream cannot be fooled by it); with `n > 0` the last `n` entries of the
/// incoming `X-Forwarded-For` (and incoming `-Proto`/`-Host`) are kept and `peer` is
/// appended.
///
/// The chain is read across every `X-Forwarded-For` line and written back as one
/// `a, b, peer` line. `peer` is written plainly (`2001:db8::1`, no brackets or port;
/// an IPv4-mapped IPv6 address as its IPv4 form). A missing `host` leaves no
/// `X-Forwarded-Host` (unless a trusted one came in).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    proto: &str,
    host: Option<HeaderValue>,
    trusted_hops: usize,
) {
    let proto = match proto {
        "http" => Some(HeaderValue::from_static("http")),
        "https" => Some(HeaderValue::from_static("https")),
        other => HeaderValue::from_str(other).ok(),
    };
    if trusted_hops == 0 {
        // What the client sent is replaced: an `insert` replaces every line of its
        // name, so only what is not set again is stripped (one pass, no hashing).
        let (no_proto, no_host) = (proto.is_none(), host.is_none());
        let doomed = |k: &HeaderName| {
            *k == FORWARDED_NAME
                || (no_proto && *k == X_FORWARDED_PROTO_NAME)
                || (no_host && *k == X_FORWARDED_HOST_NAME)
        };
        if headers.keys().any(doomed) {
            let names: smallvec::SmallVec<[HeaderName; 3]> =
                headers.keys().filter(|k| doomed(k)).cloned().collect();
            for name in &names {
                headers.remove(name);
            }
        }
        headers.insert(X_FORWARDED_FOR, peer_value(peer));
        if let Some(proto) = proto {
            headers.insert(X_FORWARDED_PROTO, proto);
        }
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST, host);
        }
        return;
    }

    let chain: Vec<&[u8]> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
        .collect();
    let peer = PeerText::new(peer);
    let kept = &chain[chain.len().saturating_sub(trusted_hops)..];
    let mut joined = Vec::new();
    for item in kept {
        joined.extend_from_slice(item);
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(peer.as_bytes());
    let xff = HeaderValue::from_bytes(&joined).unwrap_or_else(|_| peer.value());
    headers.insert(X_FORWARDED_FOR, xff);

    if !headers.contains_key(&X_FORWARDED_PROTO) {
        if let Some(proto) = proto {
            headers.insert(X_FORWARDED_PROTO, proto);
        }
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

/// `peer`'s text as a header value. The last one made on this thread is kept and
/// cloned (a reference count) while the peer stays the same, as it does for every
/// request of a connection and for all traffic through one load balancer: no text
/// written, nothing allocated.
fn peer_value(peer: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((ip, value)) = last.as_ref() {
            if *ip == peer {
                return value.clone();
            }
        }
        let text = PeerText::new(peer);
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(text.as_bytes()))
            .unwrap_or_else(|_| text.value());
        *last = Some((peer, value.clone()));
        value
    })
}

/// Copies a request's header values and URI out of the connection's read buffer, of
/// which hyper's HTTP/1.1 parser makes them slices, so that holding the request keeps
/// none of that buffer alive. While a request is in flight hyper goes on reading the
/// connection (to see the client leave) and reserves 8 KiB of room first: with the
/// buffer still shared it allocates a fresh one (16 KiB after growth) per held read;
/// with it unshared it reuses it. Called once, when a read starts to wait: a fresh read
/// never pays the copies.
pub fn detach(parts: &mut http::request::Parts) {
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), copy);
    }
    parts.headers = headers;
    if let Ok(uri) = parts.uri.to_string().parse::<http::Uri>() {
        parts.uri = uri;
    }
}

/// Sets `Host` to `value`, one line, whatever the map held: a `Host` present once (a
/// forwarded client request keeps its own until here) has its value replaced in
/// place, found by a scan (no hashing, no removal); otherwise the map's lookup.
pub fn set_host(headers: &mut HeaderMap, value: &HeaderValue) {
    let mut lines = 0;
    for (k, v) in headers.iter_mut() {
        if *k == HOST {
            lines += 1;
            if lines == 1 {
                *v = value.clone();
            }
        }
    }
    if lines != 1 {
        headers.insert(HOST, value.clone());
    }
}

/// `headers.get(name)`, by a scan of the entries while there are few (a request or
/// answer usually has under a dozen): comparing names costs less than hashing one,
/// about 100 instructions for a custom name such as `consistency-token`. The first
/// value, as `get` gives.
pub fn find<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.len() <= 16 {
        headers.iter().find_map(|(k, v)| (k == name).then_some(v))
    } else {
        headers.get(name)
    }
}

/// True when the message asks to switch protocols: a `Connection` value lists
/// `upgrade` (any case) and an `Upgrade` header is present.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
}

/// The non-empty, trimmed comma-separated items of every `Connection` line (found
/// by a scan: no hashing).
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .iter()
        .filter(|(k, _)| **k == CONNECTION)
        .flat_map(|(_, v)| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A peer address as written in `X-Forwarded-For`: plain (no brackets or port), an
/// IPv4-mapped IPv6 address as its IPv4 form. IPv4 (the common case) is written by
/// hand into a stack buffer: `Display` costs ~1,400 instructions per request.
enum PeerText {
    V4 { buf: [u8; 15], len: usize },
    V6(String),
}

impl PeerText {
    fn new(peer: IpAddr) -> PeerText {
        match peer.to_canonical() {
            IpAddr::V4(v4) => {
                let mut buf = [0u8; 15];
                let mut len = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf[len] = b'.';
                        len += 1;
                    }
                    if octet >= 100 {
                        buf[len] = b'0' + octet / 100;
                        len += 1;
                    }
                    if octet >= 10 {
                        buf[len] = b'0' + octet / 10 % 10;
                        len += 1;
                    }
                    buf[len] = b'0' + octet % 10;
                    len += 1;
                }
                PeerText::V4 { buf, len }
            }
            v6 => PeerText::V6(v6.to_string()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            PeerText::V4 { buf, len } => &buf[..*len],
            PeerText::V6(s) => s.as_bytes(),
        }
    }

    /// An IP address's text is always a valid header value; the fallback is unreachable.
    fn value(&self) -> HeaderValue {
        HeaderValue::from_bytes(self.as_bytes())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn all(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut n: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        n.sort_unstable();
        n
    }

    #[test]
    fn the_kept_peer_value_follows_the_peer() {
        let a: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        let b: IpAddr = "2001:db8::7".parse().unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        for (peer, text) in [
            (a, "10.0.0.1"),
            (a, "10.0.0.1"),
            (b, "2001:db8::7"),
            (a, "10.0.0.1"),
            (mapped, "10.0.0.1"),
        ] {
            assert_eq!(peer_value(peer), text);
        }
    }

    #[test]
    fn peer_text_is_display_of_the_canonical_address() {
        for x in 0..=255u8 {
            for v4 in [
                Ipv4Addr::new(x, 0, 255, x),
                Ipv4Addr::new(1, x, 10, 99),
                Ipv4Addr::new(100, 9, x, 200),
            ] {
                assert_eq!(
                    PeerText::new(v4.into()).as_bytes(),
                    v4.to_string().as_bytes()
                );
                let mapped = IpAddr::V6(v4.to_ipv6_mapped());
                assert_eq!(PeerText::new(mapped).as_bytes(), v4.to_string().as_bytes());
            }
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(PeerText::new(v6).as_bytes(), b"2001:db8::1");
        assert_eq!(PeerText::new(v6).value(), "2001:db8::1");
    }

    #[test]
    fn detach_keeps_every_header_line_and_the_uri() {
        let mut pairs = END_TO_END.to_vec();
        pairs.push(("x-multi", "1"));
        pairs.push(("x-multi", "2"));
        let mut req = http::Request::builder()
            .uri("/users/7?a=b%20c")
            .body(())
            .unwrap();
        *req.headers_mut() = map(&pairs);
        let mut auth = HeaderValue::from_static("Bearer x");
        auth.set_sensitive(true);
        req.headers_mut().insert("authorization", auth);
        let (mut parts, ()) = req.into_parts();
        let before = parts.headers.clone();
        detach(&mut parts);
        assert_eq!(parts.headers, before);
        assert_eq!(all(&parts.headers, "x-multi"), ["1", "2"]);
        assert!(parts.headers["authorization"].is_sensitive());
        assert_eq!(parts.uri, "/users/7?a=b%20c");
    }

    const END_TO_END: [(&str, &str); 6] = [
        ("host", "example.com"),
        ("content-type", "application/json"),
        ("content-length", "12"),
        ("authorization", "Bearer x"),
        ("cookie", "a=b"),
        ("consistency-token", "t"),
    ];

    #[test]
    fn find_is_get_for_small_and_large_maps() {
        for extra in [0, 3, 20] {
            let mut h = map(&END_TO_END);
            for i in 0..extra {
                h.append(
                    HeaderName::from_bytes(format!("x-extra-{i}").as_bytes()).unwrap(),
                    HeaderValue::from_static("v"),
                );
            }
            h.append("consistency-token", HeaderValue::from_static("second"));
            for name in ["consistency-token", "host", "x-extra-2", "absent", "cookie"] {
                let name = HeaderName::from_static(name);
                assert_eq!(find(&h, &name), h.get(&name), "{name} with {extra} extra");
            }
        }
    }

    // ---- strip_hop_by_hop ----

    #[test]
    fn removes_every_standard_hop_by_hop_header() {
        for name in HOP_BY_HOP {
            for keep_upgrade in [false, true] {
                let mut h = map(&END_TO_END);
                h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
                strip_hop_by_hop(&mut h, keep_upgrade);
                assert!(
                    !h.contains_key(name),
                    "{name} kept (keep_upgrade {keep_upgrade})"
                );
                assert_eq!(h.len(), END_TO_END.len(), "{name}");
            }
        }
    }

    #[test]
    fn many_connection_lines_and_names_are_all_removed() {
        // More `Connection` lines (6) and doomed names (16) than the inline buffers hold.
        let mut pairs: Vec<(String, String)> = END_TO_END
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        for i in 0..6 {
            pairs.push(("connection".into(), format!("X-A{i}, x-b{i}")));
            pairs.push((format!("x-a{i}"), "1".into()));
            pairs.push((format!("x-b{i}"), "2".into()));
        }
        pairs.push(("keep-alive".into(), "timeout=5".into()));
        pairs.push(("te".into(), "trailers".into()));
        pairs.push(("trailer".into(), "x".into()));
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        for keep_upgrade in [false, true] {
            let mut h = map(&refs);
            strip_hop_by_hop(&mut h, keep_upgrade);
            assert_eq!(h, map(&END_TO_END), "keep_upgrade {keep_upgrade}");
        }
    }

    #[test]
    fn keeps_end_to_end_headers() {
        let mut h = map(&END_TO_END);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, map(&END_TO_END));
    }

    #[test]
    fn removes_names_listed_in_connection() {
        let mut h = map(&[
            ("connection", "close, X-Trace ,x-debug"),
            ("x-trace", "1"),
            ("x-debug", "1"),
            // `close` is listed too: a header of that name goes as well.
            ("close", "1"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["x-kept"]);
    }

    #[test]
    fn connection_names_are_case_insensitive_and_span_several_lines() {
        let mut h = map(&[
            ("connection", "X-One"),
            ("connection", "x-TWO, ,"),
            ("connection", ""),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-two", "2b"),
            ("x-three", "3"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["x-three"]);
    }

    #[test]
    fn connection_items_that_are_not_header_names_are_ignored() {
        let mut h = map(&[
            ("connection", "bad name, (x), x-gone"),
            ("x-gone", "1"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["x-kept"]);
    }

    #[test]
    fn keep_upgrade_keeps_a_websocket_handshake() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("te", "trailers"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(all(&h, "connection"), ["upgrade"]);
        assert_eq!(all(&h, "upgrade"), ["websocket"]);
        assert_eq!(
            names(&h),
            [
                "connection",
                "sec-websocket-key",
                "sec-websocket-version",
                "upgrade"
            ]
        );
    }

    #[test]
    fn keep_upgrade_on_a_switching_protocols_response() {
        let mut h = map(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn keep_upgrade_does_nothing_for_a_plain_request() {
        // Upgrade without `Connection: upgrade` is not an upgrade request.
        let mut h = map(&[("upgrade", "websocket"), ("connection", "keep-alive")]);
        strip_hop_by_hop(&mut h, true);
        assert!(h.is_empty(), "{h:?}");

        let mut h = map(&[("connection", "upgrade")]);
        strip_hop_by_hop(&mut h, true);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn upgrade_is_stripped_without_keep_upgrade() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn hop_names_follow_the_hop_by_hop_list() {
        assert_eq!(HOP_NAMES.len(), HOP_BY_HOP.len());
        for (i, (name, text)) in HOP_NAMES.iter().zip(HOP_BY_HOP).enumerate() {
            assert_eq!(name.as_str(), text);
            assert_eq!(hop_by_hop_index(name), Some(i), "{text}");
            let parsed = HeaderName::from_bytes(text.to_uppercase().as_bytes()).unwrap();
            assert_eq!(hop_by_hop_index(&parsed), Some(i), "{text} parsed");
        }
        assert_eq!(HOP_BY_HOP[CONNECTION_BIT], "connection");
        assert_eq!(HOP_BY_HOP[UPGRADE_BIT], "upgrade");
        for (name, _) in END_TO_END {
            assert_eq!(hop_by_hop_index(&HeaderName::from_static(name)), None);
        }
        for name in [
            "x-connection",
            "connections",
            "tee",
            "trailers",
            "upgrade-insecure-requests",
        ] {
            assert_eq!(
                hop_by_hop_index(&HeaderName::from_static(name)),
                None,
                "{name}"
            );
        }
    }

    #[test]
    fn a_header_named_in_connection_goes_with_the_hop_by_hop_ones() {
        // As an upstream answers: `Connection: close` plus a header it names.
        let mut h = map(&[
            ("server", "nginx"),
            ("content-type", "application/json"),
            ("connection", "close, X-Internal"),
            ("x-internal", "1"),
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["content-length", "content-type", "server"]);

        // `Connection: keep-alive` alone, the usual answer: only it goes.
        let mut h = map(&[("date", "x"), ("connection", "keep-alive"), ("server", "s")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["date", "server"]);
    }

    #[test]
    fn a_connection_item_naming_a_kept_upgrade_header_keeps_it() {
        let mut h = map(&[
            ("connection", "Upgrade, Connection, Keep-Alive, x-hop"),
            ("upgrade", "websocket"),
            ("keep-alive", "1"),
            ("x-hop", "1"),
            ("x-end", "1"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(all(&h, "connection"), ["upgrade"]);
        assert_eq!(names(&h), ["connection", "upgrade", "x-end"]);
    }

    // ---- set_host ----

    #[test]
    fn set_host_gives_the_upstream_authority_whatever_was_there() {
        let upstream = HeaderValue::from_static("10.0.0.5:8080");
        for pairs in [
            &[][..],
            &[("host", "api.example")][..],
            &[("accept", "*/*"), ("host", "api.example"), ("cookie", "a")][..],
            &[
                ("host", "a.example"),
                ("host", "b.example"),
                ("accept", "*/*"),
            ][..],
        ] {
            let mut h = map(pairs);
            let others = h.len() - h.get_all("host").iter().count();
            set_host(&mut h, &upstream);
            assert_eq!(all(&h, "host"), ["10.0.0.5:8080"], "{pairs:?}");
            assert_eq!(h.len(), others + 1, "{pairs:?}");
        }
    }

    #[test]
    fn a_forwarded_request_keeps_the_clients_host_only_in_x_forwarded_host() {
        // What the gateway does to a request: the client's `Host` read, hop-by-hop
        // and upstream-only headers stripped, `X-Forwarded-*` set, then the pool's
        // `Host`.
        let mut h = map(&[
            ("host", "api.example"),
            ("connection", "keep-alive, x-trace"),
            ("x-trace", "1"),
            ("write-position", "users=9"),
            ("x-forwarded-host", "evil.example"),
            ("consistency-token", "t"),
        ]);
        let client_host = find(&h, &HOST).cloned();
        strip_hop_by_hop(&mut h, false);
        strip(&mut h, &[HeaderName::from_static("write-position")]);
        set_forwarded(&mut h, PEER, "http", client_host, 0);
        set_host(&mut h, &HeaderValue::from_static("origin:81"));
        assert_eq!(all(&h, "host"), ["origin:81"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["api.example"]);
        assert_eq!(all(&h, "x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(
            names(&h),
            [
                "consistency-token",
                "host",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto"
            ]
        );
    }

    // ---- strip ----

    #[test]
    fn strip_removes_every_value_of_the_named_headers() {
        let mut h = map(&[
            ("write-position", "users=1"),
            ("write-position", "orders=2"),
            ("projection-checkpoint", "users=1"),
            ("content-type", "text/plain"),
        ]);
        strip(
            &mut h,
            &[
                HeaderName::from_static("write-position"),
                HeaderName::from_static("projection-checkpoint"),
                HeaderName::from_static("not-present"),
            ],
        );
        assert_eq!(names(&h), ["content-type"]);
        strip(&mut h, &[]);
        assert_eq!(names(&h), ["content-type"]);
    }

    // ---- set_forwarded ----

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));

    fn host(v: &str) -> Option<HeaderValue> {
        Some(HeaderValue::from_str(v).unwrap())
    }

    fn spoofed() -> HeaderMap {
        map(&[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.1.1.1"),
        ])
    }

    #[test]
    fn no_trusted_hops_replaces_what_the_client_sent() {
        let mut h = spoofed();
        set_forwarded(&mut h, PEER, "http", host("api.example"), 0);
        assert_eq!(all(&h, "x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["api.example"]);
        assert!(!h.contains_key("forwarded"));
    }

    #[test]
    fn no_trusted_hops_replace_every_line_and_keep_the_rest() {
        let mut h = spoofed();
        h.append("x-forwarded-proto", HeaderValue::from_static("ftp"));
        h.append("forwarded", HeaderValue::from_static("for=2.2.2.2"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        set_forwarded(&mut h, PEER, "https", host("api.example"), 0);
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["api.example"]);
        assert_eq!(all(&h, "x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(all(&h, "accept"), ["*/*"]);
        assert_eq!(h.len(), 4);

        // An unusable proto and no host: the client's lines of both still go.
        let mut h = spoofed();
        set_forwarded(&mut h, PEER, "ht\ntp", None, 0);
        assert_eq!(names(&h), ["x-forwarded-for"]);
    }

    #[test]
    fn no_trusted_hops_and_no_host_leaves_no_forwarded_host() {
        let mut h = spoofed();
        set_forwarded(&mut h, PEER, "https", None, 0);
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
    }

    #[test]
    fn trusted_hops_keep_the_last_entries_across_lines_and_append_peer() {
        let mut h = spoofed();
        set_forwarded(&mut h, PEER, "http", host("api.example"), 1);
        assert_eq!(all(&h, "x-forwarded-for"), ["3.3.3.3, 203.0.113.9"]);

        let mut h = spoofed();
        set_forwarded(&mut h, PEER, "http", host("api.example"), 2);
        assert_eq!(
            all(&h, "x-forwarded-for"),
            ["2.2.2.2, 3.3.3.3, 203.0.113.9"]
        );

        let mut h = spoofed();
        set_forwarded(&mut h, PEER, "http", host("api.example"), 10);
        assert_eq!(
            all(&h, "x-forwarded-for"),
            ["1.1.1.1, 2.2.2.2, 3.3.3.3, 203.0.113.9"]
        );
    }

    #[test]
    fn trusted_hops_keep_incoming_proto_and_host() {
        let mut h = spoofed();
        set_forwarded(&mut h, PEER, "http", host("api.example"), 1);
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["evil.example"]);
        assert_eq!(all(&h, "forwarded"), ["for=1.1.1.1"]);
    }

    #[test]
    fn trusted_hops_without_incoming_headers_set_ours() {
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, PEER, "https", host("api.example"), 2);
        assert_eq!(all(&h, "x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["api.example"]);

        let mut h = HeaderMap::new();
        set_forwarded(&mut h, PEER, "https", None, 2);
        assert!(!h.contains_key("x-forwarded-host"));
    }

    #[test]
    fn empty_chain_items_and_whitespace_are_dropped() {
        let mut h = map(&[("x-forwarded-for", " , 4.4.4.4 ,,5.5.5.5 ")]);
        set_forwarded(&mut h, PEER, "http", None, 5);
        assert_eq!(
            all(&h, "x-forwarded-for"),
            ["4.4.4.4, 5.5.5.5, 203.0.113.9"]
        );
    }

    #[test]
    fn ipv6_peer_is_written_plainly() {
        let v6 = IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap());
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, v6, "http", None, 0);
        assert_eq!(all(&h, "x-forwarded-for"), ["2001:db8::1"]);

        let mut h = map(&[("x-forwarded-for", "2001:db8::2")]);
        set_forwarded(&mut h, v6, "http", None, 1);
        assert_eq!(all(&h, "x-forwarded-for"), ["2001:db8::2, 2001:db8::1"]);
    }

    #[test]
    fn ipv4_mapped_peer_is_written_as_ipv4() {
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, mapped, "http", None, 0);
        assert_eq!(all(&h, "x-forwarded-for"), ["192.0.2.7"]);
    }

    #[test]
    fn opaque_chain_bytes_are_kept_as_received() {
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"unknown, \xe9t\xe9").unwrap(),
        );
        set_forwarded(&mut h, PEER, "http", None, 1);
        assert_eq!(
            h.get("x-forwarded-for").unwrap().as_bytes(),
            b"\xe9t\xe9, 203.0.113.9"
        );
    }

    #[test]
    fn unusable_proto_is_left_out() {
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, PEER, "ht\ntp", None, 0);
        assert!(!h.contains_key("x-forwarded-proto"));
        assert_eq!(all(&h, "x-forwarded-for"), ["203.0.113.9"]);
    }

    // ---- is_upgrade ----

    #[test]
    fn is_upgrade_needs_both_headers() {
        let yes = [
            map(&[("connection", "Upgrade"), ("upgrade", "websocket")]),
            map(&[("connection", "keep-alive, UPGRADE"), ("upgrade", "h2c")]),
            map(&[
                ("connection", "keep-alive"),
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
            ]),
        ];
        for h in &yes {
            assert!(is_upgrade(h), "{h:?}");
        }
        let no = [
            HeaderMap::new(),
            map(&[("upgrade", "websocket")]),
            map(&[("connection", "upgrade")]),
            map(&[("connection", "keep-alive"), ("upgrade", "websocket")]),
            map(&[("connection", "upgrade-insecure"), ("upgrade", "websocket")]),
        ];
        for h in &no {
            assert!(!is_upgrade(h), "{h:?}");
        }
    }
}
