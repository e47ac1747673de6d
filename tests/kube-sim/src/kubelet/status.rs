//! What the kubelet writes into a pod's `status`, as the real one shapes it: the scheduling and
//! address fields, the pod conditions, and a container's status. Pure edits of JSON; the worker
//! decides when to make them.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::NODE_NAME;
use crate::meta;

/// Binds the pod to the node and records its addresses, as scheduler and kubelet do.
pub(super) fn schedule(pod: &mut Value, ip: Ipv4Addr) {
    let now = meta::now();
    pod["spec"]["nodeName"] = json!(NODE_NAME);
    let status = &mut pod["status"];
    status["phase"] = json!("Pending");
    status["hostIP"] = json!("127.0.0.1");
    status["hostIPs"] = json!([{"ip": "127.0.0.1"}]);
    status["podIP"] = json!(ip.to_string());
    status["podIPs"] = json!([{"ip": ip.to_string()}]);
    status["startTime"] = json!(now);
    status["conditions"] = json!([
        {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "Ready", "status": "False", "lastProbeTime": null, "lastTransitionTime": now, "reason": "ContainersNotReady"},
        {"type": "ContainersReady", "status": "False", "lastProbeTime": null, "lastTransitionTime": now, "reason": "ContainersNotReady"},
        {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
    ]);
}

/// Sets the `Ready` and `ContainersReady` conditions, keeping transition times when unchanged.
pub(super) fn set_ready(pod: &mut Value, ready: bool) {
    let now = meta::now();
    let value = if ready { "True" } else { "False" };
    let Some(conditions) = pod
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for condition in conditions {
        if matches!(
            condition["type"].as_str(),
            Some("Ready" | "ContainersReady")
        ) && condition["status"] != value
        {
            condition["status"] = json!(value);
            condition["lastTransitionTime"] = json!(now);
            if let Some(c) = condition.as_object_mut() {
                if ready {
                    c.remove("reason");
                } else {
                    c.insert("reason".into(), json!("ContainersNotReady"));
                }
            }
        }
    }
}

/// A container's status entry in `state`, with its readiness, restarts and container id.
pub(super) fn container_status(
    container: &Value,
    state: Value,
    ready: bool,
    restarts: u32,
    id: &str,
) -> Value {
    let image = meta::str_at(container, "/image");
    let mut status = json!({
        "name": container["name"],
        "image": image,
        "imageID": format!("sim://{image}"),
        "state": state,
        "lastState": {},
        "ready": ready,
        "restartCount": restarts,
        "started": state.get("running").is_some(),
    });
    if !id.is_empty() {
        status["containerID"] = json!(id);
    }
    status
}
