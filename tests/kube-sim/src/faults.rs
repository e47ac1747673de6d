//! Fault injection: added latency per verb and resource, a share (or a number) of requests
//! answered 500/503/429, a 409 on the next write of an object, and a kubelet that never marks
//! pods ready. The rules live here; the API server and kubelet consult them. Faults that are
//! one-off actions (closing watches, expiring the history, crashing a pod) are methods on
//! [`crate::Sim`] and endpoints of the control API instead.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::api::status::ApiError;

/// Extra latency before answering matching requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Verb to match (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`); any when absent.
    #[serde(default)]
    pub verb: Option<String>,
    /// Resource to match (`deployments`, `deployments/scale`); any when absent.
    #[serde(default)]
    pub resource: Option<String>,
    /// Delay in milliseconds.
    pub millis: u64,
}

/// Answer matching requests with an error status instead of serving them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorFault {
    /// Verb to match; any when absent.
    #[serde(default)]
    pub verb: Option<String>,
    /// Resource to match; any when absent.
    #[serde(default)]
    pub resource: Option<String>,
    /// HTTP status: 500, 503 or 429 (others are answered with reason `Unknown`).
    pub status: u16,
    /// Share of matching requests that fail, 0.0 to 1.0 (default 1.0: every one).
    #[serde(default = "always")]
    pub share: f64,
    /// Seconds for `Retry-After` (default 1 for 429 and 503).
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    /// Fail only this many matching requests, then stop; unlimited when absent.
    #[serde(default)]
    pub count: Option<u64>,
}

fn always() -> f64 {
    1.0
}

/// The next update or patch of one object gets 409 Conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictFault {
    /// Plural resource name, e.g. `deployments`.
    pub resource: String,
    /// Namespace ("" for cluster-scoped objects).
    #[serde(default)]
    pub namespace: String,
    /// Object name.
    pub name: String,
}

/// Every fault rule in force, as the control API shows and accepts it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRules {
    /// Latency rules; the largest matching delay applies.
    #[serde(default)]
    pub latency: Vec<Latency>,
    /// Error rules; the first matching rule that fires answers the request.
    #[serde(default)]
    pub errors: Vec<ErrorFault>,
    /// Pending one-shot conflicts.
    #[serde(default)]
    pub conflicts: Vec<ConflictFault>,
    /// Whether the kubelet has stopped marking pods ready.
    #[serde(default)]
    pub never_ready: bool,
}

/// The live fault rules shared by the API server, the kubelet and the [`crate::Sim`] handle.
#[derive(Debug, Default)]
pub struct Faults {
    // Held only to read or edit the rules; never across an await.
    rules: Mutex<FaultRules>,
    never_ready: AtomicBool,
}

fn matches(
    rule_verb: &Option<String>,
    rule_resource: &Option<String>,
    verb: &str,
    resource: &str,
) -> bool {
    rule_verb
        .as_deref()
        .is_none_or(|v| v.eq_ignore_ascii_case(verb))
        && rule_resource.as_deref().is_none_or(|r| r == resource)
}

impl Faults {
    fn rules(&self) -> std::sync::MutexGuard<'_, FaultRules> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a latency rule.
    pub fn add_latency(&self, rule: Latency) {
        self.rules().latency.push(rule);
    }

    /// Adds an error rule.
    pub fn add_error(&self, rule: ErrorFault) {
        self.rules().errors.push(rule);
    }

    /// Makes the next update or patch of one object fail with 409 Conflict.
    pub fn conflict_next_update(&self, rule: ConflictFault) {
        self.rules().conflicts.push(rule);
    }

    /// Stops (or resumes) the kubelet marking pods ready.
    pub fn set_never_ready(&self, never: bool) {
        self.never_ready.store(never, Ordering::SeqCst);
        self.rules().never_ready = never;
    }

    /// Whether the kubelet must keep pods unready.
    pub fn never_ready(&self) -> bool {
        self.never_ready.load(Ordering::SeqCst)
    }

    /// Removes every rule.
    pub fn clear(&self) {
        *self.rules() = FaultRules::default();
        self.never_ready.store(false, Ordering::SeqCst);
    }

    /// The rules in force.
    pub fn snapshot(&self) -> FaultRules {
        self.rules().clone()
    }

    /// Replaces every rule.
    pub fn replace(&self, rules: FaultRules) {
        self.never_ready.store(rules.never_ready, Ordering::SeqCst);
        *self.rules() = rules;
    }

    /// The delay to add before serving a request.
    pub fn delay(&self, verb: &str, resource: &str) -> Duration {
        let rules = self.rules();
        let millis = rules
            .latency
            .iter()
            .filter(|l| matches(&l.verb, &l.resource, verb, resource))
            .map(|l| l.millis)
            .max()
            .unwrap_or(0);
        Duration::from_millis(millis)
    }

    /// The injected error for a request, if a rule fires.
    pub fn error(&self, verb: &str, resource: &str) -> Option<ApiError> {
        let mut rules = self.rules();
        let mut rng = rand::rng();
        let index = rules.errors.iter().position(|e| {
            matches(&e.verb, &e.resource, verb, resource)
                && e.count != Some(0)
                && (e.share >= 1.0 || rng.random::<f64>() < e.share)
        })?;
        let rule = &mut rules.errors[index];
        if let Some(n) = rule.count.as_mut() {
            *n -= 1;
        }
        let (status, retry_after) = (rule.status, rule.retry_after_seconds);
        if rule.count == Some(0) {
            rules.errors.remove(index);
        }
        let reason = match status {
            500 => "InternalError",
            503 => "ServiceUnavailable",
            429 => "TooManyRequests",
            _ => "Unknown",
        };
        let mut error = ApiError::new(status, reason, format!("injected fault: {verb} {resource}"));
        if matches!(status, 429 | 503) {
            error.retry_after = Some(retry_after.unwrap_or(1));
        }
        Some(error)
    }

    /// Whether a pending conflict matches this write; consumes it.
    pub fn take_conflict(&self, resource: &str, namespace: &str, name: &str) -> bool {
        let mut rules = self.rules();
        let found = rules
            .conflicts
            .iter()
            .position(|c| c.resource == resource && c.namespace == namespace && c.name == name);
        found.map(|i| rules.conflicts.remove(i)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_error_rule_fires_that_many_times_then_stops() {
        let faults = Faults::default();
        faults.add_error(ErrorFault {
            verb: Some("patch".into()),
            resource: Some("deployments/scale".into()),
            status: 429,
            share: 1.0,
            retry_after_seconds: Some(2),
            count: Some(2),
        });
        let first = faults.error("patch", "deployments/scale");
        assert_eq!(first.as_ref().map(|e| e.code), Some(429));
        assert_eq!(first.and_then(|e| e.retry_after), Some(2));
        assert!(faults.error("get", "deployments/scale").is_none());
        assert!(faults.error("patch", "deployments/scale").is_some());
        assert!(faults.error("patch", "deployments/scale").is_none());
    }

    #[test]
    fn a_conflict_is_consumed_by_the_first_matching_write() {
        let faults = Faults::default();
        faults.conflict_next_update(ConflictFault {
            resource: "deployments".into(),
            namespace: "default".into(),
            name: "web".into(),
        });
        assert!(!faults.take_conflict("deployments", "default", "other"));
        assert!(faults.take_conflict("deployments", "default", "web"));
        assert!(!faults.take_conflict("deployments", "default", "web"));
    }
}
