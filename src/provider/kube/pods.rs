//! While a route waits for its first ready pod: the pods' own statuses, so that pods which crash
//! before turning ready (`CrashLoopBackOff`) or whose image cannot be had (`ErrImagePull`,
//! `ImagePullBackOff`, ...) fail held requests at once instead of letting them wait out their
//! cold-start timeout. Only pods of routes that are activating are looked at, and only until one
//! is ready: no cluster-wide pod watch.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::provider::Reporter;

/// How often a starting route's pods are listed.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// After a failure is reported, the next look: the kubelet's first restart back-off (10s).
const AFTER_A_FAILURE: Duration = Duration::from_secs(10);

/// Waiting reasons of a container that will not become ready by waiting.
const FAILING: [&str; 6] = [
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Looks at the pods `selector` picks until `ready()` says a replica is ready, reporting failing
/// ones through `report`.
pub(crate) async fn watch_starting(
    api: Api<Pod>,
    selector: String,
    report: Reporter,
    ready: impl Fn() -> bool,
) {
    let params = ListParams::default().labels(&selector);
    while !ready() {
        let pause = match api.list(&params).await {
            Ok(pods) => match pods.items.iter().find_map(failure) {
                Some(problem) => {
                    report.failing(problem, AFTER_A_FAILURE);
                    AFTER_A_FAILURE
                }
                None => LOOK_EVERY,
            },
            Err(error) => {
                tracing::debug!(%error, "listing a starting route's pods failed");
                LOOK_EVERY
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// What keeps `pod` from ever becoming ready by waiting, if anything.
fn failure(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|status| {
            let waiting = status.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            if !FAILING.contains(&reason) {
                return None;
            }
            let mut problem = format!("pod {name}: {reason}");
            if let Some(message) = waiting.message.as_deref().filter(|m| !m.is_empty()) {
                problem.push_str(&format!(": {message}"));
            }
            if let Some(exit) = status
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
            {
                problem.push_str(&format!("; last exit code {}", exit.exit_code));
                if let Some(reason) = &exit.reason {
                    problem.push_str(&format!(" ({reason})"));
                }
            }
            Some(problem)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_loop_or_a_missing_image_is_a_failure_and_a_slow_start_is_not() {
        let pod = |waiting: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-1"},
                "status": {"containerStatuses": [{
                    "name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
                    "state": {"waiting": waiting},
                    "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}},
                }]},
            }))
            .unwrap()
        };
        let crash = failure(&pod(
            serde_json::json!({"reason": "CrashLoopBackOff", "message": "back-off 10s"}),
        ));
        assert_eq!(
            crash.as_deref(),
            Some("pod web-1: CrashLoopBackOff: back-off 10s; last exit code 3 (Error)")
        );
        assert!(failure(&pod(serde_json::json!({"reason": "ErrImagePull"}))).is_some());
        assert_eq!(
            failure(&pod(serde_json::json!({"reason": "ContainerCreating"}))),
            None
        );
    }
}
