//! `TIDEMARK__SECTION__KEY` overrides, applied to the parsed TOML document before
//! deserialization, so an overridden key is validated exactly like a file key.
//!
//! - The variable name after `TIDEMARK__` is split on `__` into a path; segments are
//!   lower-cased: `TIDEMARK__UPSTREAMS__USER-VIEW__URL` sets `upstreams.user-view.url`.
//! - A segment indexes an array by number: `TIDEMARK__ROUTES__0__MAX_WAIT`.
//! - Names match the file's names ignoring case and `-` vs `_`, so a shell-friendly
//!   spelling works: `TIDEMARK__UPSTREAMS__USER_VIEW__URL` sets `upstreams.user-view.url`
//!   when the file has `[upstreams.user-view]` (an exact name wins; the spelling must
//!   match one name only).
//! - An override sets keys of the upstreams and projections the file defines; a path
//!   through an upstream or projection the file lacks is an error with a "did you
//!   mean" (a misspelled `..._ITEM-VEIW__URL` would otherwise add a new upstream with
//!   only a url). To add one, set its whole table:
//!   `TIDEMARK__UPSTREAMS__NEW={ url = "http://10.0.0.5:8080" }`. Other missing tables
//!   on the way (`[admin]`, `instances`) are created; a misspelled section or key is
//!   then refused by the unknown-key check. Array indexes must exist.
//! - The value is read as a TOML value when it is one (`5`, `true`, `["a", "b"]`,
//!   `{ a = "http://x" }`, `"quoted"`), else taken as a plain string (`2s`,
//!   `http://10.0.0.5:8080`).
//! - Variables without the double underscore (`TIDEMARK_SECRET`) are not overrides.

use super::ConfigError;

/// Prefix of every override variable.
pub const PREFIX: &str = "TIDEMARK__";

/// Applies every `TIDEMARK__*` variable of `env` to `doc`; returns the problems found
/// (a path that cannot be set), one per variable.
pub fn apply_overrides(doc: &mut toml::Table, env: &[(String, String)]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    // Sorted, so the result does not depend on the environment's order and a table
    // (`TIDEMARK__UPSTREAMS__X`) is set before its keys (`..._X__URL`).
    let mut vars: Vec<&(String, String)> =
        env.iter().filter(|(k, _)| k.starts_with(PREFIX)).collect();
    vars.sort();
    for (var, value) in vars {
        let Some(path) = var.strip_prefix(PREFIX) else {
            continue;
        };
        let segments: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        if let Err((problem, fix)) = set_path(doc, &segments, parse_value(value)) {
            errors.push(ConfigError {
                key: var.clone(),
                problem,
                fix,
            });
        }
    }
    errors
}

/// Appends "(set by `TIDEMARK__...`)" to the problem of every error whose key an
/// override set (or lies under), so a bad value is traced to its variable.
pub fn mark_overridden(errors: &mut [ConfigError], env: &[(String, String)]) {
    let overrides: Vec<(String, &str)> = env
        .iter()
        .filter_map(|(var, _)| {
            let path = var.strip_prefix(PREFIX)?;
            Some((
                fold(&path.split("__").collect::<Vec<_>>().join(".")),
                var.as_str(),
            ))
        })
        .collect();
    for e in errors.iter_mut() {
        // Folded like names, so `..._USER_VIEW__URL` is traced to `upstreams.user-view.url`.
        let key = fold(&dotted(&e.key));
        let hit = overrides.iter().find(|(path, _)| {
            key == *path || key.starts_with(&format!("{path}.")) && !path.is_empty()
        });
        if let Some((_, var)) = hit {
            e.problem.push_str(&format!(" (set by `{var}`)"));
        }
    }
}

/// An error key in override form: `routes[1] (read-user).max_wait` -> `routes.1.max_wait`.
fn dotted(key: &str) -> String {
    let mut out = String::new();
    let mut rest = key;
    while let Some(i) = rest.find(['[', ' ']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix('[') {
            let end = t.find(']').unwrap_or(t.len());
            out.push('.');
            out.push_str(&t[..end]);
            rest = t.get(end + 1..).unwrap_or("");
        } else {
            // ` (name)` after a route index
            let end = tail.find(')').map_or(tail.len(), |j| j + 1);
            rest = &tail[end..];
        }
    }
    out.push_str(rest);
    out
}

/// The value as TOML if it parses as one, else as a string.
pub fn parse_value(text: &str) -> toml::Value {
    let doc = format!("v = {text}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut table) => table
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.into())),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

