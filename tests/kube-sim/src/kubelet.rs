//! The kubelet (and scheduler): every pod in the store becomes a real local process on its own
//! loopback address. It reports pod status as the kubelet does — phase, IPs, container states,
//! restart counts, and the `Ready` condition decided by the readiness probe — restarts
//! crashed containers with back-off, and on deletion sends SIGTERM, waits the grace period,
//! sends SIGKILL and removes the pod. The first container of a pod is run; others are ignored.

mod probe;
mod process;

pub use process::ProcessTable;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};

use self::probe::Probe;
use self::process::{Launch, command_for, spawn};
use crate::config::SimConfig;
use crate::faults::Faults;
use crate::meta;
use crate::store::{Key, Store, StoreError, resource};

/// The node name pods are bound to.
pub const NODE_NAME: &str = "kube-sim";

/// What the manager asks of a pod worker.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    Run,
    Terminate(Duration),
    Kill,
}

struct Worker {
    orders: watch::Sender<Order>,
    handle: JoinHandle<()>,
}

/// The kubelet: shared state of every pod worker.
pub struct Kubelet {
    store: Arc<Store>,
    config: Arc<SimConfig>,
    faults: Arc<Faults>,
    processes: Arc<ProcessTable>,
    work_dir: PathBuf,
}

