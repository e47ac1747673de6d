//! Kubernetes mode against kube-sim: a real API server over HTTP, the real kube-rs client and the
//! real kubectl, with pods that are real processes on their own 127.x.y.z addresses.

use std::time::{Duration, Instant};

use activator::app::App;
use activator::config::{Config, KubeSettings};
use futures_util::future::join_all;
use kube_sim::faults::{ConflictFault, ErrorFault};
use kube_sim::{ImageMapping, Sim, SimConfig};

use super::support::{Activator, echo, host, metric};

pub(super) const DEPLOYMENT: &str = "helloworld-00001-deployment";

/// The seed example with a short idle timeout.
pub(super) fn helloworld(idle_timeout: &str) -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/helloworld.yaml"
    ))
    .unwrap()
    .replace(
        "activator.dev/idle-timeout: \"60s\"",
        &format!("activator.dev/idle-timeout: {idle_timeout:?}"),
    )
}

/// A Deployment + Service like the seed's, named `name`, with extra annotations and a readiness
/// path.
fn workload(name: &str, annotations: &[(&str, &str)], ready_path: &str) -> String {
    let extra: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: {v:?}\n"))
        .collect();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}-deployment
  namespace: default
  labels: {{app: {name}, activator.dev/enabled: "true"}}
  annotations:
    activator.dev/service: {name}
{extra}spec:
  replicas: 0
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: echo
          image: mendhak/http-https-echo
          ports: [{{name: http, containerPort: 80}}]
          readinessProbe: {{httpGet: {{path: {ready_path}, port: http}}, periodSeconds: 10}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

/// A simulator whose echo image runs `activator-echo` on the pod's address.
pub(super) async fn sim(time_scale: f64) -> Sim {
    sim_with(time_scale, Vec::new()).await
}

/// Like [`sim`], with more image mappings.
pub(super) async fn sim_with(time_scale: f64, mut images: Vec<ImageMapping>) -> Sim {
    images.push(ImageMapping {
        image: "mendhak/http-https-echo".into(),
        command: format!("exec {} --bind {{ip}} --port {{port}}", echo()),
    });
    let config = SimConfig {
        time_scale,
        images,
        ..SimConfig::default()
    };
    Sim::start(config).await.expect("kube-sim starts")
}

/// An activator in Kubernetes mode against `sim`, ready once its caches synced.
pub(super) async fn activator(sim: &Sim, toml: &str) -> Activator {
    activator_in(sim, toml, None).await
}

/// Like [`activator`], watching only `namespace` when given.
async fn activator_in(sim: &Sim, toml: &str, namespace: Option<&str>) -> Activator {
    // The activator's log appears with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("activator=debug")
        .try_init();
    let toml = if toml.contains("scaler_tick") {
        toml.to_owned()
    } else {
        format!("scaler_tick = \"50ms\"\n{toml}")
    };
    let mut config = Config::from_toml(&toml).unwrap();
    config.kube = Some(KubeSettings {
        namespace: namespace.map(str::to_owned),
        probe_interval: Duration::from_millis(25),
        ..KubeSettings::default()
    });
    // Built as the binary builds it (kube-rs's own retries off), from the simulator's kubeconfig.
    let kubeconfig = kube::config::Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
    let kube_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = activator::kube_client(kube_config).unwrap();
    let activator = Activator::start_app(App::kube(config, client)).await;
    super::support::wait_until("the activator is ready", || async {
        activator.admin("/readyz").await.status == 200
    })
    .await;
    activator
}

/// Waits for a Warning Event with `reason` about Deployment `regarding` whose note names every
/// one of `mentions` (read through events.k8s.io/v1, where the activator posts it).
async fn wait_for_event(sim: &Sim, reason: &str, regarding: &str, mentions: &[&str]) {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(sim.client().unwrap(), "default");
    let what = format!("a {reason} event on {regarding}");
    super::support::wait_until(&what, || async {
        let list = events.list(&Default::default()).await.unwrap();
        list.items.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
                && e.note
                    .as_deref()
                    .is_some_and(|n| mentions.iter().all(|m| n.contains(m)))
        })
    })
    .await;
}

pub(super) fn replicas(sim: &Sim, deployment: &str) -> i64 {
    sim.get("deployments", "default", deployment)
        .and_then(|d| {
            d.pointer("/spec/replicas")
                .and_then(serde_json::Value::as_i64)
        })
        .unwrap_or(-1)
}

