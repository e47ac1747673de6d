//! Discovery: watches Deployments labelled `activator.dev/enabled=true`, Services and
//! EndpointSlices (kube-runtime watchers with backoff, into reflector stores) and keeps the route
//! table, each route's replica count and each route's endpoints in step with them.
//!
//! Every watch event marks the state dirty; one task then recomputes everything from the stores
//! (events arriving meanwhile coalesce into one more pass). A watch that closes or whose history
//! expired (410) is resumed or re-listed by the watcher; the stores stay whole meanwhile, so no
//! route flickers.
//!
//! Rules: the route is named after the Service; an invalid annotation keeps that route out (other
//! routes are untouched) and is reported once as a Warning Event `InvalidAnnotation`, a log line
//! and `activator_config_errors_total`. When two Deployments claim one host, the older keeps it and
//! the other gets a Warning Event `HostConflict`. A route whose Deployment is deleted or unlabelled
//! goes away; requests it held get 503 `route_removed`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;

use super::KubeProvider;
use super::annotations::{self, AnnotationError};
use super::readiness::{Pending, RouteEndpoints};
use crate::admin::Health;
use crate::config::{Config, KubeSettings, RouteDefaults, RouteSpec, Workload};
use crate::metrics::Metrics;
use crate::provider::Provider;
use crate::route::{Closed, Route};
use crate::routing::RouteTable;

/// The caches and everything discovery updates.
pub struct Discovery {
    client: kube::Client,
    settings: KubeSettings,
    defaults: RouteDefaults,
    domain: String,
    table: Arc<RouteTable>,
    metrics: Metrics,
    provider: Arc<KubeProvider>,
    deployments: (
        Store<Deployment>,
        Option<reflector::store::Writer<Deployment>>,
    ),
    services: (Store<Service>, Option<reflector::store::Writer<Service>>),
    slices: (
        Store<EndpointSlice>,
        Option<reflector::store::Writer<EndpointSlice>>,
    ),
    routes: HashMap<String, Arc<RouteEndpoints>>,
    reported: HashSet<String>,
    recorder: Recorder,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Discovery for `config` through `client`, and the provider that scales what it finds.
    pub fn new(
        client: kube::Client,
        config: &Config,
        table: Arc<RouteTable>,
        metrics: Metrics,
    ) -> (Discovery, Arc<KubeProvider>) {
        let (deployment_store, deployment_writer) = reflector::store();
        let (service_store, service_writer) = reflector::store();
        let (slice_store, slice_writer) = reflector::store();
        let provider = Arc::new(KubeProvider::new(client.clone(), deployment_store.clone()));
        let reporter = Reporter {
            controller: "activator".to_owned(),
            instance: std::env::var("POD_NAME")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok()),
        };
        let discovery = Discovery {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings: config.kube.clone().unwrap_or(KubeSettings {
                namespace: None,
                probe_interval: crate::config::defaults::PROBE_INTERVAL,
            }),
            defaults: config.defaults,
            domain: config.domain.clone(),
            table,
            metrics,
            provider: Arc::clone(&provider),
            deployments: (deployment_store, Some(deployment_writer)),
            services: (service_store, Some(service_writer)),
            slices: (slice_store, Some(slice_writer)),
            routes: HashMap::new(),
            reported: HashSet::new(),
        };
        (discovery, provider)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.settings.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// Watches until `shutdown` completes; marks `health` loaded once every cache has synced.
    pub async fn run(
        mut self,
        health: Arc<Health>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let dirty = Arc::new(Notify::new());
        let enabled =
            watcher::Config::default().labels(&format!("{}=true", annotations::ENABLED_LABEL));
        let sliced = watcher::Config::default().labels("kubernetes.io/service-name");
        let mut watches = tokio::task::JoinSet::new();
        let (deployments, services, slices) = (
            self.api::<Deployment>(),
            self.api::<Service>(),
            self.api::<EndpointSlice>(),
        );
        if let Some(writer) = self.deployments.1.take() {
            watches.spawn(drive(
                watcher(deployments, enabled)
                    .default_backoff()
                    .reflect(writer),
                Arc::clone(&dirty),
                "deployments",
            ));
        }
        if let Some(writer) = self.services.1.take() {
            watches.spawn(drive(
                watcher(services, watcher::Config::default())
                    .default_backoff()
                    .reflect(writer),
                Arc::clone(&dirty),
                "services",
            ));
        }
        if let Some(writer) = self.slices.1.take() {
            watches.spawn(drive(
                watcher(slices, sliced).default_backoff().reflect(writer),
                Arc::clone(&dirty),
                "endpointslices",
            ));
        }
        tokio::pin!(shutdown);
        let synced = async {
            let _ = tokio::join!(
                self.deployments.0.wait_until_ready(),
                self.services.0.wait_until_ready(),
                self.slices.0.wait_until_ready()
            );
        };
        tokio::select! {
            _ = synced => {}
            () = &mut shutdown => return,
        }
        self.reconcile();
        health.set_loaded();
        tracing::info!(
            routes = self.routes.len(),
            "Kubernetes caches synced; serving discovered routes"
        );
        loop {
            tokio::select! {
                () = dirty.notified() => self.reconcile(),
                () = &mut shutdown => break,
            }
        }
        watches.abort_all();
        for endpoints in self.routes.values() {
            endpoints.stop();
        }
    }

