//! Cold-start benchmark with the process provider.
//!
//! 1. The backend's own start: spawn `activator-echo` and connect until it accepts, many times.
//! 2. Cold starts through the activator: with the route at zero replicas, the time from sending
//!    the first request to receiving the first byte of its response, many times (the route
//!    scales back to zero between them). What the activator adds is that time minus the
//!    backend's median spawn-to-listening time.
//! 3. Bursts: 1,000 and 10,000 concurrent requests held through one cold start of a backend that
//!    takes a second to start listening. Every request must be answered 200; reported are the
//!    time to drain the burst after the backend is up, and the activator's RSS growth per held
//!    request (while held, and at the peak of the release).
//!
//! Results go to `bench-results/cold_start.json` under the target directory, and a summary to
//! stdout. Run with `cargo bench --bench cold_start`. Knobs (environment): `COLD_STARTS` (60),
//! `COLD_BURSTS` (comma-separated sizes, default `1000,10000`).
//!
//! The Kubernetes provider's variant (with and without direct probing) is not here yet: it needs
//! the Kubernetes provider and kube-sim wired into the activator first.

#[path = "support/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{ActivatorProc, Scratch, echo_route, http_get, quantile, rss_kib, status_kib};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "cold.default.127.0.0.1.nip.io";
/// How long the burst test's backend waits before it listens.
const BURST_STARTUP: Duration = Duration::from_secs(1);

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if harness::listing_only() {
        return;
    }
    raise_fd_limit();
    let starts: usize = env_or("COLD_STARTS", 60);
    let bursts: Vec<usize> = std::env::var("COLD_BURSTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let spawn_ms = backend_spawn_to_listening(starts);
    let first_byte_ms = runtime.block_on(cold_starts(starts));
    let spawn_median = quantile(&spawn_ms, 0.5);
    let added: Vec<f64> = first_byte_ms.iter().map(|t| t - spawn_median).collect();
    let summary = |values: &[f64]| {
        json!({
            "p50_ms": quantile(values, 0.5), "p99_ms": quantile(values, 0.99),
            "min_ms": values.first(), "max_ms": values.last(), "count": values.len(),
        })
    };
    println!(
        "backend spawn to listening: p50 {:.2} ms, p99 {:.2} ms ({} runs)",
        spawn_median,
        quantile(&spawn_ms, 0.99),
        spawn_ms.len()
    );
    println!(
        "cold request to first byte: p50 {:.2} ms, p99 {:.2} ms ({} cold starts)",
        quantile(&first_byte_ms, 0.5),
        quantile(&first_byte_ms, 0.99),
        first_byte_ms.len()
    );
    println!(
        "added by the activator:     p50 {:.2} ms, p99 {:.2} ms",
        quantile(&added, 0.5),
        quantile(&added, 0.99)
    );

    let mut burst_results = Vec::new();
    for size in bursts {
        let result = runtime.block_on(burst(size));
        println!(
            "burst of {size}: {} answered 200, {} failed; drained {:.0} ms after the backend listened; RSS +{:.2} KiB per held request while held, +{:.2} KiB at the peak",
            result["ok"],
            result["failed"],
            result["drain_ms"].as_f64().unwrap_or(f64::NAN),
            result["held_kib_per_request"].as_f64().unwrap_or(f64::NAN),
            result["peak_kib_per_request"].as_f64().unwrap_or(f64::NAN),
        );
        burst_results.push(result);
    }

    let output = json!({
        "backend_spawn_to_listening": summary(&spawn_ms),
        "cold_request_to_first_byte": summary(&first_byte_ms),
        "added_by_activator": summary(&added),
        "bursts": burst_results,
    });
    let path = harness::results_path("cold_start");
    std::fs::write(&path, serde_json::to_string_pretty(&output).expect("JSON")).expect("results");
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

/// Sorted milliseconds from spawning the echo backend to its first accepted connection.
fn backend_spawn_to_listening(runs: usize) -> Vec<f64> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let port = harness::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(harness::echo_binary());
        command.args(["--port", &port.to_string()]);
        let started = Instant::now();
        let child = harness::Proc::spawn("activator-echo", command, None);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the echo backend never listened"
            );
            std::hint::spin_loop();
        }
        times.push(started.elapsed().as_secs_f64() * 1e3);
        drop(child);
    }
    times.sort_by(f64::total_cmp);
    times
}

