//! The [`Sim`] handle: starts the API server, kubelet and controllers in-process, and gives tests
//! a `kube::Client`, a kubeconfig file, YAML apply, waiting on conditions, request counters,
//! fault controls, and a shutdown that kills every pod process (also on drop).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, Context};
use crate::config::SimConfig;
use crate::controllers::{self, deployment, endpointslice, gc};
use crate::counters::{CounterSnapshot, Counters};
use crate::faults::Faults;
use crate::kubelet::{Kubelet, ProcessTable};
use crate::meta;
use crate::resources::RESOURCES;
use crate::store::{Key, Store, namespaces};

/// Why a simulator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Binding the listen address, creating the work directory or writing the kubeconfig.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A YAML document did not parse.
    #[error("invalid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// The API refused an object.
    #[error("{0}")]
    Api(#[from] api::status::ApiError),
    /// Building the client failed.
    #[error("building a client: {0}")]
    Client(String),
    /// kubectl exited unsuccessfully.
    #[error("kubectl {args} failed: {stderr}")]
    Kubectl {
        /// Its arguments.
        args: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A condition did not hold in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        timeout: Duration,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SimError {
    let what = what.into();
    move |source| SimError::Io { what, source }
}

/// A running simulator. Dropping it stops the server and kills every pod process.
pub struct Sim {
    address: SocketAddr,
    context: Arc<Context>,
    config: Arc<SimConfig>,
    kubeconfig: PathBuf,
    work_dir: PathBuf,
    owns_work_dir: bool,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sim {
    /// Starts a simulator: the API server on `config.listen`, the kubelet and the controllers,
    /// with namespaces `default`, `kube-system`, `kube-public` and `kube-node-lease`.
    ///
    /// # Errors
    /// When the address cannot be bound or the work directory or kubeconfig cannot be written.
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("binding {}", config.listen)))?;
        let address = listener
            .local_addr()
            .map_err(io("reading the bound address"))?;
        let (work_dir, owns_work_dir) = match &config.work_dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "kube-sim-{}-{}",
                    std::process::id(),
                    meta::random_suffix(8)
                )),
                true,
            ),
        };
        std::fs::create_dir_all(&work_dir)
            .map_err(io(format!("creating {}", work_dir.display())))?;
        let kubeconfig = config
            .kubeconfig_path
            .clone()
            .unwrap_or_else(|| work_dir.join("kubeconfig"));
        write_kubeconfig(&kubeconfig, address)?;

        let store = Arc::new(Store::new(config.history_limit));
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let mut object =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let _ = api::defaults::apply(namespaces(), &mut object);
            let _ = store.create(namespaces(), object);
        }
        let config = Arc::new(config);
        let context = Arc::new(Context {
            store: store.clone(),
            faults: Arc::new(Faults::default()),
            counters: Arc::new(Counters::default()),
            processes: Arc::new(ProcessTable::default()),
            address: address.to_string(),
        });
        let (shutdown, stop) = watch::channel(false);
        let kubelet = Arc::new(Kubelet::new(
            address,
            store.clone(),
            config.clone(),
            context.faults.clone(),
            context.processes.clone(),
            work_dir.clone(),
        ));
        let tick = Duration::from_secs(1);
        let tasks = vec![
            tokio::spawn(api::run(listener, context.clone(), stop.clone())),
            tokio::spawn(kubelet.run(stop.clone())),
            tokio::spawn(controllers::run_loop(
                store.clone(),
                tick,
                stop.clone(),
                deployment::reconcile,
            )),
            tokio::spawn(controllers::run_loop(
                store.clone(),
                tick,
                stop.clone(),
                endpointslice::reconcile,
            )),
            tokio::spawn(controllers::run_loop(store, tick, stop, gc::reconcile)),
        ];
        tracing::info!(%address, kubeconfig = %kubeconfig.display(), "kube-sim started");
        Ok(Self {
            address,
            context,
            config,
            kubeconfig,
            work_dir,
            owns_work_dir,
            shutdown,
            tasks,
        })
    }

    /// The API server's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The API server's URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The kubeconfig file pointing at this simulator (namespace `default`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The configuration the simulator runs with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// A kube-rs client for this simulator, with default namespace `default`.
    ///
    /// # Errors
    /// When the client cannot be built.
    pub fn client(&self) -> Result<kube::Client, SimError> {
        let url = self
            .url()
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| SimError::Client(e.to_string()))?;
        let config = kube::Config::new(url);
        kube::Client::try_from(config).map_err(|e| SimError::Client(e.to_string()))
    }

    /// Creates (or replaces) every object in a multi-document YAML string, directly in the
    /// store (these writes are not counted as requests). Returns the stored objects.
    ///
    /// # Errors
    /// When the YAML does not parse or an object is refused.
    pub fn apply_yaml(&self, yaml: &str) -> Result<Vec<Value>, SimError> {
        let mut applied = Vec::new();
        for document in serde_yaml::Deserializer::from_str(yaml) {
            let object: Value = serde::Deserialize::deserialize(document)?;
            if object.is_null() {
                continue;
            }
            applied.push(api::write::apply(&self.context, object)?);
        }
        Ok(applied)
    }

    /// One object, by plural resource name (`deployments`, `pods`, `endpointslices`, …),
    /// namespace ("" for cluster-scoped) and name.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = RESOURCES.iter().find(|r| r.plural == plural)?;
        let key = Key::new(resource, namespace, name);
        self.context.store.get(&key).map(|o| (*o).clone())
    }

    /// Every object of a resource, in one namespace or all (`None`).
    pub fn list(&self, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(resource) = RESOURCES.iter().find(|r| r.plural == plural) else {
            return Vec::new();
        };
        let (items, _) = self.context.store.list(resource, namespace);
        items.into_iter().map(|o| (*o).clone()).collect()
    }

    /// The `ip:port` of every ready endpoint of a service, from its EndpointSlices (first
    /// port of each slice).
    pub fn ready_endpoints(&self, namespace: &str, service: &str) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for slice in self.list("endpointslices", Some(namespace)) {
            if meta::str_at(&slice, "/metadata/labels/kubernetes.io~1service-name") != service {
                continue;
            }
            let port = slice
                .pointer("/ports/0/port")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
                if endpoint.pointer("/conditions/ready") != Some(&json!(true)) {
                    continue;
                }
                let ip = endpoint.pointer("/addresses/0").and_then(Value::as_str);
                if let (Some(Ok(ip)), Ok(port)) = (ip.map(str::parse), u16::try_from(port)) {
                    out.push(SocketAddr::new(ip, port));
                }
            }
        }
        out.sort();
        out
    }

    /// Waits until `condition` holds, re-checking after every change in the store.
    ///
    /// # Errors
    /// [`SimError::Timeout`] naming `what` when it does not hold within `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Sim) -> bool,
    ) -> Result<(), SimError> {
        let mut changes = self.context.store.subscribe();
        let wait = async {
            while !condition(self) {
                // A lagged receiver just means "something changed": check again.
                let _ = changes.recv().await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| SimError::Timeout {
                what: what.to_string(),
                timeout,
            })
    }

    /// Waits until a service has exactly `count` ready endpoints, and returns them.
    ///
    /// # Errors
    /// [`SimError::Timeout`].
    pub async fn wait_for_ready_endpoints(
        &self,
        namespace: &str,
        service: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, SimError> {
        let what = format!("{count} ready endpoints of service {namespace}/{service}");
        self.wait_for(&what, timeout, |sim| {
            sim.ready_endpoints(namespace, service).len() == count
        })
        .await?;
        Ok(self.ready_endpoints(namespace, service))
    }

    /// The request counters so far.
    pub fn counters(&self) -> CounterSnapshot {
        self.context.counters.snapshot()
    }

    /// Sets every request counter back to zero.
    pub fn reset_counters(&self) {
        self.context.counters.reset();
    }

    /// The fault rules (latency, errors, conflicts, never-ready), to add or clear rules.
    pub fn faults(&self) -> &Faults {
        &self.context.faults
    }

    /// Ends every open watch now; clients must resume.
    pub fn close_watches(&self) {
        self.context.store.close_watches();
    }

    /// Forgets the watch history: the next resume from an earlier version gets 410 Expired.
    pub fn expire_watch_history(&self) {
        self.context.store.expire_history();
    }

    /// Kills a pod's process with SIGKILL, as a crash; the kubelet restarts it with back-off.
    /// False when the pod has no running process.
    pub fn crash_pod(&self, namespace: &str, name: &str) -> bool {
        self.context.processes.crash(namespace, name)
    }

    /// The output of a pod's process so far.
    pub fn pod_log(&self, namespace: &str, name: &str) -> String {
        self.context.processes.log(namespace, name)
    }

    /// Runs `kubectl` (from `PATH`) against this simulator and returns its output.
    ///
    /// # Errors
    /// When kubectl cannot be started or exits unsuccessfully (the error carries its stderr).
    pub async fn kubectl(&self, args: &[&str]) -> Result<String, SimError> {
        let output = tokio::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(io("running kubectl"))?;
        if !output.status.success() {
            return Err(SimError::Kubectl {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Stops the server and controllers and kills every pod process.
    pub async fn shutdown(mut self) {
        self.stop();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        self.context.processes.kill_all();
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop();
        for task in &self.tasks {
            task.abort();
        }
        if self.owns_work_dir {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
    }
}

/// Writes a kubeconfig for a simulator at `address` (namespace `default`).
///
/// # Errors
/// When the file cannot be written.
pub fn write_kubeconfig(path: &Path, address: SocketAddr) -> Result<(), SimError> {
    crate::kubeconfig::write(path, address, "default")
        .map_err(io(format!("writing {}", path.display())))
}
