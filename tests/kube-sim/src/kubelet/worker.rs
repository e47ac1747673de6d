//! One pod's life on the node, from scheduling to removal: take an address, choose the command,
//! start the container's process, probe it for readiness, restart it with back-off when it
//! exits (as its `restartPolicy` says), and terminate it when the pod is deleted. Every step is
//! reported in the pod's status. The manager (`kubelet`) only sends orders.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::process::{Child, ChildStdin};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use super::probe::{Probe, Readiness};
use super::process::{ContainerCommand, Launch, ProcessTable, command_for, spawn};
use super::status::{container_status, schedule, set_ready};
use super::{Kubelet, Order};
use crate::config::SimConfig;
use crate::faults::Faults;
use crate::kubeconfig;
use crate::meta;
use crate::store::{Key, Store, StoreError, resource};

/// The worker of one pod: its identity, the kubelet's handles, and the manager's orders.
pub(super) struct PodWorker {
    key: Key,
    uid: String,
    pod: Arc<Value>,
    store: Arc<Store>,
    config: Arc<SimConfig>,
    faults: Arc<Faults>,
    processes: Arc<ProcessTable>,
    log: PathBuf,
    /// The kubeconfig the pod's containers get, written when the pod is scheduled.
    kubeconfig: PathBuf,
    api: SocketAddr,
    orders: watch::Receiver<Order>,
    restarts: u32,
}

/// What the pod got before its container could start.
struct Sandbox {
    container: Value,
    ip: Ipv4Addr,
    command: ContainerCommand,
    probe: Option<Probe>,
    _address: AddressLease,
}

/// A started container process.
struct Started {
    child: Child,
    /// `Child::wait` closes stdin; it is kept open for as long as the process runs.
    _stdin: Option<ChildStdin>,
    /// When it started, as the status reports it.
    at: String,
}

/// How supervision of a running process ended.
enum Outcome {
    /// The process exited by itself with this code.
    Exited(i32),
    /// The process was stopped on the manager's order.
    Stopped,
}

/// Gives the pod address back when the worker ends, however it ends.
struct AddressLease(Arc<ProcessTable>, Ipv4Addr);

impl Drop for AddressLease {
    fn drop(&mut self) {
        self.0.release_address(self.1);
    }
}

impl PodWorker {
    /// A worker for `pod`, obeying `orders`.
    pub(super) fn new(kubelet: &Kubelet, pod: Arc<Value>, orders: watch::Receiver<Order>) -> Self {
        let key = Key::new(
            resource("", "pods"),
            meta::namespace(&pod),
            meta::name(&pod),
        );
        let uid = meta::uid(&pod).to_string();
        let base = format!("{}_{}_{uid}", key.namespace, key.name);
        let log = kubelet.work_dir.join(format!("{base}.log"));
        let kubeconfig = kubelet.work_dir.join(format!("{base}.kubeconfig"));
        Self {
            key,
            uid,
            pod,
            store: kubelet.store.clone(),
            config: kubelet.config.clone(),
            faults: kubelet.faults.clone(),
            processes: kubelet.processes.clone(),
            log,
            kubeconfig,
            api: kubelet.api,
            orders,
            restarts: 0,
        }
    }

    /// Runs the pod until it is deleted (then removes it from the store) or, with a restart
    /// policy that says so, until its container has finished.
    pub(super) async fn run(mut self) {
        let Some(sandbox) = self.prepare().await else {
            return;
        };
        loop {
            let Some(started) = self.start(&sandbox).await else {
                return;
            };
            let outcome = self.supervise(&sandbox, started.child).await;
            self.processes
                .unregister(&self.key.namespace, &self.key.name);
            match outcome {
                Outcome::Stopped => {
                    let _ = self.store.remove(&self.key);
                    return;
                }
                Outcome::Exited(code) => {
                    if !self.restart(code, &started.at).await {
                        return;
                    }
                }
            }
        }
    }

    /// Schedules the pod on a free address and finds its command; `None` when the pod cannot
    /// start (reported in its status, and the worker has waited for the pod's deletion).
    async fn prepare(&mut self) -> Option<Sandbox> {
        let Some(container) = self.pod.pointer("/spec/containers/0").cloned() else {
            self.write(|p| p["status"]["phase"] = json!("Failed"));
            return None;
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
            self.waiting(&container, "ContainerCreating", "no free pod address");
            self.idle_until_deleted().await;
            return None;
        };
        let address = AddressLease(self.processes.clone(), ip);
        self.write(|p| schedule(p, ip));
        let command = match command_for(&self.config, &container) {
            Ok(command) => command,
            Err(error) => {
                self.waiting(&container, "ErrImagePull", &error.to_string());
                self.idle_until_deleted().await;
                return None;
            }
        };
        let namespace = self.key.namespace.clone();
        if let Err(error) = kubeconfig::write(&self.kubeconfig, self.api, &namespace) {
            let message = format!("writing {}: {error}", self.kubeconfig.display());
            self.waiting(&container, "CreateContainerConfigError", &message);
            self.idle_until_deleted().await;
            return None;
        }
        Some(Sandbox {
            probe: Probe::from_container(&container, &self.config),
            container,
            ip,
            command,
            _address: address,
        })
    }

