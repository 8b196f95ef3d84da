//! hyper's HTTP/1.1 header-read timeout, kept by the connection's watchdog instead
//! of a timer per request.
//!
//! With a [`hyper::rt::Timer`] set, hyper's HTTP/1.1 server asks it for a fresh
//! `sleep_until(now + header_read_timeout)` each time it starts reading a request
//! head (the first one, and the wait for each next one on a keep-alive connection),
//! polls it while the head is incomplete and drops it once the head is parsed. With
//! tokio's timer that is, per request, a heap allocation, a timer-wheel insertion and
//! removal and a clock read: 718 instructions of a proxied read's 47,407 (callgrind,
//! load-tests/REPORT.md).
//!
//! [`HeadTimer`] hands hyper a zero-sized [`HeadDeadline`] instead (boxing it
//! allocates nothing) and only *records* the deadline: into a thread-local cell that
//! the connection's watchdog ([`Observed`], around its `poll` of the connection)
//! empties after every poll. The watchdog then knows whether a head is being read and
//! by when it must be complete, and closes the connection itself when that passes,
//! as hyper would (hyper answers nothing on a header timeout either: it closes).
//!
//! hyper 1.x's HTTP/1.1 server uses its timer for this deadline only (checked in
//! hyper 1.12: `proto/h1/conn.rs`, `poll_read_head`); a deadline that never fires by
//! itself would be wrong for any other use, so check again when upgrading hyper. The
//! HTTP/2 builders keep tokio's timer.
//!
//! Invariant: hyper calls the timer, and drops the deadline, only from inside the
//! connection's own `poll`, which [`Observed`] brackets on the same thread, so the
//! cell always speaks of the connection being polled. A [`HeadDeadline`] dropped
//! elsewhere (the connection dropped whole) writes the cell outside any bracket: the
//! next bracket clears it before polling.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Sleep, Timer};

use super::activity::Activity;

/// What hyper did with the head timer during one poll of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeadEvent {
    /// A head is being read; it must be complete by this instant.
    Started(tokio::time::Instant),
    /// The head was read (or its reading abandoned): no deadline runs.
    Done,
}

thread_local! {
    /// The last [`HeadEvent`] of the connection being polled on this thread.
    static EVENT: Cell<Option<HeadEvent>> = const { Cell::new(None) };
}

fn record(event: HeadEvent) {
    EVENT.with(|e| e.set(Some(event)));
}

/// The timer given to hyper's HTTP/1.1 server builders.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct HeadTimer;

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn Sleep>> {
        record(HeadEvent::Started(deadline.into()));
        Box::pin(HeadDeadline)
    }

    /// tokio's clock (paused in tests), like the watchdog's.
    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }

    /// The held deadline stays (it never fires by itself); the new instant is what
    /// the watchdog enforces.
    fn reset(&self, _sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: std::time::Instant) {
        record(HeadEvent::Started(new_deadline.into()));
    }
}

/// The deadline hyper holds while it reads a head: never fires by itself (the
/// watchdog closes the connection when it passes); its drop ends it.
#[derive(Debug)]
pub(super) struct HeadDeadline;

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Sleep for HeadDeadline {}

impl Drop for HeadDeadline {
    fn drop(&mut self) {
        record(HeadEvent::Done);
    }
}

/// A connection future whose head-timer events are collected after each poll.
pub(super) struct Observed<'a, C> {
    pub(super) conn: Pin<&'a mut C>,
    /// Its activity, whose head deadline ([`Activity::head`]) is kept up to date here.
    pub(super) activity: &'a Activity,
}

impl<C: Future> Future for Observed<'_, C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        EVENT.with(|e| e.set(None));
        let polled = this.conn.as_mut().poll(cx);
        match EVENT.with(Cell::take) {
            Some(HeadEvent::Started(deadline)) => this.activity.set_head(Some(deadline)),
            Some(HeadEvent::Done) => this.activity.set_head(None),
            None => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for hyper's use of the timer inside one poll.
    struct FakeConn<F: FnMut()>(F);

    impl<F: FnMut() + Unpin> Future for FakeConn<F> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
            (self.0)();
            Poll::Pending
        }
    }

    fn poll_once<C: Future + Unpin>(conn: &mut C, activity: &Activity) {
        let mut observed = Observed {
            conn: Pin::new(conn),
            activity,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = Pin::new(&mut observed).poll(&mut cx);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_sees_each_head_start_and_end() {
        let timer = HeadTimer;
        let mut held: Option<Pin<Box<dyn Sleep>>> = None;
        let head = Activity::new();
        let at = tokio::time::Instant::now() + Duration::from_secs(10);

        // Start reading a head: the deadline is recorded, nothing is allocated.
        let mut start = FakeConn(|| held = Some(timer.sleep_until(at.into_std())));
        poll_once(&mut start, &head);
        assert_eq!(head.head(), Some(at));
        assert_eq!(std::mem::size_of::<HeadDeadline>(), 0);

        // A poll in which hyper does nothing with the timer changes nothing.
        let mut idle = FakeConn(|| {});
        poll_once(&mut idle, &head);
        assert_eq!(head.head(), Some(at));

        // The head is parsed: hyper drops the deadline.
        let mut done = FakeConn(|| held = None);
        poll_once(&mut done, &head);
        assert_eq!(head.head(), None);

        // Two heads in one poll (pipelining): the last event wins.
        let later = at + Duration::from_secs(1);
        let mut two = FakeConn(|| {
            held = Some(timer.sleep_until(at.into_std()));
            held = None;
            held = Some(timer.sleep_until(later.into_std()));
        });
        poll_once(&mut two, &head);
        assert_eq!(head.head(), Some(later));

        // A deadline dropped outside any poll (the connection dropped whole) does not
        // leak into the next connection's poll.
        drop(held.take());
        let mut other = FakeConn(|| {});
        let other_head = Activity::new();
        poll_once(&mut other, &other_head);
        assert_eq!(other_head.head(), None);
    }

    #[test]
    fn a_head_deadline_never_fires_by_itself() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut HeadDeadline).poll(&mut cx).is_pending());
    }
}
