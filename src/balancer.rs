//! The ready endpoints of one route, the choice among them, and (in [`upstream`]) the connections
//! to each.
//!
//! The endpoint list is a snapshot swapped whole when the provider reports a change
//! ([`Backends::set_ready`]); the request path loads it without a lock. A request takes a [`Lease`]
//! on one endpoint, chosen by power of two choices on in-flight count; with a
//! container-concurrency cap no endpoint is leased beyond it and [`Backends::try_acquire`] returns
//! `None` instead. Every change that may let a waiting request through (new endpoints, a lease
//! returned under a cap, or anything [`Backends::wake_all`] is called for) is announced on
//! [`Backends::changed`]. Waiting, and whether leases may be taken at all, is
//! [`crate::activation`]'s business; when endpoints come and go is the provider's.

pub(crate) mod multiplex;
mod pacing;
pub(crate) mod stall;
pub(crate) mod upstream;

pub(crate) use pacing::Probation;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

pub(crate) use upstream::CLOSE_IDLE_EVERY;
use upstream::Connections;

/// One replica address requests can be sent to.
#[derive(Debug)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    in_flight: AtomicU32,
    connections: Connections,
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            in_flight: AtomicU32::new(0),
            connections: Connections::default(),
        }
    }

    /// The replica's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The replica's connections.
    pub(crate) fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Requests leased to this endpoint now.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn try_take(&self, cap: u32) -> bool {
        if cap == 0 {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }
}

/// The endpoints of one route.
#[derive(Debug)]
pub(crate) struct Backends {
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Container concurrency; 0 = unlimited. Changes when the route's spec does.
    cap: AtomicU32,
    changed: Notify,
}

impl Backends {
    /// No endpoints yet; `container_concurrency` 0 means unlimited.
    pub(crate) fn new(container_concurrency: u32) -> Backends {
        Backends {
            endpoints: ArcSwap::from_pointee(Vec::new()),
            cap: AtomicU32::new(container_concurrency),
            changed: Notify::new(),
        }
    }

    /// Changes the container-concurrency cap (0 = unlimited) and wakes waiters, who may now fit.
    pub(crate) fn set_cap(&self, container_concurrency: u32) {
        self.cap.store(container_concurrency, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Replaces the ready endpoints. Endpoints kept across the change keep their in-flight counts.
    pub(crate) fn set_ready(&self, addrs: &[SocketAddr]) {
        let current = self.endpoints.load();
        let next: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|addr| {
                current
                    .iter()
                    .find(|e| e.addr == *addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(*addr)))
            })
            .collect();
        // One writer at a time per route (the provider), so load-then-store loses nothing.
        self.endpoints.store(Arc::new(next));
        self.changed.notify_waiters();
    }

    /// The ready endpoints now.
    #[cfg(test)]
    pub(crate) fn ready(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// Closes every ready endpoint's connections idle too long or closed by the replica;
    /// returns how many idle ones are left.
    pub(crate) fn close_idle(&self) -> usize {
        let endpoints = self.endpoints.load();
        endpoints
            .iter()
            .map(|endpoint| endpoint.connections.close_idle())
            .sum()
    }

    /// How many endpoints are ready.
    pub(crate) fn ready_count(&self) -> usize {
        self.endpoints.load().len()
    }

    /// The endpoint at `addr`, if it is ready (for the provider to drain before stopping it).
    pub(crate) fn find(&self, addr: SocketAddr) -> Option<Arc<Endpoint>> {
        self.endpoints
            .load()
            .iter()
            .find(|e| e.addr == addr)
            .cloned()
    }

    /// Announces changes that may let waiting requests through.
    pub(crate) fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Wakes every waiting request (leases may be allowed again, or the route closed).
    pub(crate) fn wake_all(&self) {
        self.changed.notify_waiters();
    }

    /// Leases an endpoint: the less loaded of two picked at random, never beyond the cap.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Lease> {
        let endpoints = self.endpoints.load();
        let chosen = match endpoints.len() {
            0 => return None,
            1 => &endpoints[0],
            n => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let (ea, eb) = (&endpoints[a], &endpoints[b]);
                if eb.in_flight() < ea.in_flight() {
                    eb
                } else {
                    ea
                }
            }
        };
        let cap = self.cap.load(Ordering::Relaxed);
        if chosen.try_take(cap) {
            return Some(self.lease(chosen));
        }
        // Under a cap the pick may be full while another endpoint has room.
        endpoints
            .iter()
            .find(|e| e.try_take(cap))
            .map(|e| self.lease(e))
    }

    fn lease(self: &Arc<Self>, endpoint: &Arc<Endpoint>) -> Lease {
        Lease {
            endpoint: Arc::clone(endpoint),
            backends: Arc::clone(self),
        }
    }
}

/// One request's claim on an endpoint; dropping it returns the claim.
#[derive(Debug)]
#[must_use = "the endpoint is released when the lease drops"]
pub(crate) struct Lease {
    endpoint: Arc<Endpoint>,
    backends: Arc<Backends>,
}

impl Lease {
    /// The leased endpoint.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.backends.cap.load(Ordering::Relaxed) > 0 {
            // A slot freed under a cap: hand it to one waiter. A permit stored while nobody waits
            // only causes one spurious wake-up later.
            self.backends.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn no_endpoint_means_no_lease() {
        let backends = Arc::new(Backends::new(0));
        assert!(backends.try_acquire().is_none());
    }

    #[test]
    fn the_cap_is_never_exceeded() {
        let backends = Arc::new(Backends::new(2));
        backends.set_ready(&[addr(1), addr(2)]);
        let leases: Vec<_> = (0..4)
            .map(|_| backends.try_acquire().expect("room"))
            .collect();
        assert!(backends.try_acquire().is_none());
        assert!(backends.ready().iter().all(|e| e.in_flight() == 2));
        drop(leases);
        assert!(backends.ready().iter().all(|e| e.in_flight() == 0));
    }

    #[test]
    fn two_choices_spread_load_evenly() {
        let backends = Arc::new(Backends::new(0));
        backends.set_ready(&[addr(1), addr(2), addr(3), addr(4)]);
        let leases: Vec<_> = (0..400).map(|_| backends.try_acquire().unwrap()).collect();
        let loads: Vec<u32> = backends.ready().iter().map(|e| e.in_flight()).collect();
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(max - min <= 4, "uneven spread {loads:?}");
        drop(leases);
    }

    #[test]
    fn kept_endpoints_keep_their_counts_across_updates() {
        let backends = Arc::new(Backends::new(0));
        backends.set_ready(&[addr(1)]);
        let lease = backends.try_acquire().unwrap();
        backends.set_ready(&[addr(1), addr(2)]);
        assert_eq!(backends.find(addr(1)).unwrap().in_flight(), 1);
        drop(lease);
        assert_eq!(backends.find(addr(1)).unwrap().in_flight(), 0);
    }
}
