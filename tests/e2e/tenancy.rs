//! Tenants on one activator, on kube-sim with real kubectl: a namespace answers its own part of
//! the domain and what the operator grants it, never another namespace's hosts; annotations above
//! the operator's ceilings are clamped; and each refusal is told as a Warning Event on the
//! Deployment.

use std::time::Duration;

use super::kube::{activator, sim};
use kube_sim::Sim;

/// A Deployment and its Service named `name` in `namespace`, with extra annotations; its pods
/// are ready only once `ready_path` answers 2xx.
fn workload(namespace: &str, name: &str, annotations: &[(&str, &str)], ready_path: &str) -> String {
    let extra: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: {v:?}\n"))
        .collect();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{app: {name}, activator.dev/enabled: "true"}}
  annotations:
    activator.dev/idle-timeout: "60s"
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
          readinessProbe: {{httpGet: {{path: {ready_path}, port: http}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

/// `kubectl create namespace` for each, then `kubectl apply -f` of `yaml`.
async fn apply(sim: &Sim, namespaces: &[&str], yaml: &str) {
    for namespace in namespaces {
        let _ = sim.kubectl(&["create", "namespace", namespace]).await;
    }
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::io::Write::write_all(&mut file, yaml.as_bytes()).unwrap();
    sim.kubectl(&["apply", "-f", file.path().to_str().unwrap()])
        .await
        .expect("kubectl apply");
}

/// Waits until `kubectl get events -n NAMESPACE` shows a Warning with `reason` about
/// `deployment` whose message names every one of `mentions`.
async fn wait_for_event(
    sim: &Sim,
    namespace: &str,
    reason: &str,
    deployment: &str,
    mentions: &[&str],
) {
    let what = format!("a {reason} event on {namespace}/{deployment}");
    super::support::wait_until(&what, || async {
        let Ok(json) = sim
            .kubectl(&["get", "events", "-n", namespace, "-o", "json"])
            .await
        else {
            return false;
        };
        let events: serde_json::Value = serde_json::from_str(&json).unwrap();
        events["items"].as_array().unwrap().iter().any(|e| {
            e["reason"] == reason
                && e["type"] == "Warning"
                && e["involvedObject"]["name"] == deployment
                && e["message"]
                    .as_str()
                    .is_some_and(|m| mentions.iter().all(|x| m.contains(x)))
        })
    })
    .await;
}

fn host(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.127.0.0.1.nip.io")
}

#[tokio::test]
async fn a_host_claimed_from_another_namespace_is_refused_even_when_its_claimant_is_older() {
    let sim = sim(0.01).await;
    let stolen = host("web", "b");
    apply(
        &sim,
        &["a"],
        &workload(
            "a",
            "web",
            &[(
                "activator.dev/hosts",
                &format!("{stolen},*.127.0.0.1.nip.io"),
            )],
            "/",
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creationTimestamp has second precision
    apply(&sim, &["b"], &workload("b", "web", &[], "/")).await;
    let activator = activator(&sim, "").await;

    let answer = activator.get(&stolen, "/").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let routes = activator.routes().await;
    let served = |namespace: &str| {
        routes
            .iter()
            .find(|r| r.namespace == namespace)
            .map(|r| r.requests_total)
    };
    assert_eq!(
        (served("a"), served("b")),
        (Some(0), Some(1)),
        "b's own route served it"
    );
    assert_eq!(
        activator.get(&host("web", "a"), "/").await.status,
        200,
        "a keeps its own host"
    );
    wait_for_event(
        &sim,
        "a",
        "HostNotAllowed",
        "web",
        &[&stolen, "another namespace"],
    )
    .await;
    wait_for_event(
        &sim,
        "a",
        "HostNotAllowed",
        "web",
        &["*.127.0.0.1.nip.io", "host_grants"],
    )
    .await;
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wildcard_outside_the_grants_is_refused_and_a_granted_host_works() {
    let sim = sim(0.01).await;
    apply(
        &sim,
        &["shop"],
        &format!(
            "{}---\n{}",
            workload(
                "shop",
                "cart",
                &[("activator.dev/hosts", "cart.shop.example")],
                "/"
            ),
            workload(
                "shop",
                "stray",
                &[("activator.dev/hosts", "*.elsewhere.example")],
                "/"
            ),
        ),
    )
    .await;
    let grant = "[[host_grants]]\nnamespace = \"shop\"\nhosts = [\"*.shop.example\"]\n";
    let activator = activator(&sim, grant).await;

    assert_eq!(
        activator.get("cart.shop.example", "/").await.status,
        200,
        "granted"
    );
    let unclaimed = activator.get("x.elsewhere.example", "/").await;
    assert_eq!(unclaimed.status, 404, "refused, so nobody answers it");
    assert_eq!(unclaimed.headers["x-activator-error"], "no_route");
    assert_eq!(activator.get(&host("stray", "shop"), "/").await.status, 200);
    wait_for_event(
        &sim,
        "shop",
        "HostNotAllowed",
        "stray",
        &["*.elsewhere.example"],
    )
    .await;
    let metrics = activator.metrics().await;
    assert_eq!(
        super::support::metric(
            &metrics,
            r#"activator_config_errors_total{key="activator.dev/hosts",namespace="shop",route="stray"}"#
        ),
        1.0,
        "{metrics}"
    );
    activator.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn an_annotation_above_the_ceiling_is_clamped_and_the_route_behaves_at_the_ceiling() {
    let sim = sim(0.01).await;
    // Pods never become ready (their readiness path answers 503): requests stay held.
    apply(
        &sim,
        &["greedy"],
        &workload(
            "greedy",
            "hog",
            &[("activator.dev/max-queued", "4294967295")],
            "/status/503",
        ),
    )
    .await;
    let activator = activator(&sim, "[limits]\nmax_queued = 2\n").await;
    let h = host("hog", "greedy");
    let held: Vec<_> = (0..2).map(|_| activator.spawn_get(&h, "/")).collect();
    activator
        .wait_route("hog", "holding two", |r| r.queued == 2)
        .await;
    let refused = activator.get(&h, "/").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["x-activator-error"], "queue_full");
    wait_for_event(
        &sim,
        "greedy",
        "AboveLimit",
        "hog",
        &["4294967295", "limits.max_queued"],
    )
    .await;
    for request in held {
        request.abort();
    }
    activator.stop().await;
    sim.shutdown().await;
}
