//! gRPC and HTTP/2 to replicas, tried with clients that are not ours: a grpcio server cold-started
//! by its first call and reached over h2c, every kind of call, its own errors passed unchanged,
//! the activator's own answers as gRPC statuses, and a python `websockets` client through a cold
//! start.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::support::{Activator, echo, host, metric};

/// A script of the tests' Python helpers.
fn script(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "grpc", name]
        .iter()
        .collect();
    path.display().to_string()
}

/// A route whose replica is the grpcio test server, spoken to over h2c.
fn grpc_route(name: &str, settings: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nupstream_protocol = \"h2c\"\n{settings}\n\
         [routes.process]\ncommand = [\"python3\", {:?}, \"--port\", \"{{port}}\"]\n",
        script("server.py")
    )
}

/// Runs the gRPC client against `proxy` with `:authority` `authority`; its JSON answer.
async fn call(
    proxy: SocketAddr,
    authority: &str,
    timeout: &str,
    calls: &[&str],
) -> serde_json::Value {
    let output = tokio::process::Command::new("python3")
        .arg(script("client.py"))
        .arg(proxy.to_string())
        .arg(authority)
        .args(["--timeout", timeout])
        .args(calls)
        .output()
        .await
        .expect("python3 runs (grpcio from PyPI: scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the gRPC client failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn a_grpc_service_cold_starts_on_its_first_call_and_serves_every_kind_of_call() {
    let activator = Activator::start(&grpc_route("grpc", "")).await;
    let h = host("grpc");
    let results = call(
        activator.proxy,
        &h,
        "30",
        &["unary", "server_stream", "client_stream", "bidi", "fail"],
    )
    .await;
    assert_eq!(results["unary"]["code"], "OK", "{results}");
    assert!(
        results["unary"]["messages"][0]
            .as_str()
            .unwrap()
            .starts_with("hello|")
    );
    assert_eq!(
        results["server_stream"]["messages"],
        serde_json::json!(["0", "1", "2", "3", "4"])
    );
    assert_eq!(
        results["client_stream"]["messages"],
        serde_json::json!(["a,b,c"])
    );
    assert_eq!(results["bidi"]["messages"], serde_json::json!(["X", "Y"]));
    // The replica's own trailers-only error passes unchanged.
    assert_eq!(results["fail"]["code"], "NOT_FOUND");
    assert_eq!(results["fail"]["details"], "no such thing");
    assert!(
        results["fail"]["trailers"]
            .get("x-activator-error")
            .is_none()
    );
    let metrics = activator.metrics().await;
    assert_eq!(
        metric(&metrics, r#"activator_cold_starts_total{route="grpc"}"#),
        1.0
    );
    activator.stop().await;
}

#[tokio::test]
async fn concurrent_calls_of_every_kind_are_all_served() {
    let activator = Activator::start(&grpc_route("grpc", "")).await;
    let h = host("grpc");
    let calls: Vec<_> = (0..8)
        .map(|_| call(activator.proxy, &h, "30", &["unary", "bidi"]))
        .collect();
    for results in futures_util::future::join_all(calls).await {
        assert_eq!(results["unary"]["code"], "OK", "{results}");
        assert_eq!(results["bidi"]["code"], "OK", "{results}");
    }
    activator.stop().await;
}

#[tokio::test]
async fn grpc_clients_get_the_activators_own_answers_as_grpc_statuses() {
    // A replica that never listens: held requests wait for a cold start that never ends.
    let never = "[[routes]]\nname = \"never\"\ncold_start_timeout = \"300ms\"\nmax_queued = 1\n\
                 [routes.process]\ncommand = [\"sleep\", \"600\"]\n";
    let activator = Activator::start(never).await;

    let unknown = call(activator.proxy, "nobody.test", "30", &["unary"]).await;
    assert_eq!(unknown["unary"]["code"], "NOT_FOUND", "{unknown}");
    assert_eq!(
        unknown["unary"]["trailers"]["x-activator-error"],
        "no_route"
    );
    assert!(
        unknown["unary"]["details"]
            .as_str()
            .unwrap()
            .contains("nobody.test")
    );

    let held = call(activator.proxy, &host("never"), "30", &["unary"]).await;
    assert_eq!(held["unary"]["code"], "DEADLINE_EXCEEDED", "{held}");
    assert_eq!(
        held["unary"]["trailers"]["x-activator-error"],
        "cold_start_timeout"
    );
    activator.stop().await;

    // The queue bound, as UNAVAILABLE.
    let activator = Activator::start(&never.replace(
        "cold_start_timeout = \"300ms\"",
        "cold_start_timeout = \"20s\"",
    ))
    .await;
    let h = host("never");
    let waiting = activator.spawn_get(&h, "/");
    activator
        .wait_route("never", "holding one", |r| r.queued == 1)
        .await;
    let full = call(activator.proxy, &h, "30", &["unary"]).await;
    assert_eq!(full["unary"]["code"], "UNAVAILABLE", "{full}");
    assert_eq!(full["unary"]["trailers"]["x-activator-error"], "queue_full");
    waiting.abort();
    activator.stop().await;
}

#[tokio::test]
async fn a_held_grpc_call_waits_no_longer_than_its_grpc_timeout() {
    use http_body_util::{BodyExt, Full};
    let never = "[[routes]]\nname = \"never\"\ncold_start_timeout = \"60s\"\n\
                 [routes.process]\ncommand = [\"sleep\", \"600\"]\n";
    let activator = Activator::start(never).await;
    // An HTTP/2 client that sends grpc-timeout but never gives up itself: the answer it gets is
    // the activator's.
    let stream = tokio::net::TcpStream::connect(activator.proxy)
        .await
        .unwrap();
    let (mut send, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{}/echo.Echo/Unary", host("never")))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(Full::new(bytes::Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        send.send_request(request),
    )
    .await
    .expect("answered at the call's deadline, not the route's 60s")
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert_eq!(
        response.headers()["x-activator-error"],
        "cold_start_timeout"
    );
    let _ = response.into_body().collect().await;
    assert_eq!(activator.route("never").await.queued, 0);
    activator.stop().await;
}

#[tokio::test]
async fn a_python_websockets_client_is_tunnelled_through_a_cold_start() {
    let route = format!(
        "[[routes]]\nname = \"ws\"\n[routes.process]\ncommand = [{:?}, \"--port\", \"{{port}}\"]\n",
        echo()
    );
    let activator = Activator::start(&route).await;
    let output = tokio::process::Command::new("python3")
        .arg(script("websocket_client.py"))
        .arg(activator.proxy.to_string())
        .arg(host("ws"))
        .arg("70000")
        .output()
        .await
        .expect("python3 runs (websockets from PyPI: scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        "match",
        "{}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metrics = activator.metrics().await;
    assert_eq!(
        metric(&metrics, r#"activator_cold_starts_total{route="ws"}"#),
        1.0
    );
    activator.stop().await;
}

#[tokio::test]
async fn a_grpc_deployment_behind_an_h2c_service_port_cold_starts_on_kube_sim() {
    let sim = super::kube::sim_with(
        0.01,
        vec![kube_sim::ImageMapping {
            image: "example/grpc-echo".into(),
            command: format!(
                "exec python3 {} --bind {{ip}} --port {{port}}",
                script("server.py")
            ),
        }],
    )
    .await;
    sim.apply_yaml(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: greeter
  namespace: default
  labels: {app: greeter, activator.dev/enabled: "true"}
spec:
  replicas: 0
  selector: {matchLabels: {app: greeter}}
  template:
    metadata: {labels: {app: greeter}}
    spec:
      containers:
        - name: grpc
          image: example/grpc-echo
          ports: [{name: grpc, containerPort: 50051}]
          readinessProbe: {tcpSocket: {port: grpc}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: default}
spec:
  selector: {app: greeter}
  ports: [{name: api, port: 80, targetPort: grpc, appProtocol: kubernetes.io/h2c}]
"#,
    )
    .unwrap();
    let activator = super::kube::activator(&sim, "").await;
    let results = call(
        activator.proxy,
        &host("greeter"),
        "30",
        &["unary", "server_stream", "bidi"],
    )
    .await;
    for kind in ["unary", "server_stream", "bidi"] {
        assert_eq!(results[kind]["code"], "OK", "{results}");
    }
    assert_eq!(sim.counters().count("patch", "deployments/scale"), 1);
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn an_http1_client_reaches_an_h2c_replica_with_its_host_and_fields() {
    let route = format!(
        "[[routes]]\nname = \"h2\"\nupstream_protocol = \"h2c\"\n\
         [routes.process]\ncommand = [{:?}, \"--port\", \"{{port}}\"]\n",
        echo()
    );
    let activator = Activator::start(&route).await;
    let request = http::Request::get(format!("http://{}/who?x=1", activator.proxy))
        .header("host", host("h2"))
        .header("user-agent", "probe/1")
        .header("accept-language", "da")
        .header("accept-language", "en")
        .body(http_body_util::Full::default())
        .unwrap();
    let answer = activator.send(request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let echo = answer.json();
    assert_eq!(
        echo["version"], "HTTP/2.0",
        "the replica was spoken to in HTTP/2"
    );
    assert_eq!(echo["headers"]["user-agent"], "probe/1");
    assert_eq!(
        echo["headers"]["accept-language"],
        serde_json::json!(["da", "en"])
    );
    assert_eq!(echo["path"], "/who");
    assert_eq!(
        echo["hostname"],
        host("h2"),
        "the routed host became :authority"
    );
    activator.stop().await;
}
