//! The read decision (SPEC "Read path"): a pure function of the level, the
//! requirement, the instances' checkpoints, the cache answer and whether the hold's
//! deadline has passed. All I/O (cache lookups, holding, forwarding) is the caller's.
//!
//! The order of the steps ([`decide`]):
//! 1. `eventual`: forward to the least-outstanding instance (source `projection`).
//! 2. `strong`: the primary (`NoPrimary` without one). Then `pinned` (the token
//!    marks one of the projection's logs for the primary: a write whose fence
//!    failed, until the fence's `fallback` has passed): the primary; without one no
//!    instance can be trusted, so hold, then `on_timeout`.
//! 3. Nothing required: least-outstanding instance.
//! 4. Instances covering `required`: the least-outstanding of them.
//! 5. The cache: look it up (a non-empty token requirement, not looked up yet), or
//!    answer from it on a hit.
//! 6. Before the deadline: hold.
//! 7. Past it, `on_timeout`: `primary`, `stale` (the freshest instance) or `error`.
//!
//! Ties between equally loaded instances rotate by `tie_break`. A projection without
//! instances (the registry never builds one) can only be answered by the primary.

pub mod retry;

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
    /// An instance whose checkpoint covers the requirement (or no requirement).
    Projection,
    /// The write-through cache.
    Cache,
    /// The route's primary (`strong`, or `on_timeout = "primary"`).
    Primary,
    /// The freshest instance, past `max_wait` with `on_timeout = "stale"`.
    Stale,
}

impl Source {
    /// The `Consistency-Source` header value.
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
    /// The instance's checkpoint.
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
    /// The request's `Consistency-Level` (default `session`).
    pub level: Level,
    /// The token's entries restricted to the projection's logs.
    pub token_required: &'a PositionVector,
    /// What an instance must cover to serve: `token_required` merged with the
    /// staleness budget's requirement (the write positions older than the budget).
    pub required: &'a PositionVector,
    /// The projection's instances, by index (as in the registry).
    pub instances: &'a [InstanceView<'a>],
    /// What is known of the cache so far.
    pub cache: CacheState,
    /// The hold's deadline (`max_wait`) has passed.
    pub timed_out: bool,
    /// The route's `on_timeout`.
    pub on_timeout: OnTimeout,
    /// The route has a `primary`.
    pub has_primary: bool,
    /// The token marks one of the projection's logs for the primary (a failed write
    /// fence, within its `fallback`): no checkpoint is known to cover that write.
    pub pinned: bool,
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
    let all = || 0..input.instances.len();
    match input.level {
        Level::Strong => return primary(input),
        Level::Eventual => return forward_least_outstanding(input, all()),
        Level::Session => {}
    }
    if input.instances.is_empty() {
        return primary(input);
    }
    if input.pinned {
        if input.has_primary {
            return Decision::Primary;
        }
        if !input.timed_out {
            return Decision::Hold;
        }
        return on_timeout(input);
    }
    if input.required.is_empty() {
        return forward_least_outstanding(input, all());
    }
    let covering = all().filter(|&i| {
        input
            .instances
            .get(i)
            .is_some_and(|inst| inst.checkpoint.covers(input.required))
    });
    if let Some(instance) = least_outstanding(input, covering) {
        return Decision::Forward {
            instance,
            source: Source::Projection,
        };
    }
    match input.cache {
        CacheState::NotChecked if !input.token_required.is_empty() => return Decision::LookupCache,
        CacheState::Hit => return Decision::AnswerFromCache,
        _ => {}
    }
    if !input.timed_out {
        return Decision::Hold;
    }
    on_timeout(input)
}

/// Past the deadline: the route's `on_timeout`.
fn on_timeout(input: &GateInput<'_>) -> Decision {
    match input.on_timeout {
        OnTimeout::Primary => primary(input),
        OnTimeout::Error => Decision::TimedOut,
        OnTimeout::Stale => match freshest(input) {
            Some(instance) => Decision::Forward {
                instance,
                source: Source::Stale,
            },
            None => Decision::TimedOut,
        },
    }
}

fn primary(input: &GateInput<'_>) -> Decision {
    if input.has_primary {
        Decision::Primary
    } else {
        Decision::NoPrimary
    }
}

