//! The waiter registry: held reads indexed by the position they wait for, so an
//! advance wakes exactly the reads it satisfies (ARCHITECTURE habit 6: one `watch` for
//! everyone would wake every held read on every advance).
//!
//! Index: per instance and per log, an ordered set of `(required position, waiter id)`.
//! Each waiter is queued, for every instance, under ONE log that instance does not
//! cover yet. When instance `i` advances on log `l`, the entries of `(i, l)` at or
//! below the new checkpoint are popped; each popped waiter is either covered by `i` on
//! every log (woken with `i`, its entries under other instances removed) or re-queued
//! under another log `i` does not cover yet. Registration, advances and removal all
//! run under the projection's one mutex, so no wake is lost between a coverage check
//! and a registration.
//!
//! Across a reload, waiters never move between indexes: a waiter stays in the index
//! of the projection it registered on until it is woken or dropped, and is woken only
//! by that projection's own checkpoints (the read then re-checks that projection's
//! snapshot and is forwarded to an instance of the config it started on). A
//! projection a reload replaced stays fed: its replacement forwards every advance
//! and reset to it, for each instance whose name and URL the reload kept, after
//! releasing its own lock (no code path holds two projections' locks at once, except
//! [`Projection::forward_to`](super::Projection::forward_to), before the replacement
//! is shared). So the invariant above holds per index, and a read held before a
//! reload is released by the first report after it that covers it on a kept
//! instance. A read whose projection kept no instance (every one repointed) is
//! answered by `on_timeout` at `max_wait`: the servers it could be forwarded to
//! report nothing any more.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::projection::{lock, State};

/// A requirement as the index keeps it: `(log index, position)` pairs, logs of the
/// projection only.
pub(crate) type Requirement = Box<[(u32, u64)]>;

/// True when checkpoint `cp` (one instance, by log index) covers `required`.
pub(crate) fn covered(cp: &[Option<u64>], required: &[(u32, u64)]) -> bool {
    first_uncovered(cp, required).is_none()
}

/// The first `(log, position)` of `required` that `cp` does not reach.
fn first_uncovered(cp: &[Option<u64>], required: &[(u32, u64)]) -> Option<(u32, u64)> {
    required.iter().copied().find(|&(log, pos)| {
        cp.get(log as usize)
            .copied()
            .flatten()
            .is_none_or(|c| c < pos)
    })
}

/// One registered waiter (about 48 bytes plus its requirement and per-instance slots).
struct Entry {
    required: Requirement,
    /// Per instance: the log index it is queued under.
    queued_on: Box<[u32]>,
    tx: oneshot::Sender<usize>,
}

/// Every held read of one projection.
pub(crate) struct WaiterIndex {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// `queues[instance][log]`: `(required position on that log, waiter id)`.
    queues: Vec<Vec<BTreeSet<(u64, u64)>>>,
}

impl WaiterIndex {
    pub(crate) fn new(instances: usize, logs: usize) -> Self {
        Self {
            next_id: 0,
            entries: HashMap::new(),
            queues: (0..instances)
                .map(|_| (0..logs).map(|_| BTreeSet::new()).collect())
                .collect(),
        }
    }

    /// Waiters registered now.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Index entries (one per waiter per instance), for tests and diagnostics.
    pub(crate) fn queued(&self) -> usize {
        self.queues.iter().flatten().map(BTreeSet::len).sum()
    }

    /// Registers a waiter for `required` given the checkpoints `cps` (by instance).
    /// If some instance covers it already, the receiver resolves at once.
    pub(crate) fn register(
        &mut self,
        required: Requirement,
        cps: &[Vec<Option<u64>>],
    ) -> (u64, oneshot::Receiver<usize>) {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut queued_on = Vec::with_capacity(cps.len());
        for (i, cp) in cps.iter().enumerate() {
            match first_uncovered(cp, &required) {
                Some((log, _)) => queued_on.push(log),
                None => {
                    // Covered already (callers check first; kept for safety).
                    let _ = tx.send(i);
                    return (id, rx);
                }
            }
        }
        for (i, &log) in queued_on.iter().enumerate() {
            if let Some(pos) = position_of(&required, log) {
                self.queue(i, log, pos, id);
            }
        }
        let entry = Entry {
            required,
            queued_on: queued_on.into_boxed_slice(),
            tx,
        };
        self.entries.insert(id, entry);
        (id, rx)
    }

