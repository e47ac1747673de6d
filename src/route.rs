//! One served route: its spec and the runtime parts that serve it (endpoints, stats, activation
//! state, metric handles), and its status as `/routes` shows it.
//!
//! How requests wait and how scaling is triggered lives in [`crate::activation`]; this module only
//! assembles the parts and reports on them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::activation::{Activation, Phase};
use crate::balancer::Backends;
use crate::config::RouteSpec;
use crate::metrics::{Metrics, RouteMetrics};
use crate::provider::Provider;
use crate::stats::RouteStats;

/// Why a route stopped taking requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The route was removed from the configuration.
    Removed,
    /// The activator is shutting down and the drain time is over.
    ShuttingDown,
}

const OPEN: u8 = 0;
const REMOVED: u8 = 1;
const SHUTTING_DOWN: u8 = 2;

/// A route and everything that serves it.
pub struct Route {
    /// Swapped whole when the route's configuration changes (annotations edited).
    spec: ArcSwap<RouteSpec>,
    id: String,
    backends: Arc<Backends>,
    stats: Arc<RouteStats>,
    metrics: RouteMetrics,
    provider: Arc<dyn Provider>,
    pub(crate) activation: Activation,
    closed: AtomicU8,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// A route with no replicas yet.
    pub fn new(spec: RouteSpec, provider: Arc<dyn Provider>, metrics: &Metrics) -> Arc<Route> {
        Arc::new(Route {
            id: spec.id(),
            backends: Arc::new(Backends::new(spec.scaling.container_concurrency)),
            stats: Arc::new(RouteStats::new()),
            metrics: metrics.route(&spec.name, &spec.namespace),
            provider,
            activation: Activation::default(),
            closed: AtomicU8::new(OPEN),
            spec: ArcSwap::from_pointee(spec),
        })
    }

    /// The route's configuration now.
    pub fn spec(&self) -> arc_swap::Guard<Arc<RouteSpec>> {
        self.spec.load()
    }

    /// Applies a changed configuration of the same route (same namespace and name) in place:
    /// held requests keep waiting, counts and replicas carry over.
    pub fn set_spec(&self, spec: RouteSpec) {
        debug_assert_eq!(spec.id(), self.id);
        self.backends.set_cap(spec.scaling.container_concurrency);
        self.spec.store(Arc::new(spec));
    }

    /// `namespace/name`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The ready endpoints.
    pub fn backends(&self) -> &Arc<Backends> {
        &self.backends
    }

    /// Request counters.
    pub fn stats(&self) -> &Arc<RouteStats> {
        &self.stats
    }

    /// Metric handles.
    pub fn metrics(&self) -> &RouteMetrics {
        &self.metrics
    }

    pub(crate) fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    /// Stops the route taking requests; held requests are answered at once.
    pub fn close(&self, why: Closed) {
        let code = match why {
            Closed::Removed => REMOVED,
            Closed::ShuttingDown => SHUTTING_DOWN,
        };
        self.closed.store(code, Ordering::SeqCst);
        self.backends.wake_all();
    }

    /// Whether and why the route stopped taking requests.
    pub fn closed(&self) -> Option<Closed> {
        match self.closed.load(Ordering::SeqCst) {
            REMOVED => Some(Closed::Removed),
            SHUTTING_DOWN => Some(Closed::ShuttingDown),
            _ => None,
        }
    }

    /// The route as `/routes` shows it.
    pub fn status(&self, now: Instant) -> RouteStatus {
        let spec = self.spec();
        let report = self.stats.peek(now, spec.scaling.window);
        RouteStatus {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            hosts: spec.hosts.clone(),
            path_prefix: spec.path_prefix.clone(),
            state: self.phase(),
            desired_replicas: self.desired(),
            ready_replicas: self.backends.ready_count() as u32,
            in_flight: report.in_flight,
            queued: report.queued,
            requests_total: report.requests_total,
            idle_seconds: report.idle_for.map(|d| d.as_secs_f64()),
            average_concurrency: report.average_concurrency,
            message: self.problem(),
        }
    }
}

/// A route's state as served by `/routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// Route name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Hosts answered, default host first.
    pub hosts: Vec<String>,
    /// Path prefix, if the route has one.
    pub path_prefix: Option<String>,
    /// Idle, activating, ready or failed.
    pub state: Phase,
    /// Replicas asked for.
    pub desired_replicas: u32,
    /// Replicas ready.
    pub ready_replicas: u32,
    /// Requests being served.
    pub in_flight: u64,
    /// Requests held.
    pub queued: u64,
    /// Requests accepted since start.
    pub requests_total: u64,
    /// Seconds since the last request started or ended; null if none ever came.
    pub idle_seconds: Option<f64>,
    /// Time-weighted average of open requests over the scaling window.
    pub average_concurrency: f64,
    /// What keeps replicas from becoming ready, if anything.
    pub message: Option<String>,
}

impl RouteStatus {
    /// Idle time as a duration.
    pub fn idle_for(&self) -> Option<Duration> {
        self.idle_seconds.map(Duration::from_secs_f64)
    }
}
