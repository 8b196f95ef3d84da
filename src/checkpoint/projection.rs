//! One projection: its instances' checkpoints (monotonic per instance per log), its
//! held reads, its write-time record and catch-up rates, all behind one mutex so a
//! coverage check and a waiter's registration can never miss an advance in between.
//!
//! A projection a reload replaced keeps serving the reads that started before the
//! reload; the replacement forwards every advance (and reset) to it, instance by
//! instance, for each instance whose name and URL the reload kept (see
//! [`Projection::forward_to`] and [`super::waiters`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::rate::{secs_to_duration, Rates};
use super::waiters::{covered, Requirement, Wait, WaiterIndex};
use super::writes::{WriteRecord, MAX_WRITE_RECORD};
use super::{Applied, Waiter};
use crate::config::SourceKind;
use crate::position::PositionVector;

/// The instance name used when a projection's config names none.
pub const DEFAULT_INSTANCE: &str = "default";

/// Everything behind the projection's lock.
pub(crate) struct State {
    /// `checkpoints[instance][log]`; `None`: nothing reported (covers nothing).
    checkpoints: Vec<Vec<Option<u64>>>,
    /// The same, from the shared sources only (`push` and `redis`): what this gateway
    /// republishes to a Redis that restarted empty. `header` and `poll` checkpoints
    /// stay local.
    shared: Vec<Vec<Option<u64>>>,
    pub(crate) waiters: WaiterIndex,
    writes: WriteRecord,
    rates: Rates,
}

/// Takes the lock, recovering from poisoning (the state stays consistent: no code
/// under the lock panics on input).
pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// One projection: its instances' checkpoints, its waiters, its write-time record.
pub struct Projection {
    name: String,
    logs: Vec<String>,
    log_index: HashMap<String, u32>,
    instances: Vec<String>,
    state: Arc<Mutex<State>>,
    /// The checkpoints as position vectors, rebuilt on every advance or reset (rare) so
    /// the read path loads them without locking or allocating (every read).
    snapshot: arc_swap::ArcSwap<Vec<PositionVector>>,
    pub(crate) held: AtomicUsize,
    /// Projections this one replaced on a reload whose reads may still be held, with
    /// the instance mapping (taken only when an advance or reset is forwarded).
    followers: Mutex<Vec<Follower>>,
}

/// A projection a reload replaced, fed by its replacement.
struct Follower {
    target: Weak<Projection>,
    /// `instances[i]`: the follower's index of this projection's instance `i`, when
    /// the reload kept its name and URL.
    instances: Box<[Option<usize>]>,
}

impl fmt::Debug for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Projection")
            .field("name", &self.name)
            .field("logs", &self.logs)
            .field("instances", &self.instances)
            .finish_non_exhaustive()
    }
}

impl Projection {
    /// A projection fed by `logs` (duplicates ignored) with the named instances; an
    /// empty `instances` gives one instance named [`DEFAULT_INSTANCE`].
    pub fn new(name: impl Into<String>, logs: &[String], instances: &[String]) -> Projection {
        let mut log_names: Vec<String> = Vec::with_capacity(logs.len());
        let mut log_index = HashMap::new();
        for log in logs {
            if !log_index.contains_key(log) {
                log_index.insert(log.clone(), log_names.len() as u32);
                log_names.push(log.clone());
            }
        }
        let instances = if instances.is_empty() {
            vec![DEFAULT_INSTANCE.to_string()]
        } else {
            instances.to_vec()
        };
        let (n, l) = (instances.len(), log_names.len());
        Projection {
            name: name.into(),
            log_index,
            state: Arc::new(Mutex::new(State {
                checkpoints: vec![vec![None; l]; n],
                shared: vec![vec![None; l]; n],
                waiters: WaiterIndex::new(n, l),
                writes: WriteRecord::new(l, MAX_WRITE_RECORD),
                rates: Rates::new(n, l),
            })),
            snapshot: arc_swap::ArcSwap::from_pointee(vec![PositionVector::new(); n]),
            logs: log_names,
            instances,
            held: AtomicUsize::new(0),
            followers: Mutex::new(Vec::new()),
        }
    }

    /// The projection's name (config key `projections.NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Logs the projection consumes, in config order.
    pub fn logs(&self) -> &[String] {
        &self.logs
    }

    /// Instance names; an instance is addressed by its index here.
    pub fn instances(&self) -> &[String] {
        &self.instances
    }

    /// The index of the instance named `name`.
    pub fn instance_index(&self, name: &str) -> Option<usize> {
        self.instances.iter().position(|i| i == name)
    }

