//! How a token travels: the request header, or a cookie (`token.cookie`).

use std::time::Duration;

use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{TokenError, MAX_TOKEN_BYTES};

/// Which transport a presented token came by: they differ on an invalid token (the
/// header follows `token.on_invalid`; a cookie is dropped and cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Header,
    Cookie,
}

/// The token a request carries: the header first, then the cookie named `cookie`.
/// Returns the carrier and the token's trimmed, non-empty bytes, not yet checked:
/// [`visible`] tells the text from [`TokenError::Malformed`]. The gateway checks only
/// tokens its memo of verified ones does not hold (it holds only valid text).
///
/// Only the first `header` value counts, trimmed; an empty one is absent and the
/// cookie is looked at. A value with any byte that is not visible ASCII (a JWT is
/// base64url and dots) is present and invalid: never silently treated as absent,
/// which would let a read go out unheld. The cookie is looked up in every `Cookie`
/// header (HTTP/2 may split them), `name=value` pairs separated by `;`, with
/// surrounding white space and one pair of double quotes removed.
pub fn extract<'a>(
    headers: &'a HeaderMap,
    header: &HeaderName,
    cookie: Option<&str>,
) -> Option<(Carrier, &'a [u8])> {
    if let Some(v) = crate::proxy::headers::find(headers, header) {
        let v = v.as_bytes().trim_ascii();
        if !v.is_empty() {
            return Some((Carrier::Header, v));
        }
    }
    let name = cookie?.as_bytes();
    headers
        .get_all(COOKIE)
        .iter()
        .find_map(|v| cookie_value(v.as_bytes(), name))
        .map(|v| (Carrier::Cookie, v))
}

/// The token's text, or [`TokenError::Malformed`] when a byte is not visible ASCII.
pub fn visible(v: &[u8]) -> Result<&str, TokenError> {
    // Branch-free over every byte (vectorised; an early-exit `all` is not): every read
    // with a token pays this.
    let graphic = v
        .iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(0x21) < 0x5e));
    if !graphic {
        return Err(TokenError::Malformed("token is not visible ASCII".into()));
    }
    // All ASCII: valid UTF-8.
    std::str::from_utf8(v).map_err(|_| TokenError::Malformed("token is not ASCII".into()))
}

/// The value of cookie `name` in one `Cookie` header line, if present and non-empty.
fn cookie_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    line.split(|&b| b == b';').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (n, v) = (&pair[..eq], &pair[eq + 1..]);
        if n.trim_ascii() != name {
            return None;
        }
        let v = v.trim_ascii();
        let v = v
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v);
        (!v.is_empty()).then_some(v)
    })
}

/// The most a `Set-Cookie` value (name, value and attributes) may be: RFC 6265 §6.1
/// has browsers keep cookies of at least 4,096 bytes counting all three, and larger
/// ones are dropped silently by some. Counting the attributes too is the strict reading.
pub const MAX_COOKIE_BYTES: usize = 4096;

/// Why a minted token can't be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("token of {token_bytes} bytes (cookie {cookie_bytes} bytes) is over the {MAX_TOKEN_BYTES}-byte token or {MAX_COOKIE_BYTES}-byte cookie limit")]
pub struct Oversize {
    pub token_bytes: usize,
    pub cookie_bytes: usize,
}

/// Whether a minted `token` (and its `Set-Cookie` value, when the cookie transport is
/// on) would be accepted by this gateway and kept by a browser.
pub fn fits(token: &str, cookie: Option<&HeaderValue>) -> Result<(), Oversize> {
    let cookie_bytes = cookie.map_or(0, |c| c.len());
    if token.len() > MAX_TOKEN_BYTES || cookie_bytes > MAX_COOKIE_BYTES {
        return Err(Oversize {
            token_bytes: token.len(),
            cookie_bytes,
        });
    }
    Ok(())
}

/// A `Set-Cookie` value that deletes cookie `name`: empty value, `Max-Age=0`, and the
/// attributes [`set_cookie`] gives (a browser matches on name, path and domain).
pub fn clear_cookie(name: &str, secure: bool) -> HeaderValue {
    set_cookie(name, "", secure, Duration::ZERO)
}

