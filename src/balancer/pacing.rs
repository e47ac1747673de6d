//! How fast new connections are opened to one replica: at most a window of them may be
//! *unproven* (opened, but no response has come back on them yet), and the window grows as
//! connections prove themselves, as TCP's slow start and Envoy's slow start do.
//!
//! Why: when a cold route's replica turns ready, every held request wants a connection at once.
//! A replica with a short accept queue (`python3 -m http.server` listens with a backlog of 5)
//! overflows, Linux drops the handshake's last ACK, and the activator's connect completes while
//! the replica never sees the connection: the request then sits unacknowledged until a
//! retransmission gets through, a second or many seconds later. A completed connect proves
//! nothing; a response does. So the window starts below the smallest common backlog
//! ([`INITIAL_WINDOW`]), and only connections that served a response and were kept for another
//! one (keep-alive) widen it: a replica that closes every connection keeps a small window, which
//! its one-request-per-connection accept loop can always take.
//!
//! A connection still waiting for its first response after [`PROBATION_LIMIT`] leaves the window
//! all the same: by then the handshake's lost ACK would have been retransmitted, so it is slow
//! rather than lost, and a few slow requests (a long poll, a report) must not keep every other
//! request to the replica from a connection.
//!
//! The window is per replica, so a new replica starts small again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::Notify;

/// Unproven connections at first: below Python's `request_queue_size` of 5, the smallest listen
/// backlog in common use (nginx and Node use 511, Go the kernel's maximum).
pub(crate) const INITIAL_WINDOW: u32 = 4;
/// How long a new connection may stay unproven: TCP's initial retransmission timeout (RFC 6298,
/// Linux's `TCP_TIMEOUT_INIT`), after which a handshake whose last ACK was dropped is retried.
pub(crate) const PROBATION_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);
/// The window never grows beyond this many unproven connections.
pub(crate) const MAX_WINDOW: u32 = 256;

/// The window of one replica.
#[derive(Debug)]
pub(crate) struct Pacing {
    unproven: AtomicU32,
    window: AtomicU32,
    /// Signalled when a slot frees or the window grows.
    changed: Notify,
}

impl Default for Pacing {
    fn default() -> Pacing {
        Pacing {
            unproven: AtomicU32::new(0),
            window: AtomicU32::new(INITIAL_WINDOW),
            changed: Notify::new(),
        }
    }
}

impl Pacing {
    /// A slot for a new connection, if the window has room.
    pub(crate) fn try_open(self: &Arc<Self>) -> Option<Probation> {
        let window = self.window.load(Ordering::Relaxed);
        self.unproven
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < window).then_some(n + 1)
            })
            .ok()
            .map(|_| Probation {
                pacing: Arc::clone(self),
            })
    }

    /// Announces a freed slot or a wider window.
    pub(crate) fn changed(&self) -> &Notify {
        &self.changed
    }

    /// The window now.
    #[cfg(test)]
    pub(crate) fn window(&self) -> u32 {
        self.window.load(Ordering::Relaxed)
    }

    /// A connection proved it can be kept: one more may be unproven.
    pub(crate) fn widen(&self) {
        let _ = self
            .window
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (w < MAX_WINDOW).then_some(w + 1)
            });
        self.changed.notify_one();
    }

    /// A new connection failed: halve the window, as congestion control does on loss.
    fn narrow(&self) {
        let _ = self
            .window
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some((w / 2).max(INITIAL_WINDOW))
            });
    }
}

/// A new connection's slot, held until a response comes back on it.
#[derive(Debug)]
#[must_use = "the slot frees when the probation ends"]
pub(crate) struct Probation {
    pacing: Arc<Pacing>,
}

impl Probation {
    /// The connection failed before any response: the replica is struggling.
    pub(crate) fn failed(self) {
        self.pacing.narrow();
    }
}

impl Drop for Probation {
    fn drop(&mut self) {
        self.pacing.unproven.fetch_sub(1, Ordering::AcqRel);
        self.pacing.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_starts_small_grows_with_kept_connections_and_halves_on_failure() {
        let pacing = Arc::new(Pacing::default());
        let slots: Vec<_> = (0..INITIAL_WINDOW)
            .map(|_| pacing.try_open().expect("room"))
            .collect();
        assert!(pacing.try_open().is_none(), "no more than the window");
        drop(slots);
        for _ in 0..12 {
            pacing.widen();
        }
        assert_eq!(pacing.window(), INITIAL_WINDOW + 12);
        let slot = pacing.try_open().unwrap();
        slot.failed();
        assert_eq!(pacing.window(), (INITIAL_WINDOW + 12) / 2);
        for _ in 0..1000 {
            pacing.widen();
        }
        assert_eq!(pacing.window(), MAX_WINDOW);
    }
}
