//! The cold start in Kubernetes mode, on kube-sim: the real activator binary with `--kube`
//! against a simulated API server and kubelet, whose pods are `activator-echo` processes.
//!
//! The Deployment `cold` (route `cold` in `default`) scales to zero 100ms after its last
//! request. Its readiness probe is `httpGet /` with Kubernetes' default period (10s), multiplied
//! by the simulator's time scale. Its pod waits `startup_ms` before it listens, as an
//! application does while it starts, plus a random part of one kubelet probe period: a fixed
//! start would meet both probes at the same point of their periods in every run, and the
//! result would be that one point rather than the spread a real workload sees. Two variants,
//! each on a fresh simulator:
//! - **direct probe**: the activator probes a pod it sees not ready every 25ms (the default);
//! - **kubelet only**: a probe interval of an hour. The activator still probes a new endpoint
//!   once as it appears; the pod's start delay makes that probe fail, so readiness comes from
//!   the kubelet's probe and the EndpointSlice update. The activator's log says how many pods
//!   its direct probe found ready, and the report counts them.
//!
//! The added time includes what the simulator does (create the pod, start its process), which a
//! real cluster does in seconds (scheduling, image, sandbox); "before its start" and "after it
//! listened" split it.

use std::time::Duration;

use kube_sim::{Sim, SimConfig};
use serde_json::{Value, json};

use crate::harness::{ActivatorProc, Scratch};
use crate::measure::{
    ColdRun, Connections, Distribution, cold_request, report_runs, wait_until_idle,
};

/// How the Kubernetes variant runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Cold requests per variant.
    pub runs: usize,
    /// Requests in a burst, and bursts per variant.
    pub burst_size: usize,
    pub burst_runs: usize,
    /// kube-sim's time scale (Kubernetes durations multiplied by it).
    pub time_scale: f64,
    /// The pod's wait before it listens, ms.
    pub startup_ms: u64,
}

/// Kubernetes' default readiness probe period, seconds.
const PROBE_PERIOD_SECONDS: f64 = 10.0;

fn manifest(startup_ms: u64, jitter_ms: u64) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: cold
  namespace: default
  labels: {{app: cold, activator.dev/enabled: "true"}}
  annotations:
    activator.dev/idle-timeout: "100ms"
spec:
  replicas: 0
  selector: {{matchLabels: {{app: cold}}}}
  template:
    metadata: {{labels: {{app: cold}}}}
    spec:
      containers:
        - name: echo
          image: mendhak/http-https-echo
          args: ["--startup-delay-ms", "{startup_ms}", "--startup-jitter-ms", "{jitter_ms}"]
          env: [{{name: HTTP_PORT, value: "8080"}}]
          ports: [{{name: http, containerPort: 8080}}]
          readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: {PROBE_PERIOD_SECONDS}}}
---
apiVersion: v1
kind: Service
metadata: {{name: cold, namespace: default}}
spec:
  selector: {{app: cold}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

/// Both variants; their results as JSON.
pub async fn run(settings: &Settings) -> Value {
    let period_ms = PROBE_PERIOD_SECONDS * 1e3 * settings.time_scale;
    println!(
        "Kubernetes mode on kube-sim: time scale {}, the kubelet probes every {period_ms:.0} ms, pods listen {} to {} ms after they start",
        settings.time_scale,
        settings.startup_ms,
        settings.startup_ms as f64 + period_ms
    );
    let mut variants = Vec::new();
    for (name, interval) in [("direct probe", "25ms"), ("kubelet only", "1h")] {
        variants.push(variant(settings, name, interval).await);
    }
    json!({
        "time_scale": settings.time_scale,
        "kubelet_probe_period_ms": period_ms,
        "pod_startup_delay_ms": settings.startup_ms,
        "pod_startup_jitter_ms": period_ms,
        "variants": variants,
    })
}

/// Waits until the route is at zero and its pods are gone.
async fn wait_until_idle_and_gone(sim: &Sim, admin: std::net::SocketAddr) {
    wait_until_idle(admin).await;
    sim.wait_for("no pod left", Duration::from_secs(60), |sim| {
        sim.list("pods", Some("default")).is_empty()
    })
    .await
    .expect("the pods go away");
}

async fn variant(settings: &Settings, name: &str, probe_interval: &str) -> Value {
    let sim = Sim::start(SimConfig::default().time_scale(settings.time_scale))
        .await
        .expect("kube-sim starts");
    let jitter_ms = (PROBE_PERIOD_SECONDS * 1e3 * settings.time_scale).round() as u64;
    sim.apply_yaml(&manifest(settings.startup_ms, jitter_ms))
        .expect("the workload applies");
    let scratch = Scratch::new("cold-start-kube");
    let activator = ActivatorProc::start_kube(
        &scratch,
        "scaler_tick = \"20ms\"\nshutdown_delay = \"0s\"",
        sim.kubeconfig_path(),
        &["--probe-interval", probe_interval],
        "info,activator::provider::kube::readiness=debug",
    );

    let mut runs: Vec<ColdRun> = Vec::with_capacity(settings.runs);
    for _ in 0..settings.runs {
        wait_until_idle_and_gone(&sim, activator.admin).await;
        runs.push(cold_request(activator.proxy).await);
    }
    let singles = report_runs(
        &format!(
            "Kubernetes mode, {name} (probe interval {probe_interval}): a request to a Deployment at zero"
        ),
        &runs,
    );

    let mut bursts = Vec::with_capacity(settings.burst_runs);
    for _ in 0..settings.burst_runs {
        wait_until_idle_and_gone(&sim, activator.admin).await;
        let connections = Connections::open(activator.proxy, settings.burst_size).await;
        bursts.push(connections.send().answers().await);
    }
    let failed: usize = bursts.iter().map(|b| b.failed).sum();
    let added = |pick: fn(&crate::measure::BurstResult) -> f64| {
        Distribution::new(
            bursts
                .iter()
                .filter_map(|b| b.replica.map(|r| pick(b) - r.to_listening_ms)),
        )
    };
    let first = added(|b| b.first_answer_ms);
    let last = added(|b| b.last_answer_ms);
    let drain = Distribution::new(bursts.iter().filter_map(|b| b.drain_ms));
    println!(
        "  burst of {} ({} bursts, {failed} requests failed):",
        settings.burst_size, settings.burst_runs
    );
    println!("    first answer − pod start → listening  {}", first.line());
    println!("    last answer − pod start → listening   {}", last.line());
    println!("    pod listening → last answer (drain)   {}", drain.line());

    activator.proc.stop(Duration::from_secs(10));
    let log = std::fs::read_to_string(&activator.log).unwrap_or_default();
    let direct = log.matches("direct probe passed").count();
    let pods = settings.runs + settings.burst_runs;
    println!("  the activator's direct probe found {direct} of {pods} pods ready");
    sim.shutdown().await;
    json!({
        "name": name,
        "probe_interval": probe_interval,
        "single": singles,
        "burst": {
            "requests": settings.burst_size,
            "bursts": settings.burst_runs,
            "failed": failed,
            "first_answer_added": first.to_json(),
            "last_answer_added": last.to_json(),
            "drain": drain.to_json(),
        },
        "pods_found_ready_by_direct_probe": direct,
        "pods": pods,
    })
}
