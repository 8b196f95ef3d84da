//! What a connection's watchdog needs to know: whether bytes moved since it last
//! looked, whether the client has sent any, how many requests are being handled and
//! by when the HTTP/1.1 request head being read must be complete ([`Activity`]), kept
//! up to date by the connection's I/O ([`Watched`]), its service ([`InFlight`]) and
//! its poll (`head_timer`).
//!
//! Moving bytes costs a counter bump, not a clock read (about 100 instructions, two
//! or three times per request): the watchdog, which looks at least every
//! `idle_timeout / 4`, dates the last movement to the look that saw it.
//!
//! Invariant: `moved` only grows (one connection task writes it; the watchdog in the
//! same task reads it), `read_any` goes from false to true once, and `in_flight`
//! counts the live [`InFlight`] guards. Relaxed atomics suffice: every access is from
//! the connection's own task, the atomics only make the shared `Arc` `Sync`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// One connection's activity.
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    /// Reads and writes that moved bytes, so far.
    moved: AtomicU64,
    read_any: AtomicBool,
    in_flight: AtomicUsize,
    /// Nanoseconds from `start` to the deadline of the HTTP/1.1 request head being
    /// read, plus one; 0 when none is (see `head_timer`).
    head: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            moved: AtomicU64::new(0),
            read_any: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            head: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        // One writer (the connection's task): no read-modify-write needed.
        let n = self.moved.load(Ordering::Relaxed);
        self.moved.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// When the connection started (after its TLS handshake, if any).
    pub(super) fn start(&self) -> Instant {
        self.start
    }

    /// Nanoseconds from the start to `at` (0 before it).
    pub(super) fn since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    /// How many reads and writes have moved bytes: changed since an earlier look iff
    /// bytes moved in between.
    pub(super) fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// The client has sent at least one byte.
    pub(super) fn read_any(&self) -> bool {
        self.read_any.load(Ordering::Relaxed)
    }

    /// The deadline of the HTTP/1.1 request head being read, if one is.
    pub(super) fn head(&self) -> Option<Instant> {
        match self.head.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.start + Duration::from_nanos(n - 1)),
        }
    }

    pub(super) fn set_head(&self, deadline: Option<Instant>) {
        let n = deadline.map_or(0, |d| {
            let nanos = d.saturating_duration_since(self.start).as_nanos();
            u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
        });
        self.head.store(n, Ordering::Relaxed);
    }

    /// Requests whose handler has not answered yet.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Counts a request as in flight while alive.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn new(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's stream, recording its activity.
#[derive(Debug)]
pub(super) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Watched<S> {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read_any.store(true, Ordering::Relaxed);
            this.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
