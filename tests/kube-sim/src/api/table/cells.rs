//! The cells of one object's row, as the API server's printers compute them
//! (`pkg/printers/internalversion/printers.go`), from the object's stored form. Rows always carry
//! the wide (priority 1) cells too: the server sends them all and kubectl shows them with
//! `-o wide`.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::age::{age, human_duration, since};
use crate::meta;

/// The cells of an object's row (in its stored form), and the row's conditions.
pub(crate) fn cells(kind: &str, object: &Value) -> (Vec<Value>, Option<Value>) {
    let now = SystemTime::now();
    match kind {
        "Pod" => pod(object, now),
        "Deployment" => (deployment(object, now), None),
        "Service" => (service(object, now), None),
        "EndpointSlice" => (endpoint_slice(object, now), None),
        "Event" => (event(object, now), None),
        "Namespace" => (
            vec![
                json!(meta::name(object)),
                json!(meta::str_at(object, "/status/phase")),
                json!(age(object, now)),
            ],
            None,
        ),
        "Lease" => (
            vec![
                json!(meta::name(object)),
                json!(meta::str_at(object, "/spec/holderIdentity")),
                json!(age(object, now)),
            ],
            None,
        ),
        "ConfigMap" => {
            let entries = |field: &str| {
                object
                    .get(field)
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            };
            let data = entries("data") + entries("binaryData");
            (
                vec![
                    json!(meta::name(object)),
                    json!(data),
                    json!(age(object, now)),
                ],
                None,
            )
        }
        "ServiceAccount" => (
            vec![
                json!(meta::name(object)),
                json!(array(object, "/secrets").len()),
                json!(age(object, now)),
            ],
            None,
        ),
        _ => (
            vec![json!(meta::name(object)), json!(age(object, now))],
            None,
        ),
    }
}

fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn array<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn or_none(text: String) -> String {
    if text.is_empty() {
        "<none>".to_string()
    } else {
        text
    }
}

fn pod(pod: &Value, now: SystemTime) -> (Vec<Value>, Option<Value>) {
    let phase = meta::str_at(pod, "/status/phase");
    let mut reason = match meta::str_at(pod, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    let (mut restarts, mut ready, mut running) = (0, 0, false);
    let mut last_restart: Option<SystemTime> = None;
    for status in array(pod, "/status/containerStatuses").iter().rev() {
        restarts += int(status, "/restartCount");
        if let Some(finished) =
            meta::parse_rfc3339(meta::str_at(status, "/lastState/terminated/finishedAt"))
        {
            last_restart = last_restart.max(Some(finished));
        }
        let waiting = meta::str_at(status, "/state/waiting/reason");
        let terminated = status.pointer("/state/terminated");
        if !waiting.is_empty() {
            reason = waiting.to_string();
        } else if let Some(terminated) = terminated {
            reason = match (
                meta::str_at(terminated, "/reason"),
                int(terminated, "/signal"),
            ) {
                ("", 0) => format!("ExitCode:{}", int(terminated, "/exitCode")),
                ("", signal) => format!("Signal:{signal}"),
                (r, _) => r.to_string(),
            };
        } else if status["ready"] == true && status.pointer("/state/running").is_some() {
            running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && running {
        let pod_ready = array(pod, "/status/conditions")
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
    }
    if meta::is_terminating(pod) {
        reason = if meta::str_at(pod, "/status/reason") == "NodeLost" {
            "Unknown"
        } else {
            "Terminating"
        }
        .to_string();
    }
    let restarts = match last_restart {
        Some(at) => format!(
            "{restarts} ({} ago)",
            human_duration(now.duration_since(at).unwrap_or_default())
        ),
        None => restarts.to_string(),
    };
    let gates = array(pod, "/spec/readinessGates");
    let gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = array(pod, "/status/conditions");
        let passed = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .find(|c| c["type"] == g["conditionType"])
                    .is_some_and(|c| c["status"] == "True")
            })
            .count();
        format!("{passed}/{}", gates.len())
    };
    let cells = vec![
        json!(meta::name(pod)),
        json!(format!("{ready}/{}", array(pod, "/spec/containers").len())),
        json!(reason),
        json!(restarts),
        json!(age(pod, now)),
        json!(or_none(
            meta::str_at(pod, "/status/podIPs/0/ip").to_string()
        )),
        json!(or_none(meta::str_at(pod, "/spec/nodeName").to_string())),
        json!(or_none(
            meta::str_at(pod, "/status/nominatedNodeName").to_string()
        )),
        json!(gates),
    ];
    let condition = match phase {
        "Succeeded" => Some(("Succeeded", "The pod has completed successfully.")),
        "Failed" => Some(("Failed", "The pod failed.")),
        _ => None,
    };
    let conditions = condition.map(|(reason, message)| {
        json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}])
    });
    (cells, conditions)
}

