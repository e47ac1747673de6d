//! The Kubernetes provider: routes are Deployments labelled `activator.dev/enabled=true`, scaled
//! through their `scale` subresource only (never a write of the whole Deployment); readiness comes
//! from the EndpointSlices of the Service in front of them and from the activator's own direct
//! probes of pods the kubelet has not marked ready yet.
//!
//! - [`annotations`] reads a route from a Deployment and its Service.
//! - [`desired`] derives, as a pure function of the watched objects, the routes to serve with
//!   their replica counts and endpoints, and the problems to report.
//! - [`discovery`] watches Deployments, Services and EndpointSlices and applies what
//!   [`desired`] derives: the served routes, each route's endpoints and replica count, and
//!   Warning Events ([`events`]).
//! - [`readiness`] publishes a route's endpoints: ready ones, plus not-ready ones a direct probe
//!   found serving.
//! - This module scales: every write carries the `resourceVersion` the activator last saw, so a
//!   concurrent change by anyone else (`kubectl scale`, an HPA) wins with a 409; the activator then
//!   re-reads and never overwrites a count someone else set. Server errors, 429s and transport
//!   failures are retried with backoff within the route's cold-start timeout; every attempt is
//!   counted in `activator_scale_events_total{result}`.

mod annotations;
mod desired;
pub(crate) mod discovery;
mod events;
mod pods;
mod readiness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::Instant;

use crate::metrics::Direction;
use crate::provider::{BoxFuture, Provider, ProviderError, Reporter, ScaleRequest, Scaled};
use crate::spec::{RouteSpec, Workload};
use desired::DesiredRoute;
use readiness::RouteEndpoints;

/// First pause between retried scale attempts; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Scales Deployments, and reports each attached route's endpoints and replica counts.
pub(crate) struct KubeProvider {
    client: kube::Client,
    deployments: Store<Deployment>,
    probe_interval: Duration,
    /// The resourceVersion of the activator's last scale write per `namespace/deployment`, so
    /// that watch events older than it are not taken for someone else's change.
    last_write: Mutex<HashMap<String, u64>>,
    /// The endpoints of every attached route, by `namespace/name`.
    attached: Mutex<HashMap<String, Arc<RouteEndpoints>>>,
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
    /// A provider writing through `client`, reading Deployments from `deployments`, and probing
    /// not-ready pods every `probe_interval`.
    pub(crate) fn new(
        client: kube::Client,
        deployments: Store<Deployment>,
        probe_interval: Duration,
    ) -> KubeProvider {
        KubeProvider {
            client,
            deployments,
            probe_interval,
            last_write: Mutex::new(HashMap::new()),
            attached: Mutex::new(HashMap::new()),
        }
    }

    fn attached(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RouteEndpoints>>> {
        self.attached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports what the cluster says about route `id` now: its endpoints, and its Deployment's
    /// replica count unless that predates the activator's own last write.
    pub(crate) fn publish(&self, id: &str, route: &DesiredRoute) {
        let Some(endpoints) = self.attached().get(id).cloned() else {
            return;
        };
        endpoints.update(route.ready.clone(), route.pending.clone());
        let Workload::Kube(workload) = &route.spec.workload else {
            return;
        };
        let stale = self.is_stale(
            &route.spec.namespace,
            &workload.deployment,
            route.resource_version.as_deref(),
        );
        if !stale {
            endpoints.observe_replicas(route.replicas);
        }
    }

    /// Whether an observed `resource_version` of `namespace/deployment` predates the activator's
    /// own last write (and so says nothing new).
    fn is_stale(&self, namespace: &str, deployment: &str, resource_version: Option<&str>) -> bool {
        let Some(seen) = resource_version.and_then(|rv| rv.parse::<u64>().ok()) else {
            return false;
        };
        let writes = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
        writes
            .get(&format!("{namespace}/{deployment}"))
            .is_some_and(|written| seen < *written)
    }

    /// While route `id` has no ready replica, looks at its Deployment's pods for ones that will
    /// never become ready (see [`pods`]).
    fn watch_starting_pods(&self, id: &str, namespace: &str, deployment: &str) {
        let Some(endpoints) = self.attached().get(id).cloned() else {
            return;
        };
        let Some(object) = self
            .deployments
            .get(&ObjectRef::new(deployment).within(namespace))
        else {
            return;
        };
        let selector = object
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref())
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            });
        if let Some(selector) = selector.filter(|s| !s.is_empty()) {
            endpoints
                .watch_starting_pods(Api::namespaced(self.client.clone(), namespace), selector);
        }
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

