//! Telling a slow stream from a stalled one: a request's exchange with a replica is stalled when
//! no byte has moved either way for the route's `stream_idle_timeout` (Envoy's
//! `stream_idle_timeout`).
//!
//! [`Exchange`] is what the two bodies of one exchange share: when a byte last moved, and
//! whether the request body was sent whole (only then may its connection carry another request).
//! [`StallTimer`] is the timer a body arms when it has to wait; it is only created then, so a
//! body that never waits costs no timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// What both directions of one exchange share.
#[derive(Debug)]
pub(crate) struct Exchange {
    started: Instant,
    /// Milliseconds from `started` to the last byte moved either way.
    moved: AtomicU64,
    sent_whole: AtomicBool,
    /// The request body's next bytes are the client's to send (not the replica's to take).
    awaiting_client: AtomicBool,
    /// What the client did wrong with its request body, if that ended the exchange
    /// ([`ClientFault`] as a number; 0: nothing).
    client_fault: AtomicU8,
}

/// How a client's request body ended an exchange: its fault, not the replica's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFault {
    /// Its framing could not be read (a malformed chunk).
    Malformed = 1,
    /// It stopped sending for the stream idle timeout.
    Stalled = 2,
}

impl Exchange {
    /// An exchange starting now.
    pub(crate) fn new() -> Exchange {
        Exchange {
            started: Instant::now(),
            moved: AtomicU64::new(0),
            sent_whole: AtomicBool::new(false),
            awaiting_client: AtomicBool::new(false),
            client_fault: AtomicU8::new(0),
        }
    }

    /// The client's request body ended the exchange, for `fault`.
    pub(crate) fn blame_client(&self, fault: ClientFault) {
        self.client_fault.store(fault as u8, Ordering::Relaxed);
    }

    /// Whether the client's request body ended the exchange, and how.
    pub(crate) fn client_fault(&self) -> Option<ClientFault> {
        match self.client_fault.load(Ordering::Relaxed) {
            1 => Some(ClientFault::Malformed),
            2 => Some(ClientFault::Stalled),
            _ => None,
        }
    }

    /// A byte moved now.
    pub(crate) fn moved(&self) {
        let millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.moved.fetch_max(millis, Ordering::Relaxed);
    }

    /// When a byte last moved.
    pub(crate) fn last_moved(&self) -> Instant {
        self.started + Duration::from_millis(self.moved.load(Ordering::Relaxed))
    }

    /// The request body was sent to its end.
    pub(crate) fn mark_sent_whole(&self) {
        self.sent_whole.store(true, Ordering::Release);
    }

    /// Whether the request body was sent to its end.
    pub(crate) fn sent_whole(&self) -> bool {
        self.sent_whole.load(Ordering::Acquire)
    }

    /// Whether the request body waits for the client (`true`) or for the replica to take what
    /// it has (`false`).
    pub(crate) fn set_awaiting_client(&self, waiting: bool) {
        self.awaiting_client.store(waiting, Ordering::Relaxed);
    }

    /// Whether the request body's next bytes are the client's to send: a stall is then the
    /// client's, for the body's own stall timer to tell.
    pub(crate) fn awaiting_client(&self) -> bool {
        self.awaiting_client.load(Ordering::Relaxed)
    }
}

/// A stall timer: fires once nothing moved for its timeout, counting from the later of the start
/// of its own wait and (if shared) the other direction's last move.
///
/// Progress only clears the wait's start, reading no clock; the start is taken when the next wait
/// is first polled, and the one timer is armed on the first wait and moved, when it fires, to the
/// latest progress plus the timeout. A body moves many frames per request, and re-arming a timer
/// for each (a timer-wheel entry, a lock and an allocation) cost a third of a large upload's
/// throughput; a response that never waits costs no timer and no clock read at all.
#[derive(Debug)]
pub(crate) struct StallTimer {
    timeout: Duration,
    /// When the current wait began; `None` while the stream moves.
    waiting_since: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl StallTimer {
    /// A timer that fires after `timeout` without progress.
    pub(crate) fn new(timeout: Duration) -> StallTimer {
        StallTimer {
            timeout,
            waiting_since: None,
            sleep: None,
        }
    }

    /// The timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The stream made progress: the next wait counts afresh from its start.
    pub(crate) fn progressed(&mut self) {
        self.waiting_since = None;
    }

    /// Called while the stream waits: `Ready` once it has waited its timeout with nothing moving
    /// either way (`other` is the exchange both directions share, if any).
    pub(crate) fn poll_stalled(
        &mut self,
        cx: &mut Context<'_>,
        other: Option<&Exchange>,
    ) -> Poll<()> {
        let timeout = self.timeout;
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(since + timeout)));
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let moved = other.map_or(since, |exchange| exchange.last_moved().max(since));
            let deadline = moved + timeout;
            if deadline > Instant::now() {
                sleep.as_mut().reset(deadline);
            } else {
                return Poll::Ready(());
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no byte either way for {0:?} (stream_idle_timeout)")]
pub(crate) struct Stalled(pub(crate) Duration);

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test(start_paused = true)]
    async fn a_stall_is_seen_only_once_neither_direction_moved_for_the_timeout() {
        let exchange = Exchange::new();
        let mut timer = StallTimer::new(Duration::from_secs(10));
        let stalled = async {
            poll_fn(|cx| timer.poll_stalled(cx, Some(&exchange))).await;
            Instant::now()
        };
        let mover = async {
            tokio::time::sleep(Duration::from_secs(8)).await;
            exchange.moved();
        };
        let (at, ()) = tokio::join!(stalled, mover);
        // The other direction moved at 8s: the stall is seen at 18s, not 10s.
        assert_eq!(at.duration_since(exchange.started), Duration::from_secs(18));
    }
}
