//! Counts of API requests by verb and resource, so tests can assert how a client talked to the
//! server ("exactly one PATCH of deployments/scale"). Only requests that reached the HTTP API
//! are counted; the simulator's own controllers write to the store directly.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Live request counters, shared by the API server and the [`crate::Sim`] handle.
#[derive(Debug, Default)]
pub struct Counters {
    // Held only to bump or copy the map; never across an await.
    counts: Mutex<BTreeMap<(String, String), u64>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Count per `(verb, resource)`, where resource is the plural name optionally followed by
    /// `/subresource` (`deployments/scale`) and verb is the Kubernetes verb (`get`, `list`,
    /// `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`).
    pub counts: BTreeMap<String, u64>,
}

impl Counters {
    /// Counts one request.
    pub fn record(&self, verb: &str, resource: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts
            .entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
    }

    /// Copies the current counts.
    pub fn snapshot(&self) -> CounterSnapshot {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        CounterSnapshot {
            counts: counts
                .iter()
                .map(|((verb, resource), n)| (format!("{verb} {resource}"), *n))
                .collect(),
        }
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl CounterSnapshot {
    /// Requests with `verb` (lower case, e.g. `patch`) on `resource` (e.g. `deployments/scale`).
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.counts
            .get(&format!("{verb} {resource}"))
            .copied()
            .unwrap_or(0)
    }

    /// Requests of any verb on `resource`.
    pub fn count_resource(&self, resource: &str) -> u64 {
        self.counts
            .iter()
            .filter(|(k, _)| k.split_once(' ').is_some_and(|(_, r)| r == resource))
            .map(|(_, n)| n)
            .sum()
    }

    /// Writes (`create`, `update`, `patch`, `delete`, `deletecollection`) on any resource.
    pub fn writes(&self) -> u64 {
        self.counts
            .iter()
            .filter(|(k, _)| !matches!(k.split(' ').next(), Some("get" | "list" | "watch")))
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_per_verb_and_resource() {
        let counters = Counters::default();
        counters.record("patch", "deployments/scale");
        counters.record("patch", "deployments/scale");
        counters.record("get", "deployments");
        let snap = counters.snapshot();
        assert_eq!(snap.count("patch", "deployments/scale"), 2);
        assert_eq!(snap.count("patch", "deployments"), 0);
        assert_eq!(snap.count_resource("deployments"), 1);
        assert_eq!(snap.writes(), 2);
    }
}
