//! Fault injection, through the library and through the HTTP control API: error statuses with
//! Retry-After, latency, one-shot conflicts, and a kubelet that never marks pods ready.

#[path = "support/start.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube_sim::{ConflictFault, ErrorFault, Latency};
use serde_json::{Value, json};
use support::{WAIT, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn lease(name: &str) -> Lease {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"holderIdentity": "a"}}))
        .expect("a lease")
}

/// One raw HTTP/1.1 exchange; returns the response head and body.
async fn http(address: SocketAddr, method: &str, path: &str, body: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn injected_errors_answer_with_a_status_and_retry_after() {
    let sim = start().await;
    let leases: Api<Lease> = Api::default_namespaced(sim.client().expect("client"));
    sim.faults().add_error(ErrorFault {
        verb: Some("list".into()),
        resource: Some("leases".into()),
        status: 429,
        share: 1.0,
        retry_after_seconds: Some(3),
        count: Some(1),
    });
    let (head, body) = http(
        sim.address(),
        "GET",
        "/apis/coordination.k8s.io/v1/namespaces/default/leases",
        "",
    )
    .await;
    assert!(head.starts_with("http/1.1 429"), "{head}");
    assert!(head.contains("retry-after: 3"), "{head}");
    let status: Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], 3);
    // The rule was for one request only.
    assert!(leases.list(&ListParams::default()).await.is_ok());

    // kube-rs retries 429, 503 and 504 by itself, honouring Retry-After: two injected 503s
    // are invisible to the caller but visible in the counters.
    sim.reset_counters();
    sim.faults().add_error(ErrorFault {
        verb: None,
        resource: Some("leases".into()),
        status: 503,
        share: 1.0,
        retry_after_seconds: Some(0),
        count: Some(2),
    });
    match leases.get("any").await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (404, "NotFound")),
        other => panic!("expected 404 after the retries, got {other:?}"),
    }
    assert_eq!(sim.counters().count("get", "leases"), 3);
    sim.faults().clear();
    assert!(leases.list(&ListParams::default()).await.is_ok());
}

#[tokio::test]
async fn latency_delays_matching_requests() {
    let sim = start().await;
    let leases: Api<Lease> = Api::default_namespaced(sim.client().expect("client"));
    sim.faults().add_latency(Latency {
        verb: Some("list".into()),
        resource: Some("leases".into()),
        millis: 200,
    });
    let started = Instant::now();
    leases.list(&ListParams::default()).await.expect("list");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(sim.faults().delay("get", "leases"), Duration::ZERO);
}

#[tokio::test]
async fn a_conflict_fault_fails_only_the_next_update_of_that_object() {
    let sim = start().await;
    let leases: Api<Lease> = Api::default_namespaced(sim.client().expect("client"));
    leases
        .create(&PostParams::default(), &lease("l"))
        .await
        .expect("create");
    sim.faults().conflict_next_update(ConflictFault {
        resource: "leases".into(),
        namespace: "default".into(),
        name: "l".into(),
    });
    let patch = Patch::Merge(json!({"spec": {"holderIdentity": "b"}}));
    match leases.patch("l", &PatchParams::default(), &patch).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("expected 409, got {other:?}"),
    }
    leases
        .patch("l", &PatchParams::default(), &patch)
        .await
        .expect("second patch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_ready_kubelet_keeps_endpoints_unready_until_lifted_over_http() {
    let sim = start().await;
    let (head, _) = http(
        sim.address(),
        "PUT",
        "/sim/faults/never-ready",
        r#"{"enabled":true}"#,
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    sim.apply_yaml(include_str!("../manifests/helloworld.yaml"))
        .expect("apply");
    sim.wait_for("a running pod behind an unready endpoint", WAIT, |sim| {
        let running = sim
            .list("pods", Some("default"))
            .iter()
            .any(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object());
        let slices = sim.list("endpointslices", Some("default"));
        let unready = slices.iter().any(|s| {
            s["endpoints"]
                .as_array()
                .is_some_and(|e| e.len() == 1 && e[0]["conditions"]["ready"] == false)
        });
        running && unready
    })
    .await
    .expect("unready");

    let (_, rules) = http(sim.address(), "GET", "/sim/faults", "").await;
    let rules: Value = serde_json::from_str(&rules).expect("rules");
    assert_eq!(rules["neverReady"], true);
    let (head, _) = http(sim.address(), "DELETE", "/sim/faults", "").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    sim.wait_for_ready_endpoints("default", "helloworld", 1, WAIT)
        .await
        .expect("ready");

    let (_, counters) = http(sim.address(), "GET", "/sim/counters", "").await;
    let counters: Value = serde_json::from_str(&counters).expect("counters");
    assert!(counters["counts"].is_object());
}

#[tokio::test]
async fn the_http_control_api_injects_errors_and_one_off_faults() {
    let sim = start().await;
    let leases: Api<Lease> = Api::default_namespaced(sim.client().expect("client"));
    let rule = r#"{"verb":"create","resource":"leases","status":500,"count":1}"#;
    let (head, _) = http(sim.address(), "POST", "/sim/faults/errors", rule).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    match leases.create(&PostParams::default(), &lease("x")).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (500, "InternalError")),
        other => panic!("expected 500, got {other:?}"),
    }
    leases
        .create(&PostParams::default(), &lease("x"))
        .await
        .expect("create");
    for path in ["/sim/faults/close-watches", "/sim/faults/expire-history"] {
        let (head, _) = http(sim.address(), "POST", path, "").await;
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
    }
    let (head, _) = http(sim.address(), "POST", "/sim/pods/default/nope/crash", "").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    let (head, _) = http(
        sim.address(),
        "GET",
        "/apis/apps/v1/namespaces/default/replicasets",
        "",
    )
    .await;
    assert!(
        head.starts_with("http/1.1 404"),
        "unserved resources are 404: {head}"
    );
}
