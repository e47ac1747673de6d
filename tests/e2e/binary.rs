//! The `activator` binary as an operator runs it: config errors, signals, memory, the routes
//! subcommand, and `/metrics` as Prometheus reads it.

use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::support::{Activator, echo_route, host, metric, wait_process_gone, websocket};

const BIN: &str = env!("CARGO_BIN_EXE_activator");

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// The real binary, listening on ports it picked itself.
struct Running {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    _config: tempfile::NamedTempFile,
}

impl Running {
    /// With `routes` and both listeners on 127.0.0.1.
    async fn start(routes: &str) -> Running {
        Running::start_config(&format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nscaler_tick = \"50ms\"\n{routes}"
        ))
        .await
    }

    /// With the whole config `text`.
    async fn start_config(text: &str) -> Running {
        Running::start_config_env(text, &[]).await
    }

    /// With the whole config `text` and `env` added to the environment.
    async fn start_config_env(text: &str, env: &[(&str, &str)]) -> Running {
        let config = config_file(text);
        let mut child = Command::new(BIN)
            .envs(env.iter().copied())
            .args([
                "--config",
                config.path().to_str().unwrap(),
                "--log-format",
                "json",
                "--drain-timeout",
                "5s",
            ])
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (proxy, admin) = started_addresses(&mut child).await;
        Running {
            proxy,
            admin,
            child,
            _config: config,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id().unwrap() as i32
    }

    /// Sends SIGTERM and waits until readiness fails (`what` says at which stage).
    async fn terminate_until_not_ready(&self, what: &str) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let admin = self.admin;
        super::support::wait_until(what, || async {
            admin_status(admin, "/readyz").await == Some(503)
        })
        .await;
    }

    async fn get(&self, to: SocketAddr, host: &str, path: &str) -> (u16, String) {
        get(to, host, path).await
    }

    /// VmHWM (peak resident memory) in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// Reads a started activator's JSON log up to its start line and returns its proxy and admin
/// addresses; the rest of the log is drained in the background.
pub(super) async fn started_addresses(child: &mut Child) -> (SocketAddr, SocketAddr) {
    let started = started_event(child).await;
    let addr = |key: &str| started[key].as_str().unwrap().parse().unwrap();
    (addr("listen"), addr("admin"))
}

