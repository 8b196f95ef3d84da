//! Cache-key templates (`user:{id}`) and the capture names of a path pattern.
//!
//! A template is literal text with `{name}` placeholders, each naming a capture of the
//! route's path pattern. It is parsed once at start-up (so a typo is a startup error
//! naming the valid captures) and expanded per request with the values as matched
//! (percent-encoding kept: two spellings of one path give two keys, never a collision
//! of two different paths).

use super::Params;

/// A compiled cache-key template such as `user:{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<Part>,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Capture(String),
}

/// Why a key template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A placeholder names no capture of the path; the second field lists the valid
    /// ones (`id, rest`, or `none`).
    #[error("`{{{0}}}` is not a capture of the route's path (captures: {1})")]
    UnknownCapture(String, String),
    /// A `{` without its `}`, a `}` without its `{`, or a `{` inside a placeholder.
    #[error("unbalanced `{{` or `}}` in `{0}`")]
    Unbalanced(String),
    /// The template is the empty string (every request would share one key).
    #[error("empty key template")]
    Empty,
}

impl KeyTemplate {
    /// Parses `template`, checking each `{name}` against `captures` (the names
    /// [`captures_of`] gives for the route's path).
    pub fn parse(template: &str, captures: &[String]) -> Result<KeyTemplate, TemplateError> {
        if template.is_empty() {
            return Err(TemplateError::Empty);
        }
        let unbalanced = || TemplateError::Unbalanced(template.to_string());
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_string()));
                    rest = "";
                }
                Some(i) if rest[i..].starts_with('}') => return Err(unbalanced()),
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Literal(rest[..i].to_string()));
                    }
                    let after = &rest[i + 1..];
                    let end = after.find(['{', '}']).ok_or_else(unbalanced)?;
                    if !after[end..].starts_with('}') {
                        return Err(unbalanced());
                    }
                    let name = &after[..end];
                    if !captures.iter().any(|c| c == name) {
                        let valid = if captures.is_empty() {
                            "none".to_string()
                        } else {
                            captures.join(", ")
                        };
                        return Err(TemplateError::UnknownCapture(name.to_string(), valid));
                    }
                    parts.push(Part::Capture(name.to_string()));
                    rest = &after[end + 1..];
                }
            }
        }
        Ok(KeyTemplate { parts })
    }

    /// Expands with the captured values (`params` as returned by
    /// [`RouteTable::find`](super::RouteTable::find)), as matched (not decoded). A
    /// capture missing from `params` (not possible for a template checked against the
    /// route's own pattern) expands to nothing.
    pub fn expand(&self, params: &Params) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Capture(name) => out.push_str(params.get(name).unwrap_or_default()),
            }
        }
        out
    }

    /// The capture names the template uses, in order.
    pub fn captures(&self) -> impl Iterator<Item = &str> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Capture(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }
}

/// The capture names of a path pattern, in order (`/users/{id}/{*rest}` -> `id`, `rest`).
///
/// Follows matchit 0.8's syntax: `{name}` and a trailing `{*name}`; `{{` and `}}` are
/// escaped literal braces. A malformed pattern yields the names that could be read
/// (the route table reports the pattern itself as an error).
pub fn captures_of(pattern: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = pattern.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                chars.next();
            }
            '{' => {
                let start = i + 1;
                let mut end = None;
                for (j, n) in chars.by_ref() {
                    if n == '}' {
                        end = Some(j);
                        break;
                    }
                }
                let Some(end) = end else { break };
                let name = pattern[start..end].trim_start_matches('*');
                names.push(name.to_string());
            }
            _ => {}
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn captures_in_pattern_order() {
        assert_eq!(captures_of("/users/{id}/{*rest}"), caps(&["id", "rest"]));
        assert_eq!(
            captures_of("/orgs/{org}/users/{user}"),
            caps(&["org", "user"])
        );
        assert_eq!(captures_of("/files/v{version}"), caps(&["version"]));
        assert!(captures_of("/health").is_empty());
        assert!(captures_of("/").is_empty());
    }

    #[test]
    fn escaped_braces_are_not_captures() {
        assert_eq!(captures_of("/{{literal}}/{id}"), caps(&["id"]));
    }

    #[test]
    fn unterminated_capture_is_skipped() {
        assert_eq!(captures_of("/a/{id}/{oops"), caps(&["id"]));
    }

    #[test]
    fn expands_captures_and_literals() {
        let t = KeyTemplate::parse("user:{id}", &caps(&["id"])).unwrap();
        assert_eq!(t.expand(&params(&[("id", "42")])), "user:42");

        let t = KeyTemplate::parse("{org}/{user}:profile", &caps(&["org", "user"])).unwrap();
        assert_eq!(
            t.expand(&params(&[("org", "acme"), ("user", "7")])),
            "acme/7:profile"
        );
        assert_eq!(t.captures().collect::<Vec<_>>(), vec!["org", "user"]);
    }

    #[test]
    fn catch_all_is_named_without_its_star() {
        let err = KeyTemplate::parse("file:{*rest}", &caps(&["rest"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`{*rest}` is not a capture of the route's path (captures: rest)"
        );
    }

    #[test]
    fn expands_values_as_matched_not_decoded() {
        let t = KeyTemplate::parse("file:{rest}", &caps(&["rest"])).unwrap();
        assert_eq!(t.expand(&params(&[("rest", "a%20b/c")])), "file:a%20b/c");
    }

    #[test]
    fn literal_only_template_is_allowed() {
        let t = KeyTemplate::parse("settings", &[]).unwrap();
        assert_eq!(t.expand(&Params::default()), "settings");
    }

    #[test]
    fn same_capture_twice() {
        let t = KeyTemplate::parse("{id}-{id}", &caps(&["id"])).unwrap();
        assert_eq!(t.expand(&params(&[("id", "9")])), "9-9");
    }

    #[test]
    fn unknown_capture_lists_the_valid_ones() {
        let err = KeyTemplate::parse("user:{uid}", &caps(&["id", "rest"])).unwrap_err();
        assert_eq!(
            err,
            TemplateError::UnknownCapture("uid".into(), "id, rest".into())
        );
        assert_eq!(
            err.to_string(),
            "`{uid}` is not a capture of the route's path (captures: id, rest)"
        );
        let err = KeyTemplate::parse("user:{id}", &[]).unwrap_err();
        assert_eq!(
            err,
            TemplateError::UnknownCapture("id".into(), "none".into())
        );
        let err = KeyTemplate::parse("user:{}", &caps(&["id"])).unwrap_err();
        assert_eq!(err, TemplateError::UnknownCapture("".into(), "id".into()));
    }

    #[test]
    fn unbalanced_braces_are_refused() {
        for bad in ["user:{id", "user:id}", "user:{{id}}", "{a{id}}", "}", "{"] {
            let err = KeyTemplate::parse(bad, &caps(&["id"])).unwrap_err();
            assert_eq!(err, TemplateError::Unbalanced(bad.into()), "{bad}");
        }
    }

    #[test]
    fn empty_template_is_refused() {
        assert_eq!(
            KeyTemplate::parse("", &caps(&["id"])),
            Err(TemplateError::Empty)
        );
    }
}
