//! What a route's replica count should be: a pure function of its policy, its counters (one
//! activator's, or the sum of several's) and the time since replicas were last added.
//!
//! - Nothing open (held or in flight) for `idle_timeout` → `min_scale` (to zero through the gate,
//!   see [`crate::activation`]). The idle clock runs from the last request's *end*, so sparse
//!   traffic that never overlaps a tick still keeps a route alive.
//! - Otherwise, with replicas running: `ceil(average concurrency / target_concurrency)`, within
//!   `[max(1, min_scale), max_scale]`. Replicas are added at once; they are removed only once the
//!   last addition is a whole averaging window old, so a burst is not followed by flapping.
//! - A route at zero with requests held is activated by those requests, not here; the decision
//!   only brings a route up to `min_scale`.
//!
//! [`crate::scaler`] applies it on every tick; [`crate::cluster`] checks it again before a scale
//! to zero decided for several replicas.

use std::time::Duration;

use crate::spec::ScalePolicy;
use crate::stats::StatsReport;

/// What the scaler wants for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Scale to zero, unless a request turns up meanwhile.
    ToZero,
    /// Run this many replicas.
    Replicas(u32),
}

/// Decides the replicas of a route running `current` replicas, given its report and the time
/// since replicas were last added.
pub(crate) fn decide(
    policy: &ScalePolicy,
    current: u32,
    report: &StatsReport,
    since_scale_up: Option<Duration>,
) -> Option<Decision> {
    let idle = report.open() == 0
        && report
            .idle_for
            .is_none_or(|idle| idle >= policy.idle_timeout);
    if idle {
        return match policy.min_scale {
            0 if current > 0 => Some(Decision::ToZero),
            0 => None,
            min => (current != min).then_some(Decision::Replicas(min)),
        };
    }
    if current == 0 {
        return (policy.min_scale > 0).then_some(Decision::Replicas(policy.min_scale));
    }
    let by_load = (report.average_concurrency / f64::from(policy.target_concurrency)).ceil();
    let floor = policy.min_scale.max(1);
    let wanted = (by_load.min(f64::from(u32::MAX)) as u32).clamp(floor, policy.max_scale);
    let settled = since_scale_up.is_none_or(|since| since >= policy.window);
    if wanted > current || (wanted < current && settled) {
        Some(Decision::Replicas(wanted))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ScalePolicy {
        ScalePolicy {
            idle_timeout: Duration::from_secs(10),
            min_scale: 0,
            max_scale: 5,
            activation_scale: 1,
            target_concurrency: 10,
            container_concurrency: 0,
            window: Duration::from_secs(60),
        }
    }

    fn report(open: u64, idle_secs: Option<u64>, average: f64) -> StatsReport {
        StatsReport {
            in_flight: open,
            queued: 0,
            requests_total: 1,
            idle_for: idle_secs.map(Duration::from_secs),
            average_concurrency: average,
            window: Duration::from_secs(60),
            concurrency_seconds: 0.0,
        }
    }

    #[test]
    fn an_idle_route_goes_to_zero_only_after_the_idle_timeout() {
        assert_eq!(decide(&policy(), 1, &report(0, Some(9), 0.0), None), None);
        assert_eq!(
            decide(&policy(), 1, &report(0, Some(10), 0.0), None),
            Some(Decision::ToZero)
        );
    }

    #[test]
    fn a_request_in_flight_keeps_the_route_however_old_the_last_activity() {
        assert_eq!(
            decide(&policy(), 1, &report(1, Some(3600), 0.1), None),
            None
        );
    }

    #[test]
    fn min_scale_is_kept_when_idle_and_reached_from_zero() {
        let p = ScalePolicy {
            min_scale: 2,
            ..policy()
        };
        assert_eq!(
            decide(&p, 3, &report(0, Some(60), 0.0), None),
            Some(Decision::Replicas(2))
        );
        assert_eq!(decide(&p, 2, &report(0, Some(60), 0.0), None), None);
        assert_eq!(
            decide(&p, 0, &report(0, None, 0.0), None),
            Some(Decision::Replicas(2))
        );
    }

    #[test]
    fn concurrency_over_target_adds_replicas_up_to_max_scale() {
        assert_eq!(
            decide(&policy(), 1, &report(25, Some(0), 25.0), None),
            Some(Decision::Replicas(3))
        );
        assert_eq!(
            decide(&policy(), 1, &report(90, Some(0), 90.0), None),
            Some(Decision::Replicas(5))
        );
    }

    #[test]
    fn replicas_are_removed_only_a_window_after_the_last_addition() {
        let recent = Some(Duration::from_secs(5));
        let settled = Some(Duration::from_secs(61));
        assert_eq!(decide(&policy(), 3, &report(5, Some(0), 5.0), recent), None);
        assert_eq!(
            decide(&policy(), 3, &report(5, Some(0), 5.0), settled),
            Some(Decision::Replicas(1))
        );
    }

    #[test]
    fn a_route_at_zero_is_left_to_its_requests() {
        assert_eq!(decide(&policy(), 0, &report(4, Some(0), 4.0), None), None);
    }
}
