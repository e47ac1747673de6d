//! A future polled only when its own waker fired.
//!
//! A connection's task is woken for every read and write of every request it serves; the
//! watchdog's timer and the shutdown signal beside it fire once in seconds. Polled side by side
//! with the connection, they would be polled on each of those wake-ups (a shutdown signal's
//! `Notified` takes a lock each time). [`Gated`] hands its future a waker of its own, which
//! flags the future and wakes the task; on the task's other wake-ups the future is not polled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use pin_project_lite::pin_project;

pin_project! {
    /// `inner`, polled the first time and then only once its own waker fired.
    pub(crate) struct Gated<F> {
        #[pin]
        inner: F,
        flag: Arc<Flag>,
        waker: Waker,
        polled: bool,
        // The task waker last handed to the flag, to hand it over only when it changes.
        registered: Option<Waker>,
    }
}

/// The waker handed to the gated future: it flags the future and wakes the task.
#[derive(Default)]
struct Flag {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Flagged before the task is woken, so the poll the wake causes sees it.
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> Gated<F> {
    pub(crate) fn new(inner: F) -> Gated<F> {
        let flag = Arc::new(Flag::default());
        Gated {
            inner,
            waker: Waker::from(Arc::clone(&flag)),
            flag,
            polled: false,
            registered: None,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Handed over before the flag is read, so a wake in between finds the task to wake; a
        // wake takes it, so it is handed over again after each.
        if !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            this.flag.task.register(cx.waker());
            *this.registered = Some(cx.waker().clone());
        }
        if *this.polled && !this.flag.fired.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // Cleared before the future is polled: what wakes it from here on flags it again.
        if this.flag.fired.swap(false, Ordering::AcqRel) {
            // The wake took the task's waker: handed over again before the future is polled, as
            // a future may wake itself while polled (tokio's do when the task's budget ran out).
            this.flag.task.register(cx.waker());
        }
        *this.polled = true;
        this.inner.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its polls; ready once `ready` is set, waking through the waker it last got.
    #[derive(Default)]
    struct Counted {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: std::sync::Mutex<Option<Waker>>,
    }

    impl Future for &Counted {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn the_inner_future_is_polled_first_and_then_only_when_it_woke_the_task() {
        let counted = Counted::default();
        let mut gated = std::pin::pin!(Gated::new(&counted));
        let task = Arc::new(TaskWoken::default());
        let task_waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&task_waker);

        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            counted.polls.load(Ordering::SeqCst),
            1,
            "polled the first time"
        );
        for _ in 0..5 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            counted.polls.load(Ordering::SeqCst),
            1,
            "the task's other wake-ups leave it alone"
        );

        counted.ready.store(true, Ordering::SeqCst);
        let waker = counted.waker.lock().unwrap().take().unwrap();
        waker.wake();
        assert!(task.0.load(Ordering::SeqCst), "its wake woke the task");
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(counted.polls.load(Ordering::SeqCst), 2);
    }

    /// Wakes itself and stays pending, as tokio's futures do when the task's budget ran out.
    struct WakesItself(Arc<AtomicUsize>);

    impl Future for WakesItself {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn a_future_that_wakes_itself_while_polled_wakes_the_task_each_time() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut gated = std::pin::pin!(Gated::new(WakesItself(Arc::clone(&polls))));
        let task = Arc::new(TaskWoken::default());
        let task_waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&task_waker);
        for round in 1..=3 {
            task.0.store(false, Ordering::SeqCst);
            assert!(gated.as_mut().poll(&mut cx).is_pending());
            assert_eq!(polls.load(Ordering::SeqCst), round, "polled once a round");
            assert!(
                task.0.load(Ordering::SeqCst),
                "round {round}: its wake reached the task"
            );
        }
    }

    #[derive(Default)]
    struct TaskWoken(AtomicBool);

    impl Wake for TaskWoken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}
