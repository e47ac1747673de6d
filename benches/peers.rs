//! What sharing the work costs: three activator processes in Kubernetes mode against kube-sim,
//! serving 1,000 routes (Deployments at zero replicas, no traffic), measured twice in one run:
//!
//! - `alone`: each process on its own (no peer Service; each elects itself on a Lease of its
//!   own), which is what a single activator costs today;
//! - `shared`: the same three as replicas of one activator (the peer Service lists them; the
//!   Lease holder polls the other two every second and decides for all).
//!
//! For each: CPU time of every process over the measured span (in millicores), and the API
//! requests per second the three make together, by verb and resource (kube-sim's counters; a
//! watch counts once, when it opens). Also the size of one `/peer/report`.
//!
//! Results go to `bench-results/peers.json` under the target directory, and a table to stdout.
//! Run with `cargo bench --bench peers`; `PEERS_ROUTES` (1000) and `PEERS_SECONDS` (30) change
//! the size and the span.

#[path = "support/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use harness::{Proc, Scratch, clock_ticks_per_second, cpu_ticks, http_get};
use kube_sim::{Sim, SimConfig};
use serde_json::json;

const REPLICAS: u8 = 3;

fn main() {
    if harness::listing_only() {
        return;
    }
    let routes: usize = env_or("PEERS_ROUTES", 1000);
    let seconds: u64 = env_or("PEERS_SECONDS", 30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for kube-sim");
    let sim = runtime
        .block_on(Sim::start(SimConfig::default()))
        .expect("kube-sim starts");
    sim.apply_yaml(&workloads(routes)).expect("the workloads");
    sim.apply_yaml(PEER_SERVICE).expect("the peer Service");

    let mut results = Vec::new();
    println!(
        "{:>7} {:>8} {:>12} {:>12} {:>12} {:>10}",
        "mode", "routes", "leader m", "follower m", "follower m", "API req/s"
    );
    for mode in ["alone", "shared"] {
        let result = measure(&sim, mode, routes, seconds);
        let cpu: Vec<String> = result["millicores"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| format!("{:.1}", m.as_f64().unwrap_or(f64::NAN)))
            .collect();
        println!(
            "{mode:>7} {routes:>8} {:>12} {:>12} {:>12} {:>10.2}",
            cpu.first().map_or("-", String::as_str),
            cpu.get(1).map_or("-", String::as_str),
            cpu.get(2).map_or("-", String::as_str),
            result["api_requests_per_second"]
                .as_f64()
                .unwrap_or(f64::NAN)
        );
        println!(
            "        API requests by verb and resource: {}",
            result["api_requests"]
        );
        if let Some(bytes) = result["report_bytes"].as_u64() {
            println!("        one /peer/report: {bytes} bytes");
        }
        results.push(result);
    }
    let path = harness::results_path("peers");
    std::fs::write(&path, serde_json::to_string_pretty(&results).expect("JSON")).expect("results");
    println!("results written to {}", path.display());
    runtime.block_on(sim.shutdown());
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `count` Deployments at zero replicas, each with its Service.
fn workloads(count: usize) -> String {
    (0..count)
        .map(|n| {
            format!(
                r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: svc{n}
  namespace: default
  labels: {{app: svc{n}, activator.dev/enabled: "true"}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: svc{n}}}}}
  template:
    metadata: {{labels: {{app: svc{n}}}}}
    spec:
      containers: [{{name: echo, image: mendhak/http-https-echo}}]
---
apiVersion: v1
kind: Service
metadata: {{name: svc{n}, namespace: default}}
spec:
  selector: {{app: svc{n}}}
  ports: [{{name: http, port: 80}}]
---
"#
            )
        })
        .collect()
}

const PEER_SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: activator, namespace: default}
spec:
  ports: [{name: admin, port: 9090}]
"#;

