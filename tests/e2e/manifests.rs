//! The manifests in deploy/ as an operator applies them: every kustomization renders with
//! `kubectl kustomize` and validates against a current Kubernetes with `kubernetes-validate`.

use std::path::Path;
use std::process::Command;

const KUSTOMIZATIONS: [&str; 4] = [
    "deploy/base",
    "deploy/overlays/istio",
    "deploy/overlays/monitoring",
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

#[test]
fn the_activator_may_write_only_the_scale_subresource() {
    let rendered = render("deploy/base");
    let rules = rendered
        .split("kind: ClusterRole\n")
        .nth(1)
        .expect("a ClusterRole");
    let rules = rules.split("---").next().unwrap();
    let deployments_rule = rules
        .split("- apiGroups:")
        .find(|rule| rule.contains("- deployments\n"))
        .expect("a rule for deployments");
    for verb in ["patch", "update", "create", "delete"] {
        assert!(
            !deployments_rule.contains(&format!("- {verb}")),
            "deployments must not be writable:\n{deployments_rule}"
        );
    }
    assert!(rules.contains("deployments/scale"));
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