/// Sorted milliseconds from sending a request to a cold route to the first byte of its answer.
async fn cold_starts(runs: usize) -> Vec<f64> {
    let scratch = Scratch::new("cold-start");
    let activator = ActivatorProc::start(
        &scratch,
        "scaler_tick = \"20ms\"",
        &echo_route("cold", &[], "idle_timeout = \"100ms\""),
        None,
    );
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs {
        wait_until_idle(activator.admin).await;
        let mut stream = TcpStream::connect(activator.proxy)
            .await
            .expect("connecting to the activator");
        stream.set_nodelay(true).expect("nodelay");
        let request =
            format!("GET /bytes/16 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
        let sent = Instant::now();
        stream.write_all(request.as_bytes()).await.expect("sending");
        let mut first = [0u8; 1];
        let n = stream.read(&mut first).await.expect("reading");
        let elapsed = sent.elapsed();
        assert_eq!(
            n, 1,
            "cold start {run}: the activator closed without answering"
        );
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.expect("reading");
        let head = String::from_utf8_lossy(&rest);
        assert!(
            head.starts_with("TTP/1.1 200"),
            "cold start {run}: answered {head:.40}"
        );
        times.push(elapsed.as_secs_f64() * 1e3);
    }
    activator.proc.stop(Duration::from_secs(10));
    times.sort_by(f64::total_cmp);
    times
}

/// The route's entry in `/routes`.
fn route_status(admin: SocketAddr) -> Option<Value> {
    let reply = http_get(admin, "admin", "/routes").ok()?;
    let routes: Value = serde_json::from_slice(&reply.body).ok()?;
    routes.as_array()?.first().cloned()
}

/// Waits until the route has scaled to zero and its replica has gone.
async fn wait_until_idle(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = tokio::task::spawn_blocking(move || route_status(admin))
            .await
            .ok()
            .flatten();
        if status.is_some_and(|s| {
            s["state"] == "idle" && s["ready_replicas"] == 0 && s["desired_replicas"] == 0
        }) {
            // The stopped replica's process exits right after it leaves the ready set.
            tokio::time::sleep(Duration::from_millis(20)).await;
            return;
        }
        assert!(Instant::now() < deadline, "the route never scaled to zero");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `size` requests held through one cold start of a backend that takes [`BURST_STARTUP`] to
/// listen.
async fn burst(size: usize) -> Value {
    let scratch = Scratch::new("burst");
    let startup = BURST_STARTUP.as_millis().to_string();
    let mut route = echo_route(
        "cold",
        &[],
        &format!("idle_timeout = \"1h\"\nmax_queued = {size}"),
    );
    route = route.replace(
        "\"--port\", \"{port}\"",
        &format!("\"--port\", \"{{port}}\", \"--startup-delay-ms\", \"{startup}\""),
    );
    let activator = ActivatorProc::start(&scratch, "", &route, None);
    let pid = activator.pid();

    // Open every connection first, so the requests themselves go out together.
    let mut connections = Vec::with_capacity(size);
    for _ in 0..size {
        let stream = TcpStream::connect(activator.proxy)
            .await
            .expect("connecting to the activator");
        connections.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_kib(pid);
    // Reset the peak RSS so VmHWM shows this burst's peak.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");

    let sent = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let request =
                    format!("GET /bytes/16 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
                stream.write_all(request.as_bytes()).await?;
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).await?;
                Ok::<bool, std::io::Error>(answer.starts_with(b"HTTP/1.1 200"))
            })
        })
        .collect();

    // While the backend starts, wait until every request is held, and read the RSS then.
    let mut held_rss = None;
    while sent.elapsed() < BURST_STARTUP {
        let status = tokio::task::spawn_blocking(move || route_status(activator.admin))
            .await
            .ok()
            .flatten();
        if status.is_some_and(|s| s["queued"].as_u64() == Some(size as u64)) {
            held_rss = Some(rss_kib(pid));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_held_after = sent.elapsed();

    let mut ok = 0usize;
    let mut failed = 0usize;
    for task in tasks {
        match task.await {
            Ok(Ok(true)) => ok += 1,
            _ => failed += 1,
        }
    }
    let total = sent.elapsed();
    let peak = status_kib(pid, "VmHWM");
    activator.proc.stop(Duration::from_secs(10));

    let per_request = |kib: u64| kib.saturating_sub(rss_before) as f64 / size as f64;
    // The backend listens about BURST_STARTUP after the first request (plus its own start).
    let drain = total.saturating_sub(BURST_STARTUP);
    json!({
        "requests": size,
        "ok": ok,
        "failed": failed,
        "all_held_after_ms": held_rss.map(|_| all_held_after.as_secs_f64() * 1e3),
        "first_request_to_last_answer_ms": total.as_secs_f64() * 1e3,
        "backend_startup_ms": BURST_STARTUP.as_secs_f64() * 1e3,
        "drain_ms": drain.as_secs_f64() * 1e3,
        "rss_before_kib": rss_before,
        "rss_held_kib": held_rss,
        "rss_peak_kib": peak,
        "held_kib_per_request": held_rss.map(per_request),
        "peak_kib_per_request": per_request(peak),
    })
}