impl Kubelet {
    /// A kubelet over `store`, logging pod output under `work_dir`.
    pub fn new(
        store: Arc<Store>,
        config: Arc<SimConfig>,
        faults: Arc<Faults>,
        processes: Arc<ProcessTable>,
        work_dir: PathBuf,
    ) -> Self {
        Self {
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

    fn sync(self: &Arc<Self>, workers: &mut HashMap<String, Worker>) {
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
                    let handle = tokio::spawn(self.clone().run_pod(pod.clone(), receiver));
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

    /// Writes to the pod if it is still the same pod (same uid).
    fn write(&self, key: &Key, uid: &str, change: impl FnOnce(&mut Value)) {
        let _ = self.store.modify::<StoreError>(key, |pod| {
            if meta::uid(pod) != uid {
                return Ok(None);
            }
            let mut next = pod.clone();
            change(&mut next);
            Ok(Some(next))
        });
    }

    async fn run_pod(self: Arc<Self>, pod: Arc<Value>, mut orders: watch::Receiver<Order>) {
        let key = Key::new(
            resource("", "pods"),
            meta::namespace(&pod),
            meta::name(&pod),
        );
        let uid = meta::uid(&pod).to_string();
        let Some(container) = pod.pointer("/spec/containers/0").cloned() else {
            self.write(&key, &uid, |p| p["status"]["phase"] = json!("Failed"));
            return;
        };
        let port = container
            .pointer("/ports/0/containerPort")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0);
        let Some(ip) = self
            .processes
            .allocate_address(self.config.pod_network, port)
        else {
            self.waiting(
                &key,
                &uid,
                &container,
                "ContainerCreating",
                "no free pod address",
                0,
            );
            self.idle_until_deleted(&key, &mut orders).await;
            return;
        };
        let _address = AddressLease(self.processes.clone(), ip);
        self.write(&key, &uid, |p| schedule(p, ip));
        let command = match command_for(&self.config, &container) {
            Ok(command) => command,
            Err(error) => {
                self.waiting(
                    &key,
                    &uid,
                    &container,
                    "ErrImagePull",
                    &error.to_string(),
                    0,
                );
                self.idle_until_deleted(&key, &mut orders).await;
                return;
            }
        };
        let log = self
            .work_dir
            .join(format!("{}_{}_{uid}.log", key.namespace, key.name));
        let probe = Probe::from_container(&container, &self.config);
        let mut restarts = 0u32;
        loop {
            let launch = Launch {
                command: &command,
                container: &container,
                name: &key.name,
                namespace: &key.namespace,
                ip,
                log: &log,
            };
            let mut child = match spawn(&launch) {
                Ok(child) => child,
                Err(error) => {
                    let message = error.to_string();
                    self.waiting(
                        &key,
                        &uid,
                        &container,
                        "CreateContainerError",
                        &message,
                        restarts,
                    );
                    self.idle_until_deleted(&key, &mut orders).await;
                    return;
                }
            };
            // `Child::wait` closes stdin; keep it open for as long as the process runs.
            let _stdin = child.stdin.take();
            let pid = child.id().unwrap_or(0);
            if !self
                .processes
                .register(&key.namespace, &key.name, pid, &log)
            {
                return;
            }
            let started = meta::now();
            self.write(&key, &uid, |p| {
                let last_state = p["status"]["containerStatuses"][0]["lastState"].clone();
                let mut status = container_status(
                    &container,
                    json!({"running": {"startedAt": started}}),
                    false,
                    restarts,
                    &format!("sim://{pid}"),
                );
                if last_state.is_object() {
                    status["lastState"] = last_state;
                }
                p["status"]["phase"] = json!("Running");
                p["status"]["containerStatuses"] = json!([status]);
                set_ready(p, false);
            });
            let outcome = self
                .supervise(
                    &key,
                    &uid,
                    child,
                    probe.as_ref(),
                    ip,
                    &container,
                    &mut orders,
                )
                .await;
            self.processes.unregister(&key.namespace, &key.name);
            let code = match outcome {
                Outcome::Stopped => {
                    let _ = self.store.remove(&key);
                    return;
                }
                Outcome::Exited(code) => code,
            };
            let policy = meta::str_at(&pod, "/spec/restartPolicy");
            let restart = match policy {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            let terminated = json!({"terminated": {
                "exitCode": code,
                "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": started,
                "finishedAt": meta::now(),
            }});
            if !restart {
                self.write(&key, &uid, |p| {
                    p["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
                    p["status"]["containerStatuses"][0]["state"] = terminated.clone();
                    p["status"]["containerStatuses"][0]["ready"] = json!(false);
                    set_ready(p, false);
                });
                self.idle_until_deleted(&key, &mut orders).await;
                return;
            }
            restarts += 1;
            let backoff = self
                .config
                .scaled(f64::min(10.0 * 2f64.powi(restarts as i32 - 1), 300.0));
            self.write(&key, &uid, |p| {
                let status = &mut p["status"]["containerStatuses"][0];
                status["lastState"] = terminated.clone();
                status["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off restarting failed container (exit code {code})")}});
                status["ready"] = json!(false);
                status["started"] = json!(false);
                status["restartCount"] = json!(restarts);
                set_ready(p, false);
            });
            tokio::select! {
                _ = sleep(backoff) => {}
                _ = orders.wait_for(|o| *o != Order::Run) => {
                    let _ = self.store.remove(&key);
                    return;
                }
            }
        }
    }

    /// Watches a running process: probes readiness, obeys termination orders.
    #[allow(clippy::too_many_arguments)]
    async fn supervise(
        &self,
        key: &Key,
        uid: &str,
        mut child: Child,
        probe: Option<&Probe>,
        ip: Ipv4Addr,
        container: &Value,
        orders: &mut watch::Receiver<Order>,
    ) -> Outcome {
        let mut reported = false;
        let (mut successes, mut failures) = (0u32, 0u32);
        // Without a probe a running container is ready at once (as in Kubernetes).
        let mut probed_ready = probe.is_none();
        let mut next_probe = Instant::now() + probe.map_or(Duration::ZERO, |p| p.initial_delay);
        let recheck = self.config.scaled(1.0).max(Duration::from_millis(10));
        loop {
            let ready = probed_ready && !self.faults.never_ready();
            if ready != reported {
                reported = ready;
                self.write(key, uid, |p| {
                    p["status"]["containerStatuses"][0]["ready"] = json!(ready);
                    set_ready(p, ready);
                });
            }
            let order = *orders.borrow_and_update();
            match order {
                Order::Run => {}
                Order::Kill => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Outcome::Stopped;
                }
                Order::Terminate(grace) => {
                    self.processes
                        .signal(&key.namespace, &key.name, Signal::SIGTERM);
                    if tokio::time::timeout(grace, child.wait()).await.is_err() {
                        self.processes
                            .signal(&key.namespace, &key.name, Signal::SIGKILL);
                        let _ = child.wait().await;
                    }
                    return Outcome::Stopped;
                }
            }
            tokio::select! {
                status = child.wait() => {
                    let code = status.ok().and_then(|s| s.code()).unwrap_or(137);
                    return Outcome::Exited(code);
                }
                _ = sleep_until(next_probe), if probe.is_some() => {
                    let Some(probe) = probe else { continue };
                    next_probe = Instant::now() + probe.period;
                    if probe.check(ip, container).await {
                        successes += 1;
                        failures = 0;
                        if successes >= probe.success_threshold {
                            probed_ready = true;
                        }
                    } else {
                        failures += 1;
                        successes = 0;
                        if failures >= probe.failure_threshold || !probed_ready {
                            probed_ready = false;
                        }
                    }
                }
                _ = sleep(recheck) => {}
                _ = orders.changed() => {}
            }
        }
    }

