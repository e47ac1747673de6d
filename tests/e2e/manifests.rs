//! The manifests in deploy/ as an operator applies them: every kustomization renders with
//! `kubectl kustomize` and validates against a current Kubernetes with `kubernetes-validate`,
//! and the monitoring overlay carries the Grafana dashboard as it is in the repository.

use std::path::Path;
use std::process::Command;

const KUSTOMIZATIONS: [&str; 5] = [
    "deploy/base",
    "deploy/overlays/istio",
    "deploy/overlays/monitoring",
    "deploy/overlays/namespaced",
    "deploy/examples",
];

fn render(dir: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("kubectl")
        .args(["kustomize", root.join(dir).to_str().unwrap()])
        .output()
        .expect("kubectl is on the PATH");
    assert!(
        output.status.success(),
        "{dir}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_kustomization_renders_and_validates_strictly() {
    for dir in KUSTOMIZATIONS {
        let rendered = render(dir);
        let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::io::Write::write_all(&mut file, rendered.as_bytes()).unwrap();
        let output = Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", file.path().to_str().unwrap()])
            .output()
            .expect("kubernetes-validate is on the PATH (pip install kubernetes-validate; scripts/test installs it)");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "{dir} does not validate:\n{report}"
        );
        assert!(!report.contains("ERROR"), "{dir}:\n{report}");
    }
}

/// The objects of a rendered kustomization.
fn objects(dir: &str) -> Vec<serde_yaml::Value> {
    let rendered = render(dir);
    serde_yaml::Deserializer::from_str(&rendered)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect()
}

/// `group/resource` → verbs, from every rule of the roles of `kind` in `objects`.
fn rights(objects: &[serde_yaml::Value], kind: &str) -> Vec<(String, Vec<String>)> {
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let mut rights = Vec::new();
    // The activator's own Role for its Lease is checked on its own.
    for role in objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == "activator")
    {
        for rule in role["rules"].as_sequence().unwrap() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    rights.push((format!("{group}/{resource}"), strings(&rule["verbs"])));
                }
            }
        }
    }
    rights.sort();
    rights
}

/// Exactly what the code calls: watches of Deployments, Services and EndpointSlices; lists of a
/// starting route's pods; get and patch of the scale subresource; Events through events.k8s.io.
fn needed() -> Vec<(String, Vec<String>)> {
    let mut needed: Vec<(String, Vec<String>)> = [
        ("apps/deployments", &["list", "watch"][..]),
        ("apps/deployments/scale", &["get", "patch"]),
        ("/services", &["list", "watch"]),
        ("/pods", &["list"]),
        ("discovery.k8s.io/endpointslices", &["list", "watch"]),
        ("events.k8s.io/events", &["create", "patch"]),
    ]
    .iter()
    .map(|(r, v)| (r.to_string(), v.iter().map(|v| v.to_string()).collect()))
    .collect();
    needed.sort();
    needed
}

#[test]
fn the_cluster_role_grants_only_the_verbs_the_code_uses() {
    let objects = objects("deploy/base");
    assert_eq!(rights(&objects, "ClusterRole"), needed());
}

#[test]
fn the_namespaced_overlay_grants_the_same_in_one_namespace_and_nothing_cluster_wide() {
    let objects = objects("deploy/overlays/namespaced");
    assert!(
        objects
            .iter()
            .all(|o| o["kind"] != "ClusterRole" && o["kind"] != "ClusterRoleBinding"),
        "no cluster-wide rights"
    );
    assert_eq!(rights(&objects, "Role"), needed());
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let env =
        serde_yaml::to_string(&deployment["spec"]["template"]["spec"]["containers"][0]["env"])
            .unwrap();
    assert!(env.contains("ACTIVATOR_NAMESPACE"), "{env}");
}

#[test]
fn the_admin_port_is_reachable_only_from_monitoring_and_other_activators() {
    let objects = objects("deploy/base");
    let policy = objects
        .iter()
        .find(|o| o["kind"] == "NetworkPolicy")
        .expect("a NetworkPolicy");
    let text = serde_yaml::to_string(&policy["spec"]["ingress"]).unwrap();
    assert!(
        text.contains("kubernetes.io/metadata.name: monitoring"),
        "{text}"
    );
    assert!(text.contains("port: admin"), "{text}");
}

