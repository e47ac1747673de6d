//! Telling operators about a Deployment's route where they look first, as Events on the
//! Deployment (`kubectl describe deployment`): a Warning for each problem with its annotations
//! (with a log line, and `activator_config_errors_total` for an invalid annotation), told once per
//! version of the Deployment's annotations (where problems come from), not on every watch event;
//! and a Normal Event for each scale from zero (`ScaledFromZero`, with the held requests' count)
//! and to zero (`ScaledToZero`, with the idle time), as the HPA records `SuccessfulRescale`.
//! kube-rs's recorder rate-limits repeats itself: the same Event again within its series window
//! patches a count instead of creating another.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};

use super::annotations;
use super::desired::Problem;
use crate::metrics::Metrics;

/// Posts Events about Deployments, each problem once per Deployment version.
pub(crate) struct Notices {
    recorder: Recorder,
    metrics: Metrics,
    /// `uid/annotations hash/reason/note` of every problem told, for Deployments that still
    /// exist.
    told: HashSet<String>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices")
            .field("told", &self.told.len())
            .finish_non_exhaustive()
    }
}

/// A recorder posting Events through `client` as controller `activator`, instance `POD_NAME`
/// (else the host name).
pub(crate) fn recorder(client: kube::Client) -> Recorder {
    let reporter = Reporter {
        controller: "activator".to_owned(),
        instance: std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok()),
    };
    Recorder::new(client, reporter)
}

/// Posts an Event about `regarding` in the background; a failure is logged, never fatal.
pub(crate) fn post(
    recorder: &Recorder,
    regarding: ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let recorder = recorder.clone();
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(error) = recorder.publish(&event, &regarding).await {
            tracing::warn!(%error, "posting a Kubernetes Event failed");
        }
    });
}

impl Notices {
    /// Problems told through `client`, counted in `metrics`.
    pub(crate) fn new(client: kube::Client, metrics: Metrics) -> Notices {
        Notices {
            recorder: recorder(client),
            metrics,
            told: HashSet::new(),
        }
    }

    /// Forgets problems of Deployments whose uid is not in `live`, so the set does not grow
    /// forever.
    pub(crate) fn retain_live(&mut self, live: &HashSet<String>) {
        self.told
            .retain(|key| key.split('/').next().is_some_and(|uid| live.contains(uid)));
    }

    /// Logs, counts and posts a Warning Event for `problem`, unless told already for these
    /// annotations of its Deployment.
    pub(crate) fn tell(&mut self, problem: Problem) {
        let Problem {
            deployment,
            reason,
            note,
            annotation,
        } = problem;
        let annotations = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            deployment.metadata.annotations.hash(&mut hasher);
            hasher.finish()
        };
        let key = format!(
            "{}/{annotations:x}/{reason}/{note}",
            deployment.uid().unwrap_or_default(),
        );
        if !self.told.insert(key) {
            return;
        }
        let namespace = deployment.namespace().unwrap_or_default();
        let name = deployment.name_any();
        tracing::warn!(deployment = %format!("{namespace}/{name}"), reason, "{note}");
        if let Some(key) = &annotation {
            let route = annotations::service_name(&deployment).unwrap_or_else(|_| name.clone());
            self.metrics.config_error(&route, &namespace, key);
        }
        post(
            &self.recorder,
            deployment.object_ref(&()),
            EventType::Warning,
            reason,
            "Route",
            note,
        );
    }
}
