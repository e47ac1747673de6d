//! The kubelet (and scheduler): every pod in the store becomes a real local process on its own
//! loopback address. It reports pod status as the kubelet does — phase, IPs, container states,
//! restart counts, and the `Ready` condition decided by the readiness probe — restarts
//! crashed containers with back-off, and on deletion sends SIGTERM, waits the grace period,
//! sends SIGKILL and removes the pod. The first container of a pod is run; others are ignored.
//!
//! This module is the manager: it starts a [`worker`] per pod and passes it orders as the pod
//! changes. What one pod goes through is the worker's.

mod env;
mod probe;
mod process;
mod status;
mod worker;

pub use process::ProcessTable;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::sleep;

use self::worker::PodWorker;
use crate::config::SimConfig;
use crate::faults::Faults;
use crate::meta;
use crate::store::{Key, Store, resource};

/// The node name pods are bound to.
pub const NODE_NAME: &str = "kube-sim";

/// What the manager asks of a pod worker.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    /// Keep the pod running.
    Run,
    /// The pod is being deleted: SIGTERM, then SIGKILL after this grace period.
    Terminate(Duration),
    /// The pod is gone from the store: stop at once.
    Kill,
}

/// A running pod worker, as the manager holds it.
struct Worker {
    orders: watch::Sender<Order>,
    handle: JoinHandle<()>,
}

/// The kubelet: shared state of every pod worker.
pub struct Kubelet {
    /// Where the API server listens, for the pods' kubeconfigs.
    api: SocketAddr,
    store: Arc<Store>,
    config: Arc<SimConfig>,
    faults: Arc<Faults>,
    processes: Arc<ProcessTable>,
    work_dir: PathBuf,
}

impl Kubelet {
    /// A kubelet over `store` of the API server at `api`, logging pod output under `work_dir`.
    pub fn new(
        api: SocketAddr,
        store: Arc<Store>,
        config: Arc<SimConfig>,
        faults: Arc<Faults>,
        processes: Arc<ProcessTable>,
        work_dir: PathBuf,
    ) -> Self {
        Self {
            api,
            store,
            config,
            faults,
            processes,
            work_dir,
        }
    }

    /// Runs until `shutdown` turns true, then stops every worker (the processes are killed by
    /// the caller through the [`ProcessTable`]).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut changes = self.store.subscribe();
        let mut workers: HashMap<String, Worker> = HashMap::new();
        loop {
            self.sync(&mut workers);
            tokio::select! {
                _ = changes.recv() => while changes.try_recv().is_ok() {},
                _ = sleep(Duration::from_millis(250)) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        for worker in workers.values() {
            worker.handle.abort();
        }
    }

    fn sync(&self, workers: &mut HashMap<String, Worker>) {
        let (pods, _) = self.store.list(resource("", "pods"), None);
        let mut live = HashSet::new();
        for pod in pods {
            let uid = meta::uid(&pod).to_string();
            live.insert(uid.clone());
            let terminating = meta::is_terminating(&pod);
            let finished = matches!(meta::str_at(&pod, "/status/phase"), "Succeeded" | "Failed");
            match workers.get(&uid) {
                Some(worker) if terminating => {
                    let grace = pod
                        .pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_f64)
                        .unwrap_or(30.0);
                    let grace = self.config.scaled(grace);
                    worker.orders.send_if_modified(|order| {
                        let changed = *order == Order::Run;
                        if changed {
                            *order = Order::Terminate(grace);
                        }
                        changed
                    });
                }
                Some(_) => {}
                None if terminating => {
                    let key = Key::new(
                        resource("", "pods"),
                        meta::namespace(&pod),
                        meta::name(&pod),
                    );
                    let _ = self.store.remove(&key);
                }
                None if finished => {}
                None => {
                    let (orders, receiver) = watch::channel(Order::Run);
                    let worker = PodWorker::new(self, pod.clone(), receiver);
                    let handle = tokio::spawn(worker.run());
                    workers.insert(uid, Worker { orders, handle });
                }
            }
        }
        for (uid, worker) in workers.iter() {
            if !live.contains(uid) {
                let _ = worker.orders.send(Order::Kill);
            }
        }
        workers.retain(|_, w| !w.handle.is_finished());
    }
}
