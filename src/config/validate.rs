//! Raw config -> validated [`Config`], every error reported at once. (Stub.)

use std::path::PathBuf;

use super::{Config, ConfigErrors};

pub fn from_toml(
    text: &str,
    source: Option<PathBuf>,
    env: &[(String, String)],
) -> Result<Config, ConfigErrors> {
    let _ = (text, source, env);
    todo!("config helper")
}

/// The route table as `tidemark check` prints it.
pub fn describe_routes(config: &Config) -> String {
    let _ = config;
    todo!("config helper")
}
