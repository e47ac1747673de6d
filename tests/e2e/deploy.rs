//! The manifests in deploy/ as an operator applies them, against kube-sim: `kubectl apply -k
//! deploy/base` and the helloworld example, with the activator's image running the binary this
//! build made as a pod of the activator Deployment, which reaches the API server as a pod does.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kube_sim::{Sim, SimConfig};

use super::support::{echo, host};

/// The activator image as a command. Every pod shares the machine's network, so the activator
/// listens on its pod address, where the Service's ports and the probes find it.
fn activator_image() -> String {
    format!(
        "ACTIVATOR_LISTEN={{ip}}:8080 ACTIVATOR_ADMIN_LISTEN={{ip}}:9090 exec '{}'",
        env!("CARGO_BIN_EXE_activator")
    )
}

fn manifest(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// The address of a Ready pod of the activator Deployment.
fn ready_activator(sim: &Sim) -> Option<IpAddr> {
    sim.list("pods", Some("activator-system"))
        .into_iter()
        .find(|pod| {
            pod.pointer("/status/conditions")
                .and_then(serde_json::Value::as_array)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .and_then(|pod| pod.pointer("/status/podIP")?.as_str()?.parse().ok())
}

#[tokio::test]
async fn the_deployed_activator_pod_cold_starts_the_example() {
    let config = SimConfig {
        echo_command: Some(format!("'{}'", echo())),
        ..SimConfig::default()
            .time_scale(0.01)
            .image("activator", &activator_image())
    };
    let sim = Sim::start(config).await.expect("kube-sim starts");
    let applied = sim
        .kubectl(&["apply", "-k", &manifest("deploy/base")])
        .await
        .expect("kubectl apply -k deploy/base");
    for object in [
        "namespace/activator-system",
        "serviceaccount/activator",
        "clusterrole.rbac.authorization.k8s.io/activator",
        "clusterrolebinding.rbac.authorization.k8s.io/activator",
        "role.rbac.authorization.k8s.io/activator-leases",
        "rolebinding.rbac.authorization.k8s.io/activator-leases",
        "service/activator",
        "deployment.apps/activator",
        "poddisruptionbudget.policy/activator",
        "horizontalpodautoscaler.autoscaling/activator",
    ] {
        assert!(
            applied.contains(&format!("{object} created")),
            "{object}: {applied}"
        );
    }
    sim.kubectl(&["apply", "-f", &manifest("deploy/examples/helloworld.yaml")])
        .await
        .expect("kubectl apply the example");

    let ready = sim
        .wait_for(
            "the activator pod to pass its readiness probe",
            Duration::from_secs(30),
            |sim| ready_activator(sim).is_some(),
        )
        .await;
    let logs = || {
        sim.list("pods", Some("activator-system"))
            .iter()
            .map(|p| {
                let name = p["metadata"]["name"].as_str().unwrap_or_default();
                format!("{name}:\n{}", sim.pod_log("activator-system", name))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(ready.is_ok(), "{ready:?}\n{}", logs());
    let ip = ready_activator(&sim).expect("a ready activator pod");
    // Ready once its caches synced, which may be before the example was applied: the route
    // comes with the next watch event.
    let admin = SocketAddr::new(ip, 9090);
    super::support::wait_until("the activator serves the example's route", || async {
        super::binary::admin_text(admin, "/routes")
            .await
            .contains("helloworld")
    })
    .await;
    assert_eq!(
        sim.get("deployments", "default", "helloworld-00001-deployment")
            .and_then(|d| d
                .pointer("/spec/replicas")
                .and_then(serde_json::Value::as_i64)),
        Some(0),
        "the example starts at zero"
    );

    let (status, body) =
        super::binary::get(SocketAddr::new(ip, 8080), &host("helloworld"), "/").await;
    assert_eq!(status, 200, "{body}\n{}", logs());
    let answer: serde_json::Value = serde_json::from_str(&body).expect("the echo's JSON");
    assert_eq!(answer["headers"]["host"], host("helloworld"));
    // The activator probes a new pod itself, so it may serve before the kubelet marks it ready.
    assert_eq!(
        sim.get("deployments", "default", "helloworld-00001-deployment")
            .and_then(|d| d
                .pointer("/spec/replicas")
                .and_then(serde_json::Value::as_i64)),
        Some(1),
        "the activator scaled the example up"
    );
    assert_eq!(sim.counters().count("patch", "deployments/scale"), 1);
    assert_eq!(
        answer["os"]["hostname"]
            .as_str()
            .map(|h| h.starts_with("helloworld-00001-deployment-")),
        Some(true),
        "{answer}"
    );
    sim.shutdown().await;
}
