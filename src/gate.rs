//! The read decision (SPEC "Read path"): a pure function of the level, the
//! requirement, the instances' checkpoints, the cache answer and whether the hold's
//! deadline has passed. All I/O (cache lookups, holding, forwarding) is the caller's.
//! (Stub: the checkpoint helper fills in [`decide`] and its tests.)

use crate::config::OnTimeout;
use crate::position::PositionVector;

/// `Consistency-Level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// Honour the token (default).
    #[default]
    Session,
    /// No wait: any instance.
    Eventual,
    /// Answer from the route's primary.
    Strong,
}

impl Level {
    /// Parses a header value, case-insensitively; `None` for anything else.
    pub fn parse(value: &str) -> Option<Level> {
        match value.trim().to_ascii_lowercase().as_str() {
            "session" => Some(Level::Session),
            "eventual" => Some(Level::Eventual),
            "strong" => Some(Level::Strong),
            _ => None,
        }
    }
}

/// `Consistency-Source`: what answered a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Projection,
    Cache,
    Primary,
    Stale,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Projection => "projection",
            Source::Cache => "cache",
            Source::Primary => "primary",
            Source::Stale => "stale",
        }
    }
}

/// One instance as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct InstanceView<'a> {
    pub checkpoint: &'a PositionVector,
    /// Requests in flight to it (least-outstanding balancing).
    pub outstanding: usize,
}

/// What is known of the write-through cache for this read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// The route has no cache (or the request has no session to scope it to).
    Unavailable,
    /// Not looked up yet.
    NotChecked,
    /// Looked up: no entry covering the token's requirement.
    Miss,
    /// Looked up: an entry covers the token's requirement.
    Hit,
}

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct GateInput<'a> {
    pub level: Level,
    /// The token's entries restricted to the projection's logs.
    pub token_required: &'a PositionVector,
    /// What an instance must cover to serve: `token_required` merged with the
    /// staleness budget's requirement (the write positions older than the budget).
    pub required: &'a PositionVector,
    pub instances: &'a [InstanceView<'a>],
    pub cache: CacheState,
    /// The hold's deadline (`max_wait`) has passed.
    pub timed_out: bool,
    pub on_timeout: OnTimeout,
    pub has_primary: bool,
    /// Rotates ties between equally loaded instances (e.g. a request counter).
    pub tie_break: usize,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward to `instance`; answer with `source` (`Projection` or `Stale`).
    Forward { instance: usize, source: Source },
    /// Forward to the route's primary (`Source::Primary`).
    Primary,
    /// Look the cache up, then decide again with the answer.
    LookupCache,
    /// Answer from the cache entry found (`Source::Cache`).
    AnswerFromCache,
    /// Hold until an instance covers `required` or the deadline passes, then decide again.
    Hold,
    /// Answer `503` (timeout with `on_timeout = "error"`).
    TimedOut,
    /// `strong` (or `on_timeout = "primary"`) on a route without a primary.
    NoPrimary,
}

/// The read decision. See the module doc and SPEC "Read path" for the order of steps.
pub fn decide(input: &GateInput<'_>) -> Decision {
    let _ = input;
    todo!("checkpoint helper")
}
