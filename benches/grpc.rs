//! gRPC benchmark: unary calls per second through the activator (an h2c route), against the
//! backend directly and against nginx's `grpc_pass`, in one run, alternating the targets round by
//! round; and how many calls share one upstream HTTP/2 connection of the activator's.
//!
//! The backend is `activator-echo`, whose `/echo.Echo/*` methods answer a gRPC call with its own
//! messages and `grpc-status: 0`; the load generator is h2load (Debian `nghttp2-client`) sending
//! unary calls of a 100-byte message on `GRPC_CONNECTIONS` connections with `GRPC_STREAMS`
//! concurrent streams each. Reported per target: calls/s, mean latency (h2load reports no
//! percentiles for this mode), failed calls, and the proxy's CPU seconds per 100k calls.
//!
//! Needs `h2load` and `nginx` (Debian packages), and `taskset`. Run with
//! `cargo bench --bench grpc`. Knobs: `GRPC_ROUNDS` (3), `GRPC_SECONDS` (3),
//! `GRPC_CONNECTIONS` (16), `GRPC_STREAMS` (10), `LOAD_PROXY_CPUS` (0), `LOAD_GENERATOR_CPUS`
//! (1), `LOAD_BACKEND_CPUS` (1).

#[path = "support/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use harness::{
    ActivatorProc, Nginx, Scratch, clock_ticks_per_second, cpu_ticks, echo_route, http_get, median,
    pinned, require_tool, wait_for_line,
};
use serde_json::{Value, json};

