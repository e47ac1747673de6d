//! Pods as the kubelet runs them: readiness decided by the probe, graceful termination on
//! scale-down with terminating endpoints, restarts after a crash, and images without a command.

#[path = "support/start.rs"]
mod support;

use kube_sim::{Sim, SimConfig};
use serde_json::{Value, json};
use support::{WAIT, echo, start, start_with};

/// A Deployment `web` and Service `web` running `image` on port 8080.
fn manifest(image: &str, replicas: u32, extra_container: Value, grace: u32) -> String {
    let mut container = json!({
        "name": "web",
        "image": image,
        "ports": [{"containerPort": 8080, "name": "http"}],
        "env": [{"name": "HTTP_PORT", "value": "8080"}],
    });
    if let (Some(c), Some(extra)) = (container.as_object_mut(), extra_container.as_object()) {
        c.extend(extra.clone());
    }
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": grace, "containers": [container]},
            },
        },
    });
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    });
    format!("{deployment}\n---\n{service}\n")
}

fn endpoints(sim: &Sim) -> Vec<Value> {
    sim.list("endpointslices", Some("default"))
        .iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == "web")
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn conditions(endpoint: &Value) -> (bool, bool, bool) {
    let c = &endpoint["conditions"];
    (
        c["ready"] == true,
        c["serving"] == true,
        c["terminating"] == true,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_ready_only_once_its_readiness_probe_passes() {
    let sim = start().await;
    let marker = std::env::temp_dir().join(format!("kube-sim-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let probe = json!({"readinessProbe": {
        "exec": {"command": ["test", "-f", marker.to_string_lossy()]},
        "initialDelaySeconds": 1,
        "periodSeconds": 1,
    }});
    sim.apply_yaml(&manifest("mendhak/http-https-echo", 1, probe, 30))
        .expect("apply");

    sim.wait_for("a running, unready endpoint", WAIT, |sim| {
        let pods = sim.list("pods", Some("default"));
        let running = pods.iter().any(|p| p["status"]["phase"] == "Running");
        let e = endpoints(sim);
        running && e.len() == 1 && conditions(&e[0]) == (false, false, false)
    })
    .await
    .expect("unready endpoint");
    // The named target port resolves to the container port.
    let slice = &sim.list("endpointslices", Some("default"))[0];
    assert_eq!(slice["ports"][0]["port"], 8080);

    std::fs::write(&marker, b"ok").expect("marker");
    let ready = sim
        .wait_for_ready_endpoints("default", "web", 1, WAIT)
        .await;
    let _ = std::fs::remove_file(&marker);
    ready.expect("ready after the probe passes");
    sim.wait_for("deployment readyReplicas", WAIT, |sim| {
        sim.get("deployments", "default", "web").unwrap_or_default()["status"]["readyReplicas"] == 1
    })
    .await
    .expect("status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_down_pods_terminate_gracefully_and_leave_the_slice() {
    // This image ignores SIGTERM, so the pod stays terminating until the grace period ends.
    let stubborn = format!("trap '' TERM; exec {} --exit-on-stdin-eof", echo());
    let sim = start_with(SimConfig::default().image("example/stubborn", &stubborn)).await;
    sim.apply_yaml(&manifest("example/stubborn:1.0", 2, json!({}), 300))
        .expect("apply");
    let before = sim
        .wait_for_ready_endpoints("default", "web", 2, WAIT)
        .await
        .expect("two ready");

    sim.apply_yaml(&manifest("example/stubborn:1.0", 1, json!({}), 300))
        .expect("scale down");
    sim.wait_for("a terminating endpoint", WAIT, |sim| {
        endpoints(sim)
            .iter()
            .any(|e| conditions(e) == (false, true, true))
    })
    .await
    .expect("terminating endpoint: ready false, serving true, terminating true");
    let terminating: Vec<Value> = sim
        .list("pods", Some("default"))
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_string())
        .collect();
    assert_eq!(terminating.len(), 1);
    assert_eq!(
        terminating[0]["metadata"]["deletionGracePeriodSeconds"],
        300
    );

    sim.wait_for("one pod and one endpoint", WAIT, |sim| {
        sim.list("pods", Some("default")).len() == 1 && endpoints(sim).len() == 1
    })
    .await
    .expect("the terminated pod is gone");
    let after = sim.ready_endpoints("default", "web");
    assert_eq!(after.len(), 1);
    let gone: Vec<_> = before.iter().filter(|e| !after.contains(e)).collect();
    assert_eq!(gone.len(), 1);
    assert!(
        tokio::net::TcpStream::connect(gone[0]).await.is_err(),
        "its process was killed"
    );
    let status = sim.get("deployments", "default", "web").unwrap_or_default()["status"].clone();
    assert_eq!(status["replicas"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_pod_process_is_restarted() {
    let sim = start().await;
    sim.apply_yaml(&manifest("mendhak/http-https-echo", 1, json!({}), 30))
        .expect("apply");
    sim.wait_for_ready_endpoints("default", "web", 1, WAIT)
        .await
        .expect("ready");
    let pod = sim.list("pods", Some("default"))[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(sim.crash_pod("default", &pod));
    sim.wait_for("a restart", WAIT, |sim| {
        let p = sim.get("pods", "default", &pod).unwrap_or_default();
        let status = &p["status"]["containerStatuses"][0];
        status["restartCount"] == 1 && status["state"]["running"].is_object()
    })
    .await
    .expect("restarted");
    sim.wait_for_ready_endpoints("default", "web", 1, WAIT)
        .await
        .expect("ready again");
    let last = sim.get("pods", "default", &pod).unwrap_or_default();
    assert_eq!(
        last["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        137
    );
}

#[tokio::test]
async fn an_image_without_a_command_waits_in_err_image_pull() {
    let sim = start().await;
    sim.apply_yaml(&manifest("example/unknown", 1, json!({}), 30))
        .expect("apply");
    sim.wait_for("ErrImagePull", WAIT, |sim| {
        sim.list("pods", Some("default")).iter().any(|p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
        })
    })
    .await
    .expect("waiting");
}

#[tokio::test]
async fn a_container_gets_the_downward_api_expanded_args_and_a_kubeconfig_for_its_namespace() {
    // The mapped image stands for an entrypoint that prints its arguments and environment;
    // the container's args follow it.
    let entrypoint = r#"exec /bin/sh -c 'printf "%s\n" "$@"; env; exec sleep 300' entrypoint"#;
    let sim = start_with(SimConfig::default().image("example/env", entrypoint)).await;
    sim.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
        .expect("namespace");
    let container = json!({
        "name": "env",
        "image": "example/env:1",
        "env": [
            {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MY_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        "args": ["--listen=$(MY_IP):8080", "$$(MY_IP)"],
    });
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "env", "namespace": "shop"},
        "spec": {"containers": [container]},
    });
    sim.apply_yaml(&pod.to_string()).expect("pod");
    // The output is not a store change that `wait_for` would see: poll for it.
    tokio::time::timeout(WAIT, async {
        while !sim.pod_log("shop", "env").contains("KUBECONFIG=") {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the pod's output");
    let stored = sim.get("pods", "shop", "env").expect("the pod");
    let ip = stored["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let log = sim.pod_log("shop", "env");
    // The args, printed first, one per line.
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], format!("--listen={ip}:8080"), "{log}");
    assert_eq!(lines[1], "$(MY_IP)", "an escaped reference stays literal");
    for expected in [
        format!("MY_IP={ip}"),
        format!(
            "MY_UID={}",
            stored["metadata"]["uid"].as_str().unwrap_or_default()
        ),
        "MY_NODE=kube-sim".to_string(),
        "POD_NAMESPACE=shop".to_string(),
    ] {
        assert!(log.lines().any(|l| l == expected), "{expected} in\n{log}");
    }
    let kubeconfig = log
        .lines()
        .find_map(|l| l.strip_prefix("KUBECONFIG="))
        .expect("KUBECONFIG");
    let kubeconfig = std::fs::read_to_string(kubeconfig).expect("the kubeconfig exists");
    assert!(
        kubeconfig.contains(&format!("server: {}", sim.url())),
        "{kubeconfig}"
    );
    assert!(kubeconfig.contains("namespace: shop"), "{kubeconfig}");
}