    /// Applies a reported checkpoint to `instance` (`None`: every instance), keeping
    /// each log's maximum; logs the projection does not consume, and an instance index
    /// out of range, are ignored. Wakes the held reads it satisfies, and only those.
    /// Counts `tidemark_checkpoint_updates_total{projection,source}`.
    pub fn apply(
        &self,
        instance: Option<usize>,
        checkpoint: &PositionVector,
        source: SourceKind,
        now: Instant,
    ) -> Applied {
        metrics::counter!(
            "tidemark_checkpoint_updates_total",
            "projection" => self.name.clone(),
            "source" => source.as_str(),
        )
        .increment(1);
        let Some(targets) = self.targets(instance) else {
            return Applied::default();
        };
        let applied = self.advance(targets.clone(), checkpoint, source, now);
        if applied.advanced {
            self.each_follower(targets, |follower, j| {
                follower.advance(j..j + 1, checkpoint, source, now);
            });
        }
        applied
    }

    /// The instance indexes `instance` names (`None`: all; `None` when out of range).
    fn targets(&self, instance: Option<usize>) -> Option<std::ops::Range<usize>> {
        match instance {
            Some(i) if i < self.instances.len() => Some(i..i + 1),
            Some(_) => None,
            None => Some(0..self.instances.len()),
        }
    }

    /// [`apply`](Self::apply) to `targets`, without the count and the forwarding to
    /// followers (a forwarded report was counted once, and every follower is fed
    /// directly by the newest projection).
    fn advance(
        &self,
        targets: std::ops::Range<usize>,
        checkpoint: &PositionVector,
        source: SourceKind,
        now: Instant,
    ) -> Applied {
        let report: Vec<(u32, u64)> = checkpoint
            .iter()
            .filter_map(|(log, pos)| self.log_index.get(log).map(|&l| (l, pos)))
            .collect();
        let mut applied = Applied::default();
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        // Every (instance, log) that moved; waiters are woken only after the snapshot
        // shows the new checkpoints, so a released read never sees an older one.
        let mut moved: Vec<(usize, u32)> = Vec::new();
        let shared = matches!(source, SourceKind::Push | SourceKind::Redis);
        for i in targets.clone() {
            if shared {
                if let Some(cp) = state.shared.get_mut(i) {
                    for &(log, pos) in &report {
                        if let Some(slot) = cp.get_mut(log as usize) {
                            *slot = Some(slot.map_or(pos, |known| known.max(pos)));
                        }
                    }
                }
            }
            let Some(cp) = state.checkpoints.get_mut(i) else {
                continue;
            };
            for &(log, pos) in &report {
                let Some(slot) = cp.get_mut(log as usize) else {
                    continue;
                };
                match *slot {
                    Some(known) if pos < known => applied.regressed = true,
                    Some(known) if pos == known => {}
                    _ => {
                        *slot = Some(pos);
                        state.rates.observe(i, log as usize, pos, now);
                        moved.push((i, log));
                    }
                }
            }
        }
        applied.advanced = !moved.is_empty();
        if applied.advanced {
            for &(log, _) in &report {
                let floor = min_checkpoint(&state.checkpoints, log as usize);
                state.writes.prune(log as usize, floor);
            }
            self.publish(state);
            for &(i, log) in &moved {
                applied.woken += state.waiters.advance(i, log, &state.checkpoints[i]);
            }
        }
        drop(guard);
        if applied.regressed {
            tracing::debug!(projection = %self.name, source = source.as_str(), "checkpoint report below the known checkpoint ignored");
        }
        applied
    }

    /// Calls `f(follower, its instance index)` for each follower instance mapped from
    /// one of `targets`; drops the followers that are gone (their gateway finished).
    fn each_follower(&self, targets: std::ops::Range<usize>, f: impl Fn(&Projection, usize)) {
        let live: Vec<(Arc<Projection>, Vec<usize>)> = {
            let mut followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
            if followers.is_empty() {
                return;
            }
            followers.retain(|f| f.target.strong_count() > 0);
            followers
                .iter()
                .filter_map(|f| {
                    let target = f.target.upgrade()?;
                    let mapped = targets
                        .clone()
                        .filter_map(|i| f.instances.get(i).copied().flatten())
                        .collect();
                    Some((target, mapped))
                })
                .collect()
        };
        // Outside the lock: no two projections' locks are ever held at once.
        for (target, instances) in live {
            for j in instances {
                f(&target, j);
            }
        }
    }