/// A hand-written EndpointSlice listing one replica.
fn slice(identity: &str, admin: SocketAddr) -> String {
    format!(
        r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {identity}
  namespace: default
  labels: {{kubernetes.io/service-name: activator}}
addressType: IPv4
ports: [{{name: admin, port: {port}}}]
endpoints:
  - addresses: ["{ip}"]
    targetRef: {{kind: Pod, namespace: default, name: {identity}}}
"#,
        ip = admin.ip(),
        port = admin.port()
    )
}

/// A free port on `ip`.
fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One mode: start three processes, wait until they settle, measure for `seconds`.
fn measure(sim: &Sim, mode: &str, routes: usize, seconds: u64) -> serde_json::Value {
    let scratch = Scratch::new(&format!("peers-{mode}"));
    let subnet = [127, 200 + u8::from(mode == "shared"), 77];
    let mut processes = Vec::new();
    for n in 0..REPLICAS {
        let ip = IpAddr::V4(Ipv4Addr::new(subnet[0], subnet[1], subnet[2], n + 2));
        let proxy = SocketAddr::new(ip, free_port(ip));
        let admin = SocketAddr::new(ip, free_port(ip));
        let identity = format!("activator-{mode}-{n}");
        let (lease, peers) = if mode == "shared" {
            sim.apply_yaml(&slice(&identity, admin)).expect("a slice");
            ("default/activator".to_owned(), "default/activator")
        } else {
            (format!("default/{identity}"), "default/nobody")
        };
        let log = scratch.path(&format!("{identity}.log"));
        let mut command = std::process::Command::new(harness::activator_binary());
        command
            .args(["--kube", "--log-format", "json"])
            .args(["--listen", &proxy.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--lease", &lease, "--peer-service", peers])
            .env("KUBECONFIG", sim.kubeconfig_path())
            .env("POD_NAME", &identity)
            .env("RUST_LOG", "info");
        processes.push((Proc::spawn(&identity, command, Some(&log)), admin, log));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (_, admin, log) in &processes {
        while !http_get(*admin, "admin", "/readyz").is_ok_and(|r| r.status == 200) {
            assert!(
                Instant::now() < deadline,
                "not ready; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Every route served, and (shared) one leader polling: then let start-up work settle.
    let leader = loop {
        let leaders: Vec<usize> = processes
            .iter()
            .enumerate()
            .filter(|(_, (_, admin, _))| {
                http_get(*admin, "admin", "/metrics").is_ok_and(|r| {
                    String::from_utf8_lossy(&r.body)
                        .lines()
                        .any(|l| l == "activator_leader 1")
                })
            })
            .map(|(n, _)| n)
            .collect();
        if mode == "alone" || leaders.len() == 1 {
            break leaders.first().copied().unwrap_or(0);
        }
        assert!(Instant::now() < deadline, "no single leader: {leaders:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(5));
    let report_bytes = (mode == "shared")
        .then(|| http_get(processes[(leader + 1) % 3].1, "admin", "/peer/report").ok())
        .flatten()
        .filter(|r| r.status == 200)
        .map(|r| r.body.len());
    sim.reset_counters();
    let before: Vec<u64> = processes
        .iter()
        .map(|(p, _, _)| cpu_ticks(p.pid()))
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let elapsed = started.elapsed().as_secs_f64();
    let after: Vec<u64> = processes
        .iter()
        .map(|(p, _, _)| cpu_ticks(p.pid()))
        .collect();
    let counts: BTreeMap<String, u64> = sim.counters().counts;
    let ticks = clock_ticks_per_second();
    // The leader first.
    let mut order: Vec<usize> = (0..processes.len()).collect();
    order.sort_by_key(|n| *n != leader);
    let millicores: Vec<f64> = order
        .iter()
        .map(|&n| (after[n] - before[n]) as f64 / ticks / elapsed * 1000.0)
        .collect();
    let total: u64 = counts.values().sum();
    for (process, _, _) in processes {
        process.stop(Duration::from_secs(10));
    }
    json!({
        "mode": mode,
        "routes": routes,
        "replicas": REPLICAS,
        "seconds": elapsed,
        "millicores": millicores,
        "api_requests": counts,
        "api_requests_per_second": total as f64 / elapsed,
        "report_bytes": report_bytes,
    })
}
