//! Parsers of single config values (durations, URLs, names, path patterns, cache-key
//! templates). Each returns the parsed value or a `(problem, fix)` pair; the caller
//! adds the key. Pure functions, unit-tested here.

use std::time::Duration;

use http::{Method, Uri};

/// A refused value: what is wrong and how to fix it.
pub type Problem = (String, String);

fn problem(p: impl Into<String>, f: impl Into<String>) -> Problem {
    (p.into(), f.into())
}

/// A human-readable duration: `250ms`, `2s`, `1m30s`, `1h`.
pub fn duration(text: &str) -> Result<Duration, Problem> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        problem(
            format!("`{text}` is not a duration ({e})"),
            "write a whole number and a unit: `250ms`, `2s`, `1m30s`, `1h` \
             (units: ms, s, m, h, d)",
        )
    })
}

/// Most characters in a route, upstream, projection or instance name.
pub const MAX_NAME: usize = 64;

/// Route, upstream, projection and instance names appear in URLs, metric labels and
/// messages: 1 to 64 of ASCII letters, digits, `-` and `_`.
pub fn name(text: &str) -> Result<(), Problem> {
    if !text.is_empty()
        && text.len() <= MAX_NAME
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(problem(
            format!("`{text}` is not a valid name"),
            "use 1 to 64 ASCII letters, digits, `-` or `_` (e.g. `user-view`)",
        ))
    }
}

/// A poll base URL: absolute `http://` with a host; an optional base path; no query.
pub fn http_url(text: &str) -> Result<Uri, Problem> {
    url(text, false)
}

/// An upstream instance's base URL: [`http_url`], `https://` accepted too.
pub fn upstream_url(text: &str) -> Result<Uri, Problem> {
    url(text, true)
}

fn url(text: &str, https: bool) -> Result<Uri, Problem> {
    let uri: Uri = text.parse().map_err(|e| {
        problem(
            format!("`{text}` is not a URL ({e})"),
            "write an absolute URL such as `http://10.0.0.5:8080`",
        )
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if https => {}
        Some("https") => {
            return Err(problem(
                format!("`{text}`: checkpoint polling over https is not supported"),
                "use `http://` for poll URLs (upstream instances may use `https://`)",
            ))
        }
        Some(other) => {
            return Err(problem(
                format!("`{text}`: scheme `{other}` is not supported"),
                "use an `http://` URL",
            ))
        }
        None => {
            return Err(problem(
                format!("`{text}` is not an absolute URL"),
                format!("add the scheme: `http://{text}`"),
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(problem(
            format!("`{text}` has no host"),
            "write `http://HOST[:PORT]`",
        ));
    }
    if uri.query().is_some() {
        return Err(problem(
            format!("`{text}` has a query string"),
            "remove the `?...` part: a base URL may carry a path only",
        ));
    }
    Ok(uri)
}

/// A Redis URL: `redis://[user:password@]host[:port][/db]`.
pub fn redis_url(text: &str) -> Result<(), Problem> {
    if text.starts_with("rediss://") {
        return Err(problem(
            format!("`{text}`: TLS to Redis (rediss://) is not supported yet"),
            "use `redis://` on a private network",
        ));
    }
    match text.strip_prefix("redis://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(problem(
            format!("`{text}` is not a Redis URL"),
            "write `redis://HOST:PORT` (e.g. `redis://10.0.0.5:6379`)",
        )),
    }
}

/// The URL with any `user:password@` replaced by `***@`, for printing.
pub fn redact_url(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &text[..s + 3], &text[at..]),
        _ => text.to_string(),
    }
}

/// An HTTP method; lower case is accepted and upper-cased.
pub fn method(text: &str) -> Result<Method, Problem> {
    Method::from_bytes(text.to_ascii_uppercase().as_bytes()).map_err(|_| {
        problem(
            format!("`{text}` is not an HTTP method"),
            "use method names such as `GET`, `POST`, `PUT`, `PATCH`, `DELETE`",
        )
    })
}

