//! A route closed on this replica for a scale to zero that another replica (the Lease holder)
//! decided: while it is closed, requests here are held instead of sent to a replica that may be
//! about to stop. Plain state, no I/O; [`super::Activation`] opens and closes it.
//!
//! It opens when the holder gives up, when this replica sees the zero land (its held requests
//! then activate the route again), or at its deadline, so a holder that dies between closing it
//! and writing the zero leaves nothing closed for long.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::time::Instant;

/// Whether the route is closed for a scale to zero decided elsewhere, and until when.
#[derive(Debug, Default)]
pub(crate) struct Hold {
    closed: AtomicBool,
    /// The latest deadline asked for; only ever read and written in short sections.
    until: Mutex<Option<Instant>>,
}

impl Hold {
    /// Closes the route until `until` at the latest (a later deadline wins).
    pub(crate) fn close(&self, until: Instant) {
        let mut deadline = self.until.lock().unwrap_or_else(|e| e.into_inner());
        *deadline = Some(deadline.map_or(until, |d| d.max(until)));
        // SeqCst: closed, then the caller reads the open requests; a request counts itself
        // open, then reads this (see `activation`'s gate).
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether the route is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Opens the route; returns whether it was closed.
    pub(crate) fn open(&self) -> bool {
        let mut deadline = self.until.lock().unwrap_or_else(|e| e.into_inner());
        *deadline = None;
        self.closed.swap(false, Ordering::SeqCst)
    }

    /// Opens the route if its deadline has passed by `now`; returns whether it did.
    pub(crate) fn expire(&self, now: Instant) -> bool {
        let mut deadline = self.until.lock().unwrap_or_else(|e| e.into_inner());
        match *deadline {
            Some(until) if until <= now => {
                *deadline = None;
                self.closed.swap(false, Ordering::SeqCst)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_hold_expires_only_at_its_latest_deadline() {
        let hold = Hold::default();
        let start = Instant::now();
        hold.close(start + Duration::from_secs(5));
        hold.close(start + Duration::from_secs(2));
        assert!(!hold.expire(start + Duration::from_secs(2)));
        assert!(hold.is_closed());
        assert!(hold.expire(start + Duration::from_secs(5)));
        assert!(!hold.is_closed());
        assert!(!hold.open(), "already open");
    }
}
