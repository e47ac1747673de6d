//! Warm-path load benchmark, in two scenarios run one after the other (`LOAD_SCENARIOS`,
//! default `shared,pinned`); each alternates its targets round by round so machine drift hits
//! all of them alike.
//!
//! - `shared` (reported first, `load/shared.rs`): nothing pinned. wrk (one thread, 64
//!   connections, `GET` of 1 KiB), an nginx backend with one worker, and the proxy share the
//!   machine's cores, as on a cluster node; nginx as the proxy runs `worker_processes auto`, the
//!   activator its defaults.
//! - `pinned`: the proxy on a core of its own (`LOAD_PROXY_CPUS`), oha and the echo backend on
//!   the other; nginx and HAProxy with one worker each. Workloads (oha, HTTP/1.1 keep-alive):
//!   `get_1k_c64`, `GET /bytes/1024` on 64 connections as fast as it goes; `get_1k_rate`, the
//!   same at a fixed rate, for latency (corrected for coordinated omission); `post_1m_c8`,
//!   `POST /upload` of 1 MiB on 8 connections.
//!
//! Reported per target: requests/s, p50/p99/p99.9 latency, the proxy process's CPU seconds per
//! 100k requests (utime + stime from `/proc/PID/stat`, nginx's master and workers added up), and
//! the activator's ratios to the others: of the medians over the rounds, and round by round
//! (the median and range of the ratios of runs taken side by side, which machine drift moves
//! less). Results go to `bench-results/load.json` under the
//! target directory, and a table to stdout.
//!
//! Needs `wrk`, `oha` (`cargo install oha`), `nginx` and `haproxy` (Debian packages), and
//! `taskset`. Run with `cargo bench --bench load`; BENCHMARKS.md has the commands and results.
//! Knobs (environment): `LOAD_SCENARIOS`, `LOAD_ROUNDS` (3), `LOAD_SHARED_SECONDS` (5),
//! `LOAD_SECONDS` (3, pinned), `LOAD_RATE` (5000 req/s), `LOAD_PROXY_CPUS` (0),
//! `LOAD_GENERATOR_CPUS` (1), `LOAD_BACKEND_CPUS` (1), `LOAD_TARGETS` and `LOAD_WORKLOADS`
//! (comma-separated names, default all), and `LOAD_BASELINE_BIN`: another activator build to run
//! as the target `baseline` (with its own replica), to compare builds.

#[path = "support/harness.rs"]
mod harness;
#[path = "load/shared.rs"]
mod shared;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use harness::{
    ActivatorProc, Nginx, Proc, Scratch, clock_ticks_per_second, cpu_ticks, echo_route, http_get,
    median, pinned, require_tool, wait_for_line, wait_listening,
};
use serde_json::{Value, json};

/// One workload for the load generator.
struct Workload {
    name: &'static str,
    path: &'static str,
    connections: u32,
    /// Requests per second, or as fast as it goes.
    rate: Option<u32>,
    /// A request body of this many bytes (POST).
    upload: Option<usize>,
}

/// Something the generator sends traffic to.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    /// Processes whose CPU time is the proxy's; empty for the backend itself.
    cpu_pids: Vec<u32>,
}

