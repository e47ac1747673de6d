//! Activation: holding requests until a replica can serve them, and the single-flight scale-up
//! that a held request triggers.
//!
//! A request that finds no endpoint with room joins the route's bounded queue (a
//! [`QueueGuard`](crate::stats::QueueGuard), so a client that goes away leaves it at once) and
//! waits on the endpoints' change notification, inside one `tokio::time::timeout` of the route's
//! cold-start timeout; there is no poll loop. The first held request of an idle route raises the
//! desired replica count to `max(min_scale, activation_scale)` and spawns a reconcile task; later
//! ones find the count raised already, so a burst triggers exactly one scale-up.
//!
//! Scale calls to the provider are serialised per route by an async mutex and always apply the
//! *latest* desired count, so a scale-to-zero racing a re-activation ends in whichever was decided
//! last. The scale-to-zero decision closes the route's gate before it checks for open requests,
//! and requests count themselves open before they look at the gate; both sides use sequentially
//! consistent atomics, so either the decision sees the request (and backs off) or the request
//! sees the closed gate (and is held, re-activating the route). A request arriving during a scale
//! down is therefore served, never failed.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::balancer::Lease;
use crate::route::{Closed, Route};

/// Where a route stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// No replica asked for, none ready.
    Idle,
    /// Replicas asked for, none ready yet.
    Activating,
    /// At least one replica ready.
    Ready,
    /// Replicas asked for, none ready, and the provider reported a problem.
    Failed,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Activating => "activating",
            Phase::Ready => "ready",
            Phase::Failed => "failed",
        }
    }
}

/// A request that could not be given an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// The route already holds `max` requests.
    #[error("route already holds {max} requests")]
    QueueFull {
        /// The bound.
        max: u64,
    },
    /// No replica could take the request within the cold-start timeout.
    #[error("no replica ready within {waited:?}")]
    Timeout {
        /// How long the request waited.
        waited: Duration,
        /// Replicas ready but full (container concurrency), if any.
        ready: usize,
        /// What keeps replicas from becoming ready, as the provider reported it.
        problem: Option<String>,
    },
    /// The route went away while the request waited.
    #[error("route removed")]
    RouteRemoved,
    /// The activator is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// A route's activation state.
#[derive(Debug, Default)]
pub(crate) struct Activation {
    // Never held across an await: every critical section below is a few field updates.
    state: Mutex<State>,
    /// Serialises provider calls for the route.
    scale_lock: tokio::sync::Mutex<()>,
    /// The count the provider last accepted.
    applied: AtomicU32,
}

#[derive(Debug, Default)]
struct State {
    desired: u32,
    /// When the first request held with no replica ready arrived; cleared by the first ready one.
    held_since: Option<Instant>,
    /// What keeps replicas from becoming ready, and whether it is a failure (not just a wait).
    problem: Option<(String, bool)>,
    last_scale_up: Option<Instant>,
}

impl Activation {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Route {
    /// Leases an endpoint for one request, holding the request until a replica is ready.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, ActivationError> {
        // Fast path, unless others are already waiting (they go first).
        if self.stats().queued_now() == 0
            && let Some(lease) = self.backends().try_acquire()
        {
            return Ok(lease);
        }
        self.check_closed()?;
        let max = self.spec().max_queued;
        let Some(_held) = self.stats().enqueue(max) else {
            return Err(ActivationError::QueueFull { max });
        };
        let started = Instant::now();
        let wait = async {
            loop {
                let notified = self.backends().changed().notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                self.check_closed()?;
                if let Some(lease) = self.backends().try_acquire() {
                    return Ok(lease);
                }
                self.activate(started);
                notified.await;
            }
        };
        match tokio::time::timeout(self.spec().cold_start_timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(ActivationError::Timeout {
                waited: started.elapsed(),
                ready: self.backends().ready_count(),
                problem: self.problem(),
            }),
        }
    }

    fn check_closed(&self) -> Result<(), ActivationError> {
        match self.closed() {
            None => Ok(()),
            Some(Closed::Removed) => Err(ActivationError::RouteRemoved),
            Some(Closed::ShuttingDown) => Err(ActivationError::ShuttingDown),
        }
    }

    /// Called by a held request: starts a scale-up unless one is under way.
    fn activate(self: &Arc<Self>, held_since: Instant) {
        let mut state = self.activation.state();
        if state.held_since.is_none() && self.backends().ready_count() == 0 {
            state.held_since = Some(held_since);
        }
        if state.desired > 0 {
            return;
        }
        let replicas = self.spec().scaling.activation_replicas();
        state.desired = replicas;
        state.last_scale_up = Some(Instant::now());
        drop(state);
        tracing::info!(route = %self.id(), replicas, "activating: request held with no replica ready");
        self.spawn_reconcile();
    }

    /// Asks for `replicas` replicas (the scaler's decision).
    pub fn scale_to(self: &Arc<Self>, replicas: u32) {
        let mut state = self.activation.state();
        if state.desired == replicas {
            return;
        }
        if replicas > state.desired {
            state.last_scale_up = Some(Instant::now());
        }
        state.desired = replicas;
        drop(state);
        self.spawn_reconcile();
    }