    fn waiting(
        &self,
        key: &Key,
        uid: &str,
        container: &Value,
        reason: &str,
        message: &str,
        restarts: u32,
    ) {
        self.write(key, uid, |p| {
            p["status"]["containerStatuses"] = json!([container_status(
                container,
                json!({"waiting": {"reason": reason, "message": message}}),
                false,
                restarts,
                "",
            )]);
            set_ready(p, false);
        });
    }

    async fn idle_until_deleted(&self, key: &Key, orders: &mut watch::Receiver<Order>) {
        let _ = orders.wait_for(|o| *o != Order::Run).await;
        let _ = self.store.remove(key);
    }
}

enum Outcome {
    Exited(i32),
    Stopped,
}

/// Gives the pod address back when the worker ends, however it ends.
struct AddressLease(Arc<ProcessTable>, Ipv4Addr);

impl Drop for AddressLease {
    fn drop(&mut self) {
        self.0.release_address(self.1);
    }
}

/// Binds the pod to the node and records its addresses, as scheduler and kubelet do.
fn schedule(pod: &mut Value, ip: Ipv4Addr) {
    let now = meta::now();
    pod["spec"]["nodeName"] = json!(NODE_NAME);
    let status = &mut pod["status"];
    status["phase"] = json!("Pending");
    status["hostIP"] = json!("127.0.0.1");
    status["hostIPs"] = json!([{"ip": "127.0.0.1"}]);
    status["podIP"] = json!(ip.to_string());
    status["podIPs"] = json!([{"ip": ip.to_string()}]);
    status["startTime"] = json!(now);
    status["conditions"] = json!([
        {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "Ready", "status": "False", "lastProbeTime": null, "lastTransitionTime": now, "reason": "ContainersNotReady"},
        {"type": "ContainersReady", "status": "False", "lastProbeTime": null, "lastTransitionTime": now, "reason": "ContainersNotReady"},
        {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
    ]);
}

/// Sets the `Ready` and `ContainersReady` conditions, keeping transition times when unchanged.
fn set_ready(pod: &mut Value, ready: bool) {
    let now = meta::now();
    let value = if ready { "True" } else { "False" };
    let Some(conditions) = pod
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for condition in conditions {
        if matches!(
            condition["type"].as_str(),
            Some("Ready" | "ContainersReady")
        ) && condition["status"] != value
        {
            condition["status"] = json!(value);
            condition["lastTransitionTime"] = json!(now);
            if let Some(c) = condition.as_object_mut() {
                if ready {
                    c.remove("reason");
                } else {
                    c.insert("reason".into(), json!("ContainersNotReady"));
                }
            }
        }
    }
}

fn container_status(
    container: &Value,
    state: Value,
    ready: bool,
    restarts: u32,
    id: &str,
) -> Value {
    let image = meta::str_at(container, "/image");
    let mut status = json!({
        "name": container["name"],
        "image": image,
        "imageID": format!("sim://{image}"),
        "state": state,
        "lastState": {},
        "ready": ready,
        "restartCount": restarts,
        "started": state.get("running").is_some(),
    });
    if !id.is_empty() {
        status["containerID"] = json!(id);
    }
    status
}