/// One generator run against one target.
#[derive(Debug, Clone)]
struct Sample {
    ok: u64,
    failed: u64,
    seconds: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    cpu_seconds: Option<f64>,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(key: &str) -> Option<Vec<String>> {
    std::env::var(key)
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
}

fn main() {
    if harness::listing_only() {
        return;
    }
    let scenarios = env_list("LOAD_SCENARIOS")
        .unwrap_or_else(|| vec!["shared".to_owned(), "pinned".to_owned()]);
    let mut report = serde_json::Map::new();
    for scenario in &scenarios {
        let result = match scenario.as_str() {
            "shared" => shared::run(),
            "pinned" => pinned_scenario(),
            other => {
                eprintln!(
                    "error: LOAD_SCENARIOS names `{other}`; the scenarios are shared and pinned"
                );
                std::process::exit(2)
            }
        };
        report.insert(scenario.clone(), result);
    }
    let meta = json!({
        "date": Command::new("date").arg("-u").arg("+%Y-%m-%dT%H:%M:%SZ").output().ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "baseline": std::env::var("LOAD_BASELINE_BIN").ok(),
    });
    let output = json!({ "meta": meta, "scenarios": report });
    let path = harness::results_path("load");
    std::fs::write(&path, serde_json::to_string_pretty(&output).expect("JSON")).expect("results");
    println!("\nresults written to {}", path.display());
}

/// The `pinned` scenario: the proxy on cores of its own (`LOAD_PROXY_CPUS`), the generator
/// (oha) and the echo backend elsewhere; nginx and HAProxy with one worker each.
fn pinned_scenario() -> Value {
    let oha = require_tool("oha", "cargo install oha");
    let nginx = require_tool("nginx", "apt-get install nginx-light");
    let haproxy = require_tool("haproxy", "apt-get install haproxy");
    require_tool("taskset", "apt-get install util-linux");

    let rounds: usize = env_or("LOAD_ROUNDS", 3);
    let seconds: u32 = env_or("LOAD_SECONDS", 3);
    let rate: u32 = env_or("LOAD_RATE", 5000);
    let proxy_cpus: String = env_or("LOAD_PROXY_CPUS", "0".to_owned());
    let generator_cpus: String = env_or("LOAD_GENERATOR_CPUS", "1".to_owned());
    let backend_cpus: String = env_or("LOAD_BACKEND_CPUS", "1".to_owned());
    let scratch = Scratch::new("load");

    // The activator and its one replica; every other target uses that same replica.
    let (activator, backend) = start_activator(
        &harness::activator_binary(),
        &scratch,
        &proxy_cpus,
        &backend_cpus,
    );
    // Optionally another build of the activator (with its own replica), to compare builds.
    let baseline_scratch = Scratch::new("load-baseline");
    let baseline = std::env::var("LOAD_BASELINE_BIN")
        .ok()
        .map(|binary| start_activator(&binary, &baseline_scratch, &proxy_cpus, &backend_cpus).0);

    let nginx = Nginx::start(&nginx, &scratch, "nginx", Some(&proxy_cpus), |port| {
        nginx_config(&scratch, port, backend)
    });
    let haproxy_port = harness::free_port();
    let haproxy_cfg = scratch.path("haproxy.cfg");
    std::fs::write(&haproxy_cfg, haproxy_config(haproxy_port, backend)).expect("haproxy.cfg");
    let haproxy_proc = Proc::spawn(
        "haproxy",
        pinned(
            Some(&proxy_cpus),
            &haproxy,
            &["-db", "-f", &haproxy_cfg.to_string_lossy()],
        ),
        Some(&scratch.path("haproxy.log")),
    );
    let haproxy_addr = SocketAddr::from(([127, 0, 0, 1], haproxy_port));
    wait_listening(
        haproxy_addr,
        Duration::from_secs(10),
        &scratch.path("haproxy.log"),
    );

    let all_targets = vec![
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
            name: "baseline",
            addr: baseline.as_ref().map_or(activator.proxy, |b| b.proxy),
            cpu_pids: baseline.as_ref().map_or_else(Vec::new, |b| vec![b.pid()]),
        },
        Target {
            name: "nginx",
            addr: nginx.addr,
            cpu_pids: nginx.cpu_pids.clone(),
        },
        Target {
            name: "haproxy",
            addr: haproxy_addr,
            cpu_pids: vec![haproxy_proc.pid()],
        },
    ];
    let wanted_targets = env_list("LOAD_TARGETS");
    let targets: Vec<Target> = all_targets
        .into_iter()
        .filter(|t| t.name != "baseline" || baseline.is_some())
        .filter(|t| {
            wanted_targets
                .as_ref()
                .is_none_or(|w| w.iter().any(|n| n == t.name))
        })
        .collect();
    for target in &targets {
        let reply = http_get(target.addr, "127.0.0.1", "/bytes/1024")
            .unwrap_or_else(|e| panic!("{} does not answer: {e}", target.name));
        assert!(
            reply.status == 200 && reply.body.len() == 1024,
            "{} answered {} with {} bytes",
            target.name,
            reply.status,
            reply.body.len()
        );
    }

