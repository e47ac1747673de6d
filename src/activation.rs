//! Activation: holding requests until a replica can serve them, the gate that keeps requests off
//! replicas about to stop, and the one task per route that brings the provider to the replica
//! count wanted.
//!
//! A request that finds no endpoint with room joins the route's bounded queue (a
//! [`QueueGuard`](crate::stats::QueueGuard), so a client that goes away leaves it at once) and
//! waits on the endpoints' change notification, inside one `tokio::time::timeout` of the route's
//! cold-start timeout; there is no poll loop. The first held request of an idle route raises the
//! wanted replica count to `max(min_scale, activation_scale)`; later ones find it raised already,
//! so a burst makes exactly one scale-up.
//!
//! Provider calls for a route are made by one driver task at a time, which always carries out the
//! *latest* decision ([`replicas`]): when a decision changes while a call is under way (a request
//! re-activates a route whose scale-to-zero is still being retried through an API brownout), the
//! call is dropped and the new decision written instead, so a stale write never lands after the
//! request and never holds it.
//!
//! The gate: the scale-to-zero decision closes it before it checks for open requests, and
//! requests count themselves open (in [`RouteStats::begin`]) before they look at it; both sides
//! use sequentially consistent atomics, so either the decision sees the request (and backs off)
//! or the request sees the closed gate (and is held, re-activating the route, which opens the
//! gate again). A request arriving during a scale-down is therefore served, never failed.
//!
//! With several activator replicas, the scale-to-zero decision is the Lease holder's, and it closes
//! the route on every replica first ([`hold`]): the same ordering argument holds per replica, so a
//! request anywhere either keeps the workload up or is held and activates it again.
//!
//! Activation is also the route's [`Report`] handle: what the provider learns (ready endpoints,
//! problems, replica counts set by others) arrives here.

pub(crate) mod hold;
pub(crate) mod replicas;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::balancer::{Backends, Lease};
use crate::metrics::RouteMetrics;
use crate::provider::{Cause, Provider, Report, ScaleRequest, Scaled};
use crate::spec::RouteSpec;
use crate::stats::{HoldBudget, QueueFull, RouteStats};
use hold::Hold;
use replicas::{Adopted, Replicas};

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

/// Why a route stopped taking requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The route was removed from the configuration.
    Removed,
    /// The activator is shutting down and the drain time is over.
    ShuttingDown,
}

const OPEN: u8 = 0;
const REMOVED: u8 = 1;
const SHUTTING_DOWN: u8 = 2;

/// A request that could not be given an endpoint.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ActivationError {
    /// The route already holds `max` requests, or the activator `max` across all routes.
    #[error("already holding {max} requests")]
    QueueFull {
        /// The bound.
        max: u64,
        /// Which bound: the route's (`max_queued`) or the total (`max_queued_total`).
        total: bool,
    },
    /// No replica could take the request within the cold-start timeout.
    #[error(
        "no replica could take the request within {limit:?} ({ready} ready){}",
        problem.as_deref().map(|p| format!("; last problem: {p}")).unwrap_or_default()
    )]
    Timeout {
        /// How long the request could wait: the route's cold-start timeout, or a gRPC client's
        /// shorter deadline. (A busy machine may have taken a little longer to answer it.)
        limit: Duration,
        /// Replicas ready but full (container concurrency), if any.
        ready: usize,
        /// What keeps replicas from becoming ready, as the provider reported it.
        problem: Option<String>,
    },
    /// The route's replicas keep failing to start; the next attempt comes in `retry_in`.
    #[error("replicas keep failing to start: {problem}")]
    ReplicaFailed {
        /// What failed, for the log.
        problem: String,
        /// Until the next attempt.
        retry_in: Duration,
    },
    /// No replica is ready and the request is a browser's on a route with a waiting page: the
    /// route is starting, and the browser is told so rather than held.
    #[error("starting; a waiting page was sent")]
    Starting,
    /// The route went away while the request waited.
    #[error("route removed")]
    RouteRemoved,
    /// The activator is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// How a request may wait for a replica.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Waiting {
    /// The client gives up after this (gRPC's `grpc-timeout`); at most the cold-start timeout.
    pub(crate) deadline: Option<Duration>,
    /// Rather than hold it while no replica is ready, answer with the waiting page.
    pub(crate) waiting_page: bool,
}

/// An endpoint leased for one request.
#[derive(Debug)]
pub(crate) struct Granted {
    /// The lease.
    pub(crate) lease: Lease,
    /// How long the request waited for a cold start, if it arrived with no replica ready.
    pub(crate) cold_start: Option<Duration>,
}

