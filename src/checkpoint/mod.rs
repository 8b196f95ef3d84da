//! Checkpoints: per projection, per instance, monotonic; the waiter registry that
//! holds reads until a checkpoint covers them; the gateway's record of when it saw each
//! write position (for staleness budgets and lag); checkpoint sources.
//!
//! - [`registry`]: [`Registry`] (every projection) and the held-read cap ([`HoldPermit`]).
//! - [`projection`]: [`Projection`]: checkpoints, `apply`, `wait_for`, lags, ETA.
//! - [`waiters`]: the waiter index that wakes only the reads an advance satisfies.
//! - [`writes`]: the bounded write-time record behind lags and staleness budgets.
//! - [`rate`]: catch-up rates behind [`Projection::eta`].
//! - [`sources`]: the checkpoint sources that run on their own (`poll`, ...).

pub mod projection;
pub mod rate;
pub mod registry;
pub mod sink;
pub mod sources;
pub mod waiters;
pub mod writes;

pub use projection::{Projection, DEFAULT_INSTANCE};
pub use registry::{Fresh, HoldPermit, Registry};
pub use sink::RegistrySink;
pub use waiters::{Wait, Waiter};
pub use writes::MAX_WRITE_RECORD;

/// What [`Projection::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Some instance's checkpoint moved forward.
    pub advanced: bool,
    /// Some log of the report was lower than what was known (ignored, counted).
    pub regressed: bool,
    /// Held reads released by this report.
    pub woken: usize,
}

#[cfg(test)]
mod tests;
