//! Cold-start benchmark: what a request to a workload at zero costs beyond the replica's own
//! start, with the process provider and in Kubernetes mode.
//!
//! Every cold request asks the echo backend for `/__stats`, whose answer says when that replica's
//! process started (the first instant of its `main`) and when it began to listen. Each run's
//! added time is its first request → first response byte, minus that same replica's start →
//! listening. Distributions are reported as p50, p90 and max with their sample size.
//!
//! 1. `backend`: the echo backend spawned directly: spawn → first accepted connection, and how
//!    that splits into spawn → its `main` and its own `main` → listening.
//! 2. `process`: single cold requests through the activator with the process provider (the route
//!    goes back to zero between them).
//! 3. `bursts`: 1,000 and 10,000 requests held through one cold start of a backend that takes a
//!    second to listen: every one must be answered 200; reported are the drain from the backend
//!    listening to the last answer, and the activator's RSS per held request (while held, and at
//!    the peak of the release).
//! 4. `kube`: the same on kube-sim, the activator's direct probe on and off, single requests and
//!    bursts of 1,000 (see `cold_start/kube.rs`).
//!
//! Results go to `bench-results/cold_start.json` under the target directory, and a summary to
//! stdout. Run with `cargo bench --bench cold_start`. Knobs (environment): `COLD_PARTS`
//! (comma-separated, default `backend,process,bursts,kube`), `COLD_STARTS` (single cold requests
//! per variant, 60), `COLD_BURSTS` (process burst sizes, `1000,10000`), `COLD_KUBE_BURST` (1000)
//! and `COLD_KUBE_BURST_RUNS` (10), `COLD_KUBE_TIME_SCALE` (0.01) and `COLD_KUBE_STARTUP_MS`
//! (50; the pods wait that plus up to one kubelet probe period before they listen).

#[path = "support/harness.rs"]
mod harness;
#[path = "cold_start/kube.rs"]
mod kube;
#[path = "cold_start/measure.rs"]
mod measure;
#[path = "cold_start/process.rs"]
mod process;

use serde_json::{Map, Value};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list<T: std::str::FromStr>(key: &str, default: &str) -> Vec<T> {
    std::env::var(key)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

fn main() {
    if harness::listing_only() {
        return;
    }
    raise_fd_limit();
    let parts: Vec<String> = env_list("COLD_PARTS", "backend,process,bursts,kube");
    let part = |name: &str| parts.iter().any(|p| p == name);
    let starts: usize = env_or("COLD_STARTS", 60);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut output = Map::new();
    if part("backend") {
        output.insert("backend_alone".into(), process::backend_alone(starts));
    }
    if part("process") {
        output.insert(
            "process".into(),
            runtime.block_on(process::cold_starts(starts)),
        );
    }
    if part("bursts") {
        let bursts: Vec<Value> = env_list::<usize>("COLD_BURSTS", "1000,10000")
            .into_iter()
            .map(|size| runtime.block_on(process::burst(size)))
            .collect();
        output.insert("bursts".into(), Value::Array(bursts));
    }
    if part("kube") {
        let settings = kube::Settings {
            runs: starts,
            burst_size: env_or("COLD_KUBE_BURST", 1000),
            burst_runs: env_or("COLD_KUBE_BURST_RUNS", 10),
            time_scale: env_or("COLD_KUBE_TIME_SCALE", 0.01),
            startup_ms: env_or("COLD_KUBE_STARTUP_MS", 50),
        };
        output.insert("kube".into(), runtime.block_on(kube::run(&settings)));
    }

    let path = harness::results_path("cold_start");
    let text = serde_json::to_string_pretty(&Value::Object(output)).expect("JSON");
    std::fs::write(&path, text).expect("results");
    println!("results written to {}", path.display());
}

/// Lets this process and the activator it starts hold 10,000 client and 10,000 upstream
/// connections at once.
fn raise_fd_limit() {
    const WANTED: u64 = 65_536;
    if rlimit::setrlimit(rlimit::Resource::NOFILE, WANTED, WANTED).is_err() {
        let _ = rlimit::increase_nofile_limit(WANTED);
    }
}
