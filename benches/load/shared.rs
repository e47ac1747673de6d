//! The `shared` scenario: what a new user sees on a machine where the proxy does not get a core
//! to itself, the common case on a cluster node. Nothing is pinned: the load generator (wrk, one
//! thread, 64 keep-alive connections, `GET` of a 1 KiB file), the backend (nginx, one worker,
//! serving the file) and the proxy share every core. nginx as the proxy runs with
//! `worker_processes auto` and `keepalive 128` to the backend; the activator runs with its
//! defaults (one route, `min_scale = 1`, whose replica is that nginx backend, started by the
//! process provider). Targets alternate round by round.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::harness::{
    self, ActivatorProc, Nginx, Scratch, clock_ticks_per_second, cpu_ticks, http_get, require_tool,
    wait_for_line,
};
use super::{Sample, Target, env_list, env_or, print_table, summarise_one};

/// The wrk script: prints the run's totals and latency percentiles (microseconds) as one JSON
/// line, so nothing depends on wrk's human-readable units.
const WRK_REPORT: &str = r#"
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%d,"p99":%d,"p999":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

/// Runs the scenario and returns its report (also printed).
pub fn run() -> Value {
    let wrk = require_tool("wrk", "apt-get install wrk");
    let nginx = require_tool("nginx", "apt-get install nginx-light");
    let rounds: usize = env_or("LOAD_ROUNDS", 3);
    let seconds: u32 = env_or("LOAD_SHARED_SECONDS", 5);
    let scratch = Scratch::new("load-shared");
    let files = scratch.path("www/bytes");
    std::fs::create_dir_all(&files).expect("document root");
    std::fs::write(files.join("1024"), vec![b'x'; 1024]).expect("1 KiB file");
    let backend_template = scratch.path("backend.conf.in");
    std::fs::write(&backend_template, backend_config(&scratch)).expect("backend config");
    let script = scratch.path("report.lua");
    std::fs::write(&script, WRK_REPORT).expect("wrk script");

    let route = backend_route(&nginx.to_string_lossy(), &scratch, &backend_template);
    let (activator, backend) = start_activator(&harness::activator_binary(), &scratch, &route);
    let baseline_scratch = Scratch::new("load-shared-baseline");
    let baseline = std::env::var("LOAD_BASELINE_BIN")
        .ok()
        .map(|binary| start_activator(&binary, &baseline_scratch, &route).0);

    let nginx = Nginx::start(&nginx, &scratch, "proxy", None, |port| {
        proxy_config(&scratch, port, backend)
    });

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
    ];
    let wanted = env_list("LOAD_TARGETS");
    let targets: Vec<Target> = all_targets
        .into_iter()
        .filter(|t| t.name != "baseline" || baseline.is_some())
        .filter(|t| {
            wanted
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

    let generator = Wrk {
        wrk: wrk.to_string_lossy().into_owned(),
        script: script.to_string_lossy().into_owned(),
        ticks_per_second: clock_ticks_per_second(),
    };
    eprintln!("shared: warming up every target");
    for target in &targets {
        generator.run(target, 1);
    }
    let mut runs: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        for i in 0..targets.len() {
            let target = &targets[(i + round) % targets.len()];
            let sample = generator.run(target, seconds);
            eprintln!(
                "shared round {}/{rounds} {:<10} {:>9.0} req/s  p99 {:>7.3} ms  failed {}",
                round + 1,
                target.name,
                sample.ok as f64 / sample.seconds,
                sample.p99 * 1e3,
                sample.failed
            );
            runs.entry(target.name).or_default().push(sample);
        }
    }
    let mut report = serde_json::Map::new();
    report.insert("get_1k_c64_wrk".to_owned(), summarise_one(&targets, &runs));
    let report = Value::Object(report);
    println!("\nscenario shared (nothing pinned; wrk -t1 -c64, {seconds} s x {rounds} rounds)");
    print_table(&report);
    drop(nginx);
    activator.proc.stop(Duration::from_secs(5));
    if let Some(baseline) = baseline {
        baseline.proc.stop(Duration::from_secs(5));
    }
    json!({
        "setup": {
            "pinned": false, "generator": "wrk -t1 -c64", "backend": "nginx, 1 worker",
            "nginx_proxy": "worker_processes auto, keepalive 128",
            "rounds": rounds, "seconds_per_run": seconds,
        },
        "results": report,
    })
}

