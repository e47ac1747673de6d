//! The cold start with the process provider: the echo backend's own start, single cold
//! requests through the activator, and bursts held through one cold start.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::harness::{self, ActivatorProc, Scratch, echo_route, rss_kib, status_kib};
use crate::measure::{
    ColdRun, Connections, Distribution, ReplicaStart, cold_request, report_runs, route_status,
    unix_us, wait_until_idle,
};

/// How long the burst test's backend waits before it listens.
const BURST_STARTUP: Duration = Duration::from_secs(1);

/// The echo backend started directly, `runs` times: from the spawn call to the first accepted
/// connection, and how that splits into before its `main` (exec, dynamic loading) and its own
/// start to listening.
pub fn backend_alone(runs: usize) -> Value {
    let (mut outside, mut before_main, mut own) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let port = harness::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(harness::echo_binary());
        command.args(["--port", &port.to_string()]);
        let spawned_wall = SystemTime::now();
        let spawned = Instant::now();
        let child = harness::Proc::spawn("activator-echo", command, None);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                spawned.elapsed() < Duration::from_secs(10),
                "the echo backend never listened"
            );
            std::hint::spin_loop();
        }
        outside.push(spawned.elapsed().as_secs_f64() * 1e3);
        let stats = harness::http_get(addr, "echo", "/__stats").expect("the echo's /__stats");
        let start = ReplicaStart::from_stats(&stats.body).expect("its startup");
        before_main.push((start.started_us - unix_us(spawned_wall)) / 1e3);
        own.push(start.to_listening_ms);
        drop(child);
    }
    let parts = [
        (
            "spawn_to_listening",
            "spawn → accepts a connection ",
            outside,
        ),
        (
            "spawn_to_main",
            "  of which spawn → its main   ",
            before_main,
        ),
        ("main_to_listening", "  of which main → listening   ", own),
    ];
    println!("echo backend alone, spawned directly");
    let mut out = serde_json::Map::new();
    for (key, label, values) in parts {
        let distribution = Distribution::new(values);
        println!("  {label} {}", distribution.line());
        out.insert(key.to_owned(), distribution.to_json());
    }
    Value::Object(out)
}

/// `runs` cold requests through an activator whose route scales back to zero between them.
pub async fn cold_starts(runs: usize) -> Value {
    let scratch = Scratch::new("cold-start");
    let activator = ActivatorProc::start(
        &scratch,
        "scaler_tick = \"20ms\"",
        &echo_route("cold", &[], "idle_timeout = \"100ms\""),
        None,
    );
    let mut results: Vec<ColdRun> = Vec::with_capacity(runs);
    for _ in 0..runs {
        wait_until_idle(activator.admin).await;
        // The stopped replica's process exits right after it leaves the ready set.
        tokio::time::sleep(Duration::from_millis(20)).await;
        results.push(cold_request(activator.proxy).await);
    }
    activator.proc.stop(Duration::from_secs(10));
    report_runs(
        "process provider: a request to a route at zero (TCP-connect readiness probe)",
        &results,
    )
}

/// `size` requests held through one cold start of a backend that takes [`BURST_STARTUP`] to
/// listen: whether all are answered, the drain after the backend listened, and the
/// activator's memory per held request.
pub async fn burst(size: usize) -> Value {
    let scratch = Scratch::new("burst");
    let startup = BURST_STARTUP.as_millis().to_string();
    let route = echo_route(
        "cold",
        &[],
        &format!("idle_timeout = \"1h\"\nmax_queued = {size}"),
    )
    .replace(
        "\"--port\", \"{port}\"",
        &format!("\"--port\", \"{{port}}\", \"--startup-delay-ms\", \"{startup}\""),
    );
    // The default connection limit is half the open-files limit left after a reserve: on a
    // machine whose limit is 20,000 that is 9,488, and the rest of a 10,000 burst would wait in
    // the kernel's backlog until a held one is answered. Room for the whole burst, as an
    // operator expecting such bursts would set it.
    let top = format!("max_connections = {}", size + 1000);
    let activator = ActivatorProc::start(&scratch, &top, &route, None);
    let pid = activator.pid();

    // Before the connections open, and once they are open and idle: a held request costs what
    // its request adds to its connection, and what the connection itself costs.
    let rss_idle = rss_kib(pid);
    let connections = Connections::open(activator.proxy, size).await;
    let rss_before = rss_kib(pid);
    // Reset the peak RSS so that VmHWM shows this burst's peak.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let burst = connections.send();
    let sent = burst.sent;

    // While the backend starts, wait until every request is held, and read the RSS then.
    let mut held_rss = None;
    while sent.elapsed() < BURST_STARTUP {
        let admin = activator.admin;
        let status = tokio::task::spawn_blocking(move || route_status(admin))
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
    let result = burst.answers().await;
    let peak = status_kib(pid, "VmHWM");
    activator.proc.stop(Duration::from_secs(10));

    let per_request = |kib: u64| kib.saturating_sub(rss_before) as f64 / size as f64;
    let per_connection = |kib: u64| kib.saturating_sub(rss_idle) as f64 / size as f64;
    let out = json!({
        "requests": size,
        "ok": result.ok,
        "failed": result.failed,
        "all_held_after_ms": held_rss.map(|_| all_held_after.as_secs_f64() * 1e3),
        "first_request_to_last_answer_ms": result.last_answer_ms,
        "backend_start_to_listening_ms": result.replica.map(|r| r.to_listening_ms),
        "drain_ms": result.drain_ms,
        "rss_before_connections_kib": rss_idle,
        "rss_before_kib": rss_before,
        "connection_kib": per_connection(rss_before),
        "connection_and_held_kib": held_rss.map(per_connection),
        "rss_held_kib": held_rss,
        "rss_peak_kib": peak,
        "held_kib_per_request": held_rss.map(per_request),
        "peak_kib_per_request": per_request(peak),
    });
    println!(
        "burst of {size}: {} answered 200, {} failed; drained {:.0} ms after the backend listened; RSS +{:.2} KiB per held request while held (+{:.2} KiB with its connection), +{:.2} KiB at the peak",
        result.ok,
        result.failed,
        result.drain_ms.unwrap_or(f64::NAN),
        held_rss.map_or(f64::NAN, per_request),
        held_rss.map_or(f64::NAN, per_connection),
        per_request(peak),
    );
    out
}