    /// Deregisters waiter `id` (a dropped read); nothing if it was woken already.
    pub(crate) fn remove(&mut self, id: u64) {
        if let Some(entry) = self.entries.remove(&id) {
            self.unqueue(id, &entry.required, &entry.queued_on);
        }
    }

    /// Instance `instance` advanced on `log`; `cp` is its whole (updated) checkpoint.
    /// Wakes the waiters it now covers; returns how many were woken.
    pub(crate) fn advance(&mut self, instance: usize, log: u32, cp: &[Option<u64>]) -> usize {
        let Some(&Some(at)) = cp.get(log as usize) else {
            return 0;
        };
        let Some(queue) = self
            .queues
            .get_mut(instance)
            .and_then(|q| q.get_mut(log as usize))
        else {
            return 0;
        };
        let popped = match at.checked_add(1) {
            Some(next) => {
                let rest = queue.split_off(&(next, 0));
                std::mem::replace(queue, rest)
            }
            None => std::mem::take(queue),
        };
        let mut woken = 0;
        for (_, id) in popped {
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            if let Some((next_log, pos)) = first_uncovered(cp, &entry.required) {
                if let Some(slot) = entry.queued_on.get_mut(instance) {
                    *slot = next_log;
                }
                self.queue(instance, next_log, pos, id);
                continue;
            }
            if let Some(entry) = self.entries.remove(&id) {
                for (j, &l) in entry.queued_on.iter().enumerate() {
                    if j != instance {
                        self.dequeue(j, l, &entry.required, id);
                    }
                }
                if entry.tx.send(instance).is_ok() {
                    woken += 1;
                }
            }
        }
        woken
    }

    fn queue(&mut self, instance: usize, log: u32, pos: u64, id: u64) {
        if let Some(q) = self
            .queues
            .get_mut(instance)
            .and_then(|q| q.get_mut(log as usize))
        {
            q.insert((pos, id));
        }
    }

    fn dequeue(&mut self, instance: usize, log: u32, required: &[(u32, u64)], id: u64) {
        if let Some(pos) = position_of(required, log) {
            if let Some(q) = self
                .queues
                .get_mut(instance)
                .and_then(|q| q.get_mut(log as usize))
            {
                q.remove(&(pos, id));
            }
        }
    }

    fn unqueue(&mut self, id: u64, required: &[(u32, u64)], queued_on: &[u32]) {
        for (i, &log) in queued_on.iter().enumerate() {
            self.dequeue(i, log, required, id);
        }
    }
}

fn position_of(required: &[(u32, u64)], log: u32) -> Option<u64> {
    required.iter().find(|&&(l, _)| l == log).map(|&(_, p)| p)
}

/// The result of [`Projection::wait_for`](super::Projection::wait_for).
#[derive(Debug)]
pub enum Wait {
    /// This instance covers the requirement now.
    Ready(usize),
    /// No instance covers it yet: await the waiter (with the caller's deadline).
    Pending(Waiter),
}

/// A registered waiter. Resolves to the index of an instance that covers the
/// requirement; dropping it deregisters at once (a client that hangs up frees its
/// index entries immediately). Cheap to hold: a pointer, an id and a oneshot receiver.
///
/// It stays pending forever if its projection is reset and never catches up again, so
/// callers await it under their `max_wait` deadline.
pub struct Waiter {
    state: Arc<Mutex<State>>,
    id: u64,
    rx: oneshot::Receiver<usize>,
}

impl Waiter {
    pub(crate) fn new(state: Arc<Mutex<State>>, id: u64, rx: oneshot::Receiver<usize>) -> Self {
        Self { state, id, rx }
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter").field("id", &self.id).finish()
    }
}

impl Future for Waiter {
    type Output = usize;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(instance)) => Poll::Ready(instance),
            // The sender only goes away by sending; stay pending (the caller's deadline
            // ends the hold) rather than invent an instance.
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Woken already: its entry is gone, no need to take the lock.
        if matches!(self.rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
            lock(&self.state).waiters.remove(self.id);
        }
    }
}