type Problem = (String, String);

fn set_path(doc: &mut toml::Table, segments: &[String], value: toml::Value) -> Result<(), Problem> {
    if segments.iter().any(String::is_empty) {
        return Err((
            "the variable names an empty key".into(),
            "separate keys with exactly two underscores: `TIDEMARK__SERVER__LISTEN`".into(),
        ));
    }
    let Some((last, parents)) = segments.split_last() else {
        return Err((
            "no key after `TIDEMARK__`".into(),
            "name a key: `TIDEMARK__SERVER__LISTEN`".into(),
        ));
    };
    let mut node = Node::Table(doc);
    let mut walked = String::new();
    for seg in parents {
        let (next, key) = node.child(seg, &walked)?;
        node = next;
        push_key(&mut walked, &key);
    }
    node.set(last, value, &walked)
}

/// Tables whose keys are names the file chooses (not a fixed set of keys): an
/// override may not create an entry of these by walking through it.
const NAMED: [&str; 2] = ["upstreams", "projections"];

/// A name folded for matching: lower case, `_` as `-`.
fn fold(name: &str) -> String {
    name.to_lowercase().replace('_', "-")
}

/// The key of `table` that `seg` names: `seg` itself when present, else the one key
/// equal to it ignoring case and `-` vs `_`; `seg` when none (or several) match.
fn resolve(table: &toml::Table, seg: &str) -> String {
    if table.contains_key(seg) {
        return seg.to_string();
    }
    let want = fold(seg);
    let mut hits = table.keys().filter(|k| fold(k) == want);
    match (hits.next(), hits.next()) {
        (Some(k), None) => k.clone(),
        _ => seg.to_string(),
    }
}

/// The error for a path through `walked.seg`, an upstream or projection the file
/// does not define.
fn missing_name(walked: &str, seg: &str, table: &toml::Table) -> Problem {
    let what = walked.trim_end_matches('s');
    let names: Vec<&str> = table.keys().map(String::as_str).collect();
    let folded: Vec<String> = names.iter().map(|n| fold(n)).collect();
    let folded_refs: Vec<&str> = folded.iter().map(String::as_str).collect();
    let close = super::sections::suggest(&fold(seg), &folded_refs)
        .and_then(|f| folded.iter().position(|x| x == f))
        .map(|i| names[i]);
    let add = format!(
        "to add a new {what}, set its whole table: `TIDEMARK__{}__{}={{ ... }}`",
        walked.to_uppercase(),
        seg.to_uppercase()
    );
    let fix = match close {
        Some(name) => format!("did you mean `{name}`? ({add})"),
        None if names.is_empty() => format!("the file defines no {walked}; {add}"),
        None => format!("the {walked} are: {}; {add}", names.join(", ")),
    };
    (
        format!(
            "no {what} `{seg}` in the file: an override sets keys of the {walked} the file \
             defines"
        ),
        fix,
    )
}

fn push_key(walked: &mut String, seg: &str) {
    if !walked.is_empty() {
        walked.push('.');
    }
    walked.push_str(seg);
}