/// A route's activation: hold queue, gate, replica count and the provider driver.
pub(crate) struct Activation {
    me: Weak<Activation>,
    id: String,
    spec: Arc<ArcSwap<RouteSpec>>,
    backends: Arc<Backends>,
    stats: Arc<RouteStats>,
    /// Held requests across all routes.
    budget: Arc<HoldBudget>,
    metrics: RouteMetrics,
    provider: Arc<dyn Provider>,
    /// Leases may be taken (closed while a scale-to-zero decision is made and carried out).
    gate: AtomicBool,
    /// Closed for a scale to zero the Lease holder decided (several replicas only).
    hold: Hold,
    closed: AtomicU8,
    // Never held across an await: every critical section is a few field updates.
    state: Mutex<State>,
    /// Signalled when the wanted count changes, so a provider call for an older one is dropped.
    decided: Notify,
}

#[derive(Debug, Default)]
struct State {
    replicas: Replicas,
    /// When the first request held with no replica ready arrived; cleared by the first ready one.
    held_since: Option<Instant>,
    /// What keeps replicas from becoming ready, and whether it is a failure (not just a wait).
    problem: Option<(String, bool)>,
    /// Replicas keep failing to start: requests are refused at once until then.
    failing_until: Option<Instant>,
    /// Why the wanted count is what it is.
    cause: Cause,
}

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activation")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Activation {
    /// The activation of the route whose configuration `spec` holds.
    pub(crate) fn new(
        spec: Arc<ArcSwap<RouteSpec>>,
        backends: Arc<Backends>,
        stats: Arc<RouteStats>,
        budget: Arc<HoldBudget>,
        metrics: RouteMetrics,
        provider: Arc<dyn Provider>,
    ) -> Arc<Activation> {
        Arc::new_cyclic(|me| Activation {
            me: me.clone(),
            id: spec.load().id(),
            spec,
            backends,
            stats,
            budget,
            metrics,
            provider,
            gate: AtomicBool::new(true),
            hold: Hold::default(),
            closed: AtomicU8::new(OPEN),
            state: Mutex::new(State::default()),
            decided: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leases an endpoint for one request, holding the request until a replica is ready: at most
    /// the route's cold-start timeout, or `deadline` if the client gives up sooner.
    pub(crate) async fn acquire(&self, waiting: Waiting) -> Result<Granted, ActivationError> {
        if let Some(granted) = self.try_acquire() {
            return Ok(granted);
        }
        self.check_closed()?;
        self.check_failing()?;
        let cold = self.backends.ready_count() == 0;
        if waiting.waiting_page && cold {
            // A browser gets a page that reloads itself instead of a blank wait; the route starts.
            self.activate(Instant::now());
            return Err(ActivationError::Starting);
        }
        let spec = self.spec.load();
        let max = spec.settings.max_queued;
        let _held = match self.stats.enqueue(max, &self.budget) {
            Ok(held) => held,
            Err(QueueFull::Route) => return Err(ActivationError::QueueFull { max, total: false }),
            Err(QueueFull::Total) => {
                return Err(ActivationError::QueueFull {
                    max: self.budget.max(),
                    total: true,
                });
            }
        };
        let started = Instant::now();
        let wait = async {
            loop {
                let notified = self.backends.changed().notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                self.check_closed()?;
                if let Some(lease) = self.try_lease() {
                    return Ok(Granted {
                        lease,
                        cold_start: cold.then(|| started.elapsed()),
                    });
                }
                self.check_failing()?;
                self.activate(started);
                notified.await;
            }
        };
        let limit = waiting
            .deadline
            .map_or(spec.settings.cold_start_timeout, |d| {
                d.min(spec.settings.cold_start_timeout)
            });
        match tokio::time::timeout(limit, wait).await {
            Ok(result) => result,
            Err(_) => {
                self.activation_ended("timeout");
                Err(ActivationError::Timeout {
                    limit,
                    ready: self.backends.ready_count(),
                    problem: self.problem(),
                })
            }
        }
    }

    /// A lease at once, if a replica has room and no request is held ahead of this one (held
    /// requests go first): what most requests get, without [`Activation::acquire`]'s wait.
    pub(crate) fn try_acquire(&self) -> Option<Granted> {
        if self.stats.queued_now() != 0 {
            return None;
        }
        self.try_lease().map(|lease| Granted {
            lease,
            cold_start: None,
        })
    }

    /// Refuses at once while replicas keep failing to start and no replica is ready.
    fn check_failing(&self) -> Result<(), ActivationError> {
        let state = self.state();
        match state.failing_until {
            Some(until) if self.backends.ready_count() == 0 => {
                let now = Instant::now();
                if now < until {
                    return Err(ActivationError::ReplicaFailed {
                        problem: state
                            .problem
                            .as_ref()
                            .map_or_else(String::new, |(p, _)| p.clone()),
                        retry_in: until - now,
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Counts the activation under way as ended with `result` (`timeout`, `failed`), once.
    fn activation_ended(&self, result: &str) {
        let ended = self.state().held_since.take().is_some();
        if ended {
            self.metrics.cold_start_failed(result);
        }
    }

    /// An endpoint with room, if the gate lets requests through.
    fn try_lease(&self) -> Option<Lease> {
        // SeqCst: see the module docs on the gate.
        if !self.gate.load(Ordering::SeqCst) || self.hold.is_closed() {
            return None;
        }
        self.backends.try_acquire()
    }

    fn open_gate(&self) {
        if !self.gate.swap(true, Ordering::SeqCst) {
            self.backends.wake_all();
        }
    }

    fn check_closed(&self) -> Result<(), ActivationError> {
        match self.closed() {
            None => Ok(()),
            Some(Closed::Removed) => Err(ActivationError::RouteRemoved),
            Some(Closed::ShuttingDown) => Err(ActivationError::ShuttingDown),
        }
    }

    /// Stops the route taking requests; held requests are answered at once.
    pub(crate) fn close(&self, why: Closed) {
        let code = match why {
            Closed::Removed => REMOVED,
            Closed::ShuttingDown => SHUTTING_DOWN,
        };
        self.closed.store(code, Ordering::SeqCst);
        self.backends.wake_all();
    }

    /// Whether and why the route stopped taking requests.
    pub(crate) fn closed(&self) -> Option<Closed> {
        match self.closed.load(Ordering::SeqCst) {
            REMOVED => Some(Closed::Removed),
            SHUTTING_DOWN => Some(Closed::ShuttingDown),
            _ => None,
        }
    }

    /// Called by a held request: starts a scale-up unless one is under way.
    fn activate(&self, held_since: Instant) {
        let mut state = self.state();
        if state.held_since.is_none() && self.backends.ready_count() == 0 {
            state.held_since = Some(held_since);
        }
        if state.replicas.desired() > 0 {
            return;
        }
        let replicas = self.spec.load().settings.scaling.activation_replicas();
        state.replicas.set(replicas, Instant::now());
        state.cause = Cause::Requests {
            held: self.stats.queued_now(),
        };
        drop(state);
        tracing::info!(route = %self.id, replicas, "activating: request held with no replica ready");
        self.decided();
    }

    /// Asks for `replicas` replicas (the scaler's decision, for `cause`).
    pub(crate) fn scale_to(&self, replicas: u32, cause: Cause) {
        let mut state = self.state();
        if state.replicas.set(replicas, Instant::now()) {
            state.cause = cause;
            drop(state);
            self.decided();
        }
    }

    /// Scales to zero unless a request is open (the route was idle for `idle_for`); returns
    /// whether it did.
    pub(crate) fn scale_to_zero_if_unused(&self, idle_for: Option<Duration>) -> bool {
        self.begin_scale_down()
            .is_some_and(|scale_down| scale_down.commit(idle_for))
    }

    /// Closes the route here for a scale to zero decided by the Lease holder, until `until` at
    /// the latest; returns whether no request is open. With requests open it stays open (and the
    /// holder must not scale to zero).
    pub(crate) fn hold_for_scale_down(&self, until: Instant) -> bool {
        // Close first, then look, as the gate does.
        self.hold.close(until);
        if self.stats.open_now() > 0 {
            self.release_hold();
            return false;
        }
        if let Some(me) = self.me.upgrade() {
            crate::workers::spawn_control(async move {
                tokio::time::sleep_until(until).await;
                if me.hold.expire(Instant::now()) {
                    me.backends.wake_all();
                }
            });
        }
        true
    }

    /// Opens the route after [`Activation::hold_for_scale_down`] (the holder gave up).
    pub(crate) fn release_hold(&self) {
        if self.hold.open() {
            self.backends.wake_all();
        }
    }

    /// Whether the route is closed here for a scale to zero decided elsewhere.
    pub(crate) fn held_for_scale_down(&self) -> bool {
        self.hold.is_closed()
    }

    /// The first half of a scale-to-zero decision: closes the gate. `None` if the route wants no
    /// replicas already.
    fn begin_scale_down(&self) -> Option<ScaleDown<'_>> {
        let state = self.state();
        if state.replicas.desired() == 0 {
            return None;
        }
        // Close first, then look: see the module docs for why this order makes the race safe.
        self.gate.store(false, Ordering::SeqCst);
        Some(ScaleDown {
            activation: self,
            state,
        })
    }

    /// A new decision was made: drop any provider call for an older one, and make sure a driver
    /// carries it out. Requests wait only while no replica is wanted.
    fn decided(&self) {
        if self.state().replicas.desired() > 0 {
            self.open_gate();
        }
        self.decided.notify_waiters();
        self.drive();
    }

    /// Starts a driver unless one is running or the provider has the wanted count; after a failed
    /// provider call this is how the next attempt starts (the scaler calls it every tick).
    pub(crate) fn reconcile_if_needed(&self) {
        self.drive();
    }

    fn drive(&self) {
        if !self.state().replicas.start_driving() {
            return;
        }
        match self.me.upgrade() {
            Some(me) => {
                crate::workers::spawn_control(me.run_driver());
            }
            None => self.state().replicas.failed(),
        }
    }

    /// Calls the provider until it has the latest wanted count, dropping calls whose decision
    /// was replaced meanwhile. Stops after a failed call.
    async fn run_driver(self: Arc<Self>) {
        loop {
            let decided = self.decided.notified();
            tokio::pin!(decided);
            decided.as_mut().enable();
            let (step, mut cause) = {
                let mut state = self.state();
                let Some(step) = state.replicas.next_step() else {
                    return;
                };
                (step, state.cause)
            };
            if let Cause::Requests { held } = &mut cause {
                // The burst may have grown since the decision.
                *held = (*held).max(self.stats.queued_now());
            }
            let spec = self.spec.load_full();
            let call = self.provider.scale(ScaleRequest {
                spec: &spec,
                replicas: step.replicas,
                verify: step.verify,
                metrics: &self.metrics,
                cause,
            });
            let result = tokio::select! {
                result = call => Some(result),
                () = &mut decided => None,
            };
            let mut state = self.state();
            match result {
                None => {
                    state.replicas.abandoned();
                    tracing::debug!(route = %self.id, replicas = step.replicas, "scale call abandoned for a newer decision");
                }
                Some(Ok(Scaled::Applied)) => {
                    state.replicas.applied(&step);
                    drop(state);
                    tracing::info!(route = %self.id, to = step.replicas, "scaled");
                }
                Some(Ok(Scaled::Superseded { replicas })) => {
                    let adopted = state.replicas.superseded(replicas);
                    drop(state);
                    self.adopted(adopted);
                }
                Some(Err(error)) => {
                    state.replicas.failed();
                    if step.replicas > 0 {
                        state.problem = Some((
                            format!("scaling to {} replicas failed: {error}", step.replicas),
                            true,
                        ));
                    }
                    drop(state);
                    tracing::warn!(route = %self.id, to = step.replicas, %error, "scale failed");
                    return;
                }
            }
        }
    }

    /// Takes on a replica count someone else set (`kubectl scale`, an HPA): above zero it reopens
    /// the route, more replicas restart the idle clock, and at zero with requests held the route
    /// is activated again.
    fn adopted(&self, adopted: Adopted) {
        if adopted.now > 0 {
            self.open_gate();
        }
        if adopted.before == adopted.now {
            return;
        }
        if adopted.now > adopted.before {
            // Give replicas someone started a whole idle timeout before scaling them away.
            self.stats.mark_active();
        }
        tracing::info!(route = %self.id, from = adopted.before, to = adopted.now, "replicas changed outside the activator");
        if adopted.now == 0 {
            // The zero a hold was for has landed: what it held now activates the route again.
            self.release_hold();
        }
        if adopted.now == 0 && self.stats.queued_now() > 0 {
            self.activate(Instant::now());
        }
    }

    /// What keeps replicas from becoming ready, if known.
    pub(crate) fn problem(&self) -> Option<String> {
        self.state().problem.as_ref().map(|(text, _)| text.clone())
    }

    /// Replicas asked for.
    pub(crate) fn desired(&self) -> u32 {
        self.state().replicas.desired()
    }

    /// When replicas were last added.
    pub(crate) fn last_scale_up(&self) -> Option<Instant> {
        self.state().replicas.last_scale_up()
    }

    /// Where the route stands.
    pub(crate) fn phase(&self) -> Phase {
        let state = self.state();
        if self.backends.ready_count() > 0 {
            Phase::Ready
        } else if state.replicas.desired() == 0 {
            Phase::Idle
        } else if state.problem.as_ref().is_some_and(|(_, failed)| *failed) {
            Phase::Failed
        } else {
            Phase::Activating
        }
    }
}

/// A scale-to-zero decision between closing the gate and committing.
struct ScaleDown<'a> {
    activation: &'a Activation,
    state: MutexGuard<'a, State>,
}

impl ScaleDown<'_> {
    /// Scales to zero if no request is open, else reopens the gate; returns whether it scaled.
    fn commit(self, idle_for: Option<Duration>) -> bool {
        let ScaleDown {
            activation,
            mut state,
        } = self;
        if activation.stats.open_now() > 0 {
            drop(state);
            activation.open_gate();
            return false;
        }
        state.replicas.set(0, Instant::now());
        state.cause = Cause::Idle { idle_for };
        drop(state);
        activation.decided();
        true
    }
}

impl Report for Activation {
    fn ready(&self, endpoints: &[SocketAddr]) {
        self.backends.set_ready(endpoints);
        if endpoints.is_empty() {
            return;
        }
        let mut state = self.state();
        state.problem = None;
        state.failing_until = None;
        let cold_start = state.held_since.take().map(|since| since.elapsed());
        drop(state);
        if let Some(elapsed) = cold_start {
            self.metrics.cold_start(elapsed);
            tracing::info!(
                route = %self.id,
                duration_ms = elapsed.as_millis() as u64,
                "cold start complete: replica ready"
            );
        }
    }

    fn in_flight(&self, endpoint: SocketAddr) -> u32 {
        self.backends.find(endpoint).map_or(0, |e| e.in_flight())
    }

    fn problem(&self, problem: String) {
        self.state().problem = Some((problem, true));
    }

    fn waiting(&self, note: String) {
        let mut state = self.state();
        if !state.problem.as_ref().is_some_and(|(_, failed)| *failed) {
            state.problem = Some((note, false));
        }
    }

    fn failing(&self, problem: String, retry_in: Duration) {
        let mut state = self.state();
        state.problem = Some((problem, true));
        state.failing_until = Some(Instant::now() + retry_in);
        drop(state);
        self.activation_ended("failed");
        // Held requests are answered now, not at their cold-start timeout.
        self.backends.wake_all();
    }

    fn replicas(&self, observed: u32) {
        let adopted = self.state().replicas.observe(observed);
        if let Some(adopted) = adopted {
            self.adopted(adopted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::provider::{BoxFuture, ProviderError, Reporter};
    use crate::spec::{ProcessSpec, Settings, Workload};
    use crate::stats::RequestGuard;

    /// A provider that accepts every count at once and changes no endpoint.
    struct Accepting;

    impl Provider for Accepting {
        fn attach(&self, _: &RouteSpec, _: Reporter) {}
        fn detach(&self, _: &str) {}
        fn scale<'a>(
            &'a self,
            _: ScaleRequest<'a>,
        ) -> BoxFuture<'a, Result<Scaled, ProviderError>> {
            Box::pin(async { Ok(Scaled::Applied) })
        }
        fn shutdown(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    fn activation() -> (Arc<Activation>, Arc<RouteStats>) {
        let defaults = Settings::default();
        let spec = RouteSpec {
            name: "web".into(),
            namespace: "default".into(),
            hosts: vec!["web.default.test".into()],
            path_prefix: None,
            settings: defaults,
            workload: Workload::Process(ProcessSpec {
                command: vec!["true".into()],
                ready_path: None,
                env: Default::default(),
                workdir: None,
                stop_grace: Duration::from_secs(1),
            }),
        };
        // Two shards: the racing request counts itself on worker 1 ([`begin_on_another_worker`])
        // while the decision reads from the control runtime, as in the proxy.
        let stats = Arc::new(RouteStats::with_shards(2));
        let backends = Arc::new(Backends::new(0));
        let metrics = Metrics::new().route("web", "default");
        let activation = Activation::new(
            Arc::new(ArcSwap::from_pointee(spec)),
            backends,
            Arc::clone(&stats),
            HoldBudget::new(100),
            metrics,
            Arc::new(Accepting),
        );
        (activation, stats)
    }

    /// Counts a request open as worker 1 does, in that worker's shard of the route's counters.
    fn begin_on_another_worker(stats: &Arc<RouteStats>) -> RequestGuard {
        crate::workers::set_index(1);
        let guard = stats.begin();
        crate::workers::set_index(0);
        guard
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Step {
        /// The request counts itself open.
        Begin,
        /// The request looks at the gate and tries to lease.
        Lease,
        /// The decision closes the gate.
        Close,
        /// The decision looks for open requests and commits or backs off.
        Commit,
    }

    /// Every order of the request's two steps and the decision's two steps.
    fn interleavings() -> Vec<[Step; 4]> {
        use Step::*;
        let mut all = Vec::new();
        for request_at in [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]] {
            let mut order = [Close; 4];
            let mut decision = [Close, Commit].into_iter();
            for (slot, step) in order.iter_mut().enumerate() {
                *step = if slot == request_at[0] {
                    Begin
                } else if slot == request_at[1] {
                    Lease
                } else {
                    decision.next().expect("two decision steps")
                };
            }
            all.push(order);
        }
        all
    }

    #[tokio::test]
    async fn a_request_racing_the_scale_down_is_never_left_behind_in_any_interleaving() {
        for order in interleavings() {
            let (activation, stats) = activation();
            activation.ready(&[SocketAddr::from(([127, 0, 0, 1], 9))]);
            activation.scale_to(1, Cause::Other);
            let mut guard = None;
            let mut lease = None;
            let mut scale_down = None;
            let mut scaled_to_zero = None;
            for step in order {
                match step {
                    Step::Begin => guard = Some(begin_on_another_worker(&stats)),
                    Step::Lease => lease = activation.try_lease(),
                    Step::Close => scale_down = activation.begin_scale_down(),
                    Step::Commit => {
                        scaled_to_zero = Some(scale_down.take().expect("closed first").commit(None))
                    }
                }
            }
            let scaled_to_zero = scaled_to_zero.expect("the decision ran");
            assert!(
                !(scaled_to_zero && lease.is_some()),
                "{order:?}: a request leased a replica being scaled to zero"
            );
            if lease.is_none() {
                // The request is held: it re-activates the route, and then gets a replica.
                activation.activate(Instant::now());
                lease = activation.try_lease();
            }
            assert!(
                lease.is_some(),
                "{order:?}: the request never got a replica"
            );
            assert_eq!(activation.desired(), 1, "{order:?}");
            drop((lease, guard));
        }
    }

    #[tokio::test]
    async fn a_request_racing_a_hold_for_another_replicas_scale_down_is_never_left_behind() {
        for order in interleavings() {
            let (activation, stats) = activation();
            activation.ready(&[SocketAddr::from(([127, 0, 0, 1], 9))]);
            Report::replicas(&*activation, 1);
            let mut guard = None;
            let mut lease = None;
            let mut kept = None;
            // `hold_for_scale_down` split in its two steps: close, then look.
            for step in order {
                match step {
                    Step::Begin => guard = Some(begin_on_another_worker(&stats)),
                    Step::Lease => lease = activation.try_lease(),
                    Step::Close => activation
                        .hold
                        .close(Instant::now() + Duration::from_secs(5)),
                    Step::Commit => {
                        let unused = stats.open_now() == 0;
                        if !unused {
                            activation.release_hold();
                        }
                        kept = Some(unused);
                    }
                }
            }
            let kept = kept.expect("the hold looked");
            assert!(
                !(kept && lease.is_some()),
                "{order:?}: a request leased a replica the holder may scale to zero"
            );
            if lease.is_none() {
                // Held here: the zero lands, and the request activates the route again.
                Report::replicas(&*activation, 0);
                activation.activate(Instant::now());
                lease = activation.try_lease();
            }
            assert!(
                lease.is_some(),
                "{order:?}: the request never got a replica"
            );
            drop((lease, guard));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_request_raises_the_count_once_and_is_released_when_a_replica_is_ready() {
        let (activation, _) = activation();
        let held: Vec<_> = (0..3)
            .map(|_| {
                let activation = Arc::clone(&activation);
                tokio::spawn(
                    async move { activation.acquire(Waiting::default()).await.map(|_| ()) },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(activation.desired(), 1);
        assert_eq!(activation.phase(), Phase::Activating);
        activation.ready(&[SocketAddr::from(([127, 0, 0, 1], 9))]);
        for request in held {
            request.await.unwrap().expect("a replica");
        }
        assert_eq!(activation.phase(), Phase::Ready);
    }
}
