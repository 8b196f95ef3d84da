//! `TIDEMARK__SECTION__KEY` overrides, applied to the parsed TOML document before
//! deserialization. (Stub: the config helper fills this in.)

use super::ConfigError;

/// Applies every `TIDEMARK__*` variable of `env` to `doc`; returns the problems found
/// (a path that cannot be set), one per variable.
pub fn apply_overrides(doc: &mut toml::Table, env: &[(String, String)]) -> Vec<ConfigError> {
    let _ = (doc, env);
    todo!("config helper")
}
