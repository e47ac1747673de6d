//! The process provider: each route's replicas are local processes started from its `command`,
//! with `{port}` (and `PORT` in the environment) set to a free port on 127.0.0.1.
//!
//! Each replica has a supervisor task ([`replica`]); this module keeps the supervisors of every
//! route, starts and stops them on [`Provider::scale`], and reports the ready ones through the
//! route's [`Reporter`].
//! Stopping a replica first takes it out of the route's endpoints, lets its in-flight requests
//! finish (up to the grace period), then sends SIGTERM and, after the grace period, SIGKILL.

mod replica;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Direction;
use crate::provider::{BoxFuture, Provider, ProviderError, Reporter, ScaleRequest, Scaled};
use crate::spec::{RouteSpec, Workload};
use replica::Replica;

/// Runs replicas as local processes.
#[derive(Debug, Default)]
pub(crate) struct ProcessProvider {
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

/// The ready replicas of one route, reported on every change.
pub(crate) struct ReadySet {
    id: String,
    report: Reporter,
    // Held only to update the map and publish, so publications happen in update order.
    addrs: Mutex<BTreeMap<u64, SocketAddr>>,
}

impl ReadySet {
    fn update(&self, change: impl FnOnce(&mut BTreeMap<u64, SocketAddr>)) {
        let mut addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut addrs);
        let ready: Vec<SocketAddr> = addrs.values().copied().collect();
        self.report.ready(&ready);
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
        self.remove(id);
        let deadline = tokio::time::Instant::now() + grace;
        while self.report.in_flight(addr) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn route_id(&self) -> &str {
        &self.id
    }

    pub(crate) fn route_problem(&self, problem: String) {
        self.report.problem(problem);
    }

    pub(crate) fn route_waiting(&self, note: String) {
        self.report.waiting(note);
    }

    pub(crate) fn route_failing(&self, problem: String, retry_in: Duration) {
        self.report.failing(problem, retry_in);
    }
}

impl std::fmt::Debug for ReadySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadySet")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ProcessProvider {
    /// A provider with no replicas.
    pub(crate) fn new() -> ProcessProvider {
        ProcessProvider::default()
    }

    fn sets(&self) -> std::sync::MutexGuard<'_, HashMap<String, ReplicaSet>> {
        self.sets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts or stops replicas of `spec`'s route until `replicas` run; returns how many ran.
    fn scale_now(&self, spec: &RouteSpec, replicas: u32) -> Result<u32, ProviderError> {
        let id = spec.id();
        let Workload::Process(process) = &spec.workload else {
            return Err(ProviderError::new(format!(
                "route {id} is not run by local processes"
            )));
        };
        let mut sets = self.sets();
        let Some(set) = sets.get_mut(&id) else {
            return Err(ProviderError::new(format!(
                "route {id} is not attached to the process provider"
            )));
        };
        set.stopping.retain(|task| !task.is_finished());
        let before = set.running.len() as u32;
        let wanted = replicas as usize;
        while set.running.len() < wanted {
            let id = set.next_id;
            set.next_id += 1;
            let (stop, stop_rx) = watch::channel(false);
            let replica = Replica {
                id,
                spec: process.clone(),
                ready: Arc::clone(&set.ready),
                stop: stop_rx,
                last_output: Arc::default(),
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
        Ok(before)
    }
}

impl Provider for ProcessProvider {
    fn attach(&self, spec: &RouteSpec, report: Reporter) {
        let id = spec.id();
        self.sets().entry(id.clone()).or_insert_with(|| ReplicaSet {
            ready: Arc::new(ReadySet {
                id,
                report,
                addrs: Mutex::new(BTreeMap::new()),
            }),
            running: Vec::new(),
            stopping: Vec::new(),
            next_id: 1,
        });
    }

    fn detach(&self, id: &str) {
        if let Some(set) = self.sets().remove(id) {
            for running in set.running {
                drop(running.stop());
            }
        }
    }

    fn scale<'a>(
        &'a self,
        request: ScaleRequest<'a>,
    ) -> BoxFuture<'a, Result<Scaled, ProviderError>> {
        Box::pin(async move {
            let result = self.scale_now(request.spec, request.replicas);
            let direction = match result {
                Ok(before) if request.replicas < before => Direction::Down,
                _ => Direction::Up,
            };
            let outcome = if result.is_ok() { "success" } else { "error" };
            request.metrics.scale_event(direction, outcome);
            result.map(|_| Scaled::Applied)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        let sets: Vec<ReplicaSet> = self.sets().drain().map(|(_, set)| set).collect();
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