/// Reads a started activator's JSON log up to its start line and returns that line; the rest of
/// the log is drained in the background.
async fn started_event(child: &mut Child) -> serde_json::Value {
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let started = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the activator logs its start")
            .unwrap()
            .expect("the activator runs");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "activator started" {
            break event;
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    started
}

/// GET `path` from `to` with `Host: host`: the status and the body as text.
pub(super) async fn get(to: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(format!("http://{to}{path}"))
        .header("host", host)
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_bad_config_file_exits_with_a_message_naming_the_key() {
    let file = config_file(&echo_route("hello", "idle_timeout = \"ten seconds\""));
    let output = Command::new(BIN)
        .args(["--config", file.path().to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("routes[0].idle_timeout"),
        "names the key: {stderr}"
    );
    assert!(stderr.contains("ten seconds"), "names the value: {stderr}");
    assert!(
        stderr.contains("\"10s\""),
        "says what is expected: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one message: {stderr}");
}

#[tokio::test]
async fn a_bad_flag_from_the_environment_is_named() {
    let output = Command::new(BIN)
        .env("ACTIVATOR_DRAIN_TIMEOUT", "soon")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--drain-timeout") && stderr.contains("soon"),
        "{stderr}"
    );
}

/// How many workers the binary starts without a `workers` setting, run through `launcher` (a
/// command that runs the rest of its arguments, or none).
async fn default_workers_under(launcher: &[&str]) -> u64 {
    let config = config_file(&format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
        echo_route("hello", "")
    ));
    let path = config.path().to_str().unwrap();
    let args = ["--config", path, "--log-format", "json"];
    let mut command = match launcher {
        [] => Command::new(BIN),
        [program, rest @ ..] => {
            let mut command = Command::new(program);
            command.args(rest).arg(BIN);
            command
        }
    };
    let mut child = command
        .args(args)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = started_event(&mut child).await;
    started["workers"]
        .as_u64()
        .expect("the start line counts the workers")
}

#[tokio::test]
async fn without_a_workers_setting_every_cpu_the_process_may_use_serves() {
    let usable = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert_eq!(default_workers_under(&[]).await, usable);
    // A CPU affinity mask narrower than the machine (as `taskset` or a pinned pod gives) is
    // honoured: one allowed CPU, one worker.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let allowed = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("Linux says which CPUs a process may use");
    let first: String = allowed
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(default_workers_under(&["taskset", "-c", &first]).await, 1);
}

#[tokio::test]
async fn a_second_activator_on_a_taken_proxy_address_exits_saying_so_rather_than_sharing_it() {
    // The workers' sockets share their port (`SO_REUSEPORT`); another activator of the same user
    // must not join them and take half the connections unseen.
    let first = Running::start(&format!("workers = 2\n{}", echo_route("hello", ""))).await;
    // And an address any other program listens on is refused as well.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for taken in [first.proxy, other.local_addr().unwrap()] {
        let config = config_file(&format!(
            "listen = \"{taken}\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
            echo_route("hello", "")
        ));
        let output = tokio::time::timeout(
            Duration::from_secs(10),
            Command::new(BIN)
                .args(["--config", config.path().to_str().unwrap()])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the second activator exits at once")
        .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("cannot listen on {taken}")) && stderr.contains("in use"),
            "{stderr}"
        );
    }
    assert_eq!(first.get(first.proxy, &host("hello"), "/").await.0, 200);
}

#[tokio::test]
async fn several_workers_share_one_cold_start_and_one_set_of_counts() {
    let running = Running::start(&format!("workers = 4\n{}", echo_route("hello", ""))).await;
    // Each request on a connection of its own, so the kernel spreads them over the workers'
    // sockets; all are held by one cold start.
    let requests: Vec<_> = (0..40)
        .map(|_| {
            let proxy = running.proxy;
            tokio::spawn(async move { get(proxy, &host("hello"), "/").await.0 })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    // A response is counted when its task lets go of it, which can be just after its client
    // has the whole answer.
    wait_none_in_flight(running.admin, "every request is no longer in flight").await;
    let metrics = admin_text(running.admin, "/metrics").await;
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("route=\"hello\""))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {name} for hello in\n{metrics}"))
    };
    assert!(
        line("activator_requests_total{").ends_with(" 40"),
        "{metrics}"
    );
    assert!(
        line("activator_cold_starts_total{").ends_with(" 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sigterm_fails_readiness_drains_requests_stops_replicas_and_exits_zero() {
    let mut running = Running::start(&echo_route("hello", "")).await;
    let (status, body) = running.get(running.proxy, &host("hello"), "/").await;
    assert_eq!(status, 200);
    let replica: u64 = serde_json::from_str::<serde_json::Value>(&body).unwrap()["pid"]
        .as_u64()
        .unwrap();
    assert_eq!(running.get(running.admin, "x", "/readyz").await.0, 200);
    // The first request counts until its task lets go of it, which can be just after its
    // client has the whole answer: wait for that, or its count would pass for the slow one's.
    let admin = running.admin;
    wait_none_in_flight(admin, "the first request is no longer in flight").await;

    let slow = {
        let (proxy, h) = (running.proxy, host("hello"));
        tokio::spawn(async move {
            let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let request = Request::get(format!("http://{proxy}/delay/1000"))
                .header("host", h)
                .body(Full::default())
                .unwrap();
            client.request(request).await.map(|r| r.status().as_u16())
        })
    };
    super::support::wait_until("the slow request is in flight", || async {
        let text = admin_text(admin, "/routes").await;
        text.contains("\"in_flight\": 1")
    })
    .await;
    running
        .terminate_until_not_ready("readiness fails while draining")
        .await;

    assert_eq!(
        slow.await
            .unwrap()
            .expect("the in-flight request completes"),
        200
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), running.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
    wait_process_gone(replica).await;
}

#[tokio::test]
async fn sigterm_drains_an_open_websocket_tunnel_until_its_client_closes_it() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    // Two workers, as a 2-CPU machine runs by default: a tunnel lives on the worker whose
    // connection it upgraded.
    let mut running = Running::start(&format!("workers = 2\n{}", echo_route("hello", ""))).await;
    let (mut socket, _) = websocket(running.proxy, &host("hello"), "/ws").await;
    let mut echo = async |text: &str| {
        socket.send(Message::text(text)).await.unwrap();
        socket
            .next()
            .await
            .unwrap()
            .expect("the tunnel carries the echo")
    };
    assert_eq!(echo("before").await, Message::text("before"));
    running
        .terminate_until_not_ready("readiness fails while draining")
        .await;
    // README: an open tunnel counts as a request in flight, and requests in flight have the
    // drain timeout (5s here) to finish.
    assert_eq!(
        echo("while draining").await,
        Message::text("while draining")
    );
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "the activator waits for the tunnel"
    );
    socket.close(None).await.unwrap();
    while socket.next().await.is_some() {}
    drop(socket);
    // Well before the drain timeout: the tunnel, not the timeout, held the activator.
    let exit = tokio::time::timeout(Duration::from_secs(4), running.child.wait())
        .await
        .expect("the activator exits once the tunnel is closed")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
}

