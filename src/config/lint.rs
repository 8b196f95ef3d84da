//! Warnings on a valid config: settings that load and run but very likely do not do
//! what their author meant. `tidemark check` prints them (exit status unchanged) and
//! `tidemark run` logs them at `warn` on start.
//!
//! - A write route's `default_log` that no projection consumes: bare write positions
//!   land on a log no read waits for, so every read after such a write goes out
//!   unheld (and possibly stale), silently.

use super::{Config, RouteKind};

/// Every warning for `config`, each naming the key and the fix.
pub fn warnings(config: &Config) -> Vec<String> {
    let consumed: Vec<&str> = {
        let mut logs: Vec<&str> = config
            .projections
            .values()
            .flat_map(|p| p.logs.iter().map(String::as_str))
            .collect();
        logs.sort_unstable();
        logs.dedup();
        logs
    };
    let mut out = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        if !matches!(route.kind, RouteKind::Write) {
            continue;
        }
        let Some(log) = route.default_log.as_deref() else {
            continue;
        };
        if consumed.contains(&log) {
            continue;
        }
        let fix = match super::sections::suggest(log, &consumed) {
            Some(close) => format!(
                "did you mean `{close}`? Set `default_log = \"{close}\"`, or add `{log}` to \
                 the `logs` of the projection that reads these writes"
            ),
            None if consumed.is_empty() => format!(
                "add a `[projections.NAME]` with `logs = [\"{log}\"]` and a read route using it"
            ),
            None => format!(
                "set `default_log` to a log a projection consumes ({}), or add `{log}` to \
                 the `logs` of the projection that reads these writes",
                consumed.join(", ")
            ),
        };
        out.push(format!(
            "routes[{i}] ({}).default_log: no projection consumes log `{log}`, so no read \
             waits for this route's writes (they go out unheld, possibly stale); fix: {fix}",
            route.name
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(default_log: &str) -> Config {
        let toml = format!(
            "[upstreams.cmd]\nurl = \"http://127.0.0.1:1\"\n\
             [upstreams.view]\nurl = \"http://127.0.0.1:2\"\n\
             [projections.items]\nlogs = [\"items\"]\nsources = [\"push\"]\n\
             [[routes]]\nname = \"w\"\nkind = \"write\"\npath = \"/items/{{id}}\"\n\
             upstream = \"cmd\"\ndefault_log = \"{default_log}\"\n\
             [[routes]]\nname = \"r\"\nkind = \"read\"\npath = \"/items/{{id}}\"\n\
             upstream = \"view\"\nprojection = \"items\"\n"
        );
        Config::from_toml(&toml, None, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_default_log_no_projection_consumes_is_flagged_with_a_fix() {
        assert!(warnings(&config("items")).is_empty());
        let w = warnings(&config("item"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("routes[0] (w).default_log"), "{}", w[0]);
        assert!(w[0].contains("did you mean `items`?"), "{}", w[0]);
        let w = warnings(&config("orders"));
        assert!(
            w[0].contains("a log a projection consumes (items)"),
            "{}",
            w[0]
        );
    }
}
