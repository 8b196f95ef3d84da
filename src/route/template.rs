//! Cache-key templates (`user:{id}`) and the capture names of a path pattern.
//!
//! A template is literal text with `{name}` placeholders, each naming a capture of the
//! route's path pattern. It is parsed once at start-up (so a typo is a startup error
//! naming the valid captures) and expanded per request with the values as matched
//! (percent-encoding kept: two spellings of one path give two keys).
//!
//! Expansion is injective: distinct capture values never give one key. Each captured
//! value has `%` and the first character of every literal that follows a capture
//! percent-encoded (`doc:{org}:{id}` expands `acme:1`, `2` to `doc:acme%3A1:2`, and
//! `acme`, `1:2` to `doc:acme:1%3A2`). For that to suffice the template may not put
//! two captures side by side (`{a}{b}`) nor use `%` in its literal text: both are
//! refused at start-up. Why it holds: reading a key left to right past the known
//! leading literal, an escape `%XX` is one unit and no other character of an encoded
//! value is the first character of the literal after it, so that literal's first
//! occurrence marks where the value ends; the last value ends where the known
//! trailing literal begins. Values are decoded back by undoing the escapes.

use super::Params;

/// A compiled cache-key template such as `user:{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<Part>,
    /// Characters percent-encoded in captured values: `%` and the first character of
    /// each literal that follows a capture.
    escaped: Vec<char>,
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
    /// Two captures side by side: `{a}{b}` gives `xy` for both `x`,`y` and `xy`,``.
    #[error("`{{{0}}}` and `{{{1}}}` are side by side; put literal text between them, e.g. `{{{0}}}:{{{1}}}`")]
    Adjacent(String, String),
    /// `%` in literal text: it is the escape character of captured values.
    #[error("`%` can't be used in a key template's literal text (it escapes captured values)")]
    Percent,
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
                    if let Some(Part::Capture(prev)) = parts.last() {
                        return Err(TemplateError::Adjacent(prev.clone(), name.to_string()));
                    }
                    parts.push(Part::Capture(name.to_string()));
                    rest = &after[end + 1..];
                }
            }
        }
        let mut escaped = vec!['%'];
        for (i, part) in parts.iter().enumerate() {
            if let Part::Literal(text) = part {
                if text.contains('%') {
                    return Err(TemplateError::Percent);
                }
                // A literal after a capture ends that capture's value: its first
                // character must not occur unescaped in a value.
                if i > 0 {
                    escaped.extend(text.chars().next());
                }
            }
        }
        escaped.sort_unstable();
        escaped.dedup();
        Ok(KeyTemplate { parts, escaped })
    }

    /// Expands with the captured values (`params` as returned by
    /// [`RouteTable::find`](super::RouteTable::find)), as matched (not decoded), each
    /// with `%` and the literals' characters percent-encoded (see the module doc). A
    /// capture missing from `params` (not possible for a template checked against the
    /// route's own pattern) expands to nothing.
    pub fn expand(&self, params: &Params) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Capture(name) => {
                    self.push_escaped(&mut out, params.get(name).unwrap_or_default())
                }
            }
        }
        out
    }

    fn push_escaped(&self, out: &mut String, value: &str) {
        use std::fmt::Write;
        for c in value.chars() {
            if self.escaped.binary_search(&c).is_ok() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "%{b:02X}");
                }
            } else {
                out.push(c);
            }
        }
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
        assert_eq!(t.expand(&params(&[("rest", "a%20b/c")])), "file:a%2520b/c");
    }

    #[test]
    fn literal_only_template_is_allowed() {
        let t = KeyTemplate::parse("settings", &[]).unwrap();
        assert_eq!(t.expand(&Params::default()), "settings");
    }

    #[test]
    fn captured_values_escape_percent_and_the_literals_characters() {
        let t = KeyTemplate::parse("doc:{org}:{id}", &caps(&["org", "id"])).unwrap();
        let a = t.expand(&params(&[("org", "acme:1"), ("id", "2")]));
        let b = t.expand(&params(&[("org", "acme"), ("id", "1:2")]));
        assert_eq!(a, "doc:acme%3A1:2");
        assert_eq!(b, "doc:acme:1%3A2");
        let t = KeyTemplate::parse("file:{rest}", &caps(&["rest"])).unwrap();
        assert_eq!(t.expand(&params(&[("rest", "a%20b")])), "file:a%2520b");
        let t = KeyTemplate::parse("k{x}é-", &caps(&["x"])).unwrap();
        assert_eq!(t.expand(&params(&[("x", "é-é")])), "k%C3%A9-%C3%A9é-");
    }

    #[test]
    fn adjacent_captures_and_percent_literals_are_refused() {
        let err = KeyTemplate::parse("k:{a}{b}", &caps(&["a", "b"])).unwrap_err();
        assert_eq!(err, TemplateError::Adjacent("a".into(), "b".into()));
        assert!(err.to_string().contains("`{a}:{b}`"), "{err}");
        assert_eq!(
            KeyTemplate::parse("k%{a}", &caps(&["a"])),
            Err(TemplateError::Percent)
        );
    }

    proptest::proptest! {
        /// Distinct capture tuples give distinct keys, whatever the literals (drawn
        /// from the same small alphabet as the values, so collisions are likely if
        /// escaping were wrong).
        #[test]
        fn expansion_is_injective(
            lits in proptest::collection::vec("[:/a1é-]{1,3}", 3),
            lead in "[:a]{0,2}",
            x in proptest::collection::vec("[:/a1é%-]{0,4}", 3),
            y in proptest::collection::vec("[:/a1é%-]{0,4}", 3),
        ) {
            let template = format!("{lead}{{a}}{}{{b}}{}{{c}}{}", lits[0], lits[1], lits[2]);
            let t = KeyTemplate::parse(&template, &caps(&["a", "b", "c"])).unwrap();
            let p = |v: &[String]| params(&[("a", &v[0]), ("b", &v[1]), ("c", &v[2])]);
            proptest::prop_assume!(x != y);
            proptest::prop_assert_ne!(t.expand(&p(&x)), t.expand(&p(&y)));
        }
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
