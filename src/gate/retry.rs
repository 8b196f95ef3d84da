//! Which instance a read is retried on when its connection to the instance the gate
//! chose failed (refused, reset before any response byte, connect timeout): a pure
//! function beside [`super::decide`], the I/O (the resend) being the caller's.
//!
//! A candidate is any other instance that is not ejected (passive health) and can
//! serve the read as the first choice could:
//! - source `projection`: its checkpoint covers the read's requirement (a held read
//!   is only moved to an instance that also covers what it waited for);
//! - source `stale`: its checkpoint covers the failed instance's (as fresh);
//! - source `primary`: any instance of the primary (no checkpoints).
//!
//! The least loaded candidate wins, ties rotating by `tie_break`; none: no retry.

use super::{InstanceView, Source};
use crate::position::PositionVector;

/// Everything the retry choice depends on.
#[derive(Debug, Clone, Copy)]
pub struct RetryInput<'a> {
    /// The upstream's instances, by index (as in the registry).
    pub instances: &'a [InstanceView<'a>],
    /// `ejected[i]`: instance `i` is out of the rotation (a recent connection failure).
    pub ejected: &'a [bool],
    /// The instance whose connection failed.
    pub failed: usize,
    /// How the first choice would have answered.
    pub source: Source,
    /// What an instance must cover to answer as `projection`.
    pub required: &'a PositionVector,
    /// Rotates ties between equally loaded candidates.
    pub tie_break: usize,
}

/// The instance to retry on, if any (see the module doc).
pub fn retry_on(input: &RetryInput<'_>) -> Option<usize> {
    let failed_cp = input.instances.get(input.failed).map(|v| v.checkpoint);
    let can_serve = |v: &InstanceView<'_>| match input.source {
        Source::Projection => v.checkpoint.covers(input.required),
        Source::Stale => failed_cp.is_some_and(|f| v.checkpoint.covers(f)),
        Source::Primary => true,
        Source::Cache => false,
    };
    let candidates: Vec<usize> = input
        .instances
        .iter()
        .enumerate()
        .filter(|&(i, v)| {
            i != input.failed && !input.ejected.get(i).copied().unwrap_or(false) && can_serve(v)
        })
        .map(|(i, _)| i)
        .collect();
    let least = candidates
        .iter()
        .map(|&i| input.instances[i].outstanding)
        .min()?;
    let ties: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| input.instances[i].outstanding == least)
        .collect();
    ties.get(input.tie_break % ties.len()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> PositionVector {
        if text.is_empty() {
            return PositionVector::new();
        }
        PositionVector::parse(text, None).unwrap()
    }

    struct Case {
        name: &'static str,
        /// (checkpoint, outstanding, ejected)
        instances: &'static [(&'static str, usize, bool)],
        failed: usize,
        source: Source,
        required: &'static str,
        tie_break: usize,
        want: Option<usize>,
    }

    fn run(case: &Case) -> Option<usize> {
        let cps: Vec<PositionVector> = case.instances.iter().map(|(c, _, _)| v(c)).collect();
        let views: Vec<InstanceView<'_>> = cps
            .iter()
            .zip(case.instances)
            .map(|(cp, (_, outstanding, _))| InstanceView {
                checkpoint: cp,
                outstanding: *outstanding,
            })
            .collect();
        let ejected: Vec<bool> = case.instances.iter().map(|(_, _, e)| *e).collect();
        let required = v(case.required);
        retry_on(&RetryInput {
            instances: &views,
            ejected: &ejected,
            failed: case.failed,
            source: case.source,
            required: &required,
            tie_break: case.tie_break,
        })
    }

    #[test]
    fn every_case_of_the_retry_choice() {
        use Source::*;
        #[rustfmt::skip]
        let cases = [
            Case { name: "one instance: nothing to retry on", instances: &[("a=5", 0, false)], failed: 0, source: Projection, required: "", tie_break: 0, want: None },
            Case { name: "no requirement: the other instance", instances: &[("a=5", 0, false), ("a=1", 3, false)], failed: 0, source: Projection, required: "", tie_break: 0, want: Some(1) },
            Case { name: "held read: only an instance covering the requirement", instances: &[("a=5", 0, false), ("a=1", 0, false), ("a=7", 9, false)], failed: 0, source: Projection, required: "a=5", tie_break: 0, want: Some(2) },
            Case { name: "held read: no other instance covers it", instances: &[("a=5", 0, false), ("a=4", 0, false)], failed: 0, source: Projection, required: "a=5", tie_break: 0, want: None },
            Case { name: "ejected instances are skipped", instances: &[("a=5", 0, false), ("a=5", 0, true), ("a=5", 5, false)], failed: 0, source: Projection, required: "a=5", tie_break: 0, want: Some(2) },
            Case { name: "every other instance ejected: no retry", instances: &[("a=5", 0, false), ("a=5", 0, true)], failed: 0, source: Projection, required: "", tie_break: 0, want: None },
            Case { name: "least loaded candidate wins", instances: &[("", 0, false), ("", 4, false), ("", 2, false)], failed: 0, source: Primary, required: "", tie_break: 0, want: Some(2) },
            Case { name: "ties rotate by tie_break", instances: &[("", 0, false), ("", 1, false), ("", 1, false)], failed: 0, source: Primary, required: "", tie_break: 1, want: Some(2) },
            Case { name: "stale: only an instance as fresh as the failed one", instances: &[("a=3", 0, false), ("a=9", 0, false), ("a=2", 0, false)], failed: 2, source: Stale, required: "a=10", tie_break: 0, want: Some(0) },
            Case { name: "stale: none as fresh", instances: &[("a=3", 0, false), ("a=9", 0, false)], failed: 1, source: Stale, required: "a=10", tie_break: 0, want: None },
            Case { name: "the failed instance is never chosen", instances: &[("a=9", 0, false), ("a=1", 0, false)], failed: 0, source: Projection, required: "a=5", tie_break: 0, want: None },
            Case { name: "a cache answer is never retried", instances: &[("a=9", 0, false), ("a=9", 0, false)], failed: 0, source: Cache, required: "", tie_break: 0, want: None },
        ];
        for case in &cases {
            assert_eq!(run(case), case.want, "{}", case.name);
        }
    }
}