    /// Recomputes routes, replica counts and endpoints from the caches.
    fn reconcile(&mut self) {
        let mut deployments = self.deployments.0.state();
        // Forget problems reported for Deployments that are gone, so the set does not grow forever.
        let live: HashSet<String> = deployments.iter().filter_map(|d| d.uid()).collect();
        self.reported
            .retain(|key| key.split('/').next().is_some_and(|uid| live.contains(uid)));
        // Oldest first: on a conflict, the older Deployment keeps the host.
        deployments.sort_by(|a, b| {
            (
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                a.name_any(),
            )
                .cmp(&(
                    b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    b.name_any(),
                ))
        });
        let mut wanted: BTreeMap<String, (RouteSpec, Arc<Deployment>)> = BTreeMap::new();
        let mut claimed: HashMap<String, String> = HashMap::new();
        let mut problems: Vec<(
            Arc<Deployment>,
            &'static str,
            String,
            Option<AnnotationError>,
        )> = Vec::new();
        for deployment in deployments {
            if deployment.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let namespace = deployment.namespace().unwrap_or_default();
            let service_name = match annotations::service_name(&deployment) {
                Ok(name) => name,
                Err(error) => {
                    problems.push((
                        Arc::clone(&deployment),
                        "InvalidAnnotation",
                        error.to_string(),
                        Some(error),
                    ));
                    continue;
                }
            };
            let Some(service) = self
                .services
                .0
                .get(&ObjectRef::new(&service_name).within(&namespace))
            else {
                tracing::debug!(deployment = %deployment.name_any(), service = %service_name, "waiting for the Service");
                continue;
            };
            let mut spec = match annotations::route_spec(
                &deployment,
                &service,
                &self.defaults,
                &self.domain,
            ) {
                Ok(spec) => spec,
                Err(error) => {
                    problems.push((
                        Arc::clone(&deployment),
                        "InvalidAnnotation",
                        error.to_string(),
                        Some(error),
                    ));
                    continue;
                }
            };
            let id = spec.id();
            if let Some((_, owner)) = wanted.get(&id) {
                let note = format!(
                    "route {id} (Service {service_name}) is already served for Deployment {}; this Deployment is not routed",
                    owner.name_any()
                );
                problems.push((Arc::clone(&deployment), "HostConflict", note, None));
                continue;
            }
            let mut lost = Vec::new();
            spec.hosts.retain(|host| match claimed.get(host) {
                Some(owner) if *owner != id => {
                    lost.push(format!("{host} (kept by route {owner})"));
                    false
                }
                _ => true,
            });
            if !lost.is_empty() {
                let note = format!(
                    "hosts claimed by older routes are not served for route {id}: {}",
                    lost.join(", ")
                );
                problems.push((Arc::clone(&deployment), "HostConflict", note, None));
            }
            if spec.hosts.is_empty() {
                continue;
            }
            for host in &spec.hosts {
                claimed.insert(host.clone(), id.clone());
            }
            wanted.insert(id, (spec, deployment));
        }
        for (deployment, reason, note, annotation) in problems {
            self.report(&deployment, reason, note, annotation.as_ref());
        }
        self.apply(wanted);
    }