/// Container names and images of a pod template, comma-separated.
fn containers(template: &Value) -> (String, String) {
    let containers = array(template, "/spec/containers");
    let join = |field: &str| {
        containers
            .iter()
            .map(|c| meta::str_at(c, field))
            .collect::<Vec<_>>()
            .join(",")
    };
    (join("/name"), join("/image"))
}

/// A `LabelSelector` as `labels.Selector.String()` writes it: requirements sorted by key.
fn label_selector(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in labels {
            let value = value.as_str().unwrap_or_default();
            requirements.push((key.clone(), format!("{key}={value}")));
        }
    }
    for expression in array(selector, "/matchExpressions") {
        let key = meta::str_at(expression, "/key");
        let mut values: Vec<&str> = array(expression, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match meta::str_at(expression, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        requirements.push((key.to_string(), text));
    }
    requirements.sort();
    requirements
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

fn deployment(deployment: &Value, now: SystemTime) -> Vec<Value> {
    let template = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_default();
    let (names, images) = containers(&template);
    vec![
        json!(meta::name(deployment)),
        json!(format!(
            "{}/{}",
            int(deployment, "/status/readyReplicas"),
            int(deployment, "/spec/replicas")
        )),
        json!(int(deployment, "/status/updatedReplicas")),
        json!(int(deployment, "/status/availableReplicas")),
        json!(age(deployment, now)),
        json!(names),
        json!(images),
        json!(label_selector(deployment.pointer("/spec/selector"))),
    ]
}

fn service(service: &Value, now: SystemTime) -> Vec<Value> {
    let strings = |pointer: &str| -> Vec<&str> {
        array(service, pointer)
            .iter()
            .filter_map(Value::as_str)
            .collect()
    };
    let external = strings("/spec/externalIPs").join(",");
    let external = match meta::str_at(service, "/spec/type") {
        "ClusterIP" | "NodePort" | "" => or_none(external),
        "LoadBalancer" => {
            let mut addresses: Vec<&str> = array(service, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| {
                    i.get("ip")
                        .or_else(|| i.get("hostname"))
                        .and_then(Value::as_str)
                })
                .collect();
            addresses.sort_unstable();
            addresses.dedup();
            addresses.extend(strings("/spec/externalIPs"));
            if addresses.is_empty() {
                "<pending>".to_string()
            } else {
                addresses.join(",")
            }
        }
        "ExternalName" => meta::str_at(service, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = array(service, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = meta::str_at(p, "/protocol");
            match int(p, "/nodePort") {
                0 => format!("{}/{protocol}", int(p, "/port")),
                node => format!("{}:{node}/{protocol}", int(p, "/port")),
            }
        })
        .collect();
    let mut selector: Vec<String> = service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    selector.sort();
    vec![
        json!(meta::name(service)),
        json!(meta::str_at(service, "/spec/type")),
        json!(or_none(
            meta::str_at(service, "/spec/clusterIPs/0").to_string()
        )),
        json!(external),
        json!(or_none(ports.join(","))),
        json!(age(service, now)),
        json!(or_none(selector.join(","))),
    ]
}

/// At most three items, then `+ N more...`; `<unset>` when there are none.
fn at_most_three(items: Vec<String>) -> String {
    match items.len() {
        0 => "<unset>".to_string(),
        n if n > 3 => format!("{} + {} more...", items[..3].join(","), n - 3),
        _ => items.join(","),
    }
}

fn endpoint_slice(slice: &Value, now: SystemTime) -> Vec<Value> {
    let ports = array(slice, "/ports")
        .iter()
        .map(
            |p| match (p.get("port").and_then(Value::as_i64), p.get("name")) {
                (Some(port), _) => port.to_string(),
                (None, Some(Value::String(name))) => name.clone(),
                _ => "*".to_string(),
            },
        )
        .collect();
    let addresses = array(slice, "/endpoints")
        .iter()
        .flat_map(|e| array(e, "/addresses"))
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    vec![
        json!(meta::name(slice)),
        json!(meta::str_at(slice, "/addressType")),
        json!(at_most_three(ports)),
        json!(at_most_three(addresses)),
        json!(age(slice, now)),
    ]
}

fn event(event: &Value, now: SystemTime) -> Vec<Value> {
    let first = match meta::str_at(event, "/firstTimestamp") {
        "" => since(event, "/eventTime", now),
        _ => since(event, "/firstTimestamp", now),
    };
    let mut last = match meta::str_at(event, "/lastTimestamp") {
        "" => first.clone(),
        _ => since(event, "/lastTimestamp", now),
    };
    let mut count = int(event, "/count");
    if event.get("series").is_some_and(Value::is_object) {
        last = since(event, "/series/lastObservedTime", now);
        count = int(event, "/series/count");
    } else if count == 0 {
        // Singleton events do not set a count in the events.k8s.io API.
        count = 1;
    }
    let kind = meta::str_at(event, "/involvedObject/kind").to_lowercase();
    let target = match meta::str_at(event, "/involvedObject/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = match meta::str_at(event, "/source/component") {
        "" => meta::str_at(event, "/reportingComponent"),
        c => c,
    };
    let instance = match meta::str_at(event, "/source/host") {
        "" => meta::str_at(event, "/reportingInstance"),
        h => h,
    };
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(meta::str_at(event, "/type")),
        json!(meta::str_at(event, "/reason")),
        json!(target),
        json!(meta::str_at(event, "/involvedObject/fieldPath")),
        json!(source),
        json!(meta::str_at(event, "/message").trim()),
        json!(first),
        json!(count),
        json!(meta::name(event)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_print_sorted_by_key() {
        let selector = json!({
            "matchLabels": {"tier": "web", "app": "shop"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}],
        });
        assert_eq!(
            label_selector(Some(&selector)),
            "app=shop,env in (dev,prod),tier=web"
        );
    }

    #[test]
    fn a_crash_looping_pod_shows_its_waiting_reason_and_last_restart() {
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": meta::now()},
            "spec": {"containers": [{"name": "web"}], "nodeName": "kube-sim"},
            "status": {"phase": "Running", "podIPs": [{"ip": "127.0.0.9"}], "containerStatuses": [{
                "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": meta::now()}},
            }]},
        });
        let (cells, conditions) = cells("Pod", &pod);
        assert_eq!(cells[1], "0/1");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert!(
            cells[3].as_str().is_some_and(|r| r.starts_with("2 (")),
            "{}",
            cells[3]
        );
        assert_eq!(cells[5], "127.0.0.9");
        assert_eq!(cells[7], "<none>");
        assert!(conditions.is_none());
    }

    #[test]
    fn slices_list_at_most_three_addresses() {
        let endpoints: Vec<Value> = ["a", "b", "c", "d"]
            .iter()
            .map(|a| json!({"addresses": [a]}))
            .collect();
        let slice = json!({
            "metadata": {"name": "web-abc"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": endpoints,
        });
        let (cells, _) = cells("EndpointSlice", &slice);
        assert_eq!(cells[2], "8080");
        assert_eq!(cells[3], "a,b,c + 1 more...");
    }
}
