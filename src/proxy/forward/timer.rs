//! The response timer a client connection's requests take in turn: set for each request rather
//! than made anew. A new timer is registered with the runtime's timer wheel when first polled
//! and removed from it when dropped, which per request cost about 2% of the proxy's own
//! instructions (BENCHMARKS.md, section 5); moving a registered timer to a later deadline is
//! one atomic update, the wheel putting it in its new place only if it comes due meanwhile.
//!
//! An HTTP/1.1 connection's requests come one at a time, so each finds the connection's timer
//! free. An HTTP/2 connection's requests run at once: whichever finds it taken makes its own.

use std::pin::Pin;
use std::sync::Mutex;

use tokio::time::{Instant, Sleep};

/// A client connection's timer, when no request of it is using it.
#[derive(Debug, Default)]
pub(crate) struct SpareTimer(Mutex<Option<Pin<Box<Sleep>>>>);

impl SpareTimer {
    /// A timer that fires at `deadline`: the connection's own if it is free, else a new one.
    pub(crate) fn take(&self, deadline: Instant) -> ResponseTimer<'_> {
        let spare = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        let sleep = match spare {
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        ResponseTimer {
            sleep: Some(sleep),
            home: self,
        }
    }
}

/// A timer taken from a [`SpareTimer`], given back when dropped (if the connection has none
/// meanwhile). Given back still registered: should it come due unused, it wakes the connection's
/// task once for nothing.
#[derive(Debug)]
pub(crate) struct ResponseTimer<'a> {
    sleep: Option<Pin<Box<Sleep>>>,
    home: &'a SpareTimer,
}

impl ResponseTimer<'_> {
    /// The timer itself.
    pub(crate) fn sleep(&mut self) -> Pin<&mut Sleep> {
        self.sleep
            .as_mut()
            .expect("taken only when dropped")
            .as_mut()
    }
}

impl Drop for ResponseTimer<'_> {
    fn drop(&mut self) {
        let mut spare = self.home.0.lock().unwrap_or_else(|e| e.into_inner());
        if spare.is_none() {
            *spare = self.sleep.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;

    /// Takes `spare` for a deadline five seconds on: it fires then, not 10 ms before.
    async fn fires_five_seconds_after_taken(spare: &SpareTimer) {
        let mut timer = spare.take(Instant::now() + Duration::from_secs(5));
        assert!(timer.sleep().now_or_never().is_none());
        tokio::time::advance(Duration::from_millis(4990)).await;
        assert!(timer.sleep().now_or_never().is_none());
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(timer.sleep().now_or_never().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_set_again_fires_at_its_new_deadline_and_not_before() {
        let spare = SpareTimer::default();
        let start = Instant::now();
        {
            let mut first = spare.take(start + Duration::from_secs(1));
            // Polled once, as a request awaiting its answer does: now registered.
            assert!(first.sleep().now_or_never().is_none());
        }
        let mut second = spare.take(start + Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            second.sleep().now_or_never().is_none(),
            "the first deadline no longer holds"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(second.sleep().now_or_never().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_sooner_than_the_last_one_is_kept() {
        let spare = SpareTimer::default();
        let start = Instant::now();
        {
            let mut first = spare.take(start + Duration::from_secs(60));
            assert!(first.sleep().now_or_never().is_none());
        }
        let mut second = spare.take(start + Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(second.sleep().now_or_never().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_at_once_each_get_a_timer_and_one_goes_back() {
        let spare = SpareTimer::default();
        let start = Instant::now();
        let mut a = spare.take(start + Duration::from_secs(1));
        let mut b = spare.take(start + Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(a.sleep().now_or_never().is_some());
        assert!(b.sleep().now_or_never().is_none());
        drop((a, b));
        assert!(spare.0.lock().unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_fired_waits_for_its_new_deadline_when_taken_again() {
        let spare = SpareTimer::default();
        let start = Instant::now();
        {
            let mut first = spare.take(start + Duration::from_secs(1));
            assert!(first.sleep().now_or_never().is_none());
            tokio::time::advance(Duration::from_secs(2)).await;
            assert!(first.sleep().now_or_never().is_some());
        }
        fires_five_seconds_after_taken(&spare).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_spare_timer_that_came_due_unpolled_is_not_early_when_taken_again() {
        let spare = SpareTimer::default();
        let start = Instant::now();
        {
            let mut first = spare.take(start + Duration::from_secs(1));
            assert!(first.sleep().now_or_never().is_none());
        }
        // Given back, it comes due and fires while nobody polls it.
        tokio::time::advance(Duration::from_secs(3)).await;
        fires_five_seconds_after_taken(&spare).await;
        // A deadline already past when taken fires at once.
        let mut third = spare.take(Instant::now() - Duration::from_secs(1));
        assert!(third.sleep().now_or_never().is_some());
    }
}
