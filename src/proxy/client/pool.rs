//! One instance's connections: the cap (a FIFO semaphore of `max_connections`
//! permits), the idle list (most recently used first) and its reaper.
//!
//! Accounting: a request holds a permit from the moment it gets one until its
//! connection is idle again or closed. A connection is opened only by a permit holder
//! that found the idle list empty, and a connection goes idle only when its holder
//! gives its permit back, so busy + idle connections never exceed the permits. A
//! connection that is not reused (body dropped early, error, upgrade, `Connection:
//! close`, request body still being sent, idle list full) keeps its holder's permit
//! *parked* until its task has closed the socket: closing connections count too.
//! Idle connections closed for age are the one exception (they hold no permit while
//! the socket closes).

use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{ClientSettings, SendError};
use crate::proxy::Body;

/// The shared state of one instance's pool.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) settings: ClientSettings,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    /// `tidemark_upstream_queued_requests{upstream}` (shared by the upstream's instances).
    queued: metrics::Gauge,
    reaper: Once,
}

/// An open connection: the request half, and the state its task shares.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) sender: SendRequest<Body>,
    life: Arc<Life>,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

/// Where a connection is in its life, as far as the cap is concerned.
#[derive(Debug, Default)]
pub(super) struct Life(Mutex<LifeState>);

#[derive(Debug, Default)]
enum LifeState {
    #[default]
    Open,
    /// Not reused and closing: holds the permit of its last request until closed.
    Parked {
        _permit: OwnedSemaphorePermit,
    },
    Closed,
}

impl Life {
    /// Keeps `permit` until the connection is closed (released at once if it is).
    fn park(&self, permit: OwnedSemaphorePermit) {
        let mut state = lock(&self.0);
        if !matches!(*state, LifeState::Closed) {
            *state = LifeState::Parked { _permit: permit };
        }
    }

    fn closed(&self) {
        let old = std::mem::replace(&mut *lock(&self.0), LifeState::Closed);
        drop(old);
    }
}

/// Marks the connection closed (releasing a parked permit) when dropped: owned by
/// the connection's task, so it runs when the task ends, however it ends.
#[derive(Debug)]
pub(super) struct ClosedOnDrop(Arc<Life>);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.0.closed();
    }
}

impl Conn {
    /// A connection whose task owns the returned guard.
    pub(super) fn new(sender: SendRequest<Body>) -> (Conn, ClosedOnDrop) {
        let life = Arc::new(Life::default());
        let guard = ClosedOnDrop(life.clone());
        (Conn { sender, life }, guard)
    }
}

/// A connection in use by one request, with that request's permit.
#[derive(Debug)]
pub(super) struct Busy {
    conn: Option<Conn>,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Shared>,
}

impl Busy {
    pub(super) fn new(conn: Conn, permit: OwnedSemaphorePermit, pool: Arc<Shared>) -> Busy {
        Busy {
            conn: Some(conn),
            permit: Some(permit),
            pool,
        }
    }

    /// The connection's request half.
    pub(super) fn sender(&mut self) -> Option<&mut SendRequest<Body>> {
        self.conn.as_mut().map(|c| &mut c.sender)
    }

    /// Gives the permit back for another connection, dropping this one. Only for a
    /// connection already closed (its task has ended).
    pub(super) fn into_permit(mut self) -> Option<OwnedSemaphorePermit> {
        self.conn = None;
        self.permit.take()
    }

    /// The request is done with the connection: back to the idle list when
    /// `reusable` (and still open, and the list has room), else closed. The permit
    /// is released at once, or parked until the connection is closed.
    pub(super) fn release(mut self, reusable: bool) {
        let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        let conn = if reusable && !conn.sender.is_closed() {
            self.pool.checkin(conn)
        } else {
            Some(conn)
        };
        match conn {
            None => drop(permit),
            Some(conn) => {
                conn.life.park(permit);
                drop(conn);
            }
        }
    }
}

impl Drop for Busy {
    /// Dropped without [`Busy::release`] (a cancelled request): not reused.
    fn drop(&mut self) {
        if let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) {
            conn.life.park(permit);
        }
    }
}

/// Counts a request in the queued gauge while it waits for a permit.
struct Queued<'a>(&'a metrics::Gauge);