/// The `{name}` captures of a path pattern or key template, in order (`{*rest}`
/// gives `rest`); `{{` and `}}` are literal braces.
pub fn captures(text: &str) -> Result<Vec<String>, Problem> {
    let unbalanced = || {
        problem(
            format!("unbalanced `{{` or `}}` in `{text}`"),
            "write captures as `{name}`; a literal brace as `{{` or `}}`",
        )
    };
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
            }
            '}' => return Err(unbalanced()),
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') | None => return Err(unbalanced()),
                        Some(c) => name.push(c),
                    }
                }
                let bare = name.strip_prefix('*').unwrap_or(&name);
                if bare.is_empty() {
                    return Err(problem(
                        format!("empty capture `{{{name}}}` in `{text}`"),
                        "name every capture: `{id}`",
                    ));
                }
                out.push(bare.to_string());
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A route path pattern: starts with `/`, `{name}` captures (distinct names), a
/// trailing `{*rest}` only, accepted by matchit. Returns the capture names.
pub fn path_pattern(text: &str) -> Result<Vec<String>, Problem> {
    if !text.starts_with('/') {
        return Err(problem(
            format!("path `{text}` does not start with `/`"),
            format!("write `/{text}`"),
        ));
    }
    other_capture_syntax(text)?;
    let names = captures(text)?;
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(problem(
                format!("capture `{{{n}}}` appears twice in `{text}`"),
                "give each capture its own name",
            ));
        }
    }
    let mut router = matchit::Router::new();
    router.insert(text, ()).map_err(|e| {
        problem(
            format!("`{text}` is not a valid path pattern: {e}"),
            "use `{name}` for one whole segment (static text may precede it) and \
             `{*rest}` only at the end, e.g. `/users/{id}` or `/files/{*rest}`",
        )
    })?;
    Ok(names)
}

/// Refuses the capture syntax of other routers (`/items/:id`, `/files/*rest`), which
/// matchit would take as literal text: a route that never matches what its author
/// meant. A segment is refused when it starts with `:` or `*` followed by a name.
fn other_capture_syntax(text: &str) -> Result<(), Problem> {
    let mut fixed = Vec::new();
    let mut found = None;
    for seg in text.split('/') {
        let mut chars = seg.chars();
        let sigil = chars.next();
        let rest = chars.as_str();
        let named = !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        match sigil {
            Some(':') if named => {
                found.get_or_insert(seg);
                fixed.push(format!("{{{rest}}}"));
            }
            Some('*') if named => {
                found.get_or_insert(seg);
                fixed.push(format!("{{*{rest}}}"));
            }
            _ => fixed.push(seg.to_string()),
        }
    }
    match found {
        None => Ok(()),
        Some(seg) => Err(problem(
            format!(
                "path `{text}` uses `{seg}`, another router's capture syntax; \
                 tidemark would match it as literal text"
            ),
            format!(
                "write captures in braces: `{}` (`{{name}}` for one segment, \
                 `{{*rest}}` for the rest of the path)",
                fixed.join("/")
            ),
        )),
    }
}