/// Starts `binary` with `route` and its defaults otherwise; returns it and its replica's address.
fn start_activator(binary: &str, scratch: &Scratch, route: &str) -> (ActivatorProc, SocketAddr) {
    let activator = ActivatorProc::start_binary(binary, scratch, "", route, None);
    let ready = wait_for_line(&activator.log, "replica ready", Duration::from_secs(30));
    let backend: SocketAddr = serde_json::from_str::<Value>(&ready)
        .ok()
        .and_then(|line| line["addr"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no replica address in {ready}"));
    (activator, backend)
}

/// A route whose replica is nginx serving the 1 KiB file: a shell writes the config for the
/// port the process provider chose, then becomes nginx.
fn backend_route(nginx: &str, scratch: &Scratch, template: &std::path::Path) -> String {
    let dir = scratch.dir().display();
    let template = template.display();
    let script = format!(
        "sed \"s/@PORT@/$1/\" {template} > {dir}/backend-$1.conf && exec {nginx} -p {dir} -e stderr -c {dir}/backend-$1.conf"
    );
    format!(
        "[[routes]]\nname = \"nginx\"\nhosts = [\"127.0.0.1\"]\nmin_scale = 1\nmax_scale = 1\nidle_timeout = \"1h\"\n[routes.process]\ncommand = [\"sh\", \"-c\", {script:?}, \"sh\", \"{{port}}\"]\nstop_grace = \"2s\"\n"
    )
}

/// The backend: nginx with one worker serving files, its listen port left as `@PORT@`.
fn backend_config(scratch: &Scratch) -> String {
    let dir = scratch.dir().display();
    format!(
        r#"worker_processes 1;
daemon off;
pid {dir}/backend-@PORT@.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/b_client_body;
    proxy_temp_path {dir}/b_proxy;
    fastcgi_temp_path {dir}/b_fastcgi;
    uwsgi_temp_path {dir}/b_uwsgi;
    scgi_temp_path {dir}/b_scgi;
    server {{
        listen 127.0.0.1:@PORT@;
        root {dir}/www;
    }}
}}
"#
    )
}

/// nginx as the proxy, as a user would set it up on a shared machine: a worker per core,
/// upstream keep-alive.
fn proxy_config(scratch: &Scratch, port: u16, backend: SocketAddr) -> String {
    let dir = scratch.dir().display();
    format!(
        r#"worker_processes auto;
daemon off;
pid {dir}/proxy.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream backend {{
        server {backend};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"#
    )
}

struct Wrk {
    wrk: String,
    script: String,
    ticks_per_second: f64,
}

impl Wrk {
    fn run(&self, target: &Target, seconds: u32) -> Sample {
        let url = format!("http://{}/bytes/1024", target.addr);
        let duration = format!("{seconds}s");
        let before: u64 = target.cpu_pids.iter().map(|&p| cpu_ticks(p)).sum();
        let output = Command::new(&self.wrk)
            .args(["-t1", "-c64", "-d", &duration, "-s", &self.script, &url])
            .output()
            .expect("running wrk");
        let after: u64 = target.cpu_pids.iter().map(|&p| cpu_ticks(p)).sum();
        assert!(
            output.status.success(),
            "wrk failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no report from wrk in: {stdout}"));
        let r: Value = serde_json::from_str(line).expect("wrk report JSON");
        let n = |key: &str| r[key].as_u64().unwrap_or(0);
        let failed = n("connect") + n("read") + n("write") + n("status") + n("timeout");
        Sample {
            ok: n("requests").saturating_sub(n("status")),
            failed,
            seconds: n("duration_us") as f64 / 1e6,
            p50: n("p50") as f64 / 1e6,
            p99: n("p99") as f64 / 1e6,
            p999: n("p999") as f64 / 1e6,
            cpu_seconds: (!target.cpu_pids.is_empty())
                .then(|| after.saturating_sub(before) as f64 / self.ticks_per_second),
        }
    }
}
