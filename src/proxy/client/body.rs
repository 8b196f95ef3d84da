//! The response body of a pooled connection, which gives the connection back when it
//! has been read to its end (with no task per request), and the request body's
//! tracker, which tells whether the request was sent whole.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::Busy;
use crate::proxy::{Body as ProxyBody, BoxError};

/// An upstream response body. Its end puts the connection back on the instance's
/// idle list and frees the request's permit; an error, or dropping the body before
/// its end, closes the connection instead (the permit is freed once it is closed).
///
/// It also carries the request's [`Outstanding`] count ([`PooledBody::count`]), and
/// boxes hyper's error itself: one body layer per proxied response, not three.
#[derive(Debug)]
pub struct PooledBody {
    body: Incoming,
    busy: Option<Busy>,
    /// Set once the request body has been sent whole (`None`: the request had none).
    sent: Option<Arc<AtomicBool>>,
    /// The instance's outstanding-request count, held until the body is dropped.
    outstanding: Option<Outstanding>,
}

/// Counts a request as outstanding on its instance while alive.
#[derive(Debug)]
pub struct Outstanding(Arc<AtomicUsize>);

impl Outstanding {
    pub fn new(counter: Arc<AtomicUsize>) -> Outstanding {
        counter.fetch_add(1, Ordering::Relaxed);
        Outstanding(counter)
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PooledBody {
    /// Wraps `body`; `reusable` is false when the connection must not serve another
    /// request (an upgrade, `Connection: close`): it is let go at once.
    pub(super) fn new(
        body: Incoming,
        busy: Busy,
        reusable: bool,
        sent: Option<Arc<AtomicBool>>,
    ) -> PooledBody {
        let mut this = PooledBody {
            body,
            busy: Some(busy),
            sent,
            outstanding: None,
        };
        if !reusable {
            this.release(false);
        } else if this.body.is_end_stream() {
            // No body (204, 304, HEAD, `content-length: 0`): done already.
            this.release(true);
        }
        this
    }

    /// Holds `outstanding` until the body is dropped.
    pub fn count(mut self, outstanding: Outstanding) -> PooledBody {
        self.outstanding = Some(outstanding);
        self
    }

    /// Lets the connection go; it is reused only if `done` and the request body was
    /// sent whole (an upstream may answer before reading all of it: the connection
    /// is then busy sending the rest, and is closed once done).
    fn release(&mut self, done: bool) {
        if let Some(busy) = self.busy.take() {
            let sent = self.sent.as_ref().is_none_or(|s| s.load(Ordering::Acquire));
            busy.release(done && sent);
        }
    }
}

/// A request body that records when it has been sent whole.
pub(super) struct TrackedBody {
    body: ProxyBody,
    sent: Arc<AtomicBool>,
}

impl TrackedBody {
    /// `body`, and the flag set once it has ended.
    pub(super) fn new(body: ProxyBody) -> (TrackedBody, Arc<AtomicBool>) {
        let sent = Arc::new(AtomicBool::new(false));
        (
            TrackedBody {
                body,
                sent: sent.clone(),
            },
            sent,
        )
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if frame.is_none() || this.body.is_end_stream() {
            this.sent.store(true, Ordering::Release);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        Poll::Ready(match frame {
            None => {
                this.release(true);
                None
            }
            Some(Ok(frame)) => {
                // A reader that knows the length stops at the last byte without
                // asking for the end: the connection is free as soon as it is here.
                if this.body.is_end_stream() {
                    this.release(true);
                }
                Some(Ok(frame))
            }
            Some(Err(e)) => {
                this.release(false);
                Some(Err(Box::new(e)))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        let done = self.body.is_end_stream();
        self.release(done);
    }
}