pub(super) async fn admin_status(admin: SocketAddr, path: &str) -> Option<u16> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .get(format!("http://{admin}{path}").parse().unwrap())
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// Waits until `/routes` shows no request in flight: a request counts until its task lets go of
/// it, which can be just after its client has the whole answer.
async fn wait_none_in_flight(admin: SocketAddr, what: &str) {
    super::support::wait_until(what, || async {
        admin_text(admin, "/routes")
            .await
            .contains("\"in_flight\": 0")
    })
    .await;
}

pub(super) async fn admin_text(admin: SocketAddr, path: &str) -> String {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let Ok(response) = client
        .get(format!("http://{admin}{path}").parse().unwrap())
        .await
    else {
        return String::new();
    };
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn a_large_upload_streams_through_without_growing_memory() {
    const MIB: usize = 1024 * 1024;
    const TOTAL_MIB: usize = 512;
    let running = Running::start(&echo_route("hello", "")).await;
    assert_eq!(running.get(running.proxy, &host("hello"), "/").await.0, 200);
    let before = running.peak_rss_kib();

    let chunk = Bytes::from(vec![7u8; MIB]);
    let frames = futures_util::stream::iter(
        (0..TOTAL_MIB).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
    );
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(format!("http://{}/upload", running.proxy))
        .header("host", host("hello"))
        .body(StreamBody::new(frames))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        echoed["bytes"],
        (TOTAL_MIB * MIB) as u64,
        "every byte arrived"
    );

    let growth_mib = (running.peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        growth_mib < 32,
        "peak memory grew {growth_mib} MiB for a {TOTAL_MIB} MiB upload"
    );
}

