//! The scaler: on every tick it reads each route's counters and applies the pure decision of
//! [`crate::scaling`] to its replicas (to zero through the gate, see [`crate::activation`]).
//!
//! With several activator replicas ([`crate::cluster`]), only the Lease holder decides, from the
//! sum of every replica's report; the others only keep their provider calls going (and scale up
//! from zero for the requests they hold, through activation). A holder's scale to zero closes the
//! route on every replica before it writes the zero.
//!
//! The decision itself is the pure [`crate::scaling::decide`]; [`run`] applies it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::cluster::{Cluster, Turn};
use crate::provider::Cause;
use crate::routing::RouteTable;
use crate::scaling::{Decision, decide};

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
