//! A scale to zero across replicas, so that a request reaching any replica between the holder's
//! last poll and its write is served.
//!
//! 1. The holder closes the route on itself, then asks every other replica to close it too
//!    (`/peer/hold`, with a deadline); each closes it *before* it looks at its open requests,
//!    and answers its counters as of just after. A request that counted itself open before that
//!    shows in the answer; one that comes after is held there.
//! 2. The holder sums those fresh answers and decides again. Only if every replica answered and
//!    the route is still idle does it write the zero (with the resourceVersion precondition all
//!    scale writes carry), through the route's own scale-to-zero gate, which a request held on the
//!    holder itself also stops.
//! 3. Otherwise it opens the route everywhere again (`/peer/release`).
//!
//! A replica opens a closed route when it sees the zero land (its held requests then activate
//! the route again: a cold start, but no request lost), when the holder releases it, or at the
//! deadline — so a holder that dies half-way leaves nothing closed for long.
//!
//! No Deployment write other than the scale subresource is needed: the replicas are told
//! directly, over the connection the holder already polls them on.

use std::sync::Arc;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::peer::PeerReport;
use super::view::{self, Part};
use super::{Cluster, local_report};
use crate::route::Route;
use crate::scaling::{Decision, decide};

/// Scales `route` to zero across replicas, deciding again on fresh answers; `term` is the Lease
/// term the decision was made in, and `since` when this replica's clocks started.
pub(crate) async fn across(
    cluster: &Arc<Cluster>,
    route: &Arc<Route>,
    term: u64,
    since: Option<Instant>,
) {
    let Some(client) = cluster.peer_client() else {
        return;
    };
    let id = route.id();
    let hold = cluster.settings().scale_down_hold;
    let until = Instant::now() + hold;
    let activation = route.activation();
    if !activation.hold_for_scale_down(until) {
        return;
    }
    let others = cluster.members().others;
    let answers: Vec<Result<PeerReport, _>> = join_all(
        others
            .iter()
            .map(|member| client.hold(member.admin, id, hold)),
    )
    .await;
    let now = Instant::now();
    let answered = answers.iter().all(Result::is_ok);
    let local = local_report(route, now);
    let parts = answers.iter().map(|answer| match answer {
        Ok(report) => Part::Answered(report.routes.get(id)),
        Err(_) => Part::Missing(None),
    });
    let summed = view::sum(&local, parts);
    let report = cluster.fresh_clocks(id, summed.report, since, now);
    let policy = &route.spec().settings.scaling;
    let still_idle = decide(policy, activation.desired(), &report, None) == Some(Decision::ToZero);
    let scaled = answered
        && still_idle
        && cluster.still_deciding(term)
        && activation.scale_to_zero_if_unused(report.idle_for);
    activation.release_hold();
    if scaled {
        tracing::info!(
            route = %id,
            replicas = others.len() + 1,
            idle_ms = report.idle_for.map(|d| d.as_millis() as u64),
            "idle on every replica: scaling to zero"
        );
        return;
    }
    for (member, answer) in others.iter().zip(&answers) {
        if let Err(error) = answer {
            tracing::debug!(route = %id, peer = %member.identity, %error, "no answer to the hold; not scaling to zero");
        }
    }
    tracing::debug!(route = %id, answered, still_idle, "scale to zero given up; opening the route again");
    let releases = others.iter().map(|member| client.release(member.admin, id));
    for (member, result) in others.iter().zip(join_all(releases).await) {
        if let Err(error) = result {
            tracing::debug!(route = %id, peer = %member.identity, %error, "release failed; the hold expires by itself");
        }
    }
}