#[tokio::test]
async fn the_routes_subcommand_prints_a_table() {
    let running = Running::start(&echo_route("hello", "hosts = [\"hello.localhost\"]")).await;
    assert_eq!(running.get(running.proxy, &host("hello"), "/").await.0, 200);
    let output = Command::new(BIN)
        .args(["routes", "--admin", &running.admin.to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAMESPACE") && lines[0].contains("STATE"),
        "{table}"
    );
    assert!(
        lines[1].contains("hello") && lines[1].contains("ready") && lines[1].contains("1/1"),
        "{table}"
    );
    assert!(lines[1].contains("hello.localhost"), "{table}");

    let unreachable = Command::new(BIN)
        .args(["routes", "--admin", "127.0.0.1:1"])
        .output()
        .await
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach"));
}

#[tokio::test]
async fn metrics_carry_every_contract_name_and_pass_promtool() {
    let activator = Activator::start(&echo_route("hello", "")).await;
    assert_eq!(activator.get(&host("hello"), "/").await.status, 200);
    assert_eq!(activator.get("nobody.test", "/").await.status, 404);
    let text = activator.metrics().await;
    for name in [
        "activator_requests_total",
        "activator_request_duration_seconds_bucket",
        "activator_requests_in_flight",
        "activator_requests_queued",
        "activator_requests_rejected_total",
        "activator_cold_starts_total",
        "activator_cold_start_duration_seconds_bucket",
        "activator_scale_events_total",
        "activator_desired_replicas",
        "activator_ready_replicas",
        "process_resident_memory_bytes",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics:\n{text}"
        );
    }
    assert_eq!(
        metric(&text, r#"activator_ready_replicas{route="hello"}"#),
        1.0
    );

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is on the PATH (Debian package `prometheus`; .ci/run installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    activator.stop().await;
}

#[tokio::test]
async fn replicas_die_with_an_activator_killed_by_sigkill() {
    let mut running = Running::start(&echo_route("kept", "min_scale = 2")).await;
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let (status, body) = running.get(running.proxy, &host("kept"), "/").await;
        assert_eq!(status, 200);
        let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
        pids.insert(echo["pid"].as_u64().unwrap());
        if pids.len() == 2 {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "two replicas answered");
    running.child.start_kill().unwrap();
    let _ = running.child.wait().await;
    for pid in pids {
        wait_process_gone(pid).await;
    }
}

/// `THP_enabled` of `/proc/<pid>/status` (Linux 5.0 and later): whether transparent huge pages
/// may back the process's memory.
fn huge_pages_enabled(pid: &str) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("THP_enabled:"));
    line.expect("a kernel that reports THP_enabled").trim() == "1"
}

/// Starts the binary with `env` and a route, and returns whether huge pages are on for the
/// activator and for the replica that answered.
async fn huge_pages_of_activator_and_replica(env: &[(&str, &str)]) -> (bool, bool) {
    let running = Running::start_config_env(
        &format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
            echo_route("pages", "")
        ),
        env,
    )
    .await;
    let (status, body) = running.get(running.proxy, &host("pages"), "/").await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    let replica = echo["pid"].as_u64().unwrap().to_string();
    (
        huge_pages_enabled(&running.pid().to_string()),
        huge_pages_enabled(&replica),
    )
}

#[tokio::test]
async fn the_activator_runs_without_huge_pages_and_its_replicas_with_the_systems_setting() {
    let (activator, replica) = huge_pages_of_activator_and_replica(&[]).await;
    assert!(
        !activator,
        "huge pages are off for the activator: one per worker heap would cost 2 MiB each"
    );
    assert_eq!(
        replica,
        huge_pages_enabled("self"),
        "the replica runs with huge pages as the activator's own parent had them"
    );
    // The allocator, told to, turns them off itself before `main`: replicas still get the
    // setting the process was started with.
    let (_, replica) = huge_pages_of_activator_and_replica(&[("MIMALLOC_ALLOW_THP", "0")]).await;
    assert_eq!(
        replica,
        huge_pages_enabled("self"),
        "with MIMALLOC_ALLOW_THP=0, the replica still runs with huge pages as found"
    );
}

