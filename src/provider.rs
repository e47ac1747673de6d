//! The [`Provider`] trait: what scales a route's workload and reports its ready endpoints.
//!
//! A provider is told how many replicas a route should run ([`Provider::scale`]) and reports back
//! through the route itself: [`Route::set_ready`] with the addresses that can take requests now,
//! and [`Route::set_problem`] with what keeps a replica from becoming ready. Deciding *when* to
//! scale is not a provider's business (that is [`crate::activation`] and [`crate::scaler`]).
//!
//! Implementations: [`process`] runs local commands; [`kube`] scales Kubernetes Deployments.

pub mod kube;
pub mod probe;
pub mod process;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::route::Route;

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Scales workloads and reports their readiness.
pub trait Provider: Send + Sync + 'static {
    /// Makes `route`'s workload run `replicas` replicas. Returns once the change is accepted, not
    /// once replicas are ready: readiness arrives later through [`Route::set_ready`]. Calls for one
    /// route never overlap.
    fn scale<'a>(
        &'a self,
        route: &'a Arc<Route>,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Stops everything the provider started (on shutdown).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// A scale request the provider could not carry out.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// What went wrong, for logs and error pages.
    pub message: String,
}

impl ProviderError {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> ProviderError {
        ProviderError {
            message: message.into(),
        }
    }
}