    /// Scales to zero unless a request is open; returns whether it did.
    pub fn scale_to_zero_if_unused(self: &Arc<Self>) -> bool {
        let mut state = self.activation.state();
        if state.desired == 0 {
            return false;
        }
        // Close first, then look: see the module docs for why this order makes the race safe.
        self.backends().close_gate();
        if self.stats().open_now() > 0 {
            self.backends().open_gate();
            return false;
        }
        state.desired = 0;
        drop(state);
        self.spawn_reconcile();
        true
    }

    /// Re-sends the desired count if the provider has not accepted it yet (after an error).
    pub fn reconcile_if_needed(self: &Arc<Self>) {
        // A reconcile under way (a provider still retrying) applies the latest count when it is
        // done, and every change of the count spawns its own: only a failed one needs a new start.
        let idle = self.activation.scale_lock.try_lock().is_ok();
        if idle && self.desired() != self.activation.applied.load(Ordering::Acquire) {
            self.spawn_reconcile();
        }
    }

    fn spawn_reconcile(self: &Arc<Self>) {
        let route = Arc::clone(self);
        tokio::spawn(async move { route.reconcile().await });
    }

    async fn reconcile(self: Arc<Self>) {
        let _serial = self.activation.scale_lock.lock().await;
        let desired = self.desired();
        let applied = self.activation.applied.load(Ordering::Acquire);
        if desired != applied {
            match self.provider().scale(&self, desired).await {
                Ok(()) => {
                    self.activation.applied.store(desired, Ordering::Release);
                    tracing::info!(route = %self.id(), from = applied, to = desired, "scaled");
                }
                Err(error) => {
                    tracing::warn!(route = %self.id(), from = applied, to = desired, %error, "scale failed");
                    if desired > 0 {
                        self.set_problem(format!("scaling to {desired} replicas failed: {error}"));
                    }
                    return;
                }
            }
        }
        if desired > 0 && !self.backends().is_open() {
            self.backends().open_gate();
        }
    }

    /// Takes note of the replica count the workload has now, as a watch reports it. Ignored
    /// while a scale write of the activator's own is pending (the report predates it). A count set
    /// by someone else (`kubectl scale`, an HPA) is adopted: above zero it reopens the route, and
    /// at zero with requests held it re-activates the route.
    pub fn observe_replicas(self: &Arc<Self>, replicas: u32) {
        let state = self.activation.state();
        if state.desired != self.activation.applied.load(Ordering::Acquire) {
            return;
        }
        drop(state);
        self.adopt_replicas(replicas);
    }

    /// Adopts `replicas` as both desired and applied: what the workload runs, decided elsewhere
    /// (observed, or re-read after a conflicting write).
    pub fn adopt_replicas(self: &Arc<Self>, replicas: u32) {
        let mut state = self.activation.state();
        self.activation.applied.store(replicas, Ordering::Release);
        let before = state.desired;
        state.desired = replicas;
        drop(state);
        if replicas > 0 && !self.backends().is_open() {
            self.backends().open_gate();
        }
        if before == replicas {
            return;
        }
        if replicas > before {
            // Someone started replicas: give them a whole idle timeout before scaling them away.
            self.stats().mark_active();
        }
        tracing::info!(route = %self.id(), from = before, to = replicas, "replicas changed outside the activator");
        if replicas == 0 && self.stats().queued_now() > 0 {
            self.activate(Instant::now());
        }
    }

    /// Publishes the endpoints that can take requests now (called by the provider).
    pub fn set_ready(&self, addrs: &[std::net::SocketAddr]) {
        self.backends().set_ready(addrs);
        if addrs.is_empty() {
            return;
        }
        let mut state = self.activation.state();
        state.problem = None;
        let cold_start = state.held_since.take().map(|since| since.elapsed());
        drop(state);
        if let Some(elapsed) = cold_start {
            self.metrics().cold_start(elapsed);
            tracing::info!(
                route = %self.id(),
                duration_ms = elapsed.as_secs_f64() * 1e3,
                "cold start complete: replica ready"
            );
        }
    }

    /// Records a failure that keeps replicas from becoming ready (the route shows as failed
    /// until a replica is ready).
    pub fn set_problem(&self, problem: String) {
        self.activation.state().problem = Some((problem, true));
    }

    /// Records why replicas are not ready yet while they start (shown in 504 bodies and
    /// `/routes`, without marking the route failed). Does not hide an earlier failure.
    pub fn set_waiting_on(&self, note: String) {
        let mut state = self.activation.state();
        if !state.problem.as_ref().is_some_and(|(_, failed)| *failed) {
            state.problem = Some((note, false));
        }
    }

    /// What keeps replicas from becoming ready, if known.
    pub fn problem(&self) -> Option<String> {
        self.activation
            .state()
            .problem
            .as_ref()
            .map(|(text, _)| text.clone())
    }

    /// Replicas asked for.
    pub fn desired(&self) -> u32 {
        self.activation.state().desired
    }

    /// When replicas were last added.
    pub fn last_scale_up(&self) -> Option<Instant> {
        self.activation.state().last_scale_up
    }

    /// Where the route stands.
    pub fn phase(&self) -> Phase {
        let state = self.activation.state();
        if self.backends().ready_count() > 0 {
            Phase::Ready
        } else if state.desired == 0 {
            Phase::Idle
        } else if state.problem.as_ref().is_some_and(|(_, failed)| *failed) {
            Phase::Failed
        } else {
            Phase::Activating
        }
    }
}