#[test]
fn the_example_is_the_seed_walkthrough() {
    let rendered = render("deploy/examples");
    for expected in [
        "name: helloworld-00001-deployment",
        "image: mendhak/http-https-echo",
        "containerPort: 80",
        "name: HTTP_PORT",
        "replicas: 0",
        "activator.dev/enabled: \"true\"",
        "name: helloworld\n",
    ] {
        assert!(
            rendered.contains(expected),
            "missing {expected:?} in\n{rendered}"
        );
    }
}

#[test]
fn the_monitoring_overlay_ships_the_dashboard_to_grafanas_sidecar_unchanged() {
    let rendered = render("deploy/overlays/monitoring");
    let config_map = rendered
        .split("---\n")
        .find(|doc| {
            doc.contains("kind: ConfigMap\n") && doc.contains("name: activator-dashboard\n")
        })
        .unwrap_or_else(|| panic!("no ConfigMap activator-dashboard in\n{rendered}"));
    assert!(
        config_map.contains("grafana_dashboard: \"1\"")
            && config_map.contains("namespace: activator-system"),
        "the sidecar's label and the activator's namespace:\n{config_map}"
    );
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/overlays/monitoring/activator-dashboard.json"),
    )
    .unwrap();
    let (_, content) = config_map
        .split_once("activator-dashboard.json: |\n")
        .expect("the dashboard file as a key of data");
    let shipped: String = content
        .lines()
        .take_while(|line| line.starts_with("    ") || line.is_empty())
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    assert_eq!(shipped.trim_end(), dashboard.trim_end());
}

/// The rendered documents of `dir`, parsed.
fn documents(dir: &str) -> Vec<serde_json::Value> {
    render(dir)
        .split("\n---\n")
        .map(|doc| {
            let value: serde_yaml::Value = serde_yaml::from_str(doc).expect("YAML");
            serde_json::to_value(value).expect("JSON-shaped YAML")
        })
        .collect()
}

#[test]
fn leases_are_granted_in_the_activators_namespace_only() {
    let docs = documents("deploy/base");
    let leases = |doc: &serde_json::Value| {
        doc["rules"].as_array().is_some_and(|rules| {
            rules
                .iter()
                .any(|r| r["resources"].to_string().contains("leases"))
        })
    };
    let cluster_wide: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" && leases(d))
        .collect();
    assert!(cluster_wide.is_empty(), "{cluster_wide:?}");
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && leases(d))
        .expect("a Role for the Lease");
    assert_eq!(role["metadata"]["namespace"], "activator-system");
    assert!(
        docs.iter().any(|d| d["kind"] == "RoleBinding"
            && d["roleRef"]["name"] == role["metadata"]["name"]
            && d["subjects"][0]["name"] == "activator"),
        "the Role is bound to the activator's ServiceAccount"
    );
}

#[test]
fn the_activator_runs_three_spread_replicas_with_a_budget_and_an_autoscaler() {
    let docs = documents("deploy/base");
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("a {kind}"))
    };
    let deployment = find("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    let keys: Vec<_> = pod["topologySpreadConstraints"]
        .as_array()
        .expect("topology spread")
        .iter()
        .map(|c| c["topologyKey"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    let env = pod["containers"][0]["env"].to_string();
    for field in ["metadata.name", "metadata.namespace"] {
        assert!(env.contains(field), "downward API {field}: {env}");
    }
    assert_eq!(find("PodDisruptionBudget")["spec"]["maxUnavailable"], 1);
    let hpa = &find("HorizontalPodAutoscaler")["spec"];
    assert_eq!(
        (hpa["minReplicas"].as_i64(), hpa["maxReplicas"].as_i64()),
        (Some(3), Some(20))
    );
    let ports = find("Service")["spec"]["ports"].to_string();
    assert!(ports.contains("\"name\":\"admin\""), "{ports}");
}