/// A place in the document that can hold children.
enum Node<'a> {
    Table(&'a mut toml::Table),
    Array(&'a mut Vec<toml::Value>),
}

impl<'a> Node<'a> {
    /// The child `seg` (and its key as the file spells it), created as a table when a
    /// table lacks it, except an upstream or projection ([`NAMED`]).
    fn child(self, seg: &str, walked: &str) -> Result<(Node<'a>, String), Problem> {
        let (value, key) = match self {
            Node::Table(t) => {
                let key = resolve(t, seg);
                if !t.contains_key(&key) && NAMED.contains(&walked) {
                    return Err(missing_name(walked, seg, t));
                }
                let value = t
                    .entry(key.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                (value, key)
            }
            Node::Array(a) => {
                let len = a.len();
                let i = index(seg, len, walked)?;
                (&mut a[i], seg.to_string())
            }
        };
        match value {
            toml::Value::Table(t) => Ok((Node::Table(t), key)),
            toml::Value::Array(a) => Ok((Node::Array(a), key)),
            other => Err(not_container(walked, &key, other)),
        }
    }

    fn set(self, seg: &str, value: toml::Value, walked: &str) -> Result<(), Problem> {
        match self {
            Node::Table(t) => {
                let key = resolve(t, seg);
                t.insert(key, value);
            }
            Node::Array(a) => {
                let i = index(seg, a.len(), walked)?;
                a[i] = value;
            }
        }
        Ok(())
    }
}

fn index(seg: &str, len: usize, walked: &str) -> Result<usize, Problem> {
    match seg.parse::<usize>() {
        Ok(i) if i < len => Ok(i),
        Ok(i) => Err((
            format!("`{walked}` has {len} entries; index {i} is out of range"),
            format!("use an index from 0 to {}", len.saturating_sub(1)),
        )),
        Err(_) => Err((
            format!("`{walked}` is an array; `{seg}` is not an index"),
            format!(
                "index it by number: `{}__0__...`",
                walked.to_uppercase().replace('.', "__")
            ),
        )),
    }
}

fn not_container(walked: &str, seg: &str, value: &toml::Value) -> Problem {
    let mut key = walked.to_string();
    push_key(&mut key, seg);
    (
        format!(
            "`{key}` is a {}, so it has no keys to set",
            value.type_str()
        ),
        format!("override `{key}` itself (drop the rest of the variable name)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn doc() -> toml::Table {
        toml::from_str(
            "[server]\nlisten = \"127.0.0.1:8080\"\n\
             [upstreams.user-view]\nurl = \"http://127.0.0.1:7002\"\n\
             [[routes]]\nname = \"a\"\n[[routes]]\nname = \"b\"\nmax_wait = \"1s\"\n",
        )
        .unwrap()
    }

    #[test]
    fn values_are_toml_when_they_parse_as_toml() {
        assert_eq!(parse_value("5"), toml::Value::Integer(5));
        assert_eq!(parse_value("true"), toml::Value::Boolean(true));
        assert_eq!(parse_value("2s"), toml::Value::String("2s".into()));
        assert_eq!(
            parse_value("http://a:1"),
            toml::Value::String("http://a:1".into())
        );
        assert_eq!(parse_value("\"5\""), toml::Value::String("5".into()));
        assert_eq!(
            parse_value("[\"push\", \"header\"]")
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert!(parse_value("{ a = \"http://x\" }").is_table());
        assert_eq!(parse_value(""), toml::Value::String(String::new()));
    }

    #[test]
    fn scalars_nested_keys_and_array_elements_are_set() {
        let mut d = doc();
        let errors = apply_overrides(
            &mut d,
            &env(&[
                ("TIDEMARK__SERVER__MAX_HELD_READS", "5"),
                ("TIDEMARK__UPSTREAMS__USER-VIEW__URL", "http://10.0.0.1:1"),
                ("TIDEMARK__ROUTES__1__MAX_WAIT", "2s"),
                ("TIDEMARK__ADMIN__TOKEN_ENV", "ADMIN"),
                ("TIDEMARK_SECRET", "not an override"),
                ("PATH", "/bin"),
            ]),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(d["server"]["max_held_reads"].as_integer(), Some(5));
        assert_eq!(
            d["upstreams"]["user-view"]["url"].as_str(),
            Some("http://10.0.0.1:1")
        );
        assert_eq!(d["routes"][1]["max_wait"].as_str(), Some("2s"));
        assert_eq!(d["admin"]["token_env"].as_str(), Some("ADMIN"));
        assert!(!d.contains_key("secret"));
    }

    #[test]
    fn bad_paths_name_the_variable() {
        let mut d = doc();
        let errors = apply_overrides(
            &mut d,
            &env(&[
                ("TIDEMARK__", "x"),
                ("TIDEMARK__ROUTES__7__MAX_WAIT", "2s"),
                ("TIDEMARK__ROUTES__FIRST__NAME", "x"),
                ("TIDEMARK__SERVER__LISTEN__PORT", "1"),
                ("TIDEMARK__SERVER____LISTEN", "x"),
            ]),
        );
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "TIDEMARK__",
                "TIDEMARK__ROUTES__7__MAX_WAIT",
                "TIDEMARK__ROUTES__FIRST__NAME",
                "TIDEMARK__SERVER__LISTEN__PORT",
                "TIDEMARK__SERVER____LISTEN",
            ]
        );
        assert!(
            errors[1].problem.contains("out of range"),
            "{}",
            errors[1].problem
        );
        assert!(
            errors[2].problem.contains("not an index"),
            "{}",
            errors[2].problem
        );
        assert!(
            errors[3].problem.contains("server.listen"),
            "{}",
            errors[3].problem
        );
    }

    #[test]
    fn errors_under_an_overridden_key_name_the_variable() {
        let mut errors = vec![
            ConfigError {
                key: "routes[1] (read-user).max_wait".into(),
                problem: "bad".into(),
                fix: String::new(),
            },
            ConfigError {
                key: "upstreams.a.url".into(),
                problem: "bad".into(),
                fix: String::new(),
            },
            ConfigError {
                key: "server.listen".into(),
                problem: "bad".into(),
                fix: String::new(),
            },
        ];
        mark_overridden(
            &mut errors,
            &env(&[
                ("TIDEMARK__ROUTES__1__MAX_WAIT", "x"),
                ("TIDEMARK__UPSTREAMS__A", "{}"),
                ("TIDEMARK__SERVER__LISTENER", "x"),
            ]),
        );
        assert_eq!(
            errors[0].problem,
            "bad (set by `TIDEMARK__ROUTES__1__MAX_WAIT`)"
        );
        assert_eq!(errors[1].problem, "bad (set by `TIDEMARK__UPSTREAMS__A`)");
        assert_eq!(errors[2].problem, "bad");
        assert_eq!(
            dotted("token.verify_keys[0].kid"),
            "token.verify_keys.0.kid"
        );
        assert_eq!(dotted("routes[2]"), "routes.2");
    }

    #[test]
    fn a_misspelled_upstream_or_projection_is_refused_with_a_suggestion() {
        let mut d = toml::from_str::<toml::Table>(
            "[upstreams.item-view]\nurl = \"http://127.0.0.1:1\"\n\
             [projections.items]\nlogs = [\"item\"]\n",
        )
        .unwrap();
        let errors = apply_overrides(
            &mut d,
            &env(&[
                ("TIDEMARK__UPSTREAMS__ITEM-VEIW__URL", "http://10.0.0.1:1"),
                ("TIDEMARK__PROJECTIONS__ITEM__LOGS", "[\"a\"]"),
                ("TIDEMARK__PROJECTIONS__ORDERS__LOGS", "[\"a\"]"),
            ]),
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(errors[0].key, "TIDEMARK__PROJECTIONS__ITEM__LOGS");
        assert!(
            errors[0].fix.contains("did you mean `items`?"),
            "{}",
            errors[0].fix
        );
        assert!(
            errors[1].fix.contains("the projections are: items"),
            "{}",
            errors[1].fix
        );
        assert_eq!(errors[2].key, "TIDEMARK__UPSTREAMS__ITEM-VEIW__URL");
        assert!(
            errors[2].problem.contains("no upstream `item-veiw`"),
            "{}",
            errors[2].problem
        );
        assert!(
            errors[2].fix.contains("did you mean `item-view`?"),
            "{}",
            errors[2].fix
        );
        assert!(
            errors[2].fix.contains("TIDEMARK__UPSTREAMS__ITEM-VEIW={"),
            "{}",
            errors[2].fix
        );
        assert!(!d["upstreams"].as_table().unwrap().contains_key("item-veiw"));
    }

    #[test]
    fn underscores_and_case_match_the_files_names() {
        let mut d = toml::from_str::<toml::Table>(
            "[upstreams.item-view]\nurl = \"http://127.0.0.1:1\"\n\
             [upstreams.Orders_API]\nurl = \"http://127.0.0.1:2\"\n",
        )
        .unwrap();
        let errors = apply_overrides(
            &mut d,
            &env(&[
                ("TIDEMARK__UPSTREAMS__ITEM_VIEW__URL", "http://10.0.0.1:1"),
                ("TIDEMARK__UPSTREAMS__ORDERS-API__TIMEOUT", "5s"),
            ]),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let ups = d["upstreams"].as_table().unwrap();
        assert_eq!(ups.len(), 2, "{ups:?}");
        assert_eq!(ups["item-view"]["url"].as_str(), Some("http://10.0.0.1:1"));
        assert_eq!(ups["Orders_API"]["timeout"].as_str(), Some("5s"));
    }

    #[test]
    fn a_table_is_set_before_its_keys_whatever_the_order() {
        let mut d = doc();
        let errors = apply_overrides(
            &mut d,
            &env(&[
                ("TIDEMARK__UPSTREAMS__NEW__TIMEOUT", "5s"),
                ("TIDEMARK__UPSTREAMS__NEW", "{ url = \"http://a:1\" }"),
            ]),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(d["upstreams"]["new"]["url"].as_str(), Some("http://a:1"));
        assert_eq!(d["upstreams"]["new"]["timeout"].as_str(), Some("5s"));
    }
}