/// A cache-key template against the route's captures.
pub fn cache_key(template: &str, path_captures: &[String]) -> Result<(), Problem> {
    if template.is_empty() {
        return Err(problem(
            "empty cache key",
            "write a key such as `user:{id}`",
        ));
    }
    for name in captures(template)? {
        if !path_captures.contains(&name) {
            let have = if path_captures.is_empty() {
                "the path has no captures".to_string()
            } else {
                format!(
                    "the path's captures are {}",
                    path_captures
                        .iter()
                        .map(|c| format!("`{{{c}}}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(problem(
                format!("cache key `{template}` uses `{{{name}}}`, which the route's path does not capture"),
                format!("use a capture of the path ({have})"),
            ));
        }
    }
    Ok(())
}

/// A cookie name: an RFC 6265 token (visible ASCII, no separators).
pub fn cookie_name(text: &str) -> Result<(), Problem> {
    let ok = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(problem(
            format!("`{text}` is not a valid cookie name"),
            "use letters, digits and `-`/`_`, e.g. `tidemark_token`",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_number_and_a_unit() {
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["250", "fast", "2 parsecs", "", "-1s"] {
            let (p, f) = duration(bad).unwrap_err();
            assert!(p.contains("not a duration"), "{bad}: {p}");
            assert!(f.contains("250ms"), "{f}");
        }
    }

    #[test]
    fn upstream_urls_are_absolute_http_with_a_host() {
        assert_eq!(
            http_url("http://127.0.0.1:7001").unwrap().port_u16(),
            Some(7001)
        );
        assert_eq!(http_url("http://view/base").unwrap().path(), "/base");
        assert!(http_url("https://a")
            .unwrap_err()
            .0
            .contains("polling over https"));
        assert_eq!(
            upstream_url("https://a").unwrap().scheme_str(),
            Some("https")
        );
        assert!(http_url("127.0.0.1:7001").is_err());
        assert!(http_url("ftp://a").unwrap_err().0.contains("ftp"));
        assert!(http_url("http://a/?x=1").unwrap_err().0.contains("query"));
        assert!(http_url("not a url").is_err());
    }

    #[test]
    fn redis_urls_and_redaction() {
        assert!(redis_url("redis://10.0.0.5:6379").is_ok());
        assert!(redis_url("redis://:pw@h:1/0").is_ok());
        assert!(redis_url("rediss://h").unwrap_err().0.contains("TLS"));
        assert!(redis_url("http://h").is_err());
        assert!(redis_url("redis://").is_err());
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn path_patterns_and_their_captures() {
        assert_eq!(path_pattern("/users/{id}").unwrap(), vec!["id"]);
        assert_eq!(path_pattern("/{*rest}").unwrap(), vec!["rest"]);
        assert_eq!(path_pattern("/a/{x}/b/{*rest}").unwrap(), vec!["x", "rest"]);
        assert_eq!(path_pattern("/lit/{{x}}").unwrap(), Vec::<String>::new());
        assert!(path_pattern("users/{id}")
            .unwrap_err()
            .1
            .contains("/users/{id}"));
        assert!(path_pattern("/a/{*rest}/b").is_err());
        assert!(path_pattern("/a/{id").unwrap_err().0.contains("unbalanced"));
        assert!(path_pattern("/a/{id}/{id}")
            .unwrap_err()
            .0
            .contains("twice"));
        assert!(path_pattern("/a/{}").unwrap_err().0.contains("empty"));
    }

    #[test]
    fn other_routers_capture_syntax_is_refused_with_the_braced_form() {
        let (p, f) = path_pattern("/items/:id").unwrap_err();
        assert!(p.contains("`:id`"), "{p}");
        assert!(f.contains("`/items/{id}`"), "{f}");
        let (p, f) = path_pattern("/orgs/:org/files/*rest").unwrap_err();
        assert!(p.contains("`:org`"), "{p}");
        assert!(f.contains("`/orgs/{org}/files/{*rest}`"), "{f}");
        // A colon inside a segment (`/v1/items:batchGet`) stays literal text.
        assert!(path_pattern("/v1/items:batch").is_ok());
        assert!(path_pattern("/a/:").is_ok());
    }

    #[test]
    fn cache_keys_use_only_the_path_captures() {
        let caps = vec!["id".to_string()];
        assert!(cache_key("user:{id}", &caps).is_ok());
        assert!(cache_key("all-users", &caps).is_ok());
        let (p, f) = cache_key("user:{uid}", &caps).unwrap_err();
        assert!(p.contains("{uid}"), "{p}");
        assert!(f.contains("`{id}`"), "{f}");
        assert!(cache_key("user:{id", &caps).is_err());
        assert!(cache_key("", &caps).is_err());
        assert!(cache_key("{x}", &[]).unwrap_err().1.contains("no captures"));
    }

    #[test]
    fn names_methods_cookies() {
        assert!(name("user-view_2").is_ok());
        assert!(name("user view").is_err());
        assert!(name("").is_err());
        assert!(name(&"a".repeat(65)).is_err());
        assert_eq!(method("get").unwrap(), Method::GET);
        assert_eq!(method("PURGE").unwrap().as_str(), "PURGE");
        assert!(method("GE T").is_err());
        assert!(cookie_name("tidemark_token").is_ok());
        assert!(cookie_name("a;b").is_err());
        assert!(cookie_name("").is_err());
    }
}
