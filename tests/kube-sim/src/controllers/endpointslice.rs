//! The EndpointSlice controller: for every Service with a selector, one IPv4 EndpointSlice
//! labelled `kubernetes.io/service-name`, listing each selected pod that has an address, with
//! the Service's ports (target ports resolved against the pods) and per-endpoint conditions:
//! `ready` (pod Ready and not terminating), `serving` (pod Ready), `terminating`.

use std::sync::Arc;

use serde_json::{Value, json};

use super::deployment::is_ready;
use crate::kubelet::NODE_NAME;
use crate::meta;
use crate::selector::LabelSelector;
use crate::store::{Key, Store, StoreError, resource};

/// Label naming a slice's service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Reconciles the slices of every service.
pub fn reconcile(store: &Store) {
    let (services, _) = store.list(resource("", "services"), None);
    let (pods, _) = store.list(resource("", "pods"), None);
    let (slices, _) = store.list(resource("discovery.k8s.io", "endpointslices"), None);
    for service in services {
        let selector = service.pointer("/spec/selector").and_then(Value::as_object);
        let Some(selector) = selector.filter(|s| !s.is_empty()) else {
            continue;
        };
        if meta::is_terminating(&service) {
            continue;
        }
        let selector = LabelSelector::from_match_labels(selector);
        let namespace = meta::namespace(&service);
        let selected: Vec<&Arc<Value>> = pods
            .iter()
            .filter(|p| meta::namespace(p) == namespace && selector.matches(p))
            .filter(|p| !meta::str_at(p, "/status/podIP").is_empty())
            .filter(|p| !matches!(meta::str_at(p, "/status/phase"), "Succeeded" | "Failed"))
            .collect();
        let owned: Vec<&Arc<Value>> = slices
            .iter()
            .filter(|s| meta::namespace(s) == namespace)
            .filter(|s| meta::is_owned_by(s, meta::uid(&service)))
            .collect();
        sync_slice(store, &service, &selected, &owned);
    }
}

/// A service port's target port number for a pod, resolving named ports.
fn target_port(service_port: &Value, pod: Option<&Value>) -> Option<i64> {
    match service_port
        .get("targetPort")
        .or_else(|| service_port.get("port"))?
    {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => pod?
            .pointer("/spec/containers")?
            .as_array()?
            .iter()
            .filter_map(|c| c.get("ports")?.as_array())
            .flatten()
            .find(|p| p["name"] == name.as_str())?
            .get("containerPort")?
            .as_i64(),
        _ => None,
    }
}

fn sync_slice(store: &Store, service: &Value, pods: &[&Arc<Value>], owned: &[&Arc<Value>]) {
    let publish_not_ready = service
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut pods = pods.to_vec();
    pods.sort_by(|a, b| meta::name(a).cmp(meta::name(b)));
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|pod| {
            let terminating = meta::is_terminating(pod);
            let serving = is_ready(pod) || publish_not_ready;
            json!({
                "addresses": [meta::str_at(pod, "/status/podIP")],
                "conditions": {
                    "ready": serving && !terminating,
                    "serving": serving,
                    "terminating": terminating,
                },
                "targetRef": {
                    "kind": "Pod",
                    "namespace": meta::namespace(pod),
                    "name": meta::name(pod),
                    "uid": meta::uid(pod),
                },
                "nodeName": NODE_NAME,
            })
        })
        .collect();
    let ports: Vec<Value> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = target_port(p, pods.first().map(|p| &***p))?;
            Some(json!({
                "name": p.get("name").and_then(Value::as_str).unwrap_or_default(),
                "port": port,
                "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP")),
            }))
        })
        .collect();
    let service_name = meta::name(service);
    let namespace = meta::namespace(service);
    let slices = resource("discovery.k8s.io", "endpointslices");
    let Some((first, extra)) = owned.split_first() else {
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "generateName": format!("{service_name}-"),
                "namespace": namespace,
                "labels": {SERVICE_NAME_LABEL: service_name, MANAGED_BY_LABEL: MANAGED_BY},
                "ownerReferences": [meta::controller_ref(service)],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        });
        if let Err(error) = store.create(slices, slice) {
            tracing::warn!(%error, "endpointslice controller could not create a slice");
        }
        return;
    };
    let key = Key::new(slices, namespace, meta::name(first));
    let _ = store.modify::<StoreError>(&key, |slice| {
        let mut next = slice.clone();
        next["endpoints"] = json!(endpoints);
        next["ports"] = json!(ports);
        Ok(Some(next))
    });
    for slice in extra {
        let _ = store.remove(&Key::new(slices, namespace, meta::name(slice)));
    }
}
