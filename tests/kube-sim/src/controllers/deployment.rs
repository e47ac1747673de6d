//! The deployment controller: one pod per desired replica, made from the pod template and
//! owned by the Deployment (the simulator has no ReplicaSets; pods carry the
//! `pod-template-hash` label a ReplicaSet would give them). A changed template rolls out by
//! creating the new pods first and deleting the old ones once the new ones are ready. It keeps
//! `status` (`replicas`, `updatedReplicas`, `readyReplicas`, `availableReplicas`,
//! `unavailableReplicas`, `observedGeneration`, conditions) up to date.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::api::defaults;
use crate::lifecycle;
use crate::meta;
use crate::store::{Key, Store, StoreError, resource};

/// The label carrying the template hash.
pub const HASH_LABEL: &str = "pod-template-hash";

/// Reconciles every deployment.
pub fn reconcile(store: &Store) {
    let (deployments, _) = store.list(resource("apps", "deployments"), None);
    let (pods, _) = store.list(resource("", "pods"), None);
    for deployment in deployments {
        if !meta::is_terminating(&deployment) {
            reconcile_one(store, &deployment, &pods);
        }
    }
}

/// Whether a pod's `Ready` condition is true.
pub fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// A short stable hash of the pod template, spelled like Kubernetes' hashes.
fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    for byte in serde_json::to_vec(template).unwrap_or_default() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let mut out = String::new();
    while hash > 0 || out.is_empty() {
        out.push(ALPHABET[(hash % 27) as usize] as char);
        hash /= 27;
    }
    out
}

fn reconcile_one(store: &Store, deployment: &Value, pods: &[Arc<Value>]) {
    let uid = meta::uid(deployment);
    let template = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_default();
    let hash = template_hash(&template);
    let desired = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    let active: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| meta::is_owned_by(p, uid) && !meta::is_terminating(p))
        .collect();
    let hash_pointer = format!("/metadata/labels/{HASH_LABEL}");
    let (mut current, old): (Vec<&Arc<Value>>, Vec<&Arc<Value>>) = active
        .iter()
        .partition(|p| meta::str_at(p, &hash_pointer) == hash);

    for _ in current.len()..desired {
        create_pod(store, deployment, &template, &hash);
    }
    if current.len() > desired {
        // Remove not-ready pods first, then the newest, as the ReplicaSet controller does.
        current.sort_by_key(|p| {
            (
                is_ready(p),
                std::cmp::Reverse(meta::str_at(p, "/metadata/creationTimestamp").to_string()),
            )
        });
        for pod in &current[..current.len() - desired] {
            delete_pod(store, pod);
        }
    }
    let current_ready = current.iter().filter(|p| is_ready(p)).count();
    if current_ready >= desired {
        for pod in &old {
            delete_pod(store, pod);
        }
    }
    write_status(store, deployment, &active, &hash, desired);
}

fn create_pod(store: &Store, deployment: &Value, template: &Value, hash: &str) {
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), json!(hash));
    let mut metadata = Map::new();
    metadata.insert(
        "generateName".into(),
        json!(format!("{}-{hash}-", meta::name(deployment))),
    );
    metadata.insert("namespace".into(), json!(meta::namespace(deployment)));
    metadata.insert("labels".into(), Value::Object(labels));
    if let Some(annotations) = template.pointer("/metadata/annotations") {
        metadata.insert("annotations".into(), annotations.clone());
    }
    metadata.insert(
        "ownerReferences".into(),
        json!([meta::controller_ref(deployment)]),
    );
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_default(),
    });
    let pods = resource("", "pods");
    if defaults::apply(pods, &mut pod).is_ok()
        && let Err(error) = store.create(pods, pod)
    {
        tracing::warn!(%error, "deployment controller could not create a pod");
    }
}

fn delete_pod(store: &Store, pod: &Value) {
    let key = Key::new(resource("", "pods"), meta::namespace(pod), meta::name(pod));
    let _ = lifecycle::delete(store, &key, None);
}

fn write_status(
    store: &Store,
    deployment: &Value,
    active: &[&Arc<Value>],
    hash: &str,
    desired: usize,
) {
    let hash_pointer = format!("/metadata/labels/{HASH_LABEL}");
    let replicas = active.len();
    let updated = active
        .iter()
        .filter(|p| meta::str_at(p, &hash_pointer) == hash)
        .count();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let available = ready;
    let max_unavailable = desired / 4;
    let previous = deployment.get("status").cloned().unwrap_or_default();
    let condition = |kind: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let old = previous
            .get("conditions")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["type"] == kind).cloned());
        let same = old
            .as_ref()
            .is_some_and(|o| o["status"] == status && o["reason"] == reason);
        let now = meta::now();
        let (transition, update) = match &old {
            Some(o) if same => (o["lastTransitionTime"].clone(), o["lastUpdateTime"].clone()),
            _ => (json!(now), json!(now)),
        };
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": transition, "lastUpdateTime": update})
    };
    let name = meta::name(deployment);
    let complete = updated == desired && available >= desired && replicas == desired;
    let mut status = json!({
        "observedGeneration": deployment.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "conditions": [
            condition(
                "Available",
                available + max_unavailable >= desired,
                if available + max_unavailable >= desired { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                format!("Deployment {} minimum availability.", if available + max_unavailable >= desired { "has" } else { "does not have" }),
            ),
            condition(
                "Progressing",
                true,
                if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                format!("ReplicaSet \"{name}-{hash}\" {}.", if complete { "has successfully progressed" } else { "is progressing" }),
            ),
        ],
    });
    // Zero counts are omitted, as the Go API types do.
    for (field, value) in [
        ("replicas", replicas),
        ("updatedReplicas", updated),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("unavailableReplicas", desired.saturating_sub(available)),
    ] {
        if value > 0 {
            status[field] = json!(value);
        }
    }
    if status == previous {
        return;
    }
    let key = Key::new(
        resource("apps", "deployments"),
        meta::namespace(deployment),
        name,
    );
    let uid = meta::uid(deployment).to_string();
    let _ = store.modify::<StoreError>(&key, |d| {
        if meta::uid(d) != uid {
            return Ok(None);
        }
        let mut next = d.clone();
        next["status"] = status;
        Ok(Some(next))
    });
}