    let upload = scratch.path("upload.bin");
    std::fs::write(&upload, vec![b'u'; 1 << 20]).expect("upload body");
    let all_workloads = [
        Workload {
            name: "get_1k_c64",
            path: "/bytes/1024",
            connections: 64,
            rate: None,
            upload: None,
        },
        Workload {
            name: "get_1k_rate",
            path: "/bytes/1024",
            connections: 64,
            rate: Some(rate),
            upload: None,
        },
        Workload {
            name: "post_1m_c8",
            path: "/upload",
            connections: 8,
            rate: None,
            upload: Some(1 << 20),
        },
    ];
    let wanted_workloads = env_list("LOAD_WORKLOADS");
    let workloads: Vec<&Workload> = all_workloads
        .iter()
        .filter(|w| {
            wanted_workloads
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == w.name))
        })
        .collect();

    let generator = Generator {
        oha: oha.to_string_lossy().into_owned(),
        cpus: generator_cpus.clone(),
        upload: upload.to_string_lossy().into_owned(),
        ticks_per_second: clock_ticks_per_second(),
    };
    eprintln!("warming up every target");
    for target in &targets {
        for workload in &workloads {
            generator.run(target, workload, 1);
        }
    }

    let mut samples: BTreeMap<(&str, &str), Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        for workload in &workloads {
            // Rotate the order each round so no target always runs first or last.
            for i in 0..targets.len() {
                let target = &targets[(i + round) % targets.len()];
                let sample = generator.run(target, workload, seconds);
                eprintln!(
                    "round {}/{rounds} {:<12} {:<10} {:>9.0} req/s  p99 {:>7.3} ms  failed {}",
                    round + 1,
                    workload.name,
                    target.name,
                    sample.ok as f64 / sample.seconds,
                    sample.p99 * 1e3,
                    sample.failed
                );
                samples
                    .entry((workload.name, target.name))
                    .or_default()
                    .push(sample);
            }
        }
    }

    let report = summarise(&workloads, &targets, &samples);
    println!(
        "\nscenario pinned (proxy on CPUs {proxy_cpus}; oha on {generator_cpus}; backend on {backend_cpus})"
    );
    print_table(&report);
    drop((nginx, haproxy_proc));
    activator.proc.stop(Duration::from_secs(5));
    if let Some(baseline) = baseline {
        baseline.proc.stop(Duration::from_secs(5));
    }
    json!({
        "setup": {
            "pinned": true, "rounds": rounds, "seconds_per_run": seconds, "rate": rate,
            "cpus": { "proxy": proxy_cpus, "generator": generator_cpus, "backend": backend_cpus },
        },
        "results": report,
    })
}

