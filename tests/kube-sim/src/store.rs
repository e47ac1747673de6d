//! The object store: every object as JSON, keyed by resource type, namespace and name, under
//! one global increasing resourceVersion, with a bounded history of changes for watches and a
//! broadcast of each change to watchers and controllers.
//!
//! It owns the bookkeeping every object gets on write (`uid`, `creationTimestamp`,
//! `resourceVersion`, `generation`) but no API policy: preconditions, status handling and
//! graceful deletion are decided by the callers inside the closures they pass to
//! [`Store::modify`].
//!
//! # Locking
//! One `std::sync::Mutex` guards the state. It is held only for in-memory work and never
//! across an `.await`; the broadcast is sent while it is held so that a watcher subscribing
//! under the same lock sees every change exactly once, in order.

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::meta;
use crate::resources::ResourceType;

/// Where an object lives: its type, namespace ("" for cluster-scoped) and name.
#[derive(Debug, Clone)]
pub struct Key {
    /// The resource type.
    pub resource: &'static ResourceType,
    /// The namespace, or "" for cluster-scoped objects.
    pub namespace: String,
    /// The object name.
    pub name: String,
}

impl Key {
    /// Builds a key. A resource that is a view of another (`events.k8s.io` Events) is keyed by
    /// the resource its objects are stored under.
    pub fn new(resource: &'static ResourceType, namespace: &str, name: &str) -> Self {
        Self {
            resource: resource.storage(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn order(&self) -> (&str, &str, &str, &str) {
        (
            self.resource.group,
            self.resource.plural,
            &self.namespace,
            &self.name,
        )
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order().cmp(&other.order())
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed.
    Deleted,
}

/// One change in the history, as watchers receive it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// Which object.
    pub key: Key,
    /// The object after the change (for deletions: its last state, at the deletion's rv).
    pub object: Arc<Value>,
    /// The object before the change, for modifications and deletions.
    pub previous: Option<Arc<Value>>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No object with that key.
    #[error("{} {:?} not found", .0.resource.qualified(), .0.name)]
    NotFound(Key),
    /// An object with that key already exists.
    #[error("{} {:?} already exists", .0.resource.qualified(), .0.name)]
    AlreadyExists(Key),
    /// The namespace does not exist.
    #[error("namespaces {0:?} not found")]
    NamespaceNotFound(String),
    /// The object has neither a name nor a generateName.
    #[error("name or generateName is required")]
    NameRequired,
    /// A watch asked for a resourceVersion older than the history kept.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        /// The version asked for.
        requested: u64,
        /// The oldest version a watch may start from.
        oldest: u64,
    },
}

/// A watch's starting point: the changes it missed plus the live feed after them.
pub struct Subscription {
    /// Changes after the requested version, from the history.
    pub backlog: Vec<Arc<Change>>,
    /// Every later change.
    pub live: broadcast::Receiver<Arc<Change>>,
    /// Changes value when watches are forcibly closed.
    pub closer: watch::Receiver<u64>,
}

struct State {
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// A watch may resume from any version at or above this one.
    floor: u64,
}

/// The shared object store. Cheap to share behind an `Arc`.
pub struct Store {
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Change>>,
    closer: watch::Sender<u64>,
}

/// Fields that are not part of what `generation` tracks.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

/// The object without its resourceVersion, to tell no-op writes from real ones.
fn without_rv(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    copy
}

impl Store {
    /// An empty store keeping at most `history_limit` changes for watches to resume from.
    pub fn new(history_limit: usize) -> Self {
        let (changes, _) = broadcast::channel(16_384);
        let (closer, _) = watch::channel(0);
        Self {
            state: Mutex::new(State {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
                floor: 1,
            }),
            changes,
            closer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// One object.
    pub fn get(&self, key: &Key) -> Option<Arc<Value>> {
        self.lock().objects.get(key).cloned()
    }

    /// Every object of a type, in one namespace or in all (`None`), with the list's version.
    /// Objects are as stored: for a view (`events.k8s.io` Events), in the stored form.
    pub fn list(
        &self,
        resource: &'static ResourceType,
        namespace: Option<&str>,
    ) -> (Vec<Arc<Value>>, u64) {
        let resource = resource.storage();
        let state = self.lock();
        let items = state
            .objects
            .iter()
            .filter(|(k, _)| {
                std::ptr::eq(k.resource, resource) && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(_, v)| v.clone())
            .collect();
        (items, state.rv)
    }

    /// Receives every change from now on (controllers use this).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Starts a watch after `since`, or from now when `since` is `None`.
    ///
    /// # Errors
    /// [`StoreError::Expired`] when `since` is older than the history kept.
    pub fn watch(&self, since: Option<u64>) -> Result<Subscription, StoreError> {
        let state = self.lock();
        let backlog = match since {
            None => Vec::new(),
            Some(rv) if rv < state.floor => {
                return Err(StoreError::Expired {
                    requested: rv,
                    oldest: state.floor,
                });
            }
            Some(rv) => state
                .history
                .iter()
                .filter(|c| c.rv > rv)
                .cloned()
                .collect(),
        };
        Ok(Subscription {
            backlog,
            live: self.changes.subscribe(),
            closer: self.closer.subscribe(),
        })
    }

    /// Stores a new object, in its stored form. An empty name is generated from `metadata.generateName`; `uid`,
    /// `creationTimestamp`, `generation` and `resourceVersion` are stamped.
    ///
    /// # Errors
    /// `NameRequired`, `NamespaceNotFound` or `AlreadyExists`.
    pub fn create(
        &self,
        resource: &'static ResourceType,
        mut object: Value,
    ) -> Result<Arc<Value>, StoreError> {
        let namespace = meta::namespace(&object).to_string();
        let mut state = self.lock();
        if resource.namespaced {
            let ns = Key::new(namespaces(), "", &namespace);
            if !state.objects.contains_key(&ns) {
                return Err(StoreError::NamespaceNotFound(namespace));
            }
        }
        let mut name = meta::name(&object).to_string();
        if name.is_empty() {
            let prefix = meta::str_at(&object, "/metadata/generateName").to_string();
            if prefix.is_empty() {
                return Err(StoreError::NameRequired);
            }
            name = loop {
                let candidate = format!("{prefix}{}", meta::random_suffix(5));
                if !state
                    .objects
                    .contains_key(&Key::new(resource, &namespace, &candidate))
                {
                    break candidate;
                }
            };
        }
        let key = Key::new(resource, &namespace, &name);
        if state.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists(key));
        }
        state.rv += 1;
        let rv = state.rv;
        let md = meta::metadata_mut(&mut object);
        md.insert("name".into(), json!(name));
        md.insert("uid".into(), json!(meta::new_uid()));
        md.insert("creationTimestamp".into(), json!(meta::now()));
        md.insert("resourceVersion".into(), json!(rv.to_string()));
        md.insert("generation".into(), json!(1));
        md.remove("deletionTimestamp");
        if !resource.namespaced {
            md.remove("namespace");
        }
        let object = Arc::new(object);
        state.objects.insert(key.clone(), object.clone());
        self.record(&mut state, ChangeKind::Added, key, object.clone(), None);
        Ok(object)
    }

    /// Changes an object atomically. `change` sees the current object and returns the new one,
    /// or `None` to leave it as it is; it runs under the store lock, so it must be quick and
    /// must not block. A result equal to the current object (ignoring resourceVersion) is a
    /// no-op that keeps the version. `generation` is bumped when anything outside `metadata`
    /// and `status` changed.
    ///
    /// # Errors
    /// Whatever `change` returns, or `NotFound` (converted into `E`).
    pub fn modify<E: From<StoreError>>(
        &self,
        key: &Key,
        change: impl FnOnce(&Value) -> Result<Option<Value>, E>,
    ) -> Result<Arc<Value>, E> {
        let mut state = self.lock();
        let current = state
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        let Some(mut next) = change(&current)? else {
            return Ok(current);
        };
        if without_rv(&next) == without_rv(&current) {
            return Ok(current);
        }
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let bumped = spec_part(&next) != spec_part(&current);
        state.rv += 1;
        let rv = state.rv;
        let md = meta::metadata_mut(&mut next);
        // Identity fields are the store's, whatever the writer sent.
        for field in ["name", "namespace", "uid", "creationTimestamp"] {
            match current["metadata"].get(field) {
                Some(v) => md.insert(field.into(), v.clone()),
                None => md.remove(field),
            };
        }
        md.insert("resourceVersion".into(), json!(rv.to_string()));
        md.insert("generation".into(), json!(generation + i64::from(bumped)));
        let next = Arc::new(next);
        state.objects.insert(key.clone(), next.clone());
        self.record(
            &mut state,
            ChangeKind::Modified,
            key.clone(),
            next.clone(),
            Some(current),
        );
        Ok(next)
    }

    /// Removes an object now, returning its last state (stamped with the deletion's version).
    ///
    /// # Errors
    /// `NotFound`.
    pub fn remove(&self, key: &Key) -> Result<Arc<Value>, StoreError> {
        let mut state = self.lock();
        let previous = state
            .objects
            .remove(key)
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        state.rv += 1;
        let mut last = (*previous).clone();
        meta::metadata_mut(&mut last).insert("resourceVersion".into(), json!(state.rv.to_string()));
        let last = Arc::new(last);
        self.record(
            &mut state,
            ChangeKind::Deleted,
            key.clone(),
            last.clone(),
            Some(previous),
        );
        Ok(last)
    }

    fn record(
        &self,
        state: &mut State,
        kind: ChangeKind,
        key: Key,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let change = Arc::new(Change {
            rv: state.rv,
            kind,
            key,
            object,
            previous,
        });
        state.history.push_back(change.clone());
        while state.history.len() > state.history_limit {
            if let Some(oldest) = state.history.pop_front() {
                state.floor = oldest.rv;
            }
        }
        // Nobody listening is fine.
        let _ = self.changes.send(change);
    }

    /// Forgets the watch history, as an etcd compaction does: every watch resuming from a
    /// version seen before this call gets 410 Expired; a fresh list and watch works.
    pub fn expire_history(&self) {
        let mut state = self.lock();
        state.rv += 1;
        state.floor = state.rv;
        state.history.clear();
    }

    /// Ends every open watch; clients must resume from their last version.
    pub fn close_watches(&self) {
        self.closer.send_modify(|generation| *generation += 1);
    }
}

/// The `namespaces` resource type.
pub fn namespaces() -> &'static ResourceType {
    resource("", "namespaces")
}

/// A served resource type in `group` (any version) by plural name.
///
/// # Panics
/// When the catalogue lacks it: a programming error caught by the first test that uses it.
pub fn resource(group: &str, plural: &str) -> &'static ResourceType {
    crate::resources::RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .unwrap_or_else(|| panic!("resource {plural}.{group} is not in the catalogue"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_default_namespace() -> Store {
        let store = Store::new(100);
        let created = store.create(namespaces(), json!({"metadata": {"name": "default"}}));
        assert!(created.is_ok());
        store
    }

    #[test]
    fn every_write_gets_a_higher_resource_version() {
        let store = store_with_default_namespace();
        let pods = resource("", "pods");
        let a = store.create(
            pods,
            json!({"metadata": {"name": "a", "namespace": "default"}}),
        );
        let a = a.map(|a| a["metadata"]["resourceVersion"].clone());
        let key = Key::new(pods, "default", "a");
        let b = store.modify::<StoreError>(&key, |o| {
            let mut o = o.clone();
            o["spec"] = json!({"x": 1});
            Ok(Some(o))
        });
        let b = b.map(|b| b["metadata"]["resourceVersion"].clone());
        let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
        assert!(a.as_str().unwrap_or("0").parse::<u64>().unwrap_or(0) >= 2);
        assert!(
            b.as_str().unwrap_or("0").parse::<u64>().unwrap_or(0)
                > a.as_str().unwrap_or("0").parse::<u64>().unwrap_or(0)
        );
    }

    #[test]
    fn a_watch_from_before_the_expired_history_is_refused() {
        let store = store_with_default_namespace();
        let old = store.resource_version();
        store.expire_history();
        assert!(matches!(
            store.watch(Some(old)),
            Err(StoreError::Expired { .. })
        ));
        assert!(store.watch(Some(store.resource_version())).is_ok());
    }

    #[test]
    fn objects_in_a_missing_namespace_are_refused() {
        let store = store_with_default_namespace();
        let pods = resource("", "pods");
        let created = store.create(
            pods,
            json!({"metadata": {"name": "a", "namespace": "nope"}}),
        );
        assert!(matches!(created, Err(StoreError::NamespaceNotFound(_))));
    }
}
