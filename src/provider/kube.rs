//! The Kubernetes provider: routes are Deployments labelled `activator.dev/enabled=true`, scaled
//! through their `scale` subresource only (never a write of the whole Deployment); readiness comes
//! from the EndpointSlices of the Service in front of them and from the activator's own direct
//! probes of pods the kubelet has not marked ready yet.
//!
//! - [`annotations`] reads a route from a Deployment and its Service.
//! - [`discovery`] watches Deployments, Services and EndpointSlices, keeps the route table and
//!   each route's endpoints current, and reports invalid annotations as Events.
//! - [`readiness`] publishes a route's endpoints: ready ones, plus not-ready ones a direct probe
//!   found serving.
//! - This module scales: every write carries the `resourceVersion` the activator last saw, so a
//!   concurrent change by anyone else (`kubectl scale`, an HPA) wins with a 409; the activator then
//!   re-reads and never overwrites a count someone else set. Server errors, 429s and transport
//!   failures are retried with backoff within the route's cold-start timeout; every attempt is
//!   counted in `activator_scale_events_total{result}`.

pub mod annotations;
pub mod discovery;
mod readiness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::Instant;

use crate::config::Workload;
use crate::metrics::Direction;
use crate::provider::{BoxFuture, Provider, ProviderError};
use crate::route::Route;

/// First pause between retried scale attempts; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Scales Deployments.
pub struct KubeProvider {
    client: kube::Client,
    deployments: Store<Deployment>,
    /// The resourceVersion of the activator's last scale write per `namespace/deployment`, so
    /// that watch events older than it are not taken for someone else's change.
    last_write: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for KubeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeProvider").finish_non_exhaustive()
    }
}

enum Attempt {
    Done,
    Conflict,
    TooMany(String),
    Retry(String),
    Fatal(String),
}