/// Starts `binary` as an activator with one warm route, `127.0.0.1`, whose one replica (the echo
/// backend) is moved to `backend_cpus`; returns it and the replica's address.
fn start_activator(
    binary: &str,
    scratch: &Scratch,
    proxy_cpus: &str,
    backend_cpus: &str,
) -> (ActivatorProc, SocketAddr) {
    let activator = ActivatorProc::start_binary(
        binary,
        scratch,
        "",
        &echo_route(
            "echo",
            &["127.0.0.1"],
            "min_scale = 1\nmax_scale = 1\nidle_timeout = \"1h\"",
        ),
        Some(proxy_cpus),
    );
    let ready = wait_for_line(&activator.log, "replica ready", Duration::from_secs(30));
    let backend: SocketAddr = serde_json::from_str::<Value>(&ready)
        .ok()
        .and_then(|line| line["addr"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no replica address in {ready}"));
    let stats = http_get(backend, "127.0.0.1", "/__stats").expect("backend stats");
    let backend_pid = serde_json::from_slice::<Value>(&stats.body).expect("stats JSON")["pid"]
        .as_u64()
        .expect("backend pid") as u32;
    let repinned = Command::new("taskset")
        .args(["-a", "-p", "-c", backend_cpus, &backend_pid.to_string()])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        repinned,
        "cannot pin the backend (pid {backend_pid}) to CPUs {backend_cpus}"
    );
    (activator, backend)
}

struct Generator {
    oha: String,
    cpus: String,
    upload: String,
    ticks_per_second: f64,
}

impl Generator {
    fn run(&self, target: &Target, workload: &Workload, seconds: u32) -> Sample {
        let url = format!("http://{}{}", target.addr, workload.path);
        let duration = format!("{seconds}s");
        let connections = workload.connections.to_string();
        let mut args = vec![
            "--no-tui",
            "--output-format",
            "json",
            "-z",
            &duration,
            "-c",
            &connections,
        ];
        let rate = workload.rate.map(|r| r.to_string());
        if let Some(rate) = &rate {
            args.extend(["-q", rate, "--latency-correction"]);
        }
        if workload.upload.is_some() {
            args.extend(["-m", "POST", "-D", &self.upload]);
        }
        args.push(&url);
        let before: u64 = target.cpu_pids.iter().map(|&p| cpu_ticks(p)).sum();
        let output = pinned(Some(&self.cpus), &self.oha, &args)
            .output()
            .expect("running oha");
        let after: u64 = target.cpu_pids.iter().map(|&p| cpu_ticks(p)).sum();
        assert!(
            output.status.success(),
            "oha failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let result: Value = serde_json::from_slice(&output.stdout).expect("oha JSON");
        let codes = result["statusCodeDistribution"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let ok = codes.get("200").and_then(Value::as_u64).unwrap_or(0);
        let other_codes: u64 = codes
            .iter()
            .filter(|(code, _)| *code != "200")
            .filter_map(|(_, n)| n.as_u64())
            .sum();
        // Requests cut off by the end of the run are not failures.
        let errors: u64 = result["errorDistribution"]
            .as_object()
            .map(|errors| {
                errors
                    .iter()
                    .filter(|(what, _)| !what.contains("deadline"))
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        let latency = |key: &str| {
            result["latencyPercentiles"][key]
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        Sample {
            ok,
            failed: other_codes + errors,
            seconds: result["summary"]["total"].as_f64().unwrap_or(f64::NAN),
            p50: latency("p50"),
            p99: latency("p99"),
            p999: latency("p99.9"),
            cpu_seconds: (!target.cpu_pids.is_empty())
                .then(|| after.saturating_sub(before) as f64 / self.ticks_per_second),
        }
    }
}

fn summarise(
    workloads: &[&Workload],
    targets: &[Target],
    samples: &BTreeMap<(&str, &str), Vec<Sample>>,
) -> Value {
    let mut out = serde_json::Map::new();
    for workload in workloads {
        let runs: BTreeMap<&str, Vec<Sample>> = targets
            .iter()
            .filter_map(|t| Some((t.name, samples.get(&(workload.name, t.name))?.clone())))
            .collect();
        out.insert(workload.name.to_owned(), summarise_one(targets, &runs));
    }
    Value::Object(out)
}

/// One workload's table: medians over rounds per target, and the activator's ratios.
fn summarise_one(targets: &[Target], samples: &BTreeMap<&str, Vec<Sample>>) -> Value {
    let mut per_target = serde_json::Map::new();
    for target in targets {
        let Some(runs) = samples.get(target.name) else {
            continue;
        };
        let pick = |f: fn(&Sample) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let ok: u64 = runs.iter().map(|s| s.ok).sum();
        let cpu: Option<f64> = runs.iter().map(|s| s.cpu_seconds).sum();
        per_target.insert(
            target.name.to_owned(),
            json!({
                "requests_per_second": pick(|s| s.ok as f64 / s.seconds),
                "p50_ms": pick(|s| s.p50 * 1e3),
                "p99_ms": pick(|s| s.p99 * 1e3),
                "p99_9_ms": pick(|s| s.p999 * 1e3),
                "cpu_seconds_per_100k": cpu.map(|c| c / ok.max(1) as f64 * 1e5),
                "requests_ok": ok,
                "requests_failed": runs.iter().map(|s| s.failed).sum::<u64>(),
                "runs": runs.len(),
            }),
        );
    }
    let ratio = |other: &str, key: &str| {
        let a = per_target.get("activator")?[key].as_f64()?;
        let b = per_target.get(other)?[key].as_f64()?;
        Some(a / b)
    };
    let ratios = json!({
        "rps_vs_direct": ratio("direct", "requests_per_second"),
        "rps_vs_nginx": ratio("nginx", "requests_per_second"),
        "rps_vs_haproxy": ratio("haproxy", "requests_per_second"),
        "p99_vs_nginx": ratio("nginx", "p99_ms"),
        "p99_vs_haproxy": ratio("haproxy", "p99_ms"),
        "cpu_vs_nginx": ratio("nginx", "cpu_seconds_per_100k"),
        "cpu_vs_haproxy": ratio("haproxy", "cpu_seconds_per_100k"),
        "rps_vs_baseline": ratio("baseline", "requests_per_second"),
        "p99_vs_baseline": ratio("baseline", "p99_ms"),
        "cpu_vs_baseline": ratio("baseline", "cpu_seconds_per_100k"),
    });
    json!({
        "targets": per_target,
        "activator_ratios": ratios,
        "activator_round_ratios": round_ratios(samples),
    })
}

/// The activator's ratio to each other target round by round (the k-th run of each target is
/// from the same round, minutes apart at most): on a machine whose neighbours come and go, a
/// ratio of two runs taken side by side varies less than a ratio of medians taken over the
/// whole run. Per metric: the median, the lowest and highest, and how many rounds.
fn round_ratios(samples: &BTreeMap<&str, Vec<Sample>>) -> Value {
    type Metric = fn(&Sample) -> Option<f64>;
    let metrics: [(&str, Metric); 3] = [
        ("rps", |s| Some(s.ok as f64 / s.seconds)),
        ("p99", |s| Some(s.p99)),
        ("cpu", |s| Some(s.cpu_seconds? / s.ok.max(1) as f64)),
    ];
    let Some(activator) = samples.get("activator") else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    for (other, runs) in samples.iter().filter(|(name, _)| **name != "activator") {
        let mut per_metric = serde_json::Map::new();
        for (metric, value) in metrics {
            let ratios: Vec<f64> = activator
                .iter()
                .zip(runs)
                .filter_map(|(a, b)| Some(value(a)? / value(b)?))
                .filter(|r| r.is_finite())
                .collect();
            if ratios.is_empty() {
                continue;
            }
            let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            per_metric.insert(
                metric.to_owned(),
                json!({ "median": median(&ratios), "min": low, "max": high, "rounds": ratios.len() }),
            );
        }
        out.insert((*other).to_owned(), Value::Object(per_metric));
    }
    Value::Object(out)
}

fn print_table(report: &Value) {
    let Some(workloads) = report.as_object() else {
        return;
    };
    for (workload, result) in workloads {
        println!("\n{workload}");
        println!(
            "  {:<10} {:>10} {:>9} {:>9} {:>9} {:>13} {:>8}",
            "target", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU s/100k", "failed"
        );
        let Some(targets) = result["targets"].as_object() else {
            continue;
        };
        for (name, t) in targets {
            let number = |key: &str| t[key].as_f64().unwrap_or(f64::NAN);
            let cpu = t["cpu_seconds_per_100k"]
                .as_f64()
                .map_or("-".to_owned(), |c| format!("{c:.2}"));
            println!(
                "  {:<10} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>13} {:>8}",
                name,
                number("requests_per_second"),
                number("p50_ms"),
                number("p99_ms"),
                number("p99_9_ms"),
                cpu,
                t["requests_failed"]
            );
        }
        let ratios = &result["activator_ratios"];
        let show = |key: &str| {
            ratios[key]
                .as_f64()
                .map_or("-".to_owned(), |r| format!("{r:.2}"))
        };
        println!(
            "  activator req/s: {}x direct, {}x nginx, {}x haproxy; p99: {}x nginx, {}x haproxy; CPU: {}x nginx, {}x haproxy",
            show("rps_vs_direct"),
            show("rps_vs_nginx"),
            show("rps_vs_haproxy"),
            show("p99_vs_nginx"),
            show("p99_vs_haproxy"),
            show("cpu_vs_nginx"),
            show("cpu_vs_haproxy"),
        );
        if let Some(per_round) = result["activator_round_ratios"].as_object() {
            for (other, metrics) in per_round {
                let show = |metric: &str| {
                    let m = &metrics[metric];
                    match (m["median"].as_f64(), m["min"].as_f64(), m["max"].as_f64()) {
                        (Some(median), Some(low), Some(high)) => {
                            format!("{median:.2}x ({low:.2}-{high:.2})")
                        }
                        _ => "-".to_owned(),
                    }
                };
                println!(
                    "  activator / {other} round by round, median (range) of {} rounds: req/s {}, p99 {}, CPU per request {}",
                    metrics["rps"]["rounds"],
                    show("rps"),
                    show("p99"),
                    show("cpu"),
                );
            }
        }
        if ratios["rps_vs_baseline"].is_f64() {
            println!(
                "  activator vs baseline build: req/s {}x, p99 {}x, CPU {}x",
                show("rps_vs_baseline"),
                show("p99_vs_baseline"),
                show("cpu_vs_baseline"),
            );
        }
    }
}

fn nginx_config(scratch: &Scratch, port: u16, backend: SocketAddr) -> String {
    let dir = scratch.dir().display();
    format!(
        r#"# nginx as a reverse proxy with upstream keep-alive (one worker, like one activator core).
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    upstream echo {{
        server {backend};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Stream request bodies as the activator does, instead of spooling them to disk.
            proxy_request_buffering off;
        }}
    }}
}}
"#
    )
}

fn haproxy_config(port: u16, backend: SocketAddr) -> String {
    format!(
        r#"# HAProxy in HTTP mode as its configuration manual describes a reverse proxy: keep-alive on
# both sides (the default), idle server connections reused ("http-reuse safe", the default),
# X-Forwarded-For added. One thread, like one activator core.
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend bench
    bind 127.0.0.1:{port}
    default_backend echo

backend echo
    http-reuse safe
    server echo1 {backend}
"#
    )
}