struct Target {
    name: &'static str,
    addr: SocketAddr,
    cpu_pids: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    calls_per_second: f64,
    mean_ms: f64,
    succeeded: u64,
    failed: u64,
    cpu_per_100k: Option<f64>,
}

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
    let h2load = require_tool("h2load", "apt-get install nghttp2-client");
    let nginx = require_tool("nginx", "apt-get install nginx-light");
    require_tool("taskset", "apt-get install util-linux");
    let rounds: usize = env_or("GRPC_ROUNDS", 3);
    let seconds: u32 = env_or("GRPC_SECONDS", 3);
    let connections: u32 = env_or("GRPC_CONNECTIONS", 16);
    let streams: u32 = env_or("GRPC_STREAMS", 10);
    let proxy_cpus: String = env_or("LOAD_PROXY_CPUS", "0".to_owned());
    let generator_cpus: String = env_or("LOAD_GENERATOR_CPUS", "1".to_owned());
    let backend_cpus: String = env_or("LOAD_BACKEND_CPUS", "1".to_owned());
    let scratch = Scratch::new("grpc");

    let activator = ActivatorProc::start(
        &scratch,
        "",
        &echo_route(
            "grpc",
            &["127.0.0.1"],
            "min_scale = 1\nmax_scale = 1\nidle_timeout = \"1h\"\nupstream_protocol = \"h2c\"",
        ),
        Some(&proxy_cpus),
    );
    let ready = wait_for_line(&activator.log, "replica ready", Duration::from_secs(30));
    let backend: SocketAddr = serde_json::from_str::<Value>(&ready)
        .ok()
        .and_then(|line| line["addr"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no replica address in {ready}"));
    let backend_pid = stats(backend)["pid"].as_u64().expect("backend pid") as u32;
    let repinned = Command::new("taskset")
        .args(["-a", "-p", "-c", &backend_cpus, &backend_pid.to_string()])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(repinned, "cannot pin the backend to CPUs {backend_cpus}");

    let nginx = Nginx::start(&nginx, &scratch, "nginx", Some(&proxy_cpus), |port| {
        nginx_config(&scratch, port, backend)
    });

    let targets = [
        Target {
            name: "direct",
            addr: backend,
            cpu_pids: Vec::new(),
        },
        Target {
            name: "activator",
            addr: activator.proxy,
            cpu_pids: vec![activator.pid()],
        },
        Target {
            name: "nginx",
            addr: nginx.addr,
            cpu_pids: nginx.cpu_pids.clone(),
        },
    ];
    let message = scratch.path("call.bin");
    let mut frame = vec![0u8];
    frame.extend_from_slice(&100u32.to_be_bytes());
    frame.extend_from_slice(&[b'm'; 100]);
    std::fs::write(&message, frame).expect("call body");
    let generator = Generator {
        h2load: h2load.to_string_lossy().into_owned(),
        cpus: generator_cpus.clone(),
        message: message.to_string_lossy().into_owned(),
        connections,
        streams,
        ticks_per_second: clock_ticks_per_second(),
    };
    eprintln!("warming up every target");
    // The activator's own upstream connections: what the backend accepted while only the
    // activator's warm-up ran (its replica is the activator's, started before anything else).
    let mut upstream = json!(null);
    for target in &targets {
        let before = stats(backend);
        let sample = generator.run(target, 1);
        let after = stats(backend);
        if target.name == "activator" {
            let opened = after["connections"].as_u64().unwrap_or(0)
                - before["connections"].as_u64().unwrap_or(0);
            upstream = json!({
                "concurrent_streams": connections * streams,
                "calls": sample.succeeded,
                "connections_opened": opened,
            });
        }
    }

    let before = stats(backend);
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        for i in 0..targets.len() {
            let target = &targets[(i + round) % targets.len()];
            let sample = generator.run(target, seconds);
            eprintln!(
                "round {}/{rounds} {:<10} {:>9.0} calls/s  mean {:>6.3} ms  failed {}",
                round + 1,
                target.name,
                sample.calls_per_second,
                sample.mean_ms,
                sample.failed
            );
            samples.entry(target.name).or_default().push(sample);
        }
    }
    let after = stats(backend);
    let delta = |key: &str| after[key].as_u64().unwrap_or(0) - before[key].as_u64().unwrap_or(0);

    let mut report = serde_json::Map::new();
    for target in &targets {
        let runs = &samples[target.name];
        let pick = |f: fn(&Sample) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        report.insert(
            target.name.to_owned(),
            json!({
                "calls_per_second": pick(|s| s.calls_per_second),
                "mean_ms": pick(|s| s.mean_ms),
                "failed": runs.iter().map(|s| s.failed).sum::<u64>(),
                "succeeded": runs.iter().map(|s| s.succeeded).sum::<u64>(),
                "cpu_s_per_100k": median_of(runs.iter().filter_map(|s| s.cpu_per_100k).collect()),
            }),
        );
    }
    let ratio = |a: &str, b: &str, key: &str| {
        report[a][key].as_f64().unwrap_or(0.0) / report[b][key].as_f64().unwrap_or(f64::NAN)
    };
    let ratios = json!({
        "activator_vs_direct": ratio("activator", "direct", "calls_per_second"),
        "activator_vs_nginx": ratio("activator", "nginx", "calls_per_second"),
        "cpu_activator_vs_nginx": ratio("activator", "nginx", "cpu_s_per_100k"),
    });
    // Every connection the backend saw in the run came from the three targets' clients: the
    // direct runs' own, nginx's upstream connections and the activator's.
    let streams_per_connection = json!({
        "backend_requests": delta("requests"),
        "backend_connections": delta("connections"),
    });
    let output = json!({
        "activator_upstream_during_warm_up": upstream,
        "meta": {
            "date": Command::new("date").arg("-u").arg("+%Y-%m-%dT%H:%M:%SZ").output().ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()),
            "rounds": rounds, "seconds_per_run": seconds,
            "connections": connections, "streams_per_connection": streams,
            "cpus": { "proxy": proxy_cpus, "generator": generator_cpus, "backend": backend_cpus },
        },
        "results": report,
        "ratios": ratios,
        "backend": streams_per_connection,
    });
    let path = harness::results_path("grpc");
    std::fs::write(&path, serde_json::to_string_pretty(&output).expect("JSON")).expect("results");
    println!(
        "\n  {:<10} {:>11} {:>9} {:>13} {:>8}",
        "target", "calls/s", "mean ms", "CPU s/100k", "failed"
    );
    for target in &targets {
        let r = &output["results"][target.name];
        println!(
            "  {:<10} {:>11.0} {:>9.3} {:>13} {:>8}",
            target.name,
            r["calls_per_second"].as_f64().unwrap_or(0.0),
            r["mean_ms"].as_f64().unwrap_or(0.0),
            r["cpu_s_per_100k"]
                .as_f64()
                .map_or("-".to_owned(), |c| format!("{c:.2}")),
            r["failed"]
        );
    }
    println!("\n  ratios: {}", output["ratios"]);
    println!("  backend during the measured runs: {}", output["backend"]);
    println!(
        "  the activator's upstream during its warm-up: {}",
        output["activator_upstream_during_warm_up"]
    );
    println!("\nresults written to {}", path.display());
    drop(nginx);
    activator.proc.stop(Duration::from_secs(5));
}