    /// Starts the container's process and reports it running (not ready); `None` when it
    /// cannot be started or the simulator is closing.
    async fn start(&mut self, sandbox: &Sandbox) -> Option<Started> {
        let launch = Launch {
            command: &sandbox.command,
            pod: &self.pod,
            container: &sandbox.container,
            ip: sandbox.ip,
            log: &self.log,
            kubeconfig: &self.kubeconfig,
        };
        let mut child = match spawn(&launch) {
            Ok(child) => child,
            Err(error) => {
                let message = error.to_string();
                self.waiting(&sandbox.container, "CreateContainerError", &message);
                self.idle_until_deleted().await;
                return None;
            }
        };
        let stdin = child.stdin.take();
        let pid = child.id().unwrap_or(0);
        if !self
            .processes
            .register(&self.key.namespace, &self.key.name, pid, &self.log)
        {
            return None;
        }
        let at = meta::now();
        let restarts = self.restarts;
        self.write(|p| {
            let last_state = p["status"]["containerStatuses"][0]["lastState"].clone();
            let mut status = container_status(
                &sandbox.container,
                json!({"running": {"startedAt": at}}),
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
        Some(Started {
            child,
            _stdin: stdin,
            at,
        })
    }

    /// Watches a running process: reports readiness as the probe finds it, and obeys orders.
    async fn supervise(&mut self, sandbox: &Sandbox, mut child: Child) -> Outcome {
        let probe = sandbox.probe.as_ref();
        let mut reported = false;
        let mut readiness = Readiness::starting(probe);
        let mut next_probe = Instant::now() + probe.map_or(Duration::ZERO, |p| p.initial_delay);
        let recheck = self.config.scaled(1.0).max(Duration::from_millis(10));
        loop {
            let ready = readiness.ready && !self.faults.never_ready();
            if ready != reported {
                reported = ready;
                self.write(|p| {
                    p["status"]["containerStatuses"][0]["ready"] = json!(ready);
                    set_ready(p, ready);
                });
            }
            let order = *self.orders.borrow_and_update();
            match order {
                Order::Run => {}
                Order::Kill => return self.kill(child).await,
                Order::Terminate(grace) => return self.terminate(child, grace).await,
            }
            tokio::select! {
                status = child.wait() => {
                    let code = status.ok().and_then(|s| s.code()).unwrap_or(137);
                    return Outcome::Exited(code);
                }
                _ = sleep_until(next_probe), if probe.is_some() => {
                    let Some(probe) = probe else { continue };
                    next_probe = Instant::now() + probe.period;
                    let passed = probe.check(sandbox.ip, &sandbox.container).await;
                    readiness.record(passed, probe);
                }
                _ = sleep(recheck) => {}
                _ = self.orders.changed() => {}
            }
        }
    }

    /// SIGTERM to the process group, SIGKILL once `grace` has passed.
    async fn terminate(&self, mut child: Child, grace: Duration) -> Outcome {
        let (namespace, name) = (&self.key.namespace, &self.key.name);
        self.processes.signal(namespace, name, Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            self.processes.signal(namespace, name, Signal::SIGKILL);
            let _ = child.wait().await;
        }
        Outcome::Stopped
    }

    /// Stops the process at once: the pod is already gone.
    async fn kill(&self, mut child: Child) -> Outcome {
        let _ = child.start_kill();
        let _ = child.wait().await;
        Outcome::Stopped
    }

    /// After the container exited with `code`: per the restart policy, either waits out the
    /// back-off (10 s doubling to 5 min, scaled) in `CrashLoopBackOff` and returns true to start
    /// it again, or records the pod as finished and returns false once the pod is deleted.
    async fn restart(&mut self, code: i32, started_at: &str) -> bool {
        let restart = match meta::str_at(&self.pod, "/spec/restartPolicy") {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        let terminated = json!({"terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": started_at,
            "finishedAt": meta::now(),
        }});
        if !restart {
            self.write(|p| {
                p["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
                p["status"]["containerStatuses"][0]["state"] = terminated.clone();
                p["status"]["containerStatuses"][0]["ready"] = json!(false);
                set_ready(p, false);
            });
            self.idle_until_deleted().await;
            return false;
        }
        self.restarts += 1;
        let restarts = self.restarts;
        let backoff = self
            .config
            .scaled(f64::min(10.0 * 2f64.powi(restarts as i32 - 1), 300.0));
        self.write(|p| {
            let status = &mut p["status"]["containerStatuses"][0];
            status["lastState"] = terminated.clone();
            status["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off restarting failed container (exit code {code})")}});
            status["ready"] = json!(false);
            status["started"] = json!(false);
            status["restartCount"] = json!(restarts);
            set_ready(p, false);
        });
        tokio::select! {
            _ = sleep(backoff) => true,
            _ = self.orders.wait_for(|o| *o != Order::Run) => {
                let _ = self.store.remove(&self.key);
                false
            }
        }
    }

    /// Reports the container waiting with `reason`.
    fn waiting(&self, container: &Value, reason: &str, message: &str) {
        let restarts = self.restarts;
        self.write(|p| {
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

    /// Waits for the pod's deletion, then removes it.
    async fn idle_until_deleted(&mut self) {
        let _ = self.orders.wait_for(|o| *o != Order::Run).await;
        let _ = self.store.remove(&self.key);
    }

    /// Writes to the pod if it is still the same pod (same uid).
    fn write(&self, change: impl FnOnce(&mut Value)) {
        let _ = self.store.modify::<StoreError>(&self.key, |pod| {
            if meta::uid(pod) != self.uid {
                return Ok(None);
            }
            let mut next = pod.clone();
            change(&mut next);
            Ok(Some(next))
        });
    }
}
