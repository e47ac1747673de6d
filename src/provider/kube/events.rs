//! Telling operators about a Deployment's route where they look first: a Warning Event on the
//! Deployment (`kubectl describe`), a log line, and `activator_config_errors_total` for an invalid
//! annotation. Each problem is told once per version of the Deployment's annotations (where
//! problems come from), not on every watch event, nor again when only its replica count changes.

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

impl Notices {
    /// Events posted through `client` as controller `activator`, instance `POD_NAME` (else the
    /// host name).
    pub(crate) fn new(client: kube::Client, metrics: Metrics) -> Notices {
        let reporter = Reporter {
            controller: "activator".to_owned(),
            instance: std::env::var("POD_NAME")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok()),
        };
        Notices {
            recorder: Recorder::new(client, reporter),
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
        let recorder = self.recorder.clone();
        let reference: ObjectReference = deployment.object_ref(&());
        tokio::spawn(async move {
            let event = Event {
                type_: EventType::Warning,
                reason: reason.to_owned(),
                note: Some(note),
                action: "Route".to_owned(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &reference).await {
                tracing::warn!(%error, "posting a Kubernetes Event failed");
            }
        });
    }
}
