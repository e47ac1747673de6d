//! The [`Provider`] trait: what scales a route's workload, and the narrow [`Report`] handle it
//! reports through.
//!
//! A provider is told how many replicas a route should run ([`Provider::scale`]) and answers
//! whether that happened; it never sees the route itself. What it learns later (which replicas
//! can take requests, what keeps them from starting, what replica count the workload has now) it
//! reports through the [`Reporter`] the route gave it when it was attached
//! ([`Provider::attach`]), the way a service-discovery source hands out backends and never sees
//! the balancer. Deciding *when* to scale is not a provider's business (that is
//! [`crate::activation`] and [`crate::scaler`]).
//!
//! A provider that discovers routes itself (Kubernetes) changes the served set through a
//! [`RouteSet`], which builds the routes and attaches them back to the provider.
//!
//! Implementations: [`process`] runs local commands; [`kube`] scales Kubernetes Deployments.

pub(crate) mod kube;
pub(crate) mod probe;
pub(crate) mod process;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::RouteMetrics;
use crate::spec::RouteSpec;

/// A boxed future, so the traits stay object-safe.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a provider learns about one route's workload, reported as it happens.
pub(crate) trait Report: Send + Sync + 'static {
    /// The addresses that can take requests now (all of them, replacing the last report).
    fn ready(&self, endpoints: &[SocketAddr]);

    /// Requests being served by `endpoint` now, so a replica being stopped can drain first.
    fn in_flight(&self, endpoint: SocketAddr) -> u32;

    /// A failure that keeps replicas from becoming ready (the route shows as failed until a
    /// replica is ready).
    fn problem(&self, problem: String);

    /// Why replicas are not ready yet while they start (not a failure; does not hide one).
    fn waiting(&self, note: String);

    /// Replicas keep failing to start (they crash before turning ready, or their image cannot be
    /// pulled): requests should not wait for them. Another attempt comes in `retry_in`.
    fn failing(&self, problem: String, retry_in: Duration);

    /// The replica count the workload has now, as observed (whoever set it).
    fn replicas(&self, observed: u32);
}

/// The handle a provider keeps for one route.
pub(crate) type Reporter = Arc<dyn Report>;

/// One scale request to a provider.
#[derive(Debug)]
pub(crate) struct ScaleRequest<'a> {
    /// The route, as configured now.
    pub(crate) spec: &'a RouteSpec,
    /// Replicas wanted.
    pub(crate) replicas: u32,
    /// An earlier request was abandoned mid-way, so its write may have landed unseen: read the
    /// current count from its source, not from a cache.
    pub(crate) verify: bool,
    /// Where every attempt is counted.
    pub(crate) metrics: &'a RouteMetrics,
}

/// How a scale request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scaled {
    /// The workload was asked for the replicas (or already had them).
    Applied,
    /// Someone else changed the replica count meanwhile, to this; their change wins.
    Superseded {
        /// The count they set.
        replicas: u32,
    },
}

/// Scales workloads and reports their readiness.
pub(crate) trait Provider: Send + Sync + 'static {
    /// Starts reporting on `spec`'s workload through `report`.
    fn attach(&self, spec: &RouteSpec, report: Reporter);

    /// Stops reporting on route `id` (the route is gone); its workload is left as it is.
    fn detach(&self, id: &str);

    /// Makes a route's workload run `request.replicas` replicas. Returns once the change is
    /// accepted, not once replicas are ready: readiness arrives later through the route's
    /// [`Reporter`]. Calls for one route never overlap; a call may be dropped before it ends
    /// (a newer decision replaced it).
    fn scale<'a>(
        &'a self,
        request: ScaleRequest<'a>,
    ) -> BoxFuture<'a, Result<Scaled, ProviderError>>;

    /// Stops everything the provider started, and forgets every route (on shutdown).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

impl std::fmt::Debug for dyn Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Provider")
    }
}

/// The routes being served, as a provider that discovers them changes them.
pub(crate) trait RouteSet: Send + Sync + 'static {
    /// Serves exactly `specs`: new routes are added (and attached to the provider), changed ones
    /// are updated in place (held requests keep waiting), missing ones are removed (requests they
    /// hold get 503 `route_removed`, and they are detached).
    fn replace(&self, specs: Vec<RouteSpec>);
}

/// A scale request the provider could not carry out.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ProviderError {
    /// What went wrong, for logs and `/routes`.
    pub(crate) message: String,
}

impl ProviderError {
    /// An error with `message`.
    pub(crate) fn new(message: impl Into<String>) -> ProviderError {
        ProviderError {
            message: message.into(),
        }
    }
}
