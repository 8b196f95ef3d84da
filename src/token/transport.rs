//! How a token travels: the request header, or a cookie (`token.cookie`).

use std::time::Duration;

use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The token a request carries: the header first, then the cookie named `cookie`.
/// Returns the raw text (not yet verified).
///
/// Only the first `header` value counts, trimmed; a value that is empty or not visible
/// ASCII is treated as absent (a JWT is base64url and dots). The cookie is looked up
/// in every `Cookie` header (HTTP/2 may split them), `name=value` pairs separated by
/// `;`, with surrounding white space and one pair of double quotes removed.
pub fn extract<'a>(
    headers: &'a HeaderMap,
    header: &HeaderName,
    cookie: Option<&str>,
) -> Option<&'a str> {
    let from_header = headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()));
    if from_header.is_some() {
        return from_header;
    }
    let name = cookie?;
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .find_map(|line| cookie_value(line, name))
}

/// The value of cookie `name` in one `Cookie` header line, if present and non-empty.
fn cookie_value<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split(';').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        if n.trim() != name {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        (!v.is_empty()).then_some(v)
    })
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
    fn header_wins_over_cookie_and_is_trimmed() {
        let h = headers(&[("consistency-token", "  a.b.c "), ("cookie", "tm=x.y.z")]);
        assert_eq!(extract(&h, &TOKEN, Some("tm")), Some("a.b.c"));
    }

    #[test]
    fn only_the_first_header_value_counts() {
        let h = headers(&[
            ("consistency-token", "first"),
            ("consistency-token", "second"),
        ]);
        assert_eq!(extract(&h, &TOKEN, None), Some("first"));
    }

    #[test]
    fn empty_or_non_ascii_header_falls_back_to_the_cookie() {
        let h = headers(&[("consistency-token", "  "), ("cookie", "tm=x.y.z")]);
        assert_eq!(extract(&h, &TOKEN, Some("tm")), Some("x.y.z"));
        let mut h = HeaderMap::new();
        h.insert(TOKEN, HeaderValue::from_bytes(b"t\xc3\xa9").unwrap());
        assert_eq!(extract(&h, &TOKEN, None), None);
        h.insert(COOKIE, HeaderValue::from_static("tm=ok"));
        assert_eq!(extract(&h, &TOKEN, Some("tm")), Some("ok"));
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
            assert_eq!(extract(&h, &TOKEN, Some("tm")), *want, "{line:?}");
        }
    }

    #[test]
    fn cookie_in_a_later_cookie_header_is_found() {
        let h = headers(&[("cookie", "a=1"), ("cookie", "tm=tok")]);
        assert_eq!(extract(&h, &TOKEN, Some("tm")), Some("tok"));
    }

    #[test]
    fn no_cookie_configured_means_cookies_are_ignored() {
        let h = headers(&[("cookie", "tm=tok")]);
        assert_eq!(extract(&h, &TOKEN, None), None);
        assert_eq!(extract(&HeaderMap::new(), &TOKEN, Some("tm")), None);
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