    async fn scale_deployment(&self, request: ScaleRequest<'_>) -> Result<Scaled, ProviderError> {
        let ScaleRequest {
            spec,
            replicas,
            verify,
            metrics,
        } = request;
        let id = spec.id();
        let Workload::Kube(workload) = &spec.workload else {
            return Err(ProviderError::new(format!(
                "route {id} is not a Kubernetes Deployment"
            )));
        };
        let (namespace, name) = (spec.namespace.as_str(), workload.deployment.as_str());
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let deadline = Instant::now() + spec.settings.cold_start_timeout;
        let mut backoff = FIRST_BACKOFF;
        // After an abandoned write the cache may not show it yet: read the API instead.
        let mut observed = if verify {
            None
        } else {
            self.cached(namespace, name)
        };
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
                            tracing::warn!(route = %id, %why, "reading the scale failed; retrying");
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
            if replicas > 0 {
                self.watch_starting_pods(&id, namespace, name);
            }
            if current == replicas {
                return Ok(Scaled::Applied);
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
            metrics.scale_event(direction, result);
            match attempt {
                Attempt::Done => return Ok(Scaled::Applied),
                Attempt::Conflict => {
                    // Someone else wrote the Deployment since we looked. Re-read; if its replica
                    // count moved, that change wins and this scale request is dropped.
                    match api.get_scale(name).await {
                        Ok(scale) => {
                            let now = scale
                                .spec
                                .and_then(|s| s.replicas)
                                .map_or(0, |r| u32::try_from(r).unwrap_or(0));
                            if now != current {
                                tracing::info!(route = %id, from = current, to = now, "deployments/{name} was scaled by someone else meanwhile; keeping their change");
                                return Ok(Scaled::Superseded { replicas: now });
                            }
                            tracing::info!(route = %id, "scale write conflicted without a replica change; retrying");
                            observed = Some((now, scale.metadata.resource_version));
                        }
                        Err(error) => {
                            tracing::warn!(route = %id, %error, "re-reading the scale after a conflict failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
                Attempt::TooMany(why) if Instant::now() < deadline => {
                    tracing::warn!(route = %id, %why, "scale write throttled (429); retrying");
                    tokio::time::sleep(backoff.max(TOO_MANY_REQUESTS_BACKOFF)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Attempt::Retry(why) if Instant::now() < deadline => {
                    tracing::warn!(route = %id, %why, retry_in_ms = backoff.as_millis() as u64, "scale write failed; retrying");
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
    fn attach(&self, spec: &RouteSpec, report: Reporter) {
        let id = spec.id();
        let endpoints = RouteEndpoints::new(id.clone(), report, self.probe_interval);
        if let Some(replaced) = self.attached().insert(id, endpoints) {
            replaced.stop();
        }
    }

    fn detach(&self, id: &str) {
        if let Some(endpoints) = self.attached().remove(id) {
            endpoints.stop();
        }
    }

    fn scale<'a>(
        &'a self,
        request: ScaleRequest<'a>,
    ) -> BoxFuture<'a, Result<Scaled, ProviderError>> {
        Box::pin(self.scale_deployment(request))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        // Deployments keep running (scaling them is the scaler's decision, not shutdown's); only
        // the probes stop.
        for (_, endpoints) in self.attached().drain() {
            endpoints.stop();
        }
        Box::pin(async {})
    }
}
