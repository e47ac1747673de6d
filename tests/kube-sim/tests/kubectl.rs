//! The real `kubectl` against the simulator: create, get, scale, annotate, label, patch and
//! delete of the seed's helloworld manifest, with real echo processes behind the Service.

#[path = "support/start.rs"]
mod support;

use std::time::Duration;

use serde_json::Value;
use support::{WAIT, http_get, require_kubectl, start};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/helloworld.yaml");
const DEPLOYMENT: &str = "helloworld-00001-deployment";

async fn echo_answers(address: std::net::SocketAddr) -> Value {
    // The pod is Ready as soon as its process runs (it has no readiness probe), which can be
    // a moment before the process listens: retry connecting, boundedly, as a client would.
    for _ in 0..200 {
        if let Ok((200, body)) = http_get(address, "/hello?from=test").await {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no echo answer from {address}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_scales_annotates_and_deletes_the_seed_example() {
    require_kubectl();
    let sim = start().await;
    let created = sim.kubectl(&["create", "-f", SEED]).await.expect("create");
    assert!(
        created.contains("deployment.apps/helloworld-00001-deployment created"),
        "{created}"
    );
    assert!(created.contains("service/helloworld created"), "{created}");

    let replicas = sim
        .kubectl(&[
            "get",
            "deployment",
            DEPLOYMENT,
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .await
        .expect("get jsonpath");
    assert_eq!(replicas, "1");

    let scaled = sim
        .kubectl(&["scale", "deployment", DEPLOYMENT, "--replicas=2"])
        .await
        .expect("scale");
    assert!(scaled.contains("scaled"), "{scaled}");
    assert_eq!(sim.counters().count("patch", "deployments/scale"), 1);

    let endpoints = sim
        .wait_for_ready_endpoints("default", "helloworld", 2, WAIT)
        .await
        .expect("two ready endpoints");
    assert_ne!(
        endpoints[0].ip(),
        endpoints[1].ip(),
        "pods have distinct addresses"
    );
    assert!(
        endpoints.iter().all(|e| e.port() == 80),
        "pods share the container port"
    );
    let mut hostnames = Vec::new();
    for endpoint in &endpoints {
        let body = echo_answers(*endpoint).await;
        assert_eq!(body["path"], "/hello");
        assert_eq!(body["method"], "GET");
        assert_eq!(body["query"]["from"], "test");
        assert!(body["headers"]["host"].is_string());
        hostnames.push(
            body["os"]["hostname"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_ne!(
        hostnames[0], hostnames[1],
        "each answer comes from its own pod"
    );

    let slices = sim
        .kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=helloworld",
            "-o",
            "json",
        ])
        .await
        .expect("get endpointslices");
    let slices: Value = serde_json::from_str(&slices).expect("JSON");
    let items = slices["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    let ready: Vec<&Value> = items[0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["conditions"]["ready"] == true)
        .collect();
    assert_eq!(ready.len(), 2);
    assert!(ready.iter().all(|e| e["targetRef"]["kind"] == "Pod"));

    let pods = sim
        .kubectl(&["get", "pods", "-l", "app=helloworld"])
        .await
        .expect("get pods");
    assert_eq!(
        pods.lines().filter(|l| l.starts_with(DEPLOYMENT)).count(),
        2,
        "{pods}"
    );

    sim.kubectl(&[
        "annotate",
        "deployment",
        DEPLOYMENT,
        "activator.dev/idle-timeout=10s",
    ])
    .await
    .expect("annotate");
    sim.kubectl(&[
        "label",
        "deployment",
        DEPLOYMENT,
        "activator.dev/enabled=true",
    ])
    .await
    .expect("label");
    let enabled = sim
        .kubectl(&[
            "get",
            "deployments",
            "-l",
            "activator.dev/enabled=true",
            "-o",
            "jsonpath={.items[*].metadata.annotations}",
        ])
        .await
        .expect("get by label");
    assert!(enabled.contains("activator.dev/idle-timeout"), "{enabled}");
    sim.kubectl(&["patch", "deployment", DEPLOYMENT, "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"echo","env":[{"name":"EXTRA","value":"1"}]}]}}}}"#])
        .await
        .expect("strategic patch");
    let env = sim
        .kubectl(&[
            "get",
            "deployment",
            DEPLOYMENT,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[*].name}",
        ])
        .await
        .expect("get env");
    assert_eq!(env, "HTTP_PORT EXTRA");

    sim.kubectl(&["delete", "-f", SEED]).await.expect("delete");
    sim.wait_for("every pod to be gone", WAIT, |sim| {
        sim.list("pods", Some("default")).is_empty()
    })
    .await
    .expect("pods gone");
    for endpoint in &endpoints {
        assert!(
            tokio::net::TcpStream::connect(endpoint).await.is_err(),
            "the process behind {endpoint} is gone"
        );
    }
    let left = sim
        .kubectl(&["get", "pods", "-o", "name"])
        .await
        .expect("get pods");
    assert_eq!(left.trim(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_generators_send_protobuf_that_the_server_decodes() {
    require_kubectl();
    let sim = start().await;
    // kubectl 1.32's typed clients POST `application/vnd.kubernetes.protobuf` for these.
    let created = sim
        .kubectl(&["create", "namespace", "other"])
        .await
        .expect("create namespace");
    assert_eq!(created.trim(), "namespace/other created");
    assert_eq!(sim.counters().count("create", "namespaces"), 1);
    let namespace = sim
        .kubectl(&["get", "namespace", "other", "-o", "json"])
        .await
        .expect("get namespace");
    let namespace: Value = serde_json::from_str(&namespace).expect("JSON");
    assert_eq!(namespace["status"]["phase"], "Active");
    assert_eq!(namespace["spec"]["finalizers"][0], "kubernetes");
    assert_eq!(
        namespace["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "other"
    );

    sim.kubectl(&[
        "create",
        "deployment",
        "web",
        "--namespace=other",
        "--image=nginx:1.27",
        "--replicas=0",
        "--port=8080",
    ])
    .await
    .expect("create deployment");
    let deployment = sim.get("deployments", "other", "web").expect("stored");
    assert_eq!(
        deployment["spec"]["replicas"], 0,
        "a pointer's zero is kept"
    );
    assert_eq!(deployment["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["ports"][0]["containerPort"], 8080);

    sim.kubectl(&[
        "create",
        "service",
        "clusterip",
        "web",
        "--namespace=other",
        "--tcp=80:http",
    ])
    .await
    .expect("create service");
    let service = sim.get("services", "other", "web").expect("stored");
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(service["spec"]["selector"]["app"], "web");
}

/// One of each kind the simulator stores without acting on it.
const STORED_KINDS: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: app, namespace: default}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: app, namespace: default}
data: {config.toml: "domain = \"example.test\"\n"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: app}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: app}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: app}
subjects: [{kind: ServiceAccount, name: app, namespace: default}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: app, namespace: default}
rules: [{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, update]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: app, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: app}
subjects: [{kind: ServiceAccount, name: app, namespace: default}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: app, namespace: default}
spec: {minAvailable: 1, selector: {matchLabels: {app: app}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: app, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: app}
  minReplicas: 1
  maxReplicas: 3
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: app, namespace: default}
spec: {podSelector: {matchLabels: {app: app}}, policyTypes: [Ingress]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_and_reads_back_the_kinds_that_are_only_stored() {
    require_kubectl();
    let sim = start().await;
    let file = std::env::temp_dir().join(format!("kube-sim-stored-{}.yaml", std::process::id()));
    std::fs::write(&file, STORED_KINDS).expect("manifest");
    let path = file.to_string_lossy().to_string();
    let applied = sim.kubectl(&["apply", "-f", &path]).await;
    let again = sim.kubectl(&["apply", "-f", &path]).await;
    let _ = std::fs::remove_file(&file);
    let applied = applied.expect("apply");
    for created in [
        "serviceaccount/app created",
        "configmap/app created",
        "clusterrole.rbac.authorization.k8s.io/app created",
        "clusterrolebinding.rbac.authorization.k8s.io/app created",
        "role.rbac.authorization.k8s.io/app created",
        "rolebinding.rbac.authorization.k8s.io/app created",
        "poddisruptionbudget.policy/app created",
        "horizontalpodautoscaler.autoscaling/app created",
        "networkpolicy.networking.k8s.io/app created",
    ] {
        assert!(applied.contains(created), "{created} in\n{applied}");
    }
    let again = again.expect("apply again");
    assert_eq!(
        again.lines().filter(|l| l.ends_with(" unchanged")).count(),
        8,
        "{again}"
    );
    // A PodDisruptionBudget's selector has patch strategy `replace`, so kubectl's patch for it
    // is never empty and it says so against a real API server too.
    assert!(
        again.contains("poddisruptionbudget.policy/app configured"),
        "{again}"
    );
    let names = sim
        .kubectl(&[
            "get",
            "sa,cm,roles,rolebindings,pdb,hpa,netpol",
            "-o",
            "name",
        ])
        .await
        .expect("get");
    assert_eq!(
        names.lines().filter(|l| l.ends_with("/app")).count(),
        7,
        "{names}"
    );
    let data = sim
        .kubectl(&[
            "get",
            "configmap",
            "app",
            "-o",
            "jsonpath={.data.config\\.toml}",
        ])
        .await
        .expect("get data");
    assert_eq!(data, "domain = \"example.test\"\n");
    let printed = sim
        .kubectl(&["get", "configmap,serviceaccount", "app"])
        .await
        .expect("get printed");
    let columns: Vec<Vec<&str>> = printed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|c: &Vec<&str>| c.len() >= 2)
        .collect();
    assert!(columns.contains(&vec!["NAME", "DATA", "AGE"]), "{printed}");
    assert!(
        columns.contains(&vec!["NAME", "SECRETS", "AGE"]),
        "{printed}"
    );
    assert!(
        columns.iter().any(|c| c[..2] == ["configmap/app", "1"]),
        "{printed}"
    );
    assert!(
        columns
            .iter()
            .any(|c| c[..2] == ["serviceaccount/app", "0"]),
        "{printed}"
    );
    let role = sim
        .get("clusterrolebindings", "", "app")
        .expect("a cluster-scoped binding");
    assert_eq!(role["subjects"][0]["namespace"], "default");
}