fn forward_least_outstanding(
    input: &GateInput<'_>,
    candidates: impl Iterator<Item = usize> + Clone,
) -> Decision {
    match least_outstanding(input, candidates) {
        Some(instance) => Decision::Forward {
            instance,
            source: Source::Projection,
        },
        None => primary(input),
    }
}

/// The candidate with the fewest requests in flight; ties rotate by `tie_break`.
fn least_outstanding(
    input: &GateInput<'_>,
    candidates: impl Iterator<Item = usize> + Clone,
) -> Option<usize> {
    best_by(input, candidates, |i| {
        std::cmp::Reverse(input.instances.get(i).map_or(usize::MAX, |x| x.outstanding))
    })
}

/// The instance covering the most of `required`: most logs covered, then the largest
/// sum of `min(checkpoint, required)`, then the fewest requests in flight; remaining
/// ties rotate by `tie_break`.
fn freshest(input: &GateInput<'_>) -> Option<usize> {
    best_by(input, 0..input.instances.len(), |i| {
        let Some(inst) = input.instances.get(i) else {
            return (0, 0, std::cmp::Reverse(usize::MAX));
        };
        let mut logs = 0usize;
        let mut sum = 0u128;
        for (log, need) in input.required.iter() {
            let have = inst.checkpoint.get(log);
            if have.is_some_and(|h| h >= need) {
                logs += 1;
            }
            sum += u128::from(have.unwrap_or(0).min(need));
        }
        (logs, sum, std::cmp::Reverse(inst.outstanding))
    })
}