impl<'a> Queued<'a> {
    fn new(gauge: &'a metrics::Gauge) -> Queued<'a> {
        gauge.increment(1.0);
        Queued(gauge)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Shared {
    pub(super) fn new(settings: ClientSettings, queued: metrics::Gauge) -> Shared {
        let permits = settings.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Shared {
            settings,
            permits: Arc::new(Semaphore::new(permits)),
            idle: Mutex::new(Vec::new()),
            queued,
            reaper: Once::new(),
        }
    }

    /// A permit to use a connection: at once when one is free, else in FIFO order.
    pub(super) async fn acquire(&self) -> Result<OwnedSemaphorePermit, SendError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let _queued = Queued::new(&self.queued);
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SendError::PoolClosed)
    }

    /// The most recently used idle connection that is still open and ready to send,
    /// with `permit`. `Err` when there is none, with the permit to open one (`None`
    /// only if the permit was lost, which [`Busy::into_permit`] rules out).
    pub(super) async fn checkout(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Busy, Option<OwnedSemaphorePermit>> {
        let mut permit = Some(permit);
        loop {
            let Some(p) = permit.take() else {
                return Err(None);
            };
            let Some(idle) = lock(&self.idle).pop() else {
                return Err(Some(p));
            };
            if idle.since.elapsed() >= self.settings.pool_idle_timeout
                || idle.conn.sender.is_closed()
            {
                permit = Some(p);
                continue;
            }
            let mut busy = Busy::new(idle.conn, p, self.clone());
            // Ready at once unless the connection is still finishing the previous
            // exchange; an error means it has closed. If the request is cancelled
            // meanwhile, `busy` parks the permit until the connection is closed.
            let ready = match busy.sender() {
                Some(sender) => sender.ready().await.is_ok(),
                None => false,
            };
            if ready {
                return Ok(busy);
            }
            permit = busy.into_permit();
        }
    }

    /// Puts `conn` on the idle list; gives it back when the list is full (or pooling
    /// is off, or there is no runtime to reap it).
    fn checkin(self: &Arc<Self>, conn: Conn) -> Option<Conn> {
        if self.settings.pool_max_idle == 0 || tokio::runtime::Handle::try_current().is_err() {
            return Some(conn);
        }
        {
            let mut idle = lock(&self.idle);
            if idle.len() >= self.settings.pool_max_idle {
                return Some(conn);
            }
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
        self.reaper.call_once(|| {
            tokio::spawn(reap(Arc::downgrade(self), self.settings.pool_idle_timeout));
        });
        None
    }

    /// Removes idle connections past the idle timeout or closed; returns when the
    /// oldest remaining one turns idle, if any.
    fn expire(&self, now: Instant) -> (Vec<Idle>, Option<Instant>) {
        let timeout = self.settings.pool_idle_timeout;
        let mut idle = lock(&self.idle);
        let all = std::mem::take(&mut *idle);
        let (keep, gone): (Vec<Idle>, Vec<Idle>) = all.into_iter().partition(|i| {
            now.saturating_duration_since(i.since) < timeout && !i.conn.sender.is_closed()
        });
        *idle = keep;
        (gone, idle.first().map(|i| i.since))
    }

    /// Idle connections right now (closed ones included until checked).
    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        lock(&self.idle).len()
    }

    /// Idle connections whose connection task has ended.
    #[cfg(test)]
    pub(super) fn idle_closed(&self) -> usize {
        lock(&self.idle)
            .iter()
            .filter(|i| i.conn.sender.is_closed())
            .count()
    }

    /// Free permits right now.
    #[cfg(test)]
    pub(super) fn free_permits(&self) -> usize {
        self.permits.available_permits()
    }

    /// Puts a connection made elsewhere on the idle list (tests of the checkout).
    #[cfg(test)]
    pub(super) fn plant_idle(self: &Arc<Self>, sender: SendRequest<Body>) -> ClosedOnDrop {
        let (conn, guard) = Conn::new(sender);
        lock(&self.idle).push(Idle {
            conn,
            since: Instant::now(),
        });
        guard
    }
}

/// Closes idle connections once they have been idle for `timeout`, sleeping until
/// the oldest one is due. Holds the pool only while it looks: it ends once the pool
/// is dropped (an upstream replaced by a reload).
async fn reap(pool: Weak<Shared>, timeout: Duration) {
    let timeout = timeout.max(Duration::from_millis(1));
    let mut next = later(Instant::now(), timeout);
    loop {
        tokio::time::sleep_until(next).await;
        let Some(shared) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        let (gone, oldest) = shared.expire(now);
        drop(shared);
        drop(gone);
        next = later(oldest.unwrap_or(now), timeout);
    }
}

/// `at + d`, saturating at a year from `at` (a huge configured timeout must not
/// overflow the clock).
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(365 * 24 * 3600))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