#[tokio::test]
async fn the_seed_walkthrough_cold_starts_serves_scales_to_zero_and_cold_starts_again() {
    let sim = sim(0.01).await;
    let manifest = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(manifest.path(), helloworld("1s")).unwrap();
    sim.kubectl(&["apply", "-f", manifest.path().to_str().unwrap()])
        .await
        .expect("kubectl apply");

    // The real binary, as an operator runs it.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_activator"))
        .args([
            "--kube",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env("KUBECONFIG", sim.kubeconfig_path())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (proxy, admin) = super::binary::started_addresses(&mut child).await;
    super::support::wait_until("ready", || async {
        super::binary::admin_status(admin, "/readyz").await == Some(200)
    })
    .await;

    let h = host("helloworld");
    let (status, body) = super::binary::get(proxy, &h, "/").await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        echo["headers"]["host"], h,
        "the replica sees the original Host"
    );
    let jsonpath = [
        "get",
        "deployment",
        DEPLOYMENT,
        "-o",
        "jsonpath={.spec.replicas}",
    ];
    assert_eq!(sim.kubectl(&jsonpath).await.unwrap().trim(), "1");
    let pod_pid = echo["pid"].as_u64().unwrap();

    sim.wait_for("the idle scale to zero", Duration::from_secs(20), |sim| {
        replicas(sim, DEPLOYMENT) == 0
    })
    .await
    .unwrap();
    assert_eq!(sim.kubectl(&jsonpath).await.unwrap().trim(), "0");
    super::support::wait_process_gone(pod_pid).await;

    let (status, body) = super::binary::get(proxy, &h, "/").await;
    assert_eq!(status, 200, "the next request cold-starts it again: {body}");
    assert_ne!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["pid"]
            .as_u64()
            .unwrap(),
        pod_pid
    );
    let _ = child.kill().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn five_hundred_concurrent_cold_requests_need_exactly_one_scale_patch() {
    let sim = sim(0.01).await;
    // A target far above the burst leaves the scale-up to activation alone.
    sim.apply_yaml(&helloworld("60s").replace(
        "activator.dev/max-scale: \"3\"",
        "activator.dev/max-scale: \"3\"\n    activator.dev/target-concurrency: \"1000\"",
    ))
    .unwrap();
    let activator = activator(&sim, "").await;
    sim.reset_counters();

    let h = host("helloworld");
    let answers = join_all((0..500).map(|_| activator.get(&h, "/"))).await;
    assert!(answers.iter().all(|a| a.status == 200), "all served");
    assert_eq!(
        sim.counters().count("patch", "deployments/scale"),
        1,
        "{:?}",
        sim.counters()
    );
    assert_eq!(
        sim.counters().count("update", "deployments"),
        0,
        "never a write of the whole Deployment"
    );
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn direct_probes_serve_before_a_slow_kubelet_marks_the_pod_ready() {
    // Real time, a kubelet probing every 2s after a 2s initial delay: it marks the pod Ready ~2s
    // after start, however fast the process starts.
    let sim = sim(1.0).await;
    let slow_kubelet = "periodSeconds: 2\n            initialDelaySeconds: 2";
    sim.apply_yaml(&helloworld("60s").replace("periodSeconds: 10", slow_kubelet))
        .unwrap();
    let activator = activator(&sim, "").await;

    let started = Instant::now();
    let answer = activator.get(&host("helloworld"), "/").await;
    let served_after = started.elapsed();
    assert_eq!(answer.status, 200);
    sim.wait_for_ready_endpoints("default", "helloworld", 1, Duration::from_secs(10))
        .await
        .unwrap();
    let kubelet_after = started.elapsed();
    println!(
        "first response after {served_after:?}; kubelet marked the pod Ready after {kubelet_after:?} ({:?} later)",
        kubelet_after - served_after
    );
    assert!(
        served_after < kubelet_after,
        "served {served_after:?}, kubelet ready {kubelet_after:?}"
    );
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn scale_errors_are_retried_while_held_requests_wait() {
    let sim = sim(0.01).await;
    sim.apply_yaml(&helloworld("60s")).unwrap();
    let activator = activator(&sim, "").await;
    for status in [500, 429] {
        sim.faults().add_error(ErrorFault {
            verb: Some("patch".into()),
            resource: Some("deployments/scale".into()),
            status,
            share: 1.0,
            retry_after_seconds: Some(0),
            count: Some(1),
        });
    }
    let h = host("helloworld");
    let answers = join_all((0..20).map(|_| activator.get(&h, "/"))).await;
    assert!(
        answers.iter().all(|a| a.status == 200),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    let metrics = activator.metrics().await;
    let attempts = |result: &str| {
        metric(
            &metrics,
            &format!(
                r#"activator_scale_events_total{{direction="up",result="{result}",route="helloworld"}}"#
            ),
        )
    };
    assert_eq!(
        (attempts("error"), attempts("success")),
        (2.0, 1.0),
        "{:?}\n{metrics}",
        sim.counters()
    );
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn closed_and_expired_watches_lose_no_request_and_state_recovers() {
    let sim = sim(0.01).await;
    sim.apply_yaml(&helloworld("60s")).unwrap();
    let activator = activator(&sim, "").await;
    let h = host("helloworld");
    assert_eq!(activator.get(&h, "/").await.status, 200);

    sim.close_watches();
    sim.expire_watch_history();
    // A change made while the watches were down must still reach the activator.
    sim.kubectl(&["scale", "deployment", DEPLOYMENT, "--replicas=2"])
        .await
        .unwrap();
    for _ in 0..50 {
        assert_eq!(activator.get(&h, "/").await.status, 200);
    }
    activator
        .wait_route("helloworld", "at two replicas", |r| {
            r.desired_replicas == 2 && r.ready_replicas == 2
        })
        .await;
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_scale_down_that_meets_a_conflict_without_a_replica_change_is_retried() {
    let sim = sim(0.01).await;
    sim.apply_yaml(&helloworld("300ms")).unwrap();
    let activator = activator(&sim, "").await;
    assert_eq!(activator.get(&host("helloworld"), "/").await.status, 200);

    // Someone else touches the Deployment (not its replicas) just before the scale-down writes.
    sim.faults().conflict_next_update(ConflictFault {
        resource: "deployments".into(),
        namespace: "default".into(),
        name: DEPLOYMENT.into(),
    });
    super::support::wait_until("the Deployment scaled to zero", || async {
        replicas(&sim, DEPLOYMENT) == 0
    })
    .await;
    let metrics = activator.metrics().await;
    let down = |result: &str| {
        let series = format!(
            r#"activator_scale_events_total{{direction="down",result="{result}",route="helloworld"}}"#
        );
        metric(&metrics, &series)
    };
    assert_eq!((down("conflict"), down("success")), (1.0, 1.0), "{metrics}");
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_request_during_a_scale_down_retried_through_an_api_brownout_is_served_at_once() {
    let sim = sim(0.01).await;
    sim.apply_yaml(&helloworld("300ms")).unwrap();
    let activator = activator(&sim, "").await;
    let h = host("helloworld");
    let first = activator.get(&h, "/").await;
    assert_eq!(first.status, 200);

    // Every scale write fails: the scale-down is retried with backoff, with the gate closed.
    sim.faults().add_error(ErrorFault {
        verb: Some("patch".into()),
        resource: Some("deployments/scale".into()),
        status: 503,
        share: 1.0,
        retry_after_seconds: None,
        count: None,
    });
    activator
        .wait_route("helloworld", "scaling down", |r| r.desired_replicas == 0)
        .await;
    super::support::wait_until("a failed scale-down write", || async {
        let metrics = activator.metrics().await;
        metric(
            &metrics,
            r#"activator_scale_events_total{direction="down",result="error",route="helloworld"}"#,
        ) >= 1.0
    })
    .await;

    // The request re-activates the route and is served by the pod still running, while the API
    // is still failing: it does not wait for the scale-down's retries.
    let answer = activator.get(&h, "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["pid"], first.json()["pid"], "the same pod");
    assert_eq!(activator.route("helloworld").await.desired_replicas, 1);

    // Once the API recovers, the abandoned zero never lands.
    sim.faults().clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(replicas(&sim, DEPLOYMENT), 1, "no stale scale-down");
    let metrics = activator.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"activator_scale_events_total{direction="down",result="success",route="helloworld"}"#
        ),
        0.0,
        "{metrics}"
    );
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn scaling_to_zero_by_hand_holds_requests_and_reactivates() {
    let sim = sim(0.01).await;
    sim.apply_yaml(&helloworld("60s")).unwrap();
    let activator = activator(&sim, "").await;
    let h = host("helloworld");
    assert_eq!(activator.get(&h, "/").await.status, 200);

    let traffic = async {
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(activator.get(&h, "/").await.status);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        statuses
    };
    let by_hand = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sim.kubectl(&["scale", "deployment", DEPLOYMENT, "--replicas=0"])
            .await
            .unwrap();
    };
    let (statuses, ()) = tokio::join!(traffic, by_hand);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    sim.wait_for("re-activated", Duration::from_secs(10), |sim| {
        replicas(sim, DEPLOYMENT) >= 1
    })
    .await
    .unwrap();
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_deleted_deployment_answers_404_and_its_held_requests_503() {
    let sim = sim(0.01).await;
    sim.apply_yaml(&workload("stuck", &[], "/status/503"))
        .unwrap();
    let activator = activator(&sim, "").await;
    let h = host("stuck");
    let held = activator.spawn_get(&h, "/");
    activator
        .wait_route("stuck", "holding one", |r| r.queued == 1)
        .await;
    sim.kubectl(&["delete", "deployment", "stuck-deployment"])
        .await
        .unwrap();

    let response = held.await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-activator-error"], "route_removed");
    super::support::wait_until("the route is gone", || async {
        activator.get(&h, "/").await.status == 404
    })
    .await;
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn an_invalid_annotation_is_reported_and_other_routes_are_unaffected() {
    let sim = sim(0.01).await;
    sim.apply_yaml(&workload("good", &[], "/")).unwrap();
    sim.apply_yaml(&workload(
        "bad",
        &[("activator.dev/idle-timeout", "soon")],
        "/",
    ))
    .unwrap();
    let activator = activator(&sim, "").await;

    assert_eq!(activator.get(&host("good"), "/").await.status, 200);
    assert_eq!(
        activator.get(&host("bad"), "/").await.status,
        404,
        "the invalid route is not served"
    );
    wait_for_event(
        &sim,
        "InvalidAnnotation",
        "bad-deployment",
        &["activator.dev/idle-timeout", "soon"],
    )
    .await;
    let metrics = activator.metrics().await;
    let counted = r#"activator_config_errors_total{key="activator.dev/idle-timeout",namespace="default",route="bad"}"#;
    assert_eq!(metric(&metrics, counted), 1.0, "{metrics}");
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn an_edited_annotation_applies_in_place() {
    let sim = sim(0.01).await;
    sim.apply_yaml(&helloworld("60s")).unwrap();
    let grant = "[[host_grants]]\nnamespace = \"default\"\nhosts = [\"*.example.test\"]\n";
    let activator = activator(&sim, grant).await;
    let h = host("helloworld");
    let pid = activator.get(&h, "/").await.json()["pid"].as_u64().unwrap();
    assert_eq!(activator.get("hello.example.test", "/").await.status, 404);

    sim.kubectl(&[
        "annotate",
        "deployment",
        DEPLOYMENT,
        "activator.dev/hosts=hello.example.test",
    ])
    .await
    .unwrap();
    super::support::wait_until("the new host is served", || async {
        activator.get("hello.example.test", "/").await.status == 200
    })
    .await;
    let answer = activator.get("hello.example.test", "/").await;
    assert_eq!(
        answer.json()["pid"].as_u64().unwrap(),
        pid,
        "the same pod serves: no restart"
    );
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_older_deployment_keeps_a_contested_host() {
    let sim = sim(0.01).await;
    sim.apply_yaml(&workload(
        "first",
        &[("activator.dev/hosts", "shared.test")],
        "/",
    ))
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // creationTimestamp has second precision
    sim.apply_yaml(&workload(
        "second",
        &[("activator.dev/hosts", "shared.test")],
        "/",
    ))
    .unwrap();
    let grant = "[[host_grants]]\nnamespace = \"default\"\nhosts = [\"shared.test\"]\n";
    let activator = activator(&sim, grant).await;

    let answer = activator.get("shared.test", "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        activator.route("first").await.requests_total,
        1,
        "the older route answered"
    );
    assert_eq!(
        activator.get(&host("second"), "/").await.status,
        200,
        "its own host still works"
    );
    wait_for_event(&sim, "HostConflict", "second-deployment", &["shared.test"]).await;
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_namespace_restriction_ignores_other_namespaces() {
    let sim = sim(0.01).await;
    sim.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
        .unwrap();
    sim.apply_yaml(&helloworld("60s")).unwrap();
    sim.apply_yaml(&helloworld("60s").replace("namespace: default", "namespace: shop"))
        .unwrap();
    let activator = activator_in(&sim, "", Some("shop")).await;
    assert_eq!(
        activator
            .get("helloworld.shop.127.0.0.1.nip.io", "/")
            .await
            .status,
        200
    );
    assert_eq!(activator.get(&host("helloworld"), "/").await.status, 404);
    assert_eq!(
        replicas(&sim, DEPLOYMENT),
        0,
        "the default namespace is left alone"
    );
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_route_scaled_up_by_hand_after_going_idle_serves_at_once() {
    let sim = sim(0.01).await;
    sim.apply_yaml(&helloworld("1s")).unwrap();
    let activator = activator(&sim, "").await;
    let h = host("helloworld");
    assert_eq!(activator.get(&h, "/").await.status, 200);
    sim.wait_for("idle at zero", Duration::from_secs(10), |sim| {
        replicas(sim, DEPLOYMENT) == 0
    })
    .await
    .unwrap();

    sim.kubectl(&["scale", "deployment", DEPLOYMENT, "--replicas=2"])
        .await
        .unwrap();
    activator
        .wait_route("helloworld", "at two ready replicas", |r| {
            r.ready_replicas == 2
        })
        .await;
    let answer = activator.get(&h, "/").await;
    assert_eq!(answer.status, 200);
    let metrics = activator.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"activator_cold_starts_total{route="helloworld"}"#
        ),
        1.0,
        "served by the pods someone else started, without a cold start"
    );
    assert_eq!(replicas(&sim, DEPLOYMENT), 2, "their count is kept");
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn pods_that_crash_or_cannot_pull_their_image_fail_requests_fast() {
    let sim = super::kube::sim_with(
        0.01,
        vec![ImageMapping {
            image: "example/crashes".into(),
            command: "echo cannot open database >&2; exit 3".into(),
        }],
    )
    .await;
    let crashing = workload(
        "crashy",
        &[("activator.dev/cold-start-timeout", "60s")],
        "/",
    )
    .replace("mendhak/http-https-echo", "example/crashes");
    let missing = workload(
        "missing",
        &[("activator.dev/cold-start-timeout", "60s")],
        "/",
    )
    .replace("mendhak/http-https-echo", "example/no-such-image");
    sim.apply_yaml(&format!("{crashing}---\n{missing}"))
        .unwrap();
    let activator = activator(&sim, "").await;
    for (route, reason) in [("crashy", "CrashLoopBackOff"), ("missing", "ErrImagePull")] {
        let answer =
            tokio::time::timeout(Duration::from_secs(20), activator.get(&host(route), "/"))
                .await
                .expect("answered long before the 60s cold-start timeout");
        assert_eq!(answer.status, 503, "{route}: {}", answer.text());
        assert_eq!(answer.headers["x-activator-error"], "replica_failed");
        let status = activator.route(route).await;
        assert_eq!(status.state.as_str(), "failed", "{route}");
        let message = status.message.unwrap_or_default();
        assert!(
            message.contains(reason),
            "{route}: /routes says why: {message}"
        );
    }
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn scaling_from_and_to_zero_is_told_in_kubectl_describe() {
    let sim = sim(0.01).await;
    sim.apply_yaml(&helloworld("300ms")).unwrap();
    let activator = activator(&sim, "").await;
    assert_eq!(activator.get(&host("helloworld"), "/").await.status, 200);
    super::support::wait_until("scaled back to zero", || async {
        replicas(&sim, DEPLOYMENT) == 0
    })
    .await;
    super::support::wait_until("both Events in kubectl describe", || async {
        let described = sim
            .kubectl(&["describe", "deployment", DEPLOYMENT])
            .await
            .unwrap_or_default();
        described.contains("ScaledFromZero")
            && described.contains("Scaled from 0 to 1 replicas for 1 held request")
            && described.contains("ScaledToZero")
            && described.contains("without requests")
    })
    .await;
    activator.stop().await;
    sim.shutdown().await;
}
