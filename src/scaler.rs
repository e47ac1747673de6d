//! The scaler: on every tick it reads each route's [`StatsReport`] and decides its replicas.
//!
//! - Nothing open (held or in flight) for `idle_timeout` → `min_scale` (to zero through the gate,
//!   see [`crate::activation`]). The idle clock runs from the last request's *end*, so sparse
//!   traffic that never overlaps a tick still keeps a route alive.
//! - Otherwise, with replicas running: `ceil(average concurrency / target_concurrency)`, within
//!   `[max(1, min_scale), max_scale]`. Replicas are added at once; they are removed only once the
//!   last addition is a whole averaging window old, so a burst is not followed by flapping.
//! - A route at zero with requests held is activated by those requests, not here; the scaler only
//!   brings a route up to `min_scale`.
//!
//! With several activator replicas ([`crate::cluster`]), only the Lease holder decides, from the
//! sum of every replica's report; the others only keep their provider calls going (and scale up
//! from zero for the requests they hold, through activation). A holder's scale to zero closes the
//! route on every replica before it writes the zero.
//!
//! [`decide`] is a pure function; [`run`] applies it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::cluster::{Cluster, Turn};
use crate::provider::Cause;
use crate::routing::RouteTable;
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

/// Ticks every `tick` until `shutdown` completes, applying [`decide`] to every route; with
/// several replicas (`cluster`), only while this one decides.
pub(crate) async fn run(
    table: Arc<RouteTable>,
    tick: Duration,
    cluster: Option<Arc<Cluster>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = &mut shutdown => return,
        }
        let now = Instant::now();
        let turn = cluster.as_ref().map(|cluster| cluster.turn(now));
        for route in table.routes().iter() {
            let activation = route.activation();
            if activation.closed().is_some() {
                continue;
            }
            activation.reconcile_if_needed();
            let policy = &route.spec().settings.scaling;
            // Every replica samples its own counters, so that its report averages over the window.
            let mut report = route.stats().report(now, policy.window);
            let current = activation.desired();
            let mut since_scale_up = activation
                .last_scale_up()
                .map(|at| now.saturating_duration_since(at));
            let mut missing = 0;
            let mut across = None;
            match (&cluster, &turn) {
                (_, Some(Turn::Follow)) => continue,
                (Some(cluster), Some(Turn::Decide(tally))) => {
                    let view = tally.view(cluster, route.id(), &report, now);
                    report = view.report;
                    missing = view.missing;
                    since_scale_up = tally.since_scale_up(since_scale_up, now);
                    across = tally.coordinated().then_some((cluster, tally));
                }
                _ => {}
            }
            match decide(policy, current, &report, since_scale_up) {
                // A replica without a fresh answer counts as busy: nothing is scaled down on
                // missing data.
                Some(Decision::ToZero) if missing > 0 => {}
                Some(Decision::Replicas(replicas)) if replicas < current && missing > 0 => {}
                Some(Decision::ToZero) => match across {
                    Some((cluster, tally)) => cluster.scale_to_zero(route, tally),
                    None if activation.scale_to_zero_if_unused(report.idle_for) => {
                        tracing::info!(
                            route = %route.id(),
                            idle_ms = report.idle_for.map(|d| d.as_millis() as u64),
                            "idle: scaling to zero"
                        );
                    }
                    None => {}
                },
                Some(Decision::Replicas(replicas)) => {
                    tracing::info!(
                        route = %route.id(),
                        from = current,
                        to = replicas,
                        average_concurrency = report.average_concurrency,
                        "scaling"
                    );
                    let cause = if current == 0 {
                        Cause::Other
                    } else {
                        Cause::Load {
                            average: report.average_concurrency,
                        }
                    };
                    activation.scale_to(replicas, cause);
                }
                None => {}
            }
        }
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
