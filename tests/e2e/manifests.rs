//! The manifests in deploy/ as an operator applies them: every kustomization renders with
//! `kubectl kustomize` and validates against a current Kubernetes with `kubernetes-validate`,
//! and the monitoring overlay carries the Grafana dashboard as it is in the repository.

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
