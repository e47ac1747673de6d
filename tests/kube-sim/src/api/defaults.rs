//! Defaulting and light validation of new and updated objects, per kind, as the API server's
//! registry strategies do: deployment replicas and strategy, pod spec defaults, service
//! cluster IPs and ports, namespace phase. Only the fields clients commonly read are filled.

use serde_json::{Value, json};

use super::status::ApiError;
use crate::meta;
use crate::resources::ResourceType;
use crate::selector::LabelSelector;

fn set_default(object: &mut Value, field: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.entry(field).or_insert(value);
    }
}

/// Fills defaults on an object about to be written, and validates what the simulator relies on.
///
/// # Errors
/// 422 `Invalid` when a deployment's selector does not match its template's labels.
pub fn apply(resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    match resource.kind {
        "Deployment" => deployment(resource, object),
        "Pod" => {
            if let Some(spec) = object.get_mut("spec") {
                pod_spec(spec);
            }
            set_default(
                object,
                "status",
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            );
            Ok(())
        }
        "Service" => {
            service(object);
            Ok(())
        }
        "Namespace" => {
            let name = meta::name(object).to_string();
            let labels = meta::metadata_mut(object)
                .entry("labels")
                .or_insert_with(|| json!({}));
            set_default(labels, "kubernetes.io/metadata.name", json!(name));
            // An empty `spec` or `status` (as kubectl's generators send) is filled too.
            set_default(object, "spec", json!({}));
            set_default(&mut object["spec"], "finalizers", json!(["kubernetes"]));
            set_default(object, "status", json!({}));
            set_default(&mut object["status"], "phase", json!("Active"));
            Ok(())
        }
        _ => Ok(()),
    }
}

fn deployment(resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    let name = meta::name(object).to_string();
    let spec = object
        .as_object_mut()
        .map(|o| o.entry("spec").or_insert_with(|| json!({})));
    let Some(spec) = spec else { return Ok(()) };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    // An empty strategy (as `kubectl create deployment` sends) defaults like a missing one.
    set_default(spec, "strategy", json!({}));
    set_default(&mut spec["strategy"], "type", json!("RollingUpdate"));
    if spec["strategy"]["type"] == "RollingUpdate" {
        set_default(
            &mut spec["strategy"],
            "rollingUpdate",
            json!({"maxUnavailable": "25%", "maxSurge": "25%"}),
        );
    }
    if let Some(pod) = spec.pointer_mut("/template/spec") {
        pod_spec(pod);
    }
    let selector = spec
        .pointer("/selector/matchLabels")
        .and_then(Value::as_object)
        .map(LabelSelector::from_match_labels);
    let template =
        json!({"metadata": spec.pointer("/template/metadata").cloned().unwrap_or_default()});
    match selector {
        Some(s) if !s.is_empty() && s.matches(&template) => Ok(()),
        Some(s) if !s.is_empty() => Err(ApiError::invalid(
            resource,
            &name,
            "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`",
        )),
        _ => Err(ApiError::invalid(
            resource,
            &name,
            "spec.selector: Required value",
        )),
    }
}

fn pod_spec(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) else {
        return;
    };
    for c in containers {
        let image = meta::str_at(c, "/image");
        let tagged = image
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'));
        let pull = if tagged && !image.ends_with(":latest") {
            "IfNotPresent"
        } else {
            "Always"
        };
        set_default(c, "imagePullPolicy", json!(pull));
        set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
        set_default(c, "terminationMessagePolicy", json!("File"));
        set_default(c, "resources", json!({}));
        if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                set_default(p, "protocol", json!("TCP"));
            }
        }
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            if let Some(p) = c.get_mut(probe) {
                set_default(p, "timeoutSeconds", json!(1));
                set_default(p, "periodSeconds", json!(10));
                set_default(p, "successThreshold", json!(1));
                set_default(p, "failureThreshold", json!(3));
                if let Some(http) = p.get_mut("httpGet") {
                    set_default(http, "scheme", json!("HTTP"));
                    set_default(http, "path", json!("/"));
                }
            }
        }
    }
}

fn service(object: &mut Value) {
    let Some(spec) = object.get_mut("spec") else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    set_default(spec, "ipFamilies", json!(["IPv4"]));
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    if spec.get("clusterIP").is_none() {
        let [a, b]: [u8; 2] = rand::random();
        let ip = format!("10.96.{a}.{}", b.max(2));
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
            let port = p.get("port").cloned().unwrap_or(Value::Null);
            set_default(p, "targetPort", port);
        }
    }
    set_default(object, "status", json!({"loadBalancer": {}}));
}
