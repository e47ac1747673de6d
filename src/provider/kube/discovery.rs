//! Discovery: watches Deployments labelled `activator.dev/enabled=true`, Services and
//! EndpointSlices (kube-runtime watchers with backoff, into reflector stores), and keeps the served
//! routes, each route's endpoints and each route's replica count in step with them.
//!
//! Every watch event marks the state dirty; one task then derives everything afresh from the
//! stores ([`desired`](super::desired)) and applies it: the routes to the [`RouteSet`], endpoints
//! and replica counts to the [`KubeProvider`], problems as Events ([`Notices`]). Events arriving
//! meanwhile coalesce into one more pass. A watch that closes or whose history expired (410) is
//! resumed or re-listed by the watcher; the stores stay whole meanwhile, so no route flickers.

use std::collections::HashSet;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::{Metadata, NamespaceResourceScope};
use kube::api::{Api, ObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::desired::{self, Desired, Inputs, SERVICE_NAME_LABEL};
use super::events::Notices;
use super::{KubeProvider, annotations};
use crate::config::{Config, KubeSettings};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::provider::RouteSet;
use crate::spec::Settings;

/// The caches, and everything discovery changes.
pub(crate) struct Discovery {
    client: kube::Client,
    settings: KubeSettings,
    defaults: Settings,
    policy: Policy,
    provider: Arc<KubeProvider>,
    deployments: Cache<Deployment>,
    services: Cache<Service>,
    slices: Cache<EndpointSlice>,
    notices: Notices,
    /// The routes served after the last pass, to log what each pass changes.
    served: HashSet<String>,
}

/// A reflector store, and its writer until the watch that feeds it starts.
struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    writer: Option<reflector::store::Writer<K>>,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Metadata<Ty = ObjectMeta>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    fn new() -> Cache<K> {
        let (store, writer) = reflector::store();
        Cache {
            store,
            writer: Some(writer),
        }
    }

    /// Starts the watch that fills this cache, marking `dirty` on every event.
    fn watch(
        &mut self,
        api: Api<K>,
        config: watcher::Config,
        dirty: &Arc<Notify>,
        watches: &mut JoinSet<()>,
    ) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let stream = watcher(api, config).default_backoff().reflect(writer);
        let dirty = Arc::clone(dirty);
        let what = K::plural(&());
        watches.spawn(async move {
            tokio::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => dirty.notify_one(),
                    Err(error) => {
                        tracing::warn!(watch = %what, %error, "watch failed; retrying with backoff")
                    }
                }
            }
        });
    }
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("served", &self.served.len())
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Discovery for `config` through `client`, and the provider that scales what it finds (and
    /// reports its endpoints).
    pub(crate) fn new(
        client: kube::Client,
        config: &Config,
        settings: KubeSettings,
        metrics: Metrics,
    ) -> (Discovery, Arc<KubeProvider>) {
        let deployments = Cache::new();
        let provider = Arc::new(KubeProvider::new(
            client.clone(),
            deployments.store.clone(),
            settings.probe_interval,
        ));
        let discovery = Discovery {
            notices: Notices::new(client.clone(), metrics),
            client,
            settings,
            defaults: config.defaults,
            policy: config.policy.clone(),
            provider: Arc::clone(&provider),
            deployments,
            services: Cache::new(),
            slices: Cache::new(),
            served: HashSet::new(),
        };
        (discovery, provider)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.settings.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// Watches until `shutdown` completes, serving what it finds through `routes`; calls
    /// `synced` once every cache has synced and the routes they hold are served.
    pub(crate) async fn run(
        mut self,
        routes: Arc<dyn RouteSet>,
        synced: impl FnOnce(),
        shutdown: impl Future<Output = ()>,
    ) {
        let dirty = Arc::new(Notify::new());
        let mut watches = JoinSet::new();
        let enabled = format!("{}=true", annotations::ENABLED_LABEL);
        let (deployments, services, slices) = (self.api(), self.api(), self.api());
        self.deployments.watch(
            deployments,
            watcher::Config::default().labels(&enabled),
            &dirty,
            &mut watches,
        );
        self.services
            .watch(services, watcher::Config::default(), &dirty, &mut watches);
        self.slices.watch(
            slices,
            watcher::Config::default().labels(SERVICE_NAME_LABEL),
            &dirty,
            &mut watches,
        );
        tokio::pin!(shutdown);
        let caches = async {
            let _ = tokio::join!(
                self.deployments.store.wait_until_ready(),
                self.services.store.wait_until_ready(),
                self.slices.store.wait_until_ready()
            );
        };
        tokio::select! {
            _ = caches => {}
            () = &mut shutdown => return,
        }
        self.reconcile(&*routes);
        synced();
        tracing::info!(
            routes = self.served.len(),
            "Kubernetes caches synced; serving discovered routes"
        );
        loop {
            tokio::select! {
                () = dirty.notified() => self.reconcile(&*routes),
                () = &mut shutdown => break,
            }
        }
        watches.abort_all();
    }

    /// Derives routes, replica counts and endpoints from the caches and applies them.
    fn reconcile(&mut self, routes: &dyn RouteSet) {
        let deployments = self.deployments.store.state();
        let live: HashSet<String> = deployments.iter().filter_map(|d| d.uid()).collect();
        self.notices.retain_live(&live);
        let services = |namespace: &str, name: &str| {
            self.services
                .store
                .get(&ObjectRef::new(name).within(namespace))
        };
        let desired = desired::desired(Inputs {
            deployments,
            services: &services,
            slices: self.slices.store.state(),
            defaults: &self.defaults,
            policy: &self.policy,
        });
        self.apply(desired, routes);
    }

    fn apply(&mut self, desired: Desired, served: &dyn RouteSet) {
        let Desired { routes, problems } = desired;
        // Routes whose Deployment is still there but now refused, to say why they went.
        let refused: HashSet<String> = problems
            .iter()
            .filter(|p| p.annotation.is_some())
            .filter_map(|p| {
                let name = annotations::service_name(&p.deployment).ok()?;
                Some(format!(
                    "{}/{name}",
                    p.deployment.namespace().unwrap_or_default()
                ))
            })
            .collect();
        for id in self.served.iter().filter(|id| !routes.contains_key(*id)) {
            if refused.contains(id) {
                tracing::warn!(route = %id, "route removed: its Deployment's annotations are invalid");
            } else {
                tracing::info!(route = %id, "route removed: its Deployment is gone or no longer enabled");
            }
        }
        for (id, route) in &routes {
            if !self.served.contains(id) {
                tracing::info!(route = %id, hosts = ?route.spec.hosts, "route added");
            }
        }
        for problem in problems {
            self.notices.tell(problem);
        }
        self.served = routes.keys().cloned().collect();
        served.replace(routes.values().map(|r| r.spec.clone()).collect());
        for (id, route) in &routes {
            self.provider.publish(id, route);
        }
    }
}