    /// After a reload replaced `old` with this projection: copies the checkpoints of
    /// the instances whose name and URL the reload kept (`instances[i]`: `old`'s index
    /// of this projection's instance `i`), when the logs are the same; and makes every
    /// later advance or reset here reach `old` too, so the reads held on it (and
    /// those that start on the replaced config) are released as if it were still
    /// fed. Call before this projection is shared.
    pub(crate) fn forward_to(&self, old: &Arc<Projection>, instances: Vec<Option<usize>>) {
        if old.logs == self.logs {
            let from = lock(&old.state);
            let mut to = lock(&self.state);
            for (i, j) in instances.iter().enumerate() {
                let Some(j) = *j else { continue };
                if let (Some(cp), Some(shared)) = (from.checkpoints.get(j), from.shared.get(j)) {
                    to.checkpoints[i] = cp.clone();
                    to.shared[i] = shared.clone();
                }
            }
            drop(from);
            self.publish(&to);
        }
        // `old`'s own followers (earlier reloads) are fed directly from here too, so a
        // replaced generation that finishes first does not cut later ones off.
        let mut inherited: Vec<Follower> = old
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|f| f.target.strong_count() > 0)
            .map(|f| Follower {
                target: f.target.clone(),
                instances: instances
                    .iter()
                    .map(|j| j.and_then(|j| f.instances.get(j).copied().flatten()))
                    .collect(),
            })
            .collect();
        inherited.push(Follower {
            target: Arc::downgrade(old),
            instances: instances.into_boxed_slice(),
        });
        inherited.retain(|f| f.instances.iter().any(Option::is_some));
        *self.followers.lock().unwrap_or_else(|e| e.into_inner()) = inherited;
    }

    /// Forgets the checkpoint of `instance` (`None`: all), for a rebuilt projection.
    /// Held reads stay held until the instance catches up again (or time out).
    pub fn reset(&self, instance: Option<usize>) {
        let Some(targets) = self.targets(instance) else {
            return;
        };
        self.reset_local(targets.clone());
        self.each_follower(targets, |follower, j| follower.reset_local(j..j + 1));
    }

    fn reset_local(&self, targets: std::ops::Range<usize>) {
        let mut state = lock(&self.state);
        for i in targets {
            if let Some(cp) = state.checkpoints.get_mut(i) {
                cp.fill(None);
            }
            if let Some(cp) = state.shared.get_mut(i) {
                cp.fill(None);
            }
            state.rates.reset(i);
        }
        self.publish(&state);
    }

    /// Every instance's checkpoint from the shared sources (`push`, `redis`) only, by
    /// index: what is republished to Redis.
    pub fn shared_checkpoints(&self) -> Vec<PositionVector> {
        let state = lock(&self.state);
        state
            .shared
            .iter()
            .map(|cp| {
                self.logs
                    .iter()
                    .zip(cp)
                    .filter_map(|(log, pos)| pos.map(|p| (log.as_str(), p)))
                    .collect()
            })
            .collect()
    }

    /// Every instance's checkpoint, by index (logs nothing was reported for are absent).
    pub fn checkpoints(&self) -> Vec<PositionVector> {
        self.snapshot().as_ref().clone()
    }

    /// The same, shared: an atomic load, no lock and no allocation (the read path).
    /// Never ahead of the registry; [`wait_for`](Self::wait_for) is the authority.
    pub fn snapshot(&self) -> Arc<Vec<PositionVector>> {
        self.snapshot.load_full()
    }

    /// Rebuilds the snapshot from `state` (called with the state locked).
    fn publish(&self, state: &State) {
        let vectors = state
            .checkpoints
            .iter()
            .map(|cp| {
                self.logs
                    .iter()
                    .zip(cp)
                    .filter_map(|(log, pos)| pos.map(|p| (log.as_str(), p)))
                    .collect()
            })
            .collect();
        self.snapshot.store(Arc::new(vectors));
    }

    /// Resolves at once when an instance covers `required`, else registers a waiter
    /// that is woken by the first `apply` that makes some instance cover it. Entries of
    /// logs the projection does not consume are ignored (they never cause a wait).
    pub fn wait_for(&self, required: &PositionVector) -> Wait {
        let required = self.requirement(required);
        let mut state = lock(&self.state);
        if let Some(i) = state
            .checkpoints
            .iter()
            .position(|cp| covered(cp, &required))
        {
            return Wait::Ready(i);
        }
        let State {
            checkpoints,
            waiters,
            ..
        } = &mut *state;
        let (id, rx) = waiters.register(required, checkpoints);
        drop(state);
        Wait::Pending(Waiter::new(Arc::clone(&self.state), id, rx))
    }

    /// Reads registered as waiters now (index size; `held` counts hold permits).
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiters.len()
    }

    /// Index entries of the waiters (one per waiter per instance), for diagnostics.
    pub fn waiter_entries(&self) -> usize {
        lock(&self.state).waiters.queued()
    }

    /// Records that the gateway saw a write reach `position` at `now` (logs the
    /// projection consumes only; at most [`MAX_WRITE_RECORD`] entries per log).
    pub fn record_write(&self, position: &PositionVector, now: Instant) {
        let report: Vec<(u32, u64)> = position
            .iter()
            .filter_map(|(log, pos)| self.log_index.get(log).map(|&l| (l, pos)))
            .collect();
        if report.is_empty() {
            return;
        }
        let mut state = lock(&self.state);
        for (log, pos) in report {
            state.writes.record(log as usize, pos, now);
        }
    }

    /// What an instance must cover to be no more than `budget` behind at `now`: per
    /// log, the newest write position seen at or before `now - budget`.
    pub fn budget_requirement(&self, budget: Duration, now: Instant) -> PositionVector {
        let Some(cutoff) = now.checked_sub(budget) else {
            return PositionVector::new();
        };
        let state = lock(&self.state);
        self.logs
            .iter()
            .enumerate()
            .filter_map(|(l, log)| {
                state
                    .writes
                    .newest_at_or_before(l, cutoff)
                    .map(|p| (log.as_str(), p))
            })
            .collect()
    }

    /// Each instance's lag at `now`: the age of the oldest recorded write position its
    /// checkpoint does not cover (zero when it covers them all).
    pub fn lags(&self, now: Instant) -> Vec<Duration> {
        let state = lock(&self.state);
        state
            .checkpoints
            .iter()
            .map(|cp| {
                cp.iter()
                    .enumerate()
                    .map(|(l, &pos)| state.writes.lag(l, pos, now))
                    .max()
                    .unwrap_or(Duration::ZERO)
            })
            .collect()
    }

    /// Estimated time until some instance covers `required`; zero when one covers it
    /// now; `None` when no instance has an estimate on every log it lacks.
    ///
    /// Per instance and missing log, the smaller of two estimates: the positions
    /// missing over the observed catch-up rate ([`super::rate`]), and the instance's
    /// measured lag on that log (the age of the oldest write it has not applied: a
    /// projector keeping a steady delay applies a write within about that long). The
    /// rate alone misleads on a sparse log: one write after seconds of quiet reads as
    /// a slow rate (positions per second), though the projector applies it in 0.3 s.
    pub fn eta(&self, required: &PositionVector, now: Instant) -> Option<Duration> {
        let required = self.requirement(required);
        let state = lock(&self.state);
        let mut best: Option<f64> = None;
        for (i, cp) in state.checkpoints.iter().enumerate() {
            let mut worst = 0.0f64;
            let mut known = true;
            for &(log, pos) in required.iter() {
                let at = cp.get(log as usize).copied().flatten();
                let missing = match at {
                    Some(c) if c >= pos => continue,
                    Some(c) => pos - c,
                    None => pos,
                };
                let by_rate = state
                    .rates
                    .rate(i, log as usize, now)
                    .map(|rate| missing as f64 / rate);
                let lag = state.writes.lag(log as usize, at, now);
                let by_lag = (!lag.is_zero()).then_some(lag.as_secs_f64());
                let estimate = match (by_rate, by_lag) {
                    (Some(r), Some(l)) => r.min(l),
                    (Some(e), None) | (None, Some(e)) => e,
                    (None, None) => {
                        known = false;
                        break;
                    }
                };
                worst = worst.max(estimate);
            }
            if known {
                best = Some(best.map_or(worst, |b| b.min(worst)));
            }
        }
        best.and_then(secs_to_duration)
    }

    /// Reads held on this projection now (hold permits taken through
    /// [`super::Registry::try_hold`] and not dropped).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn requirement(&self, required: &PositionVector) -> Requirement {
        required
            .iter()
            .filter_map(|(log, pos)| self.log_index.get(log).map(|&l| (l, pos)))
            .collect()
    }
}

fn min_checkpoint(checkpoints: &[Vec<Option<u64>>], log: usize) -> Option<u64> {
    checkpoints
        .iter()
        .map(|cp| cp.get(log).copied().flatten())
        .try_fold(u64::MAX, |m, c| c.map(|c| m.min(c)))
}
