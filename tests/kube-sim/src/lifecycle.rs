//! Deletion as the API server performs it, shared by the DELETE handler and the controllers:
//! pods on a node are deleted gracefully (a deletion timestamp now, removal by the kubelet
//! later), namespaces and objects with finalizers are marked and finished later, everything
//! else is removed at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::meta;
use crate::store::{Key, Store, StoreError};

/// How a deletion went.
#[derive(Debug, Clone)]
pub enum Deleted {
    /// The object is marked for deletion and still exists.
    Marked(Arc<Value>),
    /// The object is gone; this was its last state.
    Removed(Arc<Value>),
}

/// Deletes an object, gracefully where Kubernetes would. `grace` overrides the pod's
/// `terminationGracePeriodSeconds`; 0 removes a pod at once (a forced deletion).
///
/// # Errors
/// `NotFound`.
pub fn delete(store: &Store, key: &Key, grace: Option<i64>) -> Result<Deleted, StoreError> {
    let current = store
        .get(key)
        .ok_or_else(|| StoreError::NotFound(key.clone()))?;
    let resource = key.resource;
    let has_finalizers = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let grace = grace.unwrap_or_else(|| {
        current
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30)
    });
    let on_node = current.pointer("/spec/nodeName").is_some();
    let graceful = resource.graceful_delete && grace > 0 && on_node;
    if !(graceful || resource.kind == "Namespace" || has_finalizers) {
        return store.remove(key).map(Deleted::Removed);
    }
    let marked = store.modify::<StoreError>(key, |object| {
        let mut next = object.clone();
        let already = meta::is_terminating(object);
        let md = meta::metadata_mut(&mut next);
        if !already {
            let at = SystemTime::now() + Duration::from_secs(u64::try_from(grace).unwrap_or(0));
            md.insert("deletionTimestamp".into(), json!(meta::rfc3339(at)));
            md.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        if resource.kind == "Namespace" {
            next["status"]["phase"] = json!("Terminating");
        }
        Ok(Some(next))
    })?;
    Ok(Deleted::Marked(marked))
}
