//! The watchdog's own futures (the drain's cancellation, its look timer), polled only
//! when one of them woke the connection's task.
//!
//! A `tokio::select!` around the connection polls every arm on every wake of the
//! task, and the task wakes about twice per request (the request read, the upstream's
//! answer): the cancellation's `Notified` and the timer's `Sleep` cost ~270
//! instructions per poll, ~540 per proxied read (callgrind), for arms that fire once
//! in a connection's life or once per `look_every`. Here they are polled with a waker
//! of their own, which marks them due and wakes the task; the task's other wakes
//! find them not due (one atomic swap).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The arms' waker and whether it fired since their last poll.
#[derive(Debug)]
pub(super) struct Arms {
    flag: Arc<Flag>,
    waker: Waker,
}

#[derive(Debug)]
struct Flag {
    /// An arm woke (or they were never polled, or one was re-armed).
    due: AtomicBool,
    /// The connection's task, woken when an arm wakes.
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.due.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Arms {
    /// Due at once: the arms are polled (and so registered) at the first poll.
    pub(super) fn new() -> Arms {
        let flag = Arc::new(Flag {
            due: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Arms {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// Whether the arms are to be polled now (with [`Arms::context`]): one of them
    /// woke since their last poll, or [`Arms::rearm`] was called. `cx`'s task is
    /// registered first, so a wake after this call wakes it.
    pub(super) fn due(&self, cx: &Context<'_>) -> bool {
        self.flag.task.register(cx.waker());
        self.flag.due.swap(false, Ordering::AcqRel)
    }

    /// Marks the arms due: after one of them was changed (a timer reset), it must be
    /// polled again to register its new state.
    pub(super) fn rearm(&self) {
        self.flag.due.store(true, Ordering::Release);
    }

    /// The context to poll the arms with: their wake marks them due.
    pub(super) fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::Poll;
    use std::time::Duration;

    use super::*;

    /// Counts its wakes.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_arm_is_polled_first_then_only_after_it_woke_and_its_wake_reaches_the_task() {
        let arms = Arms::new();
        let task = Arc::new(Counter(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let cx = Context::from_waker(&task_waker);
        let notify = tokio::sync::Notify::new();
        let mut arm = pin!(notify.notified());

        assert!(arms.due(&cx), "due at the first poll");
        assert!(arm.as_mut().poll(&mut arms.context()).is_pending());
        // The task's other wakes: not due.
        assert!(!arms.due(&cx));
        assert!(!arms.due(&cx));
        assert_eq!(task.0.load(Ordering::SeqCst), 0);

        notify.notify_waiters();
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "the arm's wake woke the task"
        );
        assert!(arms.due(&cx));
        assert_eq!(arm.as_mut().poll(&mut arms.context()), Poll::Ready(()));
        assert!(!arms.due(&cx), "due once per wake");
    }

    #[test]
    fn rearm_makes_them_due_again() {
        let arms = Arms::new();
        let waker = Waker::noop();
        let cx = Context::from_waker(waker);
        assert!(arms.due(&cx));
        assert!(!arms.due(&cx));
        arms.rearm();
        assert!(arms.due(&cx));
        assert!(!arms.due(&cx));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_arm_fires_through_the_arms_waker() {
        let arms = Arms::new();
        let mut sleep = pin!(tokio::time::sleep(Duration::from_secs(5)));
        let mut polls_with_arms = 0;
        std::future::poll_fn(|cx| {
            if arms.due(cx) {
                polls_with_arms += 1;
                if sleep.as_mut().poll(&mut arms.context()).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await;
        // Registered at the first poll, fired once.
        assert_eq!(polls_with_arms, 2);
    }
}
