//! The process provider: each route's replicas are local processes started from its `command`,
//! with `{port}` (and `PORT` in the environment) set to a free port on 127.0.0.1.
//!
//! Each replica has a supervisor task ([`replica`]); this module keeps the supervisors of every
//! route, starts and stops them on [`Provider::scale`], and publishes the ready ones to the route.
//! Stopping a replica first takes it out of the route's endpoints, lets its in-flight requests
//! finish (up to the grace period), then sends SIGTERM and, after the grace period, SIGKILL.

mod replica;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Workload;
use crate::metrics::Direction;
use crate::provider::{BoxFuture, Provider, ProviderError};
use crate::route::Route;
use replica::Replica;

/// Runs replicas as local processes.
#[derive(Debug, Default)]
pub struct ProcessProvider {
    // Never held across an await: scale() only spawns and signals.
    sets: Mutex<HashMap<String, ReplicaSet>>,
}

#[derive(Debug)]
struct ReplicaSet {
    ready: Arc<ReadySet>,
    running: Vec<Running>,
    stopping: Vec<JoinHandle<()>>,
    next_id: u64,
}

#[derive(Debug)]
struct Running {
    id: u64,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    fn stop(self) -> JoinHandle<()> {
        let _ = self.stop.send(true);
        self.task
    }
}

/// The ready replicas of one route, published to the route on every change.
#[derive(Debug)]
pub(crate) struct ReadySet {
    route: Arc<Route>,
    // Held only to update the map and publish, so publications happen in update order.
    addrs: Mutex<BTreeMap<u64, SocketAddr>>,
}

impl ReadySet {
    fn update(&self, change: impl FnOnce(&mut BTreeMap<u64, SocketAddr>)) {
        let mut addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut addrs);
        let ready: Vec<SocketAddr> = addrs.values().copied().collect();
        self.route.set_ready(&ready);
    }

    pub(crate) fn insert(&self, id: u64, addr: SocketAddr) {
        self.update(|addrs| {
            addrs.insert(id, addr);
        });
    }

    pub(crate) fn remove(&self, id: u64) {
        self.update(|addrs| {
            addrs.remove(&id);
        });
    }

    fn contains(&self, id: u64) -> bool {
        self.addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
    }

    /// Takes replica `id` at `addr` out of the route, then waits (at most `grace`) for requests
    /// already leased to it to finish. Polls every 10ms: this is the stop path, not the request path.
    pub(crate) async fn retire(&self, id: u64, addr: SocketAddr, grace: Duration) {
        let endpoint = self.route.backends().find(addr);
        self.remove(id);
        let deadline = tokio::time::Instant::now() + grace;
        while let Some(endpoint) = &endpoint {
            if endpoint.in_flight() == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn route_id(&self) -> &str {
        self.route.id()
    }

    pub(crate) fn route_problem(&self, problem: String) {
        self.route.set_problem(problem);
    }

    pub(crate) fn route_waiting(&self, note: String) {
        self.route.set_waiting_on(note);
    }
}

impl ProcessProvider {
    /// A provider with no replicas.
    pub fn new() -> ProcessProvider {
        ProcessProvider::default()
    }

    fn running(&self, route: &Route) -> u32 {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.get(route.id())
            .map_or(0, |set| set.running.len() as u32)
    }

    fn scale_now(&self, route: &Arc<Route>, replicas: u32) -> Result<(), ProviderError> {
        let route_spec = route.spec();
        let Workload::Process(spec) = &route_spec.workload else {
            return Err(ProviderError::new(format!(
                "route {} is not run by local processes",
                route.id()
            )));
        };
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        let set = sets
            .entry(route.id().to_owned())
            .or_insert_with(|| ReplicaSet {
                ready: Arc::new(ReadySet {
                    route: Arc::clone(route),
                    addrs: Mutex::new(BTreeMap::new()),
                }),
                running: Vec::new(),
                stopping: Vec::new(),
                next_id: 1,
            });
        set.stopping.retain(|task| !task.is_finished());
        let wanted = replicas as usize;
        while set.running.len() < wanted {
            let id = set.next_id;
            set.next_id += 1;
            let (stop, stop_rx) = watch::channel(false);
            let replica = Replica {
                id,
                spec: spec.clone(),
                ready: Arc::clone(&set.ready),
                stop: stop_rx,
            };
            let task = tokio::spawn(replica.supervise());
            set.running.push(Running { id, stop, task });
        }
        while set.running.len() > wanted {
            // Stop replicas that are not serving yet first, then the newest.
            let index = set
                .running
                .iter()
                .rposition(|r| !set.ready.contains(r.id))
                .unwrap_or(set.running.len() - 1);
            let running = set.running.remove(index);
            set.stopping.push(running.stop());
        }
        Ok(())
    }
}

impl Provider for ProcessProvider {
    fn scale<'a>(
        &'a self,
        route: &'a Arc<Route>,
        replicas: u32,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let before = self.running(route);
            let result = self.scale_now(route, replicas);
            let direction = if replicas > before {
                Direction::Up
            } else {
                Direction::Down
            };
            route
                .metrics()
                .scale_event(direction, if result.is_ok() { "success" } else { "error" });
            result
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        let sets: Vec<ReplicaSet> = {
            let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
            sets.drain().map(|(_, set)| set).collect()
        };
        Box::pin(async move {
            let tasks: Vec<JoinHandle<()>> = sets
                .into_iter()
                .flat_map(|set| {
                    set.running
                        .into_iter()
                        .map(Running::stop)
                        .chain(set.stopping)
                })
                .collect();
            for task in tasks {
                let _ = task.await;
            }
        })
    }
}
