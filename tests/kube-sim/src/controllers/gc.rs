//! The garbage collector and namespace controller: objects whose owners are all gone are
//! deleted (background propagation: pods of a deleted Deployment, slices of a deleted
//! Service), and a terminating namespace is emptied, then removed.

use std::collections::HashSet;

use serde_json::Value;

use crate::lifecycle;
use crate::meta;
use crate::resources::RESOURCES;
use crate::store::{Key, Store, namespaces};

/// Deletes orphans and finishes terminating namespaces.
pub fn reconcile(store: &Store) {
    let all: Vec<_> = RESOURCES
        .iter()
        .filter(|r| r.is_stored())
        .flat_map(|r| store.list(r, None).0.into_iter().map(move |o| (r, o)))
        .collect();
    let uids: HashSet<&str> = all.iter().map(|(_, o)| meta::uid(o)).collect();
    let (namespace_objects, _) = store.list(namespaces(), None);
    let terminating: HashSet<&str> = namespace_objects
        .iter()
        .filter(|ns| meta::is_terminating(ns))
        .map(|ns| meta::name(ns))
        .collect();
    let mut still_populated = HashSet::new();
    for (resource, object) in &all {
        let key = Key::new(resource, meta::namespace(object), meta::name(object));
        if resource.namespaced && terminating.contains(key.namespace.as_str()) {
            still_populated.insert(key.namespace.clone());
            if !meta::is_terminating(object) {
                let _ = lifecycle::delete(store, &key, None);
            }
            continue;
        }
        let owners = object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array);
        let orphaned = owners.is_some_and(|refs| {
            !refs.is_empty()
                && refs
                    .iter()
                    .all(|r| !uids.contains(r["uid"].as_str().unwrap_or_default()))
        });
        if orphaned && !meta::is_terminating(object) {
            let _ = lifecycle::delete(store, &key, None);
        }
    }
    for ns in terminating {
        if !still_populated.contains(ns) {
            let _ = store.remove(&Key::new(namespaces(), "", ns));
        }
    }
}