/// The median of `values`, if there are any.
fn median_of(values: Vec<f64>) -> Option<f64> {
    (!values.is_empty()).then(|| median(&values))
}

fn stats(backend: SocketAddr) -> Value {
    let reply = http_get(backend, "127.0.0.1", "/__stats").expect("backend stats");
    serde_json::from_slice(&reply.body).expect("stats JSON")
}

struct Generator {
    h2load: String,
    cpus: String,
    message: String,
    connections: u32,
    streams: u32,
    ticks_per_second: f64,
}

impl Generator {
    fn run(&self, target: &Target, seconds: u32) -> Sample {
        let url = format!("http://{}/echo.Echo/Unary", target.addr);
        let (connections, streams, duration) = (
            self.connections.to_string(),
            self.streams.to_string(),
            seconds.to_string(),
        );
        let args = [
            "-c",
            &connections,
            "-m",
            &streams,
            "-D",
            &duration,
            "-d",
            &self.message,
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            &url,
        ];
        let before: u64 = target.cpu_pids.iter().map(|&p| cpu_ticks(p)).sum();
        let output = pinned(Some(&self.cpus), &self.h2load, &args)
            .output()
            .expect("running h2load");
        let after: u64 = target.cpu_pids.iter().map(|&p| cpu_ticks(p)).sum();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "h2load failed: {text}");
        // "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, ..."
        let requests = text
            .lines()
            .find(|l| l.starts_with("requests:"))
            .unwrap_or_default();
        let count = |name: &str| -> u64 {
            requests
                .trim_start_matches("requests:")
                .split(',')
                .find(|part| part.trim().ends_with(name))
                .and_then(|part| part.trim().split(' ').next()?.parse().ok())
                .unwrap_or(0)
        };
        let (succeeded, failed) = (count("succeeded"), count("failed") + count("errored"));
        // "finished in 3.00s, 7633.65 req/s, 1015.69KB/s"
        let rate = text
            .lines()
            .find(|l| l.starts_with("finished in"))
            .and_then(|l| l.split(',').nth(1))
            .and_then(|part| part.trim().split(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        // "time for request:   min   max   mean   sd   +/- sd"
        let mean_ms = text
            .lines()
            .find(|l| l.trim_start().starts_with("time for request:"))
            .and_then(|l| l.split_whitespace().nth(5))
            .map_or(0.0, parse_ms);
        let cpu_per_100k = (!target.cpu_pids.is_empty() && succeeded > 0).then(|| {
            (after - before) as f64 / self.ticks_per_second / succeeded as f64 * 100_000.0
        });
        Sample {
            calls_per_second: rate,
            mean_ms,
            succeeded,
            failed,
            cpu_per_100k,
        }
    }
}

/// h2load's durations: "1.23ms", "456us", "1.2s".
fn parse_ms(text: &str) -> f64 {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(0.0) * scale
}

/// nginx as a gRPC proxy: one worker, HTTP/2 on the listener, `grpc_pass` with upstream
/// keep-alive. Its default of 1,000 requests per connection (client and upstream) is raised, as
/// the load benchmark's nginx has it: h2load does not reconnect after the GOAWAY.
fn nginx_config(scratch: &Scratch, port: u16, backend: SocketAddr) -> String {
    let dir = scratch.dir().display();
    format!(
        "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log stderr warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {dir}; proxy_temp_path {dir};\n  \
         fastcgi_temp_path {dir}; uwsgi_temp_path {dir}; scgi_temp_path {dir};\n  \
         upstream backend {{ server {backend}; keepalive 128; keepalive_requests 1000000; }}\n  \
         server {{ listen 127.0.0.1:{port} http2; location / {{ grpc_pass grpc://backend; }} }}\n}}\n"
    )
}