    fn apply(&mut self, wanted: BTreeMap<String, (RouteSpec, Arc<Deployment>)>) {
        // Slices by (namespace, service), built once per pass rather than scanned per route.
        let mut slices: HashMap<(String, String), Vec<Arc<EndpointSlice>>> = HashMap::new();
        for slice in self.slices.0.state() {
            if let Some(service) = slice.labels().get("kubernetes.io/service-name") {
                let key = (slice.namespace().unwrap_or_default(), service.clone());
                slices.entry(key).or_default().push(slice);
            }
        }
        let mut changed = false;
        for (id, endpoints) in self.routes.iter() {
            if !wanted.contains_key(id) {
                tracing::info!(route = %id, "route removed: its Deployment is gone or no longer enabled");
                endpoints.stop();
                endpoints.route().close(Closed::Removed);
                endpoints.route().metrics().remove();
                changed = true;
            }
        }
        self.routes.retain(|id, _| wanted.contains_key(id));
        for (id, (spec, deployment)) in wanted {
            let endpoints = match self.routes.get(&id) {
                Some(existing) => {
                    if **existing.route().spec() != spec {
                        changed |= existing.route().spec().hosts != spec.hosts;
                        tracing::info!(route = %id, "route configuration changed");
                        existing.route().set_spec(spec.clone());
                    }
                    Arc::clone(existing)
                }
                None => {
                    tracing::info!(route = %id, deployment = %deployment.name_any(), hosts = ?spec.hosts, "route added");
                    let provider: Arc<dyn Provider> = self.provider.clone();
                    let route = Route::new(spec.clone(), provider, &self.metrics);
                    let endpoints = RouteEndpoints::new(route, self.settings.probe_interval);
                    self.routes.insert(id.clone(), Arc::clone(&endpoints));
                    changed = true;
                    endpoints
                }
            };
            self.observe_replicas(&endpoints, &deployment);
            let key = (spec.namespace.clone(), service_of(&spec));
            publish_endpoints(
                &endpoints,
                &spec,
                slices.get(&key).map_or(&[], Vec::as_slice),
            );
        }
        if changed {
            let routes = self
                .routes
                .values()
                .map(|e| Arc::clone(e.route()))
                .collect();
            self.table.replace(routes);
        }
    }

    fn observe_replicas(&self, endpoints: &RouteEndpoints, deployment: &Deployment) {
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let namespace = deployment.namespace().unwrap_or_default();
        let stale = self.provider.is_stale(
            &namespace,
            &deployment.name_any(),
            deployment.metadata.resource_version.as_deref(),
        );
        if !stale {
            endpoints
                .route()
                .observe_replicas(u32::try_from(replicas).unwrap_or(0));
        }
    }

    /// Logs, counts and posts a Warning Event for a problem, once per Deployment version.
    fn report(
        &mut self,
        deployment: &Deployment,
        reason: &'static str,
        note: String,
        annotation: Option<&AnnotationError>,
    ) {
        let key = format!(
            "{}/{}/{reason}/{note}",
            deployment.uid().unwrap_or_default(),
            deployment.metadata.generation.unwrap_or(0)
        );
        if !self.reported.insert(key) {
            return;
        }
        let namespace = deployment.namespace().unwrap_or_default();
        let name = deployment.name_any();
        tracing::warn!(deployment = %format!("{namespace}/{name}"), reason, "{note}");
        if let Some(error) = annotation {
            let route = annotations::service_name(deployment).unwrap_or_else(|_| name.clone());
            self.metrics.config_error(&route, &namespace, &error.key);
        }
        let recorder = self.recorder.clone();
        let reference: ObjectReference = deployment.object_ref(&());
        tokio::spawn(async move {
            let event = Event {
                type_: EventType::Warning,
                reason: reason.to_owned(),
                note: Some(note),
                action: "Route".to_owned(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &reference).await {
                tracing::warn!(%error, "posting a Kubernetes Event failed");
            }
        });
    }
}

/// The Service a Kubernetes route's pods sit behind.
fn service_of(spec: &RouteSpec) -> String {
    match &spec.workload {
        Workload::Kube(workload) => workload.service.clone(),
        Workload::Process(_) => String::new(),
    }
}

/// Publishes a route's endpoints from its Service's EndpointSlices: ready ones take requests,
/// terminating ones none, and the rest are probed directly.
fn publish_endpoints(
    endpoints: &Arc<RouteEndpoints>,
    spec: &RouteSpec,
    slices: &[Arc<EndpointSlice>],
) {
    let Workload::Kube(workload) = &spec.workload else {
        return;
    };
    let mut ready = Vec::new();
    let mut pending = Vec::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .as_ref()
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p.name.clone().unwrap_or_default() == workload.port_name)
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            if conditions.and_then(|c| c.terminating).unwrap_or(false) {
                continue;
            }
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let serve = SocketAddr::new(ip, port);
            // A nil `ready` means unknown, which consumers should treat as ready.
            if conditions.and_then(|c| c.ready).unwrap_or(true) {
                ready.push(serve);
            } else {
                let probe = SocketAddr::new(ip, workload.probe.port.unwrap_or(port));
                pending.push(Pending {
                    serve,
                    probe,
                    path: workload.probe.path.clone(),
                });
            }
        }
    }
    ready.sort();
    endpoints.update(ready, pending);
}

/// Drives one reflector's watch stream, marking the state dirty on every event.
async fn drive<S, K>(stream: S, dirty: Arc<Notify>, what: &'static str)
where
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    tokio::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => dirty.notify_one(),
            Err(error) => {
                tracing::warn!(watch = what, %error, "watch failed; retrying with backoff")
            }
        }
    }
}