impl KubeProvider {
    /// A provider writing through `client` and reading Deployments from `deployments`.
    pub fn new(client: kube::Client, deployments: Store<Deployment>) -> KubeProvider {
        KubeProvider {
            client,
            deployments,
            last_write: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an observed `resource_version` of `namespace/deployment` predates the activator's
    /// own last write (and so says nothing new).
    pub fn is_stale(
        &self,
        namespace: &str,
        deployment: &str,
        resource_version: Option<&str>,
    ) -> bool {
        let Some(seen) = resource_version.and_then(|rv| rv.parse::<u64>().ok()) else {
            return false;
        };
        let writes = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
        writes
            .get(&format!("{namespace}/{deployment}"))
            .is_some_and(|written| seen < *written)
    }

    /// Replicas and resourceVersion of a Deployment as the watch last saw it.
    fn cached(&self, namespace: &str, deployment: &str) -> Option<(u32, Option<String>)> {
        let object = self
            .deployments
            .get(&ObjectRef::new(deployment).within(namespace))?;
        let replicas = object.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        Some((
            u32::try_from(replicas).unwrap_or(0),
            object.metadata.resource_version.clone(),
        ))
    }

    async fn scale_deployment(
        &self,
        route: &Arc<Route>,
        replicas: u32,
    ) -> Result<(), ProviderError> {
        let spec = route.spec();
        let Workload::Kube(workload) = &spec.workload else {
            return Err(ProviderError::new(format!(
                "route {} is not a Kubernetes Deployment",
                route.id()
            )));
        };
        let (namespace, name) = (spec.namespace.as_str(), workload.deployment.as_str());
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let deadline = Instant::now() + spec.cold_start_timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut observed = self.cached(namespace, name);
        loop {
            let (current, resource_version) = match observed.take() {
                Some(seen) => seen,
                None => match api.get_scale(name).await {
                    Ok(scale) => (
                        scale
                            .spec
                            .and_then(|s| s.replicas)
                            .map_or(0, |r| u32::try_from(r).unwrap_or(0)),
                        scale.metadata.resource_version,
                    ),
                    Err(error) => match classify(&error) {
                        Attempt::Retry(why) if Instant::now() < deadline => {
                            tracing::warn!(route = %route.id(), %why, "reading the scale failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            continue;
                        }
                        _ => {
                            return Err(ProviderError::new(format!(
                                "reading deployments/{name}/scale: {error}"
                            )));
                        }
                    },
                },
            };
            if current == replicas {
                return Ok(());
            }
            let direction = if replicas > current {
                Direction::Up
            } else {
                Direction::Down
            };
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": resource_version },
                "spec": { "replicas": replicas },
            });
            let attempt = match api
                .patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(scale) => {
                    if let Some(rv) = scale
                        .metadata
                        .resource_version
                        .as_deref()
                        .and_then(|rv| rv.parse().ok())
                    {
                        let mut writes = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
                        writes.insert(format!("{namespace}/{name}"), rv);
                    }
                    Attempt::Done
                }
                Err(error) => classify(&error),
            };
            let result = match &attempt {
                Attempt::Done => "success",
                Attempt::Conflict => "conflict",
                _ => "error",
            };
            route.metrics().scale_event(direction, result);
            match attempt {
                Attempt::Done => return Ok(()),
                Attempt::Conflict => {
                    // Someone else wrote the Deployment since we looked. Re-read; if its replica
                    // count moved, that change wins and this scale request is dropped.
                    let seen = api.get_scale(name).await.ok().map(|scale| {
                        scale
                            .spec
                            .and_then(|s| s.replicas)
                            .map_or(0, |r| u32::try_from(r).unwrap_or(0))
                    });
                    if let Some(now) = seen.filter(|now| *now != current) {
                        // Their count wins: adopt it, so that the scaler does not write over it.
                        route.adopt_replicas(now);
                    }
                    if seen.is_some_and(|now| now != current) || route.desired() != replicas {
                        return Err(ProviderError::new(format!(
                            "deployments/{name} was scaled by someone else meanwhile ({current} → {}); keeping their change",
                            seen.map_or_else(|| "?".to_owned(), |n| n.to_string())
                        )));
                    }
                    tracing::info!(route = %route.id(), "scale write conflicted without a replica change; retrying");
                }
                Attempt::TooMany(why) if Instant::now() < deadline => {
                    tracing::warn!(route = %route.id(), %why, "scale write throttled (429); retrying");
                    tokio::time::sleep(backoff.max(TOO_MANY_REQUESTS_BACKOFF)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Attempt::Retry(why) if Instant::now() < deadline => {
                    tracing::warn!(route = %route.id(), %why, retry_in_ms = backoff.as_millis() as u64, "scale write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Attempt::TooMany(why) => {
                    return Err(ProviderError::new(format!(
                        "scaling deployments/{name} to {replicas}: 429 {why}"
                    )));
                }
                Attempt::Retry(why) | Attempt::Fatal(why) => {
                    return Err(ProviderError::new(format!(
                        "scaling deployments/{name} to {replicas}: {why}"
                    )));
                }
            }
        }
    }
}

/// A client for the activator: kube-rs's own retry layer is off, because the provider retries
/// scale writes itself and counts every attempt (kube-rs would retry 429/503/504 unseen). Watches
/// have their own backoff.
pub fn client(mut config: kube::Config) -> Result<kube::Client, kube::Error> {
    config.default_retry = false;
    kube::Client::try_from(config)
}

/// A 429 carries `Retry-After`, which `kube::Error` does not expose; wait at least this long.
const TOO_MANY_REQUESTS_BACKOFF: Duration = Duration::from_secs(1);

fn classify(error: &kube::Error) -> Attempt {
    match error {
        kube::Error::Api(status) if status.code == 409 => Attempt::Conflict,
        kube::Error::Api(status) if status.code == 429 => Attempt::TooMany(status.message.clone()),
        kube::Error::Api(status) if status.code >= 500 => {
            Attempt::Retry(format!("{} {}", status.code, status.message))
        }
        kube::Error::Api(status) => Attempt::Fatal(format!("{} {}", status.code, status.message)),
        other => Attempt::Retry(other.to_string()),
    }
}

impl Provider for KubeProvider {
    fn scale<'a>(
        &'a self,
        route: &'a Arc<Route>,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.scale_deployment(route, replicas))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Deployments keep running; scaling them is the scaler's decision, not shutdown's.
        Box::pin(async {})
    }
}
