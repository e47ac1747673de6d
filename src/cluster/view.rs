//! The deciding replica's view of one route across all replicas: the sum of their reports, as
//! pure functions the scaler's `decide` takes unchanged.
//!
//! - Counts and average concurrencies add up; the route is idle for as long as its *least* idle
//!   replica is.
//! - A replica listed but without a fresh answer counts as busy: the sum is then active now, so
//!   nothing is scaled down on missing data. Its last answer, if any, still counts towards load.
//! - Clocks start fresh when a replica begins deciding ([`since`]): nothing looks idle for longer
//!   than it has been deciding, so a new Lease holder scales nothing to zero earlier than one
//!   idle timeout after taking over, and removes no replica earlier than one window after.

use std::time::Duration;

use crate::stats::StatsReport;

/// One other replica's part in a route.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part<'a> {
    /// It answered this round: its report of the route (`None`: it does not serve the route).
    Answered(Option<&'a StatsReport>),
    /// It is listed but gave no fresh answer; its last one, if any.
    Missing(Option<&'a StatsReport>),
}

/// A route summed over replicas.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summed {
    /// The sum, as one replica's report would read.
    pub(crate) report: StatsReport,
    /// Replicas without a fresh answer.
    pub(crate) missing: usize,
}

/// Sums this replica's `local` report of a route with the other replicas' `parts`.
pub(crate) fn sum<'a>(local: &StatsReport, parts: impl IntoIterator<Item = Part<'a>>) -> Summed {
    let mut report = local.clone();
    let mut missing = 0;
    for part in parts {
        let other = match part {
            Part::Answered(other) => other,
            Part::Missing(other) => {
                missing += 1;
                other
            }
        };
        let Some(other) = other else {
            continue;
        };
        report.in_flight += other.in_flight;
        report.queued += other.queued;
        report.requests_total += other.requests_total;
        report.average_concurrency += other.average_concurrency;
        report.concurrency_seconds += other.concurrency_seconds;
        report.idle_for = match (report.idle_for, other.idle_for) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    if missing > 0 {
        report.idle_for = Some(Duration::ZERO);
    }
    Summed { report, missing }
}

/// Caps `report`'s idle time at `at_most` (the time since this replica began deciding, or since
/// the route's last activity any replica reported).
pub(crate) fn cap_idle(report: &mut StatsReport, at_most: Duration) {
    report.idle_for = Some(report.idle_for.map_or(at_most, |idle| idle.min(at_most)));
}

/// The time since replicas were last added, counted at most from when this replica began
/// deciding (`deciding_for`).
pub(crate) fn since(
    since_scale_up: Option<Duration>,
    deciding_for: Option<Duration>,
) -> Option<Duration> {
    match (since_scale_up, deciding_for) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::{Decision, decide};
    use crate::spec::ScalePolicy;

    fn report(in_flight: u64, idle_secs: Option<u64>, average: f64) -> StatsReport {
        StatsReport {
            in_flight,
            queued: 0,
            requests_total: 10,
            idle_for: idle_secs.map(Duration::from_secs),
            average_concurrency: average,
            window: Duration::from_secs(60),
            concurrency_seconds: 1.0,
        }
    }

    fn policy() -> ScalePolicy {
        ScalePolicy {
            idle_timeout: Duration::from_secs(10),
            min_scale: 0,
            max_scale: 10,
            activation_scale: 1,
            target_concurrency: 10,
            container_concurrency: 0,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_route_busy_on_one_replica_is_not_idle_in_the_sum() {
        let here = report(0, Some(300), 0.0);
        let there = report(0, Some(2), 0.4);
        let summed = sum(&here, [Part::Answered(Some(&there))]);
        assert_eq!(summed.report.idle_for, Some(Duration::from_secs(2)));
        assert_eq!(summed.report.requests_total, 20);
        assert_eq!(decide(&policy(), 1, &here, None), Some(Decision::ToZero));
        assert_eq!(decide(&policy(), 1, &summed.report, None), None);
    }

    #[test]
    fn load_spread_over_replicas_adds_up_to_a_scale_out() {
        let parts = [report(9, Some(0), 9.0), report(9, Some(0), 9.0)];
        let summed = sum(
            &report(9, Some(0), 9.0),
            parts.iter().map(|r| Part::Answered(Some(r))),
        );
        assert_eq!(summed.report.in_flight, 27);
        assert_eq!(
            decide(&policy(), 1, &summed.report, None),
            Some(Decision::Replicas(3))
        );
    }

    #[test]
    fn a_replica_without_an_answer_counts_as_busy() {
        let idle = report(0, Some(300), 0.0);
        let summed = sum(&idle, [Part::Answered(None), Part::Missing(Some(&idle))]);
        assert_eq!(summed.missing, 1);
        assert_eq!(summed.report.idle_for, Some(Duration::ZERO));
        assert_eq!(decide(&policy(), 1, &summed.report, None), None);
        let never = sum(&idle, [Part::Missing(None)]);
        assert_eq!(decide(&policy(), 1, &never.report, None), None);
    }

    #[test]
    fn a_new_decider_sees_nothing_idle_for_longer_than_it_has_decided() {
        let mut never_used = report(0, None, 0.0);
        cap_idle(&mut never_used, Duration::from_secs(3));
        assert_eq!(never_used.idle_for, Some(Duration::from_secs(3)));
        assert_eq!(decide(&policy(), 1, &never_used, None), None);
        let mut long_idle = report(0, Some(3600), 0.0);
        cap_idle(&mut long_idle, Duration::from_secs(10));
        assert_eq!(
            decide(&policy(), 1, &long_idle, None),
            Some(Decision::ToZero)
        );
        assert_eq!(
            since(None, Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            since(Some(Duration::from_secs(90)), Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
    }
}
