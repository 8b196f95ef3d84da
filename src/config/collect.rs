//! The error collector every validation step writes to: each problem is recorded
//! under its key and checking goes on with the default, so one run reports all.

use std::time::Duration;

use super::raw::{Field, Lenient};
use super::{values, ConfigError};

/// The problems found so far, and helpers that read a raw field, record its problem
/// under its key, and fall back to the default so checking can go on.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<ConfigError>);

impl Errors {
    /// Records one problem.
    pub fn push(
        &mut self,
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.0.push(ConfigError {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// Records a `(problem, fix)` from [`values`].
    pub fn problem(&mut self, key: impl Into<String>, (problem, fix): values::Problem) {
        self.push(key, problem, fix);
    }

    /// The field's value, or `None` when absent or of the wrong type (recorded).
    pub fn field<T>(&mut self, key: &str, field: Field<T>) -> Option<T> {
        match field? {
            Lenient::Valid(v) => Some(v),
            Lenient::Invalid { message } => {
                self.push(
                    key,
                    message,
                    "write the value with the type shown in config/example.toml",
                );
                None
            }
        }
    }

    /// A duration field, `None` when absent or invalid (recorded).
    pub fn duration(&mut self, key: &str, field: Field<String>) -> Option<Duration> {
        let text = self.field(key, field)?;
        values::duration(&text)
            .map_err(|p| self.problem(key, p))
            .ok()
    }

    /// A duration with a default; `positive` refuses zero.
    pub fn duration_or(
        &mut self,
        key: &str,
        field: Field<String>,
        default: Duration,
        positive: bool,
    ) -> Duration {
        match self.duration(key, field) {
            Some(d) if positive && d.is_zero() => {
                self.push(
                    key,
                    "must be longer than zero",
                    format!(
                        "use at least `1ms` (default `{}`)",
                        humantime::format_duration(default)
                    ),
                );
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    /// A count with a default; `min` is the least accepted value.
    pub fn count_or(
        &mut self,
        key: &str,
        field: Field<usize>,
        default: usize,
        min: usize,
    ) -> usize {
        match self.field(key, field) {
            Some(n) if n < min => {
                self.push(
                    key,
                    format!("must be at least {min}, got {n}"),
                    format!("use {min} or more (default {default})"),
                );
                default
            }
            Some(n) => n,
            None => default,
        }
    }
}