/// Among the candidates with the greatest `score`, the `tie_break`-th (modulo their
/// count). Two passes, no allocation: this runs on every read.
fn best_by<K: Ord>(
    input: &GateInput<'_>,
    candidates: impl Iterator<Item = usize> + Clone,
    score: impl Fn(usize) -> K,
) -> Option<usize> {
    let mut best: Option<K> = None;
    let mut ties = 0usize;
    for i in candidates.clone() {
        let k = score(i);
        match &best {
            Some(b) if k < *b => {}
            Some(b) if k == *b => ties += 1,
            _ => {
                best = Some(k);
                ties = 1;
            }
        }
    }
    let best = best?;
    let nth = input.tie_break % ties;
    candidates.filter(|&i| score(i) == best).nth(nth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use CacheState::*;
    use Decision::*;
    use Level::*;

    fn v(text: &str) -> PositionVector {
        if text.is_empty() {
            return PositionVector::new();
        }
        PositionVector::parse(text, None).expect("test vector")
    }

    struct Case {
        name: &'static str,
        level: Level,
        token: &'static str,
        /// Empty: same as `token`.
        required: &'static str,
        /// (checkpoint, outstanding) per instance.
        instances: &'static [(&'static str, usize)],
        cache: CacheState,
        timed_out: bool,
        on_timeout: OnTimeout,
        has_primary: bool,
        pinned: bool,
        tie_break: usize,
        want: Decision,
    }

    const BASE: Case = Case {
        name: "",
        level: Session,
        token: "users=10",
        required: "",
        instances: &[("users=5", 0), ("users=7", 0)],
        cache: Unavailable,
        timed_out: false,
        on_timeout: OnTimeout::Error,
        has_primary: true,
        pinned: false,
        tie_break: 0,
        want: Hold,
    };

    fn fwd(instance: usize) -> Decision {
        Forward {
            instance,
            source: Source::Projection,
        }
    }

    fn stale(instance: usize) -> Decision {
        Forward {
            instance,
            source: Source::Stale,
        }
    }

    fn run(case: &Case) -> Decision {
        let token = v(case.token);
        let required = if case.required.is_empty() {
            token.clone()
        } else {
            v(case.required)
        };
        let cps: Vec<PositionVector> = case.instances.iter().map(|(c, _)| v(c)).collect();
        let views: Vec<InstanceView<'_>> = cps
            .iter()
            .zip(case.instances)
            .map(|(checkpoint, &(_, outstanding))| InstanceView {
                checkpoint,
                outstanding,
            })
            .collect();
        decide(&GateInput {
            level: case.level,
            token_required: &token,
            required: &required,
            instances: &views,
            cache: case.cache,
            timed_out: case.timed_out,
            on_timeout: case.on_timeout,
            has_primary: case.has_primary,
            pinned: case.pinned,
            tie_break: case.tie_break,
        })
    }

    #[test]
    fn every_branch_of_the_read_path() {
        #[rustfmt::skip]
        let cases = [
            Case { name: "eventual: least outstanding, no wait", level: Eventual, instances: &[("", 3), ("", 1)], want: fwd(1), ..BASE },
            Case { name: "eventual never holds nor looks up", level: Eventual, cache: NotChecked, timed_out: true, want: fwd(0), ..BASE },
            Case { name: "strong with a primary", level: Strong, instances: &[("users=99", 0)], want: Primary, ..BASE },
            Case { name: "strong without a primary", level: Strong, has_primary: false, want: NoPrimary, ..BASE },
            Case { name: "nothing required", token: "", instances: &[("", 2), ("", 1)], want: fwd(1), ..BASE },
            Case { name: "both cover: the idler", instances: &[("users=10", 2), ("users=12", 1)], want: fwd(1), ..BASE },
            Case { name: "only the busier one covers", instances: &[("users=10", 9), ("users=9", 0)], want: fwd(0), ..BASE },
            Case { name: "multi-log: one instance must cover every log", token: "users=10,orders=4", instances: &[("users=10,orders=3", 0), ("users=10,orders=4", 5)], want: fwd(1), ..BASE },
            Case { name: "multi-log: split coverage is no coverage", token: "users=10,orders=4", instances: &[("users=10", 0), ("orders=4", 0)], want: Hold, ..BASE },
            Case { name: "budget adds to the token's requirement", token: "users=10", required: "users=20", instances: &[("users=15", 0)], cache: Miss, want: Hold, ..BASE },
            Case { name: "cache not looked up yet", cache: NotChecked, want: LookupCache, ..BASE },
            Case { name: "cache hit", cache: Hit, want: AnswerFromCache, ..BASE },
            Case { name: "cache miss: hold", cache: Miss, want: Hold, ..BASE },
            Case { name: "no cache: hold", want: Hold, ..BASE },
            Case { name: "budget-only requirement skips the cache", token: "", required: "users=10", cache: NotChecked, want: Hold, ..BASE },
            Case { name: "covered beats the timeout", timed_out: true, instances: &[("users=10", 0)], want: fwd(0), ..BASE },
            Case { name: "cache hit beats the timeout", timed_out: true, cache: Hit, want: AnswerFromCache, ..BASE },
            Case { name: "timeout -> primary", timed_out: true, on_timeout: OnTimeout::Primary, want: Primary, ..BASE },
            Case { name: "timeout -> primary, none configured", timed_out: true, on_timeout: OnTimeout::Primary, has_primary: false, want: NoPrimary, ..BASE },
            Case { name: "timeout -> error", timed_out: true, on_timeout: OnTimeout::Error, want: TimedOut, ..BASE },
            Case { name: "timeout -> stale: the freshest", timed_out: true, on_timeout: OnTimeout::Stale, want: stale(1), ..BASE },
            Case { name: "stale: most logs covered first", token: "users=10,orders=10", timed_out: true, on_timeout: OnTimeout::Stale, instances: &[("users=9,orders=9", 0), ("users=10,orders=0", 0)], want: stale(1), ..BASE },
            Case { name: "stale: then the larger sum", token: "users=10,orders=10", timed_out: true, on_timeout: OnTimeout::Stale, instances: &[("users=10,orders=2", 0), ("users=10,orders=5", 0), ("users=99", 0)], want: stale(1), ..BASE },
            Case { name: "stale: sum counts no more than required", token: "users=10,orders=10", timed_out: true, on_timeout: OnTimeout::Stale, instances: &[("users=9000,orders=1", 0), ("users=10,orders=9", 0)], want: stale(1), ..BASE },
            Case { name: "stale: equal freshness -> least outstanding", timed_out: true, on_timeout: OnTimeout::Stale, instances: &[("users=5", 4), ("users=5", 1), ("users=5", 3)], want: stale(1), ..BASE },
            Case { name: "no instances: primary", instances: &[], want: Primary, ..BASE },
            Case { name: "no instances, no primary", level: Eventual, instances: &[], has_primary: false, want: NoPrimary, ..BASE },
            Case { name: "pinned: the primary, even when an instance covers the token", pinned: true, instances: &[("users=99", 0)], want: Primary, ..BASE },
            Case { name: "pinned, nothing required: still the primary", pinned: true, token: "", want: Primary, ..BASE },
            Case { name: "pinned without a primary: hold", pinned: true, has_primary: false, instances: &[("users=99", 0)], cache: Hit, want: Hold, ..BASE },
            Case { name: "pinned without a primary, past the deadline: on_timeout", pinned: true, has_primary: false, timed_out: true, want: TimedOut, ..BASE },
            Case { name: "pinned: eventual ignores it", pinned: true, level: Eventual, instances: &[("", 0)], want: fwd(0), ..BASE },
        ];
        for case in &cases {
            assert_eq!(run(case), case.want, "{}", case.name);
        }
    }

    #[test]
    fn ties_rotate_by_tie_break_among_the_least_loaded_only() {
        let all_equal = Case {
            instances: &[("users=10", 1), ("users=10", 1), ("users=10", 1)],
            ..BASE
        };
        let picks: Vec<Decision> = (0..4)
            .map(|tie_break| {
                run(&Case {
                    tie_break,
                    ..all_equal
                })
            })
            .collect();
        assert_eq!(picks, [fwd(0), fwd(1), fwd(2), fwd(0)]);

        let two_idle = Case {
            instances: &[
                ("users=10", 1),
                ("users=10", 0),
                ("users=10", 0),
                ("users=1", 0),
            ],
            ..BASE
        };
        let picks: Vec<Decision> = (0..3)
            .map(|tie_break| {
                run(&Case {
                    tie_break,
                    ..two_idle
                })
            })
            .collect();
        assert_eq!(
            picks,
            [fwd(1), fwd(2), fwd(1)],
            "only covering, least loaded instances take turns"
        );

        let stale_tie = Case {
            timed_out: true,
            on_timeout: OnTimeout::Stale,
            instances: &[("users=5", 0), ("users=5", 0)],
            ..BASE
        };
        assert_eq!(
            run(&Case {
                tie_break: 1,
                ..stale_tie
            }),
            stale(1)
        );
        assert_eq!(
            run(&Case {
                tie_break: usize::MAX,
                ..stale_tie
            }),
            stale(1)
        );
    }

    fn arb_vector() -> impl Strategy<Value = PositionVector> {
        prop::collection::btree_map("[abc]", 0u64..20, 0..3)
            .prop_map(|m| PositionVector::from_map(m).expect("valid logs"))
    }

    fn arb_level() -> impl Strategy<Value = Level> {
        prop_oneof![Just(Session), Just(Eventual), Just(Strong)]
    }

    fn arb_cache() -> impl Strategy<Value = CacheState> {
        prop_oneof![Just(Unavailable), Just(NotChecked), Just(Miss), Just(Hit)]
    }

    fn arb_on_timeout() -> impl Strategy<Value = OnTimeout> {
        prop_oneof![
            Just(OnTimeout::Primary),
            Just(OnTimeout::Stale),
            Just(OnTimeout::Error)
        ]
    }

    proptest! {
        #[test]
        fn decisions_respect_the_contract(
            level in arb_level(),
            token in arb_vector(),
            budget in arb_vector(),
            instances in prop::collection::vec((arb_vector(), 0usize..4), 0..4),
            cache in arb_cache(),
            timed_out in any::<bool>(),
            on_timeout in arb_on_timeout(),
            has_primary in any::<bool>(),
            pinned in any::<bool>(),
            tie_break in any::<usize>(),
        ) {
            let mut required = token.clone();
            required.merge(&budget);
            let views: Vec<InstanceView<'_>> = instances
                .iter()
                .map(|(checkpoint, outstanding)| InstanceView { checkpoint, outstanding: *outstanding })
                .collect();
            let input = GateInput {
                level, token_required: &token, required: &required, instances: &views,
                cache, timed_out, on_timeout, has_primary, pinned, tie_break,
            };
            let decision = decide(&input);
            if let Forward { instance, source } = decision {
                prop_assert!(instance < views.len());
                if level == Session && source == Source::Projection {
                    prop_assert!(views[instance].checkpoint.covers(&required));
                }
            }
            if level == Eventual {
                prop_assert!(!matches!(decision, Hold | LookupCache | AnswerFromCache | TimedOut));
            }
            if timed_out {
                prop_assert!(decision != Hold);
            }
            if pinned && level == Session {
                let trusted = matches!(decision, Forward { source: Source::Projection, .. } | AnswerFromCache);
                prop_assert!(!trusted, "a pinned read was answered from the projection or cache");
            }
        }
    }
}
