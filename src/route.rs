//! One served route: a plain aggregate of its configuration and the parts that serve it
//! (endpoints, stats, activation, metric handles), and its status as `/routes` shows it.
//!
//! How requests wait and how replicas are asked for lives in [`crate::activation`]; how an
//! endpoint is chosen in [`crate::balancer`]; this module assembles the parts, attaches the route
//! to its provider, and reports on it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::activation::{Activation, Phase};
use crate::balancer::Backends;
use crate::metrics::{Metrics, RouteMetrics};
use crate::provider::{Provider, Reporter};
use crate::spec::RouteSpec;
use crate::stats::{HoldBudget, RouteStats};

/// A route and everything that serves it.
pub struct Route {
    /// Swapped whole when the route's configuration changes (annotations edited); shared with
    /// the activation, which reads it when it asks for replicas.
    spec: Arc<ArcSwap<RouteSpec>>,
    id: String,
    backends: Arc<Backends>,
    stats: Arc<RouteStats>,
    activation: Arc<Activation>,
    metrics: RouteMetrics,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// A route with no replicas yet, attached to `provider`, which reports on its workload
    /// through the route's activation.
    pub(crate) fn new(
        spec: RouteSpec,
        provider: &Arc<dyn Provider>,
        budget: &Arc<HoldBudget>,
        metrics: &Metrics,
    ) -> Arc<Route> {
        let id = spec.id();
        let backends = Arc::new(Backends::new(spec.settings.scaling.container_concurrency));
        let stats = Arc::new(RouteStats::new());
        let route_metrics = metrics.route(&spec.name, &spec.namespace);
        let spec = Arc::new(ArcSwap::from_pointee(spec));
        let activation = Activation::new(
            Arc::clone(&spec),
            Arc::clone(&backends),
            Arc::clone(&stats),
            Arc::clone(budget),
            route_metrics.clone(),
            Arc::clone(provider),
        );
        let reporter: Reporter = activation.clone();
        provider.attach(&spec.load(), reporter);
        Arc::new(Route {
            spec,
            id,
            backends,
            stats,
            activation,
            metrics: route_metrics,
        })
    }

    /// The route's configuration now.
    pub(crate) fn spec(&self) -> arc_swap::Guard<Arc<RouteSpec>> {
        self.spec.load()
    }

    /// Applies a changed configuration of the same route (same namespace and name) in place:
    /// held requests keep waiting, counts and replicas carry over.
    pub(crate) fn set_spec(&self, spec: RouteSpec) {
        debug_assert_eq!(spec.id(), self.id);
        self.backends
            .set_cap(spec.settings.scaling.container_concurrency);
        self.spec.store(Arc::new(spec));
    }

    /// `namespace/name`.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The ready endpoints.
    pub(crate) fn backends(&self) -> &Arc<Backends> {
        &self.backends
    }

    /// Request counters.
    pub(crate) fn stats(&self) -> &Arc<RouteStats> {
        &self.stats
    }

    /// Holding requests and asking for replicas.
    pub(crate) fn activation(&self) -> &Activation {
        &self.activation
    }

    /// Metric handles.
    pub(crate) fn metrics(&self) -> &RouteMetrics {
        &self.metrics
    }

    /// The route as `/routes` shows it.
    pub(crate) fn status(&self, now: Instant) -> RouteStatus {
        let spec = self.spec();
        let report = self.stats.peek(now, spec.settings.scaling.window);
        RouteStatus {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            hosts: spec.hosts.clone(),
            path_prefix: spec.path_prefix.clone(),
            state: self.activation.phase(),
            desired_replicas: self.activation.desired(),
            ready_replicas: self.backends.ready_count() as u32,
            in_flight: report.in_flight,
            queued: report.queued,
            requests_total: report.requests_total,
            idle_seconds: report.idle_for.map(|d| d.as_secs_f64()),
            average_concurrency: report.average_concurrency,
            message: self.activation.problem(),
            closed_for_scale_down: self.activation.held_for_scale_down(),
            replicas: None,
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
    /// Closed here while another activator replica (the Lease holder) scales the route to zero:
    /// requests are held, and activate the route again if the zero lands.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed_for_scale_down: bool,
    /// On the activator replica that decides for several: the route summed over all of them,
    /// with each one's part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<SharedStatus>,
}

/// A route across replicas, as `/routes` shows it on the deciding replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedStatus {
    /// Requests being served, on every replica.
    pub in_flight: u64,
    /// Requests held, on every replica.
    pub queued: u64,
    /// Requests accepted, summed over the replicas' counters.
    pub requests_total: u64,
    /// Seconds since the last request started or ended on any replica, as the decision uses it.
    pub idle_seconds: Option<f64>,
    /// Time-weighted average of open requests, summed over replicas.
    pub average_concurrency: f64,
    /// Each replica's part, this one first.
    pub replicas: Vec<ReplicaShare>,
}

/// One replica's part of a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaShare {
    /// Its identity.
    pub identity: String,
    /// `self`, `answering`, or `unreachable` (counted as busy).
    pub state: String,
    /// Its requests in flight.
    pub in_flight: u64,
    /// Its requests held.
    pub queued: u64,
    /// Its share of the summed average concurrency (0–1), when there is any.
    pub share: Option<f64>,
}

impl RouteStatus {
    /// Idle time as a duration.
    pub fn idle_for(&self) -> Option<Duration> {
        self.idle_seconds.map(Duration::from_secs_f64)
    }
}