#[tokio::test]
async fn sigterm_keeps_serving_for_the_shutdown_delay_while_readiness_fails() {
    let mut running = Running::start(&format!(
        "shutdown_delay = \"1500ms\"\n{}",
        echo_route("hello", "")
    ))
    .await;
    assert_eq!(running.get(running.proxy, &host("hello"), "/").await.0, 200);
    running
        .terminate_until_not_ready("readiness fails at once")
        .await;
    // Still accepting new connections and serving them (a new client, a new connection).
    assert_eq!(running.get(running.proxy, &host("hello"), "/").await.0, 200);
    let exit = tokio::time::timeout(Duration::from_secs(10), running.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
}

#[tokio::test]
async fn a_504_body_carries_no_internals_but_the_log_line_with_its_request_id_does() {
    let config = config_file(&format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
        echo_route("stuck", "cold_start_timeout = \"500ms\"")
            .replace("stop_grace", "ready_path = \"/status/503\"\nstop_grace")
    ));
    let mut child = Command::new(BIN)
        .args([
            "--config",
            config.path().to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let proxy: SocketAddr = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the activator runs");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "activator started" {
            break event["listen"].as_str().unwrap().parse().unwrap();
        }
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::get(format!("http://{proxy}/"))
        .header("host", host("stuck"))
        .header("x-request-id", "trace-me-42")
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("trace-me-42"), "{body}");
    assert!(
        !body.contains("pid") && !body.contains("127.0.0.1") && !body.contains("answered 503"),
        "no internals in the body: {body}"
    );
    let detail = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the activator runs");
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if event["request_id"] == "trace-me-42" {
                return event;
            }
        }
    })
    .await
    .expect("a log line with the request id");
    let message = detail["message"].as_str().unwrap();
    assert_eq!(detail["level"], "WARN");
    assert!(
        message.contains("pid") && message.contains("answered 503"),
        "the log line has the detail: {message}"
    );
    child.start_kill().unwrap();
}

#[tokio::test]
async fn the_readmes_bad_config_example_says_what_the_readme_says() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(BIN)
        .current_dir(root)
        .args(["--config", "examples/bad.toml"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    assert!(
        readme.contains(stderr.trim()),
        "the README quotes what the activator says:\n{stderr}"
    );
}

#[tokio::test]
async fn listen_addresses_are_taken_as_people_write_them_and_a_bad_one_is_explained() {
    let output = Command::new(BIN)
        .args(["--listen", "127.0.0.1"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--listen") && stderr.contains("\"127.0.0.1\"") && stderr.contains(":8080"),
        "names the flag, the value and an example: {stderr}"
    );
    let running = Running::start_config(&format!(
        "listen = \"localhost:0\"\nadmin_listen = \":0\"\n{}",
        echo_route("hello", "")
    ))
    .await;
    let (proxy, admin) = (running.proxy, running.admin);
    assert!(proxy.ip().is_loopback(), "localhost is 127.0.0.1: {proxy}");
    assert!(
        admin.ip().is_unspecified(),
        ":PORT is every interface: {admin}"
    );
}

#[tokio::test]
async fn a_proxy_listening_on_every_ipv6_address_answers_ipv4_too() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("this machine has no IPv6 loopback; nothing to check");
        return;
    }
    let running = Running::start_config(&format!(
        "listen = \"[::]:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
        echo_route("hello", "")
    ))
    .await;
    for ip in ["127.0.0.1", "::1"] {
        let to = SocketAddr::new(ip.parse().unwrap(), running.proxy.port());
        let (status, _) = get(to, &host("hello"), "/").await;
        assert_eq!(status, 200, "through {to}");
    }
}

#[tokio::test]
async fn every_connection_up_to_max_connections_is_served_whatever_the_workers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let running = Running::start(&format!(
        "workers = 4\nmax_connections = 4\n{}",
        echo_route("hello", "min_scale = 1")
    ))
    .await;
    // Four connections open at once, wherever the kernel puts them: each is served.
    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(tokio::net::TcpStream::connect(running.proxy).await.unwrap());
    }
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", host("hello"));
    for connection in &mut connections {
        connection.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(10), connection.read_exact(&mut head))
            .await
            .expect("served while the other connections stay open")
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
}
