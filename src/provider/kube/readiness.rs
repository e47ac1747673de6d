//! A route's endpoints in Kubernetes mode: the EndpointSlice endpoints marked ready, plus those
//! not marked ready yet (and not terminating) that the activator's own probe finds serving.
//!
//! The kubelet marks a pod Ready only on its probe period (10s by default); probing a new pod every
//! 25ms lets held requests go the moment it can serve, as Knative's activator does. Each probe
//! task stops at its first success, or when its endpoint turns ready, terminating or disappears.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use crate::provider::Reporter;
use crate::provider::probe::probe;

/// An endpoint the kubelet has not marked ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Where requests go.
    pub(crate) serve: SocketAddr,
    /// Where the probe goes.
    pub(crate) probe: SocketAddr,
    /// HTTP path of the probe; none = TCP connect.
    pub(crate) path: Option<String>,
}

/// The published endpoints of one route.
pub(crate) struct RouteEndpoints {
    id: String,
    report: Reporter,
    interval: Duration,
    // Held only to update the sets and publish (no await inside).
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    ready: Vec<SocketAddr>,
    probes: HashMap<SocketAddr, JoinHandle<()>>,
    probed: HashSet<SocketAddr>,
    published: Vec<SocketAddr>,
    /// Looks at the pods' statuses while none is ready (see [`super::pods`]).
    pods: Option<JoinHandle<()>>,
}

impl RouteEndpoints {
    pub(crate) fn new(id: String, report: Reporter, interval: Duration) -> Arc<RouteEndpoints> {
        Arc::new(RouteEndpoints {
            id,
            report,
            interval,
            state: Mutex::new(State::default()),
        })
    }

    /// Looks at the pods `selector` picks through `api` until one is ready, so pods that crash or
    /// cannot pull their image fail held requests at once. Does nothing while a look is under way
    /// or a replica is ready.
    pub(crate) fn watch_starting_pods(self: &Arc<Self>, api: Api<Pod>, selector: String) {
        let mut state = self.state();
        let running = state.pods.as_ref().is_some_and(|task| !task.is_finished());
        if running || !state.published.is_empty() {
            return;
        }
        let endpoints = Arc::downgrade(self);
        let ready = move || {
            endpoints
                .upgrade()
                .is_none_or(|e| !e.state().published.is_empty())
        };
        state.pods = Some(tokio::spawn(super::pods::watch_starting(
            api,
            selector,
            Arc::clone(&self.report),
            ready,
        )));
    }

    /// Reports the replica count the Deployment has now.
    pub(crate) fn observe_replicas(&self, replicas: u32) {
        self.report.replicas(replicas);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies what the EndpointSlices say now.
    pub(crate) fn update(self: &Arc<Self>, ready: Vec<SocketAddr>, pending: Vec<Pending>) {
        let mut state = self.state();
        state.ready = ready;
        let pending_addrs: HashSet<SocketAddr> = pending.iter().map(|p| p.serve).collect();
        state.probes.retain(|addr, task| {
            let keep = pending_addrs.contains(addr);
            if !keep {
                task.abort();
            }
            keep
        });
        state.probed.retain(|addr| pending_addrs.contains(addr));
        for endpoint in pending {
            if state.probed.contains(&endpoint.serve) || state.probes.contains_key(&endpoint.serve)
            {
                continue;
            }
            let task = tokio::spawn(Arc::clone(self).probe_until_serving(endpoint.clone()));
            state.probes.insert(endpoint.serve, task);
        }
        self.publish(&mut state);
    }

    fn publish(&self, state: &mut State) {
        let mut all = state.ready.clone();
        all.extend(state.probed.iter().filter(|a| !state.ready.contains(a)));
        all.sort();
        if all != state.published {
            state.published = all.clone();
            self.report.ready(&all);
        }
    }

    async fn probe_until_serving(self: Arc<Self>, endpoint: Pending) {
        let started = tokio::time::Instant::now();
        loop {
            match probe(endpoint.probe, endpoint.path.as_deref()).await {
                Ok(()) => {
                    tracing::debug!(route = %self.id, addr = %endpoint.serve, after_ms = started.elapsed().as_millis() as u64, "direct probe passed before the kubelet's");
                    let mut state = self.state();
                    state.probes.remove(&endpoint.serve);
                    state.probed.insert(endpoint.serve);
                    self.publish(&mut state);
                    return;
                }
                Err(problem) => self.report.waiting(format!(
                    "pod {} not ready after {}ms: {problem}",
                    endpoint.serve,
                    started.elapsed().as_millis()
                )),
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    /// Stops every probe (the route is gone).
    pub(crate) fn stop(&self) {
        let mut state = self.state();
        for (_, task) in state.probes.drain() {
            task.abort();
        }
        if let Some(task) = state.pods.take() {
            task.abort();
        }
    }
}