/// A `Set-Cookie` value for `token`: `HttpOnly; SameSite=Lax; Path=/; Max-Age=ttl`
/// and `Secure` when asked.
///
/// `Max-Age` is the token's lifetime, so the cookie goes when the token would expire.
/// Characters a cookie name or value can't hold (controls, white space, `;`, `,`,
/// `"`, non-ASCII) are dropped; minted tokens and validated names have none.
pub fn set_cookie(name: &str, token: &str, secure: bool, ttl: Duration) -> HeaderValue {
    let mut out = String::with_capacity(name.len() + token.len() + 64);
    out.extend(name.chars().filter(|&c| cookie_safe(c)));
    out.push('=');
    out.extend(token.chars().filter(|&c| cookie_safe(c)));
    out.push_str("; Path=/; HttpOnly; SameSite=Lax; Max-Age=");
    out.push_str(&ttl.as_secs().to_string());
    if secure {
        out.push_str("; Secure");
    }
    // Only visible ASCII remains, which a header value always accepts.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn cookie_safe(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, ';' | ',' | '"' | '\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: HeaderName = HeaderName::from_static("consistency-token");

    /// The text of a token that is present and visible ASCII.
    fn ext<'a>(h: &'a HeaderMap, name: &HeaderName, cookie: Option<&str>) -> Option<&'a str> {
        extract(h, name, cookie).map(|(_, raw)| visible(raw).expect("visible ASCII"))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_token_is_visible_ascii_exactly_when_every_byte_is_graphic() {
        for b in 0..=255u8 {
            let token = [b'a', b, b'z'];
            assert_eq!(
                visible(&token).is_ok(),
                b.is_ascii_graphic(),
                "byte {b:#04x}"
            );
        }
        assert_eq!(visible(b"eyJ.abc-_~"), Ok("eyJ.abc-_~"));
    }

    #[test]
    fn header_wins_over_cookie_and_is_trimmed() {
        let h = headers(&[("consistency-token", "  a.b.c "), ("cookie", "tm=x.y.z")]);
        assert_eq!(ext(&h, &TOKEN, Some("tm")), Some("a.b.c"));
    }

    #[test]
    fn only_the_first_header_value_counts() {
        let h = headers(&[
            ("consistency-token", "first"),
            ("consistency-token", "second"),
        ]);
        assert_eq!(ext(&h, &TOKEN, None), Some("first"));
    }

    #[test]
    fn empty_header_falls_back_to_the_cookie() {
        let h = headers(&[("consistency-token", "  "), ("cookie", "tm=x.y.z")]);
        assert_eq!(ext(&h, &TOKEN, Some("tm")), Some("x.y.z"));
        assert_eq!(
            extract(&h, &TOKEN, Some("tm")).map(|(c, _)| c),
            Some(Carrier::Cookie)
        );
    }

    #[test]
    fn a_token_that_is_not_visible_ascii_is_present_and_malformed() {
        let bad: &[&[u8]] = &[b"\xff\xfe", b"t\xc3\xa9", b"a.b\tc", b"a b"];
        for raw in bad {
            let mut h = HeaderMap::new();
            h.insert(TOKEN, HeaderValue::from_bytes(raw).unwrap());
            h.insert(COOKIE, HeaderValue::from_static("tm=ok"));
            let (carrier, got) = extract(&h, &TOKEN, Some("tm")).expect("present");
            assert_eq!(carrier, Carrier::Header, "{raw:?}");
            assert!(
                matches!(visible(got), Err(TokenError::Malformed(_))),
                "{raw:?}"
            );
            let mut h = HeaderMap::new();
            let mut line = b"a=1; tm=".to_vec();
            line.extend_from_slice(raw);
            h.insert(COOKIE, HeaderValue::from_bytes(&line).unwrap());
            let (carrier, got) = extract(&h, &TOKEN, Some("tm")).expect("present");
            assert_eq!(carrier, Carrier::Cookie, "{raw:?}");
            assert!(
                matches!(visible(got), Err(TokenError::Malformed(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn fits_counts_the_token_and_the_whole_cookie() {
        let token = "a".repeat(MAX_TOKEN_BYTES);
        assert!(fits(&token, None).is_ok());
        assert!(fits(&format!("{token}a"), None).is_err());
        let cookie = set_cookie("tm", &token, false, Duration::from_secs(60));
        assert!(fits(&token, Some(&cookie)).is_err());
        let short = "a".repeat(MAX_COOKIE_BYTES - 60);
        let cookie = set_cookie("tm", &short, false, Duration::from_secs(60));
        assert!(fits(&short, Some(&cookie)).is_ok());
    }

    #[test]
    fn clear_cookie_has_the_same_attributes_and_max_age_zero() {
        assert_eq!(
            clear_cookie("tm", true).to_str().unwrap(),
            "tm=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Secure"
        );
    }

    #[test]
    fn cookie_is_found_among_others_with_quotes_and_whitespace() {
        let cases: &[(&str, Option<&str>)] = &[
            ("tm=tok", Some("tok")),
            ("a=1; tm=tok; b=2", Some("tok")),
            ("a=1;tm=tok", Some("tok")),
            ("  tm  =  tok  ", Some("tok")),
            ("tm=\"tok\"", Some("tok")),
            ("xtm=tok; tmx=tok2", None),
            ("tm=", None),
            ("tm=\"\"", None),
            ("tm", None),
            ("a=1; b=2", None),
            ("", None),
        ];
        for (line, want) in cases {
            let h = headers(&[("cookie", line)]);
            assert_eq!(ext(&h, &TOKEN, Some("tm")), *want, "{line:?}");
        }
    }

    #[test]
    fn cookie_in_a_later_cookie_header_is_found() {
        let h = headers(&[("cookie", "a=1"), ("cookie", "tm=tok")]);
        assert_eq!(ext(&h, &TOKEN, Some("tm")), Some("tok"));
    }

    #[test]
    fn no_cookie_configured_means_cookies_are_ignored() {
        let h = headers(&[("cookie", "tm=tok")]);
        assert_eq!(ext(&h, &TOKEN, None), None);
        assert_eq!(ext(&HeaderMap::new(), &TOKEN, Some("tm")), None);
    }

    #[test]
    fn set_cookie_has_the_attributes() {
        let v = set_cookie("tm", "a.b.c", true, Duration::from_secs(3600));
        assert_eq!(
            v.to_str().unwrap(),
            "tm=a.b.c; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600; Secure"
        );
        let v = set_cookie("tm", "a.b.c", false, Duration::from_millis(1500));
        assert_eq!(
            v.to_str().unwrap(),
            "tm=a.b.c; Path=/; HttpOnly; SameSite=Lax; Max-Age=1"
        );
    }

    #[test]
    fn set_cookie_drops_characters_that_would_inject_attributes() {
        let v = set_cookie("t m", "a;Domain=evil\r\n", false, Duration::from_secs(1));
        assert_eq!(
            v.to_str().unwrap(),
            "tm=aDomain=evil; Path=/; HttpOnly; SameSite=Lax; Max-Age=1"
        );
    }
}
